"""What a PyTorch user reaches for, checked against torch.nn.GRU / GRUCell: load_state_dict's
strict=False and its return value, dtype given as torch or as a string, parameters() and
named_parameters(), reset_parameters(), double()/float()/to(dtype), zero_grad(set_to_none),
and the errors naming the public entry point."""

import pickle
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from optional_deps import import_optional

import cygru

torch = import_optional("torch")

I, H = 3, 4


def torch_twin(m):
    """torch.nn.GRU with m's options and weights, float64."""
    net = torch.nn.GRU(
        m.input_size,
        m.hidden_size,
        m.num_layers,
        bias=m.bias,
        batch_first=m.batch_first,
        bidirectional=m.bidirectional,
    ).double()
    net.load_state_dict(
        {k: torch.from_numpy(v.astype(np.float64)) for k, v in m.state_dict().items()}
    )
    return net


# ---------------------------------------------------------------------------
# load_state_dict(strict=...)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "drop,extra",
    [
        ([], []),
        (["bias_hh_l1"], []),
        ([], ["foo"]),
        (["weight_ih_l0", "bias_ih_l1_reverse"], ["a", "b"]),
    ],
)
def test_load_state_dict_non_strict_keys_as_torch(drop, extra):
    src = cygru.GRU(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=1)
    dst = cygru.GRU(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    net = torch_twin(dst)
    before = dst.state_dict()
    sd = {k: v for k, v in src.state_dict().items() if k not in drop}
    sd.update({k: np.ones(2) for k in extra})
    got = dst.load_state_dict(sd, strict=False)
    want = net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert isinstance(got, cygru.IncompatibleKeys) and isinstance(got, tuple)
    assert got.missing_keys == want.missing_keys
    assert got.unexpected_keys == want.unexpected_keys
    missing, unexpected = got  # a named tuple, as torch's
    assert (missing, unexpected) == (want.missing_keys, want.unexpected_keys)
    assert (repr(got) == "<All keys matched successfully>") == (not drop and not extra)
    assert repr(got) == repr(want).replace("_IncompatibleKeys", "IncompatibleKeys")
    # loaded keys take the new values, missing ones keep theirs; torch agrees
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(v, (before if k in drop else src.state_dict())[k])
        np.testing.assert_array_equal(v, net.state_dict()[k].numpy())


def test_load_named_parameters_of_a_torch_module():
    """torch's named_parameters() are Parameters (requires_grad): loaded by value, copied."""
    net = torch.nn.GRU(I, H, num_layers=2, bidirectional=True)
    m = cygru.GRU(I, H, num_layers=2, bidirectional=True)
    m.load_state_dict(dict(net.named_parameters()))
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(getattr(m, n), p.detach().numpy())
    with torch.no_grad():
        net.weight_hh_l0.zero_()
    assert m.weight_hh_l0.any()  # a copy, not a view
    m.weight_ih_l1 = net.weight_ih_l1  # attribute assignment too
    np.testing.assert_array_equal(m.weight_ih_l1, net.weight_ih_l1.detach().numpy())


def test_load_state_dict_strict_default_raises_and_changes_nothing():
    m = cygru.GRU(I, H, seed=0)
    before = m.state_dict()
    sd = cygru.GRU(I, H, seed=1).state_dict()
    sd.pop("bias_hh_l0")
    with pytest.raises(
        ValueError,
        match=r"cygru.GRU: load_state_dict: missing key\(s\) "
        r"\['bias_hh_l0'\]",
    ):
        m.load_state_dict(sd)
    with pytest.raises(ValueError, match=r"missing key"):
        m.load_state_dict(sd, strict=True)
    sd["bias_hh_l0"], sd["x"] = before["bias_hh_l0"], 1
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['x'\]"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict_still_checks_values_like_torch():
    m = cygru.GRU(I, H, seed=0)
    net = torch_twin(m)
    before = m.state_dict()
    bad = {"weight_hh_l0": np.zeros((3 * H, H + 1)), "bias_ih_l0": np.ones(3 * H)}
    with pytest.raises(RuntimeError, match="size mismatch"):  # torch refuses too
        net.load_state_dict({k: torch.from_numpy(v) for k, v in bad.items()}, strict=False)
    with pytest.raises(
        ValueError,
        match=rf"cygru.GRU: weight_hh_l0 must have shape "
        rf"\({3 * H}, {H}\), got \({3 * H}, {H + 1}\)",
    ):
        m.load_state_dict(bad, strict=False)
    with pytest.raises(TypeError, match="weight_hh_l0 must hold real numbers"):
        m.load_state_dict({"weight_hh_l0": np.full((3 * H, H), "a")}, strict=False)
    for k, v in m.state_dict().items():  # nothing loaded, not even bias_ih_l0
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TypeError, match="strict must be True or False, got str"):
        m.load_state_dict(before, strict="no")
    with pytest.raises(TypeError, match="expects a mapping"):
        m.load_state_dict([1, 2], strict=False)


def test_cell_load_state_dict_non_strict():
    c = cygru.GRUCell(I, H, seed=0)
    w = np.ones((3 * H, H), np.float32)
    res = c.load_state_dict({"weight_hh": w}, strict=False)
    assert res.missing_keys == ["weight_ih", "bias_ih", "bias_hh"] and res.unexpected_keys == []
    np.testing.assert_array_equal(c.weight_hh, w)
    assert c.weight_hh is not w


# ---------------------------------------------------------------------------
# dtype
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given,want",
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        ("float32", np.float32),
        ("float64", np.float64),
        ("f8", np.float64),
        (np.dtype("float32"), np.float32),
        (float, np.float64),
        ("torch.float32", np.float32),
        ("torch.float64", np.float64),
        ("torch.double", np.float64),
    ],
)
def test_dtype_spellings(given, want):
    if isinstance(given, str) and given.startswith("torch."):
        given = getattr(torch, given[6:])
    for m in (cygru.GRU(I, H, dtype=given), cygru.GRUCell(I, H, dtype=given)):
        assert m.dtype == np.dtype(want)
        assert all(p.dtype == want for p in m.parameters())
        assert all(g.dtype == want for g in m.grads.values())


@pytest.mark.parametrize(
    "bad",
    ["float16", np.int32, "cat", torch.float16, torch.bfloat16, torch.int64, None.__class__, 3],
)
def test_dtype_refused_names_what_was_given(bad):
    with pytest.raises(TypeError, match=r"cygru.GRU: dtype must be float32 or float64, got"):
        cygru.GRU(I, H, dtype=bad)


def test_dtype_none_is_the_default_as_torch():
    assert torch.nn.GRU(I, H, dtype=None).weight_hh_l0.dtype == torch.float32
    for m in (cygru.GRU(I, H, dtype=None), cygru.GRUCell(I, H, dtype=None)):
        assert m.dtype == np.float32 and next(m.parameters()).dtype == np.float32
    assert pickle.loads(pickle.dumps(cygru.GRU(I, H, dtype=None))).dtype == np.float32


def test_torch_dtype_is_read_without_importing_torch():
    code = (
        "import sys, cygru; "
        "m = cygru.GRU(3, 4, dtype='float64'); assert m.dtype == 'float64'; "
        "assert 'torch' not in sys.modules; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr


# ---------------------------------------------------------------------------
# parameters(), named_parameters()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_layers,bidirectional,bias", [(1, False, True), (2, True, True), (3, True, False)]
)
def test_parameters_as_torch(num_layers, bidirectional, bias):
    m = cygru.GRU(I, H, num_layers, bias=bias, bidirectional=bidirectional)
    net = torch.nn.GRU(I, H, num_layers, bias=bias, bidirectional=bidirectional)
    assert [(n, p.shape) for n, p in m.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in net.named_parameters()
    ]
    assert [p.shape for p in m.parameters()] == [tuple(p.shape) for p in net.parameters()]
    assert sum(p.size for p in m.parameters()) == sum(p.numel() for p in net.parameters())
    assert next(m.parameters()) is m.weight_ih_l0  # live, an iterator
    assert [n for n, _ in m.named_parameters(prefix="rnn")] == [
        n for n, _ in net.named_parameters(prefix="rnn")
    ]
    assert list(m.parameters(recurse=False)) != []
    c, tc = cygru.GRUCell(I, H, bias=bias), torch.nn.GRUCell(I, H, bias=bias)
    assert [n for n, _ in c.named_parameters()] == [n for n, _ in tc.named_parameters()]


def test_parameters_update_in_place_reaches_the_module():
    m = cygru.GRU(I, H, dtype=np.float64, seed=0)
    x = np.ones((2, 1, I))
    before = m(x)[0]
    for p in m.parameters():
        p *= 0.5
    after = m(x)[0]
    net = torch_twin(m)
    np.testing.assert_allclose(
        after, net(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-12, atol=1e-12
    )
    assert not np.allclose(before, after)
    with pytest.raises(TypeError, match="cygru.GRU: named_parameters: prefix must be a str"):
        m.named_parameters(prefix=1)


# ---------------------------------------------------------------------------
# reset_parameters()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [cygru.GRU, cygru.GRUCell])
def test_reset_parameters_as_constructor_seed(cls):
    m = cls(I, H, dtype=np.float64, seed=3)
    for p in m.parameters():
        p[...] = 7.0
    m.grads[next(iter(m.grads))][...] = 1.0
    assert m.reset_parameters(seed=3) is None
    for (_n, a), (_, b) in zip(
        m.named_parameters(), cls(I, H, dtype=np.float64, seed=3).named_parameters()
    ):
        np.testing.assert_array_equal(a, b)
    assert m.grads[next(iter(m.grads))].sum() > 0  # gradients untouched
    m.reset_parameters()  # fresh entropy
    seeded = cls(I, H, dtype=np.float64, seed=3)
    assert not np.array_equal(next(m.parameters()), next(seeded.parameters()))


def test_reset_parameters_range_as_torch():
    H_ = 50
    m = cygru.GRU(I, H_, num_layers=2, bidirectional=True)
    torch.manual_seed(0)
    net = torch.nn.GRU(I, H_, num_layers=2, bidirectional=True)
    net.reset_parameters()
    m.reset_parameters(seed=0)
    k = 1 / np.sqrt(H_)
    for (n, a), (tn, t) in zip(m.named_parameters(), net.named_parameters()):
        assert n == tn and a.dtype == np.float32
        t = t.detach().numpy()
        assert np.abs(a).max() <= k and np.abs(t).max() <= k
        # both fill [-k, k] uniformly: the same range, mean near 0, variance k^2 / 3
        # (5 standard errors for the 150 numbers of a bias)
        assert abs(a.mean()) < 0.25 * k and abs(a.var() - k * k / 3) < 0.2 * k * k
        assert abs(t.mean()) < 0.25 * k and abs(t.var() - k * k / 3) < 0.2 * k * k
    with pytest.raises(ValueError, match="cygru.GRU: seed must be None or a non-negative"):
        m.reset_parameters(seed=-1)


# ---------------------------------------------------------------------------
# double(), float(), to(dtype)
# ---------------------------------------------------------------------------


def test_double_and_float_as_torch():
    rng = np.random.default_rng(0)
    m = cygru.GRU(I, H, num_layers=2, bidirectional=True, seed=0)
    net = torch.nn.GRU(I, H, num_layers=2, bidirectional=True)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    x = rng.standard_normal((5, 2, I))
    (out, h_n), backward = m.vjp(x)
    backward(np.ones_like(out), None)
    g32 = {n: g.copy() for n, g in m.grads.items()}
    assert m.double() is m and net.double() is net
    assert m.dtype == np.float64 and all(p.dtype == np.float64 for p in m.parameters())
    assert all(g.dtype == np.float64 for g in m.grads.values())
    for n, g in m.grads.items():  # grads converted, values kept
        np.testing.assert_array_equal(g, g32[n].astype(np.float64))
    for (_n, a), (_, t) in zip(m.named_parameters(), net.named_parameters()):
        np.testing.assert_array_equal(a, t.detach().numpy())
    out64, hn64 = m(x)
    t_out, t_hn = net(torch.from_numpy(x))
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hn64, t_hn.detach().numpy(), rtol=1e-12, atol=1e-12)
    # a float64 backward adds into the converted gradients
    (o, _), backward = m.vjp(x)
    backward(np.ones_like(o), None)
    assert all(g.dtype == np.float64 for g in m.grads.values())
    assert m.float() is m and m.dtype == np.float32 and m(x)[0].dtype == np.float32
    assert "dtype=float32" in repr(m)
    assert pickle.loads(pickle.dumps(m.double())).dtype == np.float64


@pytest.mark.parametrize("spelling", ["np", "str", "torch", "keyword", "both"])
def test_to_dtype(spelling):
    c = cygru.GRUCell(I, H, seed=0)
    arg = {
        "np": (np.float64,),
        "str": (),
        "torch": (torch.float64,),
        "keyword": (),
        "both": ("cpu",),
    }[spelling]
    kw = {
        "str": {"dtype": "float64"},
        "keyword": {"dtype": np.float64},
        "both": {"dtype": torch.float64},
    }.get(spelling, {})
    assert c.to(*arg, **kw) is c
    assert c.dtype == np.float64 and c.weight_ih.dtype == np.float64 and c.device == "cpu"
    t = torch.nn.GRUCell(I, H).double()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in c.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((2, I))
    np.testing.assert_allclose(
        c(x), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-12
    )


def test_to_device_object_and_errors():
    m = cygru.GRU(I, H)
    assert m.to(torch.device("cpu")) is m and m.device == "cpu"
    assert m.to() is m
    with pytest.raises(TypeError, match="cygru.GRU: dtype must be float32 or float64, got int32"):
        m.to(np.int32)
    with pytest.raises(TypeError, match="two dtypes"):
        m.to(np.float64, dtype=np.float32)
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        m.to("gpu")
    with pytest.raises(AttributeError, match="dtype is read-only"):
        m.dtype = np.float64


def test_double_while_other_threads_call():
    """double()/float() on one thread while others call and train: every call runs with
    weights of one dtype (the dtype and weights are taken together), so no call fails or
    mixes float32 and float64."""
    m = cygru.GRU(I, H, num_layers=2, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 3, I))
    errors, stop = [], threading.Event()

    def caller():
        try:
            while not stop.is_set():
                out, h_n = m(x)
                assert out.dtype == h_n.dtype
                (o, _), backward = m.vjp(x)
                backward(np.ones(o.shape), None)
                m.weight_hh_l0 = m.weight_hh_l0 * 1.0
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(40):
        m.double() if i % 2 == 0 else m.float()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(p.dtype == m.dtype for p in m.parameters())
    assert all(g.dtype == m.dtype for g in m.grads.values())


# ---------------------------------------------------------------------------
# zero_grad(set_to_none=...)
# ---------------------------------------------------------------------------


def test_zero_grad_set_to_none_as_torch():
    rng = np.random.default_rng(0)
    m = cygru.GRU(I, H, num_layers=2, dtype=np.float64, seed=0)
    net = torch_twin(m)
    x = rng.standard_normal((4, 2, I))
    d_out = rng.standard_normal((4, 2, H))

    def step():
        (o, _), backward = m.vjp(x)
        backward(d_out, None)
        t_out, _ = net(torch.from_numpy(x))
        t_out.backward(torch.from_numpy(d_out))

    step()
    net.zero_grad(set_to_none=True)
    assert m.zero_grad(set_to_none=True) is None
    assert all(g is None for g in m.grads.values())
    assert all(p.grad is None for p in net.parameters())
    step()
    step()  # accumulates, as torch
    for n, p in net.named_parameters():
        np.testing.assert_allclose(m.grads[n], p.grad.numpy(), rtol=1e-10, atol=1e-12)
    # default: zeros written in place, the same arrays
    arrays = dict(m.grads)
    m.zero_grad()
    assert all(m.grads[n] is arrays[n] and not arrays[n].any() for n in arrays)
    net.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in net.parameters())
    with pytest.raises(TypeError, match="cygru.GRU: set_to_none must be True or False"):
        m.zero_grad(set_to_none="yes")


def test_grads_none_survive_pickle_convert_and_threads():
    m = cygru.GRU(I, H, seed=0)
    m.zero_grad(set_to_none=True)
    m2 = pickle.loads(pickle.dumps(m))  # stored as zeros
    assert all(g is not None and not g.any() for g in m2.grads.values())
    m.double()
    assert all(g is None for g in m.grads.values())
    x = np.ones((3, 2, I))
    (o, _), backward = m.vjp(x)
    d = np.ones(o.shape)
    want = {}
    backward(d, None)
    want = {n: g.copy() for n, g in m.grads.items()}
    m.zero_grad(set_to_none=True)
    closures = []
    for _ in range(4):
        (o, _), b = m.vjp(x)
        closures.append(b)
    threads = [threading.Thread(target=b, args=(d, None)) for b in closures]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, g in m.grads.items():
        np.testing.assert_allclose(g, 4 * want[n], rtol=1e-12, atol=1e-12)
    c = cygru.GRUCell(I, H)
    c.zero_grad(set_to_none=True)
    assert cygru.gradcheck(c, np.ones(I))  # gradcheck works on its own twin


# ---------------------------------------------------------------------------
# errors name the entry point the user called
# ---------------------------------------------------------------------------


def test_errors_name_the_public_entry_point():
    m = cygru.GRU(I, H)
    c = cygru.GRUCell(I, H)
    cases = [
        (lambda: m(np.zeros((2, 1, I + 1))), ValueError, r"^cygru\.GRU: expected x with"),
        (
            lambda: m.vjp(np.zeros((2, 1, I)))[1](np.zeros(3)),
            ValueError,
            r"^cygru\.GRU: expected d_output of the output's shape \(2, 1, 4\), got \(3,\)",
        ),
        (lambda: c(np.zeros(I + 1)), ValueError, r"^cygru\.GRUCell: expected x of shape"),
        (
            lambda: c.vjp(np.zeros(I))[1](np.zeros(H + 1)),
            ValueError,
            r"^cygru\.GRUCell: expected d_h1 of h1's shape \(4,\), got \(5,\)",
        ),
        (lambda: cygru.GRU(0, H), ValueError, r"^cygru\.GRU: input_size must be >= 1, got 0"),
        (
            lambda: cygru.GRUCell(I, H, bias="no"),
            TypeError,
            r"^cygru\.GRUCell: bias must be True or False, got str 'no'",
        ),
        (
            lambda: setattr(m, "dropout", 2),
            ValueError,
            r"^cygru\.GRU: dropout must be in \[0, 1\), got 2",
        ),
        (
            lambda: setattr(m, "weight_hh_l0", None),
            TypeError,
            r"^cygru\.GRU: weight_hh_l0 must be an array of numbers, got NoneType",
        ),
        (
            lambda: cygru.functional.gru(np.zeros((2, 1, I)), m.state_dict(), lengths=[3]),
            ValueError,
            r"^cygru\.functional\.gru: every length must be in \[1, 2\]",
        ),
        (
            lambda: cygru.functional.gru_cell(
                np.zeros(I), None, c.weight_ih, c.weight_hh, np.zeros(2)
            ),
            ValueError,
            r"^cygru\.functional\.gru_cell: expected b_ih of shape \(12,\), got \(2,\)",
        ),
        (
            lambda: cygru.gradcheck(m, np.zeros((2, 1, I)), h0=np.zeros(3)),
            ValueError,
            r"^cygru\.GRU: expected h0 of shape \(1, 1, 4\)",
        ),
        (
            lambda: cygru.gradcheck(m, "abc"),
            TypeError,
            r"^cygru\.gradcheck: x must hold real numbers",
        ),
    ]
    for fn, exc, pattern in cases:
        with pytest.raises(exc, match=pattern) as ei:
            fn()
        # a plain ValueError/TypeError, not the internal unnamed one
        assert type(ei.value) is exc


def test_gpu_module_copies_host_values_to_its_device(monkeypatch):
    """On a GPU module a host value is validated on the host, then copied to the module's
    device (tests/test_gpu.py runs this on a GPU; here the copy is recorded)."""
    from cygru import _arrays

    m = cygru.GRU(I, H, dtype=np.float64, seed=0)
    moved = []

    def fake_to_device(a, device):
        moved.append((a.copy(), device))
        return a

    monkeypatch.setattr(_arrays, "to_device", fake_to_device)
    object.__setattr__(m, "device", "cuda:0")  # as .to("cuda:0") leaves it
    w = np.full((3 * H, I), 0.5, np.float32)
    res = m.load_state_dict({"weight_ih_l0": w}, strict=False)
    assert res.missing_keys == ["weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    ((a, device),) = moved
    assert device == "cuda:0" and a.dtype == np.float64 and a.shape == (3 * H, I)
    np.testing.assert_array_equal(a, w)
    with pytest.raises(ValueError, match=r"^cygru\.GRU: weight_hh_l0 must have shape"):
        m.load_state_dict({"weight_hh_l0": np.zeros((2, 2))}, strict=False)
    assert len(moved) == 1


def test_cpu_cuda_and_hints_for_what_cygru_does_not_have():
    m = cygru.GRU(I, H, seed=0)
    assert m.cpu() is m and m.device == "cpu"
    from cygru import _cupy

    if not _cupy.is_available():
        for call in (lambda: m.cuda(), lambda: m.cuda(1), lambda: m.cuda("cuda:0")):
            with pytest.raises(
                RuntimeError,
                match=r"cygru.GRU.to\('cuda(:\d)?'\): the GPU "
                r"backend needs CuPy",
            ):
                call()
        assert m.device == "cpu"
    with pytest.raises(ValueError, match=r"^cygru\.GRU: device must be >= 0, got -1"):
        m.cuda(-1)
    with pytest.raises(TypeError, match=r"^cygru\.GRU: device must be an integer, got float"):
        m.cuda(1.5)
    for name, word in [
        ("train", "dropout applies only inside vjp"),
        ("eval", "no training mode"),
        ("half", "float32 or float64 only"),
        ("requires_grad_", "freeze"),
    ]:
        assert hasattr(torch.nn.GRU(I, H), name)
        with pytest.raises(AttributeError, match=word):
            getattr(m, name)
        assert not hasattr(cygru.GRUCell(I, H), name)
    with pytest.raises(AttributeError, match=r"has no attribute 'nothing'$"):
        m.nothing  # noqa: B018  (the attribute access is what is tested)


# ---------------------------------------------------------------------------
# hx: PyTorch's name for the initial state
# ---------------------------------------------------------------------------


def test_gru_accepts_hx_like_torch():
    """``gru(x, hx=h)`` as ``nn.GRU.forward(input, hx)``; ``h0`` keeps working; both at once
    is a TypeError naming the module."""
    m = cygru.GRU(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    net = torch_twin(m)
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((5, 2, I)), rng.standard_normal((4, 2, H))
    want_out, want_h = (
        t.detach().numpy() for t in net(torch.from_numpy(x), hx=torch.from_numpy(h))
    )
    for out, h_n in (m(x, hx=h), m.forward(x, hx=h), m(x, h), m(x, h0=h)):
        np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(h_n, want_h, rtol=1e-12, atol=1e-12)
    # torch tensors as hx, and hx with lengths
    np.testing.assert_array_equal(m(x, hx=torch.from_numpy(h))[1], m(x, h)[1])
    np.testing.assert_array_equal(m(x, lengths=[5, 3], hx=h)[0], m(x, h, lengths=[5, 3])[0])
    (out, h_n), backward = m.vjp(x, hx=h)
    np.testing.assert_array_equal(out, m(x, h)[0])
    (out2, _), backward2 = m.vjp(x, h)
    for a, b in zip(backward(np.ones_like(out), None), backward2(np.ones_like(out), None)):
        np.testing.assert_array_equal(a, b)
    for call in (m, m.forward, m.vjp):
        with pytest.raises(
            TypeError, match=r"^cygru\.GRU: the initial state was given twice, as h0 and as hx"
        ):
            call(x, h, hx=h)
        with pytest.raises(TypeError, match=r"^cygru\.GRU: the initial state was given twice"):
            call(x, h0=h, hx=h)
    # hx is checked as h0 is: the message names the argument's shape rule
    with pytest.raises(ValueError, match=r"^cygru\.GRU: "):
        m(x, hx=np.zeros((1, 2, H)))


def test_gru_cell_accepts_hx_like_torch():
    """``cell(x, hx=h)`` as ``nn.GRUCell.forward(input, hx)``; ``h`` keeps working."""
    c = cygru.GRUCell(I, H, dtype=np.float64, seed=0)
    t = torch.nn.GRUCell(I, H).double()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in c.state_dict().items()})
    rng = np.random.default_rng(1)
    x, h = rng.standard_normal((2, I)), rng.standard_normal((2, H))
    want = t(torch.from_numpy(x), hx=torch.from_numpy(h)).detach().numpy()
    for got in (c(x, hx=h), c.forward(x, hx=h), c(x, h), c.vjp(x, hx=h)[0]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(c(x[0], hx=h[0]), c(x[0], h[0]))  # unbatched
    for call in (c, c.forward, c.vjp):
        with pytest.raises(
            TypeError, match=r"^cygru\.GRUCell: the initial state was given twice, as h and as hx"
        ):
            call(x, h, hx=h)


# ---------------------------------------------------------------------------
# load_state_dict with a parent model's keys
# ---------------------------------------------------------------------------


class _Parent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(I, H, num_layers=2)
        self.fc = torch.nn.Linear(H, 1)


def test_load_state_dict_with_parent_prefix_says_how_to_strip_it():
    """A parent model's state_dict() prefixes the GRU's keys ("gru.weight_ih_l0"): the
    error names the prefix and shows the code that strips it, and the shown code works.
    Nothing is stripped silently, and nothing is loaded."""
    parent = _Parent().double()
    sd = {k: v.detach().numpy() for k, v in parent.state_dict().items()}
    m = cygru.GRU(I, H, num_layers=2, dtype=np.float64, seed=0)
    before = m.state_dict()
    with pytest.raises(ValueError) as info:
        m.load_state_dict(sd)
    msg = str(info.value)
    assert msg.startswith("cygru.GRU: load_state_dict: missing key(s) ['weight_ih_l0'"), msg
    assert "the keys look prefixed with 'gru.'" in msg, msg
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # the suggested fix, as printed, loads the GRU's weights
    code = msg.split("e.g. ", 1)[1]
    assert code.startswith("load_state_dict({k.removeprefix('gru.'): v for k, v in sd.items()")
    assert eval("m." + code, {"m": m, "sd": sd}) == ([], [])
    x = np.random.default_rng(0).standard_normal((5, 2, I))
    np.testing.assert_allclose(
        m(x)[0], parent.gru(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-12, atol=1e-12
    )


def test_load_state_dict_prefix_hint_variants():
    m = cygru.GRU(I, H, seed=0)
    own = m.state_dict()
    # nested prefix, and unexpected prefixed keys beside complete own keys (strict)
    with pytest.raises(
        ValueError,
        match=r"unexpected key\(s\) \['enc\.gru\.weight_ih_l0'\].*"
        r"the keys look prefixed with 'enc\.gru\.'",
    ):
        m.load_state_dict({**own, "enc.gru.weight_ih_l0": own["weight_ih_l0"]})
    # two prefixes: the most common is shown, the other named
    sd = {f"a.{k}": v for k, v in own.items()}
    sd["b.weight_ih_l0"] = own["weight_ih_l0"]
    with pytest.raises(ValueError, match=r"prefixed with 'a\.' \(and 'b\.'\)"):
        m.load_state_dict(sd)
    # unrelated unexpected keys: no hint
    with pytest.raises(ValueError) as info:
        m.load_state_dict({**own, "fc.weight": np.ones(2)})
    assert "prefixed" not in str(info.value)
    # a GRUCell too
    c = cygru.GRUCell(I, H)
    with pytest.raises(ValueError, match=r"^cygru\.GRUCell: .*prefixed with 'cell\.'"):
        c.load_state_dict({f"cell.{k}": v for k, v in c.state_dict().items()})


def test_load_state_dict_non_strict_with_parent_prefix_warns():
    """strict=False returns the keys as PyTorch does, and warns: a parent model's keys
    load none of the parameters, which a glance at the return value would miss."""
    parent = _Parent()
    sd = parent.state_dict()
    m = cygru.GRU(I, H, num_layers=2, seed=0)
    before = m.state_dict()
    with pytest.warns(
        UserWarning,
        match=r"^cygru\.GRU: load_state_dict\(strict=False\) left 8 "
        r"of 8 parameters unloaded: the keys look prefixed with 'gru\.'",
    ):
        keys = m.load_state_dict(sd, strict=False)
    assert keys.missing_keys == list(before)
    assert keys.unexpected_keys == list(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # no warning when nothing looks prefixed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.load_state_dict({"weight_hh_l0": before["weight_hh_l0"], "other": 1}, strict=False)


# ---------------------------------------------------------------------------
# the package's namespace
# ---------------------------------------------------------------------------


def test_package_namespace_holds_public_names_only():
    """``dir(cygru)``: the public API (``__all__``), cygru's own submodules and
    underscore-private names; no leaked import (``cygru.os`` was public)."""
    import types

    names = [n for n in dir(cygru) if not n.startswith("_")]
    leaks = [
        n
        for n in names
        if n not in cygru.__all__
        and not (
            isinstance(getattr(cygru, n), types.ModuleType)
            and getattr(cygru, n).__name__ == f"cygru.{n}"
        )
    ]
    assert not leaks, leaks
    for n in ("os", "np", "numpy", "sys", "warnings", "importlib"):
        assert not hasattr(cygru, n), n
    assert all(hasattr(cygru, n) for n in cygru.__all__)
    namespace = {}
    exec("from cygru import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(cygru.__all__)


# ---------------------------------------------------------------------------
# options assigned after construction
# ---------------------------------------------------------------------------

_GRU_READ_ONLY = {
    "input_size": 5,
    "hidden_size": 8,
    "num_layers": 3,
    "bias": False,
    "bidirectional": True,
    "num_directions": 2,
    "reset_after": False,
    "reverse": True,
    "dtype": np.float64,
    "device": "cuda",
}
_CELL_READ_ONLY = ("input_size", "hidden_size", "bias", "reset_after", "dtype", "device")
_GRU_ONLY = ("num_layers", "batch_first", "dropout", "bidirectional", "reverse")


def _constructor_error(cls, **option):
    with pytest.raises((TypeError, ValueError)) as info:
        cls(I, H, **option)
    return info.type, str(info.value)


@pytest.mark.parametrize(
    "value", ["no", "", 2, -1, None, 0.5, np.array([True]), [True], np.float64(1.0)]
)
def test_batch_first_assigned_is_validated_like_the_constructor(value):
    m = cygru.GRU(I, H, seed=0)
    kind, message = _constructor_error(cygru.GRU, batch_first=value)
    with pytest.raises(kind) as info:
        m.batch_first = value
    assert str(info.value) == message
    assert message.startswith("cygru.GRU: batch_first must be True or False")
    assert m.batch_first is False


@pytest.mark.parametrize(
    "value", [-0.1, 1.0, 1.5, "a", "0.5", b"0.5", True, np.bool_(False), None, float("nan"), [0.1]]
)
def test_dropout_assigned_is_validated_like_the_constructor(value):
    m = cygru.GRU(I, H, num_layers=2, dropout=0.25)
    kind, message = _constructor_error(cygru.GRU, num_layers=2, dropout=value)
    with pytest.raises(kind) as info:
        m.dropout = value
    assert str(info.value) == message and "dropout" in message
    assert m.dropout == 0.25
    if isinstance(value, (str, bytes)):  # a number's text is not a number (torch agrees)
        assert kind is TypeError


def test_batch_first_and_dropout_may_change_like_torch():
    """batch_first and dropout may be set, as on torch.nn.GRU: valid values are stored as
    the constructor stores them and take effect."""
    m = cygru.GRU(I, H, num_layers=2, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, I))
    want = m(x)[0]
    for value in (True, np.bool_(True), 1):
        m.batch_first = value
        assert m.batch_first is True
    np.testing.assert_array_equal(m(x.transpose(1, 0, 2))[0], want.transpose(1, 0, 2))
    m.batch_first = 0
    assert m.batch_first is False
    m.dropout = np.float32(0.5)
    assert m.dropout == 0.5 and type(m.dropout) is float
    (_, _), backward = m.vjp(x)
    assert backward.dropout_masks is not None
    m.dropout = 0
    assert m.dropout == 0.0
    # as the constructor, dropout on a one-layer GRU warns
    one = cygru.GRU(I, H)
    with pytest.warns(
        UserWarning, match=r"cygru\.GRU: dropout=0\.3 has no effect with num_layers=1"
    ):
        one.dropout = 0.3
    assert one.dropout == 0.3


@pytest.mark.parametrize("name", sorted(_GRU_READ_ONLY))
def test_gru_options_that_define_the_parameters_are_read_only(name):
    m = cygru.GRU(I, H, seed=0)
    before = getattr(m, name)
    x = np.ones((2, 1, I), np.float32)
    out = m(x)[0]
    for value in (_GRU_READ_ONLY[name], before, "junk"):
        with pytest.raises(
            AttributeError, match=rf"^cygru\.GRU: {name} is read-only once the module is built \("
        ) as info:
            setattr(m, name, value)
    assert getattr(m, name) == before
    np.testing.assert_array_equal(m(x)[0], out)
    how = str(info.value)
    if name == "dtype":
        assert "module.double(), module.float() or module.to(dtype)" in how
    elif name == "device":
        assert "module.to(device)" in how
    elif name in ("reset_after", "reverse"):
        assert "new.load_state_dict(old.state_dict())" in how
    else:
        assert "build a new module" in how


@pytest.mark.parametrize("name", _CELL_READ_ONLY)
def test_gru_cell_options_are_read_only(name):
    c = cygru.GRUCell(I, H, seed=0)
    before = getattr(c, name)
    with pytest.raises(
        AttributeError, match=rf"^cygru\.GRUCell: {name} is read-only once the module is built"
    ):
        setattr(c, name, _GRU_READ_ONLY[name])
    assert getattr(c, name) == before


@pytest.mark.parametrize("name", _GRU_ONLY)
def test_gru_cell_refuses_options_it_does_not_have(name):
    """A GRUCell has no batch_first, dropout, ...: assigning one would do nothing, so it
    raises instead of storing a silent attribute."""
    c = cygru.GRUCell(I, H, seed=0)
    with pytest.raises(AttributeError, match=rf"^cygru\.GRUCell: a GRUCell has no option '{name}'"):
        setattr(c, name, True)
    assert name not in vars(c)


def test_changed_options_survive_pickle_and_copy():
    import copy

    m = cygru.GRU(I, H, num_layers=2, seed=0)
    m.batch_first, m.dropout = True, 0.4
    m.note = "kept"  # a plain attribute of the user's, as on any object
    c = cygru.GRUCell(I, H, seed=0)
    c.note = "cell"
    x = np.ones((2, 3, I), np.float32)
    for m2 in (pickle.loads(pickle.dumps(m)), copy.copy(m), copy.deepcopy(m)):
        assert (m2.batch_first, m2.dropout, m2.note) == (True, 0.4, "kept")
        np.testing.assert_array_equal(m2(x)[0], m(x)[0])
        with pytest.raises(TypeError, match="batch_first must be True or False"):
            m2.batch_first = "no"
        with pytest.raises(AttributeError, match="read-only"):
            m2.hidden_size = 2
    for c2 in (pickle.loads(pickle.dumps(c)), copy.copy(c), copy.deepcopy(c)):
        assert c2.note == "cell"
        with pytest.raises(AttributeError, match="read-only"):
            c2.bias = False


@pytest.mark.parametrize("cls", [cygru.GRU, cygru.GRUCell])
def test_options_parameters_and_state_cannot_be_deleted(cls):
    m = cls(I, H, seed=0)
    x = np.ones((2, I), np.float32) if cls is cygru.GRUCell else np.ones((2, 1, I), np.float32)
    want = m(x)
    names = [*m._options, "device", "_lock", "_shapes", *m.state_dict()]
    for name in names:
        with pytest.raises(
            AttributeError, match=rf"^{m._who}: {name} cannot be deleted \(the module needs it"
        ):
            delattr(m, name)
    np.testing.assert_array_equal(m(x)[0], want[0])
    m.note = 1  # a user's own attribute may go
    del m.note
    assert not hasattr(m, "note")


def test_setting_training_says_there_is_no_mode():
    """``model.training = False`` (a PyTorch habit) would be stored and mean nothing."""
    for m in (cygru.GRU(I, H), cygru.GRUCell(I, H)):
        with pytest.raises(AttributeError, match=r"cannot set 'training': cygru has no training"):
            m.training = False
        assert "training" not in vars(m)
