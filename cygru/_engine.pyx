# cython: language_level=3
"""Implementation of the engine declared (and documented) in _engine.pxd."""
from libc.string cimport memset, memcpy
from libc.stdint cimport uintptr_t
import numpy as np
from cygru._kernels cimport (cygru_fwd_run, cygru_bwd_run, cygru_dx_run, forward_phase_count,
                             forward_phase_piece, backward_phase_count, backward_phase_piece,
                             input_grad_piece, wgrad_scratch_bytes, gate_pack_size,
                             pack_gate_weights, backward_pack_size, quant_block_size,
                             quant_scratch_size)

# Scratch for the input projection of one direction is at most this many bytes (or one
# step, if a single step is larger), unless all steps of all directions fit in
# PROJECTION_FULL_BYTES: long sequences are projected in chunks of steps, so memory
# beyond the output does not grow with T. (Results do not depend on the chunks.)
cdef enum:
    PROJECTION_CHUNK_BYTES = 2 << 20
    PROJECTION_FULL_BYTES = 16 << 20
    # A threaded direction's hidden units are cut into this many pieces per thread,
    # claimed dynamically every phase: a thread that the OS has descheduled leaves its
    # share to the running ones instead of stalling the step. Two per thread: with one,
    # small-latency and medium under a busy process took 1.43x and 1.95x their idle
    # time, with two 1.30x and 1.86x, idle times alike within noise
    # (benchmarks/under_load.py, 2 vCPUs).
    PIECES_PER_THREAD = 2
    # rows of a backward's weight-gradient chunk: its steps' rows are summed into dW while
    # they are in cache. The sums' order follows the chunks, so the size depends on the
    # batch only, never on the thread count
    WG_CHUNK_ROWS = 256
    # buffers start on their own cache line (the work counters of two directions never
    # share one; the vector kernels read whole lines)
    _LINE = 64

# Batches of at most DOT_MAX_B rows run every product of the forward (the input
# projection and the recurrent products) with the dot kernel (include/cygru_dot.h) straight
# on the caller's row-major weights: no packing, no pack buffers in the workspace. At
# batch 1 each weight is used once per step, so packing W_ih and W_hh (about 10 us at
# I=64, H=128) cost more than a one-step call's arithmetic. The choice depends on B
# only, never on T, on the rows still running or on the thread count: a sequence cut
# into calls, or run on any number of threads, gives the same bits.
# Measured per step (us; median of calls, best of 3 rounds; float32, I = H, 1 thread,
# 2-vCPU AMD EPYC Zen 4 (AVX-512), shared; packing included), dot / packed:
#   T=1   H=64:  B=1 15.5/18.5  B=2 16.4/19.3  B=4 17.9/20.6  B=8 21.6/22.1  B=16 27.5/26.0
#         H=128: B=1 18.2/32.0  B=2 20.7/34.1  B=4 24.0/38.7  B=8 32.2/42.3  B=16 50.9/57.7
#         H=256: B=1 41.3/152   B=2 49.2/158   B=4 60.2/179   B=8 86.4/186   B=16 135/226
#         H=512: B=1 252/726    B=2 276/752    B=4 261/833    B=8 348/760    B=16 542/920
#   T=50  H=64:  B=1 1.29/1.03  B=2 2.11/1.60  B=4 3.48/2.78  B=8 6.59/4.34  B=16 12.6/8.18
#         H=128: B=1 3.15/2.93  B=2 5.32/4.79  B=4 8.65/8.61  B=8 17.4/13.2  B=16 33.9/26.5
#         H=256: B=1 9.90/10.5  B=2 17.1/18.0  B=4 29.7/33.0  B=8 56.1/47.9  B=16 121/88.3
#         H=512: B=1 117/121    B=2 142/155    B=4 163/212    B=8 278/224    B=16 481/432
# (T=1 is a call's fixed costs, Python's included.) Up to B=4 the dot kernel wins every
# one-step call (1.15-3.7x) and every sequence from H=256 on, and is within 11% at
# H=128; at H=64 a long sequence pays up to 1.3x (its K=64 products are short next to
# the kernel's fixed 16-lane reduction). From B=8 the packed kernel's register blocking
# wins sequences at every H.
cdef enum:
    DOT_MAX_B = 4

# the threshold in use (DOT_MAX_B; _set_dot_max_b changes it for tests and measurements)
cdef int dot_max_b = DOT_MAX_B
DOT_MAX_BATCH = DOT_MAX_B

# for cygru.capi (its PROJECTION_CHUNK_BYTES) and cygru._cpu (the same values)
PROJECTION_CHUNK = PROJECTION_CHUNK_BYTES
PIECES = PIECES_PER_THREAD


# -- planning ----------------------------------------------------------------------------

cdef void thread_plan(int n_threads, int D, int H, int pieces_per_thread, int* per_dir,
                      int* n_sets, int* n_pieces) noexcept nogil:
    # a group of threads per direction, at most one thread per piece and one piece per
    # panel of 16 hidden units (pieces are whole panels of the packed weights, so their
    # layout does not depend on the plan); with fewer threads than directions, a thread
    # runs directions one after the other
    cdef int panels = (H + 15) // 16
    cdef int per = n_threads // D
    if per < 1:
        per = 1
    if per > panels:
        per = panels
    per_dir[0] = per
    n_sets[0] = per * D if n_threads >= D else n_threads
    if n_threads <= 1:
        n_pieces[0] = 1                 # one thread: the whole hidden range, one claim
    else:
        n_pieces[0] = pieces_per_thread * per if pieces_per_thread * per < panels else panels


cdef inline int _cut(int H, int parts, int k) noexcept nogil:
    """Bound k of `parts` (<= ceil(H/16)) slices of H units: at multiples of 16 (whole
    panels of the packed weights), every slice at least one panel."""
    if k >= parts:
        return H
    return 16 * <int>(<long>((H + 15) // 16) * k // parts)


cdef int chunk_steps(int T, int B, int H, int D, int itemsize) noexcept nogil:
    cdef size_t per_step = <size_t>B * 3 * <size_t>H * itemsize
    cdef size_t c
    if per_step == 0 or <double>T * per_step * D <= PROJECTION_FULL_BYTES:
        return T
    c = PROJECTION_CHUNK_BYTES // per_step
    if c > <size_t>T:
        c = T
    return <int>c if c >= 1 else 1


cdef int schedule(int T, int B, const int* lengths, Py_ssize_t* perm, int* active,
                  int* counts) noexcept nogil:
    cdef int b, t, l, acc
    if lengths == NULL:
        for b in range(B):
            perm[b] = b
        for t in range(T):
            active[t] = B
        return 0
    memset(counts, 0, (<size_t>T + 1) * sizeof(int))
    for b in range(B):
        l = lengths[b]
        if l < 1 or l > T:
            return 1
        counts[l] += 1
    # active[t] = #{b : L_b > t} = Σ_{l > t} counts[l]
    acc = 0
    for t in range(T - 1, -1, -1):
        acc += counts[t + 1]
        active[t] = acc
    # rows of length l start after all longer rows: at #{b : L_b > l} = active[l] (0 for l = T)
    counts[T] = 0
    for l in range(1, T):
        counts[l] = active[l]
    for b in range(B):
        l = lengths[b]
        perm[counts[l]] = b
        counts[l] += 1
    return 0


# -- carving a workspace -------------------------------------------------------------------

ctypedef struct _Arena:
    char* base          # aligned start, or NULL: only count
    size_t used
    double total        # the same sum in floating point: sizes that would wrap size_t


cdef inline void _arena_init(_Arena* a, void* work) noexcept nogil:
    a.base = NULL
    if work != NULL:
        a.base = <char*>((<uintptr_t>work + _LINE - 1) // _LINE * _LINE)
    a.used = 0
    a.total = 0


cdef inline void* _take(_Arena* a, size_t count, size_t size) noexcept nogil:
    """The next `count` items of `size` bytes, on a cache line of their own (NULL when
    only counting)."""
    cdef size_t n = (count * size + _LINE - 1) // _LINE * _LINE
    cdef void* p = NULL
    a.total += <double>count * size + _LINE
    if a.base != NULL:
        p = a.base + a.used
    a.used += n
    return p


cdef inline size_t _arena_size(const _Arena* a) noexcept nogil:
    # + a line: the caller's pointer may need aligning; 0: beyond 2^61 bytes, more than
    # any machine has (and far from wrapping size_t, which the float sum cannot do)
    if a.total + 2 * _LINE > 2305843009213693952.0:
        return 0
    return a.used + _LINE


cdef inline int _pieces_per_thread(const cygru_problem* pb) noexcept nogil:
    # reduced-precision products are 2-4x faster while every piece prepares (quantizes)
    # its rows of the state itself: one piece per thread keeps that preparation from
    # outweighing the balance that more pieces give
    return 1 if pb.wformat != WFORMAT_FLOAT else PIECES_PER_THREAD


cdef int _pieces_setup(_Arena* a, int n_threads, int D, int H, int pieces_per_thread,
                       int* n_pieces_out, int** bounds_out) noexcept nogil:
    """The thread plan's pieces: their count and unit bounds (taken from the arena);
    returns the widest piece."""
    cdef int per_dir, n_sets, n_pieces
    thread_plan(n_threads, D, H, pieces_per_thread, &per_dir, &n_sets, &n_pieces)
    cdef int* bounds = <int*>_take(a, n_pieces + 1, sizeof(int))
    cdef int k, U_max = 0
    n_pieces_out[0] = n_pieces
    bounds_out[0] = bounds
    for k in range(n_pieces):
        if _cut(H, n_pieces, k + 1) - _cut(H, n_pieces, k) > U_max:
            U_max = _cut(H, n_pieces, k + 1) - _cut(H, n_pieces, k)
        if bounds != NULL:
            bounds[k] = _cut(H, n_pieces, k)
    if bounds != NULL:
        bounds[n_pieces] = H
    return U_max


cdef size_t _forward_setup(const cygru_problem* pb, const cygru_dir_weights* w,
                           const void* const* prepared, bint is_prepared,
                           const cygru_forward_io* io, int n_threads, void* work,
                           cygru_fwd_run** runs_out) noexcept nogil:
    """Carve the forward's workspace and fill its structs (work NULL: only count). With
    is_prepared, direction d's weights are the prepared block prepared[d] (w is not
    read) and the workspace holds no packing."""
    cdef _Arena a
    cdef int T = pb.T, B = pb.B, I = pb.In, H = pb.H, D = pb.D, d
    cdef size_t it = pb.itemsize, BH = <size_t>B * H
    cdef int P
    cdef int chunk = min(pb.chunk, T) if pb.chunk > 0 else chunk_steps(T, B, H, D, pb.itemsize)
    # small batches: every product by the dot kernel on the caller's weights, nothing
    # packed (decided by B alone: see DOT_MAX_B)
    cdef bint use_dot = (pb.kernel_rows if pb.kernel_rows > 0 else B) <= dot_max_b
    # reduced-precision weights: one kernel at every batch size, nothing packed per call,
    # a product scratch per piece (the activations' quantized rows)
    cdef bint quant = pb.wformat != WFORMAT_FLOAT
    cdef size_t qslot = quant_scratch_size(I if I > H else H, pb.wformat) if quant else 0
    if quant:
        use_dot = False
    cdef cygru_fwd_run* runs
    cdef cygru_fwd_run* s
    cdef int* bounds
    cdef cygru_dir_weights wd
    _arena_init(&a, work)
    _pieces_setup(&a, n_threads, D, H, _pieces_per_thread(pb), &P, &bounds)
    runs = <cygru_fwd_run*>_take(&a, D, sizeof(cygru_fwd_run))
    for d in range(D):
        s = &runs[d] if runs != NULL else NULL
        if s != NULL:
            s.T, s.B, s.In, s.H, s.itemsize = T, B, I, H, pb.itemsize
            s.chunk, s.n_pieces = chunk, P
            s.reverse, s.reset_after = pb.reverse or d == 1, pb.reset_after
            s.x = io.x
            if is_prepared:
                _prepared_dir(H, I, pb.itemsize, prepared[d], &wd, &s.pack_ih, &s.pack_hh)
            else:
                wd = w[d]
            s.w_ih, s.w_hh, s.b_ih, s.b_hh = wd.w_ih, wd.w_hh, wd.b_ih, wd.b_hh
            s.prepared = is_prepared
            s.bounds = bounds
            s.out = <char*>io.out + <size_t>d * H * it
            s.out_ts, s.out_bs = io.out_ts, io.out_bs
            s.state = <char*>io.states + d * BH * it
            s.perm, s.active = pb.perm, pb.active
            s.cache = s.hprev = NULL
            if io.caches != NULL:
                s.cache = <char*>io.caches + <size_t>d * T * 4 * BH * it
                s.hprev = <char*>io.hprevs + <size_t>d * T * BH * it
        pack_ih = pack_hh = NULL
        if not use_dot and not is_prepared and not quant:
            pack_ih = _take(&a, gate_pack_size(H, I), it)
            pack_hh = _take(&a, gate_pack_size(H, H), it)
        bias = _take(&a, 6 * <size_t>H, it)
        gh = _take(&a, 3 * BH, it)
        state_alt = _take(&a, BH, it)
        gi_buf = _take(&a, <size_t>chunk * 3 * BH, it)
        rh_buf = _take(&a, BH, it)
        qscratch = _take(&a, P * qslot, 1) if quant else NULL
        if s != NULL:
            s.wformat = pb.wformat
            s.qscratch, s.qscratch_slot = qscratch, qslot
            if not is_prepared:
                s.pack_ih, s.pack_hh = pack_ih, pack_hh
            s.use_dot = use_dot
            s.bias, s.gh = bias, gh
            s.state_alt, s.gi_buf, s.rh_buf = state_alt, gi_buf, rh_buf
    if runs_out != NULL:
        runs_out[0] = runs
    return _arena_size(&a)


cdef size_t forward_work_size(const cygru_problem* pb, int n_threads) noexcept nogil:
    return _forward_setup(pb, NULL, NULL, False, NULL, n_threads, NULL, NULL)


cdef size_t forward_work_size_prepared(const cygru_problem* pb, int n_threads) noexcept nogil:
    return _forward_setup(pb, NULL, NULL, True, NULL, n_threads, NULL, NULL)


# The threads: cygru's own worker pool (include/cygru_pool.h), not an OpenMP region. The
# calling thread publishes the layer's directions as a job, does work itself and returns
# as soon as all of it is done, never waiting for a worker that has not claimed a piece
# (a region's closing barrier waited for every team thread: a worker another process
# had pushed off its core cost a scheduler tick). See cygru_pool.h for the invariants.
#
# fork(): the pool's threads do not survive it. pthread_atfork's child handler clears the
# pool, and the child's first threaded call starts fresh workers: a child runs with its
# threads, whenever it was forked (os.fork, multiprocessing's "fork", a fork from C).
cdef extern from "cygru_pool.h" nogil:
    ctypedef void (*cygru_piece_fn)(void* run, long phase, int piece) noexcept nogil
    int cygru_pool_run(cygru_piece_fn fn, int D, int n, void* const* runs, const long* K,
                       const int* P)
    int cygru_pool_workers()
    void cygru_pool_reset()
    long cygru_pool_spin_ns
    int cygru_pool_spin_yield
    int cygru_pool_chaos
    void cygru_pool_set_policy(long spin_ns, int use_yield, int chaos)
    void cygru_pool_get_stats(long* out, int reset)
    int CYGRU_POOL_MAX_DIRS


cdef extern from *:
    """
    #include "cygru_pool.h"
    static int cygru_forked = 0;   /* forked from a process whose pool had workers */
    static void cygru_after_fork_in_child(void) {
        cygru_forked = cygru_pool_workers() > 0;
        cygru_pool_reset();
    }
    """
    int cygru_forked
    void cygru_after_fork_in_child() noexcept nogil


cdef extern from "pthread.h" nogil:
    int pthread_atfork(void (*prepare)() noexcept nogil, void (*parent)() noexcept nogil,
                       void (*child)() noexcept nogil)


if pthread_atfork(NULL, NULL, cygru_after_fork_in_child) != 0:
    raise ImportError("cygru._engine: pthread_atfork failed (out of memory)")


def _spin_policy_from_env(environ):
    """(spin ns, yield) from CYGRU_SPIN_US (microseconds a waiting thread spins before it
    sleeps, default 50) and CYGRU_SPIN_YIELD (1: sched_yield instead of the pause hint
    while spinning): a private tuning aid for benchmarks/under_load.py, read at import."""
    us = environ.get("CYGRU_SPIN_US", "").strip()
    yl = environ.get("CYGRU_SPIN_YIELD", "").strip()
    ns = 50000
    if us:
        try:
            v = float(us)
        except ValueError:
            v = -1.0
        if not (0 <= v <= 1e6):
            raise ValueError(f"cygru: CYGRU_SPIN_US must be microseconds in [0, 1e6], got {us!r}")
        ns = int(v * 1000)
    if yl not in ("", "0", "1"):
        raise ValueError(f"cygru: CYGRU_SPIN_YIELD must be 0 or 1, got {yl!r}")
    return ns, yl == "1"


def _set_spin_policy(long ns, bint use_yield):
    """Set the waiting policy (tests and benchmarks): spin `ns` nanoseconds, pausing or
    (use_yield) yielding, then sleep on a futex."""
    cygru_pool_set_policy(ns, use_yield, cygru_pool_chaos)
    return spin_policy()


def spin_policy():
    """The waiting policy in force: (spin ns, yield)."""
    return cygru_pool_spin_ns, bool(cygru_pool_spin_yield)


def _set_chaos(int every):
    """Test hook: with every > 0, the pool's threads yield or sleep (up to 0.2 ms) at
    random at the protocol's windows, about once in `every` times (0: off)."""
    cygru_pool_set_policy(cygru_pool_spin_ns, cygru_pool_spin_yield, every)


def _pool_stats(bint reset=False):
    """Diagnostics: (waits, total ns, longest ns) of the calling threads' phase waits
    that went past the spin to sleep (a phase held up by a piece a worker claimed);
    reset: start counting again."""
    cdef long out[3]
    cygru_pool_get_stats(out, reset)
    return out[0], out[1], out[2]


def pool_workers():
    """Worker threads the pool has started in this process (0 before the first threaded
    call, and in a freshly forked child)."""
    return cygru_pool_workers()


_ns, _yield = _spin_policy_from_env(__import__("os").environ)
_set_spin_policy(_ns, _yield)
del _ns, _yield


cdef bint in_forked_child() noexcept nogil:
    return cygru_forked != 0


def forked_child():
    """Whether this process was forked from one whose cygru pool had started workers
    (informational: the child starts its own when it needs them)."""
    return cygru_forked != 0


cdef void _run_directions(cygru_piece_fn piece, char* runs, size_t stride, int D, int n_sets,
                          const long* K, int P) noexcept nogil:
    """Run D directions (their structs `stride` bytes apart, K[d] phases of P pieces) on
    n_sets threads: the calling thread and up to n_sets - 1 pool workers that join while
    there is work. When the pool is busy with another call (or n_sets is 1), the calling
    thread runs every direction alone (the same bits: results never depend on who does a
    piece)."""
    cdef void* ptrs[2]
    cdef long ks[2]
    cdef int ps[2]
    cdef int d, p
    cdef long k
    if n_sets > 1 and D <= CYGRU_POOL_MAX_DIRS and D <= 2:
        for d in range(D):
            ptrs[d] = runs + d * stride
            ks[d] = K[d]
            ps[d] = P
        if cygru_pool_run(piece, D, n_sets, ptrs, ks, ps):
            return
    # alone: every phase's pieces in order, so each phase ends before the next starts
    for d in range(D):
        for k in range(K[d]):
            for p in range(P):
                piece(runs + d * stride, k, p)


cdef void layer_forward(const cygru_problem* pb, const cygru_dir_weights* w,
                        const cygru_forward_io* io, void* work, int n_threads) noexcept nogil:
    _layer_forward(pb, w, NULL, False, io, work, n_threads)


cdef void layer_forward_prepared(const cygru_problem* pb, const void* const* prepared,
                                 const cygru_forward_io* io, void* work,
                                 int n_threads) noexcept nogil:
    _layer_forward(pb, NULL, prepared, True, io, work, n_threads)


cdef void _layer_forward(const cygru_problem* pb, const cygru_dir_weights* w,
                         const void* const* prepared, bint is_prepared,
                         const cygru_forward_io* io, void* work, int n_threads) noexcept nogil:
    cdef cygru_fwd_run* runs
    cdef int per_dir, n_sets, P, d
    cdef long K[2]
    cdef size_t BH = <size_t>pb.B * pb.H
    _forward_setup(pb, w, prepared, is_prepared, io, n_threads, work, &runs)
    thread_plan(n_threads, pb.D, pb.H, _pieces_per_thread(pb), &per_dir, &n_sets, &P)
    for d in range(min(pb.D, 2)):
        K[d] = forward_phase_count(&runs[d])
    _run_directions(forward_phase_piece, <char*>runs, sizeof(cygru_fwd_run),
                    pb.D, n_sets, K, P)
    if pb.T % 2 == 1:
        # after an odd number of steps h_n is in state_alt
        for d in range(pb.D):
            memcpy(runs[d].state, runs[d].state_alt, BH * pb.itemsize)


cdef size_t _backward_setup(const cygru_problem* pb, const cygru_dir_weights* w,
                            const cygru_backward_io* io, const cygru_dir_grads* grads,
                            int n_threads, void* work, cygru_bwd_run** runs_out,
                            cygru_dx_run* dx_out) noexcept nogil:
    """Carve the backward's workspace and fill its structs (work NULL: only count)."""
    cdef _Arena a
    cdef int T = pb.T, B = pb.B, H = pb.H, D = pb.D, d, t
    cdef size_t it = pb.itemsize, BH = <size_t>B * H
    cdef int P, U_max, n_slots, wg_chunk
    cdef Py_ssize_t slot
    cdef size_t wg_slot = wgrad_scratch_bytes(pb.itemsize)
    cdef cygru_bwd_run* runs
    cdef cygru_bwd_run* s
    cdef int* bounds
    cdef void* dgi
    cdef void* wg
    _arena_init(&a, work)
    U_max = _pieces_setup(&a, n_threads, D, H, _pieces_per_thread(pb), &P, &bounds)
    slot = backward_pack_size(U_max, H)
    runs = <cygru_bwd_run*>_take(&a, D, sizeof(cygru_bwd_run))
    dgi = _take(&a, <size_t>T * D * 3 * BH, it)     # (T*B, D*3H)
    # the products' scratch: one slot per piece of every direction (the weight-gradient
    # phase), reused by the input gradient's pieces after the directions' runs
    n_slots = D * P
    wg = _take(&a, <size_t>n_slots, wg_slot)
    if dgi != NULL:
        # rows of steps that run are written by the phases (ended rows as zeros); the
        # steps where no row runs (at the end: active[] does not grow) are zeros
        for t in range(T):
            if pb.active[t] == 0:
                memset(<char*>dgi + <size_t>t * D * 3 * BH * it, 0, <size_t>D * 3 * BH * it)
        dx_out.TB, dx_out.In, dx_out.H, dx_out.D = T * B, pb.In, H, D
        dx_out.itemsize, dx_out.n_pieces = pb.itemsize, n_slots
        dx_out.dgi, dx_out.ldgi = dgi, D * 3 * H
        dx_out.dx = io.dx
        dx_out.scratch, dx_out.slot = wg, wg_slot
    # about WG_CHUNK_ROWS rows per weight-gradient chunk: a piece's columns of the
    # chunk's dgi and dgh, and its x and h_prev rows, stay in its core's cache; dgh is
    # kept for one chunk only
    wg_chunk = WG_CHUNK_ROWS // B if B < WG_CHUNK_ROWS else 1
    if wg_chunk > T:
        wg_chunk = T
    for d in range(D):
        s = &runs[d] if runs != NULL else NULL
        pack = _take(&a, <size_t>P * slot, it)
        drh = _take(&a, BH, it)
        dgh = _take(&a, <size_t>wg_chunk * 3 * BH, it)  # (wg_chunk, B, 3H) sorted
        if s != NULL:
            s.wg_chunk = wg_chunk
            s.T, s.B, s.H, s.In, s.itemsize, s.n_pieces = T, B, H, pb.In, pb.itemsize, P
            s.reverse, s.reset_after = pb.reverse or d == 1, pb.reset_after
            s.w_hh = w[d].w_hh
            dx_out.w_ih[d] = w[d].w_ih
            s.bounds = bounds
            s.pack, s.pack_slot = pack, slot
            s.wg_scratch, s.wg_slot = <char*>wg + <size_t>d * P * wg_slot, wg_slot
            s.d_out = NULL
            if io.d_out != NULL:
                s.d_out = <const char*>io.d_out + <size_t>d * H * it
            s.d_ts, s.d_bs = io.d_ts, io.d_bs
            s.dstate = <char*>io.dstates + d * BH * it
            s.perm, s.active = pb.perm, pb.active
            s.cache = <const char*>io.caches + <size_t>d * T * 4 * BH * it
            s.hprev = <const char*>io.hprevs + <size_t>d * T * BH * it
            s.x = io.x
            s.dgi, s.ldgi = <char*>dgi + <size_t>d * 3 * H * it, D * 3 * H
            s.dgh, s.drh_buf = dgh, drh
            s.gw_ih, s.gw_hh = grads[d].gw_ih, grads[d].gw_hh
            s.gb_ih, s.gb_hh = grads[d].gb_ih, grads[d].gb_hh
            # the first processing step with running rows (some always has: B > 0)
            s.first_st = 0
            while s.first_st < T and pb.active[s.first_st if s.reverse else T - 1 - s.first_st] == 0:
                s.first_st += 1
            s.n_steps = 0
            for t in range(T):
                if pb.active[t] > 0:
                    s.n_steps += 1
    if runs_out != NULL:
        runs_out[0] = runs
    return _arena_size(&a)


cdef size_t backward_work_size(const cygru_problem* pb, int n_threads) noexcept nogil:
    return _backward_setup(pb, NULL, NULL, NULL, n_threads, NULL, NULL, NULL)


cdef void layer_backward(const cygru_problem* pb, const cygru_dir_weights* w,
                         const cygru_backward_io* io, const cygru_dir_grads* grads,
                         void* work, int n_threads) noexcept nogil:
    # every direction's time loop and then its weight gradients (its own pieces), then
    # dx from every direction's dgi, in pieces of rows; no BLAS is called (cygru_wgrad.h)
    cdef cygru_bwd_run* runs
    cdef cygru_dx_run dxr
    cdef int per_dir, n_sets, P, d
    cdef long K[2]
    _backward_setup(pb, w, io, grads, n_threads, work, &runs, &dxr)
    thread_plan(n_threads, pb.D, pb.H, _pieces_per_thread(pb), &per_dir, &n_sets, &P)
    for d in range(min(pb.D, 2)):
        K[d] = backward_phase_count(&runs[d])
    _run_directions(backward_phase_piece, <char*>runs, sizeof(cygru_bwd_run),
                    pb.D, n_sets, K, P)
    K[0] = 1
    _run_directions(input_grad_piece, <char*>&dxr, sizeof(cygru_dx_run), 1, n_sets, K,
                    dxr.n_pieces)


# -- one step (GRUCell, the C API's cell_step) ---------------------------------------------

cdef size_t _step_setup(int B, int In, int H, int itemsize, void* work, Py_ssize_t** perm,
                        int** active, char** state, char** zero_bias,
                        char** scratch) noexcept nogil:
    """Carve a step's workspace (work NULL: only count): the identity schedule, the
    running state, a zero bias and the layer's scratch."""
    cdef _Arena a
    cdef cygru_problem pb
    cdef size_t layer
    scratch[0] = NULL
    _arena_init(&a, work)
    perm[0] = <Py_ssize_t*>_take(&a, B, sizeof(Py_ssize_t))
    active[0] = <int*>_take(&a, 1, sizeof(int))
    state[0] = <char*>_take(&a, <size_t>B * H, itemsize)
    zero_bias[0] = <char*>_take(&a, 3 * <size_t>H, itemsize)
    pb.T, pb.B, pb.In, pb.H, pb.D, pb.itemsize, pb.chunk = 1, B, In, H, 1, itemsize, 0
    pb.kernel_rows = 0
    pb.wformat = WFORMAT_FLOAT
    layer = forward_work_size(&pb, 1)
    if layer == 0:
        return 0
    scratch[0] = <char*>_take(&a, layer, 1)
    return _arena_size(&a)


cdef size_t step_work_size(int B, int In, int H, int itemsize) noexcept nogil:
    cdef Py_ssize_t* perm
    cdef int* active
    cdef char* state
    cdef char* zero_bias
    cdef char* scratch
    return _step_setup(B, In, H, itemsize, NULL, &perm, &active, &state, &zero_bias,
                       &scratch)


cdef bint step_needs_input_size(int B) noexcept nogil:
    return B > dot_max_b


cdef void step_forward(int B, int In, int H, int itemsize, bint reset_after,
                       const void* x, const void* h, const void* w_ih, const void* w_hh,
                       const void* b_ih, const void* b_hh, void* h_out,
                       void* work) noexcept nogil:
    cdef Py_ssize_t* perm
    cdef int* active
    cdef char* state
    cdef char* zero_bias
    cdef char* scratch
    cdef cygru_problem pb
    cdef cygru_dir_weights w
    cdef cygru_forward_io io
    cdef size_t bh = <size_t>B * H * itemsize
    cdef int b
    _step_setup(B, In, H, itemsize, work, &perm, &active, &state, &zero_bias, &scratch)
    for b in range(B):
        perm[b] = b
    active[0] = B
    if h == NULL:
        memset(state, 0, bh)
    else:
        memcpy(state, h, bh)              # h is read here, before h_out is written
    if b_ih == NULL or b_hh == NULL:
        memset(zero_bias, 0, 3 * <size_t>H * itemsize)
    w.w_ih, w.w_hh = w_ih, w_hh
    w.b_ih = b_ih if b_ih != NULL else zero_bias
    w.b_hh = b_hh if b_hh != NULL else zero_bias
    pb.T, pb.B, pb.In, pb.H, pb.D, pb.itemsize, pb.chunk = 1, B, In, H, 1, itemsize, 0
    pb.kernel_rows = 0
    pb.wformat = WFORMAT_FLOAT
    pb.reset_after, pb.reverse, pb.perm, pb.active = reset_after, False, perm, active
    io.x = x
    io.out, io.out_ts, io.out_bs = h_out, <Py_ssize_t>B * H, H
    io.states = state
    io.caches = io.hprevs = NULL
    layer_forward(&pb, &w, &io, scratch, 1)

# -- prepared weights: a direction's packing made once, read by any number of calls --------

cdef inline size_t _lines(size_t nbytes) noexcept nogil:
    return (nbytes + _LINE - 1) // _LINE * _LINE


cdef size_t dir_prepared_size(int H, int In, int itemsize) noexcept nogil:
    # W_ih's packing, W_hh's, b_ih, b_hh, then row-major copies of W_ih and W_hh (the
    # dot kernel's operands, for batches of at most DOT_MAX_B rows: the same bits as a
    # call on the live weights at every batch size): each on lines of its own
    return (_lines(<size_t>gate_pack_size(H, In) * itemsize)
            + _lines(<size_t>gate_pack_size(H, H) * itemsize)
            + 2 * _lines(3 * <size_t>H * itemsize)
            + _lines(3 * <size_t>H * In * itemsize)
            + _lines(3 * <size_t>H * H * itemsize))


cdef void prepare_direction(int H, int In, int itemsize, const cygru_dir_weights* w,
                            void* dst) noexcept nogil:
    cdef char* p = <char*>dst
    cdef size_t gate_bytes = 3 * <size_t>H * itemsize
    pack_gate_weights(H, In, itemsize, w.w_ih, p)
    p += _lines(<size_t>gate_pack_size(H, In) * itemsize)
    pack_gate_weights(H, H, itemsize, w.w_hh, p)
    p += _lines(<size_t>gate_pack_size(H, H) * itemsize)
    if w.b_ih != NULL:
        memcpy(p, w.b_ih, gate_bytes)
    else:
        memset(p, 0, gate_bytes)
    p += _lines(gate_bytes)
    if w.b_hh != NULL:
        memcpy(p, w.b_hh, gate_bytes)
    else:
        memset(p, 0, gate_bytes)
    p += _lines(gate_bytes)
    memcpy(p, w.w_ih, gate_bytes * In)
    p += _lines(gate_bytes * In)
    memcpy(p, w.w_hh, gate_bytes * H)


cdef void _prepared_dir(int H, int In, int itemsize, const void* block, cygru_dir_weights* w,
                        void** pack_ih, void** pack_hh) noexcept nogil:
    """The parts of a block of prepare_direction: the packings, the biases and the
    row-major copies of the weights (never the live weights)."""
    cdef char* p = <char*>block
    cdef size_t gate_bytes = 3 * <size_t>H * itemsize
    pack_ih[0] = p
    p += _lines(<size_t>gate_pack_size(H, In) * itemsize)
    pack_hh[0] = p
    p += _lines(<size_t>gate_pack_size(H, H) * itemsize)
    w.b_ih = p
    p += _lines(gate_bytes)
    w.b_hh = p
    p += _lines(gate_bytes)
    w.w_ih = p
    p += _lines(gate_bytes * In)
    w.w_hh = p


cdef size_t model_prepared_size(int In, int H, int L, int D, int itemsize) noexcept nogil:
    cdef size_t n = 0
    cdef int k
    for k in range(L):
        n += D * dir_prepared_size(H, In if k == 0 else D * H, itemsize)
    return n


cdef void model_prepare(int In, int H, int L, int D, int itemsize,
                        const cygru_dir_weights* dirs, void* dst) noexcept nogil:
    cdef char* p = <char*>dst
    cdef int k, d, I_k
    for k in range(L):
        I_k = In if k == 0 else D * H
        for d in range(D):
            prepare_direction(H, I_k, itemsize, &dirs[<Py_ssize_t>k * D + d], p)
            p += dir_prepared_size(H, I_k, itemsize)


# -- a whole model (the C API) -------------------------------------------------------------

ctypedef struct _ModelWork:
    Py_ssize_t* perm
    int* active
    int* counts
    char* state
    char* zero_bias
    char* scratch
    char* bufs[2]


cdef size_t _model_setup(int T, int B, int In, int H, int L, int D, int itemsize,
                         bint is_prepared, int wformat, void* work,
                         _ModelWork* m) noexcept nogil:
    """Carve a model call's workspace (work NULL: only count): the schedule, the
    sorted states, a zero bias, one layer's scratch and 0-2 buffers for the outputs
    of the layers below the last."""
    cdef _Arena a
    cdef size_t it = itemsize, BH = <size_t>B * H, layer = 0, n
    cdef cygru_problem pb
    cdef int k
    _arena_init(&a, work)
    m.scratch = m.bufs[0] = m.bufs[1] = NULL
    m.perm = <Py_ssize_t*>_take(&a, B, sizeof(Py_ssize_t))
    m.active = <int*>_take(&a, T, sizeof(int))
    m.counts = <int*>_take(&a, <size_t>T + 1, sizeof(int))
    m.state = <char*>_take(&a, D * BH, it)
    m.zero_bias = <char*>_take(&a, 3 * <size_t>H, it)
    pb.T, pb.B, pb.H, pb.D, pb.itemsize, pb.chunk = T, B, H, D, itemsize, 0
    pb.kernel_rows = 0
    pb.wformat = wformat
    for k in range(2 if L > 1 else 1):
        pb.In = In if k == 0 else D * H
        n = forward_work_size_prepared(&pb, 1) if is_prepared else forward_work_size(&pb, 1)
        if n == 0:
            return 0
        if n > layer:
            layer = n
    m.scratch = <char*>_take(&a, layer, 1)
    m.bufs[0] = m.bufs[1] = NULL
    if L >= 2:
        m.bufs[0] = <char*>_take(&a, <size_t>T * D * BH, it)
    if L >= 3:
        m.bufs[1] = <char*>_take(&a, <size_t>T * D * BH, it)
    return _arena_size(&a)


cdef size_t model_work_size(int T, int B, int In, int H, int L, int D,
                            int itemsize) noexcept nogil:
    cdef _ModelWork m
    return _model_setup(T, B, In, H, L, D, itemsize, False, WFORMAT_FLOAT, NULL, &m)


cdef size_t model_work_size_prepared(int T, int B, int In, int H, int L, int D,
                                     int itemsize) noexcept nogil:
    cdef _ModelWork m
    return _model_setup(T, B, In, H, L, D, itemsize, True, WFORMAT_FLOAT, NULL, &m)


cdef int model_forward(int T, int B, int In, int H, int L, int D, int itemsize,
                       bint reset_after, bint reverse, const cygru_dir_weights* dirs,
                       const void* x, const void* h0, const int* lengths, void* output,
                       void* h_n, void* work) noexcept nogil:
    return _model_forward(T, B, In, H, L, D, itemsize, reset_after, reverse, dirs, NULL,
                          WFORMAT_FLOAT, x, h0, lengths, output, h_n, work)


cdef size_t quant_matrix_size(int H, int K, int wformat) noexcept nogil:
    return 3 * quant_block_size(H, K, wformat)


cdef size_t model_work_size_quantized(int T, int B, int In, int H, int L, int D,
                                      int wformat) noexcept nogil:
    cdef _ModelWork m
    return _model_setup(T, B, In, H, L, D, 4, False, wformat, NULL, &m)


cdef int model_forward_quantized(int T, int B, int In, int H, int L, int D, int wformat,
                                 bint reset_after, bint reverse,
                                 const cygru_dir_weights* dirs, const void* x,
                                 const void* h0, const int* lengths, void* output,
                                 void* h_n, void* work) noexcept nogil:
    return _model_forward(T, B, In, H, L, D, 4, reset_after, reverse, dirs, NULL, wformat,
                          x, h0, lengths, output, h_n, work)


cdef int model_forward_prepared(int T, int B, int In, int H, int L, int D, int itemsize,
                                bint reset_after, bint reverse, const void* prepared,
                                const void* x, const void* h0, const int* lengths,
                                void* output, void* h_n, void* work) noexcept nogil:
    return _model_forward(T, B, In, H, L, D, itemsize, reset_after, reverse, NULL, prepared,
                          WFORMAT_FLOAT, x, h0, lengths, output, h_n, work)


cdef int _model_forward(int T, int B, int In, int H, int L, int D, int itemsize,
                        bint reset_after, bint reverse, const cygru_dir_weights* dirs,
                        const void* prepared, int wformat, const void* x, const void* h0,
                        const int* lengths, void* output, void* h_n,
                        void* work) noexcept nogil:
    """model_forward (dirs), model_forward_prepared (prepared, dirs NULL) or
    model_forward_quantized (dirs of wformat's blocks)."""
    cdef _ModelWork m
    cdef size_t it = itemsize, BH = <size_t>B * H, row = <size_t>H * itemsize
    cdef cygru_problem pb
    cdef cygru_forward_io io
    cdef cygru_dir_weights w[2]
    cdef const void* blocks[2]
    cdef const char* block = <const char*>prepared
    cdef int k, d, i
    cdef char* s
    cdef const char* src
    _model_setup(T, B, In, H, L, D, itemsize, prepared != NULL, wformat, work, &m)
    if schedule(T, B, lengths, m.perm, m.active, m.counts) != 0:
        return 1
    if B == 0:
        return 0
    memset(m.zero_bias, 0, 3 * <size_t>H * it)
    pb.T, pb.B, pb.H, pb.D, pb.itemsize, pb.chunk = T, B, H, D, itemsize, 0
    pb.kernel_rows = 0
    pb.wformat = wformat
    pb.reset_after, pb.reverse, pb.perm, pb.active = reset_after, reverse, m.perm, m.active
    io.x = x
    io.caches = io.hprevs = NULL
    io.states = m.state
    for k in range(L):
        pb.In = In if k == 0 else D * H
        io.out = output if k == L - 1 else m.bufs[k % 2]
        io.out_ts, io.out_bs = <Py_ssize_t>D * B * H, <Py_ssize_t>D * H
        for d in range(D):
            if prepared != NULL:
                blocks[d] = block
                block += dir_prepared_size(H, pb.In, itemsize)
            else:
                w[d] = dirs[<Py_ssize_t>k * D + d]
                if w[d].b_ih == NULL:
                    w[d].b_ih = m.zero_bias
                if w[d].b_hh == NULL:
                    w[d].b_hh = m.zero_bias
            # h0 gathered into sorted order (before any h_n is written: h_n may be h0)
            s = m.state + d * BH * it
            if h0 == NULL:
                memset(s, 0, BH * it)
            else:
                src = <const char*>h0 + (<size_t>k * D + d) * BH * it
                for i in range(B):
                    memcpy(s + <size_t>i * row, src + <size_t>m.perm[i] * row, row)
        if prepared != NULL:
            layer_forward_prepared(&pb, blocks, &io, m.scratch, 1)
        else:
            layer_forward(&pb, w, &io, m.scratch, 1)
        if h_n != NULL:
            for d in range(D):
                s = m.state + d * BH * it
                for i in range(B):
                    memcpy(<char*>h_n + (<size_t>k * D + d) * BH * it + <size_t>m.perm[i] * row,
                           s + <size_t>i * row, row)
        io.x = io.out
    return 0


def lengths_schedule(lengths, int T, int B):
    """The sorted-batch schedule of host `lengths` (validated: each in [1, T]; None: all
    T) for Python callers (the CPU and GPU backends): perm (sorted row -> batch row,
    intp) and active rows per step (intc), by schedule()'s counting sort."""
    perm = np.empty(max(B, 1), np.intp)
    active = np.empty(max(T, 1), np.intc)
    cdef Py_ssize_t[::1] pv = perm
    cdef int[::1] av = active
    cdef int[::1] lv
    cdef int[::1] cv = np.empty(T + 1, np.intc)
    cdef const int* lp = NULL
    cdef int status
    if lengths is not None:
        lv = np.ascontiguousarray(lengths, dtype=np.intc)
        lp = &lv[0] if B > 0 else NULL
    with nogil:
        status = schedule(T, B, lp, &pv[0], &av[0], &cv[0])
    if status != 0:
        raise ValueError(f"cygru internal error: lengths outside [1, {T}]")
    return perm[:B], active[:T]


# -- test hooks ------------------------------------------------------------------------------

def _set_dot_max_b(int n):
    """Test and measurement hook: run batches of at most n rows on the dot kernel (0:
    none, a large n: all) instead of DOT_MAX_B; returns the previous value. Not for
    use while other threads run cygru calls (a workspace is sized by the value in use
    when it is asked for)."""
    global dot_max_b
    cdef int old = dot_max_b
    dot_max_b = n
    return old


def _forward_work_size(int T, int B, int In, int H, int D, int itemsize, int n_threads):
    """Bytes of a layer forward's workspace (forward_work_size), for tests."""
    cdef cygru_problem pb
    pb.T, pb.B, pb.In, pb.H, pb.D, pb.itemsize, pb.chunk = T, B, In, H, D, itemsize, 0
    pb.kernel_rows = 0
    pb.wformat = WFORMAT_FLOAT
    return forward_work_size(&pb, n_threads)


def _plan(int n_threads, int D, int H):
    """(threads per direction, threads started, the pieces' unit bounds) of a call on
    n_threads threads: the thread plan and piece cuts of the engine, for tests."""
    cdef int per_dir, n_sets, P
    thread_plan(n_threads, D, H, PIECES_PER_THREAD, &per_dir, &n_sets, &P)
    return per_dir, n_sets, [_cut(H, P, k) for k in range(P + 1)]


def _forward_prepared(x, weights, int H, bint reset_after, bint reverse, int n_threads):
    """One layer's forward over x (T, B, In) from zero states, all sequences full length,
    on weights prepared by prepare_direction (weights: D tuples (w_ih, w_hh, b_ih, b_hh)
    of C-contiguous arrays of x's dtype, biases None for none) and run by
    layer_forward_prepared on n_threads threads: (output (T, B, D*H), h_n (D, B, H)).
    A test hook: tests/test_prepared.py compares it with cygru.GRU for any thread count."""
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], D = len(weights), d
    cdef int itemsize = x.dtype.itemsize
    cdef cygru_problem pb
    cdef cygru_forward_io io
    cdef cygru_dir_weights w
    cdef const void* blocks[2]
    perm, active = lengths_schedule(None, T, B)
    out = np.zeros((T, B, D * H), x.dtype)
    states = np.zeros((D, B, H), x.dtype)
    block_arrays = []
    for d in range(D):
        block = np.zeros(dir_prepared_size(H, I, itemsize) + _LINE, np.uint8)
        block = block[(-block.ctypes.data) % _LINE:]
        w.w_ih = <const void*><uintptr_t>weights[d][0].ctypes.data
        w.w_hh = <const void*><uintptr_t>weights[d][1].ctypes.data
        w.b_ih = w.b_hh = NULL
        if weights[d][2] is not None:
            w.b_ih = <const void*><uintptr_t>weights[d][2].ctypes.data
        if weights[d][3] is not None:
            w.b_hh = <const void*><uintptr_t>weights[d][3].ctypes.data
        prepare_direction(H, I, itemsize, &w, <void*><uintptr_t>block.ctypes.data)
        blocks[d] = <const void*><uintptr_t>block.ctypes.data
        block_arrays.append(block)
    pb.T, pb.B, pb.In, pb.H, pb.D, pb.itemsize, pb.chunk = T, B, I, H, D, itemsize, 0
    pb.kernel_rows = 0
    pb.wformat = WFORMAT_FLOAT
    pb.reset_after, pb.reverse = reset_after, reverse
    pb.perm = <const Py_ssize_t*><uintptr_t>perm.ctypes.data
    pb.active = <const int*><uintptr_t>active.ctypes.data
    io.x = <const void*><uintptr_t>x.ctypes.data
    io.out = <void*><uintptr_t>out.ctypes.data
    io.out_ts, io.out_bs = <Py_ssize_t>B * D * H, D * H
    io.states = <void*><uintptr_t>states.ctypes.data
    io.caches = io.hprevs = NULL
    work = np.empty(forward_work_size_prepared(&pb, n_threads), np.uint8)
    cdef void* wp = <void*><uintptr_t>work.ctypes.data
    with nogil:
        layer_forward_prepared(&pb, blocks, &io, wp, n_threads)
    return out, states
