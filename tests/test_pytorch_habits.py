"""What a PyTorch user reaches for, checked against torch.nn.GRU / GRUCell: load_state_dict's
strict=False and its return value, dtype given as torch or as a string, parameters() and
named_parameters(), reset_parameters(), double()/float()/to(dtype), zero_grad(set_to_none),
and the errors naming the public entry point."""

import pickle
import subprocess
import sys
import threading

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
    with pytest.raises(AttributeError, match="dtype is fixed"):
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
