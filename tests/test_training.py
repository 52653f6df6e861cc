"""Issue "Training": gradients of cygru.GRU / cygru.GRUCell.

vjp/backward against PyTorch autograd (nn.GRU, nn.GRUCell, packed sequences) and against
the plain-NumPy oracle (cygru._reference.gru_backward); variable lengths; the
reset_after=False variant; cygru.gradcheck (passing on correct modules, failing on
deliberately broken ones); gradient accumulation; inter-layer dropout; threads.
"""

import threading

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
from cygru import _reference as ref
from cygru import functional as F

torch = import_optional("torch")
from torch_helpers import to_numpy as _np, torch_dtype as _tdtype, torch_twin  # noqa: E402
from numeric_helpers import T, B, I, H, make_h0, make_x, rel_err, rng as _rng  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

GTOL = {np.float32: 1e-4, np.float64: 1e-9}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def cygru_grads(m, x, h0, d_out, d_hn, lengths=None):
    """Run vjp + backward on a module with zeroed grads; return everything."""
    m.zero_grad()
    (out, h_n), backward = m.vjp(x, h0, lengths)
    dx, dh0 = backward(d_out, d_hn)
    return out, h_n, dx, dh0, {k: v.copy() for k, v in m.grads.items()}


def torch_grads(m, x, h0, d_out, d_hn, lengths=None):
    """The same quantities from PyTorch autograd (h0 = zeros when None)."""
    net = torch_twin(m)
    xt = torch.tensor(x, requires_grad=True)
    if h0 is None:
        LD = m.num_layers * m.num_directions
        h0 = np.zeros(
            (LD, m.hidden_size)
            if x.ndim == 2
            else (LD, x.shape[0 if m.batch_first else 1], m.hidden_size),
            m.dtype,
        )
    h0t = torch.tensor(h0, requires_grad=True)
    if lengths is None:
        out, h_n = net(xt, h0t)
    else:
        packed = pack_padded_sequence(
            xt,
            torch.as_tensor(lengths, dtype=torch.int64),
            batch_first=m.batch_first,
            enforce_sorted=False,
        )
        out_p, h_n = net(packed, h0t)
        out, _ = pad_packed_sequence(
            out_p, batch_first=m.batch_first, total_length=x.shape[1 if m.batch_first else 0]
        )
    loss = 0 * out.sum()
    if d_out is not None:
        loss = loss + (out * torch.from_numpy(d_out)).sum()
    if d_hn is not None:
        loss = loss + (h_n * torch.from_numpy(d_hn)).sum()
    loss.backward()
    grads = {
        n: (np.zeros(tuple(p.shape), m.dtype) if p.grad is None else _np(p.grad))
        for n, p in net.named_parameters()
    }
    return _np(out), _np(h_n), _np(xt.grad), _np(h0t.grad), grads


def ref_call(m, x, h0, d_out, d_hn, lengths=None, dropout_masks=None):
    """The oracle's forward and backward for module m (unbatched handled)."""
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None]
        h0 = None if h0 is None else h0[:, None]
        d_out = None if d_out is None else d_out[:, None]
        d_hn = None if d_hn is None else d_hn[:, None]
    layers = F.layer_weights(m.state_dict(), m.num_layers, m.num_directions, m.bias)
    kw = dict(
        hidden_size=m.hidden_size,
        num_directions=m.num_directions,
        reverse=m.reverse,
        reset_after=m.reset_after,
        lengths=lengths,
        batch_first=m.batch_first and not unbatched,
        dropout_masks=dropout_masks,
    )
    out, h_n = ref.gru_forward(x, h0, layers, **kw)
    dx, dh0, g = ref.gru_backward(x, h0, layers, d_out, d_hn, **kw)
    grads = {}
    for k in range(m.num_layers):
        for d in range(m.num_directions):
            sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
            for name, arr in zip(F.GATE_NAMES, g[k][d]):
                if arr is not None:
                    grads[name + sfx] = arr
    if unbatched:
        out, h_n, dx, dh0 = out[:, 0], h_n[:, 0], dx[:, 0], dh0[:, 0]
    return out, h_n, dx, dh0, grads


def assert_all_close(got, want, tol, what=""):
    out, h_n, dx, dh0, grads = got
    w_out, w_hn, w_dx, w_dh0, w_grads = want
    assert rel_err(out, w_out) <= tol, f"{what} output"
    assert rel_err(h_n, w_hn) <= tol, f"{what} h_n"
    assert rel_err(dx, w_dx) <= tol, f"{what} dx"
    assert rel_err(dh0, w_dh0) <= tol, f"{what} dh0"
    assert list(grads) == list(w_grads)
    for k in w_grads:
        assert grads[k].dtype == out.dtype
        assert rel_err(grads[k], w_grads[k]) <= tol, f"{what} {k}: {rel_err(grads[k], w_grads[k])}"


def random_lengths(rng, T_, B_):
    """Unsorted lengths in [1, T] containing both 1 and T."""
    lengths = rng.integers(1, T_ + 1, size=B_)
    lengths[:2] = [1, T_]
    return rng.permutation(lengths)


# ---------------------------------------------------------------------------------------------
# gradients vs torch autograd
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_gru_grads_vs_torch(num_layers, bidirectional, batch_first, bias, with_h0, batched, dtype):
    seed = num_layers * 64 + bidirectional * 32 + batch_first * 16 + bias * 8 + with_h0 * 4
    rng = _rng(seed + 2 * batched)
    m = cygru.GRU(
        I, H, num_layers, bias, batch_first, bidirectional=bidirectional, dtype=dtype, seed=seed
    )
    x = make_x(m, rng, batched)
    h0 = make_h0(m, rng, batched) if with_h0 else None
    out, h_n = m(x, h0)
    d_out = rng.standard_normal(out.shape).astype(dtype)
    d_hn = rng.standard_normal(h_n.shape).astype(dtype)
    got = cygru_grads(m, x, h0, d_out, d_hn)
    assert got[2].shape == x.shape and got[2].dtype == np.dtype(dtype)
    assert got[3].shape == h_n.shape and got[3].dtype == np.dtype(dtype)
    want = torch_grads(m, x, h0, d_out, d_hn)
    assert_all_close(got, want, GTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which_none", ["d_output", "d_h_n", "both"])
@pytest.mark.parametrize(
    "cfg",
    [
        dict(num_layers=1),
        dict(num_layers=2, bidirectional=True, batch_first=True),
        dict(num_layers=3, bias=False),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_gru_grads_with_none_upstream(cfg, which_none, dtype):
    rng = _rng(3)
    m = cygru.GRU(I, H, dtype=dtype, seed=1, **cfg)
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    out, h_n = m(x, h0)
    d_out = (
        None if which_none in ("d_output", "both") else rng.standard_normal(out.shape).astype(dtype)
    )
    d_hn = None if which_none in ("d_h_n", "both") else rng.standard_normal(h_n.shape).astype(dtype)
    got = cygru_grads(m, x, h0, d_out, d_hn)
    # None means zeros
    zeros = cygru_grads(
        m,
        x,
        h0,
        np.zeros(out.shape) if d_out is None else d_out,
        np.zeros(h_n.shape) if d_hn is None else d_hn,
    )
    for a, b in zip(got[:4], zeros[:4]):
        assert np.array_equal(a, b)
    for k in got[4]:
        assert np.array_equal(got[4][k], zeros[4][k])
    if which_none == "both":
        assert not np.any(got[2]) and not np.any(got[3])
        assert not any(np.any(g) for g in got[4].values())
    else:
        assert_all_close(got, torch_grads(m, x, h0, d_out, d_hn), GTOL[dtype])
    # backward() with no arguments at all
    m.zero_grad()
    (_, _), backward = m.vjp(x, h0)
    dx, dh0 = backward()
    assert not np.any(dx) and not np.any(dh0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_h", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_grads_vs_torch(bias, with_h, batched, dtype):
    rng = _rng(bias * 4 + with_h * 2 + batched)
    cell = cygru.GRUCell(I, H, bias, dtype=dtype, seed=2)
    x = rng.standard_normal((B, I) if batched else (I,)).astype(dtype)
    h = rng.standard_normal((B, H) if batched else (H,)).astype(dtype) if with_h else None
    d_h1 = rng.standard_normal((B, H) if batched else (H,)).astype(dtype)
    cell.zero_grad()
    h1, backward = cell.vjp(x, h)
    # the same state as a plain call (possibly another kernel path: last-bit differences)
    assert rel_err(h1, cell(x, h)) <= (1e-6 if dtype == np.float32 else 1e-14)
    dx, dh = backward(d_h1)
    assert dx.shape == x.shape and dh.shape == d_h1.shape

    net = torch_twin(cell)
    xt = torch.tensor(x, requires_grad=True)
    ht = torch.tensor(np.zeros(d_h1.shape, dtype) if h is None else h, requires_grad=True)
    t_h1 = net(xt, ht)
    (t_h1 * torch.from_numpy(d_h1)).sum().backward()
    tol = GTOL[dtype]
    assert rel_err(h1, _np(t_h1)) <= tol
    assert rel_err(dx, _np(xt.grad)) <= tol
    assert rel_err(dh, _np(ht.grad)) <= tol
    assert list(cell.grads) == [n for n, _ in net.named_parameters()]
    for n, p in net.named_parameters():
        assert rel_err(cell.grads[n], _np(p.grad)) <= tol, n
    # None means zeros
    cell.zero_grad()
    _, backward = cell.vjp(x, h)
    dx0, dh0 = backward(None)
    assert dx0.shape == x.shape and not np.any(dx0) and not np.any(dh0)
    assert not any(np.any(g) for g in cell.grads.values())


# ---------------------------------------------------------------------------------------------
# lengths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_lengths_vs_torch_packed(num_layers, bidirectional, batch_first, dtype):
    rng = _rng(num_layers * 4 + bidirectional * 2 + batch_first)
    Bl = 5
    m = cygru.GRU(
        I, H, num_layers, batch_first=batch_first, bidirectional=bidirectional, dtype=dtype, seed=3
    )
    x = make_x(m, rng, B_=Bl)
    h0 = make_h0(m, rng, B_=Bl)
    lengths = random_lengths(rng, T, Bl)
    assert not np.all(np.diff(lengths) <= 0)  # unsorted
    D = m.num_directions
    out_shape = (Bl, T, D * H) if batch_first else (T, Bl, D * H)
    d_out = rng.standard_normal(out_shape).astype(dtype)  # nonzero at padded steps too
    d_hn = rng.standard_normal((num_layers * D, Bl, H)).astype(dtype)
    got = cygru_grads(m, x, h0, d_out, d_hn, lengths)
    want = torch_grads(m, x, h0, d_out, d_hn, lengths)
    assert_all_close(got, want, GTOL[dtype])
    out, h_n, dx = got[0], got[1], got[2]
    assert np.array_equal(out, m(x, h0, lengths)[0])
    # padded steps: outputs and input gradients exactly 0
    tm_out = np.swapaxes(out, 0, 1) if batch_first else out
    tm_dx = np.swapaxes(dx, 0, 1) if batch_first else dx
    t_idx = np.arange(T)[:, None]
    padded = t_idx >= lengths[None, :]  # (T, B)
    assert padded.any()
    assert np.all(tm_out[padded] == 0)
    assert np.all(tm_dx[padded] == 0)
    assert np.all(tm_dx[~padded].any(axis=-1))
    # h_n holds the state at each sequence's own last step (bit for bit)
    for b in range(Bl):
        assert np.array_equal(tm_out[lengths[b] - 1, b, :H], h_n[-D, b])
        if D == 2:
            assert np.array_equal(tm_out[0, b, H:], h_n[-1, b])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(
    "cfg",
    [
        dict(num_layers=1),
        dict(num_layers=1, reverse=True),
        dict(num_layers=2, bidirectional=True),
        dict(num_layers=2, bidirectional=True, batch_first=True),
        dict(num_layers=3, batch_first=True, bias=False),
        dict(num_layers=3, bidirectional=True),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_lengths_vs_reference_both_variants(cfg, reset_after, dtype):
    rng = _rng(5)
    Bl = 6
    m = cygru.GRU(I, H, reset_after=reset_after, dtype=dtype, seed=4, **cfg)
    x = make_x(m, rng, B_=Bl)
    h0 = make_h0(m, rng, B_=Bl)
    lengths = random_lengths(rng, T, Bl)
    out, h_n = m(x, h0, lengths)
    d_out = rng.standard_normal(out.shape).astype(dtype)
    d_hn = rng.standard_normal(h_n.shape).astype(dtype)
    got = cygru_grads(m, x, h0, d_out, d_hn, lengths)
    want = ref_call(m, x, h0, d_out, d_hn, lengths)
    assert_all_close(got, want, GTOL[dtype])
    tm_dx = np.swapaxes(got[2], 0, 1) if m.batch_first else got[2]
    tm_out = np.swapaxes(got[0], 0, 1) if m.batch_first else got[0]
    padded = np.arange(T)[:, None] >= lengths[None, :]
    assert np.all(tm_dx[padded] == 0) and np.all(tm_out[padded] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cfg",
    [
        dict(num_layers=1),
        dict(num_layers=2, bidirectional=True, batch_first=True),
        dict(num_layers=3, reset_after=False, bidirectional=True),
        dict(num_layers=1, reverse=True),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_full_lengths_identical_to_none(cfg, dtype):
    rng = _rng(6)
    m = cygru.GRU(I, H, dtype=dtype, seed=5, **cfg)
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    out, h_n = m(x, h0)
    d_out = rng.standard_normal(out.shape).astype(dtype)
    d_hn = rng.standard_normal(h_n.shape).astype(dtype)
    a = cygru_grads(m, x, h0, d_out, d_hn, None)
    for lengths in (np.full(B, T), [T] * B, np.full(B, T, np.int32), np.full(B, T, np.uint8)):
        b = cygru_grads(m, x, h0, d_out, d_hn, lengths)
        for u, v in zip(a[:4], b[:4]):
            assert np.array_equal(u, v)
        for k in a[4]:
            assert np.array_equal(a[4][k], b[4][k]), k
        assert np.array_equal(m(x, h0, lengths)[0], out)


def test_bad_lengths():
    m = cygru.GRU(I, H, dtype=np.float64)
    x = np.zeros((T, B, I))
    cases = [
        (
            np.full(B + 1, 2),
            ValueError,
            rf"lengths must have shape \({B},\?\)|lengths must have shape",
        ),
        (np.full((B, 1), 2), ValueError, "lengths must have shape"),
        (np.array(3), ValueError, "lengths must have shape"),
        (np.array([T, 0, 2]), ValueError, rf"every length must be in \[1, {T}\].*got 0"),
        (np.array([T, -1, 2]), ValueError, r"every length must be in \[1, 7\].*got -1"),
        (np.array([T + 1, 1, 2]), ValueError, rf"every length must be in \[1, {T}\].*got {T + 1}"),
        (np.array([7.0, 2.0, 3.0]), TypeError, "lengths must hold integers, got dtype float64"),
        (np.array([True, True, True]), TypeError, "lengths must hold integers"),
        (["a", "b", "c"], TypeError, "lengths must hold integers"),
    ]
    for lengths, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            m(x, None, lengths)
        with pytest.raises(exc, match=pattern):
            m.vjp(x, None, lengths)
    mb = cygru.GRU(I, H, batch_first=True)
    with pytest.raises(ValueError, match=r"every length must be in \[1, 4\]"):
        mb(np.zeros((B, 4, I)), lengths=[4, 5, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_chunked_projection_grads_vs_torch(batch_first, use_lengths, dtype):
    """Sizes where the forward projects the input in chunks of steps, and B = 1."""
    rng = _rng(30)
    for Tc, Bc, Hc in ((50, 48, 96), (12, 1, H)):
        m = cygru.GRU(8, Hc, 2, batch_first=batch_first, bidirectional=True, dtype=dtype, seed=1)
        x = make_x(m, rng, T_=Tc, B_=Bc)
        h0 = make_h0(m, rng, B_=Bc)
        lengths = random_lengths(rng, Tc, Bc) if (use_lengths and Bc > 1) else None
        out, h_n = m(x, h0, lengths)
        d_out = rng.standard_normal(out.shape).astype(dtype)
        d_hn = rng.standard_normal(h_n.shape).astype(dtype)
        assert_all_close(
            cygru_grads(m, x, h0, d_out, d_hn, lengths),
            torch_grads(m, x, h0, d_out, d_hn, lengths),
            GTOL[dtype],
            what=f"T={Tc} B={Bc}",
        )


# ---------------------------------------------------------------------------------------------
# reset_after=False (and reverse) gradients vs the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_reset_before_grads_vs_reference(
    num_layers, bidirectional, batch_first, bias, batched, dtype
):
    rng = _rng(num_layers * 8 + bidirectional * 4 + batch_first * 2 + bias)
    m = cygru.GRU(
        I,
        H,
        num_layers,
        bias,
        batch_first,
        bidirectional=bidirectional,
        reset_after=False,
        dtype=dtype,
        seed=6,
    )
    x = make_x(m, rng, batched)
    h0 = make_h0(m, rng, batched)
    out, h_n = m(x, h0)
    d_out = rng.standard_normal(out.shape).astype(dtype)
    d_hn = rng.standard_normal(h_n.shape).astype(dtype)
    assert_all_close(
        cygru_grads(m, x, h0, d_out, d_hn), ref_call(m, x, h0, d_out, d_hn), GTOL[dtype]
    )
    # h0=None: dh0 still returned
    got = cygru_grads(m, x, None, d_out, d_hn)
    want = ref_call(m, x, None, d_out, d_hn)
    assert_all_close(got, want, GTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("num_layers,batch_first", [(1, False), (2, True), (3, False)])
def test_reverse_grads_vs_reference(num_layers, batch_first, reset_after, dtype):
    rng = _rng(7)
    m = cygru.GRU(
        I,
        H,
        num_layers,
        batch_first=batch_first,
        reverse=True,
        reset_after=reset_after,
        dtype=dtype,
        seed=7,
    )
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    out, h_n = m(x, h0)
    d_out = rng.standard_normal(out.shape).astype(dtype)
    d_hn = rng.standard_normal(h_n.shape).astype(dtype)
    assert_all_close(
        cygru_grads(m, x, h0, d_out, d_hn), ref_call(m, x, h0, d_out, d_hn), GTOL[dtype]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_reset_before_grads_vs_reference(bias, batched, dtype):
    rng = _rng(8)
    cell = cygru.GRUCell(I, H, bias, reset_after=False, dtype=dtype, seed=8)
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype)
    d = rng.standard_normal((B, H)).astype(dtype)
    sd = cell.state_dict()
    layers = [[tuple(sd.get(n) for n in F.GATE_NAMES)]]
    rdx, rdh, g = ref.gru_backward(
        x[None], h[None], layers, d[None], None, hidden_size=H, num_directions=1, reset_after=False
    )
    if not batched:
        x, h, d, rdx, rdh = x[0], h[0], d[0], rdx[:, :1], rdh[:, :1]
    cell.zero_grad()
    h1, backward = cell.vjp(x, h)
    dx, dh = backward(d)
    tol = GTOL[dtype]
    assert rel_err(dx, rdx[0].reshape(dx.shape)) <= tol
    assert rel_err(dh, rdh[0].reshape(dh.shape)) <= tol
    if batched:
        for name, arr in zip(F.GATE_NAMES, g[0][0]):
            if arr is not None:
                assert rel_err(cell.grads[name], arr) <= tol, name


# ---------------------------------------------------------------------------------------------
# gradcheck
# ---------------------------------------------------------------------------------------------

GRADCHECK_CASES = [
    ("uni", dict(), (T, B, I), None),
    ("bi", dict(bidirectional=True), (T, B, I), None),
    ("2layer-bi", dict(num_layers=2, bidirectional=True), (4, 2, 3), None),
    ("2layer", dict(num_layers=2), (4, 2, 3), None),
    ("nobias", dict(bias=False, num_layers=2), (4, 2, 3), None),
    ("batch_first", dict(batch_first=True, bidirectional=True), (2, 4, 3), None),
    ("unbatched", dict(num_layers=2, bidirectional=True), (4, 3), None),
    ("lengths", dict(bidirectional=True), (5, 3, 3), [5, 1, 3]),
    ("lengths-2layer-bf", dict(num_layers=2, batch_first=True), (3, 5, 3), [2, 5, 1]),
    ("reverse", dict(reverse=True, num_layers=2), (4, 2, 3), None),
]


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(
    "name,cfg,xshape,lengths", GRADCHECK_CASES, ids=[c[0] for c in GRADCHECK_CASES]
)
def test_gradcheck_passes_gru(name, cfg, xshape, lengths, reset_after):
    rng = _rng(9)
    I_ = xshape[-1]
    m = cygru.GRU(I_, 4, reset_after=reset_after, dtype=np.float64, seed=1, **cfg)
    x = rng.standard_normal(xshape)
    assert cygru.gradcheck(m, x, lengths=lengths) is True
    LD = m.num_layers * m.num_directions
    Bx = None if len(xshape) == 2 else (xshape[0] if m.batch_first else xshape[1])
    h0 = rng.standard_normal((LD, 4) if Bx is None else (LD, Bx, 4))
    assert cygru.gradcheck(m, x, h0, lengths=lengths) is True


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_passes_cell(bias, reset_after):
    rng = _rng(10)
    cell = cygru.GRUCell(3, 4, bias, reset_after=reset_after, dtype=np.float64, seed=2)
    assert cygru.gradcheck(cell, rng.standard_normal((2, 3)), rng.standard_normal((2, 4)))
    assert cygru.gradcheck(cell, rng.standard_normal((2, 3)))
    assert cygru.gradcheck(cell, rng.standard_normal(3), rng.standard_normal(4))


def test_gradcheck_large_tensors_use_projections():
    # more than max_elements per tensor: the random-direction branch
    m = cygru.GRU(6, 8, num_layers=2, bidirectional=True, dtype=np.float64, seed=3)
    assert cygru.gradcheck(m, _rng(11).standard_normal((9, 4, 6)), max_elements=16)


def test_gradcheck_float32_module_untouched():
    rng = _rng(12)
    m = cygru.GRU(3, 4, num_layers=2, bidirectional=True, seed=4)  # float32
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    (out, h_n), backward = m.vjp(x)
    backward(np.ones_like(out), np.ones_like(h_n))
    grads_before = {k: v.copy() for k, v in m.grads.items()}
    params_before = m.state_dict()
    grad_arrays = {k: v for k, v in m.grads.items()}
    x_before = x.copy()
    assert cygru.gradcheck(m, x) is True
    assert m.dtype == np.float32
    for k in grads_before:
        assert m.grads[k] is grad_arrays[k]
        assert np.array_equal(m.grads[k], grads_before[k]), k
    for k, v in params_before.items():
        assert getattr(m, k).dtype == np.float32
        assert np.array_equal(getattr(m, k), v), k
    assert np.array_equal(x, x_before)
    cell = cygru.GRUCell(3, 4, seed=0)
    cell.zero_grad()
    assert cygru.gradcheck(cell, x[0])
    assert not any(np.any(g) for g in cell.grads.values())


class _BrokenDx(cygru.GRU):
    """vjp whose dx is 10% too large."""

    def vjp(self, x, h0=None, lengths=None, **kw):
        res, backward = super().vjp(x, h0, lengths, **kw)

        def broken(d_output=None, d_h_n=None):
            dx, dh0 = backward(d_output, d_h_n)
            return dx * 1.1, dh0

        broken.dropout_masks = backward.dropout_masks
        return res, broken


class _BrokenWeight(cygru.GRU):
    """vjp that adds a 10% too large gradient for one parameter."""

    broken_name = "weight_hh_l0"

    def vjp(self, x, h0=None, lengths=None, **kw):
        res, backward = super().vjp(x, h0, lengths, **kw)

        def broken(d_output=None, d_h_n=None):
            before = self.grads[self.broken_name].copy()
            out = backward(d_output, d_h_n)
            g = self.grads[self.broken_name]
            g += 0.1 * (g - before)
            return out

        broken.dropout_masks = backward.dropout_masks
        return res, broken


class _BrokenReverseBias(_BrokenWeight):
    broken_name = "bias_ih_l1_reverse"


class _BrokenDh0(cygru.GRU):
    def vjp(self, x, h0=None, lengths=None, **kw):
        res, backward = super().vjp(x, h0, lengths, **kw)

        def broken(d_output=None, d_h_n=None):
            dx, dh0 = backward(d_output, d_h_n)
            return dx, dh0 * 1.1

        broken.dropout_masks = backward.dropout_masks
        return res, broken


class _BrokenCell(cygru.GRUCell):
    def vjp(self, x, h=None):
        h1, backward = super().vjp(x, h)

        def broken(d_h1=None):
            dx, dh = backward(d_h1)
            return dx, 1.1 * dh

        return h1, broken


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradcheck_fails_on_broken_vjp(dtype):
    rng = _rng(13)
    x = rng.standard_normal((4, 2, 3))
    h0 = rng.standard_normal((4, 2, 4))
    kw = dict(num_layers=2, bidirectional=True, dtype=dtype, seed=5)
    with pytest.raises(cygru.GradcheckError, match=r"gradient of x \(shape \(4, 2, 3\)\)"):
        cygru.gradcheck(_BrokenDx(3, 4, **kw), x)
    with pytest.raises(cygru.GradcheckError, match=r"gradient of weight_hh_l0 .*analytic.*numeric"):
        cygru.gradcheck(_BrokenWeight(3, 4, **kw), x)
    with pytest.raises(cygru.GradcheckError, match=r"gradient of bias_ih_l1_reverse"):
        cygru.gradcheck(_BrokenReverseBias(3, 4, **kw), x, h0)
    with pytest.raises(cygru.GradcheckError, match=r"gradient of h0"):
        cygru.gradcheck(_BrokenDh0(3, 4, **kw), x, h0)
    with pytest.raises(cygru.GradcheckError, match=r"gradient of h0"):
        cygru.gradcheck(_BrokenCell(3, 4, dtype=dtype, seed=0), x[0], h0[0])
    # broken on the large-tensor (projection) branch too
    with pytest.raises(cygru.GradcheckError, match=r"gradient of x .*random direction"):
        cygru.gradcheck(_BrokenDx(3, 4, **kw), rng.standard_normal((9, 4, 3)), max_elements=8)
    # GradcheckError is an AssertionError
    assert issubclass(cygru.GradcheckError, AssertionError)


def test_gradcheck_rejects_non_modules():
    with pytest.raises(TypeError, match="expected a cygru.GRU or cygru.GRUCell"):
        cygru.gradcheck(object(), np.zeros((2, 1, 3)))


# ---------------------------------------------------------------------------------------------
# accumulation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_accumulate_and_zero_grad(dtype):
    rng = _rng(14)
    m = cygru.GRU(I, H, 2, bidirectional=True, dtype=dtype, seed=6)
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    (out, h_n), backward = m.vjp(x, h0)
    d_out = rng.standard_normal(out.shape)
    d_hn = rng.standard_normal(h_n.shape)
    assert not any(np.any(g) for g in m.grads.values())  # fresh module: zeros
    dx1, dh01 = backward(d_out, d_hn)
    one = {k: v.copy() for k, v in m.grads.items()}
    assert all(np.any(g) for g in one.values())
    (_, _), backward2 = m.vjp(x, h0)
    dx2, dh02 = backward2(d_out, d_hn)
    assert np.array_equal(dx1, dx2) and np.array_equal(dh01, dh02)
    for k, g in m.grads.items():
        assert g.dtype == np.dtype(dtype)
        assert np.array_equal(g, 2 * one[k]), k
    with pytest.raises(RuntimeError, match="already called"):
        backward(d_out, d_hn)
    with pytest.raises(RuntimeError, match="already called"):
        backward2()
    for k, g in m.grads.items():  # the failed call added nothing
        assert np.array_equal(g, 2 * one[k]), k
    grad_arrays = dict(m.grads)
    m.zero_grad()
    for k, g in m.grads.items():
        assert g is grad_arrays[k]  # zeroed in place
        assert not np.any(g)
    # different inputs add up: grads(x1) + grads(x2)
    x2 = make_x(m, rng)
    (_, _), b1 = m.vjp(x, h0)
    b1(d_out, d_hn)
    (_, _), b2 = m.vjp(x2, h0)
    b2(d_out, d_hn)
    m2 = cygru.GRU(I, H, 2, bidirectional=True, dtype=dtype, seed=6)
    (_, _), b = m2.vjp(x2, h0)
    b(d_out, d_hn)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for k in m.grads:
        assert rel_err(m.grads[k], one[k] + m2.grads[k]) <= tol


def test_cell_gradients_accumulate():
    rng = _rng(15)
    cell = cygru.GRUCell(I, H, dtype=np.float64, seed=1)
    x, h, d = rng.standard_normal((B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    _, backward = cell.vjp(x, h)
    backward(d)
    one = {k: v.copy() for k, v in cell.grads.items()}
    _, backward2 = cell.vjp(x, h)
    backward2(d)
    for k in one:
        assert np.array_equal(cell.grads[k], 2 * one[k])
    with pytest.raises(RuntimeError, match="already called"):
        backward(d)
    cell.zero_grad()
    assert not any(np.any(g) for g in cell.grads.values())


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------

DROPOUT_CFGS = [
    dict(num_layers=2),
    dict(num_layers=3, bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=3, reset_after=False, bias=False),
]
_did = lambda c: "-".join(f"{k}={v}" for k, v in c.items())  # noqa: E731


def _twin_without_dropout(m):
    n = cygru.GRU(
        m.input_size,
        m.hidden_size,
        m.num_layers,
        m.bias,
        m.batch_first,
        0.0,
        m.bidirectional,
        reset_after=m.reset_after,
        dtype=m.dtype,
    )
    n.load_state_dict(m.state_dict())
    return n


@pytest.mark.parametrize("cfg", DROPOUT_CFGS, ids=_did)
def test_dropout_plain_calls_never_drop(cfg):
    rng = _rng(16)
    m = cygru.GRU(I, H, dropout=0.5, dtype=np.float64, seed=7, **cfg)
    n = _twin_without_dropout(m)
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    for _ in range(2):
        a, b = m(x, h0), n(x, h0)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # a module without dropout has no masks
    (_, _), backward = n.vjp(x, h0)
    assert backward.dropout_masks is None


@pytest.mark.parametrize("cfg", DROPOUT_CFGS, ids=_did)
def test_dropout_masks_seeded_and_fresh(cfg):
    rng = _rng(17)
    p = 0.3
    m1 = cygru.GRU(I, H, dropout=p, dtype=np.float64, seed=11, **cfg)
    m2 = cygru.GRU(I, H, dropout=p, dtype=np.float64, seed=11, **cfg)
    x = make_x(m1, rng)
    D = m1.num_directions
    prev = None
    for _ in range(3):
        (o1, h1), b1 = m1.vjp(x)
        (o2, h2), b2 = m2.vjp(x)
        masks = b1.dropout_masks
        assert len(masks) == m1.num_layers - 1
        for a, b in zip(masks, b2.dropout_masks):
            assert a.shape == (T, B, D * H) and a.dtype == np.float64
            assert np.array_equal(a, b)
        assert np.array_equal(o1, o2) and np.array_equal(h1, h2)
        if prev is not None:  # a fresh mask per call
            assert not np.array_equal(prev[0], masks[0])
        prev = masks
        # values: 0 or 1/(1-p)
        for mk in masks:
            assert np.all((mk == 0) | (mk == np.float64(1.0 / (1.0 - p))))
    # another seed, other masks
    m3 = cygru.GRU(I, H, dropout=p, dtype=np.float64, seed=12, **cfg)
    (_, _), b3 = m3.vjp(x)
    m4 = cygru.GRU(I, H, dropout=p, dtype=np.float64, seed=11, **cfg)
    (_, _), b4 = m4.vjp(x)
    assert not np.array_equal(b3.dropout_masks[0], b4.dropout_masks[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_statistics(dtype):
    p = 0.3
    m = cygru.GRU(4, 16, num_layers=3, bidirectional=True, dropout=p, dtype=dtype, seed=0)
    x = _rng(18).standard_normal((50, 20, 4)).astype(dtype)
    (_, _), backward = m.vjp(x)
    masks = np.stack(backward.dropout_masks)
    assert masks.shape == (2, 50, 20, 32) and masks.dtype == np.dtype(dtype)
    scale = np.asarray(1.0 / (1.0 - p), dtype)
    assert np.all((masks == 0) | (masks == scale))
    assert abs(masks.mean() - 1.0) < 0.03  # inverted dropout keeps the mean
    assert abs((masks == 0).mean() - p) < 0.02
    # the two inter-layer masks are independent draws
    assert not np.array_equal(masks[0], masks[1])


@pytest.mark.parametrize("cfg", DROPOUT_CFGS, ids=_did)
def test_dropout_forward_and_backward_use_the_mask(cfg):
    rng = _rng(19)
    m = cygru.GRU(I, H, dropout=0.4, dtype=np.float64, seed=8, **cfg)
    x = make_x(m, rng)
    h0 = make_h0(m, rng)
    m.zero_grad()
    (out, h_n), backward = m.vjp(x, h0)
    masks = backward.dropout_masks
    d_out = rng.standard_normal(out.shape)
    d_hn = rng.standard_normal(h_n.shape)
    dx, dh0 = backward(d_out, d_hn)
    got = (out, h_n, dx, dh0, {k: v.copy() for k, v in m.grads.items()})
    want = ref_call(m, x, h0, d_out, d_hn, dropout_masks=masks)
    assert_all_close(got, want, 1e-9)
    # the masks matter: without them the results differ
    plain = ref_call(m, x, h0, d_out, d_hn)
    assert not np.allclose(out, plain[0])
    assert not np.allclose(dx, plain[2])
    # a module with the same seed draws the same mask: bit-identical results
    m2 = cygru.GRU(I, H, dropout=0.4, dtype=np.float64, seed=8, **cfg)
    (o2, h2), b2 = m2.vjp(x, h0)
    assert all(np.array_equal(a, b) for a, b in zip(b2.dropout_masks, masks))
    dx2, dh02 = b2(d_out, d_hn)
    assert np.array_equal(o2, out) and np.array_equal(dx2, dx) and np.array_equal(dh02, dh0)


def test_dropout_last_layer_output_not_dropped():
    """Layer by layer: the output of a 2-layer GRU's vjp is layer 1 run on the masked
    output of layer 0; the output itself is never masked."""
    rng = _rng(20)
    m = cygru.GRU(I, H, num_layers=2, bidirectional=True, dropout=0.5, dtype=np.float64, seed=9)
    x = make_x(m, rng)
    (out, h_n), backward = m.vjp(x)
    (mask,) = backward.dropout_masks
    sd = m.state_dict()
    l0 = cygru.GRU(I, H, bidirectional=True, dtype=np.float64)
    l0.load_state_dict({k: v for k, v in sd.items() if "_l0" in k})
    l1 = cygru.GRU(2 * H, H, bidirectional=True, dtype=np.float64)
    l1.load_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if "_l1" in k})
    o0, hn0 = l0(x)
    o1, hn1 = l1(o0 * mask)
    assert rel_err(out, o1) <= 1e-12
    assert rel_err(h_n, np.concatenate([hn0, hn1])) <= 1e-12
    assert np.all(out != 0)  # half of the entries would be 0 if it were dropped


@pytest.mark.parametrize(
    "cfg",
    [
        dict(num_layers=2),
        dict(num_layers=3, bidirectional=True),
        dict(num_layers=2, reset_after=False, batch_first=True),
    ],
    ids=_did,
)
def test_gradcheck_with_dropout(cfg):
    m = cygru.GRU(3, 4, dropout=0.5, dtype=np.float64, seed=10, **cfg)
    shape = (2, 4, 3) if m.batch_first else (4, 2, 3)
    assert cygru.gradcheck(m, _rng(21).standard_normal(shape))
    assert cygru.gradcheck(m, _rng(22).standard_normal(shape), lengths=[4, 2])


def test_dropout_with_lengths_vs_reference():
    rng = _rng(23)
    Bl = 5
    m = cygru.GRU(I, H, 3, bidirectional=True, dropout=0.3, dtype=np.float64, seed=12)
    x = make_x(m, rng, B_=Bl)
    lengths = random_lengths(rng, T, Bl)
    m.zero_grad()
    (out, h_n), backward = m.vjp(x, None, lengths)
    d_out = rng.standard_normal(out.shape)
    d_hn = rng.standard_normal(h_n.shape)
    dx, dh0 = backward(d_out, d_hn)
    got = (out, h_n, dx, dh0, {k: v.copy() for k, v in m.grads.items()})
    want = ref_call(m, x, None, d_out, d_hn, lengths, dropout_masks=backward.dropout_masks)
    assert_all_close(got, want, 1e-9)


# ---------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gru", "cell"])
def test_threads_accumulate_like_serial(kind):
    rng = _rng(24)
    n_threads, reps = 4, 5
    if kind == "gru":
        make = lambda: cygru.GRU(  # noqa: E731
            8,
            16,
            num_layers=2,
            bidirectional=True,
            dtype=np.float64,
            seed=13,
        )
        xs = [rng.standard_normal((30, 4, 8)) for _ in range(n_threads)]
        h0s = [rng.standard_normal((4, 4, 16)) for _ in range(n_threads)]
    else:
        make = lambda: cygru.GRUCell(8, 16, dtype=np.float64, seed=13)  # noqa: E731
        xs = [rng.standard_normal((4, 8)) for _ in range(n_threads)]
        h0s = [rng.standard_normal((4, 16)) for _ in range(n_threads)]
    m_par, m_ser = make(), make()

    def one(m, i):
        res, backward = m.vjp(xs[i], h0s[i])
        if kind == "gru":
            out, h_n = res
            return backward(np.cos(out), np.sin(h_n))
        return backward(np.cos(res))

    serial = [[one(m_ser, i) for _ in range(reps)] for i in range(n_threads)]
    results = [None] * n_threads
    errors = []
    barrier = threading.Barrier(n_threads)

    def worker(i):
        try:
            barrier.wait()
            results[i] = [one(m_par, i) for _ in range(reps)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(n_threads):
        for (dx_p, dh_p), (dx_s, dh_s) in zip(results[i], serial[i]):
            assert rel_err(dx_p, dx_s) <= 1e-12 and rel_err(dh_p, dh_s) <= 1e-12
    for k in m_ser.grads:
        np.testing.assert_allclose(
            m_par.grads[k], m_ser.grads[k], rtol=1e-12, atol=1e-12, err_msg=k
        )
        assert np.any(m_ser.grads[k])
