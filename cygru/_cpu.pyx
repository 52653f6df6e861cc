# cython: language_level=3
"""CPU backend: def entry points over the nogil kernels.

Implements the backend contract (gru_forward / gru_backward / cell_forward). The
arguments arrive validated by functional.py: dtype float32 or float64 (all alike),
C-contiguous, shapes checked, sizes that fit BLAS's int. This layer allocates the
outputs and scratch, releases the GIL and runs whole time loops in the kernels.
"""
import operator
import os
import threading

import numpy as np
cimport numpy as cnp
from libc.stdlib cimport malloc, calloc, free
from cython cimport floating
from cygru._blas cimport gemm, gemm_rows_serial, SMALL_GEMM
from cygru._kernels cimport (gru_direction_forward, gru_direction_backward,
                             gru_direction_weight_grads, gru_cell_forward, cell_work_size,
                             part_pack_size, pack_gate_slice, backward_pack_size,
                             pack_backward_slice, cygru_barrier, cygru_barrier_init,
                             cygru_pieces_f32, cygru_work, cygru_work_init,
                             gru_direction_forward_pieces, cygru_bpieces_f32,
                             gru_direction_backward_pieces)
from cython.parallel cimport parallel, threadid
cimport openmp

cnp.import_array()

# Scratch for the input projection of one direction is at most this many bytes (or
# one step, if a single step is larger): long sequences are projected in chunks of
# steps, so memory beyond the output does not grow with T.
PROJECTION_CHUNK_BYTES = 2 << 20
# Up to this many bytes, a layer's input projection (T*B rows x D*3H) is computed for
# all steps before the time loop, one BLAS call per direction outside the threads.
PROJECTION_FULL_BYTES = 16 << 20
# A float32 input projection of at most this many multiply-adds (T*B*3H*I per
# direction) runs in our packed kernel even on one thread: BLAS keeps a product this
# small on the calling thread only in row blocks (_blas.pxd, SMALL_GEMM), repacking
# W_ih for each block, which cost ~18% of a 50-step batch-1 forward in a profile.
# Larger projections stay one BLAS call, which is faster than our kernel there.
OWN_PROJECTION_WORK = SMALL_GEMM



def _chunk_steps(int T, int B, int H, int itemsize):
    cdef Py_ssize_t per_step = <Py_ssize_t>B * 3 * H * itemsize
    if per_step <= 0:
        return T
    return int(max(1, min(T, PROJECTION_CHUNK_BYTES // per_step)))


_num_threads = 0            # 0: not yet decided (see get_num_threads)

# The most threads cygru accepts (set_num_threads, CYGRU_NUM_THREADS); the default,
# the usable cores, is capped here too. Each thread gets its own scratch and all of a
# direction's threads meet every step, so far more threads than cores only adds waits.
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
    return _default_threads()


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
    _num_threads = _parse_thread_count(n, "cygru.set_num_threads")


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
    """Threads a layer call would use out of n: float32 only, and only while every
    thread keeps MIN_WORK_PER_THREAD multiply-adds per step."""
    if dtype != np.float32 or n <= 1 or <Py_ssize_t>B * 3 * H * H < MIN_WORK_PER_THREAD:
        return 1          # too little work per step even for a thread per direction
    per_dir = max(1, n // D)
    while per_dir > 1 and (<Py_ssize_t>B * 3 * H * H) // per_dir < MIN_WORK_PER_THREAD:
        per_dir -= 1
    return per_dir * D if D <= n else 1


def _threads_for(int B, int H, int D, dtype):
    """(threads to run, pieces?) for a layer call. The kernels (pieces, cygru's own input
    projection) follow the plan for the configured count; calls running at once that
    share the default get fewer threads each, which changes how fast, never the bits."""
    n = get_num_threads()
    planned = _planned_threads(n, B, H, D, dtype)
    if planned <= 1:
        return 1, False
    if _num_threads == 0 and _active_calls > 1:
        return max(1, min(planned, n // _active_calls)), True
    return planned, True


def _schedule(lengths, int T, int B):
    """Sorted-batch schedule: perm (sorted row -> batch row) and active rows per step."""
    if lengths is None:
        return np.arange(B, dtype=np.intp), np.full(T, B, dtype=np.intc)
    perm = np.argsort(-lengths, kind="stable").astype(np.intp)
    # active[t] = #{b : L_b > t} = B - #{b : L_b <= t}
    ended = np.cumsum(np.bincount(lengths, minlength=T + 1))[:T]
    return perm, (B - ended).astype(np.intc)


cdef void _run_slice(int d, int r, int buf, int T, int B, int I, int H,
                     floating* x, floating** w_ih, floating** w_hh, floating** b_ih,
                     floating** b_hh, floating* out, Py_ssize_t ts, Py_ssize_t bs,
                     floating** state, floating** state_alt, Py_ssize_t* perm, int* active,
                     bint* rev, bint reset_after, int chunk, floating** gi, floating** gh,
                     floating** rh, int gi_ld, bint gi_ready, floating** bias,
                     floating** pack_ih, floating** pack_hh,
                     floating** cache, floating** hprev, cygru_barrier* barriers,
                     int* bounds) noexcept nogil:
    """Slice r of direction d, on the scratch set `buf` (one set per thread)."""
    cdef int u0 = bounds[r], u1 = bounds[r + 1]
    if pack_hh[buf] != NULL:
        # each thread packs its own rows of W_hh (and W_ih when threaded), once per call
        pack_gate_slice(H, H, u0, u1, w_hh[d], pack_hh[buf])
    if pack_ih[buf] != NULL:
        pack_gate_slice(H, I, u0, u1, w_ih[d], pack_ih[buf])
    gru_direction_forward(T, B, I, H, u0, u1, x, w_ih[d], w_hh[d], b_ih[d], b_hh[d],
                          out + d * H, ts, bs, state[d], state_alt[d], perm, active,
                          rev[d], reset_after, chunk, gi[d], gi_ld, gi_ready, gh[buf], rh[d],
                          bias[buf], pack_ih[buf], pack_hh[buf], cache[d], hprev[d],
                          &barriers[d])


def _unit_bounds(int H, int parts):
    """Split H hidden units into `parts` slices, at multiples of 16 when H allows."""
    if H >= 32 * parts:
        cuts = [((H * k // parts) // 16) * 16 for k in range(parts)] + [H]
    else:
        cuts = [H * k // parts for k in range(parts)] + [H]
    return np.asarray(cuts, dtype=np.intc)


def _project(const floating[::1] x, w_ih, floating[:, ::1] gi_all, int d, int rows, int I, int H,
             int D):
    """gi_all[:, d*3H:(d+1)*3H] = x (rows x I) @ W_ih^T: one BLAS call."""
    cdef const floating[::1] w = w_ih.reshape(-1)       # const: read-only weights work
    with nogil:
        gemm_rows_serial(True, rows, 3 * H, I, <floating>1, &x[0], I, &w[0], I, <floating>0,
                         &gi_all[0, 0] + d * 3 * H, D * 3 * H)


cdef class _LayerTables:
    """Pointer tables for one layer call: `kinds` tables of `slots` entries each (one
    entry per direction, or per thread's scratch set: slots = max(D, scratch sets)),
    the directions' time flags and their barriers. Freed with the object, whatever
    happens in between."""
    cdef void** P
    cdef int slots
    cdef bint* rev
    cdef cygru_barrier* barriers

    def __cinit__(self, int kinds, int slots):
        self.slots = slots
        self.P = <void**>calloc(<size_t>kinds * slots, sizeof(void*))
        self.rev = <bint*>calloc(2, sizeof(bint))
        self.barriers = <cygru_barrier*>calloc(2, sizeof(cygru_barrier))
        if self.P == NULL or self.rev == NULL or self.barriers == NULL:
            raise MemoryError("cygru: could not allocate the layer's pointer tables")

    cdef void** table(self, int kind) noexcept:
        return self.P + <Py_ssize_t>kind * self.slots

    def __dealloc__(self):
        free(self.P)
        free(self.rev)
        free(self.barriers)


cdef Py_ssize_t _addr(a) except -1:
    """Address of a C-contiguous array's data (the caller keeps `a` alive).

    Read straight from the array struct: ``a.ctypes.data`` builds a ctypes object per
    call, which was about a third of a batch-1, one-step forward."""
    if not isinstance(a, cnp.ndarray) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a):
        raise TypeError("cygru internal error: expected a C-contiguous ndarray")
    return <Py_ssize_t>_data(a)


# A threaded direction's hidden units are cut into this many pieces per thread, claimed
# dynamically every step (gru_direction_forward_pieces): a thread that the OS has
# descheduled leaves its share to the running ones instead of stalling the step. Two
# per thread: with one, small-latency and medium under a busy process took 1.43x and
# 1.95x their idle time, with two 1.30x and 1.86x, idle times alike within noise
# (benchmarks/under_load.py, 2 vCPUs, one session).
PIECES_PER_THREAD = 2


cdef class _PieceTables:
    """The per-direction structs (forward and backward), work counters and pieces' last
    claimed phases (all -1) of a pieces call over D directions of n_pieces each, freed
    with it."""
    cdef cygru_pieces_f32* s
    cdef cygru_bpieces_f32* bs
    cdef cygru_work* works
    cdef int* last
    cdef int n_pieces

    def __cinit__(self, int D, int n_pieces):
        cdef Py_ssize_t i
        self.n_pieces = n_pieces
        self.s = <cygru_pieces_f32*>calloc(D, sizeof(cygru_pieces_f32))
        self.bs = <cygru_bpieces_f32*>calloc(D, sizeof(cygru_bpieces_f32))
        self.works = <cygru_work*>calloc(D, sizeof(cygru_work))
        self.last = <int*>malloc(<size_t>D * n_pieces * sizeof(int))
        if self.s == NULL or self.bs == NULL or self.works == NULL or self.last == NULL:
            raise MemoryError("cygru: could not allocate the layer's work tables")
        for i in range(D):
            cygru_work_init(&self.works[i])
        for i in range(<Py_ssize_t>D * n_pieces):
            self.last[i] = -1

    cdef int* last_of(self, int d) noexcept:
        return self.last + <Py_ssize_t>d * self.n_pieces

    def __dealloc__(self):
        free(self.s)
        free(self.bs)
        free(self.works)
        free(self.last)


cdef inline int _group_of(int tid, int g, int D, int* rank, int* size) noexcept nogil:
    """The direction of thread tid when g >= D threads run D directions in contiguous
    groups (tid * D // g), with tid's rank in its group and the group's size."""
    cdef int d = tid * D // g
    cdef int first = (d * g + D - 1) // D             # the group's first thread
    rank[0] = tid - first
    size[0] = ((d + 1) * g + D - 1) // D - first
    return d


def _piece_bounds(int H, int n_per_dir):
    """Unit bounds of the pieces of a threaded direction (PIECES_PER_THREAD per thread,
    at most one per unit)."""
    return _unit_bounds(H, min(PIECES_PER_THREAD * n_per_dir, H))


def _thread_groups(int n_threads, int D, int H):
    """(threads per direction, threads to start) for a pieces call on n_threads."""
    cdef int per_dir = max(1, min(n_threads // D, H))
    return per_dir, (per_dir * D if n_threads >= D else n_threads)


def _forward_pieces(const float[::1] x, weights, float[::1] out, Py_ssize_t ts, Py_ssize_t bs,
                    states, Py_ssize_t[::1] perm, int[::1] active, int T, int B, int I, int H,
                    revs, bint reset_after, int chunk, caches, hprevs, int n_threads):
    """Every direction of one float32 layer on n_threads threads (a group per
    direction), the work of a step claimed in pieces (see gru_direction_forward_pieces).
    However many threads OpenMP grants, every direction is run whole: with fewer than
    the directions, a thread runs several one after the other."""
    cdef int D = len(weights)
    n_per_dir, n_sets_ = _thread_groups(n_threads, D, H)
    cdef int[::1] bounds = _piece_bounds(H, n_per_dir)
    cdef int n_pieces = bounds.shape[0] - 1
    cdef int U_max = max(bounds[k + 1] - bounds[k] for k in range(n_pieces))
    cdef Py_ssize_t slot_ih = part_pack_size(U_max, I), slot_hh = part_pack_size(U_max, H)
    cdef _PieceTables tables = _PieceTables(D, n_pieces)
    cdef cygru_pieces_f32* sp
    cdef cygru_pieces_f32* structs = tables.s
    cdef int d, tid, g, rank, size, n_sets = n_sets_
    keep = []                      # owners of every buffer below, alive until return
    alts = []                      # the second state buffer of each direction

    def new(n):
        a = np.empty(max(int(n), 1), np.float32)
        keep.append(a)
        return _addr(a)

    # all steps projected as one chunk when that scratch is small (each piece projects
    # its own gate columns); long sequences in chunks, so memory does not grow with T
    if <Py_ssize_t>T * B * D * 3 * H * sizeof(float) <= PROJECTION_FULL_BYTES:
        chunk = T
    for d in range(D):
        wi, wh, bi, bh = weights[d]
        keep.extend((wi, wh, bi, bh, states[d]))
        sp = &structs[d]
        sp.T, sp.B, sp.In, sp.H, sp.chunk, sp.n_pieces = T, B, I, H, chunk, n_pieces
        sp.reverse, sp.reset_after = revs[d], reset_after
        sp.x = &x[0]
        sp.w_ih = <const float*><Py_ssize_t>_addr(wi)
        sp.w_hh = <const float*><Py_ssize_t>_addr(wh)
        sp.b_ih = <const float*><Py_ssize_t>_addr(bi)
        sp.b_hh = <const float*><Py_ssize_t>_addr(bh)
        sp.bounds = &bounds[0]
        sp.pack_ih_slot, sp.pack_hh_slot = slot_ih, slot_hh
        sp.pack_ih = <float*><Py_ssize_t>new(n_pieces * slot_ih)
        sp.pack_hh = <float*><Py_ssize_t>new(n_pieces * slot_hh)
        sp.bias = <float*><Py_ssize_t>new(6 * <Py_ssize_t>H)
        sp.gh = <float*><Py_ssize_t>new(3 * <Py_ssize_t>B * H)
        sp.out = &out[0] + d * H
        sp.out_ts, sp.out_bs = ts, bs
        sp.state = <float*><Py_ssize_t>_addr(states[d])
        alt = np.empty((B, H), np.float32)
        alts.append(alt)
        sp.state_alt = <float*><Py_ssize_t>_addr(alt)
        sp.perm, sp.active = &perm[0], &active[0]
        sp.gi_buf = <float*><Py_ssize_t>new(<Py_ssize_t>chunk * B * 3 * H)
        sp.rh_buf = <float*><Py_ssize_t>new(<Py_ssize_t>B * H)
        sp.cache = sp.hprev = NULL
        if caches is not None:
            sp.cache = <float*><Py_ssize_t>_addr(caches[d])
            sp.hprev = <float*><Py_ssize_t>_addr(hprevs[d])
        sp.work = &tables.works[d]
        sp.last = tables.last_of(d)
    with nogil, parallel(num_threads=n_sets):
        tid = threadid()
        g = openmp.omp_get_num_threads()
        if g >= D:
            # a group of threads per direction (OpenMP may have granted fewer than asked)
            d = _group_of(tid, g, D, &rank, &size)
            gru_direction_forward_pieces(&structs[d], rank, size)
        else:
            d = tid
            while d < D:
                gru_direction_forward_pieces(&structs[d], 0, 1)
                d = d + g
    if T % 2 == 1:
        for d in range(D):             # h_n of an odd number of steps is in state_alt
            states[d][...] = alts[d]


def _forward_layer(const floating[::1] x, weights, floating[::1] out, Py_ssize_t ts, Py_ssize_t bs,
                   states, Py_ssize_t[::1] perm, int[::1] active, int T, int B, int I, int H,
                   revs, bint reset_after, int chunk, caches, hprevs, plan):
    """Run every direction of one layer: float32 on threads that claim the work of each
    step in pieces (_forward_pieces) when the plan (_threads_for) says so, else the
    directions one after the other on the calling thread (float64 on BLAS)."""
    dtype = np.float32 if floating is float else np.float64
    cdef int D = len(weights)
    cdef bint packed = floating is float
    n_threads, pieces = plan
    if floating is float:
        if pieces:
            _forward_pieces(x, weights, out, ts, bs, states, perm, active, T, B, I, H, revs,
                            reset_after, chunk, caches, hprevs, n_threads)
            return
    keep = []                      # owners of every buffer below, alive until return

    def new(n):
        a = np.empty(max(int(n), 1), dtype)
        keep.append(a)
        return _addr(a)

    # one table per kind of pointer, an entry per direction (w_ih, w_hh, b_ih, b_hh,
    # state, state_alt, rh, cache, hprev, gi, and the one scratch set: gh, bias,
    # pack_hh, pack_ih in entry 0)
    cdef _LayerTables tables = _LayerTables(14, D)
    cdef floating** w_ih = <floating**>tables.table(0)
    cdef floating** w_hh = <floating**>tables.table(1)
    cdef floating** b_ih = <floating**>tables.table(2)
    cdef floating** b_hh = <floating**>tables.table(3)
    cdef floating** state = <floating**>tables.table(4)
    cdef floating** state_alt = <floating**>tables.table(5)
    cdef floating** rh = <floating**>tables.table(6)
    cdef floating** cache = <floating**>tables.table(7)
    cdef floating** hprev = <floating**>tables.table(8)
    cdef floating** gi = <floating**>tables.table(9)
    cdef floating** gh = <floating**>tables.table(10)
    cdef floating** bias = <floating**>tables.table(11)
    cdef floating** pack_hh = <floating**>tables.table(12)
    cdef floating** pack_ih = <floating**>tables.table(13)
    cdef bint* rev = tables.rev
    cdef cygru_barrier* barriers = tables.barriers
    cdef int d
    cdef int[::1] bounds = _unit_bounds(H, 1)
    cdef floating* xp = <floating*>&x[0]      # only read (const in the kernel)
    cdef floating* outp = &out[0]
    # project all steps at once when that scratch is small; long sequences project
    # chunks of steps inside the time loop (memory independent of T)
    cdef bint fits = <Py_ssize_t>T * B * D * 3 * H * sizeof(floating) <= PROJECTION_FULL_BYTES
    # BLAS projects up front (when it fits), unless the product is small enough for
    # cygru's own kernel (float32), which BLAS would split into row blocks
    cdef bint own_projection = packed and <Py_ssize_t>T * B * 3 * H * I <= OWN_PROJECTION_WORK
    cdef bint gi_ready = fits and not own_projection
    cdef int gi_ld = D * 3 * H if gi_ready else 3 * H
    if own_projection and fits:
        chunk = T
    cdef Py_ssize_t* permp = &perm[0]
    cdef int* activep = &active[0]
    cdef int* boundsp = &bounds[0]
    for d in range(D):
        wi, wh, bi, bh = weights[d]
        keep.extend((wi, wh, bi, bh))
        w_ih[d] = <floating*><Py_ssize_t>_addr(wi)
        w_hh[d] = <floating*><Py_ssize_t>_addr(wh)
        b_ih[d] = <floating*><Py_ssize_t>_addr(bi)
        b_hh[d] = <floating*><Py_ssize_t>_addr(bh)
        state[d] = <floating*><Py_ssize_t>_addr(states[d])
        state_alt[d] = <floating*><Py_ssize_t>new(<Py_ssize_t>B * H)
        rh[d] = <floating*><Py_ssize_t>new(<Py_ssize_t>B * H)
        cache[d] = hprev[d] = NULL
        if caches is not None:
            cache[d] = <floating*><Py_ssize_t>_addr(caches[d])
            hprev[d] = <floating*><Py_ssize_t>_addr(hprevs[d])
        rev[d] = revs[d]
        cygru_barrier_init(&barriers[d], 1)
    if gi_ready:
        # every step of every direction projected up front: one BLAS call per
        # direction (BLAS may use every core)
        gi_all = np.empty((T * B, D * 3 * H), dtype)
        keep.append(gi_all)
        for d in range(D):
            _project(x, weights[d][0], gi_all, d, T * B, I, H, D)
            gi[d] = <floating*><Py_ssize_t>(_addr(gi_all) + d * 3 * H * gi_all.itemsize)
    else:
        for d in range(D):
            gi[d] = <floating*><Py_ssize_t>new(<Py_ssize_t>chunk * B * 3 * H)
    gh[0] = <floating*><Py_ssize_t>new(<Py_ssize_t>B * 3 * H)
    bias[0] = <floating*><Py_ssize_t>new(6 * H)
    pack_hh[0] = pack_ih[0] = NULL
    if packed:
        pack_hh[0] = <floating*><Py_ssize_t>new(part_pack_size(H, H))
    if own_projection:
        pack_ih[0] = <floating*><Py_ssize_t>new(part_pack_size(H, I))
    with nogil:
        for d in range(D):
            _run_slice(d, 0, 0, T, B, I, H, xp, w_ih, w_hh, b_ih, b_hh, outp, ts,
                       bs, state, state_alt, permp, activep, rev, reset_after, chunk,
                       gi, gh, rh, gi_ld, gi_ready, bias, pack_ih, pack_hh, cache, hprev,
                       barriers, boundsp)


cdef void _backward_slice(int d, int r, int buf, int T, int B, int H,
                          floating** w_hh, floating* d_out, Py_ssize_t d_ts, Py_ssize_t d_bs,
                          floating** dstate, Py_ssize_t* perm, int* active, bint* rev,
                          bint reset_after, floating** cache, floating** hprev,
                          floating* dgi, int ldgi, floating** dgh, floating** drh,
                          floating** packed, cygru_barrier* barriers, int* bounds) noexcept nogil:
    cdef int u0 = bounds[r], u1 = bounds[r + 1]
    if packed[buf] != NULL:
        pack_backward_slice(H, u0, u1, reset_after, w_hh[d], packed[buf])
    gru_direction_backward(T, B, H, u0, u1, w_hh[d],
                           d_out + d * H if d_out != NULL else NULL, d_ts, d_bs,
                           dstate[d], perm, active, rev[d], reset_after, cache[d], hprev[d],
                           dgi + d * 3 * H, ldgi, dgh[d], drh[d], packed[buf], &barriers[d])


def _backward_pieces(weights, d_out, Py_ssize_t d_ts, Py_ssize_t d_bs, dstates,
                     Py_ssize_t[::1] perm, int[::1] active, int T, int B, int H, revs,
                     bint reset_after, caches, hprevs, float[::1] dgi, dgh_arrays,
                     int n_threads):
    """The time loops of every direction of one float32 layer's backward on n_threads
    threads, the work of a step claimed in pieces (as _forward_pieces)."""
    cdef int D = len(weights)
    n_per_dir, n_sets_ = _thread_groups(n_threads, D, H)
    cdef int[::1] bounds = _piece_bounds(H, n_per_dir)
    cdef int n_pieces = bounds.shape[0] - 1
    cdef int U_max = max(bounds[k + 1] - bounds[k] for k in range(n_pieces))
    cdef Py_ssize_t slot = backward_pack_size(U_max, H)
    cdef _PieceTables tables = _PieceTables(D, n_pieces)
    cdef cygru_bpieces_f32* sp
    cdef cygru_bpieces_f32* structs = tables.bs
    cdef int d, tid, g, rank, size, n_sets = n_sets_
    keep = [d_out]
    for d in range(D):
        keep.extend((weights[d][1], dstates[d], caches[d], hprevs[d], dgh_arrays[d]))
        sp = &structs[d]
        sp.T, sp.B, sp.H, sp.n_pieces = T, B, H, n_pieces
        sp.reverse, sp.reset_after = revs[d], reset_after
        sp.w_hh = <const float*><Py_ssize_t>_addr(weights[d][1])
        sp.bounds = &bounds[0]
        pack_arr = np.empty(n_pieces * slot, np.float32)
        keep.append(pack_arr)
        sp.pack, sp.pack_slot = <float*><Py_ssize_t>_addr(pack_arr), slot
        sp.d_out = NULL if d_out is None else <const float*><Py_ssize_t>(_addr(d_out) + d * H * 4)
        sp.d_ts, sp.d_bs = d_ts, d_bs
        sp.dstate = <float*><Py_ssize_t>_addr(dstates[d])
        sp.perm, sp.active = &perm[0], &active[0]
        sp.cache = <const float*><Py_ssize_t>_addr(caches[d])
        sp.hprev = <const float*><Py_ssize_t>_addr(hprevs[d])
        sp.dgi, sp.ldgi = &dgi[0] + d * 3 * H, D * 3 * H
        sp.dgh = <float*><Py_ssize_t>_addr(dgh_arrays[d])
        drh_arr = np.empty(<Py_ssize_t>B * H, np.float32)
        keep.append(drh_arr)
        sp.drh_buf = <float*><Py_ssize_t>_addr(drh_arr)
        # the first processing step with running rows (some always has: B > 0)
        sp.first_st = 0
        while active[sp.first_st if revs[d] else T - 1 - sp.first_st] == 0:
            sp.first_st += 1
        sp.work = &tables.works[d]
        sp.last = tables.last_of(d)
    with nogil, parallel(num_threads=n_sets):
        tid = threadid()
        g = openmp.omp_get_num_threads()
        if g >= D:
            d = _group_of(tid, g, D, &rank, &size)
            gru_direction_backward_pieces(&structs[d], rank, size)
        else:
            d = tid
            while d < D:
                gru_direction_backward_pieces(&structs[d], 0, 1)
                d = d + g


def _backward_layer(const floating[::1] x, weights, d_out, Py_ssize_t d_ts, Py_ssize_t d_bs,
                    dstates, Py_ssize_t[::1] perm, int[::1] active, int T, int B, int I,
                    int H, revs, bint reset_after, caches, hprevs, floating[::1] dgi,
                    grads, plan):
    """Backpropagate every direction of one layer (threads as in _forward_layer), then
    add the weight gradients (single GEMMs over all T*B rows) into `grads`."""
    dtype = np.float32 if floating is float else np.float64
    cdef int D = len(weights)
    cdef int ldgi = D * 3 * H
    n_threads, pieces = plan
    pieces = pieces and floating is float
    dgh_arrays = [np.zeros(<Py_ssize_t>T * B * 3 * H, dtype) for _ in range(D)]
    if floating is float:
        if pieces:
            _backward_pieces(weights, d_out, d_ts, d_bs, dstates, perm, active, T, B, H, revs,
                             reset_after, caches, hprevs, dgi, dgh_arrays, n_threads)
    if not pieces:
        _backward_serial(weights, d_out, d_ts, d_bs, dstates, perm, active, T, B, H, revs,
                         reset_after, caches, hprevs, dgi, dgh_arrays)
    for d in range(D):
        gw_ih, gw_hh, gbi, gbh = grads[d]
        _weight_grads(x, reset_after, caches[d], hprevs[d], dgi, d * 3 * H, ldgi,
                      dgh_arrays[d], gw_ih, gw_hh, gbi, gbh, T, B, I, H)


def _backward_serial(weights, d_out, Py_ssize_t d_ts, Py_ssize_t d_bs, dstates,
                     Py_ssize_t[::1] perm, int[::1] active, int T, int B, int H, revs,
                     bint reset_after, caches, hprevs, floating[::1] dgi, dgh_arrays):
    """The time loops of a layer's backward, direction after direction, on the calling
    thread (float32 with W_hh's columns packed, float64 on BLAS)."""
    dtype = np.float32 if floating is float else np.float64
    cdef int D = len(weights)
    cdef int ldgi = D * 3 * H
    keep = [dgi, d_out]
    # a table per kind, an entry per direction (w_hh, dstate, cache, hprev, dgh, drh;
    # the one pack in entry 0)
    cdef _LayerTables tables = _LayerTables(7, D)
    cdef floating** w_hh = <floating**>tables.table(0)
    cdef floating** dstate = <floating**>tables.table(1)
    cdef floating** cache = <floating**>tables.table(2)
    cdef floating** hprev = <floating**>tables.table(3)
    cdef floating** dgh = <floating**>tables.table(4)
    cdef floating** drh = <floating**>tables.table(5)
    cdef floating** pack = <floating**>tables.table(6)
    cdef bint* rev = tables.rev
    cdef cygru_barrier* barriers = tables.barriers
    cdef int d
    cdef int[::1] bounds = _unit_bounds(H, 1)
    cdef floating* dgip = &dgi[0]
    cdef floating* d_outp = NULL if d_out is None else <floating*><Py_ssize_t>_addr(d_out)
    cdef Py_ssize_t* permp = &perm[0]
    cdef int* activep = &active[0]
    cdef int* boundsp = &bounds[0]
    for d in range(D):
        keep.extend((weights[d][1], dstates[d], caches[d], hprevs[d], dgh_arrays[d]))
        w_hh[d] = <floating*><Py_ssize_t>_addr(weights[d][1])
        dstate[d] = <floating*><Py_ssize_t>_addr(dstates[d])
        cache[d] = <floating*><Py_ssize_t>_addr(caches[d])
        hprev[d] = <floating*><Py_ssize_t>_addr(hprevs[d])
        dgh[d] = <floating*><Py_ssize_t>_addr(dgh_arrays[d])
        drh_arr = np.empty(<Py_ssize_t>B * H, dtype)
        keep.append(drh_arr)
        drh[d] = <floating*><Py_ssize_t>_addr(drh_arr)
        rev[d] = revs[d]
        cygru_barrier_init(&barriers[d], 1)
    pack[0] = NULL
    if floating is float:
        pack_arr = np.empty(backward_pack_size(H, H), dtype)
        keep.append(pack_arr)
        pack[0] = <floating*><Py_ssize_t>_addr(pack_arr)
    with nogil:
        for d in range(D):
            _backward_slice(d, 0, 0, T, B, H, w_hh, d_outp, d_ts, d_bs, dstate, permp,
                            activep, rev, reset_after, cache, hprev, dgip, ldgi, dgh,
                            drh, pack, barriers, boundsp)


def _weight_grads(const floating[::1] x, bint reset_after, const floating[::1] cache,
                  const floating[::1] hprev, const floating[::1] dgi, Py_ssize_t off,
                  int ldgi, const floating[::1] dgh, gw_ih, gw_hh, gb_ih, gb_hh, int T, int B, int I, int H):
    cdef floating[::1] gwi = gw_ih.reshape(-1)
    cdef floating[::1] gwh = gw_hh.reshape(-1)
    cdef floating[::1] gbi_v, gbh_v
    cdef floating* gbi = NULL
    cdef floating* gbh = NULL
    if gb_ih is not None:
        gbi_v = gb_ih
        gbh_v = gb_hh
        gbi = &gbi_v[0]
        gbh = &gbh_v[0]
    with nogil:
        gru_direction_weight_grads(T, B, I, H, &x[0], reset_after, &cache[0], &hprev[0],
                                   &dgi[0] + off, ldgi, &dgh[0], &gwi[0], &gwh[0], gbi, gbh)


def _input_grad(floating[::1] dgi, int ldgi, weights, int rows, int H, int I):
    """dX (rows x I) = Σ_d dgi[:, d*3H:(d+1)*3H] @ W_ih_d: the input gradient, one GEMM per direction."""
    dtype = np.float32 if floating is float else np.float64
    dx = np.empty((rows, I), dtype)
    cdef floating[:, ::1] dx_v = dx
    cdef const floating[::1] w
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
        states, caches, hprevs, weights, revs = [], [], [], [], []
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = layers[k][d]
            weights.append((w_ih, w_hh, zero_bias if b_ih is None else b_ih,
                            zero_bias if b_hh is None else b_hh))
            states.append(h0[k * D + d][perm] if h0 is not None else np.zeros((B, H), dtype))
            revs.append(bool(reverse or d == 1))
            if need_cache:
                caches.append(np.zeros((T, B, 4 * H), dtype))
                hprevs.append(np.zeros((T, B, H), dtype))
        _forward_layer(layer_in.reshape(-1), weights, out.reshape(-1), ts, bs, states, perm,
                       active, T, B, I, H, revs, bool(reset_after), chunk,
                       caches if need_cache else None, hprevs, _threads_for(B, H, D, dtype))
        for d in range(D):
            h_n[k * D + d, perm] = states[d]
        per_dir = list(zip(caches, hprevs)) if need_cache else []
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


def _gru_backward(cache, d_output, d_h_n, grads):
    c = cache
    cdef Py_ssize_t T = c.T, B = c.B, H = c.H, D = c.D, L = len(c.layers)
    cdef Py_ssize_t k, d, I
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
        dstates = [d_h_n[k * D + d][c.perm] if d_h_n is not None else np.zeros((B, H), dtype)
                   for d in range(D)]
        _backward_layer(x_k.reshape(-1), c.layers[k], d_out, d_ts, d_bs, dstates, c.perm,
                        c.active, T, B, I, H, [bool(c.reverse or d == 1) for d in range(D)],
                        bool(c.reset_after), [c.saved[k][d][0].reshape(-1) for d in range(D)],
                        [c.saved[k][d][1].reshape(-1) for d in range(D)], dgi, grads[k],
                        _threads_for(B, H, D, dtype))
        for d in range(D):
            dh0[k * D + d, c.perm] = dstates[d]
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
