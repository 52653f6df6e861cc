# cython: language_level=3
"""cygru's C-level API: GRU steps and sequences on raw buffers, callable without the GIL.

This file is the stable, documented interface for other Cython (and C) code
(``from cygru cimport capi``, with ``cygru.get_include()`` in Cython's ``include_path``,
e.g. ``cythonize(..., include_path=[cygru.get_include()])``); the reference is
``docs/embedding.rst``. The kernels behind it (``cygru._kernels``) are
internal and may change; this interface does not. Plain C and C++ code uses
``cygru/include/cygru.h`` instead: the same functions with a ``cygru_`` prefix,
called through the table ``cygru.capi._C_API``; its structs and status values are
the ones declared here (``tests/test_c_header.py`` checks that they agree).

Conventions of every function here:

- Two explicit variants, ``*_f32`` (float) and ``*_f64`` (double), with identical
  arguments; sizes are ``int`` (BLAS's integer), workspace sizes ``size_t`` bytes.
- Arrays are row-major (C order) and contiguous. Sequences are time-major:
  ``x`` is (T, B, I), ``output`` (T, B, D*H); states are (layers*D, B, H).
- Gate order r, z, n (PyTorch's); weights ``w_ih`` (3H, I), ``w_hh`` (3H, H),
  biases (3H,). A NULL bias means "no bias" (zeros).
- ``reset_after`` (nonzero: PyTorch/cuDNN/Keras' variant, zero: Cho et al.'s).
- Every function is ``noexcept nogil``: call it with or without the GIL. It validates
  its scalar arguments and the overlaps of its arrays and returns a status
  (``CYGRU_OK`` == 0, else one of the ``CYGRU_ERR_*`` codes) *before* writing any
  output or workspace byte; it never allocates, never raises and keeps no global
  state beyond the list of the workspaces in use, so it is re-entrant: several
  threads may call it at once as long as each passes its own workspace (weights and
  inputs may be shared, they are only read). A call whose workspace bytes overlap
  those of a call running on another thread returns ``CYGRU_ERR_WORKSPACE_BUSY`` and
  writes nothing (it never waits, and never shares the bytes).
- The workspace is caller memory of at least ``*_workspace_size_*(...)`` bytes,
  aligned to ``CYGRU_WORK_ALIGN`` (8) bytes (anything ``malloc`` returns is). Its
  content on entry does not matter; it may be reused for any later call with the
  same or smaller sizes. The bytes a call uses, ``[work, work + *_workspace_size_*(...))``,
  must not overlap any argument array (x, h/h0, lengths, the outputs, every weight and
  bias, the table of directions): a call that finds such an overlap returns
  ``CYGRU_ERR_WORKSPACE_ALIAS`` and writes nothing.
- Outputs may not overlap an input either (``CYGRU_ERR_ALIAS``), except the two
  in-place forms documented below (``h_out == h``, ``h_n == h0``). The checks compare
  address ranges; they cannot tell whether a pointer points at enough memory.
"""
from libc.stddef cimport size_t


# ---------------------------------------------------------------------------
# status codes (returned by every function that computes); new codes may be added,
# existing values never change; cygru.h's enum cygru_status has the same values
# ---------------------------------------------------------------------------
cdef enum:
    CYGRU_OK = 0
    CYGRU_ERR_SIZE = 1          # a size (T, B, I, H, D, layers) is out of range or overflows BLAS's int
    CYGRU_ERR_NULL = 2          # a required pointer is NULL
    CYGRU_ERR_LENGTH = 3        # lengths[b] is outside [1, T]
    CYGRU_ERR_FLAGS = 4         # inconsistent flags (reverse with two directions)
    CYGRU_ERR_ALIAS = 5         # an output overlaps an input (x, h/h0, lengths, a weight or
                                # bias, the table of directions) or another output
    CYGRU_ERR_WORKSPACE = 6     # workspace NULL or smaller than the required size
    CYGRU_ERR_ALIGN = 7         # workspace not aligned to CYGRU_WORK_ALIGN bytes
    CYGRU_ERR_WORKSPACE_ALIAS = 8   # the workspace overlaps an argument array
    CYGRU_ERR_WORKSPACE_BUSY = 9    # the workspace is in use by a call on another thread
    CYGRU_ERR_PREPARED_SIZE = 10    # model_prepare_*: the prepared buffer is smaller than
                                    # model_prepared_size_*(model) (model_quantize: than
                                    # model_quantized_size(...))
    CYGRU_ERR_PREPARED = 11     # model_forward_prepared_*: the buffer does not hold weights
                                # prepared by model_prepare_* for this model (its sizes,
                                # dtype and weight pointers), or was never prepared;
                                # model_forward_quantized: the buffer was not made by
                                # model_quantize for these sizes and this precision
    CYGRU_ERR_PRECISION = 12    # model_*quantize*: precision is not CYGRU_INT8 or CYGRU_BF16
    CYGRU_ERR_NOT_FINITE = 13   # model_quantize: a weight or bias is inf or NaN
    CYGRU_WORK_ALIGN = 8        # required alignment of a workspace, in bytes (not a status)


# A static, human-readable description of a status code (never NULL).
cdef const char* status_message(int status) noexcept nogil


# ---------------------------------------------------------------------------
# weights of one direction, and of a whole model
# ---------------------------------------------------------------------------
ctypedef struct cygru_direction_f32:
    const float* w_ih       # (3H, I_k) row-major; I_0 = input_size, I_k = D*H for k > 0
    const float* w_hh       # (3H, H)
    const float* b_ih       # (3H,) or NULL (no bias)
    const float* b_hh       # (3H,) or NULL (no bias)

ctypedef struct cygru_direction_f64:
    const double* w_ih
    const double* w_hh
    const double* b_ih
    const double* b_hh

ctypedef struct cygru_model_f32:
    int input_size          # I
    int hidden_size         # H
    int num_layers          # L >= 1
    int num_directions      # D, 1 or 2
    int reset_after         # nonzero: n = tanh(gi_n + r*(W_hn h + b_hn))
    int reverse             # nonzero (D == 1 only): run the direction backwards in time
    const cygru_direction_f32* dirs   # L*D entries, index layer*D + direction

ctypedef struct cygru_model_f64:
    int input_size
    int hidden_size
    int num_layers
    int num_directions
    int reset_after
    int reverse
    const cygru_direction_f64* dirs


# ---------------------------------------------------------------------------
# one GRU cell step:  h_out = GRUCell(x, h)   for B rows
# ---------------------------------------------------------------------------
# Bytes of workspace cell_step_* needs for B rows and hidden size H (0: invalid sizes).
cdef size_t cell_workspace_size_f32(int B, int H) noexcept nogil
cdef size_t cell_workspace_size_f64(int B, int H) noexcept nogil

cdef int cell_step_f32(
    int B, int I, int H,
    const float* x,                         # IN  (B, I)
    const float* h,                         # IN  (B, H), or NULL for zeros
    const float* w_ih, const float* w_hh,   # IN  (3H, I), (3H, H)
    const float* b_ih, const float* b_hh,   # IN  (3H,) each, or NULL (no bias)
    int reset_after,
    float* h_out,                           # OUT (B, H); may be h itself (in-place step)
    void* work, size_t work_size,           # WORK cell_workspace_size_f32(B, H) bytes
) noexcept nogil

cdef int cell_step_f64(
    int B, int I, int H,
    const double* x, const double* h,
    const double* w_ih, const double* w_hh,
    const double* b_ih, const double* b_hh,
    int reset_after,
    double* h_out,
    void* work, size_t work_size,
) noexcept nogil


# ---------------------------------------------------------------------------
# one layer (one or two directions) over a sequence
# ---------------------------------------------------------------------------
# Bytes of workspace layer_forward_* needs (0: invalid sizes).
cdef size_t layer_workspace_size_f32(int T, int B, int I, int H, int D) noexcept nogil
cdef size_t layer_workspace_size_f64(int T, int B, int I, int H, int D) noexcept nogil

cdef int layer_forward_f32(
    int T, int B, int I, int H, int D,
    const float* x,                         # IN  (T, B, I) time-major
    const float* h0,                        # IN  (D, B, H), or NULL for zeros
    const int* lengths,                     # IN  (B,) each in [1, T], or NULL (all T)
    const cygru_direction_f32* weights,     # IN  D entries: forward, then backward in time
    int reset_after, int reverse,
    float* output,                          # OUT (T, B, D*H); 0 where t >= lengths[b]
    float* h_n,                             # OUT (D, B, H), or NULL; may be h0 itself
    void* work, size_t work_size,           # WORK layer_workspace_size_f32(T, B, I, H, D)
) noexcept nogil

cdef int layer_forward_f64(
    int T, int B, int I, int H, int D,
    const double* x, const double* h0, const int* lengths,
    const cygru_direction_f64* weights,
    int reset_after, int reverse,
    double* output, double* h_n,
    void* work, size_t work_size,
) noexcept nogil


# ---------------------------------------------------------------------------
# a whole multi-layer, optionally bidirectional GRU (cygru.GRU's forward)
# ---------------------------------------------------------------------------
# Bytes of workspace model_forward_* needs (0: invalid sizes).
cdef size_t model_workspace_size_f32(int T, int B, int I, int H, int L, int D) noexcept nogil
cdef size_t model_workspace_size_f64(int T, int B, int I, int H, int L, int D) noexcept nogil

cdef int model_forward_f32(
    const cygru_model_f32* model,           # IN  sizes, flags and L*D direction weights
    int T, int B,
    const float* x,                         # IN  (T, B, I) time-major
    const float* h0,                        # IN  (L*D, B, H), or NULL for zeros
    const int* lengths,                     # IN  (B,) each in [1, T], or NULL
    float* output,                          # OUT (T, B, D*H): the last layer's states
    float* h_n,                             # OUT (L*D, B, H), or NULL; may be h0 itself
    void* work, size_t work_size,           # WORK model_workspace_size_f32(T, B, I, H, L, D)
) noexcept nogil

cdef int model_forward_f64(
    const cygru_model_f64* model,
    int T, int B,
    const double* x, const double* h0, const int* lengths,
    double* output, double* h_n,
    void* work, size_t work_size,
) noexcept nogil


# ---------------------------------------------------------------------------
# prepared weights: a model's weights packed once, reused by any number of calls
# ---------------------------------------------------------------------------
# model_forward_* packs every weight matrix into the layout of its products on every call
# (the dominant cost of a short call: a one-step frame of a 2-layer H=128 model spends
# most of its time there). model_prepare_* does that once, into a caller buffer of
# model_prepared_size_*(model) bytes; model_forward_prepared_* then reads the packed
# weights from it, with the same results bit for bit as model_forward_*.
#
# The prepared buffer is a copy (packed W_ih and W_hh, and the biases) of the weights as
# they were when model_prepare_* ran. Nothing in cygru caches or watches the weights:
# after changing any weight or bias, call model_prepare_* again, or the calls go on
# with the old values. It is tagged with the model's sizes, dtype and weight pointers
# (and a checksum of that tag): model_forward_prepared_* refuses a buffer prepared for
# another model with CYGRU_ERR_PREPARED. It only reads the model's sizes, flags and
# table of directions (not the weights, which may be freed after preparing). Any number
# of threads may share one prepared buffer (it is only read); preparing it again while
# another thread runs a call on it is a data race (the caller's to avoid). The buffer
# holds no pointer into itself: it may be copied elsewhere with memcpy. It must be
# aligned to CYGRU_WORK_ALIGN bytes (64 is best for speed).

# Bytes of the prepared buffer of `model` (0: a NULL model or invalid sizes).
cdef size_t model_prepared_size_f32(const cygru_model_f32* model) noexcept nogil
cdef size_t model_prepared_size_f64(const cygru_model_f64* model) noexcept nogil

# Pack the weights of `model` into `prepared` (`size` bytes, at least
# model_prepared_size_*(model)); it may not overlap a weight, a bias or the table of
# directions (CYGRU_ERR_ALIAS).
cdef int model_prepare_f32(const cygru_model_f32* model, void* prepared,
                           size_t size) noexcept nogil
cdef int model_prepare_f64(const cygru_model_f64* model, void* prepared,
                           size_t size) noexcept nogil

# Bytes of workspace model_forward_prepared_* needs (at most model_workspace_size_*'s:
# it holds no packing; 0: invalid sizes).
cdef size_t model_prepared_workspace_size_f32(int T, int B, int I, int H, int L,
                                              int D) noexcept nogil
cdef size_t model_prepared_workspace_size_f64(int T, int B, int I, int H, int L,
                                              int D) noexcept nogil

# model_forward_* with the weights of `prepared` (made by model_prepare_* for this
# model); outputs and workspace may not overlap the prepared buffer.
cdef int model_forward_prepared_f32(
    const cygru_model_f32* model,           # IN  sizes, flags (the weights are not read)
    const void* prepared,                   # IN  model_prepare_f32(model, ...)'s buffer
    int T, int B,
    const float* x, const float* h0, const int* lengths,
    float* output, float* h_n,
    void* work, size_t work_size,           # WORK model_prepared_workspace_size_f32(...)
) noexcept nogil

cdef int model_forward_prepared_f64(
    const cygru_model_f64* model,
    const void* prepared,
    int T, int B,
    const double* x, const double* h0, const int* lengths,
    double* output, double* h_n,
    void* work, size_t work_size,
) noexcept nogil


# ---------------------------------------------------------------------------
# quantized models: int8 or bf16 weights (cygru.quantize's arithmetic), float32 else
# ---------------------------------------------------------------------------
# model_quantize converts a float32 model's weights once, by the rules of cygru.quantize
# (int8: symmetric per output row, scale = max|row| / 127, round half to even; bf16:
# round half to even), into a caller buffer of model_quantized_size(...) bytes, aligned
# to CYGRU_WORK_ALIGN bytes (64 is best): the packed blocks the reduced-precision
# products read and float32 copies of the biases (zeros for NULL ones).
# model_forward_quantized then runs the model on it: the bits of
# cygru.quantize(gru, precision)(x, h0, lengths) for any batch size, thread count or cut
# of a stream into calls (activations are quantized per row at run time; biases, states,
# gate math and outputs are float32).
#
# The buffer is self-contained (the float weights may be freed after quantizing), holds
# no pointer (memcpy-able) and is only read by the forward (any number of threads may
# share it). It is tagged with the sizes and the precision (and a checksum of that
# tag): model_forward_quantized refuses a buffer quantized for other sizes or another
# precision, or never quantized, with CYGRU_ERR_PREPARED. Its last bytes are scratch
# for model_quantize. Outputs and the workspace may not overlap it.
#
# Inner sizes (input_size, hidden_size, and D*H for layers above the first) are limited
# to 131072 (int8 sums must stay exact in int32): larger ones are CYGRU_ERR_SIZE.
cdef enum:
    CYGRU_INT8 = 1              # precision: int8 weights (per output row), int32 sums
    CYGRU_BF16 = 2              # precision: bfloat16 weights, float32 sums

# Bytes of the quantized buffer of a model (0: invalid sizes or precision).
cdef size_t model_quantized_size(int I, int H, int L, int D, int precision) noexcept nogil

# Quantize the float32 weights of L*D directions (`dirs`, index layer*D + direction,
# as cygru_model_f32.dirs) into `quantized` (`size` bytes, at least
# model_quantized_size(...)); nothing is written unless every weight and bias is finite
# (CYGRU_ERR_NOT_FINITE). The buffer may not overlap a weight, a bias or the table
# (CYGRU_ERR_ALIAS).
cdef int model_quantize(int I, int H, int L, int D, int precision,
                        const cygru_direction_f32* dirs,   # IN  L*D entries (float32)
                        void* quantized, size_t size,      # OUT size bytes
                        ) noexcept nogil

# Bytes of workspace model_forward_quantized needs (0: invalid sizes or precision).
cdef size_t model_quantized_workspace_size(int T, int B, int I, int H, int L, int D,
                                           int precision) noexcept nogil

# model_forward_f32 on the weights of `quantized` (model_quantize's, for these sizes
# and precision); reset_after and reverse as in cygru_model_f32.
cdef int model_forward_quantized(
    int T, int B, int I, int H, int L, int D, int precision,
    int reset_after, int reverse,
    const void* quantized,                  # IN  model_quantize(I, H, L, D, precision, ...)'s
    const float* x,                         # IN  (T, B, I) time-major
    const float* h0,                        # IN  (L*D, B, H), or NULL for zeros
    const int* lengths,                     # IN  (B,) each in [1, T], or NULL
    float* output,                          # OUT (T, B, D*H)
    float* h_n,                             # OUT (L*D, B, H), or NULL; may be h0 itself
    void* work, size_t work_size,           # WORK model_quantized_workspace_size(...)
) noexcept nogil


# ---------------------------------------------------------------------------
# Python side: a module's weights exported for C callers
# ---------------------------------------------------------------------------
cdef class ExportedWeights:
    """A snapshot of a GRU's or GRUCell's parameters in one contiguous buffer, with
    the C structs that point into it (``cygru.capi.export_weights(module)``).

    Exactly one of ``model_f32`` / ``model_f64`` is filled in (by ``dtype``); the
    other has ``dirs == NULL``. The pointers stay valid while this object lives.
    """
    cdef readonly str kind              # "GRU" or "GRUCell"
    cdef readonly object dtype          # numpy.float32 or numpy.float64 dtype
    cdef readonly int input_size, hidden_size, num_layers, num_directions
    cdef readonly bint bias, reset_after, reverse
    cdef readonly object flat           # 1-D read-only array holding every parameter
    cdef readonly dict offsets          # PyTorch name -> element offset into flat
    cdef readonly dict params           # PyTorch name -> read-only view into flat
    cdef cygru_model_f32 model_f32
    cdef cygru_model_f64 model_f64
    cdef cygru_direction_f32* _dirs_f32
    cdef cygru_direction_f64* _dirs_f64
