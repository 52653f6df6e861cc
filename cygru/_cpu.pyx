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
from libc.string cimport memcpy, memset
from cygru._engine cimport (cygru_problem, cygru_dir_weights, cygru_forward_io,
                            cygru_backward_io, cygru_dir_grads, forward_work_size,
                            backward_work_size, layer_forward, layer_backward,
                            step_work_size, step_forward, WFORMAT_FLOAT,
                            quant_matrix_size)
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


# os.environ's own store (bytes keys on POSIX), which os.environ[...] = / del / putenv
# through os.environ keep current: one dict lookup, where os.environ.get() costs about a
# microsecond of Python (encoding the key, the Mapping machinery) on every call.
_environ_data = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey("CYGRU_NUM_THREADS") if _environ_data is not None else None


def _read_env():
    """CYGRU_NUM_THREADS as os.environ holds it now ("" when unset)."""
    if _environ_data is None or type(_ENV_KEY) is not bytes:
        return os.environ.get("CYGRU_NUM_THREADS", "")
    raw = _environ_data.get(_ENV_KEY)
    return "" if raw is None else os.fsdecode(raw)


def get_num_threads():
    """See cygru.get_num_threads."""
    global _num_threads
    if _num_threads == 0:
        env = _read_env().strip()
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


def _kernel_rows_now():
    """The batch size that picks the kernel of this Python thread's calls (0: each call's
    own B; see _kernel_rows)."""
    return getattr(_local, "kernel_rows", 0)


@contextlib.contextmanager
def _kernel_rows(n):
    """Within the block, calls made on this Python thread pick their products' kernel (the
    dot kernel up to DOT_MAX_B rows, the packed one above) as a call of `n` rows would,
    whatever their own batch size. cygru.dask runs each chunk of a batch this way, so a
    chunk's rows get the bits one call over the whole batch gives them (the two kernels
    round differently; each element's arithmetic depends only on the kernel)."""
    saved = getattr(_local, "kernel_rows", 0)
    _local.kernel_rows = int(n)
    try:
        yield
    finally:
        _local.kernel_rows = saved


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


# -- how small a call runs alone ------------------------------------------------------------
# A call wakes the worker pool only when its work is worth waking a thread for: its
# total multiply-adds (T*B*3H*(I+H) per direction and layer: _call_work), shared by two
# threads, must give each at least WAKE_COST * MIN_WORK_PER_THREAD. Below that it runs on
# the calling thread: no job for the pool, no wake-up, no wait (and, in the lean entry
# below, the GIL kept for the smallest: see KEEP_GIL_WORK). Waking a sleeping worker
# costs tens of microseconds (the pool's workers spin CYGRU_SPIN_US, 50 us, after a job,
# then sleep on a futex; these figures were taken with libgomp's team, whose threads slept
# alike), and under load a scheduler tick (4 ms: the one-step p99 of issue 24); a call
# whose whole arithmetic is a few microseconds cannot win that back. Measured on the
# 2-vCPU Xeon, B=1, I=64, float32, 1 vs 2 threads (tools/wake_cost.py, the lowest of the
# blocks' medians on the shared machine; back to back, and after a 2 ms pause as frames
# of a stream come):
#   H=128, T=1  (74k multiply-adds):  15 vs 65 us;        after a pause 25 vs 73
#   H=256, T=1  (246k):               55 vs 112-122 us;   after a pause 79 vs 131
#   H=128, T=16 (1.18M):              42 vs 37-40 us;     after a pause 47-67 vs 82-105
#   H=256, T=8  (1.97M):              96-101 vs 57-62 us; after a pause 125-154 vs 183-208
# and on the idle machine (T=50, MIN_WORK_PER_THREAD's rows): H=64 (1.23M) 70 vs 75 us,
# H=96 (2.30M) 127 vs 101, H=128 (3.69M) 204 vs 145. Two threads start to pay between
# 1.2M and 2.3M multiply-adds when calls come back to back, later when the team has gone
# to sleep between calls: WAKE_COST = 60 puts the line at 1.47M (small-latency, T=50 at
# H=128, keeps its two threads; one step at B=1 runs alone up to H=512).
# The rule scales with MIN_WORK_PER_THREAD, so tests that lower it to split tiny problems
# still start threads. Results are bit-identical for every thread count: this changes
# speed, never the bits.
WAKE_COST = 60


cdef inline double _call_work(double T, double B, double I, double H, double L,
                              double D) noexcept:
    """Multiply-adds of a forward call: T*B*3H*(I+H) per direction of the first layer,
    T*B*3H*(D*H+H) per direction of each layer above it (in floating point: no size
    wraps)."""
    return T * B * 3 * H * D * ((I + H) + (L - 1) * (D * H + H))


cdef inline bint _runs_alone(double work) except -1:
    """Whether a call of `work` multiply-adds runs on the calling thread (WAKE_COST)."""
    cdef double wake = WAKE_COST, unit = MIN_WORK_PER_THREAD
    return work < 2 * wake * unit


# How many float32 multiply-adds one reduced-precision multiply-add costs, roughly (the
# work a call's thread plan weighs; indexed by wformat)
cdef double _QUANT_SPEEDUP[3]
_QUANT_SPEEDUP[:] = [1.0, 3.0, 1.6]


def _threads_for_call(Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                      Py_ssize_t L, Py_ssize_t D, dtype, int wformat=WFORMAT_FLOAT):
    """Threads for a forward call of T steps over B rows, L layers of D directions: 1 when
    the whole call is too small to be worth waking a worker (WAKE_COST), else the
    per-step plan of _threads_for (a test hook too: the count a call plans). Reduced-
    precision weights (wformat) weigh their work at its float32 equivalent."""
    if _runs_alone(_call_work(T, B, I, H, L, D) / _QUANT_SPEEDUP[wformat]):
        _check_env()
        return 1
    return _threads_for(B, H, D, dtype)


cdef inline int _check_env() except -1:
    """A call that runs alone needs no thread count, but a malformed CYGRU_NUM_THREADS
    still raises at it, as at every call (read once it is valid: then it is the count)."""
    if _num_threads == 0 and _read_env().strip():
        get_num_threads()
    return 0


cdef inline void* _ptr(a):
    """Data address of a C-contiguous ndarray, or NULL for None (the caller keeps `a`
    alive)."""
    if a is None:
        return NULL
    if not isinstance(a, cnp.ndarray) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a):
        raise TypeError("cygru internal error: expected a C-contiguous ndarray")
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef void _problem(cygru_problem* pb, int T, int B, int I, int H, int D, dtype,
                   bint reset_after, bint reverse, perm, active,
                   int wformat=WFORMAT_FLOAT) except *:
    pb.T, pb.B, pb.In, pb.H, pb.D = T, B, I, H, D
    pb.itemsize = dtype.itemsize
    pb.reset_after, pb.reverse = reset_after, reverse
    pb.perm = <const Py_ssize_t*>_ptr(perm)
    pb.active = <const int*>_ptr(active)
    pb.chunk = _CHUNK_STEPS
    pb.kernel_rows = _kernel_rows_now()
    pb.wformat = wformat


cdef void _weights(cygru_dir_weights* w, weights) except *:
    cdef int d
    for d in range(len(weights)):
        w[d].w_ih = _ptr(weights[d][0])
        w[d].w_hh = _ptr(weights[d][1])
        w[d].b_ih = _ptr(weights[d][2])
        w[d].b_hh = _ptr(weights[d][3])


def _forward_layer(x, weights, out, Py_ssize_t ts, Py_ssize_t bs, states, perm, active,
                   int T, int B, int I, int H, bint reverse, bint reset_after, caches,
                   hprevs, int n_threads, int wformat=WFORMAT_FLOAT):
    """Every direction of one layer (weights: D tuples (w_ih, w_hh, b_ih, b_hh), biases
    never None) on n_threads threads: states (D, B, H) sorted go h0 -> h_n; caches
    (D, T, B, 4H) and hprevs (D, T, B, H), or None, are filled for the backward. With a
    reduced-precision `wformat`, w_ih and w_hh are the quantized blocks (uint8 arrays of
    quant_matrix_size bytes) and everything else is float32."""
    cdef cygru_problem pb
    cdef cygru_dir_weights w[2]
    cdef cygru_forward_io io
    _problem(&pb, T, B, I, H, len(weights), x.dtype, reset_after, reverse, perm, active,
             wformat)
    _weights(w, weights)
    io.x = _ptr(x)
    io.out, io.out_ts, io.out_bs = _ptr(out), ts, bs
    io.states = _ptr(states)
    io.caches, io.hprevs = _ptr(caches), _ptr(hprevs)
    work = _uninitialised(forward_work_size(&pb, n_threads), np.uint8)
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
    work = _uninitialised(backward_work_size(&pb, n_threads), np.uint8)
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


# The allocator of the arrays the engine fills before it reads them (workspaces, the
# training cache): np.empty. Tests replace it with one that fills NaN, so that any element
# read before it is written shows in the results.
_uninitialised = np.empty


def _gru_forward(x, h0, layers, *, hidden_size, num_directions, reverse, reset_after,
                 lengths, batch_first, dropout_masks, need_cache, wformat=WFORMAT_FLOAT):
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
    n_threads = _threads_for_call(T, B, x.shape[2], H, L, D, dtype, wformat)
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
            # every row is written by the forward (ended rows as zeros): no zero-filling
            caches = _uninitialised((D, T, B, 4 * H), dtype)
            hprevs = _uninitialised((D, T, B, H), dtype)
        _forward_layer(layer_in, weights, out, ts, bs, states, perm, active, T, B, I, H,
                       bool(reverse), bool(reset_after), caches, hprevs, n_threads, wformat)
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
    """One step for B rows (the latency path: raw pointers, no memoryviews): the engine's
    one-step forward on the calling thread (no BLAS, no OpenMP region), so a GRUCell step
    has the bits of a one-step GRU call at the same batch size.

    The arrays are validated C-contiguous arrays of one dtype (functional.py)."""
    cdef cnp.npy_intp* xd = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef int B = xd[0], I = xd[1], H = cnp.PyArray_DIMS(<cnp.ndarray>w_hh)[1]
    cdef cnp.npy_intp dims[2]
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    cdef int itemsize = 4 if typenum == cnp.NPY_FLOAT32 else 8
    dims[0] = B
    dims[1] = H
    out = cnp.PyArray_EMPTY(2, dims, typenum, 0)
    # small workspaces live on the stack; large ones are allocated
    cdef double stack_work[2048]
    cdef size_t need = step_work_size(B, I, H, itemsize)
    cdef void* work = <void*>stack_work
    if need == 0:
        raise MemoryError("cygru: the GRUCell workspace would not fit in memory")
    if need > sizeof(stack_work):
        work = malloc(need)
        if work == NULL:
            raise MemoryError("cygru: could not allocate the GRUCell workspace")
    cdef void* xp = _data(x)
    cdef void* hp = NULL if h is None else _data(h)
    cdef void* wi = _data(w_ih)
    cdef void* wh = _data(w_hh)
    cdef void* bi = NULL if b_ih is None else _data(b_ih)
    cdef void* bh = NULL if b_hh is None else _data(b_hh)
    cdef void* op = _data(out)
    with nogil:
        step_forward(B, I, H, itemsize, reset_after, xp, hp, wi, wh, bi, bh, op, work)
    if work != <void*>stack_work:
        free(work)
    return out


# -- the lean entries: a module call's common case, straight to the engine ----------------
# A one-step call's arithmetic is a microsecond or two; the checked path (functional.py's
# SequenceCall, layer_weights, np.empty per buffer, the schedule) cost ~10 us around it.
# These entries take the common case only (exact ndarrays of the module's dtype, native
# byte order, C-contiguous and aligned, the right shapes, no lengths), check it with a
# few C comparisons and return None for anything else: the caller then runs the checked
# path, which converts or raises exactly as it always has. The results are those of the
# checked path, bit for bit (the same engine call on the same arrays).

cdef Py_ssize_t _lean_gru_calls = 0     # calls the lean entries ran (a test hook)
cdef Py_ssize_t _lean_cell_calls = 0
cdef int _lean_last_threads = 0         # the thread count of the last lean GRU call
cdef bint _lean_last_kept_gil = False   # whether it kept the GIL


def _lean_stats():
    """Test hook: {"gru": lean GRU calls, "cell": lean cell calls, "threads": the thread
    count the last lean GRU call ran on, "kept_gil": whether it kept the GIL} (counts
    since the process started)."""
    return {"gru": _lean_gru_calls, "cell": _lean_cell_calls, "threads": _lean_last_threads,
            "kept_gil": _lean_last_kept_gil}


cdef inline int _lean_typenum(dtype) noexcept:
    """The NumPy type number of a module dtype (float32 / float64), or -1."""
    if not isinstance(dtype, cnp.dtype):
        return -1
    cdef int t = (<cnp.dtype>dtype).type_num
    return t if t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64 else -1


cdef inline bint _plain(a, int typenum) noexcept:
    """`a` is an exact ndarray of `typenum` in native byte order, C-contiguous and aligned
    (what the engine reads as it is; read-only arrays included: nothing writes them)."""
    if not cnp.PyArray_CheckExact(a):
        return False
    return (cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>a))


cdef inline bint _plain_shape(a, int typenum, int nd, Py_ssize_t d0, Py_ssize_t d1,
                              Py_ssize_t d2) noexcept:
    """_plain, with exactly `nd` (1-3) dimensions (d0, d1, d2)[:nd]."""
    if not _plain(a, typenum) or cnp.PyArray_NDIM(<cnp.ndarray>a) != nd:
        return False
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(<cnp.ndarray>a)
    if dims[0] != d0:
        return False
    if nd > 1 and dims[1] != d1:
        return False
    return nd < 3 or dims[2] == d2


cdef inline size_t _line(size_t nbytes) noexcept nogil:
    return (nbytes + 63) // 64 * 64


cdef enum:
    _LEAN_STACK_DOUBLES = 2048          # workspaces up to 16 KiB live on the stack


def gru_lean(x, h0, list weights, dtype, int L, int D, int H, int I, bint bias,
             bint reverse, bint reset_after, bint batch_first, int wformat=WFORMAT_FLOAT):
    """A module's forward in its common case: ``(output, h_n)``, or None when the
    arguments are not that case (then nothing was done).

    The case: `x` (T, B, I) ((B, T, I) with batch_first) or unbatched (T, I), T >= 1,
    B >= 1, and `h0` (L*D, B, H) (unbatched (L*D, H)) or None, exact ndarrays of `dtype`
    (the module's, float32 or float64) in native byte order, C-contiguous and aligned;
    `weights` the module's parameters in PyTorch's order (per layer and direction w_ih,
    w_hh and, with `bias`, b_ih, b_hh), taken together under its lock, each of its shape.
    The caller's arrays are only read; output and h_n are fresh arrays. A call whose work
    is below WAKE_COST runs on the calling thread, and keeps the GIL when its work is also
    below KEEP_GIL_WORK; others plan their threads as the checked path does and release
    the GIL.

    With a reduced-precision `wformat` (cygru.quantized), `dtype` is float32 and each
    w_ih / w_hh is its packed blocks: a 1-D uint8 array of quant_matrix_size bytes."""
    cdef int typenum = _lean_typenum(dtype)
    if wformat != WFORMAT_FLOAT and typenum != cnp.NPY_FLOAT32:
        return None
    if typenum < 0 or not _plain(x, typenum):
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    cdef cnp.npy_intp* xd = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef Py_ssize_t T, B
    if nd == 3:
        if batch_first:
            B, T = xd[0], xd[1]
        else:
            T, B = xd[0], xd[1]
    elif nd == 2:
        T, B = xd[0], 1
    else:
        return None
    if xd[nd - 1] != I or T < 1 or B < 1 or T * B > 2147483647:
        return None
    cdef Py_ssize_t LD = <Py_ssize_t>L * D
    if h0 is not None:
        if nd == 3:
            if not _plain_shape(h0, typenum, 3, LD, B, H):
                return None
        elif not _plain_shape(h0, typenum, 2, LD, H, 0):
            return None
    # the weights: the count and shapes the options define (as set and checked by the
    # module; a parameter reshaped in place since goes to the checked path)
    cdef int per = 4 if bias else 2
    cdef int k, d, j, I_k
    if len(weights) != LD * per:
        return None
    for k in range(L):
        I_k = I if k == 0 else D * H
        for d in range(D):
            j = (k * D + d) * per
            if wformat != WFORMAT_FLOAT:
                if not (_plain_shape(weights[j], cnp.NPY_UINT8, 1,
                                     quant_matrix_size(H, I_k, wformat), 0, 0)
                        and _plain_shape(weights[j + 1], cnp.NPY_UINT8, 1,
                                         quant_matrix_size(H, H, wformat), 0, 0)):
                    return None
            elif not (_plain_shape(weights[j], typenum, 2, 3 * H, I_k, 0)
                      and _plain_shape(weights[j + 1], typenum, 2, 3 * H, H, 0)):
                return None
            if bias and not (_plain_shape(weights[j + 2], typenum, 1, 3 * H, 0, 0)
                             and _plain_shape(weights[j + 3], typenum, 1, 3 * H, 0, 0)):
                return None
    # -- the case holds: threads, outputs, workspace, the engine
    cdef int n_threads
    cdef double work = _call_work(T, B, I, H, L, D) / _QUANT_SPEEDUP[wformat]
    if _runs_alone(work):
        # not counted in _active_calls: it takes no share of the default thread count, and
        # a big call starting beside a stream of these should not halve its threads
        _check_env()
        return _gru_lean_run(x, h0, weights, typenum, T, B, L, D, H, I, bias, reverse,
                             reset_after, batch_first, nd, 1, work < KEEP_GIL_WORK, wformat)
    with _ActiveCall():
        n_threads = _threads_for(B, H, D, dtype)
        return _gru_lean_run(x, h0, weights, typenum, T, B, L, D, H, I, bias, reverse,
                             reset_after, batch_first, nd, n_threads, False, wformat)


# A call that runs alone keeps the GIL up to this many multiply-adds (one step at batch 1
# up to H=256 at I=64: microseconds): releasing it means taking it back afterwards, which
# waits for the switch interval (5 ms) when another Python thread is running. Larger calls
# release it, so that other Python threads run meanwhile.
KEEP_GIL_WORK = 262144


cdef object _gru_lean_run(x, h0, list weights, int typenum, Py_ssize_t T, Py_ssize_t B,
                          int L, int D, int H, int I, bint bias, bint reverse,
                          bint reset_after, bint batch_first, int nd, int n_threads,
                          bint keep_gil, int wformat):
    """gru_lean once its case is checked: L layers through layer_forward."""
    global _lean_gru_calls, _lean_last_threads, _lean_last_kept_gil
    cdef size_t it = 4 if typenum == cnp.NPY_FLOAT32 else 8
    cdef Py_ssize_t LD = <Py_ssize_t>L * D, DH = <Py_ssize_t>D * H
    cdef cnp.npy_intp dims[3]
    # h_n, which is also every layer's state buffer (rows in batch order: no lengths,
    # so the schedule's order is the identity): h0 copied in, or zeros
    if nd == 3:
        dims[0], dims[1], dims[2] = LD, B, H
    else:
        dims[0], dims[1] = LD, H
    h_n = cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    cdef char* hp = <char*>cnp.PyArray_DATA(<cnp.ndarray>h_n)
    cdef size_t h_bytes = <size_t>LD * B * H * it
    if h0 is None:
        memset(hp, 0, h_bytes)
    else:
        memcpy(hp, cnp.PyArray_DATA(<cnp.ndarray>h0), h_bytes)
    if nd == 2:
        dims[0], dims[1] = T, DH
    elif batch_first:
        dims[0], dims[1], dims[2] = B, T, DH
    else:
        dims[0], dims[1], dims[2] = T, B, DH
    out = cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    x_tm = x
    if nd == 3 and batch_first and T > 1 and B > 1:
        x_tm = np.ascontiguousarray((<cnp.ndarray>x).transpose(1, 0, 2))
    # one workspace: the engine's (the larger of the first layer's and the others'), the
    # schedule (identity perm, every row active), zero biases, two inter-layer outputs
    cdef cygru_problem pb
    memset(&pb, 0, sizeof(pb))
    pb.T, pb.B, pb.In, pb.H, pb.D = T, B, I, H, D
    pb.itemsize = it
    pb.reset_after, pb.reverse = reset_after, reverse
    pb.chunk = _CHUNK_STEPS
    pb.kernel_rows = _kernel_rows_now()
    pb.wformat = wformat
    cdef size_t engine_bytes = forward_work_size(&pb, n_threads), other
    if L > 1:
        pb.In = DH
        other = forward_work_size(&pb, n_threads)
        engine_bytes = max(engine_bytes, other)
    cdef size_t perm_at = _line(engine_bytes)
    cdef size_t active_at = perm_at + _line(<size_t>B * sizeof(Py_ssize_t))
    cdef size_t zeros_at = active_at + _line(<size_t>T * sizeof(int))
    cdef size_t inter_at = zeros_at + (0 if bias else _line(3 * <size_t>H * it))
    cdef size_t inter_bytes = _line(<size_t>T * B * DH * it) if L > 1 else 0
    cdef size_t total = inter_at + 2 * inter_bytes + 64
    cdef double stack_work[_LEAN_STACK_DOUBLES]
    cdef char* base = <char*>stack_work
    if total > sizeof(stack_work):
        base = <char*>malloc(total)
        if base == NULL:
            raise MemoryError("cygru: could not allocate the GRU call's workspace")
    cdef char* wk = <char*>((<size_t>base + 63) // 64 * 64)
    cdef Py_ssize_t* perm = <Py_ssize_t*>(wk + perm_at)
    cdef int* active = <int*>(wk + active_at)
    cdef char* zeros = wk + zeros_at
    cdef char* inter = wk + inter_at
    cdef Py_ssize_t b, t
    for b in range(B):
        perm[b] = b
    for t in range(T):
        active[t] = <int>B
    if not bias:
        memset(zeros, 0, 3 * <size_t>H * it)
    pb.perm, pb.active = perm, active
    cdef cygru_dir_weights w[2]
    cdef cygru_forward_io io
    cdef int k, d, j, per = 4 if bias else 2
    cdef const void* layer_x = cnp.PyArray_DATA(<cnp.ndarray>x_tm)
    cdef void* layer_out
    for k in range(L):
        pb.In = I if k == 0 else DH
        memset(w, 0, sizeof(w))
        for d in range(D):
            j = (k * D + d) * per
            w[d].w_ih = cnp.PyArray_DATA(<cnp.ndarray>weights[j])
            w[d].w_hh = cnp.PyArray_DATA(<cnp.ndarray>weights[j + 1])
            if bias:
                w[d].b_ih = cnp.PyArray_DATA(<cnp.ndarray>weights[j + 2])
                w[d].b_hh = cnp.PyArray_DATA(<cnp.ndarray>weights[j + 3])
            else:
                w[d].b_ih = w[d].b_hh = zeros
        memset(&io, 0, sizeof(io))
        io.x = layer_x
        if k == L - 1:
            layer_out = cnp.PyArray_DATA(<cnp.ndarray>out)
            if nd == 3 and batch_first:
                io.out_ts, io.out_bs = DH, T * DH
            else:
                io.out_ts, io.out_bs = B * DH, DH
        else:
            layer_out = inter + (k % 2) * inter_bytes
            io.out_ts, io.out_bs = B * DH, DH
        io.out = layer_out
        io.states = hp + <size_t>k * D * B * H * it
        if keep_gil:
            layer_forward(&pb, w, &io, wk, n_threads)
        else:
            with nogil:
                layer_forward(&pb, w, &io, wk, n_threads)
        layer_x = layer_out
    if base != <char*>stack_work:
        free(base)
    _lean_gru_calls += 1
    _lean_last_threads = n_threads
    _lean_last_kept_gil = keep_gil
    return out, h_n


def cell_lean(x, h, w_ih, w_hh, b_ih, b_hh, bint reset_after, dtype):
    """A cell step in its common case: h1, or None when the arguments are not that case.

    The case: `x` (B, I) with B >= 1 or unbatched (I,), `h` None or (B, H) / (H,), exact
    ndarrays of `dtype` (float32 or float64) in native byte order, C-contiguous and
    aligned, and the weights (taken together under the module's lock) of their shapes
    (w_ih (3H, I), w_hh (3H, H), the biases (3H,) or both None). A step is one time step
    of one layer: it always runs on the calling thread (the same rule as a one-step GRU
    call, WAKE_COST)."""
    global _lean_cell_calls
    cdef int typenum = _lean_typenum(dtype)
    if typenum < 0 or not _plain(x, typenum) or not _plain(w_hh, typenum) \
            or cnp.PyArray_NDIM(<cnp.ndarray>w_hh) != 2:
        return None
    cdef Py_ssize_t H = cnp.PyArray_DIMS(<cnp.ndarray>w_hh)[1]
    if cnp.PyArray_DIMS(<cnp.ndarray>w_hh)[0] != 3 * H or not _plain(w_ih, typenum) \
            or cnp.PyArray_NDIM(<cnp.ndarray>w_ih) != 2 \
            or cnp.PyArray_DIMS(<cnp.ndarray>w_ih)[0] != 3 * H:
        return None
    cdef Py_ssize_t I = cnp.PyArray_DIMS(<cnp.ndarray>w_ih)[1]
    if (b_ih is None) != (b_hh is None):
        return None
    if b_ih is not None and not (_plain_shape(b_ih, typenum, 1, 3 * H, 0, 0)
                                 and _plain_shape(b_hh, typenum, 1, 3 * H, 0, 0)):
        return None
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    cdef cnp.npy_intp* xd = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef Py_ssize_t B
    if nd == 2:
        B = xd[0]
        if xd[1] != I or B < 1 or B > 2147483647:
            return None
        if h is not None and not _plain_shape(h, typenum, 2, B, H, 0):
            return None
        _lean_cell_calls += 1
        return cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after)
    if nd != 1 or xd[0] != I:
        return None
    if h is not None:
        if not _plain_shape(h, typenum, 1, H, 0, 0):
            return None
        h = h.reshape(1, H)
    _lean_cell_calls += 1
    return cell_forward(x.reshape(1, I), h, w_ih, w_hh, b_ih, b_hh, reset_after)[0]
