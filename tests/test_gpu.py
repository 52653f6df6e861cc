"""The CuPy (GPU) backend against the NumPy reference, PyTorch's CUDA GRU and the CPU modules.

Every test here is marked ``gpu`` and the whole module is skipped, with the reason, when CuPy
is not installed or sees no CUDA device.  (tests/test_cuda_compile.py checks the kernels and
the backend's logic without a GPU.)
"""

import numpy as np
import pytest

from optional_deps import import_optional

cupy = import_optional("cupy", reason='the GPU tests need CuPy (pip install "cygru[gpu]")')

import cygru  # noqa: E402
from cygru import _cupy as gpu  # noqa: E402
from cygru._arrays import to_host  # noqa: E402
from cygru import _reference as ref  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu.is_available(), reason="CuPy sees no CUDA device"),
]

TOL = {
    np.float32: dict(rtol=1e-4, atol=5e-5),
    np.float64: dict(rtol=1e-10, atol=1e-11),
}


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _n_devices():
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


needs_torch_cuda = pytest.mark.skipif(_torch_cuda() is None, reason="needs PyTorch with CUDA")
needs_two_gpus = pytest.mark.skipif(_n_devices() < 2, reason="needs two CUDA devices")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def make_layers(rng, I, H, L, D, dtype, bias=True):
    s = 1 / np.sqrt(H)
    u = lambda *shape: rng.uniform(-s, s, shape).astype(dtype)  # noqa: E731
    return [
        [
            (
                u(3 * H, I if k == 0 else D * H),
                u(3 * H, H),
                u(3 * H) if bias else None,
                u(3 * H) if bias else None,
            )
            for _ in range(D)
        ]
        for k in range(L)
    ]


def dev(a):
    return None if a is None else cupy.asarray(a)


def dev_layers(layers):
    return [[tuple(dev(a) for a in t) for t in layer] for layer in layers]


def zero_grads_like(layers):
    return [
        [tuple(None if a is None else cupy.zeros_like(a) for a in t) for t in layer]
        for layer in layers
    ]


def host(a):
    return cupy.asnumpy(a)


def make_lengths(rng, mode, T, B):
    if mode is None:
        return None
    if mode == "random":
        lens = rng.integers(1, T + 1, B)
        lens[rng.integers(B)] = T
        return lens.astype(np.int64)
    if mode == "short":  # no sequence reaches T
        return rng.integers(1, max(2, T // 2), B).astype(np.int64)
    raise ValueError(mode)


def run_both(
    *,
    T,
    B,
    I,
    H,
    L,
    D,
    reverse=False,
    reset_after=True,
    lengths=None,
    batch_first=False,
    dtype=np.float32,
    bias=True,
    masks=False,
    with_h0=True,
    seed=0,
    grads_from="both",
):
    """Forward and backward through the CuPy backend and the reference; asserts agreement."""
    rng = np.random.default_rng(seed)
    layers = make_layers(rng, I, H, L, D, dtype, bias)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype) if with_h0 else None
    lens = make_lengths(rng, lengths, T, B)
    dm = None
    if masks and L > 1:
        dm = [((rng.random((T, B, D * H)) > 0.25) / 0.75).astype(dtype) for _ in range(L - 1)]
    kw = dict(
        hidden_size=H,
        num_directions=D,
        reverse=reverse,
        reset_after=reset_after,
        lengths=lens,
        batch_first=batch_first,
    )
    tol = TOL[dtype]

    g_layers = dev_layers(layers)
    gx, gh0 = dev(x), dev(h0)
    g_dm = None if dm is None else [dev(m) for m in dm]
    out, h_n, cache = gpu.gru_forward(gx, gh0, g_layers, dropout_masks=g_dm, need_cache=True, **kw)
    r_out, r_hn = ref.gru_forward(x, h0, layers, dropout_masks=dm, **kw)
    assert isinstance(out, cupy.ndarray) and isinstance(h_n, cupy.ndarray)
    assert out.dtype == dtype and out.shape == r_out.shape and h_n.shape == r_hn.shape
    np.testing.assert_allclose(host(out), r_out, **tol)
    np.testing.assert_allclose(host(h_n), r_hn, **tol)

    d_out = (
        rng.standard_normal(r_out.shape).astype(dtype) if grads_from in ("out", "both") else None
    )
    d_hn = rng.standard_normal(r_hn.shape).astype(dtype) if grads_from in ("hn", "both") else None
    grads = zero_grads_like(g_layers)
    dx, dh0 = gpu.gru_backward(cache, dev(d_out), dev(d_hn), grads)
    r_dx, r_dh0, r_grads = ref.gru_backward(x, h0, layers, d_out, d_hn, dropout_masks=dm, **kw)
    assert dx.shape == x.shape and dh0.shape == (L * D, B, H)
    np.testing.assert_allclose(host(dx), r_dx, **tol)
    np.testing.assert_allclose(host(dh0), r_dh0, **tol)
    for layer_g, layer_r in zip(grads, r_grads):
        for tg, tr in zip(layer_g, layer_r):
            for g, r in zip(tg, tr):
                assert (g is None) == (r is None)
                if g is not None:
                    np.testing.assert_allclose(host(g), r, **tol)
    if lens is not None:
        out_tm = host(out).transpose(1, 0, 2) if batch_first else host(out)
        dx_tm = host(dx).transpose(1, 0, 2) if batch_first else host(dx)
        for b in range(B):
            assert not out_tm[lens[b] :, b].any()
            assert not dx_tm[lens[b] :, b].any()
    return out, h_n


# ---------------------------------------------------------------------------------------------
# the backend against the reference
# ---------------------------------------------------------------------------------------------

STACKS = [  # (num_layers, num_directions, reverse)
    (1, 1, False),
    (1, 1, True),
    (1, 2, False),
    (2, 1, True),
    (2, 2, False),
    (3, 1, False),
    (3, 2, False),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("L,D,reverse", STACKS)
@pytest.mark.parametrize("lengths", [None, "random"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_reference(dtype, reset_after, L, D, reverse, lengths, batch_first):
    run_both(
        T=7,
        B=5,
        I=4,
        H=6,
        L=L,
        D=D,
        reverse=reverse,
        reset_after=reset_after,
        lengths=lengths,
        batch_first=batch_first,
        dtype=dtype,
        masks=L > 1,
        seed=L * 10 + D,
    )


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lengths_shorter_than_T_and_no_bias(reset_after, dtype):
    # trailing steps where no sequence is active, bias=False, no h0, gradient from h_n only
    run_both(
        T=8,
        B=6,
        I=3,
        H=5,
        L=2,
        D=2,
        reset_after=reset_after,
        lengths="short",
        dtype=dtype,
        bias=False,
        with_h0=False,
        grads_from="hn",
        seed=3,
    )
    run_both(
        T=8,
        B=6,
        I=3,
        H=5,
        L=2,
        D=2,
        reset_after=reset_after,
        lengths="short",
        dtype=dtype,
        bias=True,
        with_h0=True,
        grads_from="out",
        seed=4,
    )


@pytest.mark.parametrize("reset_after", [True, False])
def test_single_step_single_row(reset_after):
    run_both(
        T=1,
        B=1,
        I=1,
        H=1,
        L=2,
        D=2,
        reset_after=reset_after,
        lengths="random",
        dtype=np.float64,
        seed=5,
    )


@pytest.mark.parametrize("reset_after", [True, False])
def test_many_elements_grid_stride(reset_after):
    # B*H > block * max grid: every kernel's grid-stride loop runs more than once
    B, H = 2100, 512
    assert B * H > gpu._BLOCK * gpu._MAX_GRID
    run_both(
        T=3,
        B=B,
        I=8,
        H=H,
        L=1,
        D=2,
        reset_after=reset_after,
        lengths="random",
        dtype=np.float32,
        seed=6,
    )


def test_no_grad_at_all_gives_zeros():
    rng = np.random.default_rng(0)
    layers = dev_layers(make_layers(rng, 3, 4, 2, 2, np.float64))
    x = cupy.asarray(rng.standard_normal((5, 2, 3)))
    _, _, cache = gpu.gru_forward(
        x,
        None,
        layers,
        hidden_size=4,
        num_directions=2,
        reverse=False,
        reset_after=True,
        lengths=None,
        batch_first=False,
        dropout_masks=None,
        need_cache=True,
    )
    grads = zero_grads_like(layers)
    dx, dh0 = gpu.gru_backward(cache, None, None, grads)
    assert not host(dx).any() and not host(dh0).any()
    assert all(not host(g).any() for layer in grads for t in layer for g in t)


def test_grads_are_added_into():
    rng = np.random.default_rng(1)
    layers = dev_layers(make_layers(rng, 3, 4, 1, 1, np.float64))
    x = cupy.asarray(rng.standard_normal((5, 2, 3)))
    kw = dict(
        hidden_size=4,
        num_directions=1,
        reverse=False,
        reset_after=True,
        lengths=None,
        batch_first=False,
        dropout_masks=None,
        need_cache=True,
    )
    d_out = cupy.asarray(rng.standard_normal((5, 2, 4)))
    once = zero_grads_like(layers)
    _, _, cache = gpu.gru_forward(x, None, layers, **kw)
    gpu.gru_backward(cache, d_out, None, once)
    twice = zero_grads_like(layers)
    for _ in range(2):
        _, _, cache = gpu.gru_forward(x, None, layers, **kw)
        gpu.gru_backward(cache, d_out, None, twice)
    for g1, g2 in zip(once[0][0], twice[0][0]):
        np.testing.assert_allclose(host(g2), 2 * host(g1), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("D", [1, 2])
def test_h_n_identities_bit_for_bit(D):
    rng = np.random.default_rng(2)
    H = 5
    layers = dev_layers(make_layers(rng, 3, H, 2, D, np.float32))
    x = cupy.asarray(rng.standard_normal((6, 4, 3)).astype(np.float32))
    out, h_n, _ = gpu.gru_forward(
        x,
        None,
        layers,
        hidden_size=H,
        num_directions=D,
        reverse=False,
        reset_after=True,
        lengths=None,
        batch_first=False,
        dropout_masks=None,
        need_cache=False,
    )
    out, h_n = host(out), host(h_n)
    if D == 1:
        np.testing.assert_array_equal(out[-1], h_n[-1])
    else:
        np.testing.assert_array_equal(out[-1, :, :H], h_n[-2])
        np.testing.assert_array_equal(out[0, :, H:], h_n[-1])


@pytest.mark.parametrize("reset_after", [True, False])
def test_full_lengths_equal_no_lengths(reset_after):
    rng = np.random.default_rng(3)
    T, B = 6, 4
    layers = dev_layers(make_layers(rng, 3, 5, 2, 2, np.float32))
    x = cupy.asarray(rng.standard_normal((T, B, 3)).astype(np.float32))
    kw = dict(
        hidden_size=5,
        num_directions=2,
        reverse=False,
        reset_after=reset_after,
        batch_first=False,
        dropout_masks=None,
        need_cache=False,
    )
    a = gpu.gru_forward(x, None, layers, lengths=None, **kw)
    b = gpu.gru_forward(x, None, layers, lengths=np.full(B, T, np.int64), **kw)
    np.testing.assert_array_equal(host(a[0]), host(b[0]))
    np.testing.assert_array_equal(host(a[1]), host(b[1]))


@pytest.mark.parametrize("reset_after", [True, False])
def test_lengths_equal_separate_runs(reset_after):
    # each sequence of a padded batch gives what it gives when run alone, truncated
    rng = np.random.default_rng(4)
    T, B, I, H = 7, 5, 3, 4
    layers = dev_layers(make_layers(rng, I, H, 2, 2, np.float64))
    x = cupy.asarray(rng.standard_normal((T, B, I)))
    h0 = cupy.asarray(rng.standard_normal((4, B, H)))
    lens = np.array([3, 7, 1, 5, 7], np.int64)
    kw = dict(
        hidden_size=H,
        num_directions=2,
        reverse=False,
        reset_after=reset_after,
        batch_first=False,
        dropout_masks=None,
        need_cache=False,
    )
    out, h_n, _ = gpu.gru_forward(x, h0, layers, lengths=lens, **kw)
    for b in range(B):
        o_b, hn_b, _ = gpu.gru_forward(
            cupy.ascontiguousarray(x[: lens[b], b : b + 1]),
            cupy.ascontiguousarray(h0[:, b : b + 1]),
            layers,
            lengths=None,
            **kw,
        )
        np.testing.assert_allclose(host(out[: lens[b], b]), host(o_b[:, 0]), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(host(h_n[:, b]), host(hn_b[:, 0]), rtol=1e-12, atol=1e-13)


def test_lengths_may_be_a_cupy_array():
    rng = np.random.default_rng(5)
    layers = dev_layers(make_layers(rng, 3, 4, 1, 2, np.float32))
    x = cupy.asarray(rng.standard_normal((6, 3, 3)).astype(np.float32))
    lens = np.array([2, 6, 4], np.int64)
    kw = dict(
        hidden_size=4,
        num_directions=2,
        reverse=False,
        reset_after=True,
        batch_first=False,
        dropout_masks=None,
        need_cache=False,
    )
    a = gpu.gru_forward(x, None, layers, lengths=lens, **kw)
    b = gpu.gru_forward(x, None, layers, lengths=cupy.asarray(lens), **kw)
    np.testing.assert_array_equal(host(a[0]), host(b[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
def test_saturated_gates_stay_finite(dtype, reset_after):
    rng = np.random.default_rng(6)
    layers = dev_layers(make_layers(rng, 3, 4, 1, 1, dtype))
    x = cupy.asarray((rng.standard_normal((5, 2, 3)) * 1e4).astype(dtype))
    out, h_n, cache = gpu.gru_forward(
        x,
        None,
        layers,
        hidden_size=4,
        num_directions=1,
        reverse=False,
        reset_after=reset_after,
        lengths=None,
        batch_first=False,
        dropout_masks=None,
        need_cache=True,
    )
    grads = zero_grads_like(layers)
    dx, dh0 = gpu.gru_backward(cache, cupy.ones_like(out), None, grads)
    for a in (out, h_n, dx, dh0):
        assert bool(cupy.isfinite(a).all())
    assert float(cupy.abs(out).max()) <= 1


def test_inputs_not_modified_outputs_fresh():
    rng = np.random.default_rng(7)
    layers = dev_layers(make_layers(rng, 3, 4, 2, 2, np.float32))
    x = cupy.asarray(rng.standard_normal((5, 3, 3)).astype(np.float32))
    h0 = cupy.asarray(rng.standard_normal((4, 3, 4)).astype(np.float32))
    before = [host(a) for a in (x, h0)] + [host(w) for layer in layers for t in layer for w in t]
    out, h_n, cache = gpu.gru_forward(
        x,
        h0,
        layers,
        hidden_size=4,
        num_directions=2,
        reverse=False,
        reset_after=True,
        lengths=np.array([5, 2, 4], np.int64),
        batch_first=False,
        dropout_masks=None,
        need_cache=True,
    )
    d_out, d_hn = cupy.ones_like(out), cupy.ones_like(h_n)
    d_before = [host(d_out), host(d_hn)]
    dx, dh0 = gpu.gru_backward(cache, d_out, d_hn, zero_grads_like(layers))
    after = [host(a) for a in (x, h0)] + [host(w) for layer in layers for t in layer for w in t]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(host(d_out), d_before[0])
    np.testing.assert_array_equal(host(d_hn), d_before[1])
    for a in (out, h_n, dx, dh0):
        for b in (x, h0, d_out, d_hn):
            assert not cupy.shares_memory(a, b)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_h", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_forward_matches_reference(reset_after, dtype, with_h, bias):
    rng = np.random.default_rng(8)
    B, I, H = 6, 3, 5
    ((w_ih, w_hh, b_ih, b_hh),) = make_layers(rng, I, H, 1, 1, dtype, bias)[0]
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype) if with_h else None
    gh = dev(h)
    got = gpu.cell_forward(dev(x), gh, dev(w_ih), dev(w_hh), dev(b_ih), dev(b_hh), reset_after)
    want = ref.cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after)
    assert isinstance(got, cupy.ndarray) and got.dtype == dtype
    np.testing.assert_allclose(host(got), want, **TOL[dtype])
    if h is not None:
        np.testing.assert_array_equal(host(gh), h)  # h is not modified


# ---------------------------------------------------------------------------------------------
# helpers: to_device / to_host
# ---------------------------------------------------------------------------------------------


def test_to_device_to_host_round_trip():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = gpu.to_device(a, 0)
    assert isinstance(d, cupy.ndarray) and d.device.id == 0
    assert gpu.to_device(d, 0) is d
    np.testing.assert_array_equal(to_host(d), a)
    assert to_host(a) is a


@needs_two_gpus
def test_to_device_between_devices():
    a = gpu.to_device(np.arange(6.0).reshape(2, 3), 0)
    b = gpu.to_device(a, 1)
    assert b.device.id == 1
    np.testing.assert_array_equal(to_host(b), np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError):
        gpu.as_cupy(a, "cuda:1")


@needs_torch_cuda
def test_to_device_accepts_torch_cuda_tensor():
    torch = _torch_cuda()
    t = torch.arange(6, dtype=torch.float64, device="cuda").reshape(2, 3)
    d = gpu.to_device(t, t.device.index or 0)
    assert isinstance(d, cupy.ndarray)
    np.testing.assert_array_equal(to_host(d), np.arange(6.0).reshape(2, 3))


# ---------------------------------------------------------------------------------------------
# against torch.nn.GRU on CUDA (cuDNN)
# ---------------------------------------------------------------------------------------------


@needs_torch_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L,D", [(1, 1), (2, 2), (3, 1)])
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch_cuda(dtype, L, D, use_lengths, batch_first):
    torch = _torch_cuda()
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    tdt = torch.float32 if dtype == np.float32 else torch.float64
    T, B, I, H = 9, 4, 5, 6
    rng = np.random.default_rng(9)
    layers = make_layers(rng, I, H, L, D, dtype)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    lens = np.array([9, 3, 7, 1], np.int64) if use_lengths else None
    d_out = rng.standard_normal((B, T, D * H) if batch_first else (T, B, D * H)).astype(dtype)
    d_hn = rng.standard_normal((L * D, B, H)).astype(dtype)

    tg = torch.nn.GRU(I, H, num_layers=L, bidirectional=D == 2, batch_first=batch_first)
    tg = tg.to(device="cuda", dtype=tdt)
    with torch.no_grad():
        for k in range(L):
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
                for name, arr in zip(
                    ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), layers[k][d]
                ):
                    getattr(tg, name + sfx).copy_(torch.from_numpy(arr))
    tx = torch.tensor(x, device="cuda", requires_grad=True)
    th0 = torch.tensor(h0, device="cuda", requires_grad=True)
    allow = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        if use_lengths:
            packed = pack_padded_sequence(
                tx, torch.from_numpy(lens), batch_first=batch_first, enforce_sorted=False
            )
            t_out, t_hn = tg(packed, th0)
            t_out, _ = pad_packed_sequence(t_out, batch_first=batch_first, total_length=T)
        else:
            t_out, t_hn = tg(tx, th0)
        loss = (t_out * torch.from_numpy(d_out).cuda()).sum() + (
            t_hn * torch.from_numpy(d_hn).cuda()
        ).sum()
        loss.backward()
    finally:
        torch.backends.cudnn.allow_tf32 = allow

    g_layers = dev_layers(layers)
    out, h_n, cache = gpu.gru_forward(
        dev(x),
        dev(h0),
        g_layers,
        hidden_size=H,
        num_directions=D,
        reverse=False,
        reset_after=True,
        lengths=lens,
        batch_first=batch_first,
        dropout_masks=None,
        need_cache=True,
    )
    grads = zero_grads_like(g_layers)
    dx, dh0 = gpu.gru_backward(cache, dev(d_out), dev(d_hn), grads)
    tol = dict(rtol=2e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(host(out), t_out.detach().cpu().numpy(), **tol)
    np.testing.assert_allclose(host(h_n), t_hn.detach().cpu().numpy(), **tol)
    np.testing.assert_allclose(host(dx), tx.grad.cpu().numpy(), **tol)
    np.testing.assert_allclose(host(dh0), th0.grad.cpu().numpy(), **tol)
    for k in range(L):
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
            for name, g in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), grads[k][d]):
                np.testing.assert_allclose(
                    host(g), getattr(tg, name + sfx).grad.cpu().numpy(), **tol, err_msg=name + sfx
                )


# ---------------------------------------------------------------------------------------------
# through the public API
# ---------------------------------------------------------------------------------------------


def _pair(**kw):
    """The same module (same seed) on the CPU and on the GPU."""
    return cygru.GRU(**kw, seed=0), cygru.GRU(**kw, seed=0).to("cuda")


def test_module_to_returns_module_and_sets_device():
    m = cygru.GRU(3, 4, seed=0)
    assert m.device == "cpu"
    assert m.to("cuda") is m
    assert m.device == "cuda:0"
    for _, p in m.named_parameters():
        assert isinstance(p, cupy.ndarray) and p.device.id == 0
    for g in m.grads.values():
        assert isinstance(g, cupy.ndarray)
    assert m.to("cuda:0") is m and m.device == "cuda:0"
    assert m.to("cpu") is m and m.device == "cpu"
    for _, p in m.named_parameters():
        assert isinstance(p, np.ndarray)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_module_on_cuda_matches_cpu(reset_after, batch_first, dtype):
    kw = dict(
        input_size=3,
        hidden_size=5,
        num_layers=2,
        bidirectional=True,
        batch_first=batch_first,
        reset_after=reset_after,
        dtype=dtype,
    )
    cpu_m, gpu_m = _pair(**kw)
    rng = np.random.default_rng(10)
    T, B = 6, 4
    x = rng.standard_normal((B, T, 3) if batch_first else (T, B, 3)).astype(dtype)
    h0 = rng.standard_normal((4, B, 5)).astype(dtype)
    lens = np.array([6, 2, 5, 1])
    tol = TOL[dtype]

    out_c, hn_c = cpu_m(x, h0, lens)
    out_g, hn_g = gpu_m(cupy.asarray(x), cupy.asarray(h0), lens)
    assert isinstance(out_g, cupy.ndarray) and isinstance(hn_g, cupy.ndarray)
    np.testing.assert_allclose(host(out_g), out_c, **tol)
    np.testing.assert_allclose(host(hn_g), hn_c, **tol)

    d_out = rng.standard_normal(out_c.shape).astype(dtype)
    d_hn = rng.standard_normal(hn_c.shape).astype(dtype)
    (o_c, _), back_c = cpu_m.vjp(x, h0, lens)
    (o_g, _), back_g = gpu_m.vjp(cupy.asarray(x), cupy.asarray(h0), lens)
    dx_c, dh0_c = back_c(d_out, d_hn)
    dx_g, dh0_g = back_g(cupy.asarray(d_out), cupy.asarray(d_hn))
    np.testing.assert_allclose(host(dx_g), dx_c, **tol)
    np.testing.assert_allclose(host(dh0_g), dh0_c, **tol)
    assert set(gpu_m.grads) == set(cpu_m.grads)
    for name, g in gpu_m.grads.items():
        assert isinstance(g, cupy.ndarray)
        np.testing.assert_allclose(host(g), cpu_m.grads[name], **tol, err_msg=name)


def test_module_dropout_on_cuda_matches_cpu():
    # the same seed draws the same masks on both devices
    kw = dict(input_size=3, hidden_size=4, num_layers=3, dropout=0.4, dtype=np.float64)
    cpu_m, gpu_m = _pair(**kw)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 2, 3))
    (o_c, h_c), back_c = cpu_m.vjp(x)
    (o_g, h_g), back_g = gpu_m.vjp(cupy.asarray(x))
    np.testing.assert_allclose(host(o_g), o_c, **TOL[np.float64])
    d = rng.standard_normal(o_c.shape)
    dx_c, _ = back_c(d, None)
    dx_g, _ = back_g(cupy.asarray(d), None)
    np.testing.assert_allclose(host(dx_g), dx_c, **TOL[np.float64])
    for name, g in gpu_m.grads.items():
        np.testing.assert_allclose(host(g), cpu_m.grads[name], **TOL[np.float64], err_msg=name)


def test_module_unbatched_on_cuda():
    cpu_m, gpu_m = _pair(input_size=3, hidden_size=4, bidirectional=True)
    x = np.random.default_rng(12).standard_normal((5, 3)).astype(np.float32)
    out_c, hn_c = cpu_m(x)
    out_g, hn_g = gpu_m(cupy.asarray(x))
    assert out_g.shape == (5, 8) and hn_g.shape == (2, 4)
    np.testing.assert_allclose(host(out_g), out_c, **TOL[np.float32])
    np.testing.assert_allclose(host(hn_g), hn_c, **TOL[np.float32])


@pytest.mark.parametrize("reset_after", [True, False])
def test_cell_module_on_cuda_matches_cpu(reset_after):
    cpu_c = cygru.GRUCell(3, 4, reset_after=reset_after, dtype=np.float64, seed=0)
    gpu_c = cygru.GRUCell(3, 4, reset_after=reset_after, dtype=np.float64, seed=0).to("cuda")
    assert gpu_c.device == "cuda:0"
    rng = np.random.default_rng(13)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    np.testing.assert_allclose(
        host(gpu_c(cupy.asarray(x), cupy.asarray(h))), cpu_c(x, h), **TOL[np.float64]
    )
    np.testing.assert_allclose(host(gpu_c(cupy.asarray(x))), cpu_c(x), **TOL[np.float64])
    h1_c, back_c = cpu_c.vjp(x, h)
    h1_g, back_g = gpu_c.vjp(cupy.asarray(x), cupy.asarray(h))
    d = rng.standard_normal(h1_c.shape)
    for a, b in zip(back_g(cupy.asarray(d)), back_c(d)):
        np.testing.assert_allclose(host(a), b, **TOL[np.float64])
    for name, g in gpu_c.grads.items():
        np.testing.assert_allclose(host(g), cpu_c.grads[name], **TOL[np.float64], err_msg=name)


@needs_torch_cuda
def test_module_accepts_torch_cuda_tensors():
    torch = _torch_cuda()
    cpu_m, gpu_m = _pair(input_size=3, hidden_size=4, num_layers=2, dtype=np.float32)
    x = np.random.default_rng(14).standard_normal((5, 2, 3)).astype(np.float32)
    tx = torch.from_numpy(x).cuda()
    out_g, hn_g = gpu_m(tx)
    out_c, hn_c = cpu_m(x)
    np.testing.assert_allclose(to_host(out_g), out_c, **TOL[np.float32])
    np.testing.assert_allclose(to_host(hn_g), hn_c, **TOL[np.float32])
    # a non-contiguous tensor (a transposed view) is accepted too
    txt = torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2))).cuda().transpose(0, 1)
    np.testing.assert_allclose(to_host(gpu_m(txt)[0]), out_c, **TOL[np.float32])


def test_mixing_devices_raises_type_error():
    cpu_m, gpu_m = _pair(input_size=3, hidden_size=4)
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(TypeError):
        gpu_m(x)  # host input, GPU module
    with pytest.raises(TypeError):
        cpu_m(cupy.asarray(x))  # GPU input, CPU module
    with pytest.raises(TypeError):
        gpu_m(cupy.asarray(x), np.zeros((1, 2, 4), np.float32))  # mixed x and h0
    cell = cygru.GRUCell(3, 4).to("cuda")
    with pytest.raises(TypeError):
        cell(np.zeros((2, 3), np.float32))


@needs_two_gpus
def test_array_on_another_gpu_raises_type_error():
    m = cygru.GRU(3, 4).to("cuda:1")
    assert m.device == "cuda:1"
    with cupy.cuda.Device(0):
        x = cupy.zeros((5, 2, 3), np.float32)
    with pytest.raises(TypeError):
        m(x)
    with cupy.cuda.Device(1):
        x1 = cupy.zeros((5, 2, 3), np.float32)
    out, _ = m(x1)
    assert out.device.id == 1


def test_gradcheck_on_cuda():
    m = cygru.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0).to("cuda")
    x = cupy.asarray(np.random.default_rng(15).standard_normal((4, 2, 3)))
    assert cygru.gradcheck(m, x) is True
    m2 = cygru.GRU(3, 4, reset_after=False, dtype=np.float64, seed=0).to("cuda")
    assert cygru.gradcheck(m2, x, lengths=np.array([4, 2])) is True


def test_dropout_masks_reach_backward_and_gradcheck_on_cuda():
    """The GPU backend returns the contract's ForwardCache: backward.dropout_masks are the
    masks the forward applied (they were None on a GPU when its cache called them
    ``masks``), and gradcheck holds them fixed."""
    from cygru._backend import ForwardCache

    m = cygru.GRU(3, 4, num_layers=3, bidirectional=True, dropout=0.4, dtype=np.float64, seed=0).to(
        "cuda"
    )
    x = cupy.asarray(np.random.default_rng(16).standard_normal((5, 2, 3)))
    (out, h_n), backward = m.vjp(x)
    masks = backward.dropout_masks
    assert masks is not None and len(masks) == 2
    assert all(isinstance(k, cupy.ndarray) and k.shape == (5, 2, 8) for k in masks)
    call = m._call(x, None, None)
    _, _, cache = call.run(m._layers(), dropout_masks=masks, need_cache=True)
    assert isinstance(cache, ForwardCache) and cache.dropout_masks is masks
    # the backward matches the CPU module's given the same masks
    cpu = cygru.GRU(3, 4, num_layers=3, bidirectional=True, dtype=np.float64)
    cpu.load_state_dict({k: to_host(v) for k, v in m.state_dict().items()})
    d_out = np.random.default_rng(17).standard_normal(out.shape)
    c_call = cpu._call(to_host(x), None, None)
    host_masks = [to_host(k) for k in masks]
    c_out, c_hn, c_cache = c_call.run(cpu._layers(), dropout_masks=host_masks, need_cache=True)
    np.testing.assert_allclose(to_host(out), c_out, **TOL[np.float64])
    grads = cygru.functional.layer_weights(cpu._new_grads(cpu.dtype, "cpu"), 3, 2, True)
    c_dx, _ = c_call.backward(c_cache, d_out, None, grads)
    dx, _ = backward(cupy.asarray(d_out), None)
    np.testing.assert_allclose(to_host(dx), c_dx, **TOL[np.float64])
    assert cygru.gradcheck(m, x) is True


def test_pytorch_habits_on_cuda():
    m = cygru.GRU(3, 4, num_layers=2, seed=0).to("cuda")
    x = cupy.asarray(np.random.default_rng(18).standard_normal((5, 2, 3)), np.float32)
    (out, _), backward = m.vjp(x)
    backward(cupy.ones_like(out), None)
    g32 = {n: to_host(g) for n, g in m.grads.items()}
    assert m.double() is m and m.device == "cuda:0"
    assert all(isinstance(p, cupy.ndarray) and p.dtype == np.float64 for p in m.parameters())
    for n, g in m.grads.items():
        assert isinstance(g, cupy.ndarray)
        np.testing.assert_array_equal(to_host(g), g32[n].astype(np.float64))
    assert m(x)[0].dtype == np.float64
    m.zero_grad(set_to_none=True)
    assert all(g is None for g in m.grads.values())
    (out, _), backward = m.vjp(x)
    backward(cupy.ones_like(out), None)
    assert all(isinstance(g, cupy.ndarray) and g.dtype == np.float64 for g in m.grads.values())
    ref = cygru.GRU(3, 4, num_layers=2, seed=5)
    # a GPU module loads CUDA arrays, and host arrays copied to its device (as torch)
    res = m.load_state_dict(
        {"weight_hh_l1": cupy.asarray(ref.weight_hh_l1), "bias_hh_l0": ref.bias_hh_l0}, strict=False
    )
    assert "weight_ih_l0" in res.missing_keys and res.unexpected_keys == []
    for name in ("weight_hh_l1", "bias_hh_l0"):
        p = getattr(m, name)
        assert isinstance(p, cupy.ndarray) and p.dtype == np.float64 and p.device.id == 0
        np.testing.assert_array_equal(to_host(p), getattr(ref, name).astype(np.float64))
    m.weight_ih_l0 = ref.weight_ih_l0.tolist()
    assert isinstance(m.weight_ih_l0, cupy.ndarray)
    with pytest.raises(ValueError, match=r"^cygru\.GRU: weight_ih_l0 must have shape"):
        m.weight_ih_l0 = np.zeros((2, 2))
    m.reset_parameters(seed=5)
    np.testing.assert_array_equal(
        to_host(m.weight_hh_l1),
        cygru.GRU(3, 4, num_layers=2, dtype=np.float64, seed=5).weight_hh_l1,
    )
    assert isinstance(m.weight_hh_l1, cupy.ndarray)
    out, h_n = m(cupy.zeros((5, 0, 3)))  # empty batch: no backend runs
    assert isinstance(out, cupy.ndarray) and out.shape == (5, 0, 4)
    with pytest.raises(TypeError, match=r"^cygru\.GRU: x is a host \(NumPy\) array"):
        m(np.zeros((5, 2, 3)))
