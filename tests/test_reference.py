"""Tests that prove the plain-NumPy oracle (cygru._reference) right, independently of cygru.

Checks against PyTorch (nn.GRU, nn.GRUCell, packed sequences, autograd), against a small
step-by-step PyTorch loop written here (for what nn.GRU lacks: reset_after=False, fixed
dropout masks), and against central finite differences.
"""

import importlib.util
import itertools
import pathlib

import numpy as np
import pytest

from optional_deps import import_optional

torch = import_optional("torch")

try:
    from cygru import _reference as ref
except Exception:  # the package may be mid-construction: load the module by path
    _path = pathlib.Path(__file__).resolve().parents[1] / "cygru" / "_reference.py"
    _spec = importlib.util.spec_from_file_location("cygru_reference_under_test", _path)
    ref = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(ref)

from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

T, B, I, H = 5, 3, 4, 6
FWD_ATOL = 1e-10
BWD_ATOL = 1e-9


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _np(t):
    return t.detach().numpy().copy()


def _suffix(k, d):
    return f"l{k}" + ("_reverse" if d == 1 else "")


def layers_from_torch(mod, L, D, bias):
    """Copy an nn.GRU's parameters into the reference's nested ``layers`` structure."""
    layers = []
    for k in range(L):
        layer = []
        for d in range(D):
            s = _suffix(k, d)
            layer.append(
                (
                    _np(getattr(mod, "weight_ih_" + s)),
                    _np(getattr(mod, "weight_hh_" + s)),
                    _np(getattr(mod, "bias_ih_" + s)) if bias else None,
                    _np(getattr(mod, "bias_hh_" + s)) if bias else None,
                )
            )
        layers.append(layer)
    return layers


def assert_grads_match_torch(grads, mod, L, D, bias, atol=BWD_ATOL):
    for k in range(L):
        for d in range(D):
            s = _suffix(k, d)
            g_w_ih, g_w_hh, g_b_ih, g_b_hh = grads[k][d]
            np.testing.assert_allclose(g_w_ih, _np(getattr(mod, "weight_ih_" + s).grad), atol=atol)
            np.testing.assert_allclose(g_w_hh, _np(getattr(mod, "weight_hh_" + s).grad), atol=atol)
            if bias:
                np.testing.assert_allclose(
                    g_b_ih, _np(getattr(mod, "bias_ih_" + s).grad), atol=atol
                )
                np.testing.assert_allclose(
                    g_b_hh, _np(getattr(mod, "bias_hh_" + s).grad), atol=atol
                )
            else:
                assert g_b_ih is None and g_b_hh is None


def random_layers(rng, L, D, in_size, hidden, bias=True, dtype=np.float64, scale=0.6):
    layers = []
    for k in range(L):
        i_k = in_size if k == 0 else D * hidden
        layers.append(
            [
                (
                    scale * rng.standard_normal((3 * hidden, i_k)).astype(dtype),
                    scale * rng.standard_normal((3 * hidden, hidden)).astype(dtype),
                    scale * rng.standard_normal(3 * hidden).astype(dtype) if bias else None,
                    scale * rng.standard_normal(3 * hidden).astype(dtype) if bias else None,
                )
                for _ in range(D)
            ]
        )
    return layers


def torch_loop_gru(x, h0, layers, D, reverse, reset_after, lengths, masks):
    """A straightforward per-step GRU in PyTorch (time-major x), differentiable by autograd.

    Independent of the reference; its reset_after=True path is checked against nn.GRU below.
    """
    steps_total = x.shape[0]
    lens = (
        torch.as_tensor(lengths) if lengths is not None else torch.full((x.shape[1],), steps_total)
    )
    inp, h_last = x, []
    for k, layer in enumerate(layers):
        outs = []
        for d, (w_ih, w_hh, b_ih, b_hh) in enumerate(layer):
            w_ir, w_iz, w_in = w_ih.chunk(3, 0)
            w_hr, w_hz, w_hn = w_hh.chunk(3, 0)
            zero = torch.zeros(w_hh.shape[0], dtype=x.dtype)
            b_ir, b_iz, b_in = (zero if b_ih is None else b_ih).chunk(3)
            b_hr, b_hz, b_hn = (zero if b_hh is None else b_hh).chunk(3)
            h = h0[k * D + d]
            order = range(steps_total)
            if d == 1 or reverse:
                order = reversed(order)
            per_t = {}
            for t in order:
                xt = inp[t]
                r = torch.sigmoid(xt @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
                z = torch.sigmoid(xt @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
                if reset_after:
                    n = torch.tanh(xt @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
                else:
                    n = torch.tanh(xt @ w_in.T + b_in + (r * h) @ w_hn.T + b_hn)
                keep = (t < lens).unsqueeze(1)
                h = torch.where(keep, (1 - z) * n + z * h, h)
                per_t[t] = torch.where(keep, h, torch.zeros_like(h))
            outs.append(torch.stack([per_t[t] for t in range(steps_total)]))
            h_last.append(h)
        out = torch.cat(outs, dim=-1)
        inp = out * masks[k] if (masks is not None and k < len(layers) - 1) else out
    return out, torch.stack(h_last)


def torch_leaves(layers):
    return [
        [
            tuple(None if a is None else torch.tensor(a, requires_grad=True) for a in p)
            for p in layer
        ]
        for layer in layers
    ]


def loss_np(out, h_n, d_out, d_hn):
    return float(np.sum(out * d_out) + np.sum(h_n * d_hn))


def finite_difference_check(loss, arrays, analytic, eps=1e-6, rtol=1e-6, atol=1e-8):
    """Central differences of ``loss()`` w.r.t. every entry of each array (perturbed in place)."""
    for arr, g in zip(arrays, analytic):
        num = np.zeros_like(arr)
        for i in range(arr.size):
            orig = arr.flat[i]
            arr.flat[i] = orig + eps
            fp = loss()
            arr.flat[i] = orig - eps
            fm = loss()
            arr.flat[i] = orig
            num.flat[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=rtol, atol=atol)


def flat_params(layers):
    return [a for layer in layers for p in layer for a in p if a is not None]


def flat_grads(grads):
    return [a for layer in grads for g in layer for a in g if a is not None]


# ----------------------------------------------------------------------------------------------
# sigmoid and the cell
# ----------------------------------------------------------------------------------------------


def test_sigmoid():
    x = np.linspace(-30, 30, 121)
    np.testing.assert_allclose(ref.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)
    with np.errstate(over="raise"):
        s = ref.sigmoid(np.array([-1e4, 0.0, 1e4]))
    assert s.tolist() == [0.0, 0.5, 1.0]
    assert ref.sigmoid(np.zeros(3, np.float32)).dtype == np.float32


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_h", [True, False])
def test_cell_forward_vs_torch(bias, with_h):
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(I, H, bias=bias, dtype=torch.float64)
    x = torch.randn(B, I, dtype=torch.float64)
    h = torch.randn(B, H, dtype=torch.float64) if with_h else None
    expected = _np(cell(x, h))
    got = ref.cell_forward(
        x.numpy(),
        None if h is None else h.numpy(),
        _np(cell.weight_ih),
        _np(cell.weight_hh),
        _np(cell.bias_ih) if bias else None,
        _np(cell.bias_hh) if bias else None,
    )
    assert got.shape == (B, H) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, atol=FWD_ATOL, rtol=0)


def test_cell_reset_before_formula():
    """reset_after=False against the equations written out gate by gate."""
    rng = np.random.default_rng(1)
    x, h = rng.standard_normal((B, I)), rng.standard_normal((B, H))
    ((w_ih, w_hh, b_ih, b_hh),) = random_layers(rng, 1, 1, I, H)[0]
    W_ir, W_iz, W_in = w_ih[:H], w_ih[H : 2 * H], w_ih[2 * H :]
    W_hr, W_hz, W_hn = w_hh[:H], w_hh[H : 2 * H], w_hh[2 * H :]

    def sig(a):
        return 1 / (1 + np.exp(-a))

    r = sig(x @ W_ir.T + b_ih[:H] + h @ W_hr.T + b_hh[:H])
    z = sig(x @ W_iz.T + b_ih[H : 2 * H] + h @ W_hz.T + b_hh[H : 2 * H])
    n = np.tanh(x @ W_in.T + b_ih[2 * H :] + (r * h) @ W_hn.T + b_hh[2 * H :])
    expected = (1 - z) * n + z * h
    got = ref.cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after=False)
    np.testing.assert_allclose(got, expected, atol=FWD_ATOL, rtol=0)
    # and the two variants really differ
    assert not np.allclose(got, ref.cell_forward(x, h, w_ih, w_hh, b_ih, b_hh))


# ----------------------------------------------------------------------------------------------
# full GRU against nn.GRU: forward and autograd
# ----------------------------------------------------------------------------------------------

GRID = list(
    itertools.product([1, 2, 3], [False, True], [False, True], [True, False], [True, False])
)
GRID_IDS = [
    f"L{L}-{'bi' if bi else 'uni'}-{'bf' if bf else 'tm'}-{'bias' if b else 'nobias'}-"
    f"{'h0' if h else 'noh0'}"
    for L, bi, bf, b, h in GRID
]


def _torch_case(L, bi, bf, bias, seed):
    torch.manual_seed(seed)
    D = 2 if bi else 1
    mod = torch.nn.GRU(
        I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bi, dtype=torch.float64
    )
    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(L * D, B, H, dtype=torch.float64, requires_grad=True)
    return mod, D, x, h0


@pytest.mark.parametrize("L,bi,bf,bias,with_h0", GRID, ids=GRID_IDS)
def test_forward_vs_torch(L, bi, bf, bias, with_h0):
    mod, D, x, h0 = _torch_case(L, bi, bf, bias, seed=L)
    with torch.no_grad():
        out_t, hn_t = mod(x, h0 if with_h0 else None)
    out, h_n = ref.gru_forward(
        _np(x),
        _np(h0) if with_h0 else None,
        layers_from_torch(mod, L, D, bias),
        hidden_size=H,
        num_directions=D,
        batch_first=bf,
    )
    assert out.shape == tuple(out_t.shape) and h_n.shape == (L * D, B, H)
    np.testing.assert_allclose(out, out_t.numpy(), atol=FWD_ATOL, rtol=0)
    np.testing.assert_allclose(h_n, hn_t.numpy(), atol=FWD_ATOL, rtol=0)


@pytest.mark.parametrize("L,bi,bf,bias,with_h0", GRID, ids=GRID_IDS)
def test_backward_vs_torch(L, bi, bf, bias, with_h0):
    mod, D, x, h0 = _torch_case(L, bi, bf, bias, seed=10 + L)
    if not with_h0:  # h0=None means zeros: give torch zeros, to check dh0 all the same
        with torch.no_grad():
            h0.zero_()
    out_t, hn_t = mod(x, h0)
    g = torch.Generator().manual_seed(99)
    d_out = torch.randn(out_t.shape, dtype=torch.float64, generator=g)
    d_hn = torch.randn(hn_t.shape, dtype=torch.float64, generator=g)
    ((out_t * d_out).sum() + (hn_t * d_hn).sum()).backward()

    dx, dh0, grads = ref.gru_backward(
        _np(x),
        _np(h0) if with_h0 else None,
        layers_from_torch(mod, L, D, bias),
        d_out.numpy(),
        d_hn.numpy(),
        hidden_size=H,
        num_directions=D,
        batch_first=bf,
    )
    assert dx.shape == tuple(x.shape) and dh0.shape == (L * D, B, H)
    np.testing.assert_allclose(dx, _np(x.grad), atol=BWD_ATOL, rtol=0)
    np.testing.assert_allclose(dh0, _np(h0.grad), atol=BWD_ATOL, rtol=0)
    assert_grads_match_torch(grads, mod, L, D, bias)


def test_none_gradients_are_zeros():
    rng = np.random.default_rng(2)
    layers = random_layers(rng, 2, 2, I, H)
    x = rng.standard_normal((T, B, I))
    d_out = rng.standard_normal((T, B, 2 * H))
    d_hn = rng.standard_normal((4, B, H))
    kw = dict(hidden_size=H, num_directions=2)
    a = ref.gru_backward(x, None, layers, d_out, None, **kw)
    b = ref.gru_backward(x, None, layers, d_out, np.zeros_like(d_hn), **kw)
    c = ref.gru_backward(x, None, layers, None, d_hn, **kw)
    d = ref.gru_backward(x, None, layers, np.zeros_like(d_out), d_hn, **kw)
    for p, q in ((a, b), (c, d)):
        np.testing.assert_array_equal(p[0], q[0])
        np.testing.assert_array_equal(p[1], q[1])
        for u, v in zip(flat_grads(p[2]), flat_grads(q[2])):
            np.testing.assert_array_equal(u, v)
    zero = ref.gru_backward(x, None, layers, None, None, **kw)
    assert not zero[0].any() and not zero[1].any()
    assert not any(gr.any() for gr in flat_grads(zero[2]))


# ----------------------------------------------------------------------------------------------
# lengths against packed sequences
# ----------------------------------------------------------------------------------------------

LENGTHS = np.array([3, T, 1, 4], dtype=np.int64)  # unsorted, includes 1 and T


PACKED_CASES = [
    (L, bi, bf, False) for L in (1, 2) for bi in (False, True) for bf in (False, True)
] + [(1, False, bf, True) for bf in (False, True)]


@pytest.mark.parametrize("L,bi,bf,reverse", PACKED_CASES)
def test_lengths_vs_packed(L, bi, bf, reverse):
    """Also covers reverse=True (D=1, one layer): it equals a bi module's backward half."""
    nb = len(LENGTHS)
    torch.manual_seed(20 + L)
    bi_t = bi or reverse  # reverse=True is checked against the reverse half of a bi module
    Dt = 2 if bi_t else 1
    mod = torch.nn.GRU(I, H, num_layers=L, batch_first=bf, bidirectional=bi_t, dtype=torch.float64)
    x = torch.randn((nb, T, I) if bf else (T, nb, I), dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(L * Dt, nb, H, dtype=torch.float64, requires_grad=True)
    packed = pack_padded_sequence(
        x, torch.from_numpy(LENGTHS), batch_first=bf, enforce_sorted=False
    )
    out_p, hn_t = mod(packed, h0)
    out_t, lens_back = pad_packed_sequence(out_p, batch_first=bf, total_length=T)
    assert lens_back.tolist() == LENGTHS.tolist()  # returned in the original batch order

    g = torch.Generator().manual_seed(5)
    d_out = torch.randn(out_t.shape, dtype=torch.float64, generator=g)
    d_hn = torch.randn(hn_t.shape, dtype=torch.float64, generator=g)
    layers = layers_from_torch(mod, L, Dt, True)
    if reverse:  # keep only the reverse direction; compare with the H: half
        out_t, hn_t, d_out, d_hn = out_t[..., H:], hn_t[1:], d_out[..., H:], d_hn[1:]
        layers = [[layers[0][1]]]
        h0_np = _np(h0)[1:]
    else:
        h0_np = _np(h0)
    ((out_t * d_out).sum() + (hn_t * d_hn).sum()).backward()

    D = 1 if reverse else Dt
    kw = dict(hidden_size=H, num_directions=D, reverse=reverse, lengths=LENGTHS, batch_first=bf)
    out, h_n = ref.gru_forward(_np(x), h0_np, layers, **kw)
    np.testing.assert_allclose(out, _np(out_t), atol=FWD_ATOL, rtol=0)
    np.testing.assert_allclose(h_n, _np(hn_t), atol=FWD_ATOL, rtol=0)
    # padded outputs are exactly zero
    out_tm = np.swapaxes(out, 0, 1) if bf else out
    for b, n in enumerate(LENGTHS):
        assert (out_tm[n:, b] == 0).all()

    dx, dh0, grads = ref.gru_backward(_np(x), h0_np, layers, _np(d_out), _np(d_hn), **kw)
    np.testing.assert_allclose(dx, _np(x.grad), atol=BWD_ATOL, rtol=0)
    dx_tm = np.swapaxes(dx, 0, 1) if bf else dx
    for b, n in enumerate(LENGTHS):
        assert (dx_tm[n:, b] == 0).all()
    if reverse:
        np.testing.assert_allclose(dh0, _np(h0.grad)[1:], atol=BWD_ATOL, rtol=0)
        g_t = (
            mod.weight_ih_l0_reverse.grad,
            mod.weight_hh_l0_reverse.grad,
            mod.bias_ih_l0_reverse.grad,
            mod.bias_hh_l0_reverse.grad,
        )
        for a, e in zip(grads[0][0], g_t):
            np.testing.assert_allclose(a, _np(e), atol=BWD_ATOL, rtol=0)
    else:
        np.testing.assert_allclose(dh0, _np(h0.grad), atol=BWD_ATOL, rtol=0)
        assert_grads_match_torch(grads, mod, L, D, True)


def test_lengths_all_full_equals_no_lengths():
    rng = np.random.default_rng(3)
    layers = random_layers(rng, 2, 2, I, H)
    x = rng.standard_normal((T, B, I))
    kw = dict(hidden_size=H, num_directions=2)
    a = ref.gru_forward(x, None, layers, **kw)
    b = ref.gru_forward(x, None, layers, lengths=np.full(B, T), **kw)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ----------------------------------------------------------------------------------------------
# the per-step torch loop: checked against nn.GRU, then used where nn.GRU cannot go
# ----------------------------------------------------------------------------------------------


def test_torch_loop_helper_matches_nn_gru():
    torch.manual_seed(30)
    L, D = 2, 2
    nb = len(LENGTHS)
    mod = torch.nn.GRU(I, H, num_layers=L, bidirectional=True, dtype=torch.float64)
    x = torch.randn(T, nb, I, dtype=torch.float64)
    h0 = torch.randn(L * D, nb, H, dtype=torch.float64)
    with torch.no_grad():
        out_p, hn_t = mod(
            pack_padded_sequence(x, torch.from_numpy(LENGTHS), enforce_sorted=False), h0
        )
        out_t, _ = pad_packed_sequence(out_p, total_length=T)
        layers = torch_leaves(layers_from_torch(mod, L, D, True))
        out_l, hn_l = torch_loop_gru(x, h0, layers, D, False, True, LENGTHS, None)
    torch.testing.assert_close(out_l, out_t, atol=1e-12, rtol=0)
    torch.testing.assert_close(hn_l, hn_t, atol=1e-12, rtol=0)


LOOP_CASES = [  # (L, D, reverse, reset_after, with lengths, with dropout masks)
    (1, 1, False, False, False, False),
    (2, 2, False, False, True, False),
    (2, 1, True, False, True, False),
    (3, 2, False, False, False, True),
    (2, 2, False, True, True, True),
    (2, 1, True, True, True, True),
]


@pytest.mark.parametrize("L,D,reverse,reset_after,use_len,use_masks", LOOP_CASES)
def test_vs_torch_loop(L, D, reverse, reset_after, use_len, use_masks):
    """reset_after=False and dropout masks: forward and autograd of the per-step torch loop."""
    rng = np.random.default_rng(40 + L)
    nb = len(LENGTHS)
    lengths = LENGTHS if use_len else None
    layers = random_layers(rng, L, D, I, H)
    x = rng.standard_normal((T, nb, I))
    h0 = rng.standard_normal((L * D, nb, H))
    masks = [(rng.random((T, nb, D * H)) > 0.3) / 0.7 for _ in range(L - 1)] if use_masks else None
    d_out = rng.standard_normal((T, nb, D * H))
    d_hn = rng.standard_normal((L * D, nb, H))

    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    lt = torch_leaves(layers)
    out_t, hn_t = torch_loop_gru(
        xt,
        h0t,
        lt,
        D,
        reverse,
        reset_after,
        lengths,
        None if masks is None else [torch.tensor(m) for m in masks],
    )
    ((out_t * torch.tensor(d_out)).sum() + (hn_t * torch.tensor(d_hn)).sum()).backward()

    kw = dict(
        hidden_size=H,
        num_directions=D,
        reverse=reverse,
        reset_after=reset_after,
        lengths=lengths,
        dropout_masks=masks,
    )
    out, h_n = ref.gru_forward(x, h0, layers, **kw)
    np.testing.assert_allclose(out, _np(out_t), atol=FWD_ATOL, rtol=0)
    np.testing.assert_allclose(h_n, _np(hn_t), atol=FWD_ATOL, rtol=0)
    dx, dh0, grads = ref.gru_backward(x, h0, layers, d_out, d_hn, **kw)
    np.testing.assert_allclose(dx, _np(xt.grad), atol=BWD_ATOL, rtol=0)
    np.testing.assert_allclose(dh0, _np(h0t.grad), atol=BWD_ATOL, rtol=0)
    for a, leaf in zip(flat_grads(grads), [p for layer in lt for q in layer for p in q]):
        np.testing.assert_allclose(a, _np(leaf.grad), atol=BWD_ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------
# finite differences (reset_after=False, lengths, bidirectional, dropout masks)
# ----------------------------------------------------------------------------------------------

FD_CASES = [  # (L, D, reverse, reset_after, with lengths, with dropout masks, batch_first)
    (1, 1, False, False, False, False, False),
    (2, 2, False, False, True, False, True),
    (1, 1, True, False, True, False, False),
    (2, 2, False, False, True, True, False),
    (2, 1, False, True, False, True, True),
    (2, 2, False, True, True, False, False),
]


@pytest.mark.parametrize("L,D,reverse,reset_after,use_len,use_masks,bf", FD_CASES)
def test_backward_finite_differences(L, D, reverse, reset_after, use_len, use_masks, bf):
    rng = np.random.default_rng(50 + L + D)
    t_, nb, i_, h_ = 4, 3, 2, 2
    lengths = np.array([2, 4, 1]) if use_len else None
    layers = random_layers(rng, L, D, i_, h_, scale=0.8)
    x = rng.standard_normal((nb, t_, i_) if bf else (t_, nb, i_))
    h0 = rng.standard_normal((L * D, nb, h_))
    masks = (
        [(rng.random((t_, nb, D * h_)) > 0.4) / 0.6 for _ in range(L - 1)] if use_masks else None
    )
    d_out = rng.standard_normal((nb, t_, D * h_) if bf else (t_, nb, D * h_))
    d_hn = rng.standard_normal((L * D, nb, h_))
    kw = dict(
        hidden_size=h_,
        num_directions=D,
        reverse=reverse,
        reset_after=reset_after,
        lengths=lengths,
        batch_first=bf,
        dropout_masks=masks,
    )

    def loss():
        return loss_np(*ref.gru_forward(x, h0, layers, **kw), d_out, d_hn)

    dx, dh0, grads = ref.gru_backward(x, h0, layers, d_out, d_hn, **kw)
    finite_difference_check(loss, [x, h0] + flat_params(layers), [dx, dh0] + flat_grads(grads))
    if use_len:
        dx_tm = np.swapaxes(dx, 0, 1) if bf else dx
        for b, n in enumerate(lengths):
            assert (dx_tm[n:, b] == 0).all()


# ----------------------------------------------------------------------------------------------
# reverse, layout identities, dtype, purity
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset_after", [True, False])
def test_reverse_equals_time_flip(reset_after):
    """Stacked reverse=True GRU == forward GRU on the time-flipped sequence, flipped back."""
    rng = np.random.default_rng(60)
    L = 3
    layers = random_layers(rng, L, 1, I, H)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((L, B, H))
    d_out = rng.standard_normal((T, B, H))
    d_hn = rng.standard_normal((L, B, H))
    kw = dict(hidden_size=H, num_directions=1, reset_after=reset_after)
    out_r, hn_r = ref.gru_forward(x, h0, layers, reverse=True, **kw)
    out_f, hn_f = ref.gru_forward(x[::-1], h0, layers, **kw)
    np.testing.assert_allclose(out_r, out_f[::-1], atol=1e-13, rtol=0)
    np.testing.assert_allclose(hn_r, hn_f, atol=1e-13, rtol=0)
    np.testing.assert_array_equal(out_r[0], hn_r[-1])  # the reverse direction ends at t=0
    dx_r, dh0_r, g_r = ref.gru_backward(x, h0, layers, d_out, d_hn, reverse=True, **kw)
    dx_f, dh0_f, g_f = ref.gru_backward(x[::-1], h0, layers, d_out[::-1], d_hn, **kw)
    np.testing.assert_allclose(dx_r, dx_f[::-1], atol=1e-12, rtol=0)
    np.testing.assert_allclose(dh0_r, dh0_f, atol=1e-12, rtol=0)
    for a, b in zip(flat_grads(g_r), flat_grads(g_f)):
        np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)


def test_reverse_requires_one_direction():
    rng = np.random.default_rng(61)
    with pytest.raises(ValueError):
        ref.gru_forward(
            rng.standard_normal((T, B, I)),
            None,
            random_layers(rng, 1, 2, I, H),
            hidden_size=H,
            num_directions=2,
            reverse=True,
        )


@pytest.mark.parametrize("reset_after", [True, False])
def test_output_h_n_identities_bitwise(reset_after):
    rng = np.random.default_rng(70)
    x = rng.standard_normal((T, B, I))
    out1, hn1 = ref.gru_forward(
        x,
        None,
        random_layers(rng, 2, 1, I, H),
        hidden_size=H,
        num_directions=1,
        reset_after=reset_after,
    )
    np.testing.assert_array_equal(out1[-1], hn1[-1])
    out2, hn2 = ref.gru_forward(
        x,
        None,
        random_layers(rng, 2, 2, I, H),
        hidden_size=H,
        num_directions=2,
        reset_after=reset_after,
    )
    np.testing.assert_array_equal(out2[-1, :, :H], hn2[-2])
    np.testing.assert_array_equal(out2[0, :, H:], hn2[-1])


def test_batch_first_is_a_transpose():
    rng = np.random.default_rng(71)
    layers = random_layers(rng, 2, 2, I, H)
    x = rng.standard_normal((T, B, I))
    d_out = rng.standard_normal((T, B, 2 * H))
    kw = dict(hidden_size=H, num_directions=2, lengths=np.array([2, 5, 1]))
    out, hn = ref.gru_forward(x, None, layers, **kw)
    out_b, hn_b = ref.gru_forward(
        np.ascontiguousarray(x.transpose(1, 0, 2)), None, layers, batch_first=True, **kw
    )
    assert out_b.flags.c_contiguous
    np.testing.assert_array_equal(out_b, out.transpose(1, 0, 2))
    np.testing.assert_array_equal(hn_b, hn)
    dx = ref.gru_backward(x, None, layers, d_out, None, **kw)[0]
    dx_b = ref.gru_backward(
        np.ascontiguousarray(x.transpose(1, 0, 2)),
        None,
        layers,
        np.ascontiguousarray(d_out.transpose(1, 0, 2)),
        None,
        batch_first=True,
        **kw,
    )[0]
    assert dx_b.shape == (B, T, I) and dx_b.flags.c_contiguous
    np.testing.assert_array_equal(dx_b, dx.transpose(1, 0, 2))


@pytest.mark.parametrize("reset_after", [True, False])
def test_float32_stays_float32(reset_after):
    rng = np.random.default_rng(80)
    L, D = 2, 2
    layers64 = random_layers(rng, L, D, I, H)
    x64 = rng.standard_normal((T, B, I))
    h064 = rng.standard_normal((L * D, B, H))
    d_out64 = rng.standard_normal((T, B, D * H))
    d_hn64 = rng.standard_normal((L * D, B, H))
    masks64 = [(rng.random((T, B, D * H)) > 0.5) * 2.0]
    f32 = [[tuple(a.astype(np.float32) for a in p) for p in layer] for layer in layers64]

    def c(a):
        return a.astype(np.float32)

    kw = dict(hidden_size=H, num_directions=D, reset_after=reset_after, lengths=[5, 2, 3])
    out, hn = ref.gru_forward(c(x64), c(h064), f32, dropout_masks=[c(masks64[0])], **kw)
    out64, hn64 = ref.gru_forward(x64, h064, layers64, dropout_masks=masks64, **kw)
    assert out.dtype == hn.dtype == np.float32
    np.testing.assert_allclose(out, out64, atol=1e-5)
    dx, dh0, grads = ref.gru_backward(
        c(x64), c(h064), f32, c(d_out64), c(d_hn64), dropout_masks=[c(masks64[0])], **kw
    )
    dx64, dh064, grads64 = ref.gru_backward(
        x64, h064, layers64, d_out64, d_hn64, dropout_masks=masks64, **kw
    )
    assert dx.dtype == dh0.dtype == np.float32
    assert all(gr.dtype == np.float32 for gr in flat_grads(grads))
    np.testing.assert_allclose(dx, dx64, atol=1e-4)
    for a, b in zip(flat_grads(grads), flat_grads(grads64)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    h = ref.cell_forward(c(x64[0]), None, *f32[0][0])
    assert h.dtype == np.float32


def test_inputs_are_not_modified():
    rng = np.random.default_rng(90)
    L, D = 2, 2
    layers = random_layers(rng, L, D, I, H)
    x = rng.standard_normal((B, T, I))
    h0 = rng.standard_normal((L * D, B, H))
    d_out = rng.standard_normal((B, T, D * H))
    d_hn = rng.standard_normal((L * D, B, H))
    masks = [(rng.random((T, B, D * H)) > 0.5) * 2.0]
    lengths = np.array([3, 1, 5])
    everything = [x, h0, d_out, d_hn, masks[0], lengths] + flat_params(layers)
    before = [a.copy() for a in everything]
    for reset_after in (True, False):
        kw = dict(
            hidden_size=H,
            num_directions=D,
            reset_after=reset_after,
            lengths=lengths,
            batch_first=True,
            dropout_masks=masks,
        )
        out, hn = ref.gru_forward(x, h0, layers, **kw)
        dx, dh0, grads = ref.gru_backward(x, h0, layers, d_out, d_hn, **kw)
        results = [out, hn, dx, dh0] + flat_grads(grads)
        for r in results:  # freshly allocated
            assert not any(np.shares_memory(r, a) for a in everything)
        ref.cell_forward(x[:, 0], h0[0], *layers[0][0], reset_after=reset_after)
    for a, b in zip(everything, before):
        np.testing.assert_array_equal(a, b)
