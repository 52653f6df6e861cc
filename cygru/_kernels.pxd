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


# One direction of one layer over a whole sequence is run by any number of threads that
# claim its work in pieces (slices of hidden units, more pieces than threads), phase
# after phase: per time step the gates (reset_after) or the r,z and then the n pass (a
# piece packs its panels of the weights the first time it is done, unless they come
# prepared). The pieces of a phase are claimed by cygru's worker pool (cygru_pool.h), which
# does the claiming and waiting in its own memory, or all done in order by the calling
# thread alone (_engine's _run_directions). The
# result does not depend on the number of threads or of pieces, nor on `chunk`: every
# element is computed by the same chain of operations (cygru_gemm.h's packed products,
# or cygru_dot.h's products on the caller's weights when `use_dot` (small batches: the
# engine decides by B alone, so every call of a stream uses the same kernel); element-wise
# gate math).
#
# The structs are filled by the engine (cygru/_engine.pyx), which carves their buffers
# from one workspace. Array pointers are void*: `itemsize` (4 or 8) says whether they
# point at float or double, and the piece functions are specialised for each.
ctypedef struct cygru_fwd_run:
    int T, B, In, H                             # In: input size (`I` is complex.h's macro)
    int itemsize                                # 4: float32, 8: float64
    int chunk                                   # steps per input-projection chunk
    int n_pieces
    bint reverse, reset_after
    const void* x                               # IN  (T*B, I) time-major
    const void* w_ih                            # IN  (3H, I)
    const void* w_hh                            # IN  (3H, H)
    const void* b_ih                            # IN  (3H,) (never NULL: zeros for no bias)
    const void* b_hh                            # IN  (3H,)
    const int* bounds                           # IN  n_pieces + 1 unit bounds
    void* pack_ih                               # WORK or IN (prepared): W_ih, W_hh in the
    void* pack_hh                               #   gate_pack_size layout (K = In, K = H)
    bint prepared                               # pack_* hold the packed weights already
                                                #   (else each piece packs its panels)
    bint use_dot                                # small batch: every product by cygru_dot.h
                                                #   on w_ih/w_hh as given (pack_* unused)
    int wformat                                 # 0: float weights; 1 int8, 2 bf16: w_ih,
                                                #   w_hh are cygru_quant.h gate blocks and
                                                #   every product is cygru_quant.h's (one
                                                #   kernel at every batch size; pack_* unused)
    void* qscratch                              # WORK (wformat): piece p's product scratch
    Py_ssize_t qscratch_slot                    #   at qscratch + p * qscratch_slot bytes
    void* bias                                  # WORK 6H (piece p at 6*bounds[p])
    void* gh                                    # WORK B*3H (piece p at 3*B*bounds[p])
    void* out                                   # OUT h_t rows: out + t*out_ts + b*out_bs
    Py_ssize_t out_ts, out_bs                   #   (in elements)
    void* state                                 # IN: h0 (B, H) sorted; OUT: h_n when T is
                                                #   even, else h_n is in state_alt
    void* state_alt                             # WORK (B, H)
    const Py_ssize_t* perm                      # IN  (B,)
    const int* active                           # IN  (T,)
    void* gi_buf                                # WORK (chunk*B, 3H)
    void* rh_buf                                # WORK (B, H) (reset_after=False)
    void* cache                                 # OUT or NULL: (T, B, 4H) sorted
    void* hprev                                 # OUT or NULL: (T, B, H) sorted


# The direction's sequence one phase piece at a time: phase k (of forward_phase_count),
# piece p. Every piece of phase k must be done before any of phase k + 1.
cdef long forward_phase_count(const cygru_fwd_run* s) noexcept nogil
cdef void forward_phase_piece(void* s, long k, int p) noexcept nogil


# The backward of one direction, its work claimed in pieces as the forward's: per time
# step the gate gradients of the piece's units, then dL/dh_{t-1} for its units
# (reset_after=False: first d(r*h), then the r, z part). At the end of every chunk of
# wg_chunk steps (and of the last step), in the step's last phase, each piece adds the
# chunk's rows to the weight gradients of its units' rows (r, z and n rows of dW_ih, dW_hh
# and the biases) from dgi, dgh and the forward's cache, in cygru_wgrad.h's kernels,
# while the piece's columns of dgi and dgh are still in its cache. The input gradient
# needs every direction's dgi: input_grad_piece, after the directions' runs.
ctypedef struct cygru_bwd_run:
    int T, B, H, In
    int itemsize
    int n_pieces
    bint reverse, reset_after
    const void* w_hh                            # IN  (3H, H)
    const int* bounds                           # IN  n_pieces + 1 unit bounds
    void* pack                                  # WORK n_pieces slots of pack_slot elements
    Py_ssize_t pack_slot
    void* wg_scratch                            # WORK n_pieces slots of wg_slot bytes
    Py_ssize_t wg_slot
    const void* d_out                           # IN or NULL: dL/dh_t rows
    Py_ssize_t d_ts, d_bs
    void* dstate                                # IN/OUT (B, H) sorted: dL/dh_n -> dL/dh0
    const Py_ssize_t* perm                      # IN  (B,)
    const int* active                           # IN  (T,)
    const void* cache                           # IN  (T, B, 4H) from the forward
    const void* hprev                           # IN  (T, B, H) from the forward
    const void* x                               # IN  (T*B, In) the layer input
    void* dgi                                   # OUT (T*B, 3H) row stride ldgi (rows not
                                                #   running: zeros)
    int ldgi
    void* dgh                                   # WORK (wg_chunk, B, 3H) sorted: the
                                                #   gradients of W_hh h of the chunk's
                                                #   steps, lowest time step first
    void* drh_buf                               # WORK (B, H) (reset_after=False)
    void* gw_ih                                 # IN/OUT += dW_ih (3H, In)
    void* gw_hh                                 # IN/OUT += dW_hh (3H, H)
    void* gb_ih                                 # IN/OUT += db_ih (3H,) or NULL: no bias
    void* gb_hh                                 # IN/OUT += db_hh (3H,) or NULL
    int first_st                                # the first processing step with active rows
    int n_steps                                 # processing steps with active rows
    int wg_chunk                                # steps per weight-gradient chunk


cdef long backward_phase_count(const cygru_bwd_run* s) noexcept nogil
cdef void backward_phase_piece(void* s, long k, int p) noexcept nogil


# Elements of the forward's packed weights of a (3H x K) matrix (W_ih: K = In; W_hh:
# K = H): each gate's H rows packed whole in cygru_gemm.h's panels of 16 rows, the
# gates r, z, n back to back. One layout for any thread count: piece [u0, u1) (cut at
# multiples of 16 units) reads and packs panels [u0/16, ceil(u1/16)) of each gate.
cdef Py_ssize_t gate_pack_size(int H, int K) noexcept nogil
# Pack all of W (3H x K, `itemsize` 4 or 8) into that layout (a prepared packing).
cdef void pack_gate_weights(int H, int K, int itemsize, const void* w,
                            void* packed) noexcept nogil
# Elements of the backward's packed weights of a piece of U units (W_hh's columns).
cdef Py_ssize_t backward_pack_size(int U, int H) noexcept nogil

# Bytes of one gate's block of a reduced-precision (H x K) weight (wformat 1: int8, 2:
# bf16; a (3H x K) matrix is three back to back), and of a piece's product scratch for
# inner sizes up to K.
cdef size_t quant_block_size(int H, int K, int wformat) noexcept nogil
cdef size_t quant_scratch_size(int K, int wformat) noexcept nogil


# dL/dx = sum over directions of dgi_d @ W_ih_d, in pieces of rows (every direction's
# backward must have run): piece p of n_pieces computes its rows of dx, one chain per
# element over direction 0's 3H gate columns, then direction 1's.
ctypedef struct cygru_dx_run:
    int TB, In, H, D
    int itemsize
    int n_pieces
    const void* dgi                             # IN  (T*B, D*3H) row stride ldgi
    int ldgi
    const void* w_ih[2]                         # IN  (3H, In) per direction
    void* dx                                    # OUT (T*B, In)
    void* scratch                               # WORK n_pieces slots of slot bytes
    Py_ssize_t slot

cdef void input_grad_piece(void* s, long k, int p) noexcept nogil
# Bytes of a piece's scratch for the backward's products (wg_slot, cygru_dx_run.slot).
cdef size_t wgrad_scratch_bytes(int itemsize) noexcept nogil



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
