# cython: language_level=3
"""CPU backend: def entry points over the nogil kernels.

Implements the backend contract (gru_forward / gru_backward / cell_forward). The
arguments arrive validated by functional.py: dtype float32 or float64 (all alike),
C-contiguous, shapes checked, sizes that fit BLAS's int. This layer allocates the
outputs and scratch, releases the GIL and runs whole time loops in the kernels.
"""
import numpy as np
cimport numpy as cnp
from libc.stdlib cimport malloc, free
from cython cimport floating
from cygru._blas cimport gemm
from cygru._kernels cimport (gru_direction_forward, gru_direction_backward,
                             gru_cell_forward, cell_work_size)

cnp.import_array()

# Scratch for the input projection of one direction is at most this many bytes (or
# one step, if a single step is larger): long sequences are projected in chunks of
# steps, so memory beyond the output does not grow with T.
PROJECTION_CHUNK_BYTES = 2 << 20


def _chunk_steps(int T, int B, int H, int itemsize):
    cdef Py_ssize_t per_step = <Py_ssize_t>B * 3 * H * itemsize
    if per_step <= 0:
        return T
    return int(max(1, min(T, PROJECTION_CHUNK_BYTES // per_step)))


def _schedule(lengths, int T, int B):
    """Sorted-batch schedule: perm (sorted row -> batch row) and active rows per step."""
    if lengths is None:
        return np.arange(B, dtype=np.intp), np.full(T, B, dtype=np.intc)
    perm = np.argsort(-lengths, kind="stable").astype(np.intp)
    # active[t] = #{b : L_b > t} = B - #{b : L_b <= t}
    ended = np.cumsum(np.bincount(lengths, minlength=T + 1))[:T]
    return perm, (B - ended).astype(np.intc)


def _zeros_if_none(a, shape, dtype):
    return np.zeros(shape, dtype) if a is None else a


def _forward_direction(floating[::1] x, floating[::1] w_ih, floating[::1] w_hh,
                       floating[::1] b_ih, floating[::1] b_hh,
                       floating[::1] out, Py_ssize_t out_off, Py_ssize_t ts, Py_ssize_t bs,
                       floating[::1] state, Py_ssize_t[::1] perm, int[::1] active,
                       int T, int B, int I, int H, bint reverse, bint reset_after, int chunk,
                       cache, hprev):
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] gi_buf = np.empty(<Py_ssize_t>chunk * B * 3 * H, dtype)
    cdef floating[::1] gh_buf = np.empty(<Py_ssize_t>B * 3 * H, dtype)
    cdef floating[::1] rh_buf = np.empty(<Py_ssize_t>B * H, dtype)
    cdef floating[::1] cache_v, hprev_v
    cdef floating* cache_p = NULL
    cdef floating* hprev_p = NULL
    if cache is not None:
        cache_v = cache.reshape(-1)
        hprev_v = hprev.reshape(-1)
        cache_p = &cache_v[0]
        hprev_p = &hprev_v[0]
    with nogil:
        gru_direction_forward(T, B, I, H, &x[0], &w_ih[0], &w_hh[0], &b_ih[0], &b_hh[0],
                              &out[0] + out_off, ts, bs, &state[0], &perm[0], &active[0],
                              reverse, reset_after, chunk, &gi_buf[0], &gh_buf[0], &rh_buf[0],
                              cache_p, hprev_p)


def _backward_direction(floating[::1] x, floating[::1] w_ih, floating[::1] w_hh,
                        d_out, Py_ssize_t d_off, Py_ssize_t d_ts, Py_ssize_t d_bs,
                        floating[::1] dstate, Py_ssize_t[::1] perm, int[::1] active,
                        int T, int B, int I, int H, bint reverse, bint reset_after,
                        floating[::1] cache, floating[::1] hprev,
                        floating[::1] dgi, Py_ssize_t dgi_off, int ldgi,
                        floating[::1] gw_ih, floating[::1] gw_hh, gb_ih, gb_hh):
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] dgh = np.zeros(<Py_ssize_t>T * B * 3 * H, dtype)
    cdef floating[::1] drh = np.empty(<Py_ssize_t>B * H, dtype)
    cdef floating[::1] d_out_v, gb_ih_v, gb_hh_v
    cdef const floating* d_out_p = NULL
    cdef floating* gb_ih_p = NULL
    cdef floating* gb_hh_p = NULL
    if d_out is not None:
        d_out_v = d_out.reshape(-1)
        d_out_p = &d_out_v[0] + d_off
    if gb_ih is not None:
        gb_ih_v = gb_ih
        gb_hh_v = gb_hh
        gb_ih_p = &gb_ih_v[0]
        gb_hh_p = &gb_hh_v[0]
    with nogil:
        gru_direction_backward(T, B, I, H, &x[0], &w_ih[0], &w_hh[0], d_out_p, d_ts, d_bs,
                               &dstate[0], &perm[0], &active[0], reverse, reset_after,
                               &cache[0], &hprev[0], &dgi[0] + dgi_off, ldgi, &dgh[0], &drh[0],
                               &gw_ih[0], &gw_hh[0], gb_ih_p, gb_hh_p)


def _input_grad(floating[::1] dgi, int ldgi, weights, int rows, int H, int I):
    """dX (rows x I) = Σ_d dgi[:, d*3H:(d+1)*3H] @ W_ih_d: the input gradient, one GEMM per direction."""
    dtype = np.float32 if floating is float else np.float64
    dx = np.empty((rows, I), dtype)
    cdef floating[:, ::1] dx_v = dx
    cdef floating[::1] w
    cdef int d
    for d, w_ih in enumerate(weights):
        w = w_ih.reshape(-1)
        with nogil:
            gemm(False, False, rows, I, 3 * H, <floating>1, &dgi[0] + d * 3 * H, ldgi,
                 &w[0], I, <floating>(1 if d > 0 else 0), &dx_v[0, 0], I)
    return dx


class _Cache:
    """What gru_backward needs from gru_forward (opaque to callers)."""
    __slots__ = ("T", "B", "H", "D", "batch_first", "reverse", "reset_after", "perm",
                 "active", "layers", "inputs", "saved", "dropout_masks", "used")


def gru_forward(x, h0, layers, *, hidden_size, num_directions, reverse, reset_after,
                lengths, batch_first, dropout_masks, need_cache):
    dtype = x.dtype
    cdef int H = hidden_size, D = num_directions, L = len(layers)
    cdef int T, B, k, d, I
    if batch_first:
        B, T = x.shape[0], x.shape[1]
        x_tm = np.ascontiguousarray(x.transpose(1, 0, 2))
    else:
        T, B = x.shape[0], x.shape[1]
        x_tm = x
    perm, active = _schedule(lengths, T, B)
    chunk = _chunk_steps(T, B, H, dtype.itemsize)
    h_n = np.empty((L * D, B, H), dtype)
    zero_bias = np.zeros(3 * H, dtype)
    layer_in = x_tm.reshape(T * B, -1)
    inputs, saved = [], []
    for k in range(L):
        I = layer_in.shape[1]
        if k == L - 1 and batch_first:
            out = np.empty((B, T, D * H), dtype)
            ts, bs = D * H, T * D * H
        else:
            out = np.empty((T, B, D * H), dtype)
            ts, bs = B * D * H, D * H
        out_flat = out.reshape(-1)
        per_dir = []
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = layers[k][d]
            state = h0[k * D + d][perm] if h0 is not None else np.zeros((B, H), dtype)
            if need_cache:
                cache = np.zeros((T, B, 4 * H), dtype)
                hprev = np.zeros((T, B, H), dtype)
            else:
                cache = hprev = None
            _forward_direction(layer_in.reshape(-1), w_ih.reshape(-1), w_hh.reshape(-1),
                               zero_bias if b_ih is None else b_ih,
                               zero_bias if b_hh is None else b_hh,
                               out_flat, d * H, ts, bs, state.reshape(-1), perm, active,
                               T, B, I, H, bool(reverse or d == 1), bool(reset_after), chunk,
                               cache, hprev)
            h_n[k * D + d, perm] = state
            per_dir.append((cache, hprev))
        inputs.append(layer_in)
        saved.append(per_dir)
        if k < L - 1:
            layer_in = out.reshape(T * B, D * H)
            if dropout_masks is not None:
                layer_in = layer_in * dropout_masks[k].reshape(T * B, D * H)
    if not need_cache:
        return out, h_n, None
    c = _Cache()
    c.T, c.B, c.H, c.D = T, B, H, D
    c.batch_first, c.reverse, c.reset_after = batch_first, reverse, reset_after
    c.perm, c.active, c.layers = perm, active, layers
    c.inputs, c.saved, c.dropout_masks, c.used = inputs, saved, dropout_masks, False
    return out, h_n, c


def gru_backward(cache, d_output, d_h_n, grads):
    c = cache
    cdef int T = c.T, B = c.B, H = c.H, D = c.D, L = len(c.layers)
    cdef int k, d, I
    dtype = c.inputs[0].dtype
    dh0 = np.empty((L * D, B, H), dtype)
    # the last layer's upstream gradient, in the caller's layout
    d_out = None if d_output is None else d_output.reshape(-1)
    if c.batch_first:
        d_ts, d_bs = D * H, T * D * H
    else:
        d_ts, d_bs = B * D * H, D * H
    for k in range(L - 1, -1, -1):
        x_k = c.inputs[k]
        I = x_k.shape[1]
        dgi = np.zeros(T * B * D * 3 * H, dtype)
        for d in range(D):
            w_ih, w_hh, _, _ = c.layers[k][d]
            gw_ih, gw_hh, gb_ih, gb_hh = grads[k][d]
            cache_kd, hprev_kd = c.saved[k][d]
            dstate = d_h_n[k * D + d][c.perm] if d_h_n is not None else np.zeros((B, H), dtype)
            _backward_direction(x_k.reshape(-1), w_ih.reshape(-1), w_hh.reshape(-1),
                                d_out, d * H, d_ts, d_bs, dstate.reshape(-1), c.perm, c.active,
                                T, B, I, H, bool(c.reverse or d == 1), bool(c.reset_after),
                                cache_kd.reshape(-1), hprev_kd.reshape(-1), dgi, d * 3 * H,
                                D * 3 * H, gw_ih.reshape(-1), gw_hh.reshape(-1), gb_ih, gb_hh)
            dh0[k * D + d, c.perm] = dstate
        dx = _input_grad(dgi, D * 3 * H, [c.layers[k][d][0] for d in range(D)], T * B, H, I)
        if k > 0:
            if c.dropout_masks is not None:
                dx *= c.dropout_masks[k - 1].reshape(T * B, D * H)
            d_out = dx.reshape(-1)
            d_ts, d_bs = B * D * H, D * H
    dx = dx.reshape(T, B, -1)
    if c.batch_first:
        dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
    return dx, dh0


def _cell(floating[::1] x, floating[::1] h, floating[::1] w_ih, floating[::1] w_hh,
          floating[::1] b_ih, floating[::1] b_hh, bint reset_after, int B, int I, int H, out):
    cdef floating[::1] out_v = out.reshape(-1)
    cdef floating* work = <floating*>malloc(cell_work_size(B, H) * sizeof(floating))
    if work == NULL:
        raise MemoryError("cygru: could not allocate the GRUCell workspace")
    with nogil:
        gru_cell_forward(B, I, H, &x[0], &h[0], &w_ih[0], &w_hh[0], &b_ih[0], &b_hh[0],
                         reset_after, &out_v[0], work)
    free(work)


def cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after):
    cdef int B = x.shape[0], I = x.shape[1], H = w_hh.shape[1]
    dtype = x.dtype
    if h is None:
        h = np.zeros((B, H), dtype)
    if b_ih is None:
        b_ih = np.zeros(3 * H, dtype)
    if b_hh is None:
        b_hh = np.zeros(3 * H, dtype)
    out = np.empty((B, H), dtype)
    _cell(x.reshape(-1), h.reshape(-1), w_ih.reshape(-1), w_hh.reshape(-1), b_ih, b_hh,
          bool(reset_after), B, I, H, out)
    return out
