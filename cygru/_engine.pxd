# cython: language_level=3
"""cygru's CPU engine: the one nogil driver of the time loops, for the Python backend
(cygru/_cpu.pyx) and the C API (cygru/capi.pyx) alike.

Layers, imports pointing down only:

    capi (C entry: validation, statuses)    _cpu (Python entry: arrays, threads policy)
                        \\                  /
                     _engine (this driver: schedule, workspace, threads, structs)
                                    |
                     _kernels (a piece of a phase; gate math; packed products)
                                    |
                     _blas (the one SciPy BLAS wrapper)  +  include/*.h (C kernels)

A call is described by a few small structs: the problem's sizes and flags
(cygru_problem), each direction's weights (cygru_dir_weights), the arrays of a forward
(cygru_forward_io) or of a backward (cygru_backward_io, cygru_dir_grads), and one
workspace of caller memory whose size the *_work_size query gives (the only source of
truth for scratch: the C API's workspace sizes are these). Nothing here allocates,
raises or touches a Python object; arguments arrive validated.

Results do not depend on the thread count, nor on how a sequence is cut into calls
that chain the state (every element is computed by the same chain of operations in
any piece, chunk or thread; see _kernels.pxd).
"""
from cygru._blas cimport blas_int


# A problem: one layer call's sizes and flags, and its length schedule.
ctypedef struct cygru_problem:
    int T, B, In, H, D                  # In: input size; D: 1 or 2 directions
    int itemsize                        # 4: float32, 8: float64 (every array pointer)
    bint reset_after
    bint reverse                        # D == 1: run backwards in time (with D == 2,
                                        #   direction 1 always runs backwards)
    const Py_ssize_t* perm              # (B,) sorted row -> batch row (schedule())
    const int* active                   # (T,) running rows per step
    int chunk                           # steps per input-projection chunk; 0: the rule
                                        #   of chunk_steps() (results never depend on it)
    int kernel_rows                     # the batch size that picks the products' kernel
                                        #   (dot up to DOT_MAX_B rows, else packed); 0: B.
                                        #   cygru.dask sets the whole batch's for each chunk
    int wformat                         # the weights' format: WFORMAT_FLOAT (arrays of
                                        #   itemsize), or WFORMAT_INT8 / WFORMAT_BF16:
                                        #   w_ih, w_hh are cygru_quant.h blocks, three per
                                        #   matrix (one per gate), itemsize 4 (float32
                                        #   activations, biases, states, outputs)


cdef enum:
    WFORMAT_FLOAT = 0
    WFORMAT_INT8 = 1
    WFORMAT_BF16 = 2


# One direction's weights; biases are never NULL (zeros for bias=False).
ctypedef struct cygru_dir_weights:
    const void* w_ih                    # (3H, In)
    const void* w_hh                    # (3H, H)
    const void* b_ih                    # (3H,)
    const void* b_hh                    # (3H,)


# The arrays of one layer's forward.
ctypedef struct cygru_forward_io:
    const void* x                       # IN  (T*B, In) time-major
    void* out                           # OUT h_t of (t, b), direction d at
    Py_ssize_t out_ts, out_bs           #     out + t*out_ts + b*out_bs + d*H (elements)
    void* states                        # IN/OUT (D, B, H) sorted rows: h0 -> h_n
    void* caches                        # OUT or NULL: (D, T, B, 4H) for the backward
    void* hprevs                        # OUT or NULL: (D, T, B, H)


# The arrays of one layer's backward (after a forward that filled caches, hprevs).
ctypedef struct cygru_backward_io:
    const void* x                       # IN  (T*B, In) the layer's input
    const void* d_out                   # IN or NULL: dL/dh_t, direction d at
    Py_ssize_t d_ts, d_bs               #     d_out + t*d_ts + b*d_bs + d*H
    void* dstates                       # IN/OUT (D, B, H) sorted: dL/dh_n -> dL/dh0
    const void* caches                  # IN  (D, T, B, 4H)
    const void* hprevs                  # IN  (D, T, B, H)
    void* dx                            # OUT (T*B, In): dL/dx


# One direction's gradient accumulators (+=); biases NULL for bias=False.
ctypedef struct cygru_dir_grads:
    void* gw_ih
    void* gw_hh
    void* gb_ih
    void* gb_hh


# Whether this process was made by fork() from one whose cygru worker pool had started
# threads (informational: the child's pool starts fresh workers when a call needs them).
cdef bint in_forked_child() noexcept nogil

# Threads and pieces of a call on n_threads (>= 1) threads: threads per direction,
# threads started, pieces per direction.
cdef void thread_plan(int n_threads, int D, int H, int pieces_per_thread, int* per_dir,
                      int* n_sets, int* n_pieces) noexcept nogil

# Time steps per input-projection chunk (all T when the projection of every step fits
# in PROJECTION_FULL_BYTES; memory beyond the outputs does not grow with T).
cdef int chunk_steps(int T, int B, int H, int D, int itemsize) noexcept nogil

# The sorted-batch schedule: perm (rows by length, longest first, stable) and
# active[t] = #{b : lengths[b] > t}, by a counting sort in `counts` (T + 1 ints).
# Returns 0, or 1 (writing nothing to perm) when a length is outside [1, T].
# lengths NULL: every row runs T steps.
cdef int schedule(int T, int B, const int* lengths, Py_ssize_t* perm, int* active,
                  int* counts) noexcept nogil

# Bytes of workspace (any alignment) a layer's forward / backward needs on n_threads.
cdef size_t forward_work_size(const cygru_problem* pb, int n_threads) noexcept nogil
cdef size_t backward_work_size(const cygru_problem* pb, int n_threads) noexcept nogil

# One layer, every direction, on n_threads threads (a group per direction).
cdef void layer_forward(const cygru_problem* pb, const cygru_dir_weights* w,
                        const cygru_forward_io* io, void* work, int n_threads) noexcept nogil

# Prepared weights: a direction's W_ih and W_hh packed once (the layout the forward
# packs them into per call; it does not depend on the thread count) and copies of its
# biases (zeros for NULL ones) and of W_ih and W_hh as they are (row-major: what batches
# of at most DOT_MAX_B rows read), in one block of dir_prepared_size(H, In, itemsize) bytes
# (a multiple of 64; position-independent: a block may be copied). A forward given
# blocks reads them instead of the weights and packs nothing: the same bits as
# layer_forward on the weights the blocks were prepared from. A block is a snapshot:
# nothing here notices a later change of the weights (prepare again).
cdef size_t dir_prepared_size(int H, int In, int itemsize) noexcept nogil
cdef void prepare_direction(int H, int In, int itemsize, const cygru_dir_weights* w,
                            void* dst) noexcept nogil
# layer_forward over D prepared blocks (only read: any number of calls may share them);
# its workspace (forward_work_size_prepared) holds no packing.
cdef size_t forward_work_size_prepared(const cygru_problem* pb, int n_threads) noexcept nogil
cdef void layer_forward_prepared(const cygru_problem* pb, const void* const* prepared,
                                 const cygru_forward_io* io, void* work,
                                 int n_threads) noexcept nogil

# Its backward: the time loops, then each direction's weight gradients (+= into
# grads) and dL/dx.
cdef void layer_backward(const cygru_problem* pb, const cygru_dir_weights* w,
                         const cygru_backward_io* io, const cygru_dir_grads* grads,
                         void* work, int n_threads) noexcept nogil

# One step of one layer and direction (GRUCell, the C API's cell_step_*): layer_forward
# with T = 1 on the calling thread (no OpenMP region), so it gives the bits of a one-step
# (or any) cygru.GRU call at the same batch size. h (B, H) or NULL (zeros) is read before
# h_out (B, H) is written (h_out may be h); biases may be NULL (zeros). At most
# DOT_MAX_B rows need no workspace that depends on In (step_work_size(B, 1, H, ...)
# serves any In); larger batches pack the weights into it.
cdef size_t step_work_size(int B, int In, int H, int itemsize) noexcept nogil
cdef bint step_needs_input_size(int B) noexcept nogil
cdef void step_forward(int B, int In, int H, int itemsize, bint reset_after,
                       const void* x, const void* h, const void* w_ih, const void* w_hh,
                       const void* b_ih, const void* b_hh, void* h_out,
                       void* work) noexcept nogil

# A whole model's forward (the C API's model_forward_*): L layers of D directions on
# one thread, h0 and h_n in batch order (NULL h0: zeros; NULL h_n: not stored).
# `dirs` holds L*D weights (layer-major); the input of layer k > 0 is D*H wide.
cdef size_t model_work_size(int T, int B, int In, int H, int L, int D,
                            int itemsize) noexcept nogil
# Returns 0, or 1 (nothing written) when a length is outside [1, T]. Biases may be NULL.
cdef int model_forward(int T, int B, int In, int H, int L, int D, int itemsize,
                       bint reset_after, bint reverse, const cygru_dir_weights* dirs,
                       const void* x, const void* h0, const int* lengths, void* output,
                       void* h_n, void* work) noexcept nogil

# model_forward with reduced-precision weights (wformat WFORMAT_INT8 / WFORMAT_BF16):
# dirs' w_ih and w_hh are the quantized blocks of quant_dir_size; float32 everything else.
cdef size_t quant_matrix_size(int H, int K, int wformat) noexcept nogil
cdef size_t model_work_size_quantized(int T, int B, int In, int H, int L, int D,
                                      int wformat) noexcept nogil
cdef int model_forward_quantized(int T, int B, int In, int H, int L, int D, int wformat,
                                 bint reset_after, bint reverse,
                                 const cygru_dir_weights* dirs, const void* x,
                                 const void* h0, const int* lengths, void* output,
                                 void* h_n, void* work) noexcept nogil

# A whole model's prepared blocks: L*D blocks of prepare_direction back to back
# (layer-major), model_prepared_size bytes; model_forward on them (dirs replaced by the
# blocks), with a workspace of model_work_size_prepared bytes.
cdef size_t model_prepared_size(int In, int H, int L, int D, int itemsize) noexcept nogil
cdef void model_prepare(int In, int H, int L, int D, int itemsize,
                        const cygru_dir_weights* dirs, void* dst) noexcept nogil
cdef size_t model_work_size_prepared(int T, int B, int In, int H, int L, int D,
                                     int itemsize) noexcept nogil
cdef int model_forward_prepared(int T, int B, int In, int H, int L, int D, int itemsize,
                                bint reset_after, bint reverse, const void* prepared,
                                const void* x, const void* h0, const int* lengths,
                                void* output, void* h_n, void* work) noexcept nogil
