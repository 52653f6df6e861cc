"""Issue "Core": the forward pass of cygru.GRU / cygru.GRUCell.

Checked against PyTorch (nn.GRU, nn.GRUCell) and against the plain-NumPy oracle
(cygru._reference): numerics over a grid of configurations, state_dict compatibility,
dtype conversion, memory layouts, the output/h_n identities of DESIGN section 1 (bit
for bit), every validation error (type and message), NaN/inf propagation,
``python -m cygru`` and the functional API.
"""

import itertools
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
from cygru import _reference as ref
from cygru import functional as F

torch = import_optional("torch")
from torch_helpers import to_numpy as _np, torch_dtype as _tdtype, torch_twin  # noqa: E402
from numeric_helpers import T, B, I, H, make_h0, make_x, rel_err, rng as _rng  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = {np.float32: 1e-5, np.float64: 1e-10}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def ref_layers(m):
    return F.layer_weights(m.state_dict(), m.num_layers, m.num_directions, m.bias)


def ref_forward(m, x, h0=None, lengths=None, dropout_masks=None):
    """The oracle's forward for module m (unbatched x/h0 handled like PyTorch)."""
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
        h0 = None if h0 is None else h0[:, None, :]
    out, h_n = ref.gru_forward(
        np.asarray(x, m.dtype),
        None if h0 is None else np.asarray(h0, m.dtype),
        ref_layers(m),
        hidden_size=m.hidden_size,
        num_directions=m.num_directions,
        reverse=m.reverse,
        reset_after=m.reset_after,
        lengths=lengths,
        batch_first=m.batch_first and not unbatched,
        dropout_masks=dropout_masks,
    )
    if unbatched:
        out, h_n = out[:, 0], h_n[:, 0]
    return out, h_n


# ---------------------------------------------------------------------------------------------
# forward numerics: GRU vs torch.nn.GRU and vs the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_gru_forward_vs_torch_and_reference(
    num_layers, bidirectional, batch_first, bias, with_h0, batched, dtype
):
    seed = num_layers * 64 + bidirectional * 32 + batch_first * 16 + bias * 8 + with_h0 * 4
    rng = _rng(seed + batched)
    m = cygru.GRU(
        I, H, num_layers, bias, batch_first, bidirectional=bidirectional, dtype=dtype, seed=seed
    )
    x = make_x(m, rng, batched)
    h0 = make_h0(m, rng, batched) if with_h0 else None
    out, h_n = m(x, h0)
    D = 2 if bidirectional else 1
    if batched:
        want_out = (B, T, D * H) if batch_first else (T, B, D * H)
        want_hn = (num_layers * D, B, H)
    else:
        want_out, want_hn = (T, D * H), (num_layers * D, H)
    assert out.shape == want_out and h_n.shape == want_hn
    assert out.dtype == np.dtype(dtype) and h_n.dtype == np.dtype(dtype)

    net = torch_twin(m)
    with torch.no_grad():
        t_out, t_hn = net(torch.from_numpy(x), None if h0 is None else torch.from_numpy(h0))
    tol = TOL[dtype]
    assert rel_err(out, _np(t_out)) <= tol
    assert rel_err(h_n, _np(t_hn)) <= tol

    r_out, r_hn = ref_forward(m, x, h0)
    assert rel_err(out, r_out) <= tol
    assert rel_err(h_n, r_hn) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_h", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_vs_torch_and_reference(bias, with_h, batched, dtype):
    rng = _rng(bias * 4 + with_h * 2 + batched)
    cell = cygru.GRUCell(I, H, bias, dtype=dtype, seed=3)
    x = rng.standard_normal((B, I) if batched else (I,)).astype(dtype)
    h = rng.standard_normal((B, H) if batched else (H,)).astype(dtype) if with_h else None
    h1 = cell(x, h)
    assert h1.shape == ((B, H) if batched else (H,)) and h1.dtype == np.dtype(dtype)
    net = torch_twin(cell)
    with torch.no_grad():
        t_h1 = net(torch.from_numpy(x), None if h is None else torch.from_numpy(h))
    tol = TOL[dtype]
    assert rel_err(h1, _np(t_h1)) <= tol
    sd = cell.state_dict()
    r_h1 = ref.cell_forward(
        np.atleast_2d(x),
        None if h is None else np.atleast_2d(h),
        sd["weight_ih"],
        sd["weight_hh"],
        sd.get("bias_ih"),
        sd.get("bias_hh"),
        reset_after=True,
    )
    assert rel_err(h1, r_h1.reshape(h1.shape)) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize(
    "cfg",
    [
        dict(num_layers=1),
        dict(num_layers=2, bidirectional=True),
        dict(num_layers=3, bias=False, batch_first=True),
        dict(num_layers=2, bidirectional=True, batch_first=True),
        dict(num_layers=2, reverse=True),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_gru_reset_before_vs_reference(cfg, batched, dtype):
    rng = _rng(11)
    m = cygru.GRU(I, H, reset_after=False, dtype=dtype, seed=5, **cfg)
    x = make_x(m, rng, batched)
    h0 = make_h0(m, rng, batched)
    for h in (h0, None):
        out, h_n = m(x, h)
        r_out, r_hn = ref_forward(m, x, h)
        assert rel_err(out, r_out) <= TOL[dtype]
        assert rel_err(h_n, r_hn) <= TOL[dtype]
    # the two variants really differ (the flag is not ignored)
    m_after = cygru.GRU(I, H, reset_after=True, dtype=dtype, seed=5, **cfg)
    assert not np.allclose(m(x, h0)[0], m_after(x, h0)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_reset_before_vs_reference(bias, batched, dtype):
    rng = _rng(13)
    cell = cygru.GRUCell(I, H, bias, reset_after=False, dtype=dtype, seed=2)
    x = rng.standard_normal((B, I) if batched else (I,)).astype(dtype)
    h = rng.standard_normal((B, H) if batched else (H,)).astype(dtype)
    sd = cell.state_dict()
    for hh in (h, None):
        h1 = cell(x, hh)
        r_h1 = ref.cell_forward(
            np.atleast_2d(x),
            None if hh is None else np.atleast_2d(hh),
            sd["weight_ih"],
            sd["weight_hh"],
            sd.get("bias_ih"),
            sd.get("bias_hh"),
            reset_after=False,
        )
        assert rel_err(h1, r_h1.reshape(h1.shape)) <= TOL[dtype]
    assert not np.allclose(cell(x, h), cygru.GRUCell(I, H, bias, dtype=dtype, seed=2)(x, h))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(
    "num_layers,batch_first,batched",
    [(1, False, True), (2, True, True), (3, False, True), (2, False, False)],
)
def test_reverse_vs_reference(num_layers, batch_first, batched, reset_after, dtype):
    rng = _rng(17)
    m = cygru.GRU(
        I,
        H,
        num_layers,
        batch_first=batch_first,
        reverse=True,
        reset_after=reset_after,
        dtype=dtype,
        seed=9,
    )
    x = make_x(m, rng, batched)
    h0 = make_h0(m, rng, batched)
    out, h_n = m(x, h0)
    r_out, r_hn = ref_forward(m, x, h0)
    assert rel_err(out, r_out) <= TOL[dtype]
    assert rel_err(h_n, r_hn) <= TOL[dtype]
    if reset_after:
        # independent check: reverse=True is a forward GRU over the time-flipped sequence
        t_axis = 1 if (batch_first and batched) else 0
        net = torch_twin(m)
        with torch.no_grad():
            t_out, t_hn = net(torch.from_numpy(np.flip(x, t_axis).copy()), torch.from_numpy(h0))
        assert rel_err(out, np.flip(_np(t_out), t_axis)) <= TOL[dtype]
        assert rel_err(h_n, _np(t_hn)) <= TOL[dtype]
    # h_n of a reversed single direction is its state at t = 0
    if batched:
        first = out[:, 0] if batch_first else out[0]
        assert np.array_equal(first, h_n[-1])
    else:
        assert np.array_equal(out[0], h_n[-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "case",
    [
        # long enough that the input projection is done in chunks of steps
        dict(T=60, B=64, H=128, L=2, bi=True, bf=False, lengths=False),
        dict(T=60, B=64, H=128, L=2, bi=True, bf=True, lengths=True),
        dict(T=45, B=64, H=96, L=1, bi=False, bf=False, lengths=True),
        # B = 1 (matrix-vector products)
        dict(T=9, B=1, H=H, L=2, bi=True, bf=True, lengths=False),
        dict(T=9, B=1, H=H, L=2, bi=True, bf=False, lengths=True),
        dict(T=300, B=2, H=H, L=1, bi=True, bf=False, lengths=True),
    ],
    ids=lambda c: (
        f"T{c['T']}-B{c['B']}-H{c['H']}-L{c['L']}-bi{int(c['bi'])}-bf{int(c['bf'])}"
        f"-len{int(c['lengths'])}"
    ),
)
def test_chunked_and_single_row_forward_vs_torch(case, dtype):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    rng = _rng(21)
    Tc, Bc, Hc = case["T"], case["B"], case["H"]
    m = cygru.GRU(
        16, Hc, case["L"], batch_first=case["bf"], bidirectional=case["bi"], dtype=dtype, seed=0
    )
    x = rng.standard_normal((Bc, Tc, 16) if case["bf"] else (Tc, Bc, 16)).astype(dtype)
    h0 = rng.standard_normal((case["L"] * m.num_directions, Bc, Hc)).astype(dtype)
    lengths = None
    if case["lengths"]:
        lengths = rng.integers(1, Tc + 1, Bc)
        lengths[0] = 1 if Bc > 1 else Tc - 3
        lengths[-1] = Tc
    out, h_n = m(x, h0, lengths)
    net = torch_twin(m)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if lengths is None:
            t_out, t_hn = net(xt, torch.from_numpy(h0))
        else:
            packed = pack_padded_sequence(
                xt, torch.as_tensor(lengths), batch_first=case["bf"], enforce_sorted=False
            )
            t_out, t_hn = net(packed, torch.from_numpy(h0))
            t_out, _ = pad_packed_sequence(t_out, batch_first=case["bf"], total_length=Tc)
    assert rel_err(out, _np(t_out)) <= TOL[dtype]
    assert rel_err(h_n, _np(t_hn)) <= TOL[dtype]


# ---------------------------------------------------------------------------------------------
# state_dict, parameters and initialisation
# ---------------------------------------------------------------------------------------------

GRU_CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=1, bias=False),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, bidirectional=False, batch_first=True),
    dict(num_layers=3, bidirectional=True, bias=False),
]
_cfg_id = lambda c: "-".join(f"{k}={v}" for k, v in c.items())  # noqa: E731


@pytest.mark.parametrize("cfg", GRU_CONFIGS, ids=_cfg_id)
def test_state_dict_keys_order_shapes_match_torch(cfg):
    m = cygru.GRU(I, H, seed=0, **cfg)
    net = torch.nn.GRU(I, H, **cfg)
    sd, tsd = m.state_dict(), net.state_dict()
    assert list(sd) == list(tsd)
    for k in tsd:
        assert sd[k].shape == tuple(tsd[k].shape), k
        assert sd[k].dtype == np.float32
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in net.named_parameters()]
    # state_dict returns copies: writing into them does not touch the module
    before = m.weight_hh_l0.copy()
    sd["weight_hh_l0"][...] = 123.0
    assert np.array_equal(m.weight_hh_l0, before)


@pytest.mark.parametrize("bias", [True, False])
def test_cell_state_dict_keys_order_shapes_match_torch(bias):
    cell = cygru.GRUCell(I, H, bias, seed=0)
    net = torch.nn.GRUCell(I, H, bias)
    sd, tsd = cell.state_dict(), net.state_dict()
    assert list(sd) == list(tsd)
    for k in tsd:
        assert sd[k].shape == tuple(tsd[k].shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", GRU_CONFIGS, ids=_cfg_id)
def test_state_dict_round_trip_cygru_to_torch(cfg, dtype):
    rng = _rng(1)
    m = cygru.GRU(I, H, dtype=dtype, seed=4, **cfg)
    net = torch.nn.GRU(I, H, dtype=_tdtype(dtype), **cfg)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    with torch.no_grad():
        t_out, t_hn = net(torch.from_numpy(x), torch.from_numpy(h0))
    out, h_n = m(x, h0)
    assert rel_err(out, _np(t_out)) <= TOL[dtype]
    assert rel_err(h_n, _np(t_hn)) <= TOL[dtype]


@pytest.mark.parametrize("as_numpy", [False, True])
@pytest.mark.parametrize("cfg", GRU_CONFIGS, ids=_cfg_id)
def test_state_dict_round_trip_torch_to_cygru(cfg, as_numpy):
    torch.manual_seed(7)
    rng = _rng(2)
    net = torch.nn.GRU(I, H, **cfg)
    m = cygru.GRU(I, H, seed=123, **cfg)
    if as_numpy:
        m.load_state_dict({k: v.detach().numpy() for k, v in net.state_dict().items()})
    else:
        m.load_state_dict({k: v.detach() for k, v in net.state_dict().items()})
    for k, v in net.state_dict().items():
        assert np.array_equal(getattr(m, k), v.numpy()), k
    x = make_x(m, rng)
    with torch.no_grad():
        t_out, t_hn = net(torch.from_numpy(x))
    out, h_n = m(x)
    assert rel_err(out, _np(t_out)) <= 1e-5
    assert rel_err(h_n, _np(t_hn)) <= 1e-5
    # the module copied the values in: changing the source does not change the module
    with torch.no_grad():
        net.weight_ih_l0.add_(1.0)
    assert not np.array_equal(m.weight_ih_l0, net.weight_ih_l0.detach().numpy())


def test_cell_state_dict_round_trips():
    torch.manual_seed(3)
    rng = _rng(3)
    net = torch.nn.GRUCell(I, H)
    cell = cygru.GRUCell(I, H, seed=1)
    cell.load_state_dict({k: v.detach() for k, v in net.state_dict().items()})
    x, h = (
        rng.standard_normal((B, I)).astype(np.float32),
        rng.standard_normal((B, H)).astype(np.float32),
    )
    with torch.no_grad():
        want = _np(net(torch.from_numpy(x), torch.from_numpy(h)))
    assert rel_err(cell(x, h), want) <= 1e-5
    net2 = torch.nn.GRUCell(I, H)
    net2.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    with torch.no_grad():
        assert rel_err(cell(x, h), _np(net2(torch.from_numpy(x), torch.from_numpy(h)))) <= 1e-5


class _SubArray(np.ndarray):
    pass


def test_parameters_never_alias_caller_memory():
    """load_state_dict and attribute assignment copy values in (README: "copied in"), for
    every array-like: torch tensors, ndarrays, ndarray subclasses."""
    net = torch.nn.GRU(I, H, num_layers=2)
    sources = {
        "torch": {k: v.detach() for k, v in net.state_dict().items()},
        "numpy": {k: v.detach().numpy() for k, v in net.state_dict().items()},
        "subclass": {
            k: v.detach().numpy().copy().view(_SubArray) for k, v in net.state_dict().items()
        },
    }
    for kind, sd in sources.items():
        m = cygru.GRU(I, H, num_layers=2, seed=0)
        m.load_state_dict(sd)
        for k, v in sd.items():
            assert not np.shares_memory(getattr(m, k), np.asarray(v)), f"{kind}: {k}"
        m2 = cygru.GRU(I, H, num_layers=2, seed=0)
        for k, v in sd.items():
            setattr(m2, k, v)
            assert not np.shares_memory(getattr(m2, k), np.asarray(v)), f"{kind} setattr: {k}"
        cell = cygru.GRUCell(I, H, seed=0)
        csd = {k[:-3]: v for k, v in sd.items() if k.endswith("_l0")}
        cell.load_state_dict(csd)
        for k, v in csd.items():
            assert not np.shares_memory(getattr(cell, k), np.asarray(v)), f"{kind} cell: {k}"


def test_load_state_dict_converts_dtype_and_copies():
    m = cygru.GRU(I, H, dtype=np.float64, seed=0)
    src = cygru.GRU(I, H, dtype=np.float32, seed=1).state_dict()
    m.load_state_dict(src)
    for k, v in src.items():
        assert getattr(m, k).dtype == np.float64
        assert np.array_equal(getattr(m, k), v.astype(np.float64))
        assert not np.shares_memory(getattr(m, k), v)
    src64 = {k: v.astype(np.float64) for k, v in src.items()}
    m.load_state_dict(src64)
    for k, v in src64.items():
        assert not np.shares_memory(getattr(m, k), v)
        v[...] = 0
    assert not np.array_equal(m.weight_ih_l0, 0 * m.weight_ih_l0)


def test_load_state_dict_errors():
    m = cygru.GRU(I, H, num_layers=2, bidirectional=True, seed=0)
    before = m.state_dict()
    good = m.state_dict()

    bad = dict(good)
    del bad["bias_hh_l1_reverse"]
    with pytest.raises(ValueError, match="missing.*bias_hh_l1_reverse"):
        m.load_state_dict(bad)

    bad = dict(good, weight_ih_l2=np.zeros((3 * H, 2 * H), np.float32))
    with pytest.raises(ValueError, match="unexpected.*weight_ih_l2"):
        m.load_state_dict(bad)

    bad = dict(good, weight_hh_l1=np.zeros((3 * H, H + 1), np.float32))
    with pytest.raises(ValueError, match=r"weight_hh_l1.*shape"):
        m.load_state_dict(bad)

    bad = dict(good, bias_ih_l0=np.zeros((1, 3 * H), np.float32))
    with pytest.raises(ValueError, match=r"bias_ih_l0.*shape"):
        m.load_state_dict(bad)

    for value in (
        "abc",
        None,
        np.array(["a"] * (3 * H)),
        np.zeros(3 * H, complex),
        np.array([object()] * (3 * H)),
    ):
        bad = dict(good, bias_hh_l0=value)
        with pytest.raises(TypeError, match="bias_hh_l0"):
            m.load_state_dict(bad)

    with pytest.raises(TypeError, match="mapping"):
        m.load_state_dict([("weight_ih_l0", good["weight_ih_l0"])])

    # nothing was changed by any failed load
    for k, v in before.items():
        assert np.array_equal(getattr(m, k), v), k

    # setting an attribute is validated the same way
    with pytest.raises(ValueError, match="weight_ih_l0.*shape"):
        m.weight_ih_l0 = np.zeros((2, 2))
    with pytest.raises(TypeError, match="weight_ih_l0"):
        m.weight_ih_l0 = "zeros"


def test_parameters_reachable_by_name():
    m = cygru.GRU(I, H, num_layers=2, bidirectional=True, seed=0)
    sd = m.state_dict()
    assert m.weight_ih_l0.shape == (3 * H, I)
    assert m.weight_ih_l1.shape == (3 * H, 2 * H)
    assert m.bias_hh_l1_reverse.shape == (3 * H,)
    assert np.array_equal(m.bias_hh_l1_reverse, sd["bias_hh_l1_reverse"])
    for name, arr in m.named_parameters():
        assert getattr(m, name) is arr
    cell = cygru.GRUCell(I, H, seed=0)
    assert cell.weight_ih.shape == (3 * H, I) and cell.weight_hh.shape == (3 * H, H)
    assert cell.bias_ih.shape == (3 * H,) and cell.bias_hh.shape == (3 * H,)
    # assigning a parameter by name changes the computation
    x = np.ones((T, B, I), np.float32)
    out0, _ = m(x)
    m.bias_ih_l1 = m.bias_ih_l1 + 1.0
    assert not np.array_equal(m(x)[0], out0)
    # no bias parameters when bias=False
    nb = cygru.GRU(I, H, bias=False)
    assert not hasattr(nb, "bias_ih_l0")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seeded_init_reproducible_and_uniform(dtype):
    Hbig = 16
    a = cygru.GRU(I, Hbig, num_layers=2, bidirectional=True, dtype=dtype, seed=42)
    b = cygru.GRU(I, Hbig, num_layers=2, bidirectional=True, dtype=dtype, seed=42)
    c = cygru.GRU(I, Hbig, num_layers=2, bidirectional=True, dtype=dtype, seed=43)
    k = 1.0 / np.sqrt(Hbig)
    for (n, va), (_, vb), (_, vc) in zip(
        a.named_parameters(), b.named_parameters(), c.named_parameters()
    ):
        assert va.dtype == np.dtype(dtype)
        assert np.array_equal(va, vb), n
        assert not np.array_equal(va, vc), n
        assert np.all(np.abs(va) <= k), n
    allv = np.concatenate([v.ravel() for _, v in a.named_parameters()])
    assert allv.min() < -0.9 * k and allv.max() > 0.9 * k
    assert abs(allv.mean()) < 0.05 * k
    # uniform: variance k^2 / 3
    assert abs(allv.var() / (k * k / 3) - 1) < 0.1
    ca = cygru.GRUCell(I, Hbig, dtype=dtype, seed=1)
    cb = cygru.GRUCell(I, Hbig, dtype=dtype, seed=1)
    for (n, va), (_, vb) in zip(ca.named_parameters(), cb.named_parameters()):
        assert np.array_equal(va, vb) and np.all(np.abs(va) <= k)
    # unseeded modules differ
    assert not np.array_equal(cygru.GRU(I, H).weight_hh_l0, cygru.GRU(I, H).weight_hh_l0)


# ---------------------------------------------------------------------------------------------
# dtype handling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_dtype", [np.int8, np.int32, np.int64, np.uint8, np.float16, np.float64, np.bool_]
)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_input_dtype_converted(in_dtype, bidirectional):
    rng = _rng(5)
    m = cygru.GRU(I, H, num_layers=2, bidirectional=bidirectional, seed=0)
    xf = rng.standard_normal((T, B, I)) * 3
    hf = rng.standard_normal((2 * m.num_directions, B, H))
    if in_dtype is np.bool_:
        x, h0 = xf > 0, hf > 0
    else:
        x, h0 = xf.astype(in_dtype), hf.astype(in_dtype)
    out, h_n = m(x, h0)
    e_out, e_hn = m(x.astype(np.float32), h0.astype(np.float32))
    assert out.dtype == np.float32 and h_n.dtype == np.float32
    assert np.array_equal(out, e_out) and np.array_equal(h_n, e_hn)
    # GRUCell too
    cell = cygru.GRUCell(I, H, seed=0)
    assert np.array_equal(
        cell(x[0], h0[0]), cell(x[0].astype(np.float32), h0[0].astype(np.float32))
    )


def test_python_lists_accepted():
    m = cygru.GRU(I, H, seed=0)
    x = _rng(0).standard_normal((T, B, I)).astype(np.float32)
    assert np.array_equal(m(x.tolist())[0], m(x)[0])


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((T, B, I), np.complex64),
        np.ones((T, B, I), np.complex128),
        np.ones((T, B, I), dtype=object),
        np.full((T, B, I), "a"),
        np.full((T, B, I), b"a"),
    ],
    ids=["complex64", "complex128", "object", "str", "bytes"],
)
def test_non_real_input_raises_type_error(bad):
    m = cygru.GRU(I, H, seed=0)
    with pytest.raises(TypeError, match="real numbers"):
        m(bad)
    with pytest.raises(TypeError, match="h0.*real numbers"):
        m(np.ones((T, B, I)), np.full((1, B, H), bad.flat[0], dtype=bad.dtype))
    cell = cygru.GRUCell(I, H, seed=0)
    with pytest.raises(TypeError, match="real numbers"):
        cell(bad[0])
    with pytest.raises(TypeError, match="real numbers"):
        cell.vjp(bad[0])
    with pytest.raises(TypeError, match="real numbers"):
        m.vjp(bad)
    with pytest.raises(TypeError):
        m("not an array")


# ---------------------------------------------------------------------------------------------
# memory layouts, no modification of caller arrays, fresh outputs
# ---------------------------------------------------------------------------------------------


def _layouts(a):
    """The same values in several memory layouts (not C-contiguous)."""
    big = np.zeros((a.shape[0] * 2,) + a.shape[1:], a.dtype)
    big[::2] = a
    yield "strided", big[::2]
    yield "fortran", np.asfortranarray(a)
    flipped = np.ascontiguousarray(a[::-1, ::-1])
    yield "negative", flipped[::-1, ::-1]
    t = np.ascontiguousarray(np.swapaxes(a, 0, 1))
    yield "transposed", np.swapaxes(t, 0, 1)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_noncontiguous_inputs_same_results(bidirectional, batch_first):
    rng = _rng(6)
    m = cygru.GRU(
        I, H, 2, batch_first=batch_first, bidirectional=bidirectional, dtype=np.float64, seed=0
    )
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    out, h_n = m(x, h0)
    for (nx, xv), (nh, hv) in zip(_layouts(x), _layouts(h0)):
        assert not xv.flags.c_contiguous and not hv.flags.c_contiguous
        assert np.array_equal(xv, x) and np.array_equal(hv, h0)
        o, hn = m(xv, hv)
        assert np.array_equal(o, out), nx
        assert np.array_equal(hn, h_n), nh
        o, hn = m(xv, h0)
        assert np.array_equal(o, out), nx
        # vjp/backward with non-contiguous gradients
        (o, hn), backward = m.vjp(xv, hv)
        assert np.array_equal(o, out) and np.array_equal(hn, h_n)
    d_out = rng.standard_normal(out.shape)
    d_hn = rng.standard_normal(h_n.shape)
    m.zero_grad()
    (_, _), backward = m.vjp(x, h0)
    dx, dh0 = backward(d_out, d_hn)
    g = {k: v.copy() for k, v in m.grads.items()}
    for (_, xv), (_, hv), (_, dov), (_, dhv) in zip(
        _layouts(x), _layouts(h0), _layouts(d_out), _layouts(d_hn)
    ):
        m.zero_grad()
        (_, _), backward = m.vjp(xv, hv)
        dx2, dh02 = backward(dov, dhv)
        assert np.array_equal(dx2, dx) and np.array_equal(dh02, dh0)
        for k in g:
            assert np.array_equal(m.grads[k], g[k]), k


def test_noncontiguous_unbatched_and_cell():
    rng = _rng(7)
    m = cygru.GRU(I, H, 2, bidirectional=True, seed=0)
    x = rng.standard_normal((T, I)).astype(np.float32)
    h0 = rng.standard_normal((4, H)).astype(np.float32)
    out, h_n = m(x, h0)
    for (_, xv), (_, hv) in zip(_layouts(x), _layouts(h0)):
        o, hn = m(xv, hv)
        assert np.array_equal(o, out) and np.array_equal(hn, h_n)
    cell = cygru.GRUCell(I, H, seed=0)
    xb = rng.standard_normal((B, I)).astype(np.float32)
    hb = rng.standard_normal((B, H)).astype(np.float32)
    h1 = cell(xb, hb)
    for (_, xv), (_, hv) in zip(_layouts(xb), _layouts(hb)):
        assert np.array_equal(cell(xv, hv), h1)
    xw = np.zeros(2 * I, np.float32)
    xw[::2] = xb[0]
    assert np.array_equal(cell(xw[::2], hb[0][::-1][::-1]), cell(xb[0], hb[0]))


def test_caller_arrays_never_modified():
    rng = _rng(8)
    m = cygru.GRU(I, H, 3, bidirectional=True, dtype=np.float64, seed=0, dropout=0.3)
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    lengths = np.array([T, 2, 5])
    args = [x, h0, lengths]
    copies = [a.copy() for a in args]
    m(*args)
    (out, h_n), backward = m.vjp(*args)
    d_out = rng.standard_normal(out.shape)
    d_hn = rng.standard_normal(h_n.shape)
    gcopies = [d_out.copy(), d_hn.copy()]
    backward(d_out, d_hn)
    for a, c in zip(args + [d_out, d_hn], copies + gcopies):
        assert np.array_equal(a, c)
    # parameters untouched by forward/backward
    params = m.state_dict()
    m(x, h0)
    (_, _), backward = m.vjp(x, h0)
    backward(d_out, d_hn)
    for k, v in params.items():
        assert np.array_equal(getattr(m, k), v)
    # GRUCell
    cell = cygru.GRUCell(I, H, dtype=np.float64, seed=0)
    xc, hc = x[0].copy(), h0[0].copy()
    xcc, hcc = xc.copy(), hc.copy()
    cell(xc, hc)
    h1, backward = cell.vjp(xc, hc)
    dh1 = rng.standard_normal(h1.shape)
    dh1c = dh1.copy()
    backward(dh1)
    assert np.array_equal(xc, xcc) and np.array_equal(hc, hcc) and np.array_equal(dh1, dh1c)
    # functional
    sd = m.state_dict()
    sdc = {k: v.copy() for k, v in sd.items()}
    F.gru(x, sd, h0, num_layers=3, bidirectional=True)
    for k in sd:
        assert np.array_equal(sd[k], sdc[k])
    assert np.array_equal(x, copies[0]) and np.array_equal(h0, copies[1])


def test_outputs_are_fresh_arrays():
    rng = _rng(9)
    for dtype in (np.float32, np.float64):
        m = cygru.GRU(I, H, 2, bidirectional=True, dtype=dtype, seed=0)
        x = make_x(m, rng)
        h0 = make_h0(m, rng)
        out1, hn1 = m(x, h0)
        out2, hn2 = m(x, h0)
        assert out1 is not out2 and hn1 is not hn2
        for a in (out1, hn1):
            for b in (x, h0, out2, hn2) + tuple(v for _, v in m.named_parameters()):
                assert not np.shares_memory(a, b)
        assert not np.shares_memory(out1, hn1)
        # writing into an output changes nothing else
        out1[...] = 0
        hn1[...] = 0
        assert np.array_equal(m(x, h0)[0], out2)
        # unbatched
        xu, hu = x[:, 0].copy(), h0[:, 0].copy()
        o, hn = m(xu, hu)
        assert not np.shares_memory(o, xu) and not np.shares_memory(hn, hu)
        assert not np.shares_memory(o, hn)
        # vjp outputs and gradients
        (o, hn), backward = m.vjp(x, h0)
        d_out, d_hn = np.ones_like(o), np.ones_like(hn)
        dx, dh0 = backward(d_out, d_hn)
        for a in (dx, dh0):
            for b in (x, h0, d_out, d_hn, o, hn) + tuple(m.grads.values()):
                assert not np.shares_memory(a, b)
    cell = cygru.GRUCell(I, H, seed=0)
    xc = rng.standard_normal((B, I)).astype(np.float32)
    hc = rng.standard_normal((B, H)).astype(np.float32)
    a, b = cell(xc, hc), cell(xc, hc)
    assert a is not b and not np.shares_memory(a, b)
    assert not np.shares_memory(a, hc) and not np.shares_memory(a, xc)


# ---------------------------------------------------------------------------------------------
# the identities of DESIGN section 1, bit for bit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_output_h_n_identities_bitwise(num_layers, bidirectional, batch_first, reset_after, dtype):
    rng = _rng(10)
    m = cygru.GRU(
        I,
        H,
        num_layers,
        batch_first=batch_first,
        bidirectional=bidirectional,
        reset_after=reset_after,
        dtype=dtype,
        seed=1,
    )
    x = make_x(m, rng)
    for h0 in (None, make_h0(m, rng)):
        for out, h_n in (m(x, h0), m.vjp(x, h0)[0]):
            tm = np.swapaxes(out, 0, 1) if batch_first else out  # time-major view
            if bidirectional:
                assert np.array_equal(tm[-1, :, :H], h_n[-2])
                assert np.array_equal(tm[0, :, H:], h_n[-1])
                if batch_first:
                    assert np.array_equal(out[:, -1, :H], h_n[-2])
                    assert np.array_equal(out[:, 0, H:], h_n[-1])
            else:
                assert np.array_equal(tm[-1], h_n[-1])
                if batch_first:
                    assert np.array_equal(out[:, -1], h_n[-1])
            # h_n.reshape(L, D, B, H) separates layers and directions
            assert (
                h_n.reshape(num_layers, m.num_directions, B, H)[-1, 0].tobytes()
                == tm[-1, :, :H].tobytes()
            )
        # unbatched
        xu = x[:, 0] if batch_first else x[:, 0]
        hu = None if h0 is None else h0[:, 0]
        out, h_n = m(xu, hu)
        if bidirectional:
            assert np.array_equal(out[-1, :H], h_n[-2]) and np.array_equal(out[0, H:], h_n[-1])
        else:
            assert np.array_equal(out[-1], h_n[-1])


def test_gru_cell_equals_one_step_gru():
    # a one-layer GRU over a single step gives the GRUCell's state (same weights)
    rng = _rng(12)
    cell = cygru.GRUCell(I, H, dtype=np.float64, seed=0)
    m = cygru.GRU(I, H, dtype=np.float64, seed=0)
    m.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x = rng.standard_normal((B, I))
    h = rng.standard_normal((B, H))
    out, h_n = m(x[None], h[None])
    assert rel_err(cell(x, h), h_n[0]) <= 1e-12


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_wrong_x_ndim():
    m = cygru.GRU(I, H)
    for shape in [(I,), (2, T, B, I), ()]:
        with pytest.raises(ValueError, match=r"3 dimensions.*2 \(unbatched"):
            m(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"\(T, B, I\).*4 dimensions"):
        m(np.zeros((1, T, B, I)))
    with pytest.raises(ValueError, match=r"\(B, T, I\)"):
        cygru.GRU(I, H, batch_first=True)(np.zeros((1, 1, 1, I)))
    with pytest.raises(ValueError, match="dimensions"):
        m.vjp(np.zeros((I,)))


def test_wrong_feature_size():
    m = cygru.GRU(I, H)
    with pytest.raises(ValueError, match=rf"{I} features.*\({T}, {B}, {I + 1}\)"):
        m(np.zeros((T, B, I + 1), np.float32))
    with pytest.raises(ValueError, match=rf"{I} features"):
        m(np.zeros((T, I - 1), np.float32))
    with pytest.raises(ValueError, match=rf"{I} features"):
        m.vjp(np.zeros((T, B, 2 * I)))


def test_wrong_h0_shape():
    m = cygru.GRU(I, H, num_layers=2, bidirectional=True)
    x = np.zeros((T, B, I), np.float32)
    for bad in [(4, B, H + 1), (2, B, H), (4, B + 1, H), (4, H), (1, 4, B, H)]:
        with pytest.raises(ValueError, match=rf"h0 of shape \(4, {B}, {H}\).*got"):
            m(x, np.zeros(bad, np.float32))
    xu = np.zeros((T, I), np.float32)
    for bad in [(4, 1, H), (4, H + 1), (2, H), (H,)]:
        with pytest.raises(ValueError, match=rf"h0 of shape \(4, {H}\).*got"):
            m(xu, np.zeros(bad, np.float32))
    with pytest.raises(ValueError, match="h0 of shape"):
        m.vjp(x, np.zeros((4, B, H + 1)))
    mb = cygru.GRU(I, H, batch_first=True)
    # batch_first does not change h0's layout (L*D, B, H)
    with pytest.raises(ValueError, match=rf"h0 of shape \(1, 2, {H}\)"):
        mb(np.zeros((2, T, I)), np.zeros((2, 1, H)))


def test_sequence_length_zero():
    m = cygru.GRU(I, H)
    with pytest.raises(ValueError, match="sequence length is 0"):
        m(np.zeros((0, B, I), np.float32))
    with pytest.raises(ValueError, match="sequence length is 0"):
        m(np.zeros((0, I), np.float32))
    with pytest.raises(ValueError, match="sequence length is 0"):
        cygru.GRU(I, H, batch_first=True)(np.zeros((B, 0, I), np.float32))
    with pytest.raises(ValueError, match="sequence length is 0"):
        m.vjp(np.zeros((0, B, I)))


def test_lengths_with_unbatched_input():
    m = cygru.GRU(I, H)
    with pytest.raises(ValueError, match="lengths needs batched input"):
        m(np.zeros((T, I), np.float32), lengths=[T])
    with pytest.raises(ValueError, match="lengths needs batched input"):
        m.vjp(np.zeros((T, I), np.float32), lengths=np.array([3]))


def test_check_blas_sizes_directly():
    from cygru import _arrays

    _arrays.check_blas_sizes(a=2**31 - 1, b=0)  # fits
    with pytest.raises(ValueError, match=r"^n = 2147483648 does not fit BLAS's 32-bit int"):
        _arrays.check_blas_sizes(n=2**31)
    with pytest.raises(ValueError, match=r"T\*B .* does not fit BLAS"):
        _arrays.check_blas_sizes(**{"T*B (sequence length x batch)": 2**32})
    # named by the public entry point it is raised through
    named = _arrays.boundary("who")(lambda: _arrays.check_blas_sizes(n=2**31))
    with pytest.raises(ValueError, match=r"^who: n = 2147483648 does not fit BLAS's 32-bit int"):
        named()


_HUGE_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    # a call that allocates the huge input fails here instead of exhausting the machine
    limit = 6 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import cygru
    I = 5
    base = np.zeros(I, np.float32)
    results = []
    def attempt(name, fn):
        try:
            fn()
        except ValueError as e:
            results.append(f"{name}: ValueError: {e}")
        except BaseException as e:
            results.append(f"{name}: {type(e).__name__}: {e}")
        else:
            results.append(f"{name}: no error")
    x = np.lib.stride_tricks.as_strided(base, shape=(2**16, 2**16, I), strides=(0, 0, 4))
    m = cygru.GRU(I, 4)
    attempt("GRU", lambda: m(x))
    attempt("GRU.vjp", lambda: m.vjp(x))
    attempt("batch_first", lambda: cygru.GRU(I, 4, batch_first=True)(x))
    attempt("functional", lambda: cygru.functional.gru(x, m.state_dict()))
    xc = np.lib.stride_tricks.as_strided(base, shape=(2**31, I), strides=(0, 4))
    attempt("GRUCell", lambda: cygru.GRUCell(I, 4)(xc))
    print("\\n".join(results))
""")


def test_huge_sizes_raise_before_allocating():
    """T*B beyond BLAS's int must raise ValueError at the boundary, before the input is
    copied: the input here is a zero-strided view (a few bytes of real memory) whose
    contiguous copy would need 80 GiB. Run in a subprocess with an address-space limit."""
    env = dict(
        os.environ,
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    res = subprocess.run(
        [sys.executable, "-c", _HUGE_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 5, res.stdout
    for line in lines:
        assert "ValueError" in line and "does not fit BLAS" in line, res.stdout


def test_huge_module_sizes_rejected():
    with pytest.raises(ValueError, match="hidden_size = 2147483648 does not fit BLAS"):
        cygru.GRU(I, 2**31)
    with pytest.raises(ValueError, match="input_size .* does not fit BLAS"):
        cygru.GRUCell(2**31, H)


@pytest.mark.parametrize("cls", [cygru.GRU, cygru.GRUCell])
def test_bad_constructor_args(cls):
    with pytest.raises(ValueError, match="hidden_size must be >= 1, got 0"):
        cls(I, 0)
    with pytest.raises(ValueError, match="hidden_size must be >= 1, got -3"):
        cls(I, -3)
    with pytest.raises(TypeError, match="hidden_size must be an integer, got float"):
        cls(I, 4.0)
    with pytest.raises(TypeError, match="hidden_size must be an integer, got bool"):
        cls(I, True)
    with pytest.raises(TypeError, match="input_size must be an integer"):
        cls("5", H)
    with pytest.raises(ValueError, match="input_size must be >= 1"):
        cls(0, H)
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int32"):
        cls(I, H, dtype=np.int32)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        cls(I, H, dtype=np.float16)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        cls(I, H, dtype="not a dtype")
    # numpy integers are integers
    assert cls(np.int64(I), np.int32(H)).hidden_size == H


def test_bad_gru_only_constructor_args():
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        cygru.GRU(I, H, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        cygru.GRU(I, H, num_layers=2, dropout=-0.1)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        cygru.GRU(I, H, num_layers=2, dropout=1.0)
    with pytest.raises(TypeError, match="dropout must be a number"):
        cygru.GRU(I, H, num_layers=2, dropout="half")
    with pytest.raises(ValueError, match="reverse=True needs a single direction"):
        cygru.GRU(I, H, bidirectional=True, reverse=True)
    with pytest.raises(ValueError, match="num_layers must be >= 1, got 0"):
        cygru.GRU(I, H, num_layers=0)
    with pytest.raises(TypeError, match="num_layers must be an integer"):
        cygru.GRU(I, H, num_layers=2.0)
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        cygru.GRU(I, H, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cygru.GRU(I, H, num_layers=2, dropout=0.5)


def test_gru_cell_wrong_shapes():
    cell = cygru.GRUCell(I, H)
    with pytest.raises(ValueError, match=rf"x of shape \(B, {I}\) or \({I},\).*\(2, {I + 1}\)"):
        cell(np.zeros((2, I + 1)))
    with pytest.raises(ValueError, match=rf"x of shape \(B, {I}\)"):
        cell(np.zeros((T, 2, I)))
    with pytest.raises(ValueError, match=rf"x of shape \(B, {I}\)"):
        cell(np.zeros(()))
    with pytest.raises(ValueError, match=rf"h of shape \(2, {H}\), got \(2, {H + 1}\)"):
        cell(np.zeros((2, I)), np.zeros((2, H + 1)))
    with pytest.raises(ValueError, match=rf"h of shape \(2, {H}\), got \(3, {H}\)"):
        cell(np.zeros((2, I)), np.zeros((3, H)))
    with pytest.raises(ValueError, match=rf"h of shape \(2, {H}\), got \({H},?\)"):
        cell(np.zeros((2, I)), np.zeros(H))
    with pytest.raises(ValueError, match=rf"h of shape \({H},?\), got \(1, {H}\)"):
        cell(np.zeros(I), np.zeros((1, H)))
    # vjp validates the same way
    with pytest.raises(ValueError, match=rf"x of shape \(B, {I}\)"):
        cell.vjp(np.zeros((2, I + 1)))
    with pytest.raises(ValueError, match=rf"h of shape \(2, {H}\)"):
        cell.vjp(np.zeros((2, I)), np.zeros((2, H + 1)))
    with pytest.raises(ValueError, match=rf"h of shape \({H},?\)"):
        cell.vjp(np.zeros(I), np.zeros((1, H)))


def test_backward_argument_shapes_checked():
    m = cygru.GRU(I, H, dtype=np.float64)
    (out, h_n), backward = m.vjp(np.zeros((T, B, I)))
    with pytest.raises(ValueError, match=r"d_output of the output's shape"):
        backward(np.zeros((T, B, H + 1)), None)
    (out, h_n), backward = m.vjp(np.zeros((T, B, I)))
    with pytest.raises(ValueError, match=r"d_h_n of h_n's shape"):
        backward(None, np.zeros((2, B, H)))
    (out, h_n), backward = m.vjp(np.zeros((T, B, I)))
    with pytest.raises(TypeError, match="d_output.*real numbers"):
        backward(np.zeros(out.shape, complex), None)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_inf_propagate_like_torch(dtype, bidirectional):
    rng = _rng(14)
    m = cygru.GRU(I, H, 2, bidirectional=bidirectional, dtype=dtype, seed=0)
    x = make_x(m, rng)
    x[2, 1, 3] = np.nan
    x[4, 0, 0] = np.inf
    x[1, 2, 2] = -np.inf
    out, h_n = m(x)
    net = torch_twin(m)
    with torch.no_grad():
        t_out, t_hn = net(torch.from_numpy(x))
    t_out, t_hn = _np(t_out), _np(t_hn)
    assert np.isnan(out).any()
    assert np.array_equal(np.isnan(out), np.isnan(t_out))
    assert np.array_equal(np.isnan(h_n), np.isnan(t_hn))
    fin = np.isfinite(t_out)
    assert np.array_equal(np.isfinite(out), fin)
    assert rel_err(out[fin], t_out[fin]) <= 1e-4
    # NaN in h0 too, and a batch row untouched by NaN stays finite
    h0 = np.zeros((m.num_layers * m.num_directions, B, H), dtype)
    h0[0, 0, 0] = np.nan
    x2 = make_x(m, rng)
    out2, h_n2 = m(x2, h0)
    with torch.no_grad():
        t_out2, t_hn2 = net(torch.from_numpy(x2), torch.from_numpy(h0))
    assert np.array_equal(np.isnan(out2), np.isnan(_np(t_out2)))
    assert np.array_equal(np.isnan(h_n2), np.isnan(_np(t_hn2)))
    assert np.isfinite(out2[:, 1:]).all()
    # gradients do not crash either
    (o, hn), backward = m.vjp(x)
    dx, dh0 = backward(np.ones_like(o), np.ones_like(hn))
    assert dx.shape == x.shape
    # GRUCell
    cell = cygru.GRUCell(I, H, dtype=dtype, seed=0)
    xc = rng.standard_normal((B, I)).astype(dtype)
    xc[0, 0] = np.nan
    xc[1, 1] = np.inf
    tc = torch_twin(cell)
    with torch.no_grad():
        want = _np(tc(torch.from_numpy(xc)))
    got = cell(xc)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isfinite(got[2]).all()


def test_large_finite_inputs_saturate_like_torch():
    # huge pre-activations must saturate the gates, not produce NaN/inf
    m = cygru.GRU(I, H, 2, bidirectional=True, seed=0)
    x = (_rng(15).standard_normal((T, B, I)) * 1e30).astype(np.float32)
    out, h_n = m(x)
    net = torch_twin(m)
    with torch.no_grad():
        t_out, t_hn = net(torch.from_numpy(x))
    assert np.isfinite(out).all() and np.isfinite(h_n).all()
    assert np.abs(out).max() <= 1.0
    assert rel_err(out, _np(t_out)) <= 1e-5
    for dtype in (np.float32, np.float64):
        cell = cygru.GRUCell(I, H, dtype=dtype, seed=0)
        xc = np.array([[1e4] * I, [-1e4] * I, [1e300 if dtype == np.float64 else 1e30] * I], dtype)
        h1 = cell(xc)
        with torch.no_grad():
            want = _np(torch_twin(cell)(torch.from_numpy(xc)))
        assert np.isfinite(h1).all()
        assert rel_err(h1, want) <= TOL[dtype]


# ---------------------------------------------------------------------------------------------
# empty batch, python -m cygru, functional API, repr
# ---------------------------------------------------------------------------------------------


def test_empty_batch():
    m = cygru.GRU(I, H, 2, bidirectional=True)
    out, h_n = m(np.zeros((T, 0, I), np.float32))
    assert out.shape == (T, 0, 2 * H) and h_n.shape == (4, 0, H)
    net = torch_twin(m)
    with torch.no_grad():
        t_out, t_hn = net(torch.zeros(T, 0, I))
    assert tuple(t_out.shape) == out.shape and tuple(t_hn.shape) == h_n.shape
    assert cygru.GRUCell(I, H)(np.zeros((0, I))).shape == (0, H)


def test_python_dash_m_cygru():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(
        [sys.executable, "-m", "cygru"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    outp = res.stdout
    assert cygru.__version__ in outp
    for word in ("BLAS", "GPU", "self-check"):
        assert word in outp, word
    assert "FAILED" not in outp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cfg",
    [
        dict(num_layers=1),
        dict(num_layers=2, bidirectional=True, batch_first=True),
        dict(num_layers=3, bias=False),
        dict(num_layers=2, reset_after=False, bidirectional=True),
        dict(num_layers=1, reverse=True),
    ],
    ids=_cfg_id,
)
def test_functional_gru_equals_module(cfg, dtype):
    rng = _rng(16)
    m = cygru.GRU(I, H, dtype=dtype, seed=3, **cfg)
    kw = {k: v for k, v in cfg.items() if k != "bias"}
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    lengths = np.array([3, T, 1])
    sd = m.state_dict()
    for args in [dict(), dict(h0=h0), dict(h0=h0, lengths=lengths)]:
        out, h_n = F.gru(x, sd, args.get("h0"), lengths=args.get("lengths"), **kw)
        e_out, e_hn = m(x, args.get("h0"), args.get("lengths"))
        assert np.array_equal(out, e_out) and np.array_equal(h_n, e_hn)
    xu = x[0] if m.batch_first else x[:, 0]
    out, h_n = F.gru(xu, sd, h0[:, 0], **kw)
    e_out, e_hn = m(xu, h0[:, 0])
    assert np.array_equal(out, e_out) and np.array_equal(h_n, e_hn)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_functional_gru_cell_equals_module(bias, reset_after, dtype):
    rng = _rng(18)
    cell = cygru.GRUCell(I, H, bias, reset_after=reset_after, dtype=dtype, seed=4)
    sd = cell.state_dict()
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype)
    for xx, hh in [(x, h), (x, None), (x[0], h[0]), (x[0], None)]:
        got = F.gru_cell(
            xx,
            hh,
            sd["weight_ih"],
            sd["weight_hh"],
            sd.get("bias_ih"),
            sd.get("bias_hh"),
            reset_after=reset_after,
        )
        assert np.array_equal(got, cell(xx, hh))


def test_functional_errors():
    cell = cygru.GRUCell(I, H)
    sd = cell.state_dict()
    with pytest.raises(ValueError, match=r"w_hh of shape \(3H, H\)"):
        F.gru_cell(np.zeros(I), None, sd["weight_ih"], sd["weight_hh"][:-1])
    with pytest.raises(ValueError, match=rf"w_ih of shape \({3 * H}, I\)"):
        F.gru_cell(np.zeros(I), None, sd["weight_ih"][:-1], sd["weight_hh"])
    with pytest.raises(ValueError, match=rf"b_ih of shape \({3 * H},\)"):
        F.gru_cell(
            np.zeros(I), None, sd["weight_ih"], sd["weight_hh"], sd["bias_ih"][:-1], sd["bias_hh"]
        )
    with pytest.raises(TypeError, match="float32 or float64"):
        F.gru_cell(np.zeros(I), None, sd["weight_ih"], sd["weight_hh"].astype(np.int64))
    m = cygru.GRU(I, H, 2)
    sd = m.state_dict()
    with pytest.raises(ValueError, match="params has no 'weight_ih_l1'"):
        F.gru(
            np.zeros((T, B, I)), {k: v for k, v in sd.items() if k != "weight_ih_l1"}, num_layers=2
        )
    with pytest.raises(ValueError, match="PyTorch parameter names"):
        F.gru(np.zeros((T, B, I)), {"w": 1})
    with pytest.raises(
        ValueError,
        match=rf"weight_hh_l1 must have shape \({3 * H}, {H}\), "
        rf"got \({3 * H}, {H + 1}\)",
    ):
        F.gru(
            np.zeros((T, B, I)),
            dict(sd, weight_hh_l1=np.zeros((3 * H, H + 1), np.float32)),
            num_layers=2,
        )


def test_repr():
    assert repr(cygru.GRU(I, H)) == f"GRU({I}, {H}, dtype=float32)"
    r = repr(cygru.GRU(I, H, 2, bidirectional=True, dtype=np.float64))
    assert "num_layers=2" in r and "bidirectional=True" in r and "float64" in r
    assert repr(cygru.GRUCell(I, H, bias=False)) == f"GRUCell({I}, {H}, bias=False, dtype=float32)"


def test_pickle_and_deepcopy_round_trip():
    import copy
    import pickle

    m = cygru.GRU(I, H, 2, bidirectional=True, seed=0)
    x = make_x(m, _rng(19))
    out = m(x)[0]
    for m2 in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert np.array_equal(m2(x)[0], out)
        (o, hn), backward = m2.vjp(x)  # the lock was recreated
        backward(np.ones_like(o), None)
