# cython: language_level=3
"""cygru's compiled GRU kernels: noexcept nogil loops on raw row-major pointers.

Conventions shared by every kernel here (DESIGN.md §2):
- Gate order r, z, n; `reset_after` selects n = tanh(gi_n + r*(W_hn h + b_hn)) (True)
  or n = tanh(gi_n + W_hn (r*h) + b_hn) (False).
- The batch is processed in *sorted* order: `perm[i]` is the original batch row of
  sorted row i, rows sorted by sequence length, longest first. At time step t only
  the first `active[t]` sorted rows are running (packed-sequence semantics). Without
  per-sequence lengths, perm is the identity and active[t] == B.
- `state` (B x H, sorted rows) is the running hidden state: h0 on entry, h_n on exit.
  Rows not yet started keep h0 and finished rows keep their last state, which is what
  makes lengths and the backwards-in-time direction need no special cases.
- `x` is time-major and contiguous: row t*B + b (original order), I columns.
- The output row of (t, original b) is at `out + t*out_ts + b*out_bs` (a strided slice
  of the caller's output, so h_t is written in place for any layout).
- Biases are never NULL (callers pass zeros for bias=False).
- Nothing here allocates, raises or touches a Python object.
"""
from cython cimport floating


cdef extern from "cygru_barrier.h" nogil:
    ctypedef struct cygru_barrier:
        pass
    void cygru_barrier_init(cygru_barrier* b, int n)
    void cygru_barrier_wait(cygru_barrier* b, int* local_sense)
    ctypedef struct cygru_work:
        pass
    void cygru_work_init(cygru_work* w)
    int cygru_piece_claim(int* last, int p, long k)
    void cygru_work_finish(cygru_work* w, long end)
    void cygru_work_wait(cygru_work* w, long end)


cdef void gru_direction_forward(
    int T, int B, int I, int H,
    int u0, int u1,                             # this call's slice of hidden units
    const floating* x,                          # IN  (T*B, I) time-major
    const floating* w_ih, const floating* w_hh,  # IN  (3H, I), (3H, H)
    const floating* b_ih, const floating* b_hh,  # IN  (3H,), (3H,)
    floating* out, Py_ssize_t out_ts, Py_ssize_t out_bs,  # OUT h_t rows (strided)
    floating* state, floating* state_alt,       # IN/OUT (B, H) sorted: h0 -> h_n; WORK (B, H)
    const Py_ssize_t* perm, const int* active,  # IN  (B,), (T,)
    bint reverse, bint reset_after,
    int chunk,                                  # steps per input-projection GEMM
    floating* gi_buf,                           # WORK (chunk*B rows, 3H) shared by the slices,
    int gi_ld,                                  #   row stride gi_ld (>= 3H); with gi_ready,
    bint gi_ready,                              #   IN: the projection of all T*B rows
    floating* gh_buf,                           # WORK (B, 3U), per call
    floating* rh_buf,                           # WORK (B, H) shared by the slices (reset_after=False)
    floating* bias_buf,                         # WORK (6U), per call
    const floating* pack_ih,                    # IN or NULL: pack_gate_slice of W_ih (float32):
                                                #   each slice projects its own columns (no BLAS)
    const floating* pack_hh,                    # IN or NULL: pack_gate_slice of W_hh (float32)
    floating* cache,                            # OUT or NULL: (T, B, 4H) sorted r,z,n,(ghn|rh)
    floating* hprev,                            # OUT or NULL: (T, B, H) sorted h_{t-1}
    cygru_barrier* barrier,                     # shared by the calls of one direction
) noexcept nogil
# One direction of one layer over the whole sequence. Several threads may run it at
# once on disjoint unit slices [u0, u1) of the same direction (sharing state,
# state_alt, rh_buf, out, cache, hprev and the barrier); one call with u0 = 0,
# u1 = H runs it alone. Without packed weights (float64, or NULL) it calls BLAS and
# needs the whole range. The per-step barrier makes h_t complete before step t+1.


# One float32 direction run by any number of threads that claim its work in pieces
# (slices of hidden units, more pieces than threads), phase after phase: per time step
# the gates (reset_after) or the r,z and then the n pass (a piece packs its weights the
# first time it is done).
# A descheduled thread never stalls a step unless it holds a claimed piece. Every thread
# of the direction calls gru_direction_forward_pieces with the same struct; one thread
# alone does all the work. The result does not depend on the number of threads or of
# pieces (every element is computed by the same chain of operations).
ctypedef struct cygru_pieces_f32:
    int T, B, In, H                             # In: input size (`I` is complex.h's macro)
    int chunk                                   # steps per input-projection chunk
    int n_pieces
    bint reverse, reset_after
    const float* x                              # IN  (T*B, I) time-major
    const float* w_ih                           # IN  (3H, I)
    const float* w_hh                           # IN  (3H, H)
    const float* b_ih                           # IN  (3H,)
    const float* b_hh                           # IN  (3H,)
    const int* bounds                           # IN  n_pieces + 1 unit bounds
    float* pack_ih                              # WORK n_pieces slots of pack_ih_slot
    float* pack_hh                              # WORK n_pieces slots of pack_hh_slot
    Py_ssize_t pack_ih_slot, pack_hh_slot
    float* bias                                 # WORK 6H (piece p at 6*bounds[p])
    float* gh                                   # WORK B*3H (piece p at 3*B*bounds[p])
    float* out                                  # OUT h_t rows: out + t*out_ts + b*out_bs
    Py_ssize_t out_ts, out_bs
    float* state                                # IN: h0 (B, H) sorted; OUT: h_n when T is
                                                #   even, else h_n is in state_alt
    float* state_alt                            # WORK (B, H)
    const Py_ssize_t* perm                      # IN  (B,)
    const int* active                           # IN  (T,)
    float* gi_buf                               # WORK (chunk*B, 3H)
    float* rh_buf                               # WORK (B, H) (reset_after=False)
    float* cache                                # OUT or NULL: (T, B, 4H) sorted
    float* hprev                                # OUT or NULL: (T, B, H) sorted
    cygru_work* work                            # shared by the direction's threads
    int* last                                   # WORK n_pieces ints, all -1 on entry


# `rank` of `group` threads: a thread claims "its" pieces first (so their weights stay
# in its core's cache from step to step), then any piece still unclaimed.
cdef void gru_direction_forward_pieces(cygru_pieces_f32* s, int rank, int group) noexcept nogil


# The backward of one float32 direction, its work claimed in pieces as the forward's:
# per time step the gate gradients of the piece's units, then dL/dh_{t-1} for its units
# (reset_after=False: first d(r*h), then the r, z part).
ctypedef struct cygru_bpieces_f32:
    int T, B, H
    int n_pieces
    bint reverse, reset_after
    const float* w_hh                           # IN  (3H, H)
    const int* bounds                           # IN  n_pieces + 1 unit bounds
    float* pack                                 # WORK n_pieces slots of pack_slot
    Py_ssize_t pack_slot
    const float* d_out                          # IN or NULL: dL/dh_t rows
    Py_ssize_t d_ts, d_bs
    float* dstate                               # IN/OUT (B, H) sorted: dL/dh_n -> dL/dh0
    const Py_ssize_t* perm                      # IN  (B,)
    const int* active                           # IN  (T,)
    const float* cache                          # IN  (T, B, 4H) from the forward
    const float* hprev                          # IN  (T, B, H) from the forward
    float* dgi                                  # OUT (T*B, 3H) row stride ldgi, zeroed
    int ldgi
    float* dgh                                  # OUT (T, B, 3H) sorted, zeroed
    float* drh_buf                              # WORK (B, H) (reset_after=False)
    int first_st                                # the first processing step with active rows
    cygru_work* work
    int* last                                   # WORK n_pieces ints, all -1 on entry


cdef void gru_direction_backward_pieces(cygru_bpieces_f32* s, int rank, int group) noexcept nogil


cdef Py_ssize_t part_pack_size(int U, int K) noexcept nogil
cdef void pack_gate_slice(int H, int K, int u0, int u1, const floating* w,
                          floating* packed) noexcept nogil


cdef void gru_direction_backward(
    int T, int B, int H,
    int u0, int u1,                             # this call's slice of hidden units
    const floating* w_hh,                       # IN  (3H, H)
    const floating* d_out, Py_ssize_t d_ts, Py_ssize_t d_bs,  # IN or NULL: dL/dh_t rows
    floating* dstate,                           # IN/OUT (B, H) sorted: dL/dh_n -> dL/dh0
    const Py_ssize_t* perm, const int* active,  # IN
    bint reverse, bint reset_after,
    const floating* cache, const floating* hprev,  # IN  from gru_direction_forward
    floating* dgi, int ldgi,                    # OUT (T*B, 3H) time-major (row stride ldgi), zeroed by caller
    floating* dgh,                              # OUT (T, B, 3H) sorted, zeroed by caller
    floating* drh_buf,                          # WORK (B, H) shared by the slices (reset_after=False)
    const floating* packed,                     # IN or NULL: pack_backward_slice (float32)
    cygru_barrier* barrier,                     # shared by the calls of one direction
) noexcept nogil
# Backpropagation through time of one direction: the per-step gate gradients (dgi,
# dgh) and dL/dh0. Like the forward, several threads may run it on disjoint unit
# slices of one direction; without packed weights it calls BLAS and needs u0 = 0,
# u1 = H. The weight gradients follow from dgi and dgh: gru_direction_weight_grads.


cdef Py_ssize_t backward_pack_size(int U, int H) noexcept nogil
cdef void pack_backward_slice(int H, int u0, int u1, bint reset_after, const floating* w_hh,
                              floating* packed) noexcept nogil


cdef void gru_direction_weight_grads(
    int T, int B, int I, int H,
    const floating* x, bint reset_after,        # IN  (T*B, I) the layer input
    const floating* cache, const floating* hprev,  # IN  from the forward
    const floating* dgi, int ldgi, const floating* dgh,  # IN  from gru_direction_backward
    floating* gw_ih, floating* gw_hh,           # IN/OUT += dW_ih, dW_hh
    floating* gb_ih, floating* gb_hh,           # IN/OUT += db_ih, db_hh, or NULL
) noexcept nogil


cdef void column_sums(int rows, int cols, const floating* a, int lda,
                      floating* acc) noexcept nogil


cdef void gru_cell_forward(
    int B, int I, int H,
    const floating* x, const floating* h,       # IN  (B, I), (B, H)
    const floating* w_ih, const floating* w_hh,  # IN  (3H, I), (3H, H)
    const floating* b_ih, const floating* b_hh,  # IN  (3H,), (3H,)
    bint reset_after,
    floating* h_out,                            # OUT (B, H); may not alias x or h
    floating* work,                             # WORK (B, 7H): cell_work_size(B, H)
) noexcept nogil


cdef inline Py_ssize_t cell_work_size(Py_ssize_t B, Py_ssize_t H) noexcept nogil:
    """Elements of `work` that gru_cell_forward needs."""
    return B * 7 * H
