# cython: language_level=3
"""cygru's C-level API (declared and documented in ``cygru/capi.pxd``), and
:func:`export_weights`, which hands a Python module's weights to C callers.

The public ``*_f32`` / ``*_f64`` functions are thin, validating wrappers: they check
every argument and overlap, then hand the call to the engine (``cygru._engine``, the
same nogil driver that runs cygru.GRU) on the calling thread. The engine's workspace
query is the C API's workspace size. When the engine changes, only this wrapper
changes, never code built against ``capi.pxd``.

It also publishes the same functions for plain C, C++ and ctypes callers: one
static table, the ``struct cygru_api`` of ``cygru/include/cygru.h``, as the capsule
``_C_API``, which the header's ``import_cygru()`` reads (its ABI version:
``ABI_VERSION``).

See ``docs/embedding.rst`` for the reference and the example projects
(``examples/embedding``, ``examples/c_extension``).

Examples
--------
>>> import numpy as np, cygru, cygru.capi
>>> gru = cygru.GRU(4, 8, num_layers=2, bidirectional=True, seed=0)
>>> w = cygru.capi.export_weights(gru)
>>> x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
>>> out, h_n = w.forward(x, lengths=[5, 2, 4])       # through model_forward_f32
>>> ref_out, ref_h_n = gru(x, lengths=[5, 2, 4])
>>> bool(np.allclose(out, ref_out, atol=1e-6) and np.allclose(h_n, ref_h_n, atol=1e-6))
True
"""
import numbers
import numpy as np
cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_New, PyCapsule_GetContext, PyCapsule_SetContext
from cpython.ref cimport Py_INCREF, Py_DECREF
from libc.stdint cimport uintptr_t, int8_t, uint16_t, uint32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset, memcmp
from cython cimport floating
from cygru._kernels cimport gru_cell_forward, cell_work_size
from cygru._engine cimport (cygru_dir_weights, WFORMAT_INT8, WFORMAT_BF16,
                            model_work_size, model_forward,
                            step_work_size, step_needs_input_size, step_forward,
                            model_prepared_size, model_prepare, model_work_size_prepared,
                            model_forward_prepared, quant_matrix_size,
                            model_work_size_quantized,
                            model_forward_quantized as _engine_forward_quantized)
from cygru._engine import PROJECTION_CHUNK
from cygru import _arrays as A

cnp.import_array()


# ---------------------------------------------------------------------------
# workspaces in use: a call that finds its workspace's bytes in use by a call running
# on another thread returns CYGRU_ERR_WORKSPACE_BUSY instead of sharing them (two
# calls on one workspace would overwrite each other's scratch, and the engine's
# per-phase counters, reset by the second call, would leave the first waiting forever)
# ---------------------------------------------------------------------------

cdef extern from *:
    """
    #include <pthread.h>
    /* A running call's entry lives in its own stack frame; the list links the entries
       of the calls running now (a handful: one per calling thread), under one mutex
       held for a few comparisons. Nothing is written to the caller's workspace to mark
       it, so its content on entry still does not matter. */
    typedef struct cygru_in_use {
        const char *start, *end;
        struct cygru_in_use *prev, *next;
        unsigned long generation;   /* cygru_in_use_generation when it was claimed */
    } cygru_in_use;
    static pthread_mutex_t cygru_in_use_lock = PTHREAD_MUTEX_INITIALIZER;
    static cygru_in_use *cygru_in_use_head = NULL;
    /* Bumped in a forked child, whose list starts empty: an entry claimed before the
       fork (the test hook's, released later in the child) is in no list of this
       process, and its links point at entries of the parent's threads (their stack
       frames, which do not exist here); releasing it must not touch the list. */
    static unsigned long cygru_in_use_generation = 0;

    /* 1: [work, work + n) overlaps no running call's workspace and is now entry e's;
       0: busy (e is not registered) */
    static int cygru_workspace_claim(cygru_in_use *e, const void *work, size_t n) {
        cygru_in_use *p;
        e->start = (const char *)work;
        e->end = (const char *)work + n;
        e->prev = NULL;
        pthread_mutex_lock(&cygru_in_use_lock);
        for (p = cygru_in_use_head; p != NULL; p = p->next) {
            if (e->start < p->end && p->start < e->end) {
                pthread_mutex_unlock(&cygru_in_use_lock);
                return 0;
            }
        }
        e->next = cygru_in_use_head;
        e->generation = cygru_in_use_generation;
        if (e->next != NULL)
            e->next->prev = e;
        cygru_in_use_head = e;
        pthread_mutex_unlock(&cygru_in_use_lock);
        return 1;
    }

    /* unlink e; nothing if e was claimed before a fork that made this process (it is
       in no list here) */
    static void cygru_workspace_release(cygru_in_use *e) {
        pthread_mutex_lock(&cygru_in_use_lock);
        if (e->generation == cygru_in_use_generation) {
            if (e->prev != NULL)
                e->prev->next = e->next;
            else
                cygru_in_use_head = e->next;
            if (e->next != NULL)
                e->next->prev = e->prev;
        }
        pthread_mutex_unlock(&cygru_in_use_lock);
    }

    /* fork(): the lock is held across it (so no other thread holds it mid-update), and
       the child, which has only the forking thread, has no running call: its list is
       empty (the calls of the parent's other threads do not exist there) */
    static void cygru_in_use_prepare(void) { pthread_mutex_lock(&cygru_in_use_lock); }
    static void cygru_in_use_parent(void) { pthread_mutex_unlock(&cygru_in_use_lock); }
    static void cygru_in_use_child(void) {
        cygru_in_use_head = NULL;
        cygru_in_use_generation++;                  /* the parent's entries are stale */
        pthread_mutex_unlock(&cygru_in_use_lock);   /* taken by this thread in prepare */
    }
    static int cygru_in_use_atfork(void) {
        return pthread_atfork(cygru_in_use_prepare, cygru_in_use_parent, cygru_in_use_child);
    }
    """
    ctypedef struct cygru_in_use:
        pass
    int cygru_workspace_claim(cygru_in_use* e, const void* work, size_t n) noexcept nogil
    void cygru_workspace_release(cygru_in_use* e) noexcept nogil
    int cygru_in_use_atfork() noexcept nogil


if cygru_in_use_atfork() != 0:
    raise ImportError("cygru.capi: pthread_atfork failed (out of memory)")


# ---------------------------------------------------------------------------
# the tag at the start of a prepared buffer (model_prepare_*): what it was prepared for
# ---------------------------------------------------------------------------

cdef extern from *:
    """
    #include <stdint.h>
    /* 64 bytes; the engine's blocks follow (cygru._engine.model_prepare) */
    typedef struct cygru_prep_header {
        uint64_t magic;         /* CYGRU_PREP_MAGIC, written last by model_prepare */
        uint64_t kind;          /* itemsize | layout version << 8 */
        uint64_t sizes_ih;      /* input_size | hidden_size << 32 */
        uint64_t sizes_ld;      /* num_layers | num_directions << 32 */
        uint64_t total;         /* bytes of the buffer that hold the prepared weights */
        uint64_t weights;       /* FNV-1a of the weight and bias pointers of every direction */
        uint64_t check;         /* FNV-1a of the fields above */
        uint64_t reserved;      /* 0 */
    } cygru_prep_header;
    #define CYGRU_PREP_MAGIC 0x3152505552475943ULL     /* "CYGRUPR1" in memory order */
    #define CYGRU_PREP_LAYOUT 1ULL
    static inline uint64_t cygru_fnv_start(void) { return 14695981039346656037ULL; }
    static inline uint64_t cygru_fnv(uint64_t h, uint64_t v) {
        int i;
        for (i = 0; i < 8; i++) {
            h ^= (v >> (8 * i)) & 0xffu;
            h *= 1099511628211ULL;
        }
        return h;
    }
    static inline void cygru_prep_seal(cygru_prep_header *h) {
        uint64_t c = cygru_fnv_start();
        c = cygru_fnv(c, h->magic);
        c = cygru_fnv(c, h->kind);
        c = cygru_fnv(c, h->sizes_ih);
        c = cygru_fnv(c, h->sizes_ld);
        c = cygru_fnv(c, h->total);
        c = cygru_fnv(c, h->weights);
        h->check = c;
        h->reserved = 0;
    }
    static inline void cygru_prep_fill(cygru_prep_header *h, int itemsize, int In, int H,
                                       int L, int D, uint64_t total, uint64_t weights) {
        h->magic = CYGRU_PREP_MAGIC;
        h->kind = (uint64_t)itemsize | (CYGRU_PREP_LAYOUT << 8);
        h->sizes_ih = (uint64_t)(uint32_t)In | ((uint64_t)(uint32_t)H << 32);
        h->sizes_ld = (uint64_t)(uint32_t)L | ((uint64_t)(uint32_t)D << 32);
        h->total = total;
        h->weights = weights;
        cygru_prep_seal(h);
    }
    /* a quantized buffer (model_quantize): the same tag, another magic; kind holds the
       precision (CYGRU_INT8, CYGRU_BF16) and the layout version */
    #define CYGRU_QUANT_MAGIC 0x3151555247594343ULL    /* "CCYGRUQ1" in memory order */
    #define CYGRU_QUANT_LAYOUT 1ULL
    static inline void cygru_quant_fill(cygru_prep_header *h, int precision, int In, int H,
                                        int L, int D, uint64_t total) {
        cygru_prep_fill(h, precision, In, H, L, D, total, 0);
        h->magic = CYGRU_QUANT_MAGIC;
        h->kind = (uint64_t)precision | (CYGRU_QUANT_LAYOUT << 8);
        cygru_prep_seal(h);
    }
    """
    ctypedef unsigned long long uint64_t
    ctypedef struct cygru_prep_header:
        uint64_t magic
    enum: CYGRU_PREP_HEADER_BYTES "sizeof(cygru_prep_header)"
    uint64_t cygru_fnv_start() noexcept nogil
    uint64_t cygru_fnv(uint64_t h, uint64_t v) noexcept nogil
    void cygru_prep_fill(cygru_prep_header* h, int itemsize, int In, int H, int L, int D,
                         uint64_t total, uint64_t weights) noexcept nogil
    void cygru_quant_fill(cygru_prep_header* h, int precision, int In, int H, int L, int D,
                          uint64_t total) noexcept nogil


# the conversions and packing of cygru.quantize (its rules, bit for bit)
cdef extern from "cygru_quant.h" nogil:
    size_t cygru_q8_block_size(int N, int K)
    void cygru_q8_quantize_rows(int M, int K, const float* A, Py_ssize_t lda, int8_t* q,
                                Py_ssize_t ldq, float* scale)
    void cygru_q8_pack(int N, int K, const int8_t* q, Py_ssize_t ldq, const float* scale,
                       void* block)
    size_t cygru_bf16_block_size(int N, int K)
    void cygru_bf16_from_f32_n(Py_ssize_t n, const float* a, uint16_t* out)
    void cygru_bf16_pack(int N, int K, const uint16_t* wb, Py_ssize_t ldw, void* block)

__all__ = ["export_weights", "ExportedWeights", "status_name", "OK", "ERR_SIZE", "ERR_NULL",
           "ERR_LENGTH", "ERR_FLAGS", "ERR_ALIAS", "ERR_WORKSPACE", "ERR_ALIGN",
           "ERR_WORKSPACE_ALIAS", "ERR_WORKSPACE_BUSY", "ERR_PREPARED_SIZE", "ERR_PREPARED",
           "ERR_PRECISION", "ERR_NOT_FINITE", "INT8", "BF16", "PRECISIONS",
           "WORK_ALIGN", "PROJECTION_CHUNK_BYTES", "ABI_VERSION"]

# Python names of the status codes of capi.pxd
OK = CYGRU_OK
ERR_SIZE = CYGRU_ERR_SIZE
ERR_NULL = CYGRU_ERR_NULL
ERR_LENGTH = CYGRU_ERR_LENGTH
ERR_FLAGS = CYGRU_ERR_FLAGS
ERR_ALIAS = CYGRU_ERR_ALIAS
ERR_WORKSPACE = CYGRU_ERR_WORKSPACE
ERR_ALIGN = CYGRU_ERR_ALIGN
ERR_WORKSPACE_ALIAS = CYGRU_ERR_WORKSPACE_ALIAS
ERR_WORKSPACE_BUSY = CYGRU_ERR_WORKSPACE_BUSY
ERR_PREPARED_SIZE = CYGRU_ERR_PREPARED_SIZE
ERR_PREPARED = CYGRU_ERR_PREPARED
ERR_PRECISION = CYGRU_ERR_PRECISION
ERR_NOT_FINITE = CYGRU_ERR_NOT_FINITE
# the precision codes of model_quantize (cygru.h's CYGRU_INT8, CYGRU_BF16)
INT8 = CYGRU_INT8
BF16 = CYGRU_BF16
PRECISIONS = {"int8": CYGRU_INT8, "bf16": CYGRU_BF16}
WORK_ALIGN = CYGRU_WORK_ALIGN

cdef enum:
    _INT_MAX = 2147483647
    _ALIGN = 64            # every region of a cell workspace starts at a multiple of this
    _MAX_INNER = 131072    # reduced precision: int8 sums stay exact in int32 up to this
# The input projection of a direction is computed this many bytes (at least one time
# step) at a time once all steps would not fit in 16 MiB, so the workspace of a long
# sequence does not grow with T (the engine's rule, cygru._engine.chunk_steps).
PROJECTION_CHUNK_BYTES = PROJECTION_CHUNK


cdef const char* status_message(int status) noexcept nogil:
    if status == CYGRU_OK:
        return b"ok"
    if status == CYGRU_ERR_SIZE:
        return b"a size argument (T, B, I, H, D or layers) is out of range or too large for BLAS's int"
    if status == CYGRU_ERR_NULL:
        return b"a required pointer is NULL"
    if status == CYGRU_ERR_LENGTH:
        return b"a sequence length is outside [1, T]"
    if status == CYGRU_ERR_FLAGS:
        return b"inconsistent flags: reverse needs a single direction"
    if status == CYGRU_ERR_ALIAS:
        return b"an output array overlaps an input array, a weight or another output"
    if status == CYGRU_ERR_WORKSPACE:
        return b"the workspace is NULL or smaller than the required size"
    if status == CYGRU_ERR_ALIGN:
        return b"the workspace (or prepared buffer) is not aligned to CYGRU_WORK_ALIGN bytes"
    if status == CYGRU_ERR_WORKSPACE_ALIAS:
        return b"the workspace overlaps an input, output or weight array"
    if status == CYGRU_ERR_WORKSPACE_BUSY:
        return (b"the workspace is in use by a call running on another thread "
                b"(each concurrent call needs its own workspace)")
    if status == CYGRU_ERR_PREPARED_SIZE:
        return (b"the prepared buffer is smaller than model_prepared_size_*(model) (or the "
                b"quantized buffer than model_quantized_size)")
    if status == CYGRU_ERR_PREPARED:
        return (b"the prepared buffer was not prepared by model_prepare_* for this model "
                b"(its sizes, dtype and weights), or the quantized buffer not made by "
                b"model_quantize for these sizes and this precision")
    if status == CYGRU_ERR_PRECISION:
        return b"the precision is not CYGRU_INT8 (1) or CYGRU_BF16 (2)"
    if status == CYGRU_ERR_NOT_FINITE:
        return b"a weight or bias to quantize is not finite (inf or NaN)"
    return b"unknown cygru status"


def status_name(status):
    """The description of a C API status code, as a str ("unknown cygru status" for an
    integer that is not one).

    Examples
    --------
    >>> import cygru.capi
    >>> cygru.capi.status_name(cygru.capi.ERR_LENGTH)
    'a sequence length is outside [1, T]'
    """
    if isinstance(status, (bool, np.bool_)) or not isinstance(status, numbers.Integral):
        raise TypeError(
            f"cygru.capi.status_name: status must be an integer (a status code), got "
            f"{type(status).__name__} {status!r}"
        )
    if not -2**31 <= status < 2**31:  # a C int; no status is outside
        return "unknown cygru status"
    return status_message(<int>status).decode("ascii")


# ---------------------------------------------------------------------------
# small helpers (no allocation, no GIL)
# ---------------------------------------------------------------------------

cdef inline size_t _round(size_t nbytes) noexcept nogil:
    return (nbytes + (_ALIGN - 1)) // _ALIGN * _ALIGN


cdef inline bint _overlap(const void* a, size_t na, const void* b, size_t nb) noexcept nogil:
    """Whether the byte ranges [a, a+na) and [b, b+nb) intersect (empty ranges never do)."""
    cdef uintptr_t pa = <uintptr_t>a, pb = <uintptr_t>b
    if a == NULL or b == NULL or na == 0 or nb == 0:
        return False
    return pa < pb + nb and pb < pa + na


cdef int _check_sizes(int T, int B, int I, int H, int L, int D) noexcept nogil:
    """The scalar preconditions of a sequence call (those cygru.functional checks)."""
    if T < 1 or B < 0 or I < 1 or H < 1 or L < 1 or (D != 1 and D != 2):
        return CYGRU_ERR_SIZE
    if <long long>L * D > _INT_MAX:
        return CYGRU_ERR_SIZE
    # the kernels index with int: T*B rows, 4*H*D columns (as functional.check_blas_sizes)
    if <long long>T * B > _INT_MAX or 4 * <long long>H * D > _INT_MAX:
        return CYGRU_ERR_SIZE
    return CYGRU_OK


cdef size_t _model_workspace(int T, int B, int I, int H, int L, int D,
                             size_t itemsize) noexcept nogil:
    """Bytes of a sequence call's workspace: the engine's query (0: invalid sizes, or a
    size that would not fit in memory)."""
    if _check_sizes(T, B, I, H, L, D) != CYGRU_OK:
        return 0
    return model_work_size(T, B, I, H, L, D, <int>itemsize)


cdef size_t _prepared_workspace(int T, int B, int I, int H, int L, int D,
                                size_t itemsize) noexcept nogil:
    """Bytes of a prepared call's workspace (0: invalid sizes)."""
    if _check_sizes(T, B, I, H, L, D) != CYGRU_OK:
        return 0
    return model_work_size_prepared(T, B, I, H, L, D, <int>itemsize)


cdef size_t _cell_workspace(int B, int H, size_t itemsize) noexcept nogil:
    """Bytes of cell_step_*'s workspace (0: invalid sizes). At most DOT_MAX_B rows run
    the engine's one-step forward, whose scratch does not depend on the input size (the
    dot kernel reads the weights where they are); larger batches the BLAS path."""
    if B < 0 or H < 1 or 4 * <long long>H > _INT_MAX:
        return 0
    if itemsize * (9.0 * B * H + 3.0 * H) + 256.0 > 4.6e18:     # would wrap size_t: invalid
        return 0
    if not step_needs_input_size(B):
        return step_work_size(B, 1, H, <int>itemsize)
    return (_round(<size_t>cell_work_size(B, H) * itemsize)          # the kernel's gi, gh, rh
            + _round(<size_t>B * H * itemsize)                        # copy of h (in-place steps)
            + _round(3 * <size_t>H * itemsize))                       # zero bias


cdef inline void _load_dir(const void* dirs, Py_ssize_t k,
                           const floating** w_ih, const floating** w_hh,
                           const floating** b_ih, const floating** b_hh) noexcept nogil:
    """The weights of entry k of a cygru_direction_f32/_f64 array (by floating)."""
    cdef const cygru_direction_f32* d32
    cdef const cygru_direction_f64* d64
    if floating is float:
        d32 = (<const cygru_direction_f32*>dirs) + k
        w_ih[0], w_hh[0], b_ih[0], b_hh[0] = d32.w_ih, d32.w_hh, d32.b_ih, d32.b_hh
    else:
        d64 = (<const cygru_direction_f64*>dirs) + k
        w_ih[0], w_hh[0], b_ih[0], b_hh[0] = d64.w_ih, d64.w_hh, d64.b_ih, d64.b_hh


cdef bint _overlaps_weights(const void* p, size_t n, const void* dirs, int L, int D, int I,
                            int H, floating dummy=0) noexcept nogil:
    """Whether [p, p+n) overlaps the table `dirs` (L*D cygru_direction_*) or any weight
    or bias it points at, each with its true size (w_ih of layer k is (3H, I_k))."""
    cdef size_t itemsize = sizeof(floating)
    cdef size_t gate_bytes = 3 * <size_t>H * itemsize
    cdef size_t table_bytes
    cdef Py_ssize_t k
    cdef int in_size
    cdef const floating* w_ih = NULL
    cdef const floating* w_hh = NULL
    cdef const floating* b_ih = NULL
    cdef const floating* b_hh = NULL
    if floating is float:
        table_bytes = <size_t>L * D * sizeof(cygru_direction_f32)
    else:
        table_bytes = <size_t>L * D * sizeof(cygru_direction_f64)
    if _overlap(p, n, dirs, table_bytes):
        return True
    for k in range(<Py_ssize_t>L * D):
        _load_dir(dirs, k, &w_ih, &w_hh, &b_ih, &b_hh)
        in_size = I if k < D else D * H          # I_0 = input_size, I_k = D*H
        if (_overlap(p, n, w_ih, gate_bytes * <size_t>in_size)
                or _overlap(p, n, w_hh, gate_bytes * <size_t>H)
                or _overlap(p, n, b_ih, gate_bytes) or _overlap(p, n, b_hh, gate_bytes)):
            return True
    return False


# ---------------------------------------------------------------------------
# the implementations, fused over float / double
# ---------------------------------------------------------------------------

cdef int _cell_step(int B, int I, int H,
                    const floating* x, const floating* h,
                    const floating* w_ih, const floating* w_hh,
                    const floating* b_ih, const floating* b_hh,
                    bint reset_after, floating* h_out,
                    void* work, size_t work_size) noexcept nogil:
    cdef size_t need = _cell_workspace(B, H, sizeof(floating))
    cdef size_t xbytes = <size_t>B * I * sizeof(floating)
    cdef size_t hbytes = <size_t>B * H * sizeof(floating)
    cdef size_t gate_bytes = 3 * <size_t>H * sizeof(floating)
    cdef size_t wih_bytes = gate_bytes * <size_t>I
    cdef size_t whh_bytes = gate_bytes * <size_t>H
    cdef char* p
    cdef floating* kwork
    cdef floating* hcopy
    cdef floating* zero_bias
    cdef cygru_in_use in_use
    if B < 0 or I < 1 or H < 1 or need == 0:
        return CYGRU_ERR_SIZE
    if x == NULL or w_ih == NULL or w_hh == NULL or h_out == NULL:
        return CYGRU_ERR_NULL
    if work == NULL or work_size < need:
        return CYGRU_ERR_WORKSPACE
    if (<uintptr_t>work) % CYGRU_WORK_ALIGN:
        return CYGRU_ERR_ALIGN
    # h_out may be h itself (the streaming case), but not overlap x, part of h or a
    # weight (the gate pass reads the biases while it writes h_out)
    if (_overlap(h_out, hbytes, x, xbytes)
            or (<const void*>h_out != <const void*>h and _overlap(h_out, hbytes, h, hbytes))
            or _overlap(h_out, hbytes, w_ih, wih_bytes)
            or _overlap(h_out, hbytes, w_hh, whh_bytes)
            or _overlap(h_out, hbytes, b_ih, gate_bytes)
            or _overlap(h_out, hbytes, b_hh, gate_bytes)):
        return CYGRU_ERR_ALIAS
    # the workspace is written before the inputs are read (the copy of h, the products):
    # the bytes it uses may overlap nothing
    if (_overlap(work, need, x, xbytes) or _overlap(work, need, h, hbytes)
            or _overlap(work, need, h_out, hbytes)
            or _overlap(work, need, w_ih, wih_bytes) or _overlap(work, need, w_hh, whh_bytes)
            or _overlap(work, need, b_ih, gate_bytes)
            or _overlap(work, need, b_hh, gate_bytes)):
        return CYGRU_ERR_WORKSPACE_ALIAS
    if B == 0:
        return CYGRU_OK
    if not cygru_workspace_claim(&in_use, work, need):
        return CYGRU_ERR_WORKSPACE_BUSY
    if not step_needs_input_size(B):
        # the engine's one-step forward (dot kernel, this thread): a cygru.GRU call's bits
        step_forward(B, I, H, <int>sizeof(floating), reset_after, x, h, w_ih, w_hh, b_ih,
                     b_hh, h_out, work)
        cygru_workspace_release(&in_use)
        return CYGRU_OK
    p = <char*>work
    kwork = <floating*>p
    p += _round(<size_t>cell_work_size(B, H) * sizeof(floating))
    hcopy = <floating*>p
    p += _round(hbytes)
    zero_bias = <floating*>p
    if b_ih == NULL or b_hh == NULL:
        memset(zero_bias, 0, 3 * <size_t>H * sizeof(floating))
        if b_ih == NULL:
            b_ih = zero_bias
        if b_hh == NULL:
            b_hh = zero_bias
    if h == NULL:
        memset(hcopy, 0, hbytes)
        h = hcopy
    elif <const void*>h == <const void*>h_out:
        # the kernel reads h after it starts writing h_out: step from a copy
        memcpy(hcopy, h, hbytes)
        h = hcopy
    gru_cell_forward(B, I, H, x, h, w_ih, w_hh, b_ih, b_hh, reset_after, h_out, kwork)
    cygru_workspace_release(&in_use)
    return CYGRU_OK


cdef size_t _prepared_size(int I, int H, int L, int D, size_t itemsize) noexcept nogil:
    """Bytes of a model's prepared buffer: the tag, then the engine's blocks (0: invalid
    sizes, or a size that would not fit in memory)."""
    cdef double per_dir
    if _check_sizes(1, 0, I, H, L, D) != CYGRU_OK:
        return 0
    # an upper bound of the engine's sum, in floating point (it cannot wrap): per
    # direction the packed W_ih and W_hh (rows padded to panels of 16), their row-major
    # copies (for batches of at most DOT_MAX_B rows), the two biases and alignment
    per_dir = <double>itemsize * (3.0 * (2.0 * H + 16.0) * ((I if I > D * H else D * H) + H)
                                  + 6.0 * H) + 6.0 * _ALIGN
    if <double>L * D * per_dir + CYGRU_PREP_HEADER_BYTES > 4.6e18:
        return 0
    return CYGRU_PREP_HEADER_BYTES + model_prepared_size(I, H, L, D, <int>itemsize)


cdef uint64_t _weights_tag(const void* dirs, int L, int D, floating dummy=0) noexcept nogil:
    """FNV-1a of the weight and bias pointers of the L*D directions of `dirs`."""
    cdef uint64_t h = cygru_fnv_start()
    cdef Py_ssize_t k
    cdef const floating* w_ih = NULL
    cdef const floating* w_hh = NULL
    cdef const floating* b_ih = NULL
    cdef const floating* b_hh = NULL
    for k in range(<Py_ssize_t>L * D):
        _load_dir(dirs, k, &w_ih, &w_hh, &b_ih, &b_hh)
        h = cygru_fnv(h, <uintptr_t>w_ih)
        h = cygru_fnv(h, <uintptr_t>w_hh)
        h = cygru_fnv(h, <uintptr_t>b_ih)
        h = cygru_fnv(h, <uintptr_t>b_hh)
    return h


cdef int _model_prepare(int I, int H, int L, int D, bint reverse, const void* dirs,
                        void* prepared, size_t size, floating dummy=0) noexcept nogil:
    """Pack the weights of L*D directions (`dirs`: cygru_direction_*) into `prepared`."""
    cdef size_t itemsize = sizeof(floating)
    cdef size_t need
    cdef int status, k
    cdef cygru_in_use in_use
    cdef cygru_prep_header tag
    cdef const floating* w_ih = NULL
    cdef const floating* w_hh = NULL
    cdef const floating* b_ih = NULL
    cdef const floating* b_hh = NULL
    status = _check_sizes(1, 0, I, H, L, D)
    if status != CYGRU_OK:
        return status
    if reverse and D == 2:
        return CYGRU_ERR_FLAGS
    if dirs == NULL or prepared == NULL:
        return CYGRU_ERR_NULL
    for k in range(L * D):
        _load_dir(dirs, k, &w_ih, &w_hh, &b_ih, &b_hh)
        if w_ih == NULL or w_hh == NULL:
            return CYGRU_ERR_NULL
    need = _prepared_size(I, H, L, D, itemsize)
    if need == 0:
        return CYGRU_ERR_SIZE
    if size < need:
        return CYGRU_ERR_PREPARED_SIZE
    if (<uintptr_t>prepared) % CYGRU_WORK_ALIGN:
        return CYGRU_ERR_ALIGN
    # the buffer is the output: on a weight or the table it would change what it packs
    if _overlaps_weights(prepared, need, dirs, L, D, I, H, <floating>0):
        return CYGRU_ERR_ALIAS
    # two calls preparing overlapping bytes at once (or a call using them as workspace)
    if not cygru_workspace_claim(&in_use, prepared, need):
        return CYGRU_ERR_WORKSPACE_BUSY
    # the tag is written last: a buffer whose packing did not finish is never accepted
    memset(prepared, 0, CYGRU_PREP_HEADER_BYTES)
    model_prepare(I, H, L, D, <int>itemsize, <const cygru_dir_weights*>dirs,
                  <char*>prepared + CYGRU_PREP_HEADER_BYTES)
    cygru_prep_fill(&tag, <int>itemsize, I, H, L, D, need,
                    _weights_tag(dirs, L, D, <floating>0))
    memcpy(prepared, &tag, CYGRU_PREP_HEADER_BYTES)
    cygru_workspace_release(&in_use)
    return CYGRU_OK


cdef int _model_forward(int T, int B, int I, int H, int L, int D,
                        bint reset_after, bint reverse, const void* dirs,
                        const floating* x, const floating* h0, const int* lengths,
                        floating* output, floating* h_n,
                        void* work, size_t work_size, const void* prepared=NULL,
                        bint is_prepared=False) noexcept nogil:
    """L layers of D directions over x (T, B, I); `dirs` holds L*D cygru_direction_*.
    With is_prepared, the weights are those of `prepared` (model_prepare_*), which must
    have been prepared for these sizes and `dirs`; the weights themselves are not read."""
    cdef size_t itemsize = sizeof(floating)
    cdef size_t BH = <size_t>B * H
    cdef size_t need, out_bytes, hn_bytes, x_bytes, len_bytes, prep_bytes = 0
    cdef int status, k
    cdef cygru_in_use in_use
    cdef cygru_prep_header tag
    cdef const floating* w_ih = NULL
    cdef const floating* w_hh = NULL
    cdef const floating* b_ih = NULL
    cdef const floating* b_hh = NULL

    # -- validation: nothing is written before all of it passed ------------------
    status = _check_sizes(T, B, I, H, L, D)
    if status != CYGRU_OK:
        return status
    if reverse and D == 2:
        return CYGRU_ERR_FLAGS
    if dirs == NULL or x == NULL or output == NULL or (is_prepared and prepared == NULL):
        return CYGRU_ERR_NULL
    if is_prepared:
        # the tag must be the one model_prepare_* writes for this model, exactly
        prep_bytes = _prepared_size(I, H, L, D, itemsize)
        if (<uintptr_t>prepared) % CYGRU_WORK_ALIGN:
            return CYGRU_ERR_ALIGN
        if prep_bytes == 0:
            return CYGRU_ERR_SIZE
        cygru_prep_fill(&tag, <int>itemsize, I, H, L, D, prep_bytes,
                        _weights_tag(dirs, L, D, <floating>0))
        if memcmp(&tag, prepared, CYGRU_PREP_HEADER_BYTES) != 0:
            return CYGRU_ERR_PREPARED
        need = _prepared_workspace(T, B, I, H, L, D, itemsize)
    else:
        for k in range(L * D):
            _load_dir(dirs, k, &w_ih, &w_hh, &b_ih, &b_hh)
            if w_ih == NULL or w_hh == NULL:
                return CYGRU_ERR_NULL
        need = _model_workspace(T, B, I, H, L, D, itemsize)
    if need == 0:
        return CYGRU_ERR_SIZE           # a workspace this large could not exist
    if work == NULL or work_size < need:
        return CYGRU_ERR_WORKSPACE
    if (<uintptr_t>work) % CYGRU_WORK_ALIGN:
        return CYGRU_ERR_ALIGN
    x_bytes = <size_t>T * B * I * itemsize
    out_bytes = <size_t>T * D * BH * itemsize
    hn_bytes = <size_t>L * D * BH * itemsize
    len_bytes = <size_t>B * sizeof(int) if lengths != NULL else 0
    # h_n may be h0 itself (each layer loads its h0 before writing its h_n), nothing else.
    # An output on a weight (or on the table of their pointers, read at every layer), or
    # on the prepared weights, would change the weights of later steps; one on lengths,
    # the caller's lengths. (A prepared call reads the table only before any write, and
    # the weights not at all.)
    if (_overlap(output, out_bytes, x, x_bytes) or _overlap(output, out_bytes, h0, hn_bytes)
            or _overlap(h_n, hn_bytes, x, x_bytes) or _overlap(h_n, hn_bytes, output, out_bytes)
            or (<const void*>h_n != <const void*>h0 and _overlap(h_n, hn_bytes, h0, hn_bytes))
            or _overlap(output, out_bytes, lengths, len_bytes)
            or _overlap(h_n, hn_bytes, lengths, len_bytes)
            or _overlap(output, out_bytes, prepared, prep_bytes)
            or _overlap(h_n, hn_bytes, prepared, prep_bytes)
            or (not is_prepared
                and (_overlaps_weights(output, out_bytes, dirs, L, D, I, H, <floating>0)
                     or _overlaps_weights(h_n, hn_bytes, dirs, L, D, I, H, <floating>0)))):
        return CYGRU_ERR_ALIAS
    # the workspace is written first (the schedule, while lengths are read) and
    # throughout: the bytes it uses may overlap nothing
    if (_overlap(work, need, x, x_bytes) or _overlap(work, need, h0, hn_bytes)
            or _overlap(work, need, lengths, len_bytes)
            or _overlap(work, need, output, out_bytes) or _overlap(work, need, h_n, hn_bytes)
            or _overlap(work, need, prepared, prep_bytes)
            or (not is_prepared
                and _overlaps_weights(work, need, dirs, L, D, I, H, <floating>0))):
        return CYGRU_ERR_WORKSPACE_ALIAS

    # -- the engine, on this thread (it validates the lengths before any write) ----
    if not cygru_workspace_claim(&in_use, work, need):
        return CYGRU_ERR_WORKSPACE_BUSY
    if is_prepared:
        status = model_forward_prepared(T, B, I, H, L, D, <int>itemsize, reset_after, reverse,
                                        <const char*>prepared + CYGRU_PREP_HEADER_BYTES, x, h0,
                                        lengths, output, h_n, work)
    else:
        status = model_forward(T, B, I, H, L, D, <int>itemsize, reset_after, reverse,
                               <const cygru_dir_weights*>dirs, x, h0, lengths, output, h_n,
                               work)
    cygru_workspace_release(&in_use)
    return CYGRU_ERR_LENGTH if status != 0 else CYGRU_OK


# ---------------------------------------------------------------------------
# quantized models (model_quantize, model_forward_quantized): int8 / bf16 weight blocks
# of cygru_quant.h, the engine's reduced-precision weight formats
# ---------------------------------------------------------------------------
# A quantized buffer: the tag (cygru_quant_fill), then for each direction (layer-major)
# W_ih's three gate blocks, W_hh's, b_ih and b_hh (3H float32 each, zeros for NULL), every
# region at a multiple of 64 bytes from the start; then model_quantize's scratch (one
# gate's quantized rows, before they are packed).

cdef inline int _wformat(int precision) noexcept nogil:
    """The engine's weight format of a C API precision (0: not a precision)."""
    if precision == CYGRU_INT8:
        return WFORMAT_INT8
    if precision == CYGRU_BF16:
        return WFORMAT_BF16
    return 0


cdef int _check_quant_sizes(int T, int B, int I, int H, int L, int D,
                            int precision) noexcept nogil:
    cdef int status = _check_sizes(T, B, I, H, L, D)
    if status != CYGRU_OK:
        return status
    if I > _MAX_INNER or H > _MAX_INNER or (L > 1 and <long long>D * H > _MAX_INNER):
        return CYGRU_ERR_SIZE
    if _wformat(precision) == 0:
        return CYGRU_ERR_PRECISION
    return CYGRU_OK


cdef inline int _inner_size(int k, int I, int H, int D) noexcept nogil:
    return I if k < D else D * H


cdef size_t _quant_dir_bytes(int K, int H, int wformat) noexcept nogil:
    """Bytes of one direction's region: W_ih (inner size K) and W_hh blocks, two biases."""
    return (quant_matrix_size(H, K, wformat) + quant_matrix_size(H, H, wformat)
            + 2 * _round(3 * <size_t>H * sizeof(float)))


cdef size_t _quant_scratch_bytes(int K, int H, int wformat) noexcept nogil:
    """model_quantize's scratch for one gate (H rows) of an inner size K."""
    if wformat == WFORMAT_INT8:   # rows of K rounded up to 4 int8 values, and H scales
        return _round(<size_t>H * ((<size_t>K + 3) // 4 * 4)) + _round(<size_t>H * sizeof(float))
    return _round(<size_t>H * K * sizeof(uint16_t))


cdef size_t _quantized_size(int I, int H, int L, int D, int precision) noexcept nogil:
    """Bytes of a quantized buffer (0: invalid sizes or precision, or too large)."""
    cdef int wf = _wformat(precision)
    cdef int K = I if I > H else H
    cdef size_t total = CYGRU_PREP_HEADER_BYTES
    if _check_quant_sizes(1, 0, I, H, L, D, precision) != CYGRU_OK:
        return 0
    if L > 1 and D * H > K:
        K = D * H
    # an upper bound of the sum below, in floating point (it cannot wrap)
    if (<double>L * D * (12.0 * (H + 16.0) * (K + H + 24.0) + 24.0 * H + 4.0 * _ALIGN)
            + 2.0 * (H + 16.0) * (K + 16.0) + 4.0 * _ALIGN > 4.6e18):
        return 0
    # D directions of the first layer (inner size I), (L - 1) * D of the others (D*H)
    total += <size_t>D * _quant_dir_bytes(I, H, wf)
    if L > 1:
        total += <size_t>(L - 1) * D * _quant_dir_bytes(D * H, H, wf)
    return total + _quant_scratch_bytes(K, H, wf)


cdef size_t _quantized_workspace(int T, int B, int I, int H, int L, int D,
                                 int precision) noexcept nogil:
    """Bytes of model_forward_quantized's workspace: the table of the L*D directions'
    pointers into the buffer, then the engine's (0: invalid sizes or precision)."""
    cdef size_t n
    if _check_quant_sizes(T, B, I, H, L, D, precision) != CYGRU_OK:
        return 0
    n = model_work_size_quantized(T, B, I, H, L, D, _wformat(precision))
    if n == 0:
        return 0
    return _round(<size_t>L * D * sizeof(cygru_dir_weights)) + n


cdef bint _all_finite(const float* p, size_t n) noexcept nogil:
    cdef size_t i
    cdef uint32_t bits
    if p == NULL:
        return True
    for i in range(n):
        memcpy(&bits, p + i, 4)
        if (bits & 0x7F800000u) == 0x7F800000u:
            return False
    return True


cdef void _quantize_matrix(int H, int K, int wformat, const float* w, char* dst,
                           char* scratch) noexcept nogil:
    """The three gate blocks of one (3H, K) float32 weight, as cygru.quantize packs them."""
    cdef size_t bs = quant_matrix_size(H, K, wformat) // 3
    cdef Py_ssize_t K4 = (<Py_ssize_t>K + 3) // 4 * 4
    cdef int8_t* q = <int8_t*>scratch
    cdef float* scale = <float*>(scratch + _round(<size_t>H * K4))
    cdef int g
    for g in range(3):
        if wformat == WFORMAT_INT8:
            cygru_q8_quantize_rows(H, K, w + <size_t>g * H * K, K, q, K4, scale)
            cygru_q8_pack(H, K, q, K4, scale, dst + g * bs)
        else:
            cygru_bf16_from_f32_n(<Py_ssize_t>H * K, w + <size_t>g * H * K, <uint16_t*>scratch)
            cygru_bf16_pack(H, K, <const uint16_t*>scratch, K, dst + g * bs)


cdef inline void _copy_bias(const float* b, char* dst, size_t nbytes) noexcept nogil:
    """A bias (zeros for NULL) into its region, padded with zeros to 64 bytes."""
    if b == NULL:
        memset(dst, 0, _round(nbytes))
    else:
        memcpy(dst, b, nbytes)
        memset(dst + nbytes, 0, _round(nbytes) - nbytes)


cdef int _model_quantize(int I, int H, int L, int D, int precision,
                         const cygru_direction_f32* dirs, void* quantized,
                         size_t size) noexcept nogil:
    cdef int wf = _wformat(precision)
    cdef size_t need, gate_bytes = 3 * <size_t>H * sizeof(float), scratch_at
    cdef int status, K
    cdef Py_ssize_t k
    cdef cygru_in_use in_use
    cdef cygru_prep_header tag
    cdef char* p
    status = _check_quant_sizes(1, 0, I, H, L, D, precision)
    if status != CYGRU_OK:
        return status
    if dirs == NULL or quantized == NULL:
        return CYGRU_ERR_NULL
    for k in range(<Py_ssize_t>L * D):
        if dirs[k].w_ih == NULL or dirs[k].w_hh == NULL:
            return CYGRU_ERR_NULL
    need = _quantized_size(I, H, L, D, precision)
    if need == 0:
        return CYGRU_ERR_SIZE
    if size < need:
        return CYGRU_ERR_PREPARED_SIZE
    if (<uintptr_t>quantized) % CYGRU_WORK_ALIGN:
        return CYGRU_ERR_ALIGN
    if _overlaps_weights(quantized, need, dirs, L, D, I, H, <float>0):
        return CYGRU_ERR_ALIAS
    # every value is checked before a byte is written (cygru.quantize refuses them too)
    for k in range(<Py_ssize_t>L * D):
        K = _inner_size(<int>k, I, H, D)
        if (not _all_finite(dirs[k].w_ih, gate_bytes // sizeof(float) * <size_t>K)
                or not _all_finite(dirs[k].w_hh, gate_bytes // sizeof(float) * <size_t>H)
                or not _all_finite(dirs[k].b_ih, gate_bytes // sizeof(float))
                or not _all_finite(dirs[k].b_hh, gate_bytes // sizeof(float))):
            return CYGRU_ERR_NOT_FINITE
    if not cygru_workspace_claim(&in_use, quantized, need):
        return CYGRU_ERR_WORKSPACE_BUSY
    # the tag is written last: a buffer whose quantization did not finish is never accepted
    memset(quantized, 0, CYGRU_PREP_HEADER_BYTES)
    p = <char*>quantized + CYGRU_PREP_HEADER_BYTES
    K = I if I > H else H
    if L > 1 and D * H > K:
        K = D * H
    scratch_at = need - _quant_scratch_bytes(K, H, wf)
    for k in range(<Py_ssize_t>L * D):
        K = _inner_size(<int>k, I, H, D)
        _quantize_matrix(H, K, wf, dirs[k].w_ih, p, <char*>quantized + scratch_at)
        p += quant_matrix_size(H, K, wf)
        _quantize_matrix(H, H, wf, dirs[k].w_hh, p, <char*>quantized + scratch_at)
        p += quant_matrix_size(H, H, wf)
        _copy_bias(dirs[k].b_ih, p, gate_bytes)
        p += _round(gate_bytes)
        _copy_bias(dirs[k].b_hh, p, gate_bytes)
        p += _round(gate_bytes)
    # the scratch is zeroed: a model's buffer is the same bytes wherever it was made
    memset(<char*>quantized + scratch_at, 0, need - scratch_at)
    cygru_quant_fill(&tag, precision, I, H, L, D, need)
    memcpy(quantized, &tag, CYGRU_PREP_HEADER_BYTES)
    cygru_workspace_release(&in_use)
    return CYGRU_OK


cdef int _forward_quantized(int T, int B, int I, int H, int L, int D, int precision,
                            bint reset_after, bint reverse, const void* quantized,
                            const float* x, const float* h0, const int* lengths,
                            float* output, float* h_n, void* work,
                            size_t work_size) noexcept nogil:
    cdef int wf = _wformat(precision)
    cdef size_t BH = <size_t>B * H, itemsize = sizeof(float)
    cdef size_t need, q_bytes, table_bytes, out_bytes, hn_bytes, x_bytes, len_bytes
    cdef size_t gate_bytes = _round(3 * <size_t>H * sizeof(float))
    cdef int status, K
    cdef Py_ssize_t k
    cdef cygru_in_use in_use
    cdef cygru_prep_header tag
    cdef cygru_dir_weights* table
    cdef const char* p
    status = _check_quant_sizes(T, B, I, H, L, D, precision)
    if status != CYGRU_OK:
        return status
    if reverse and D == 2:
        return CYGRU_ERR_FLAGS
    if quantized == NULL or x == NULL or output == NULL:
        return CYGRU_ERR_NULL
    # the tag must be the one model_quantize writes for these sizes and precision, exactly
    q_bytes = _quantized_size(I, H, L, D, precision)
    if (<uintptr_t>quantized) % CYGRU_WORK_ALIGN:
        return CYGRU_ERR_ALIGN
    if q_bytes == 0:
        return CYGRU_ERR_SIZE
    cygru_quant_fill(&tag, precision, I, H, L, D, q_bytes)
    if memcmp(&tag, quantized, CYGRU_PREP_HEADER_BYTES) != 0:
        return CYGRU_ERR_PREPARED
    need = _quantized_workspace(T, B, I, H, L, D, precision)
    if need == 0:
        return CYGRU_ERR_SIZE
    if work == NULL or work_size < need:
        return CYGRU_ERR_WORKSPACE
    if (<uintptr_t>work) % CYGRU_WORK_ALIGN:
        return CYGRU_ERR_ALIGN
    x_bytes = <size_t>T * B * I * itemsize
    out_bytes = <size_t>T * D * BH * itemsize
    hn_bytes = <size_t>L * D * BH * itemsize
    len_bytes = <size_t>B * sizeof(int) if lengths != NULL else 0
    # h_n may be h0 itself, nothing else may overlap; an output on the quantized buffer
    # would change the weights of later steps
    if (_overlap(output, out_bytes, x, x_bytes) or _overlap(output, out_bytes, h0, hn_bytes)
            or _overlap(h_n, hn_bytes, x, x_bytes) or _overlap(h_n, hn_bytes, output, out_bytes)
            or (<const void*>h_n != <const void*>h0 and _overlap(h_n, hn_bytes, h0, hn_bytes))
            or _overlap(output, out_bytes, lengths, len_bytes)
            or _overlap(h_n, hn_bytes, lengths, len_bytes)
            or _overlap(output, out_bytes, quantized, q_bytes)
            or _overlap(h_n, hn_bytes, quantized, q_bytes)):
        return CYGRU_ERR_ALIAS
    if (_overlap(work, need, x, x_bytes) or _overlap(work, need, h0, hn_bytes)
            or _overlap(work, need, lengths, len_bytes)
            or _overlap(work, need, output, out_bytes) or _overlap(work, need, h_n, hn_bytes)
            or _overlap(work, need, quantized, q_bytes)):
        return CYGRU_ERR_WORKSPACE_ALIAS

    if not cygru_workspace_claim(&in_use, work, need):
        return CYGRU_ERR_WORKSPACE_BUSY
    # the directions' pointers into the buffer, at the start of the workspace
    table = <cygru_dir_weights*>work
    table_bytes = _round(<size_t>L * D * sizeof(cygru_dir_weights))
    p = <const char*>quantized + CYGRU_PREP_HEADER_BYTES
    for k in range(<Py_ssize_t>L * D):
        K = _inner_size(<int>k, I, H, D)
        table[k].w_ih = p
        p += quant_matrix_size(H, K, wf)
        table[k].w_hh = p
        p += quant_matrix_size(H, H, wf)
        table[k].b_ih = p
        table[k].b_hh = p + gate_bytes
        p += 2 * gate_bytes
    status = _engine_forward_quantized(T, B, I, H, L, D, wf, reset_after, reverse, table, x,
                                       h0, lengths, output, h_n, <char*>work + table_bytes)
    cygru_workspace_release(&in_use)
    return CYGRU_ERR_LENGTH if status != 0 else CYGRU_OK


# ---------------------------------------------------------------------------
# the public functions of capi.pxd
# ---------------------------------------------------------------------------

cdef size_t cell_workspace_size_f32(int B, int H) noexcept nogil:
    return _cell_workspace(B, H, sizeof(float))


cdef size_t cell_workspace_size_f64(int B, int H) noexcept nogil:
    return _cell_workspace(B, H, sizeof(double))


cdef int cell_step_f32(int B, int I, int H, const float* x, const float* h,
                       const float* w_ih, const float* w_hh,
                       const float* b_ih, const float* b_hh, int reset_after,
                       float* h_out, void* work, size_t work_size) noexcept nogil:
    return _cell_step(B, I, H, x, h, w_ih, w_hh, b_ih, b_hh, reset_after != 0, h_out,
                      work, work_size)


cdef int cell_step_f64(int B, int I, int H, const double* x, const double* h,
                       const double* w_ih, const double* w_hh,
                       const double* b_ih, const double* b_hh, int reset_after,
                       double* h_out, void* work, size_t work_size) noexcept nogil:
    return _cell_step(B, I, H, x, h, w_ih, w_hh, b_ih, b_hh, reset_after != 0, h_out,
                      work, work_size)


cdef size_t layer_workspace_size_f32(int T, int B, int I, int H, int D) noexcept nogil:
    return _model_workspace(T, B, I, H, 1, D, sizeof(float))


cdef size_t layer_workspace_size_f64(int T, int B, int I, int H, int D) noexcept nogil:
    return _model_workspace(T, B, I, H, 1, D, sizeof(double))


cdef int layer_forward_f32(int T, int B, int I, int H, int D,
                           const float* x, const float* h0, const int* lengths,
                           const cygru_direction_f32* weights,
                           int reset_after, int reverse, float* output, float* h_n,
                           void* work, size_t work_size) noexcept nogil:
    return _model_forward(T, B, I, H, 1, D, reset_after != 0, reverse != 0, weights,
                          x, h0, lengths, output, h_n, work, work_size)


cdef int layer_forward_f64(int T, int B, int I, int H, int D,
                           const double* x, const double* h0, const int* lengths,
                           const cygru_direction_f64* weights,
                           int reset_after, int reverse, double* output, double* h_n,
                           void* work, size_t work_size) noexcept nogil:
    return _model_forward(T, B, I, H, 1, D, reset_after != 0, reverse != 0, weights,
                          x, h0, lengths, output, h_n, work, work_size)


cdef size_t model_workspace_size_f32(int T, int B, int I, int H, int L, int D) noexcept nogil:
    return _model_workspace(T, B, I, H, L, D, sizeof(float))


cdef size_t model_workspace_size_f64(int T, int B, int I, int H, int L, int D) noexcept nogil:
    return _model_workspace(T, B, I, H, L, D, sizeof(double))


cdef int model_forward_f32(const cygru_model_f32* model, int T, int B,
                           const float* x, const float* h0, const int* lengths,
                           float* output, float* h_n,
                           void* work, size_t work_size) noexcept nogil:
    if model == NULL:
        return CYGRU_ERR_NULL
    return _model_forward(T, B, model.input_size, model.hidden_size, model.num_layers,
                          model.num_directions, model.reset_after != 0, model.reverse != 0,
                          model.dirs, x, h0, lengths, output, h_n, work, work_size)


cdef int model_forward_f64(const cygru_model_f64* model, int T, int B,
                           const double* x, const double* h0, const int* lengths,
                           double* output, double* h_n,
                           void* work, size_t work_size) noexcept nogil:
    if model == NULL:
        return CYGRU_ERR_NULL
    return _model_forward(T, B, model.input_size, model.hidden_size, model.num_layers,
                          model.num_directions, model.reset_after != 0, model.reverse != 0,
                          model.dirs, x, h0, lengths, output, h_n, work, work_size)


cdef size_t model_prepared_size_f32(const cygru_model_f32* model) noexcept nogil:
    if model == NULL:
        return 0
    return _prepared_size(model.input_size, model.hidden_size, model.num_layers,
                          model.num_directions, sizeof(float))


cdef size_t model_prepared_size_f64(const cygru_model_f64* model) noexcept nogil:
    if model == NULL:
        return 0
    return _prepared_size(model.input_size, model.hidden_size, model.num_layers,
                          model.num_directions, sizeof(double))


cdef int model_prepare_f32(const cygru_model_f32* model, void* prepared,
                           size_t size) noexcept nogil:
    if model == NULL:
        return CYGRU_ERR_NULL
    return _model_prepare(model.input_size, model.hidden_size, model.num_layers,
                          model.num_directions, model.reverse != 0, model.dirs, prepared,
                          size, <float>0)


cdef int model_prepare_f64(const cygru_model_f64* model, void* prepared,
                           size_t size) noexcept nogil:
    if model == NULL:
        return CYGRU_ERR_NULL
    return _model_prepare(model.input_size, model.hidden_size, model.num_layers,
                          model.num_directions, model.reverse != 0, model.dirs, prepared,
                          size, <double>0)


cdef size_t model_prepared_workspace_size_f32(int T, int B, int I, int H, int L,
                                              int D) noexcept nogil:
    return _prepared_workspace(T, B, I, H, L, D, sizeof(float))


cdef size_t model_prepared_workspace_size_f64(int T, int B, int I, int H, int L,
                                              int D) noexcept nogil:
    return _prepared_workspace(T, B, I, H, L, D, sizeof(double))


cdef int model_forward_prepared_f32(const cygru_model_f32* model, const void* prepared,
                                    int T, int B, const float* x, const float* h0,
                                    const int* lengths, float* output, float* h_n,
                                    void* work, size_t work_size) noexcept nogil:
    if model == NULL:
        return CYGRU_ERR_NULL
    return _model_forward(T, B, model.input_size, model.hidden_size, model.num_layers,
                          model.num_directions, model.reset_after != 0, model.reverse != 0,
                          model.dirs, x, h0, lengths, output, h_n, work, work_size,
                          prepared, True)


cdef int model_forward_prepared_f64(const cygru_model_f64* model, const void* prepared,
                                    int T, int B, const double* x, const double* h0,
                                    const int* lengths, double* output, double* h_n,
                                    void* work, size_t work_size) noexcept nogil:
    if model == NULL:
        return CYGRU_ERR_NULL
    return _model_forward(T, B, model.input_size, model.hidden_size, model.num_layers,
                          model.num_directions, model.reset_after != 0, model.reverse != 0,
                          model.dirs, x, h0, lengths, output, h_n, work, work_size,
                          prepared, True)


cdef size_t model_quantized_size(int I, int H, int L, int D, int precision) noexcept nogil:
    return _quantized_size(I, H, L, D, precision)


cdef int model_quantize(int I, int H, int L, int D, int precision,
                        const cygru_direction_f32* dirs, void* quantized,
                        size_t size) noexcept nogil:
    return _model_quantize(I, H, L, D, precision, dirs, quantized, size)


cdef size_t model_quantized_workspace_size(int T, int B, int I, int H, int L, int D,
                                           int precision) noexcept nogil:
    return _quantized_workspace(T, B, I, H, L, D, precision)


cdef int model_forward_quantized(int T, int B, int I, int H, int L, int D, int precision,
                                 int reset_after, int reverse, const void* quantized,
                                 const float* x, const float* h0, const int* lengths,
                                 float* output, float* h_n, void* work,
                                 size_t work_size) noexcept nogil:
    return _forward_quantized(T, B, I, H, L, D, precision, reset_after != 0, reverse != 0,
                              quantized, x, h0, lengths, output, h_n, work, work_size)


# ---------------------------------------------------------------------------
# the plain-C interface (cygru/include/cygru.h): one static table of the functions
# above, published as the capsule cygru.capi._C_API, which import_cygru() reads
# ---------------------------------------------------------------------------

cdef extern from *:
    """
    /* capi.c needs cygru.h's types and constants, not its importer and wrappers */
    #define CYGRU_TYPES_ONLY
    """

# cygru.h is the one source of the ABI version, the capsule's name and the table's
# layout. Its structs have C types of their own: capi.pxd's structs (a public Cython
# API that must not depend on a C header) are the same layout under Cython's names;
# tests/test_c_header.py compares the two (see _abi_layout).
cdef extern from "cygru.h":
    enum: CYGRU_ABI_VERSION
    const char* CYGRU_CAPSULE_NAME
    ctypedef struct _h_direction_f32 "cygru_direction_f32":
        pass
    ctypedef struct _h_direction_f64 "cygru_direction_f64":
        pass
    ctypedef struct _h_model_f32 "cygru_model_f32":
        pass
    ctypedef struct _h_model_f64 "cygru_model_f64":
        pass

# The entries that take a struct, typed with cygru.h's structs: the functions
# above take capi.pxd's (same layout, another C type), so they are cast to these.
ctypedef int (*_layer_forward_f32_h)(int, int, int, int, int, const float*, const float*,
                                     const int*, const _h_direction_f32*, int, int, float*,
                                     float*, void*, size_t) noexcept nogil
ctypedef int (*_layer_forward_f64_h)(int, int, int, int, int, const double*, const double*,
                                     const int*, const _h_direction_f64*, int, int, double*,
                                     double*, void*, size_t) noexcept nogil
ctypedef int (*_model_forward_f32_h)(const _h_model_f32*, int, int, const float*,
                                     const float*, const int*, float*, float*, void*,
                                     size_t) noexcept nogil
ctypedef int (*_model_forward_f64_h)(const _h_model_f64*, int, int, const double*,
                                     const double*, const int*, double*, double*, void*,
                                     size_t) noexcept nogil

ctypedef size_t (*_model_prepared_size_f32_h)(const _h_model_f32*) noexcept nogil
ctypedef size_t (*_model_prepared_size_f64_h)(const _h_model_f64*) noexcept nogil
ctypedef int (*_model_prepare_f32_h)(const _h_model_f32*, void*, size_t) noexcept nogil
ctypedef int (*_model_prepare_f64_h)(const _h_model_f64*, void*, size_t) noexcept nogil
ctypedef int (*_model_forward_prepared_f32_h)(const _h_model_f32*, const void*, int, int,
                                              const float*, const float*, const int*, float*,
                                              float*, void*, size_t) noexcept nogil
ctypedef int (*_model_forward_prepared_f64_h)(const _h_model_f64*, const void*, int, int,
                                              const double*, const double*, const int*,
                                              double*, double*, void*, size_t) noexcept nogil
ctypedef int (*_model_quantize_h)(int, int, int, int, int, const _h_direction_f32*, void*,
                                  size_t) noexcept nogil

cdef extern from "cygru.h":
    # every entry as in cygru.h; the C compiler checks each assignment of
    # _fill_c_api_table against the header's declaration
    ctypedef struct cygru_api:
        int abi_version
        size_t size
        const char* (*status_message)(int) noexcept nogil
        size_t (*cell_workspace_size_f32)(int, int) noexcept nogil
        size_t (*cell_workspace_size_f64)(int, int) noexcept nogil
        int (*cell_step_f32)(int, int, int, const float*, const float*, const float*,
                             const float*, const float*, const float*, int, float*, void*,
                             size_t) noexcept nogil
        int (*cell_step_f64)(int, int, int, const double*, const double*, const double*,
                             const double*, const double*, const double*, int, double*,
                             void*, size_t) noexcept nogil
        size_t (*layer_workspace_size_f32)(int, int, int, int, int) noexcept nogil
        size_t (*layer_workspace_size_f64)(int, int, int, int, int) noexcept nogil
        _layer_forward_f32_h layer_forward_f32
        _layer_forward_f64_h layer_forward_f64
        size_t (*model_workspace_size_f32)(int, int, int, int, int, int) noexcept nogil
        size_t (*model_workspace_size_f64)(int, int, int, int, int, int) noexcept nogil
        _model_forward_f32_h model_forward_f32
        _model_forward_f64_h model_forward_f64
        _model_prepared_size_f32_h model_prepared_size_f32
        _model_prepared_size_f64_h model_prepared_size_f64
        _model_prepare_f32_h model_prepare_f32
        _model_prepare_f64_h model_prepare_f64
        size_t (*model_prepared_workspace_size_f32)(int, int, int, int, int, int) noexcept nogil
        size_t (*model_prepared_workspace_size_f64)(int, int, int, int, int, int) noexcept nogil
        _model_forward_prepared_f32_h model_forward_prepared_f32
        _model_forward_prepared_f64_h model_forward_prepared_f64
        size_t (*model_quantized_size)(int, int, int, int, int) noexcept nogil
        _model_quantize_h model_quantize
        size_t (*model_quantized_workspace_size)(int, int, int, int, int, int,
                                                 int) noexcept nogil
        int (*model_forward_quantized)(int, int, int, int, int, int, int, int, int,
                                       const void*, const float*, const float*, const int*,
                                       float*, float*, void*, size_t) noexcept nogil

# Static: the capsule hands out its address, valid for the life of the process
# (CPython never unloads an extension module).
cdef cygru_api _c_api_table


cdef void _fill_c_api_table(cygru_api* t) noexcept:
    memset(t, 0, sizeof(cygru_api))
    t.abi_version = CYGRU_ABI_VERSION
    t.size = sizeof(cygru_api)
    t.status_message = status_message
    t.cell_workspace_size_f32 = cell_workspace_size_f32
    t.cell_workspace_size_f64 = cell_workspace_size_f64
    t.cell_step_f32 = cell_step_f32
    t.cell_step_f64 = cell_step_f64
    t.layer_workspace_size_f32 = layer_workspace_size_f32
    t.layer_workspace_size_f64 = layer_workspace_size_f64
    t.layer_forward_f32 = <_layer_forward_f32_h>layer_forward_f32
    t.layer_forward_f64 = <_layer_forward_f64_h>layer_forward_f64
    t.model_workspace_size_f32 = model_workspace_size_f32
    t.model_workspace_size_f64 = model_workspace_size_f64
    t.model_forward_f32 = <_model_forward_f32_h>model_forward_f32
    t.model_forward_f64 = <_model_forward_f64_h>model_forward_f64
    t.model_prepared_size_f32 = <_model_prepared_size_f32_h>model_prepared_size_f32
    t.model_prepared_size_f64 = <_model_prepared_size_f64_h>model_prepared_size_f64
    t.model_prepare_f32 = <_model_prepare_f32_h>model_prepare_f32
    t.model_prepare_f64 = <_model_prepare_f64_h>model_prepare_f64
    t.model_prepared_workspace_size_f32 = model_prepared_workspace_size_f32
    t.model_prepared_workspace_size_f64 = model_prepared_workspace_size_f64
    t.model_forward_prepared_f32 = <_model_forward_prepared_f32_h>model_forward_prepared_f32
    t.model_forward_prepared_f64 = <_model_forward_prepared_f64_h>model_forward_prepared_f64
    t.model_quantized_size = model_quantized_size
    t.model_quantize = <_model_quantize_h>model_quantize
    t.model_quantized_workspace_size = model_quantized_workspace_size
    t.model_forward_quantized = model_forward_quantized


_fill_c_api_table(&_c_api_table)
# the whole table is filled before it is published
_C_API = PyCapsule_New(<void*>&_c_api_table, CYGRU_CAPSULE_NAME, NULL)
ABI_VERSION = CYGRU_ABI_VERSION


def _abi_layout():
    """{struct name: (sizeof, {field: offset})} of capi.pxd's structs as compiled here,
    and the table's size: what tests compare with cygru.h compiled by a C compiler."""
    cdef cygru_direction_f32 d32
    cdef cygru_direction_f64 d64
    cdef cygru_model_f32 m32
    cdef cygru_model_f64 m64
    cdef char* b
    layout = {}
    b = <char*>&d32
    layout["cygru_direction_f32"] = (sizeof(d32), {
        "w_ih": <char*>&d32.w_ih - b, "w_hh": <char*>&d32.w_hh - b,
        "b_ih": <char*>&d32.b_ih - b, "b_hh": <char*>&d32.b_hh - b})
    b = <char*>&d64
    layout["cygru_direction_f64"] = (sizeof(d64), {
        "w_ih": <char*>&d64.w_ih - b, "w_hh": <char*>&d64.w_hh - b,
        "b_ih": <char*>&d64.b_ih - b, "b_hh": <char*>&d64.b_hh - b})
    b = <char*>&m32
    layout["cygru_model_f32"] = (sizeof(m32), {
        "input_size": <char*>&m32.input_size - b, "hidden_size": <char*>&m32.hidden_size - b,
        "num_layers": <char*>&m32.num_layers - b,
        "num_directions": <char*>&m32.num_directions - b,
        "reset_after": <char*>&m32.reset_after - b, "reverse": <char*>&m32.reverse - b,
        "dirs": <char*>&m32.dirs - b})
    b = <char*>&m64
    layout["cygru_model_f64"] = (sizeof(m64), {
        "input_size": <char*>&m64.input_size - b, "hidden_size": <char*>&m64.hidden_size - b,
        "num_layers": <char*>&m64.num_layers - b,
        "num_directions": <char*>&m64.num_directions - b,
        "reset_after": <char*>&m64.reset_after - b, "reverse": <char*>&m64.reverse - b,
        "dirs": <char*>&m64.dirs - b})
    layout["cygru_api"] = (_c_api_table.size, None)
    return layout


# ---------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------

def _raise_for_status(int status, who):
    if status == CYGRU_OK:
        return
    exc = MemoryError if status == CYGRU_ERR_WORKSPACE else ValueError
    raise exc(f"{who}: {status_name(status)} (status {status})")


def _size_args(who, **sizes):
    """Sizes as ints in [0, INT_MAX] (a bool or a float is not a size), named errors; 0 is
    left to the C query, which answers it with its status."""
    try:
        return [A.check_positive_int(v, name, minimum=0) for name, v in sizes.items()]
    except A.ArgumentError as exc:
        raise exc.named(who) from None


cdef void _release_capsule(object capsule) noexcept:
    """Capsule destructor: drop the reference to the ExportedWeights it points into."""
    cdef void* owner = PyCapsule_GetContext(capsule)
    if owner != NULL:
        Py_DECREF(<object>owner)


cdef class ExportedWeights:
    """A module's parameters in one contiguous buffer, and the C structs over it.

    Made by :func:`export_weights`; see its documentation for the layout. Cython code
    reads ``model_f32`` / ``model_f64`` (``capi.pxd``); C code gets the same struct
    from :meth:`capsule`; Python code can run it with :meth:`forward`.

    Attributes
    ----------
    kind : str
        ``"GRU"`` or ``"GRUCell"``.
    dtype : numpy.dtype
        float32 (fills ``model_f32``) or float64 (fills ``model_f64``).
    input_size, hidden_size, num_layers, num_directions : int
    bias, reset_after, reverse : bool
    flat : ndarray
        1-D, read-only: every parameter, in PyTorch's order, each starting at a
        64-byte boundary.
    offsets : dict
        PyTorch parameter name -> element offset of that parameter in ``flat``.
    params : dict
        PyTorch parameter name -> read-only, C-contiguous view of it in ``flat``.
    """

    def __cinit__(self):
        self._dirs_f32 = NULL
        self._dirs_f64 = NULL
        memset(&self.model_f32, 0, sizeof(cygru_model_f32))
        memset(&self.model_f64, 0, sizeof(cygru_model_f64))

    def __dealloc__(self):
        free(self._dirs_f32)
        free(self._dirs_f64)

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError("ExportedWeights is made by cygru.capi.export_weights(module)")

    def __repr__(self):
        return (f"<cygru.capi.ExportedWeights of a {self.kind}: I={self.input_size}, "
                f"H={self.hidden_size}, L={self.num_layers}, D={self.num_directions}, "
                f"{self.dtype.name}, {self.flat.nbytes} bytes>")

    @property
    def address(self):
        """Address (int) of this object's ``cygru_model_f32`` / ``cygru_model_f64``
        struct, for ctypes/cffi callers; valid while this object lives."""
        if self.dtype == np.float32:
            return <uintptr_t>&self.model_f32
        return <uintptr_t>&self.model_f64

    def capsule(self):
        """A PyCapsule holding a pointer to the model struct, for C code.

        Its name is ``"cygru.capi.model_f32"`` or ``"cygru.capi.model_f64"`` (by
        dtype): ``PyCapsule_GetPointer(capsule, "cygru.capi.model_f32")`` gives a
        ``const cygru_model_f32*``. The capsule keeps this object (and so the
        weights) alive.

        Examples
        --------
        >>> import ctypes, numpy as np, cygru, cygru.capi
        >>> w = cygru.capi.export_weights(cygru.GRUCell(3, 4, dtype=np.float64, seed=0))
        >>> cap = w.capsule()
        >>> get_name = ctypes.pythonapi.PyCapsule_GetName
        >>> get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
        >>> get_name(cap)
        b'cygru.capi.model_f64'
        """
        cdef void* ptr
        cdef const char* name
        if self.dtype == np.float32:
            name = b"cygru.capi.model_f32"      # static C strings: they outlive the capsule
            ptr = &self.model_f32
        else:
            name = b"cygru.capi.model_f64"
            ptr = &self.model_f64
        cap = PyCapsule_New(ptr, name, _release_capsule)
        Py_INCREF(self)
        PyCapsule_SetContext(cap, <void*>self)
        return cap

    def workspace_size(self, T, B):
        """Bytes of workspace ``model_forward_*`` needs for this model at (T, B).

        Examples
        --------
        >>> import numpy as np, cygru, cygru.capi
        >>> w = cygru.capi.export_weights(cygru.GRU(3, 4, num_layers=2, seed=0))
        >>> n = w.workspace_size(10, 2)       # T=10 steps of B=2 sequences
        >>> scratch = np.empty(n, np.uint8)   # the buffer a C caller passes, n bytes
        >>> n > 0, w.workspace_size(20, 2) > n
        (True, True)
        >>> w.workspace_size(0, 2)
        Traceback (most recent call last):
        ValueError: cygru.capi: invalid sizes T=0, B=2
        """
        cdef int L = self.num_layers, D = self.num_directions
        cdef size_t n
        T, B = _size_args("cygru.capi.ExportedWeights.workspace_size", T=T, B=B)
        if self.dtype == np.float32:
            n = model_workspace_size_f32(T, B, self.input_size, self.hidden_size, L, D)
        else:
            n = model_workspace_size_f64(T, B, self.input_size, self.hidden_size, L, D)
        if n == 0:
            raise ValueError(f"cygru.capi: invalid sizes T={T}, B={B}")
        return n

    def cell_workspace_size(self, B):
        """Bytes of workspace ``cell_step_*`` needs for B rows of this model's size.

        Examples
        --------
        >>> import cygru, cygru.capi
        >>> w = cygru.capi.export_weights(cygru.GRUCell(3, 4, seed=0))
        >>> n = w.cell_workspace_size(8)      # one step of 8 rows
        >>> n > 0, w.cell_workspace_size(16) > n
        (True, True)
        """
        cdef size_t n
        (B,) = _size_args("cygru.capi.ExportedWeights.cell_workspace_size", B=B)
        if self.dtype == np.float32:
            n = cell_workspace_size_f32(B, self.hidden_size)
        else:
            n = cell_workspace_size_f64(B, self.hidden_size)
        if n == 0:
            raise ValueError(f"cygru.capi: invalid batch size {B}")
        return n

    def prepared_size(self):
        """Bytes of this model's prepared buffer (``model_prepared_size_*``).

        Examples
        --------
        >>> import cygru, cygru.capi
        >>> w = cygru.capi.export_weights(cygru.GRU(3, 16, num_layers=2, seed=0))
        >>> n = w.prepared_size()
        >>> n > 4 * 3 * 16 * (3 + 16 + 16 + 16)     # packed W_ih and W_hh of both layers
        True
        """
        cdef size_t n
        if self.dtype == np.float32:
            n = model_prepared_size_f32(&self.model_f32)
        else:
            n = model_prepared_size_f64(&self.model_f64)
        if n == 0:
            raise ValueError("cygru.capi.ExportedWeights.prepared_size: the model's sizes "
                             "are too large for a prepared buffer")
        return n

    def prepare(self):
        """The weights packed once by ``model_prepare_*``, for ``forward(prepared=...)``.

        What a C caller does with ``model_prepare_*``: the returned buffer is a copy of the
        packed weights and biases, tagged with this model (its sizes, dtype and weight
        pointers), that ``model_forward_prepared_*`` reads instead of packing the weights on
        every call. An :class:`ExportedWeights` never changes (it is a snapshot of the
        module): after changing the module's parameters, export and prepare again.

        Returns
        -------
        ndarray
            1-D uint8, read-only, :meth:`prepared_size` bytes starting on a 64-byte
            boundary.

        Examples
        --------
        >>> import numpy as np, cygru, cygru.capi
        >>> gru = cygru.GRU(3, 8, num_layers=2, seed=0)
        >>> w = cygru.capi.export_weights(gru)
        >>> prepared = w.prepare()
        >>> x = np.ones((1, 1, 3), np.float32)        # one streaming frame
        >>> out, h_n = w.forward(x, prepared=prepared)
        >>> ref_out, ref_h_n = w.forward(x)
        >>> bool(np.array_equal(out, ref_out) and np.array_equal(h_n, ref_h_n))
        True
        """
        cdef size_t n = self.prepared_size()
        cdef int status
        raw = np.empty(n + _ALIGN, np.uint8)
        start = (-raw.ctypes.data) % _ALIGN
        buf = raw[start:start + n]
        cdef void* p = <void*>cnp.PyArray_DATA(<cnp.ndarray>buf)
        cdef bint f32 = self.dtype == np.float32
        with nogil:
            if f32:
                status = model_prepare_f32(&self.model_f32, p, n)
            else:
                status = model_prepare_f64(&self.model_f64, p, n)
        _raise_for_status(status, "cygru.capi.ExportedWeights.prepare")
        buf.flags.writeable = False
        return buf

    def prepared_workspace_size(self, T, B):
        """Bytes of workspace ``model_forward_prepared_*`` needs for this model at (T, B)
        (at most :meth:`workspace_size`: it holds no packed weights; batches of at most 4
        rows pack nothing in either, so there the two are equal).

        Examples
        --------
        >>> import cygru, cygru.capi
        >>> w = cygru.capi.export_weights(cygru.GRU(3, 32, num_layers=2, seed=0))
        >>> w.prepared_workspace_size(1, 8) < w.workspace_size(1, 8)
        True
        >>> w.prepared_workspace_size(1, 1) == w.workspace_size(1, 1)
        True
        """
        cdef int L = self.num_layers, D = self.num_directions
        cdef size_t n
        T, B = _size_args("cygru.capi.ExportedWeights.prepared_workspace_size", T=T, B=B)
        if self.dtype == np.float32:
            n = model_prepared_workspace_size_f32(T, B, self.input_size, self.hidden_size, L,
                                                  D)
        else:
            n = model_prepared_workspace_size_f64(T, B, self.input_size, self.hidden_size, L,
                                                  D)
        if n == 0:
            raise ValueError(f"cygru.capi: invalid sizes T={T}, B={B}")
        return n

    def _precision_code(self, precision, who):
        if not isinstance(precision, str) or precision not in PRECISIONS:
            raise (TypeError if not isinstance(precision, str) else ValueError)(
                f"{who}: precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        if self.dtype != np.float32:
            raise TypeError(f"{who}: model_quantize takes float32 weights; this export is "
                            f"{self.dtype.name} (export a float32 module)")
        return PRECISIONS[precision]

    def quantized_size(self, precision):
        """Bytes of this model's quantized buffer (``model_quantized_size``) for
        ``precision`` ``"int8"`` or ``"bf16"`` (a float32 export only).

        Examples
        --------
        >>> import cygru, cygru.capi
        >>> w = cygru.capi.export_weights(cygru.GRU(16, 32, seed=0))
        >>> w.quantized_size("int8") < w.quantized_size("bf16") < w.prepared_size()
        True
        """
        who = "cygru.capi.ExportedWeights.quantized_size"
        cdef int code = self._precision_code(precision, who)
        cdef size_t n = model_quantized_size(self.input_size, self.hidden_size,
                                             self.num_layers, self.num_directions, code)
        if n == 0:
            raise ValueError(f"{who}: the model's sizes are too large for reduced precision "
                             f"(inner sizes up to {_MAX_INNER})")
        return n

    def quantize(self, precision):
        """The weights quantized once by ``model_quantize``, for
        ``forward(quantized=..., precision=...)``.

        What a C caller does with ``model_quantize``: the returned buffer holds the int8
        or bfloat16 weight blocks (by :func:`cygru.quantize`'s rules) and the float32
        biases, tagged with the sizes and the precision; ``model_forward_quantized`` reads
        it and gives the bits of ``cygru.quantize(module, precision)``.

        Parameters
        ----------
        precision : {"int8", "bf16"}

        Returns
        -------
        ndarray
            1-D uint8, read-only, :meth:`quantized_size` bytes starting on a 64-byte
            boundary.

        Examples
        --------
        >>> import numpy as np, cygru, cygru.capi
        >>> gru = cygru.GRU(3, 8, num_layers=2, seed=0)
        >>> w = cygru.capi.export_weights(gru)
        >>> q = w.quantize("int8")
        >>> x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
        >>> out, h_n = w.forward(x, quantized=q, precision="int8")
        >>> ref_out, ref_h_n = cygru.quantize(gru, "int8")(x)
        >>> bool(np.array_equal(out, ref_out) and np.array_equal(h_n, ref_h_n))
        True
        """
        who = "cygru.capi.ExportedWeights.quantize"
        cdef int code = self._precision_code(precision, who)
        cdef size_t n = self.quantized_size(precision)
        cdef int status
        raw = np.empty(n + _ALIGN, np.uint8)
        start = (-raw.ctypes.data) % _ALIGN
        buf = raw[start:start + n]
        cdef void* p = <void*>cnp.PyArray_DATA(<cnp.ndarray>buf)
        with nogil:
            status = model_quantize(self.input_size, self.hidden_size, self.num_layers,
                                    self.num_directions, code, self.model_f32.dirs, p, n)
        _raise_for_status(status, who)
        buf.flags.writeable = False
        return buf

    def quantized_workspace_size(self, T, B, precision):
        """Bytes of workspace ``model_forward_quantized`` needs for this model at (T, B).

        Examples
        --------
        >>> import cygru, cygru.capi
        >>> w = cygru.capi.export_weights(cygru.GRU(3, 8, seed=0))
        >>> w.quantized_workspace_size(10, 4, "bf16") > 0
        True
        """
        who = "cygru.capi.ExportedWeights.quantized_workspace_size"
        cdef int code = self._precision_code(precision, who)
        cdef size_t n
        T, B = _size_args(who, T=T, B=B)
        n = model_quantized_workspace_size(T, B, self.input_size, self.hidden_size,
                                           self.num_layers, self.num_directions, code)
        if n == 0:
            raise ValueError(f"{who}: invalid sizes T={T}, B={B}")
        return n

    def forward(self, x, h0=None, lengths=None, prepared=None, *, quantized=None,
                precision=None):
        """Run the exported model through ``model_forward_*`` (the GIL released), or,
        given ``prepared``, through ``model_forward_prepared_*``, or, given ``quantized``
        and ``precision``, through ``model_forward_quantized``.

        A check, from Python, of what a C caller gets. Time-major only.

        Parameters
        ----------
        x : array_like
            (T, B, I) of real numbers, converted to ``dtype`` (no copy when it is a
            C-contiguous array of that dtype in native byte order; read-only arrays are
            fine, they are only read), validated as :class:`cygru.GRU` validates it.
        h0 : array_like, optional
            (L*D, B, H); zeros when omitted.
        lengths : array_like of int, optional
            (B,), each in [1, T].
        prepared : ndarray, optional
            A buffer from :meth:`prepare` of this object (the same bits, without packing
            the weights per call); one prepared for another model is refused.
        quantized : ndarray, optional, keyword-only
            A buffer from :meth:`quantize` (with ``precision`` the one it was made
            for): the bits of :func:`cygru.quantize`'s module; float32 exports only.
        precision : {"int8", "bf16"}, keyword-only
            With ``quantized`` (only then).

        Returns
        -------
        output : ndarray
            (T, B, D*H).
        h_n : ndarray
            (L*D, B, H).

        Raises
        ------
        ValueError
            For wrong shapes or sizes beyond BLAS's int (T*B rows), checked before any
            argument is converted or copied, or with the C status's message (e.g. a
            length out of range).
        TypeError
            For ``x`` or ``h0`` that do not hold real numbers (complex, strings, objects),
            as :class:`cygru.GRU` refuses them; real numbers of any dtype and byte order
            are converted to ``dtype``.

        Examples
        --------
        The C entry point gives the module's own numbers, per-sequence lengths included:

        >>> import numpy as np, cygru, cygru.capi
        >>> gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
        >>> w = cygru.capi.export_weights(gru)
        >>> x = np.random.default_rng(0).standard_normal((5, 2, 3))   # (T, B, I)
        >>> out, h_n = w.forward(x, lengths=[5, 3])
        >>> out.shape, h_n.shape
        ((5, 2, 8), (4, 2, 4))
        >>> want_out, want_h_n = gru(x, lengths=[5, 3])
        >>> bool(np.allclose(out, want_out)), bool(np.allclose(h_n, want_h_n))
        (True, True)
        """
        who = "cygru.capi.ExportedWeights.forward"
        LD, H, I = self.num_layers * self.num_directions, self.hidden_size, self.input_size
        code = 0
        if quantized is not None or precision is not None:
            if quantized is None or precision is None or prepared is not None:
                raise TypeError(f"{who}: quantized and precision go together (and without "
                                f"prepared)")
            code = self._precision_code(precision, who)
            if (not isinstance(quantized, np.ndarray) or quantized.ndim != 1
                    or quantized.dtype != np.uint8 or not quantized.flags.c_contiguous):
                raise TypeError(f"{who}: quantized must be the uint8 array of quantize(), got "
                                f"{type(quantized).__name__}")
            if quantized.nbytes < self.quantized_size(precision):
                raise ValueError(f"{who}: quantized holds {quantized.nbytes} bytes, this "
                                 f"model's {precision} weights take "
                                 f"{self.quantized_size(precision)}")
        # Validated and converted as cygru.GRU does it (cygru._arrays, the one place): real
        # numbers only (complex, strings, objects refused), any byte order (converted to the
        # native one), no copy for a C-contiguous array of the dtype (read-only arrays are
        # fine, they are only read). Every shape and size is checked on the arrays as given,
        # before any of them is converted: a contiguous copy of a zero-strided view
        # (np.broadcast_to) can be far larger than the view.
        sizes = []

        def check_x(a):
            if a.ndim != 3 or a.shape[2] != I:
                raise A.BadValue(f"expected x of shape (T, B, {I}), got {tuple(a.shape)}")
            T, B = a.shape[0], a.shape[1]
            if T > _INT_MAX or B > _INT_MAX or T * B > _INT_MAX:
                raise A.BadValue(f"T={T}, B={B}: T*B = {T * B} rows do not fit BLAS's int")
            sizes[:] = [T, B]

        def check_h0(a):
            if a.shape != (LD, sizes[1], H):
                raise A.BadValue(f"expected h0 of shape {(LD, sizes[1], H)}, got {tuple(a.shape)}")

        try:
            x = A.as_float_array(x, self.dtype, "x", check=check_x)
            if h0 is not None:
                h0 = A.as_float_array(h0, self.dtype, "h0", check=check_h0)
        except A.ArgumentError as exc:
            raise exc.named(who) from None
        T, B = sizes
        if lengths is not None:
            lengths_arr = np.asarray(lengths)
            if lengths_arr.dtype.kind not in "iu" or lengths_arr.shape != (B,):
                raise ValueError(f"{who}: lengths must be {B} integers, got {lengths!r}")
            if B and (lengths_arr.min() < -_INT_MAX or lengths_arr.max() > _INT_MAX):
                raise ValueError(f"{who}: a sequence length is outside [1, T]")
            lengths = np.ascontiguousarray(lengths_arr, dtype=np.intc)
        if prepared is not None:
            if (not isinstance(prepared, np.ndarray) or prepared.ndim != 1
                    or prepared.dtype != np.uint8 or not prepared.flags.c_contiguous):
                raise TypeError(f"{who}: prepared must be the uint8 array of prepare(), got "
                                f"{type(prepared).__name__}")
            if prepared.nbytes < self.prepared_size():
                raise ValueError(f"{who}: prepared holds {prepared.nbytes} bytes, this model's "
                                 f"prepared weights take {self.prepared_size()}")
        output = np.empty((T, B, self.num_directions * H), self.dtype)
        h_n = np.empty((LD, B, H), self.dtype)
        if code:
            status = _forward_quantized_arrays(self, x, h0, lengths, output, h_n, quantized,
                                               code)
        elif self.dtype == np.float32:
            status = _forward_arrays[float](self, x, h0, lengths, output, h_n, prepared)
        else:
            status = _forward_arrays[double](self, x, h0, lengths, output, h_n, prepared)
        _raise_for_status(status, who)
        return output, h_n


cdef inline void* _ptr_or_null(object a):
    if a is None:
        return NULL
    return <void*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _forward_arrays(ExportedWeights w, cnp.ndarray x, object h0, object lengths,
                         cnp.ndarray output, cnp.ndarray h_n, object prepared,
                         floating dummy=0) except -1:
    cdef int T = x.shape[0], B = x.shape[1]
    cdef size_t nbytes
    cdef void* work
    cdef int status
    cdef const floating* x_p = <const floating*>cnp.PyArray_DATA(x)
    cdef const floating* h0_p = <const floating*>_ptr_or_null(h0)
    cdef const int* len_p = <const int*>_ptr_or_null(lengths)
    cdef floating* out_p = <floating*>cnp.PyArray_DATA(output)
    cdef floating* hn_p = <floating*>cnp.PyArray_DATA(h_n)
    cdef const void* prep_p = _ptr_or_null(prepared)
    if prep_p != NULL:
        if floating is float:
            nbytes = model_prepared_workspace_size_f32(T, B, w.input_size, w.hidden_size,
                                                       w.num_layers, w.num_directions)
        else:
            nbytes = model_prepared_workspace_size_f64(T, B, w.input_size, w.hidden_size,
                                                       w.num_layers, w.num_directions)
    elif floating is float:
        nbytes = model_workspace_size_f32(T, B, w.input_size, w.hidden_size, w.num_layers,
                                          w.num_directions)
    else:
        nbytes = model_workspace_size_f64(T, B, w.input_size, w.hidden_size, w.num_layers,
                                          w.num_directions)
    if nbytes == 0:
        return CYGRU_ERR_SIZE
    work = malloc(nbytes)
    if work == NULL:
        raise MemoryError(f"cygru.capi: could not allocate a {nbytes}-byte workspace")
    with nogil:
        if prep_p != NULL:
            if floating is float:
                status = model_forward_prepared_f32(&w.model_f32, prep_p, T, B, x_p, h0_p,
                                                    len_p, out_p, hn_p, work, nbytes)
            else:
                status = model_forward_prepared_f64(&w.model_f64, prep_p, T, B, x_p, h0_p,
                                                    len_p, out_p, hn_p, work, nbytes)
        elif floating is float:
            status = model_forward_f32(&w.model_f32, T, B, x_p, h0_p, len_p, out_p, hn_p,
                                       work, nbytes)
        else:
            status = model_forward_f64(&w.model_f64, T, B, x_p, h0_p, len_p, out_p, hn_p,
                                       work, nbytes)
    free(work)
    return status


cdef int _forward_quantized_arrays(ExportedWeights w, cnp.ndarray x, object h0,
                                   object lengths, cnp.ndarray output, cnp.ndarray h_n,
                                   cnp.ndarray quantized, int precision) except -1:
    cdef int T = x.shape[0], B = x.shape[1]
    cdef int I = w.input_size, H = w.hidden_size, L = w.num_layers, D = w.num_directions
    cdef int reset_after = w.reset_after, reverse = w.reverse
    cdef int status
    cdef const float* x_p = <const float*>cnp.PyArray_DATA(x)
    cdef const float* h0_p = <const float*>_ptr_or_null(h0)
    cdef const int* len_p = <const int*>_ptr_or_null(lengths)
    cdef float* out_p = <float*>cnp.PyArray_DATA(output)
    cdef float* hn_p = <float*>cnp.PyArray_DATA(h_n)
    cdef const void* q_p = cnp.PyArray_DATA(quantized)
    cdef size_t nbytes = model_quantized_workspace_size(T, B, I, H, L, D, precision)
    cdef void* work
    if nbytes == 0:
        return CYGRU_ERR_SIZE
    work = malloc(nbytes)
    if work == NULL:
        raise MemoryError(f"cygru.capi: could not allocate a {nbytes}-byte workspace")
    with nogil:
        status = model_forward_quantized(T, B, I, H, L, D, precision, reset_after, reverse,
                                         q_p, x_p, h0_p, len_p, out_p, hn_p, work, nbytes)
    free(work)
    return status


def export_weights(module):
    """Export a :class:`cygru.GRU`'s or :class:`cygru.GRUCell`'s weights for C callers.

    Returns an :class:`ExportedWeights`: a snapshot (copy) of the parameters in one
    contiguous, read-only buffer, and the C structs ``cygru_model_f32`` /
    ``cygru_model_f64`` of ``cygru/capi.pxd`` pointing into it, ready for
    ``model_forward_*`` (a GRU), ``layer_forward_*`` (``dirs + layer*D``) or
    ``cell_step_*`` (``dirs[0]`` of a GRUCell).

    Layout of ``flat`` (and of ``dirs``): for each layer k, then each direction d
    (0 forward, 1 backward in time), entry ``dirs[k*D + d]`` points at
    ``weight_ih`` (3H, I_k), ``weight_hh`` (3H, H), ``bias_ih`` (3H,), ``bias_hh``
    (3H,) of that layer and direction (PyTorch's names and order, gate order r, z,
    n; row-major; I_0 = input_size, I_k = D*H), each starting at a 64-byte boundary;
    the bias pointers are NULL for ``bias=False``. A GRUCell is exported as one
    layer of one direction.

    Later changes to the module's parameters are not seen: export again. The
    pointers are valid while the returned object (or a :meth:`~ExportedWeights.capsule`
    of it) is alive.

    Parameters
    ----------
    module : cygru.GRU or cygru.GRUCell
        On the CPU.

    Returns
    -------
    ExportedWeights

    Examples
    --------
    >>> import numpy as np, cygru, cygru.capi
    >>> cell = cygru.GRUCell(3, 2, seed=0)
    >>> w = cygru.capi.export_weights(cell)
    >>> w.kind, w.dtype.name, w.num_layers, w.num_directions
    ('GRUCell', 'float32', 1, 1)
    >>> list(w.params)
    ['weight_ih', 'weight_hh', 'bias_ih', 'bias_hh']
    >>> bool(np.array_equal(w.params["weight_hh"], cell.weight_hh))
    True
    >>> h1 = cell(np.ones((1, 3)))
    >>> out, h_n = w.forward(np.ones((1, 1, 3)))    # a cell step is a 1-step sequence
    >>> bool(np.allclose(out[0], h1, atol=1e-6))
    True
    """
    from .modules import GRU, GRUCell
    from ._backend import GATE_NAMES, param_suffix
    if isinstance(module, GRUCell):
        kind, L, D, reverse = "GRUCell", 1, 1, False
        names = [list(GATE_NAMES)]
    elif isinstance(module, GRU):
        kind, L, D, reverse = "GRU", module.num_layers, module.num_directions, module.reverse
        names = [[n + param_suffix(k, d) for n in GATE_NAMES]
                 for k in range(L) for d in range(D)]
    else:
        raise TypeError(f"cygru.capi.export_weights: expected a cygru.GRU or cygru.GRUCell, "
                        f"got {type(module).__name__}")
    if module.device != "cpu":
        raise TypeError(f"cygru.capi.export_weights: the module is on {module.device}; "
                        "call module.to('cpu') first (the C API runs on the CPU)")
    dtype = np.dtype(module.dtype)
    H, I = module.hidden_size, module.input_size
    if 4 * H * D > _INT_MAX or I > _INT_MAX:
        raise ValueError("cygru.capi.export_weights: sizes do not fit BLAS's int")
    per_elem = _ALIGN // dtype.itemsize
    arrays = {}
    offsets = {}
    total = 0
    for entry in names:
        for n in entry:
            if n.startswith("bias") and not module.bias:
                continue
            a = np.asarray(getattr(module, n))
            arrays[n] = a
            offsets[n] = total
            total += -(-a.size // per_elem) * per_elem       # round up to 64 bytes
    # a buffer whose first element sits on a 64-byte boundary
    raw = np.zeros(total + per_elem, dtype)
    start = (-(raw.ctypes.data % _ALIGN) // dtype.itemsize) % per_elem
    flat = raw[start:start + total]
    params = {}
    for n, a in arrays.items():
        view = flat[offsets[n]:offsets[n] + a.size].reshape(a.shape)
        view[...] = a
        params[n] = view
    flat.flags.writeable = False
    for v in params.values():
        v.flags.writeable = False

    cdef ExportedWeights w = ExportedWeights.__new__(ExportedWeights)
    w.kind, w.dtype, w.flat, w.offsets, w.params = kind, dtype, flat, offsets, params
    w.input_size, w.hidden_size, w.num_layers, w.num_directions = I, H, L, D
    w.bias, w.reset_after, w.reverse = bool(module.bias), bool(module.reset_after), reverse
    cdef Py_ssize_t idx, n_dirs = L * D
    cdef char* base = <char*>cnp.PyArray_DATA(flat)
    cdef size_t item = dtype.itemsize
    if dtype == np.float32:
        w._dirs_f32 = <cygru_direction_f32*>malloc(n_dirs * sizeof(cygru_direction_f32))
        if w._dirs_f32 == NULL:
            raise MemoryError
    else:
        w._dirs_f64 = <cygru_direction_f64*>malloc(n_dirs * sizeof(cygru_direction_f64))
        if w._dirs_f64 == NULL:
            raise MemoryError
    for idx in range(n_dirs):
        ptrs = [<uintptr_t>(base + <size_t>offsets[n] * item) if n in offsets else 0
                for n in names[idx]]
        if dtype == np.float32:
            w._dirs_f32[idx].w_ih = <const float*><uintptr_t>ptrs[0]
            w._dirs_f32[idx].w_hh = <const float*><uintptr_t>ptrs[1]
            w._dirs_f32[idx].b_ih = <const float*><uintptr_t>ptrs[2]
            w._dirs_f32[idx].b_hh = <const float*><uintptr_t>ptrs[3]
        else:
            w._dirs_f64[idx].w_ih = <const double*><uintptr_t>ptrs[0]
            w._dirs_f64[idx].w_hh = <const double*><uintptr_t>ptrs[1]
            w._dirs_f64[idx].b_ih = <const double*><uintptr_t>ptrs[2]
            w._dirs_f64[idx].b_hh = <const double*><uintptr_t>ptrs[3]
    if dtype == np.float32:
        w.model_f32 = cygru_model_f32(I, H, L, D, w.reset_after, reverse, w._dirs_f32)
    else:
        w.model_f64 = cygru_model_f64(I, H, L, D, w.reset_after, reverse, w._dirs_f64)
    return w


def _time_steps(ExportedWeights w, Py_ssize_t n, bint raw_kernel=False):
    """Seconds for n streaming cell steps at B=1 in one nogil loop (benchmarks only).

    Through cell_step_* (in place on h, as a streaming caller does), or, with
    raw_kernel, through the internal kernel alone (no checks, no copy of h): the
    math of a step, to compare the C API's overhead with.
    """
    import time
    cdef int I = w.input_size, H = w.hidden_size
    if w.dtype != np.float32 or w.num_layers * w.num_directions != 1:
        raise ValueError("_time_steps: a float32 one-layer, one-direction export")
    cdef const cygru_direction_f32* d = w.model_f32.dirs
    cdef float[::1] x = np.random.default_rng(0).standard_normal(I).astype(np.float32) * 0.1
    cdef float[::1] h = np.zeros(H, np.float32)
    cdef float[::1] h2 = np.zeros(H, np.float32)
    cdef size_t nbytes = cell_workspace_size_f32(1, H)
    cdef float[::1] work = np.empty(nbytes // 4 + 16, np.float32)
    cdef float[::1] zeros = np.zeros(3 * H, np.float32)
    cdef const float* bi = d.b_ih if d.b_ih != NULL else <const float*>&zeros[0]
    cdef const float* bh = d.b_hh if d.b_hh != NULL else <const float*>&zeros[0]
    cdef Py_ssize_t i
    cdef int status = 0
    t0 = time.perf_counter()
    with nogil:
        if raw_kernel:
            for i in range(n):   # ping-pong between h and h2: the kernel may not alias
                if i % 2 == 0:
                    step_forward(1, I, H, 4, w.reset_after, &x[0], &h[0], d.w_ih, d.w_hh,
                                 bi, bh, &h2[0], &work[0])
                else:
                    step_forward(1, I, H, 4, w.reset_after, &x[0], &h2[0], d.w_ih, d.w_hh,
                                 bi, bh, &h[0], &work[0])
        else:
            for i in range(n):
                status |= cell_step_f32(1, I, H, &x[0], &h[0], d.w_ih, d.w_hh, d.b_ih, d.b_hh,
                                        w.reset_after, &h[0], &work[0], nbytes)
    t1 = time.perf_counter()
    _raise_for_status(status, "_time_steps")
    return t1 - t0


def _hold_workspace(uintptr_t address, size_t nbytes):
    """Test hook: mark the bytes [address, address + nbytes) in use, as a running call
    marks its workspace, until the returned function is called (later calls of it do
    nothing). Called in a process forked after the hold, the function frees the entry
    and leaves that process's list alone: the entry is in no list there (a forked
    child starts with none in use)."""
    cdef cygru_in_use* e = <cygru_in_use*>malloc(sizeof(cygru_in_use))
    if e == NULL:
        raise MemoryError("cygru.capi._hold_workspace: out of memory")
    if not cygru_workspace_claim(e, <const void*>address, nbytes):
        free(e)
        raise ValueError("cygru.capi._hold_workspace: those bytes are already in use")
    held = [<uintptr_t>e]

    def release():
        cdef cygru_in_use* entry
        if held:
            entry = <cygru_in_use*><uintptr_t>held.pop()
            cygru_workspace_release(entry)
            free(entry)

    return release
