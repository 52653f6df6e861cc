"""cygru.quantize: the reduced-precision modules' API, errors and reproducibility.

Numbers against float32 are in tests/test_quantize_accuracy.py; the products' variants
bit for bit in tests/test_quant_kernels.py. Here: the modules behave like the float ones
(shapes, options, lengths, h0, state_dict, pickling), and their results do not depend on
the thread count, the cut of a stream, the batch a row runs in, or the CPU path.
"""

import pickle
import threading

import numpy as np
import pytest

import cygru
from cygru import _kernels

PRECISIONS = ("int8", "bf16")
CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(reset_after=False),
    dict(batch_first=True, bias=False),
    dict(reverse=True),
    dict(num_layers=3, bidirectional=True, reset_after=False),
]


def _x(T, B, I, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((T, B, I)).astype(dtype)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = cygru.get_num_threads()
    yield
    cygru.set_num_threads(n)
    _kernels._force_quant_level(-1)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "plain"
)
def test_close_to_float_and_equal_to_itself_in_every_way(precision, cfg):
    gru = cygru.GRU(24, 40, seed=3, **cfg)
    q = cygru.quantize(gru, precision)
    x = _x(17, 6, 24)
    if cfg.get("batch_first"):
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    out, h_n = q(x)
    ref_out, ref_h = gru(x)
    assert out.dtype == np.float32 and out.shape == ref_out.shape and h_n.shape == ref_h.shape
    tol = 0.05 if precision == "int8" else 0.02
    assert np.abs(out - ref_out).max() < tol
    assert np.abs(h_n - ref_h).max() < tol
    # the dequantized float module is the same weights: closer still
    d_out, _ = q.dequantize()(x)
    assert np.abs(out - d_out).max() < tol
    # thread counts
    for n in (1, 2, 3, 5):
        cygru.set_num_threads(n)
        o, h = q(x)
        np.testing.assert_array_equal(o, out)
        np.testing.assert_array_equal(h, h_n)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("reset_after", [True, False])
def test_stream_cuts_and_batch_rows_give_the_same_bits(precision, reset_after):
    q = cygru.quantize(cygru.GRU(12, 33, seed=1, reset_after=reset_after), precision)
    x = _x(25, 7, 12, seed=2)
    out, h_n = q(x)
    for cut in (1, 9, 24):
        o1, h1 = q(x[:cut])
        o2, h2 = q(x[cut:], h1)
        np.testing.assert_array_equal(np.concatenate([o1, o2]), out)
        np.testing.assert_array_equal(h2, h_n)
    # a row alone, or in another batch, gets the same bits (no batch-size kernel choice)
    for b in (0, 3, 6):
        o, h = q(x[:, b : b + 1])
        np.testing.assert_array_equal(o[:, 0], out[:, b])
    o, _ = q(np.concatenate([x, x], axis=1))
    np.testing.assert_array_equal(o[:, 7:], out)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_cpu_path_gives_the_same_bits(precision):
    q = cygru.quantize(cygru.GRU(20, 48, num_layers=2, bidirectional=True, seed=4), precision)
    x = _x(9, 5, 20, seed=5)
    best = _kernels.quant_max_levels()[0 if precision == "int8" else 1]
    _kernels._force_quant_level(0)
    out, h_n = q(x)
    for level in range(1, best + 1):
        _kernels._force_quant_level(level)
        o, h = q(x)
        np.testing.assert_array_equal(o, out, err_msg=f"level {level}")
        np.testing.assert_array_equal(h, h_n, err_msg=f"level {level}")
    _kernels._force_quant_level(-1)
    o, _ = q(x)
    np.testing.assert_array_equal(o, out)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_lengths_h0_and_unbatched_follow_the_float_semantics(precision):
    gru = cygru.GRU(6, 10, num_layers=2, bidirectional=True, seed=0)
    q = cygru.quantize(gru, precision)
    x = _x(8, 4, 6, seed=1)
    h0 = np.random.default_rng(2).standard_normal((4, 4, 10)).astype(np.float32) * 0.5
    lengths = [8, 3, 5, 1]
    out, h_n = q(x, h0, lengths)
    for b, L in enumerate(lengths):
        assert not out[L:, b].any()
        o, h = q(x[:L, b : b + 1], h0[:, b : b + 1])
        np.testing.assert_array_equal(out[:L, b], o[:, 0])
        np.testing.assert_array_equal(h_n[:, b], h[:, 0])
    # hx keyword, unbatched input, float64 and list inputs converted to float32
    np.testing.assert_array_equal(q(x, hx=h0)[0], q(x, h0)[0])
    o_u, h_u = q(x[:, 0])
    np.testing.assert_array_equal(o_u, q(x[:, :1])[0][:, 0])
    assert h_u.shape == (4, 10)
    np.testing.assert_array_equal(q(x.astype(np.float64))[0], q(x)[0])
    np.testing.assert_array_equal(q(x.tolist())[0], q(x)[0])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_cell_step_is_a_one_step_gru_call(precision):
    cell = cygru.GRUCell(7, 19, seed=0)
    gru = cygru.GRU(7, 19, seed=0)
    gru.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    qc, qg = cygru.quantize(cell, precision), cygru.quantize(gru, precision)
    x = _x(1, 3, 7)[0]
    h = np.random.default_rng(1).standard_normal((3, 19)).astype(np.float32)
    h1 = qc(x, h)
    o, h_n = qg(x[None], h[None])
    np.testing.assert_array_equal(h1, h_n[0])
    np.testing.assert_array_equal(qc(x[0], h[0]), h1[0])
    np.testing.assert_array_equal(qc(x), qg(x[None])[1][0])
    assert np.abs(h1 - cell(x, h)).max() < 0.05


@pytest.mark.parametrize("precision", PRECISIONS)
def test_inputs_are_not_changed_and_read_only_inputs_work(precision):
    q = cygru.quantize(cygru.GRU(5, 8, seed=0), precision)
    x = _x(4, 2, 5)
    h0 = np.zeros((1, 2, 8), np.float32) + 0.25
    x0, hh = x.copy(), h0.copy()
    x.setflags(write=False)
    h0.setflags(write=False)
    q(x, h0)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(h0, hh)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_quantize_does_not_change_or_share_the_float_module(precision):
    gru = cygru.GRU(5, 8, seed=0, dtype=np.float64)
    before = {k: v.copy() for k, v in gru.state_dict().items()}
    q = cygru.quantize(gru, precision)
    for k, v in gru.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    gru.weight_hh_l0[...] = 0  # later changes of the float module do not reach q
    assert q.state_dict()["weight_hh_l0"].any()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("cell", [False, True])
def test_state_dict_and_pickle_round_trips(precision, cell):
    m = cygru.GRUCell(6, 9, seed=0) if cell else cygru.GRU(6, 9, 2, bidirectional=True, seed=0)
    q = cygru.quantize(m, precision)
    sd = q.state_dict()
    w = sd["weight_ih" if cell else "weight_ih_l0"]
    assert w.dtype == (np.int8 if precision == "int8" else np.uint16)
    if precision == "int8":
        assert sd["weight_ih_scale" if cell else "weight_ih_l0_scale"].dtype == np.float32
    x = _x(3, 2, 6)[0] if cell else _x(3, 2, 6)
    ref = q(x)
    q2 = pickle.loads(pickle.dumps(q))
    assert type(q2) is type(q) and q2.precision == precision
    np.testing.assert_array_equal(q2(x)[0], ref[0])
    other = cygru.quantize(
        cygru.GRUCell(6, 9, seed=1) if cell else cygru.GRU(6, 9, 2, bidirectional=True, seed=1),
        precision,
    )
    other.load_state_dict(sd)
    np.testing.assert_array_equal(other(x)[0], ref[0])
    # a copy: changing the returned dict changes nothing
    sd[next(iter(sd))][...] = 0
    np.testing.assert_array_equal(q(x)[0], ref[0])
    # a fresh module of the same options, loaded, is the same module
    if cell:
        fresh = cygru.QuantizedGRUCell(6, 9, precision=precision)
    else:
        fresh = cygru.QuantizedGRU(6, 9, 2, bidirectional=True, precision=precision)
    fresh.load_state_dict(q.state_dict())
    np.testing.assert_array_equal(fresh(x)[0], ref[0])


def test_int8_weights_follow_the_row_rule():
    gru = cygru.GRU(4, 3, seed=0)
    q = cygru.quantize(gru, "int8")
    w = gru.weight_ih_l0
    sd = q.state_dict()
    amax = np.abs(w).max(axis=1)
    np.testing.assert_array_equal(
        sd["weight_ih_l0_scale"], (amax / np.float32(127)).astype(np.float32)
    )
    expect = np.rint(w * (np.float32(127) / amax)[:, None]).astype(np.int8)
    np.testing.assert_array_equal(sd["weight_ih_l0"], expect)
    assert np.abs(sd["weight_ih_l0"]).max() == 127


def test_bf16_weights_round_half_to_even():
    gru = cygru.GRU(2, 1, seed=0)
    w = np.array([[1.0, 1.0 + 2**-8], [1.0 + 3 * 2**-8, 2**-60], [-(2**-49), 1.0]] * 1, np.float32)
    gru.load_state_dict({**gru.state_dict(), "weight_ih_l0": w})
    sd = cygru.quantize(gru, "bf16").state_dict()
    got = (sd["weight_ih_l0"].astype(np.uint32) << 16).view(np.float32)
    # 1 + 2^-8 is a tie: to even (1.0); 1 + 3*2^-8 to 1 + 2^-6; 2^-60 flushed to zero
    np.testing.assert_array_equal(got, [[1.0, 1.0], [1.0 + 2**-6, 0.0], [-(2**-49), 1.0]])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_non_finite_inputs_give_nan_not_a_crash(precision):
    q = cygru.quantize(cygru.GRU(4, 8, seed=0), precision)
    x = _x(3, 2, 4)
    x[1, 0, 2] = np.nan
    out, h_n = q(x)
    assert np.isnan(out[1:, 0]).all() and np.isfinite(out[:, 1]).all()
    assert np.isfinite(out[0]).all()


def test_errors_are_clear():
    gru = cygru.GRU(4, 8, seed=0)
    with pytest.raises(ValueError, match=r"cygru.quantize: precision must be one of"):
        cygru.quantize(gru, "int4")
    with pytest.raises(TypeError, match=r"cygru.quantize: precision must be a str"):
        cygru.quantize(gru, 8)
    with pytest.raises(TypeError, match=r"expected a cygru.GRU or cygru.GRUCell, got dict"):
        cygru.quantize({}, "int8")
    q = cygru.quantize(gru, "int8")
    with pytest.raises(TypeError, match="already quantized"):
        cygru.quantize(q, "bf16")
    with pytest.raises(ValueError, match=r"cygru.QuantizedGRU: expected x with 4 features"):
        q(np.zeros((3, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"cygru.QuantizedGRU: .*h0"):
        q(np.zeros((3, 2, 4), np.float32), np.zeros((1, 3, 8), np.float32))
    with pytest.raises(TypeError, match=r"to_onnx cannot export a quantized module"):
        q.to_onnx()
    with pytest.raises(TypeError, match="inference only"):
        q.vjp(np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match="CPU only"):
        q.to("cuda")
    with pytest.raises(AttributeError, match="load_state_dict"):
        q.weight_ih_l0 = np.zeros((24, 4), np.int8)
    sd = q.state_dict()
    with pytest.raises(ValueError, match=r"missing key\(s\) \['weight_hh_l0_scale'\]"):
        q.load_state_dict({k: v for k, v in sd.items() if k != "weight_hh_l0_scale"})
    with pytest.raises(TypeError, match="dtype float32, expected int8"):
        q.load_state_dict({**sd, "weight_ih_l0": sd["weight_ih_l0"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"has shape \(24, 3\), expected \(24, 4\)"):
        q.load_state_dict({**sd, "weight_ih_l0": sd["weight_ih_l0"][:, :3]})
    with pytest.raises(ValueError, match="negative scales"):
        q.load_state_dict(
            {**sd, "bias_ih_l0": sd["bias_ih_l0"], "weight_ih_l0_scale": -sd["weight_ih_l0_scale"]}
        )
    bad = cygru.GRU(4, 8, seed=0)
    bad.weight_hh_l0[0, 0] = np.inf
    with pytest.raises(ValueError, match="not finite"):
        cygru.quantize(bad, "int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        cygru.QuantizedGRU(4, 8, precision="fp8")
    # a failed load changes nothing
    x = _x(3, 2, 4)
    before = q(x)[0]
    with pytest.raises(ValueError):
        q.load_state_dict({**sd, "weight_ih_l0": sd["weight_ih_l0"][:, :3]})
    np.testing.assert_array_equal(q(x)[0], before)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_calls_on_many_threads_and_a_concurrent_load(precision):
    a = cygru.quantize(cygru.GRU(16, 32, seed=0), precision)
    b = cygru.quantize(cygru.GRU(16, 32, seed=1), precision)
    x = _x(12, 3, 16)
    ref_a, ref_b = a(x)[0], b(x)[0]
    states = [a.state_dict(), b.state_dict()]
    q = cygru.quantize(cygru.GRU(16, 32, seed=0), precision)
    errors, stop = [], threading.Event()

    def caller():
        try:
            while not stop.is_set():
                o = q(x)[0]
                if not (np.array_equal(o, ref_a) or np.array_equal(o, ref_b)):
                    errors.append("a mix of two weight sets")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(40):
        q.load_state_dict(states[i % 2])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_repr_and_options():
    q = cygru.quantize(cygru.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True), "bf16")
    assert (
        repr(q)
        == "QuantizedGRU(3, 4, bidirectional=True, num_layers=2, batch_first=True, precision='bf16')"
    )
    assert (q.input_size, q.hidden_size, q.num_layers, q.bidirectional, q.batch_first) == (
        3,
        4,
        2,
        True,
        True,
    )
    assert q.dtype == np.float32 and q.to("cpu") is q
    c = cygru.quantize(cygru.GRUCell(3, 4, bias=False), "int8")
    assert repr(c) == "QuantizedGRUCell(3, 4, bias=False, precision='int8')"
    assert sorted(c.state_dict()) == [
        "weight_hh",
        "weight_hh_scale",
        "weight_ih",
        "weight_ih_scale",
    ]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_common_calls_take_the_lean_entry_with_the_checked_paths_bits(precision):
    from cygru import _cpu

    q = cygru.quantize(cygru.GRU(6, 20, num_layers=2, bidirectional=True, seed=0), precision)
    x = _x(7, 3, 6)
    h0 = np.full((4, 3, 20), 0.1, np.float32)
    before = _cpu._lean_stats()["gru"]
    out, h_n = q(x, h0)
    assert _cpu._lean_stats()["gru"] == before + 1
    # the checked path (a list input, lengths of full length) gives the same bits
    o2, h2 = q(x.tolist(), h0.tolist(), lengths=[7, 7, 7])
    np.testing.assert_array_equal(o2, out)
    np.testing.assert_array_equal(h2, h_n)


def _unaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    buf[1:] = np.ascontiguousarray(a).view(np.uint8).ravel()
    out = np.frombuffer(buf.tobytes(), a.dtype, count=a.size, offset=1).reshape(a.shape)
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize("precision", PRECISIONS)
def test_unaligned_inputs_are_copied_aligned_with_the_same_bits(precision):
    from cygru import _arrays

    q = cygru.quantize(cygru.GRU(3, 20, seed=0), precision)
    x = _x(5, 2, 3)
    h0 = np.full((1, 2, 20), 0.3, np.float32)
    out, h_n = q(x, h0)
    o, h = q(_unaligned(x), _unaligned(h0))
    np.testing.assert_array_equal(o, out)
    np.testing.assert_array_equal(h, h_n)
    # what the kernels receive is aligned (an unaligned float load is undefined in C)
    assert _arrays.as_float_array(_unaligned(x), np.float32, "x").flags.aligned
