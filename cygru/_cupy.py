"""GPU backend: the backend contract (:mod:`cygru._backend`) for CuPy arrays.

The GEMMs run in cuBLAS (``cupy.cublas.gemm``); everything element-wise runs in the fused
kernels of ``_gru_kernels.cu``, compiled once per device by ``cupy.RawModule`` (NVRTC).
Everything is issued on CuPy's current stream (the default stream unless the caller set
another); the time loop never waits for the device: every per-step quantity (how many
sequences are still active) is computed on the host before the loop.

Per layer and direction (see DESIGN.md §1, §4):

- one GEMM projects all T*B time-major input rows: ``gi = x2d @ W_ih^T`` (T*B, 3H);
- with ``lengths`` the batch is sorted once by length, descending (stable), so that at step t
  the active sequences are the first ``B_t = #(L_b > t)`` sorted rows.  The state buffer
  (B, H) is kept in sorted order, initialised from h0; rows not yet started keep h0 (right
  for a backwards-in-time direction) and finished rows keep their last state (= h_n);
- per step, ``reset_after=True``: one GEMM ``gh = h[:B_t] @ W_hh^T`` and one fused kernel
  that updates the active rows in place, writes the output row (through the permutation,
  straight into the strided output) and zeros for inactive rows; ``reset_after=False``:
  GEMM ``h[:B_t] @ W_hh[:2H]^T``, kernel (r, z, r*h), GEMM ``(r*h) @ W_hn^T``, kernel (n, h');
- training additionally caches r, z, n, h_prev and ghn (= gh_n + b_hn) or r*h per step.

Backward visits the steps in the reverse of the processing order: per step one kernel (two
for reset_after=False) writes the gate gradients ``dgi`` (time-major, original order, zeros
at padded steps) and a ``dgh`` history (sorted, zeros for inactive rows), and one GEMM (two)
carries the state gradient back.  After the loop dW_hh is one GEMM over the whole history,
dW_ih and dx one GEMM each over all T*B rows, and the bias gradients are column sums.

The module imports without CuPy: CuPy is imported inside the functions that need it.
"""

from pathlib import Path

import numpy as np

from ._backend import ForwardCache

# the device conversions live below this backend and the argument checks alike
from ._device import as_cupy, ascontiguous, is_cupy_array
from ._device import to_cuda as to_device

__all__ = [
    "KERNEL_NAMES",
    "is_available",
    "xp",
    "as_cupy",
    "ascontiguous",
    "to_device",
    "gru_forward",
    "gru_backward",
    "cell_forward",
]

KERNEL_SOURCE = Path(__file__).with_name("_gru_kernels.cu")
_KERNEL_BASES = ("fwd_ra", "fwd_nr1", "fwd_nr2", "bwd_ra", "bwd_nr1", "bwd_nr2")
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
#: Every extern "C" kernel name defined in ``_gru_kernels.cu``.
KERNEL_NAMES = tuple(f"gru_{base}_{sfx}" for sfx in ("f32", "f64") for base in _KERNEL_BASES)
# NVRTC options: C++17, and no fast math (accurate expf / tanhf).
_NVRTC_OPTIONS = ("--std=c++17",)

_BLOCK = 256
_MAX_GRID = 4096  # grid-stride loops cover larger element counts


# ---------------------------------------------------------------------------------------------
# CuPy access (the only places that touch CuPy directly besides array methods)
# ---------------------------------------------------------------------------------------------


def _cp():
    import cupy

    return cupy


_cublas = None


def _gemm(transa, transb, a, b, out, beta=0.0):
    """``out = op(a) @ op(b) + beta * out`` in cuBLAS (op: 'N' as is, 'T' transposed).

    `a`, `b`, `out` are 2-D; row-major (C-contiguous) operands are handed to cuBLAS's
    column-major GEMM as their transposes by ``cupy.cublas.gemm`` (no copies).  With
    ``beta=0`` `out` is not read.
    """
    global _cublas
    if _cublas is None:
        from cupy import cublas

        _cublas = cublas
    _cublas.gemm(transa, transb, a, b, out=out, alpha=1.0, beta=beta)


def _device_ctx(array):
    """Context manager making `array`'s device current (allocations and launches go there)."""
    return _cp().cuda.Device(array.device.id)


_modules = {}  # device id -> RawModule
_kernel_sets = {}  # (device id, dtype) -> _Kernels


class _Kernels:
    """The six gate kernels of one dtype, as attributes ``fwd_ra`` ... ``bwd_nr2``."""

    def __init__(self, get_function, suffix):
        for base in _KERNEL_BASES:
            setattr(self, base, get_function(f"gru_{base}_{suffix}"))


def _get_kernels(dtype):
    """The kernels for `dtype` on the current device (compiled on first use, then cached)."""
    cp = _cp()
    dev = cp.cuda.Device().id
    key = (dev, np.dtype(dtype))
    kernels = _kernel_sets.get(key)
    if kernels is None:
        module = _modules.get(dev)
        if module is None:
            module = cp.RawModule(code=KERNEL_SOURCE.read_text(), options=_NVRTC_OPTIONS)
            _modules[dev] = module
        kernels = _Kernels(module.get_function, _SUFFIX[np.dtype(dtype)])
        _kernel_sets[key] = kernels
    return kernels


# ---------------------------------------------------------------------------------------------
# public helpers
# ---------------------------------------------------------------------------------------------


def is_available():
    """True if CuPy imports and sees at least one CUDA device.  Never raises."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def xp():
    """The CuPy module (the array namespace of this backend)."""
    return _cp()


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------


class _Plan:
    """Batch order and per-step active counts, computed once on the host.

    perm: device int64 (B,) with perm[s] = original index of sorted row s, or None when the
    order is the identity (no lengths, or lengths already non-increasing).
    bt: list of T Python ints, bt[t] = number of sequences with L_b > t (a sorted prefix).
    They are the ``perm`` and ``active`` fields of the forward's ForwardCache.
    """

    def __init__(self, perm, bt):
        self.perm, self.bt = perm, bt

    @classmethod
    def of_lengths(cls, cp, lengths, T, B):
        if lengths is None:
            return cls(None, [B] * T)
        if is_cupy_array(lengths):
            lengths = cp.asnumpy(lengths)  # once, before any time loop
        # the CPU engine's schedule (one counting sort for every backend and the C API;
        # imported here so that this module loads without the compiled extensions)
        from ._engine import lengths_schedule

        order, active = lengths_schedule(np.asarray(lengths).reshape(B), T, B)
        bt = active.tolist()
        if np.array_equal(order, np.arange(B)):
            return cls(None, bt)
        return cls(cp.asarray(order.astype(np.int64)), bt)

    def gather(self, cp, a):
        """Rows of (B, H) `a` in sorted order (always a fresh array)."""
        return a.copy() if self.perm is None else cp.take(a, self.perm, axis=0)

    def scatter(self, dst, a):
        """dst[perm[s]] = a[s] for a (B, H) `a` in sorted order."""
        if self.perm is None:
            dst[...] = a
        else:
            dst[self.perm] = a


def _launch_dims(n):
    grid = max(1, min((n + _BLOCK - 1) // _BLOCK, _MAX_GRID))
    return (grid,), (_BLOCK,)


def _folded_bias(cp, b_ih, b_hh, H, dtype):
    """``([b_ir + b_hr, b_iz + b_hz, b_in], b_hn)``; None biases count as zeros."""
    if b_ih is None and b_hh is None:
        return cp.zeros(3 * H, dtype=dtype), cp.zeros(H, dtype=dtype)
    if b_ih is None:
        b_ih = cp.zeros(3 * H, dtype=dtype)
    if b_hh is None:
        b_hh = cp.zeros(3 * H, dtype=dtype)
    bias = cp.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])
    return bias, cp.ascontiguousarray(b_hh[2 * H :])


def _steps(T, backwards):
    """Time steps in processing order."""
    return range(T - 1, -1, -1) if backwards else range(T)


# ---------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------


def gru_forward(
    x,
    h0,
    layers,
    *,
    hidden_size,
    num_directions,
    reverse,
    reset_after,
    lengths,
    batch_first,
    dropout_masks,
    need_cache,
):
    """Multi-layer, optionally bidirectional GRU over CuPy arrays (see :mod:`cygru._backend`).

    Returns ``(output, h_n, cache)``; `cache` (a ``ForwardCache``) is None unless
    `need_cache`.
    """
    cp = _cp()
    with _device_ctx(x):
        return _forward(
            cp,
            x,
            h0,
            layers,
            hidden_size,
            num_directions,
            reverse,
            reset_after,
            lengths,
            batch_first,
            dropout_masks,
            need_cache,
        )


def _forward(
    cp, x, h0, layers, H, D, reverse, reset_after, lengths, batch_first, dropout_masks, need_cache
):
    dtype = x.dtype
    kern = _get_kernels(dtype)
    L = len(layers)
    xt = cp.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x  # (T, B, I)
    T, B = int(xt.shape[0]), int(xt.shape[1])
    plan = _Plan.of_lengths(cp, lengths, T, B)
    grid, block = _launch_dims(B * H)
    B_, H_ = np.int64(B), np.int64(H)
    DH = D * H

    h_n = cp.empty((L * D, B, H), dtype=dtype)
    inputs, dirs = [], []
    inp = xt
    out = None
    for k in range(L):
        last = k == L - 1
        if last and batch_first:
            # written directly in the caller's layout: row b of step t at out[b, t]
            out = cp.empty((B, T, DH), dtype=dtype)
            out_stride = np.int64(T * DH)
        else:
            out = cp.empty((T, B, DH), dtype=dtype)
            out_stride = np.int64(DH)
        bf_out = last and batch_first
        inp2d = inp.reshape(T * B, inp.shape[2])
        layer_dirs = []
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = layers[k][d]
            backwards = d == 1 or reverse
            gi = cp.empty((T, B, 3 * H), dtype=dtype)
            _gemm("N", "T", inp2d, w_ih, gi.reshape(T * B, 3 * H))  # x @ W_ih^T
            bias, bhn = _folded_bias(cp, b_ih, b_hh, H, dtype)
            if h0 is None:
                h = cp.zeros((B, H), dtype=dtype)
            else:
                h = plan.gather(cp, h0[k * D + d])
            if need_cache:
                # r, z, n, extra (ghn or r*h), h_prev; each (T, B, H), sorted rows
                c = tuple(cp.empty((T, B, H), dtype=dtype) for _ in range(5))
            else:
                c = None

            def out_at(t, d=d):
                return out[:, t, d * H :] if bf_out else out[t, :, d * H :]

            if reset_after:
                gh = cp.empty((B, 3 * H), dtype=dtype)
                for t in _steps(T, backwards):
                    bt = plan.bt[t]
                    if bt:
                        _gemm("N", "T", h[:bt], w_hh, gh[:bt])  # h @ W_hh^T
                    cache_t = (
                        (None,) * 5 if c is None else (c[0][t], c[1][t], c[2][t], c[3][t], c[4][t])
                    )
                    kern.fwd_ra(
                        grid,
                        block,
                        (
                            B_,
                            H_,
                            np.int64(bt),
                            gi[t],
                            gh,
                            bias,
                            bhn,
                            h,
                            out_at(t),
                            out_stride,
                            plan.perm,
                        )
                        + cache_t,
                    )
            else:
                w_rz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]
                ghrz = cp.empty((B, 2 * H), dtype=dtype)
                ghn = cp.empty((B, H), dtype=dtype)
                rh_scratch = cp.empty((B, H), dtype=dtype) if c is None else None
                for t in _steps(T, backwards):
                    bt = plan.bt[t]
                    bt_ = np.int64(bt)
                    if bt:
                        _gemm("N", "T", h[:bt], w_rz, ghrz[:bt])  # h @ W_hh[:2H]^T
                    rh = rh_scratch if c is None else c[3][t]
                    kern.fwd_nr1(
                        grid,
                        block,
                        (
                            B_,
                            H_,
                            bt_,
                            gi[t],
                            ghrz,
                            bias,
                            h,
                            rh,
                            plan.perm,
                            None if c is None else c[0][t],
                            None if c is None else c[1][t],
                        ),
                    )
                    if bt:
                        _gemm("N", "T", rh[:bt], w_hn, ghn[:bt])  # (r*h) @ W_hn^T
                    kern.fwd_nr2(
                        grid,
                        block,
                        (
                            B_,
                            H_,
                            bt_,
                            gi[t],
                            ghn,
                            ghrz,
                            bias,
                            bhn,
                            h,
                            out_at(t),
                            out_stride,
                            plan.perm,
                            None if c is None else c[2][t],
                            None if c is None else c[4][t],
                        ),
                    )
            plan.scatter(h_n[k * D + d], h)
            layer_dirs.append(c)
        inputs.append(inp)
        dirs.append(layer_dirs)
        if not last:
            inp = out * dropout_masks[k] if dropout_masks else out

    cache = None
    if need_cache:
        # saved[k][d] = (r, z, n, ghn or r*h, h_prev), each (T, B, H) in sorted row order
        cache = ForwardCache(
            T=T,
            B=B,
            H=H,
            D=D,
            batch_first=batch_first,
            reverse=reverse,
            reset_after=reset_after,
            perm=plan.perm,
            active=plan.bt,
            layers=layers,
            inputs=inputs,
            saved=dirs,
            dropout_masks=dropout_masks,
        )
    return out, h_n, cache


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------


def gru_backward(cache, d_output, d_h_n, grads):
    """Backpropagation through time for a forward run with ``need_cache=True``.

    Adds the parameter gradients into `grads` (same structure as `layers`) and returns
    ``(dx, dh0)``.
    """
    cp = _cp()
    with _device_ctx(cache.inputs[0]):
        return _backward(cp, cache, d_output, d_h_n, grads)


def _backward(cp, cache, d_output, d_h_n, grads):
    H, D, T, B = cache.H, cache.D, cache.T, cache.B
    dtype = cache.dtype
    L = len(cache.layers)
    plan = _Plan(cache.perm, cache.active)
    kern = _get_kernels(dtype)
    grid, block = _launch_dims(B * H)
    B_, H_ = np.int64(B), np.int64(H)
    DH = D * H

    dh0 = cp.empty((L * D, B, H), dtype=dtype)
    d_above = d_output  # gradient reaching this layer's output, or None
    above_bf = cache.batch_first  # its layout (the last layer's may be batch-first)
    dx = None
    for k in range(L - 1, -1, -1):
        inp = cache.inputs[k]
        I_k = int(inp.shape[2])
        inp2d = inp.reshape(T * B, I_k)
        d_inp = cp.empty((T * B, I_k), dtype=dtype)
        dgi = cp.empty((T, B, 3 * H), dtype=dtype)
        dgi2d = dgi.reshape(T * B, 3 * H)
        if d_above is None:
            dout_stride = np.int64(0)
        else:
            dout_stride = np.int64(T * DH if above_bf else DH)
        for d in range(D):
            w_ih, w_hh, _, _ = cache.layers[k][d]
            g_w_ih, g_w_hh, g_b_ih, g_b_hh = grads[k][d]
            backwards = d == 1 or cache.reverse
            c_r, c_z, c_n, c_x, c_hp = cache.saved[k][d]
            if d_h_n is None:
                dh = cp.zeros((B, H), dtype=dtype)
            else:
                dh = plan.gather(cp, d_h_n[k * D + d])

            def dout_at(t, d=d, d_above=d_above, above_bf=above_bf):
                if d_above is None:
                    return None
                return d_above[:, t, d * H :] if above_bf else d_above[t, :, d * H :]

            # the reverse of the processing order
            rev = _steps(T, not backwards)
            if cache.reset_after:
                dgh = cp.empty((T, B, 3 * H), dtype=dtype)
                for t in rev:
                    bt = plan.bt[t]
                    kern.bwd_ra(
                        grid,
                        block,
                        (
                            B_,
                            H_,
                            np.int64(bt),
                            dout_at(t),
                            dout_stride,
                            plan.perm,
                            c_r[t],
                            c_z[t],
                            c_n[t],
                            c_x[t],
                            c_hp[t],
                            dh,
                            dgi[t],
                            dgh[t],
                        ),
                    )
                    if bt:
                        _gemm("N", "N", dgh[t][:bt], w_hh, dh[:bt], beta=1.0)  # += dgh @ W_hh
                dgh2d = dgh.reshape(T * B, 3 * H)
                _gemm("T", "N", dgh2d, c_hp.reshape(T * B, H), g_w_hh, beta=1.0)
                if g_b_hh is not None:
                    g_b_hh += dgh2d.sum(axis=0)
            else:
                w_rz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]
                dgh_rz = cp.empty((T, B, 2 * H), dtype=dtype)
                dghn = cp.empty((T, B, H), dtype=dtype)
                drh = cp.empty((B, H), dtype=dtype)
                for t in rev:
                    bt = plan.bt[t]
                    bt_ = np.int64(bt)
                    kern.bwd_nr1(
                        grid,
                        block,
                        (
                            B_,
                            H_,
                            bt_,
                            dout_at(t),
                            dout_stride,
                            plan.perm,
                            c_z[t],
                            c_n[t],
                            c_hp[t],
                            dh,
                            dgi[t],
                            dgh_rz[t],
                            dghn[t],
                        ),
                    )
                    if bt:
                        _gemm("N", "N", dghn[t][:bt], w_hn, drh[:bt])  # d(r*h)
                        kern.bwd_nr2(
                            grid,
                            block,
                            (B_, H_, bt_, drh, plan.perm, c_r[t], c_hp[t], dh, dgi[t], dgh_rz[t]),
                        )
                        _gemm("N", "N", dgh_rz[t][:bt], w_rz, dh[:bt], beta=1.0)
                dgh_rz2d = dgh_rz.reshape(T * B, 2 * H)
                dghn2d = dghn.reshape(T * B, H)
                _gemm("T", "N", dgh_rz2d, c_hp.reshape(T * B, H), g_w_hh[: 2 * H], beta=1.0)
                _gemm("T", "N", dghn2d, c_x.reshape(T * B, H), g_w_hh[2 * H :], beta=1.0)
                if g_b_hh is not None:
                    g_b_hh[: 2 * H] += dgh_rz2d.sum(axis=0)
                    g_b_hh[2 * H :] += dghn2d.sum(axis=0)
            # input side, over all T*B rows at once
            _gemm("T", "N", dgi2d, inp2d, g_w_ih, beta=1.0)  # dW_ih += dgi^T x
            if g_b_ih is not None:
                g_b_ih += dgi2d.sum(axis=0)
            _gemm("N", "N", dgi2d, w_ih, d_inp, beta=0.0 if d == 0 else 1.0)  # dx (+)= dgi W_ih
            plan.scatter(dh0[k * D + d], dh)
        d_inp = d_inp.reshape(T, B, I_k)
        if k > 0:
            masks = cache.dropout_masks
            d_above = d_inp * masks[k - 1] if masks else d_inp
            above_bf = False
        else:
            dx = cp.ascontiguousarray(d_inp.transpose(1, 0, 2)) if cache.batch_first else d_inp
    return dx, dh0


# ---------------------------------------------------------------------------------------------
# one step (GRUCell)
# ---------------------------------------------------------------------------------------------


def cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after):
    """One GRU step on CuPy arrays: x (B, I), h (B, H) or None; returns a fresh (B, H)."""
    cp = _cp()
    with _device_ctx(x):
        dtype = x.dtype
        kern = _get_kernels(dtype)
        B, H = int(x.shape[0]), int(w_hh.shape[1])
        grid, block = _launch_dims(B * H)
        B_, H_ = np.int64(B), np.int64(H)
        gi = cp.empty((B, 3 * H), dtype=dtype)
        _gemm("N", "T", x, w_ih, gi)
        bias, bhn = _folded_bias(cp, b_ih, b_hh, H, dtype)
        state = cp.zeros((B, H), dtype=dtype) if h is None else h.copy()
        out = cp.empty((B, H), dtype=dtype)
        if reset_after:
            if h is None:
                gh = cp.zeros((B, 3 * H), dtype=dtype)
            else:
                gh = cp.empty((B, 3 * H), dtype=dtype)
                _gemm("N", "T", state, w_hh, gh)
            kern.fwd_ra(
                grid, block, (B_, H_, B_, gi, gh, bias, bhn, state, out, H_, None) + (None,) * 5
            )
        else:
            ghrz = cp.empty((B, 2 * H), dtype=dtype)
            if h is None:
                ghrz.fill(0)
            else:
                _gemm("N", "T", state, w_hh[: 2 * H], ghrz)
            rh = cp.empty((B, H), dtype=dtype)
            kern.fwd_nr1(grid, block, (B_, H_, B_, gi, ghrz, bias, state, rh, None, None, None))
            ghn = cp.empty((B, H), dtype=dtype)
            _gemm("N", "T", rh, w_hh[2 * H :], ghn)
            kern.fwd_nr2(
                grid,
                block,
                (B_, H_, B_, gi, ghn, ghrz, bias, bhn, state, out, H_, None, None, None),
            )
        return out
