# cython: language_level=3
"""CPU backend: the Python entry over the engine (cygru/_engine.pyx).

Implements the backend contract (gru_forward / gru_backward / cell_forward). The
arguments arrive validated by functional.py: dtype float32 or float64 (all alike),
C-contiguous, shapes checked, sizes that fit BLAS's int. This layer decides the thread
count, allocates the outputs and one workspace per layer call (its size from the
engine's query), fills the engine's structs and releases the GIL for whole time loops.
"""
import contextlib
import operator
import os
import threading

import numpy as np
cimport numpy as cnp
from libc.stdlib cimport malloc, free
from cygru._kernels cimport gru_cell_forward, cell_work_size
from cygru._engine cimport (cygru_problem, cygru_dir_weights, cygru_forward_io,
                            cygru_backward_io, cygru_dir_grads, forward_work_size,
                            backward_work_size, layer_forward, layer_backward)
from cygru._engine import PIECES, lengths_schedule as _schedule
from cygru._backend import ForwardCache
cimport openmp

cnp.import_array()

# Steps per input-projection chunk, for tests: 0 is the engine's rule (chunk_steps).
# Results never depend on it.
_CHUNK_STEPS = 0
# Pieces per thread of a threaded direction (the engine's PIECES_PER_THREAD).
PIECES_PER_THREAD = PIECES


_num_threads = 0            # 0: not yet decided (see get_num_threads)

# The most threads cygru accepts (set_num_threads, CYGRU_NUM_THREADS); the default,
# the usable cores, is capped here too. Each thread claims pieces of every step's work
# (two per thread), so far more threads than cores only adds claims.
MAX_THREADS = 256


def _parse_thread_count(value, source, from_env=False):
    """`value` (an int-like, or with `from_env` the string of an environment variable)
    as a thread count in [1, MAX_THREADS]; a ValueError naming `source` otherwise."""
    if from_env:
        try:
            n = int(value.strip())
        except ValueError:
            raise ValueError(f"{source} must be a positive integer, got {value!r}") from None
    else:
        if (isinstance(value, (bool, np.bool_, str, bytes))
                or not hasattr(type(value), "__index__")):
            raise ValueError(f"{source}: expected a positive integer, got "
                             f"{type(value).__name__} {value!r}")
        try:
            n = operator.index(value)
        except TypeError:              # an array of several numbers, say
            raise ValueError(f"{source}: expected a positive integer, got "
                             f"{type(value).__name__} {value!r}") from None
    if n < 1 or n > MAX_THREADS:
        raise ValueError(f"{source}: expected a positive integer of at most {MAX_THREADS}, "
                         f"got {n}")
    return n


_cores = 0                  # the usable cores, read once (a system call, not per call)


def _usable_cores():
    global _cores
    if _cores == 0:
        try:
            _cores = len(os.sched_getaffinity(0))
        except AttributeError:
            _cores = os.cpu_count() or 1
    return _cores


def get_num_threads():
    """See cygru.get_num_threads."""
    global _num_threads
    if _num_threads == 0:
        env = os.environ.get("CYGRU_NUM_THREADS", "").strip()
        if env:
            _num_threads = _parse_thread_count(env, "CYGRU_NUM_THREADS", from_env=True)
    if _num_threads:
        return _num_threads
    n = getattr(_local, "n", 0)
    return n if n else _default_threads()


def _default_threads():
    """The default: the usable cores, limited by OpenMP's own setting for the calling
    thread, which is where OMP_NUM_THREADS (Dask workers set it to 1) and
    threadpoolctl's OpenMP limit (``threadpool_limits(1, user_api="openmp")``) arrive,
    as scikit-learn's compiled code reads them. Read at every call, so a limit that
    is set or lifted later takes effect."""
    return max(1, min(_usable_cores(), openmp.omp_get_max_threads(), MAX_THREADS))


def set_num_threads(n):
    """See cygru.set_num_threads."""
    global _num_threads
    # None: back to the default (CYGRU_NUM_THREADS, read again, else the cores)
    _num_threads = 0 if n is None else _parse_thread_count(n, "cygru.set_num_threads")


# A count of the calling Python thread's own (cygru.dask's threads=k, around each task);
# 0: none. A count fixed process-wide (set_num_threads, CYGRU_NUM_THREADS) still wins.
_local = threading.local()


@contextlib.contextmanager
def _thread_count(n):
    """Within the block, calls made on this Python thread use `n` threads, as
    set_num_threads(n) would (whatever the cores, and not shared with concurrent calls),
    unless a count is fixed process-wide; the previous count returns on exit."""
    n = _parse_thread_count(n, "cygru threads")
    saved = getattr(_local, "n", 0)
    _local.n = n
    try:
        yield
    finally:
        _local.n = saved


# A direction is split over threads only while each thread keeps at least this many
# multiply-adds per step (~0.4 us of work): below it a barrier per step costs more than
# the split saves. Measured on 2 cores (T=50, B=1, I=64, float32): H=64 (12k in all)
# ran 70 us on one thread, 75 on two; H=96 (28k) 127 vs 101; H=128 (49k) 204 vs 145.
# A one-row step is bound by reading W_hh from L2, so two cores' caches halve it.
MIN_WORK_PER_THREAD = 12288


# cygru calls running now in this process (Python threads), for the default thread
# count: two calls at once each take half of the default, so that together they are
# not slower than one after the other (each thread of a call meets its partners every
# step; twice as many threads as cores would wait on each other).
_active_calls = 0
_active_lock = threading.Lock()


def _after_fork_in_child():
    """The child of a fork has only the forking thread: no call of another thread runs
    there, and a lock another thread held at the fork would never be released."""
    global _active_calls, _active_lock
    _active_calls = 0
    _active_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _ActiveCall:
    """Counts a running call in _active_calls (a context manager)."""

    def __enter__(self):
        global _active_calls
        with _active_lock:
            _active_calls += 1

    def __exit__(self, *exc):
        global _active_calls
        with _active_lock:
            _active_calls -= 1


def _planned_threads(int n, int B, int H, int D, dtype):
    """Threads a layer call would use out of n: only while every thread keeps
    MIN_WORK_PER_THREAD multiply-adds per step (the result is the same for any count)."""
    if n <= 1 or <Py_ssize_t>B * 3 * H * H < MIN_WORK_PER_THREAD:
        return 1          # too little work per step even for a thread per direction
    per_dir = max(1, n // D)
    while per_dir > 1 and (<Py_ssize_t>B * 3 * H * H) // per_dir < MIN_WORK_PER_THREAD:
        per_dir -= 1
    return per_dir * D if D <= n else 1


def _threads_for(int B, int H, int D, dtype):
    """Threads for a layer call: the plan for the configured count; calls running at
    once that share the default get fewer threads each, which changes how fast, never
    the bits."""
    n = get_num_threads()
    planned = _planned_threads(n, B, H, D, dtype)
    if planned > 1 and _num_threads == 0 and not getattr(_local, "n", 0) and _active_calls > 1:
        return max(1, min(planned, n // _active_calls))
    return planned


cdef inline void* _ptr(a):
    """Data address of a C-contiguous ndarray, or NULL for None (the caller keeps `a`
    alive)."""
    if a is None:
        return NULL
    if not isinstance(a, cnp.ndarray) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a):
        raise TypeError("cygru internal error: expected a C-contiguous ndarray")
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef void _problem(cygru_problem* pb, int T, int B, int I, int H, int D, dtype,
                   bint reset_after, bint reverse, perm, active) except *:
    pb.T, pb.B, pb.In, pb.H, pb.D = T, B, I, H, D
    pb.itemsize = dtype.itemsize
    pb.reset_after, pb.reverse = reset_after, reverse
    pb.perm = <const Py_ssize_t*>_ptr(perm)
    pb.active = <const int*>_ptr(active)
    pb.chunk = _CHUNK_STEPS


cdef void _weights(cygru_dir_weights* w, weights) except *:
    cdef int d
    for d in range(len(weights)):
        w[d].w_ih = _ptr(weights[d][0])
        w[d].w_hh = _ptr(weights[d][1])
        w[d].b_ih = _ptr(weights[d][2])
        w[d].b_hh = _ptr(weights[d][3])


def _forward_layer(x, weights, out, Py_ssize_t ts, Py_ssize_t bs, states, perm, active,
                   int T, int B, int I, int H, bint reverse, bint reset_after, caches,
                   hprevs, int n_threads):
    """Every direction of one layer (weights: D tuples (w_ih, w_hh, b_ih, b_hh), biases
    never None) on n_threads threads: states (D, B, H) sorted go h0 -> h_n; caches
    (D, T, B, 4H) and hprevs (D, T, B, H), or None, are filled for the backward."""
    cdef cygru_problem pb
    cdef cygru_dir_weights w[2]
    cdef cygru_forward_io io
    _problem(&pb, T, B, I, H, len(weights), x.dtype, reset_after, reverse, perm, active)
    _weights(w, weights)
    io.x = _ptr(x)
    io.out, io.out_ts, io.out_bs = _ptr(out), ts, bs
    io.states = _ptr(states)
    io.caches, io.hprevs = _ptr(caches), _ptr(hprevs)
    work = np.empty(forward_work_size(&pb, n_threads), np.uint8)
    cdef void* wp = _ptr(work)
    with nogil:
        layer_forward(&pb, w, &io, wp, n_threads)


def _backward_layer(x, weights, d_out, Py_ssize_t d_ts, Py_ssize_t d_bs, dstates, perm,
                    active, int T, int B, int I, int H, bint reverse, bint reset_after,
                    caches, hprevs, grads, int n_threads):
    """Backpropagate every direction of one layer (threads as in _forward_layer): dstates
    (D, B, H) sorted go dL/dh_n -> dL/dh0, the weight gradients are added into `grads`
    (D tuples (gw_ih, gw_hh, gb_ih or None, gb_hh or None)); returns dL/dx (T*B, I)."""
    cdef cygru_problem pb
    cdef cygru_dir_weights w[2]
    cdef cygru_backward_io io
    cdef cygru_dir_grads g[2]
    cdef int d
    _problem(&pb, T, B, I, H, len(weights), x.dtype, reset_after, reverse, perm, active)
    _weights(w, weights)
    for d in range(len(grads)):
        g[d].gw_ih, g[d].gw_hh = _ptr(grads[d][0]), _ptr(grads[d][1])
        g[d].gb_ih, g[d].gb_hh = _ptr(grads[d][2]), _ptr(grads[d][3])
    dx = np.empty((T * B, I), x.dtype)
    io.x = _ptr(x)
    io.d_out, io.d_ts, io.d_bs = _ptr(d_out), d_ts, d_bs
    io.dstates = _ptr(dstates)
    io.caches, io.hprevs = _ptr(caches), _ptr(hprevs)
    io.dx = _ptr(dx)
    work = np.empty(backward_work_size(&pb, n_threads), np.uint8)
    cdef void* wp = _ptr(work)
    with nogil:
        layer_backward(&pb, w, &io, g, wp, n_threads)
    return dx


def gru_forward(x, h0, layers, **options):
    """The backend contract's forward (see functional.SequenceCall.run)."""
    with _ActiveCall():
        return _gru_forward(x, h0, layers, **options)


def gru_backward(cache, d_output, d_h_n, grads):
    """The backend contract's backward (see functional.SequenceCall.backward)."""
    with _ActiveCall():
        return _gru_backward(cache, d_output, d_h_n, grads)


def _gru_forward(x, h0, layers, *, hidden_size, num_directions, reverse, reset_after,
                 lengths, batch_first, dropout_masks, need_cache):
    dtype = x.dtype
    # sizes as Py_ssize_t: products such as T*D*H (a batch_first stride) exceed C int
    cdef Py_ssize_t H = hidden_size, D = num_directions, L = len(layers)
    cdef Py_ssize_t T, B, k, d, I
    if batch_first:
        B, T = x.shape[0], x.shape[1]
        x_tm = np.ascontiguousarray(x.transpose(1, 0, 2))
    else:
        T, B = x.shape[0], x.shape[1]
        x_tm = x
    perm, active = _schedule(lengths, T, B)
    n_threads = _threads_for(B, H, D, dtype)
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
        weights = []
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = layers[k][d]
            weights.append((w_ih, w_hh, zero_bias if b_ih is None else b_ih,
                            zero_bias if b_hh is None else b_hh))
        if h0 is not None:
            states = np.ascontiguousarray(h0[k * D:(k + 1) * D][:, perm])
        else:
            states = np.zeros((D, B, H), dtype)
        caches = hprevs = None
        if need_cache:
            caches = np.zeros((D, T, B, 4 * H), dtype)
            hprevs = np.zeros((D, T, B, H), dtype)
        _forward_layer(layer_in, weights, out, ts, bs, states, perm, active, T, B, I, H,
                       bool(reverse), bool(reset_after), caches, hprevs, n_threads)
        h_n[k * D:(k + 1) * D][:, perm] = states
        inputs.append(layer_in)
        saved.append((caches, hprevs) if need_cache else None)
        if k < L - 1:
            layer_in = out.reshape(T * B, D * H)
            if dropout_masks is not None:
                layer_in = layer_in * dropout_masks[k].reshape(T * B, D * H)
    if not need_cache:
        return out, h_n, None
    # saved[k]: layer k's (caches (D, T, B, 4H), hprevs (D, T, B, H)) in sorted rows
    return out, h_n, ForwardCache(T=T, B=B, H=H, D=D, batch_first=batch_first,
                                  reverse=reverse, reset_after=reset_after, perm=perm,
                                  active=active, layers=layers, inputs=inputs, saved=saved,
                                  dropout_masks=dropout_masks, used=False)


def _gru_backward(cache, d_output, d_h_n, grads):
    c = cache
    cdef Py_ssize_t T = c.T, B = c.B, H = c.H, D = c.D, L = len(c.layers)
    cdef Py_ssize_t k, I
    dtype = c.inputs[0].dtype
    n_threads = _threads_for(B, H, D, dtype)
    dh0 = np.empty((L * D, B, H), dtype)
    zero_bias = np.zeros(3 * H, dtype)
    # the last layer's upstream gradient, in the caller's layout
    d_out = d_output
    if c.batch_first:
        d_ts, d_bs = D * H, T * D * H
    else:
        d_ts, d_bs = B * D * H, D * H
    for k in range(L - 1, -1, -1):
        x_k = c.inputs[k]
        I = x_k.shape[1]
        if d_h_n is not None:
            dstates = np.ascontiguousarray(d_h_n[k * D:(k + 1) * D][:, c.perm])
        else:
            dstates = np.zeros((D, B, H), dtype)
        weights = [(w_ih, w_hh, zero_bias, zero_bias) for w_ih, w_hh, _, _ in c.layers[k]]
        caches, hprevs = c.saved[k]
        dx = _backward_layer(x_k, weights, d_out, d_ts, d_bs, dstates, c.perm, c.active,
                             T, B, I, H, bool(c.reverse), bool(c.reset_after), caches,
                             hprevs, grads[k], n_threads)
        dh0[k * D:(k + 1) * D][:, c.perm] = dstates
        if k > 0:
            if c.dropout_masks is not None:
                dx *= c.dropout_masks[k - 1].reshape(T * B, D * H)
            d_out = dx
            d_ts, d_bs = B * D * H, D * H
    dx = dx.reshape(T, B, -1)
    if c.batch_first:
        dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
    return dx, dh0


cdef inline void* _data(a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, bint reset_after):
    """One step for B rows (the latency path: raw pointers, no memoryviews).

    The arrays are validated C-contiguous arrays of one dtype (functional.py)."""
    cdef cnp.npy_intp* xd = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef int B = xd[0], I = xd[1], H = cnp.PyArray_DIMS(<cnp.ndarray>w_hh)[1]
    cdef cnp.npy_intp dims[2]
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    cdef bint single = typenum == cnp.NPY_FLOAT32
    dims[0] = B
    dims[1] = H
    if h is None:
        h = cnp.PyArray_ZEROS(2, dims, typenum, 0)
    if b_ih is None or b_hh is None:
        dims[0] = 3 * H
        zeros = cnp.PyArray_ZEROS(1, dims, typenum, 0)
        b_ih = zeros if b_ih is None else b_ih
        b_hh = zeros if b_hh is None else b_hh
        dims[0] = B
    out = cnp.PyArray_EMPTY(2, dims, typenum, 0)
    cdef size_t itemsize = 4 if single else 8
    # small workspaces live on the stack; large ones are allocated
    cdef double stack_work[2048]
    cdef Py_ssize_t need = cell_work_size(B, H)
    cdef void* work = <void*>stack_work
    if need * itemsize > sizeof(stack_work):
        work = malloc(need * itemsize)
        if work == NULL:
            raise MemoryError("cygru: could not allocate the GRUCell workspace")
    cdef void* xp = _data(x)
    cdef void* hp = _data(h)
    cdef void* wi = _data(w_ih)
    cdef void* wh = _data(w_hh)
    cdef void* bi = _data(b_ih)
    cdef void* bh = _data(b_hh)
    cdef void* op = _data(out)
    with nogil:
        if single:
            gru_cell_forward(B, I, H, <float*>xp, <float*>hp, <float*>wi, <float*>wh,
                             <float*>bi, <float*>bh, reset_after, <float*>op, <float*>work)
        else:
            gru_cell_forward(B, I, H, <double*>xp, <double*>hp, <double*>wi, <double*>wh,
                             <double*>bi, <double*>bh, reset_after, <double*>op, <double*>work)
    if work != <void*>stack_work:
        free(work)
    return out
