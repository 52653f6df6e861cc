/*
 * cygru.h -- cygru's C API for C and C++ (and, through its layout, ctypes, cffi, Rust).
 *
 * The functions are those of cygru/capi.pxd (the Cython-level API), prefixed with
 * cygru_: a GRU cell step, a layer and a whole model over raw, row-major buffers, in
 * float32 (_f32) and float64 (_f64). They live in the extension module cygru.capi;
 * nothing is linked. A C extension (or a program that embeds Python) calls
 * import_cygru() once, with the GIL held, which imports cygru.capi and takes the
 * table of function pointers from its capsule cygru.capi._C_API, after checking that
 * the table was built for this header's ABI version. After that the cygru_*
 * functions may be called from any thread, with or without the GIL.
 *
 *     #define PY_SSIZE_T_CLEAN
 *     #include <Python.h>
 *     #include "cygru.h"          // include_dirs=[cygru.get_include(c_headers=True)]
 *
 *     PyMODINIT_FUNC PyInit_mymodule(void) {
 *         if (import_cygru() < 0)
 *             return NULL;        // an ImportError says why
 *         return PyModule_Create(&mymodule_def);
 *     }
 *
 * Conventions (docs/embedding.rst has the full reference): arrays are row-major and
 * contiguous; sequences are time-major, x (T, B, I), output (T, B, D*H), states
 * (L*D, B, H) with index layer*D + direction; gate order r, z, n; a NULL bias is no
 * bias. Sizes are int: T steps, B rows, In the input size I (<complex.h> takes the
 * name I), H hidden units, L layers, D directions. Every computing function checks
 * its scalar arguments and the overlaps of its arrays and returns a cygru_status
 * before writing anything; it never allocates and keeps no state, so threads may
 * call it at once, each with its own workspace and outputs (a call whose workspace
 * overlaps that of a call running on another thread returns CYGRU_ERR_WORKSPACE_BUSY
 * at once, writing nothing). The workspace is caller
 * memory of at least *_workspace_size_*(...) bytes, aligned to CYGRU_WORK_ALIGN.
 *
 * Define CYGRU_TYPES_ONLY before including this file to get the types and constants
 * without Python.h, import_cygru() or the wrappers (binding generators, code that is
 * handed a cygru_api pointer). A C99 or C++ compiler is needed.
 */
#ifndef CYGRU_H
#define CYGRU_H

#ifndef CYGRU_TYPES_ONLY
#include <Python.h>     /* first: Python.h may set feature macros for the system headers */
#endif
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * CYGRU_ABI_VERSION: the binary interface this header describes. It changes, and
 * extensions built against the old value must be rebuilt, on any change of a struct's
 * layout (cygru_direction_*, cygru_model_*, cygru_api), of a function's signature or
 * meaning, or of the order of the table's entries (an entry removed or moved). Adding
 * a function at the end of cygru_api does not change it: the table's size grows, and
 * import_cygru() accepts any table at least as large as the one it was compiled with.
 * The first two fields of cygru_api (abi_version, size) never move, so the check
 * itself is valid across all versions.
 */
#define CYGRU_ABI_VERSION 1

/* The name of the capsule cygru.capi._C_API, whose pointer is a const cygru_api*. */
#define CYGRU_CAPSULE_NAME "cygru.capi._C_API"

/* Required alignment of a workspace, in bytes (anything malloc returns is aligned). */
#define CYGRU_WORK_ALIGN 8

/*
 * Status of a computing function: 0 is success. New codes may be added in later
 * versions (without changing CYGRU_ABI_VERSION); existing values never change, so
 * treat any nonzero status as an error. cygru_status_message() describes each.
 */
typedef enum cygru_status {
    CYGRU_OK = 0,
    CYGRU_ERR_SIZE = 1,             /* a size (T, B, I, H, D, L) out of range or past BLAS's int */
    CYGRU_ERR_NULL = 2,             /* a required pointer is NULL */
    CYGRU_ERR_LENGTH = 3,           /* lengths[b] is outside [1, T] */
    CYGRU_ERR_FLAGS = 4,            /* inconsistent flags: reverse with two directions */
    CYGRU_ERR_ALIAS = 5,            /* an output overlaps an input, a weight or an output */
    CYGRU_ERR_WORKSPACE = 6,        /* workspace NULL or smaller than the required size */
    CYGRU_ERR_ALIGN = 7,            /* workspace not aligned to CYGRU_WORK_ALIGN bytes */
    CYGRU_ERR_WORKSPACE_ALIAS = 8,  /* the workspace overlaps an argument array */
    CYGRU_ERR_WORKSPACE_BUSY = 9,   /* the workspace is in use by a call on another thread */
    CYGRU_ERR_PREPARED_SIZE = 10,   /* the prepared buffer is smaller than model_prepared_size
                                       (model_quantize: than model_quantized_size) */
    CYGRU_ERR_PREPARED = 11,        /* the buffer was not prepared (model_prepare) for this model
                                       (or quantized by model_quantize for these sizes and
                                       this precision) */
    CYGRU_ERR_PRECISION = 12,       /* precision is not CYGRU_INT8 or CYGRU_BF16 */
    CYGRU_ERR_NOT_FINITE = 13       /* model_quantize: a weight or bias is inf or NaN */
} cygru_status;

/* The reduced precisions of model_quantize / model_forward_quantized (cygru.quantize). */
typedef enum cygru_precision {
    CYGRU_INT8 = 1,     /* int8 weights per output row, activations per row, int32 sums */
    CYGRU_BF16 = 2      /* bfloat16 weights and activations, float32 sums */
} cygru_precision;

/* The weights of one direction of one layer (the model only reads them). */
typedef struct cygru_direction_f32 {
    const float* w_ih;      /* (3H, I_k) row-major; I_0 = input_size, I_k = D*H for k > 0 */
    const float* w_hh;      /* (3H, H) */
    const float* b_ih;      /* (3H,) or NULL (no bias) */
    const float* b_hh;      /* (3H,) or NULL (no bias) */
} cygru_direction_f32;

typedef struct cygru_direction_f64 {
    const double* w_ih;
    const double* w_hh;
    const double* b_ih;
    const double* b_hh;
} cygru_direction_f64;

/* A whole GRU: its sizes, flags and L*D directions (cygru.GRU's parameters). */
typedef struct cygru_model_f32 {
    int input_size;         /* I */
    int hidden_size;        /* H */
    int num_layers;         /* L >= 1 */
    int num_directions;     /* D, 1 or 2 */
    int reset_after;        /* nonzero: n = tanh(gi_n + r*(W_hn h + b_hn)) (PyTorch) */
    int reverse;            /* nonzero (D == 1 only): run the direction backwards in time */
    const cygru_direction_f32* dirs;   /* L*D entries, index layer*D + direction */
} cygru_model_f32;

typedef struct cygru_model_f64 {
    int input_size;
    int hidden_size;
    int num_layers;
    int num_directions;
    int reset_after;
    int reverse;
    const cygru_direction_f64* dirs;
} cygru_model_f64;

/*
 * The function table that cygru.capi exports. Its order is part of the ABI (see
 * CYGRU_ABI_VERSION); new entries are only ever appended. Call the functions through
 * the cygru_* wrappers below, or through the table directly (ctypes, cffi).
 */
typedef struct cygru_api {
    int abi_version;        /* the CYGRU_ABI_VERSION cygru.capi was built with */
    size_t size;            /* sizeof(cygru_api) as cygru.capi was built */

    /* a static description of a status code (never NULL) */
    const char* (*status_message)(int status);

    /* one cell step, h_out = GRUCell(x, h), for B rows */
    size_t (*cell_workspace_size_f32)(int B, int H);
    size_t (*cell_workspace_size_f64)(int B, int H);
    int (*cell_step_f32)(int B, int In, int H,
                         const float* x,                        /* IN  (B, I) */
                         const float* h,                        /* IN  (B, H), or NULL: zeros */
                         const float* w_ih, const float* w_hh,  /* IN  (3H, I), (3H, H) */
                         const float* b_ih, const float* b_hh,  /* IN  (3H,) each, or NULL */
                         int reset_after,
                         float* h_out,                          /* OUT (B, H); may be h */
                         void* work, size_t work_size);
    int (*cell_step_f64)(int B, int In, int H,
                         const double* x, const double* h,
                         const double* w_ih, const double* w_hh,
                         const double* b_ih, const double* b_hh,
                         int reset_after,
                         double* h_out,
                         void* work, size_t work_size);

    /* one layer (one or two directions) over a sequence */
    size_t (*layer_workspace_size_f32)(int T, int B, int In, int H, int D);
    size_t (*layer_workspace_size_f64)(int T, int B, int In, int H, int D);
    int (*layer_forward_f32)(int T, int B, int In, int H, int D,
                             const float* x,                    /* IN  (T, B, I) */
                             const float* h0,                   /* IN  (D, B, H), or NULL */
                             const int* lengths,                /* IN  (B,) in [1,T], or NULL */
                             const cygru_direction_f32* weights, /* IN  D entries */
                             int reset_after, int reverse,
                             float* output,                     /* OUT (T, B, D*H) */
                             float* h_n,                        /* OUT (D, B, H)/NULL; may be h0 */
                             void* work, size_t work_size);
    int (*layer_forward_f64)(int T, int B, int In, int H, int D,
                             const double* x, const double* h0, const int* lengths,
                             const cygru_direction_f64* weights,
                             int reset_after, int reverse,
                             double* output, double* h_n,
                             void* work, size_t work_size);

    /* a whole multi-layer, optionally bidirectional GRU (cygru.GRU's forward) */
    size_t (*model_workspace_size_f32)(int T, int B, int In, int H, int L, int D);
    size_t (*model_workspace_size_f64)(int T, int B, int In, int H, int L, int D);
    int (*model_forward_f32)(const cygru_model_f32* model, int T, int B,
                             const float* x,                    /* IN  (T, B, I) */
                             const float* h0,                   /* IN  (L*D, B, H), or NULL */
                             const int* lengths,                /* IN  (B,) in [1,T], or NULL */
                             float* output,                     /* OUT (T, B, D*H) */
                             float* h_n,                        /* OUT (L*D,B,H)/NULL; may be h0 */
                             void* work, size_t work_size);
    int (*model_forward_f64)(const cygru_model_f64* model, int T, int B,
                             const double* x, const double* h0, const int* lengths,
                             double* output, double* h_n,
                             void* work, size_t work_size);

    /*
     * Prepared weights (added after the first release of ABI version 1: check
     * table->size >= offsetof(cygru_api, model_forward_prepared_f64) + sizeof(void*)
     * before using them through a table you did not get from import_cygru()).
     *
     * model_forward packs every weight matrix into the layout of its products on every
     * call: for short calls (a streaming frame) that is most of the time. model_prepare
     * does it once, into a caller buffer of model_prepared_size(model) bytes aligned to
     * CYGRU_WORK_ALIGN (64 is best); model_forward_prepared then reads the packed weights
     * from it: the same results as model_forward, bit for bit, with a smaller workspace
     * (model_prepared_workspace_size).
     *
     * The prepared buffer is a COPY of the weights and biases as they were when
     * model_prepare ran: nothing in cygru caches or watches the weights, so after
     * changing any weight or bias, call model_prepare again (else the calls go on with
     * the old values). It is tagged with the model's sizes, dtype and weight pointers:
     * model_forward_prepared refuses a buffer prepared for another model, or never
     * prepared, with CYGRU_ERR_PREPARED. It reads the model's sizes, flags and table of
     * directions, never the weights (they may be freed after preparing). Any number of
     * threads may share one prepared buffer (it is only read); preparing it again while
     * a call runs on it is a data race, for the caller to avoid. It holds no pointer into
     * itself: it may be moved or copied with memcpy. Outputs and the workspace may not
     * overlap it (CYGRU_ERR_ALIAS, CYGRU_ERR_WORKSPACE_ALIAS).
     */
    size_t (*model_prepared_size_f32)(const cygru_model_f32* model);  /* 0: bad model */
    size_t (*model_prepared_size_f64)(const cygru_model_f64* model);
    int (*model_prepare_f32)(const cygru_model_f32* model,
                             void* prepared, size_t size);      /* OUT size bytes */
    int (*model_prepare_f64)(const cygru_model_f64* model, void* prepared, size_t size);
    size_t (*model_prepared_workspace_size_f32)(int T, int B, int In, int H, int L, int D);
    size_t (*model_prepared_workspace_size_f64)(int T, int B, int In, int H, int L, int D);
    int (*model_forward_prepared_f32)(const cygru_model_f32* model,
                                      const void* prepared,     /* IN  model_prepare_f32's */
                                      int T, int B,
                                      const float* x, const float* h0, const int* lengths,
                                      float* output, float* h_n,
                                      void* work, size_t work_size);
    int (*model_forward_prepared_f64)(const cygru_model_f64* model, const void* prepared,
                                      int T, int B,
                                      const double* x, const double* h0, const int* lengths,
                                      double* output, double* h_n,
                                      void* work, size_t work_size);

    /*
     * Quantized models (added after the prepared weights, still ABI version 1: check
     * table->size >= offsetof(cygru_api, model_forward_quantized) + sizeof(void*) before
     * using them through a table you did not get from import_cygru()).
     *
     * model_quantize converts a float32 model's weights once, by cygru.quantize's rules
     * (CYGRU_INT8: symmetric per output row, scale = max|row| / 127, round half to even;
     * CYGRU_BF16: round half to even), into a caller buffer of model_quantized_size(...)
     * bytes aligned to CYGRU_WORK_ALIGN (64 is best): the packed int8 or bf16 blocks and
     * float32 copies of the biases (zeros for NULL ones); its last bytes are scratch for
     * model_quantize. Nothing is written unless every weight and bias is finite
     * (CYGRU_ERR_NOT_FINITE). model_forward_quantized runs the model on it (x, h0,
     * lengths, output, h_n as in model_forward_f32): the bits of
     * cygru.quantize(gru, precision)(x, h0, lengths), for any batch size, thread count or
     * cut of a stream into calls. A bad precision is CYGRU_ERR_PRECISION (size queries:
     * 0). Inner sizes (I, H, and D*H for layers above the first) are limited to 131072.
     *
     * The buffer is self-contained (the float weights may be freed after quantizing),
     * holds no pointer (memcpy-able), and is only read by the forward (threads may share
     * it). It is tagged with the sizes and precision: model_forward_quantized refuses a
     * buffer quantized for other sizes or another precision, or never quantized, with
     * CYGRU_ERR_PREPARED. Outputs and the workspace may not overlap it.
     */
    size_t (*model_quantized_size)(int In, int H, int L, int D, int precision); /* 0: bad */
    int (*model_quantize)(int In, int H, int L, int D, int precision,
                          const cygru_direction_f32* dirs,      /* IN  L*D entries */
                          void* quantized, size_t size);        /* OUT size bytes */
    size_t (*model_quantized_workspace_size)(int T, int B, int In, int H, int L, int D,
                                             int precision);
    int (*model_forward_quantized)(int T, int B, int In, int H, int L, int D, int precision,
                                   int reset_after, int reverse,
                                   const void* quantized,       /* IN  model_quantize's */
                                   const float* x,              /* IN  (T, B, I) */
                                   const float* h0,             /* IN  (L*D, B, H), or NULL */
                                   const int* lengths,          /* IN  (B,) in [1,T], or NULL */
                                   float* output,               /* OUT (T, B, D*H) */
                                   float* h_n,                  /* OUT (L*D,B,H)/NULL; may be h0 */
                                   void* work, size_t work_size);
} cygru_api;

#ifndef CYGRU_TYPES_ONLY

/*
 * Where import_cygru() stores the table. By default a static variable, private to
 * each translation unit (each .c file that uses cygru calls import_cygru() once).
 * For one table shared by several files of an extension, define
 * CYGRU_API_UNIQUE_SYMBOL to a name unique to the extension in all of them, and
 * CYGRU_NO_IMPORT in all but the one that calls import_cygru().
 */
#if defined(CYGRU_API_UNIQUE_SYMBOL)
#  define CYGRU_API_TABLE_ CYGRU_API_UNIQUE_SYMBOL
#  if defined(CYGRU_NO_IMPORT)
extern const cygru_api* CYGRU_API_TABLE_;
#  else
const cygru_api* CYGRU_API_TABLE_ = NULL;
#  endif
#else
#  if defined(CYGRU_NO_IMPORT)
#    error "CYGRU_NO_IMPORT needs CYGRU_API_UNIQUE_SYMBOL (the table of import_cygru()'s file)"
#  endif
#  define CYGRU_API_TABLE_ cygru_api_table_
static const cygru_api* cygru_api_table_ = NULL;
#endif

#if !defined(CYGRU_NO_IMPORT)
/*
 * Import cygru.capi and take its function table. Call it with the GIL held, before
 * any cygru_* function (typically in the module's init function). Returns 0, or sets
 * an ImportError that says why and returns -1: cygru cannot be imported, or the
 * installed cygru was built for another ABI version than this header (rebuild the
 * extension against the installed cygru), or is older than this header.
 */
static inline int import_cygru(void)
{
    PyObject* module;
    PyObject* capsule;
    const cygru_api* table;

    module = PyImport_ImportModule("cygru.capi");
    if (module == NULL)
        return -1;
    capsule = PyObject_GetAttrString(module, "_C_API");
    Py_DECREF(module);
    if (capsule == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ImportError,
                            "cygru C API: the installed cygru has no cygru.capi._C_API (it "
                            "predates cygru.h); install a cygru that provides it");
        }
        return -1;
    }
    if (!PyCapsule_IsValid(capsule, CYGRU_CAPSULE_NAME)) {
        Py_DECREF(capsule);
        PyErr_SetString(PyExc_ImportError,
                        "cygru C API: cygru.capi._C_API is not a capsule named \""
                        CYGRU_CAPSULE_NAME "\"");
        return -1;
    }
    table = (const cygru_api*)PyCapsule_GetPointer(capsule, CYGRU_CAPSULE_NAME);
    /* The table is static data of the cygru.capi extension, which CPython never
       unloads: it outlives the capsule object. */
    Py_DECREF(capsule);
    if (table == NULL)
        return -1;
    if (table->abi_version != CYGRU_ABI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "cygru C API: this extension was compiled against cygru.h with ABI "
                     "version %d, but the installed cygru provides ABI version %d; rebuild "
                     "the extension against the installed cygru (its header is in "
                     "cygru.get_include(c_headers=True))",
                     (int)CYGRU_ABI_VERSION, table->abi_version);
        return -1;
    }
    if (table->size < sizeof(cygru_api)) {
        PyErr_Format(PyExc_ImportError,
                     "cygru C API: this extension needs a function table of %zu bytes, the "
                     "installed cygru provides %zu (an older cygru with the same ABI "
                     "version %d); upgrade cygru, or rebuild the extension against the "
                     "installed cygru",
                     sizeof(cygru_api), table->size, (int)CYGRU_ABI_VERSION);
        return -1;
    }
    CYGRU_API_TABLE_ = table;
    return 0;
}
#endif  /* !CYGRU_NO_IMPORT */

/*
 * The functions, through the table (import_cygru() must have succeeded: before it, the
 * table pointer is NULL). Arguments and results are those of the table's entries.
 */
static inline const char* cygru_status_message(int status)
{
    return CYGRU_API_TABLE_->status_message(status);
}

static inline size_t cygru_cell_workspace_size_f32(int B, int H)
{
    return CYGRU_API_TABLE_->cell_workspace_size_f32(B, H);
}

static inline size_t cygru_cell_workspace_size_f64(int B, int H)
{
    return CYGRU_API_TABLE_->cell_workspace_size_f64(B, H);
}

static inline int cygru_cell_step_f32(int B, int In, int H, const float* x, const float* h,
                                      const float* w_ih, const float* w_hh,
                                      const float* b_ih, const float* b_hh, int reset_after,
                                      float* h_out, void* work, size_t work_size)
{
    return CYGRU_API_TABLE_->cell_step_f32(B, In, H, x, h, w_ih, w_hh, b_ih, b_hh,
                                           reset_after, h_out, work, work_size);
}

static inline int cygru_cell_step_f64(int B, int In, int H, const double* x, const double* h,
                                      const double* w_ih, const double* w_hh,
                                      const double* b_ih, const double* b_hh, int reset_after,
                                      double* h_out, void* work, size_t work_size)
{
    return CYGRU_API_TABLE_->cell_step_f64(B, In, H, x, h, w_ih, w_hh, b_ih, b_hh,
                                           reset_after, h_out, work, work_size);
}

static inline size_t cygru_layer_workspace_size_f32(int T, int B, int In, int H, int D)
{
    return CYGRU_API_TABLE_->layer_workspace_size_f32(T, B, In, H, D);
}

static inline size_t cygru_layer_workspace_size_f64(int T, int B, int In, int H, int D)
{
    return CYGRU_API_TABLE_->layer_workspace_size_f64(T, B, In, H, D);
}

static inline int cygru_layer_forward_f32(int T, int B, int In, int H, int D, const float* x,
                                          const float* h0, const int* lengths,
                                          const cygru_direction_f32* weights,
                                          int reset_after, int reverse,
                                          float* output, float* h_n,
                                          void* work, size_t work_size)
{
    return CYGRU_API_TABLE_->layer_forward_f32(T, B, In, H, D, x, h0, lengths, weights,
                                               reset_after, reverse, output, h_n,
                                               work, work_size);
}

static inline int cygru_layer_forward_f64(int T, int B, int In, int H, int D, const double* x,
                                          const double* h0, const int* lengths,
                                          const cygru_direction_f64* weights,
                                          int reset_after, int reverse,
                                          double* output, double* h_n,
                                          void* work, size_t work_size)
{
    return CYGRU_API_TABLE_->layer_forward_f64(T, B, In, H, D, x, h0, lengths, weights,
                                               reset_after, reverse, output, h_n,
                                               work, work_size);
}

static inline size_t cygru_model_workspace_size_f32(int T, int B, int In, int H, int L, int D)
{
    return CYGRU_API_TABLE_->model_workspace_size_f32(T, B, In, H, L, D);
}

static inline size_t cygru_model_workspace_size_f64(int T, int B, int In, int H, int L, int D)
{
    return CYGRU_API_TABLE_->model_workspace_size_f64(T, B, In, H, L, D);
}

static inline int cygru_model_forward_f32(const cygru_model_f32* model, int T, int B,
                                          const float* x, const float* h0,
                                          const int* lengths, float* output, float* h_n,
                                          void* work, size_t work_size)
{
    return CYGRU_API_TABLE_->model_forward_f32(model, T, B, x, h0, lengths, output, h_n,
                                               work, work_size);
}

static inline int cygru_model_forward_f64(const cygru_model_f64* model, int T, int B,
                                          const double* x, const double* h0,
                                          const int* lengths, double* output, double* h_n,
                                          void* work, size_t work_size)
{
    return CYGRU_API_TABLE_->model_forward_f64(model, T, B, x, h0, lengths, output, h_n,
                                               work, work_size);
}

static inline size_t cygru_model_prepared_size_f32(const cygru_model_f32* model)
{
    return CYGRU_API_TABLE_->model_prepared_size_f32(model);
}

static inline size_t cygru_model_prepared_size_f64(const cygru_model_f64* model)
{
    return CYGRU_API_TABLE_->model_prepared_size_f64(model);
}

static inline int cygru_model_prepare_f32(const cygru_model_f32* model, void* prepared,
                                          size_t size)
{
    return CYGRU_API_TABLE_->model_prepare_f32(model, prepared, size);
}

static inline int cygru_model_prepare_f64(const cygru_model_f64* model, void* prepared,
                                          size_t size)
{
    return CYGRU_API_TABLE_->model_prepare_f64(model, prepared, size);
}

static inline size_t cygru_model_prepared_workspace_size_f32(int T, int B, int In, int H,
                                                             int L, int D)
{
    return CYGRU_API_TABLE_->model_prepared_workspace_size_f32(T, B, In, H, L, D);
}

static inline size_t cygru_model_prepared_workspace_size_f64(int T, int B, int In, int H,
                                                             int L, int D)
{
    return CYGRU_API_TABLE_->model_prepared_workspace_size_f64(T, B, In, H, L, D);
}

static inline int cygru_model_forward_prepared_f32(const cygru_model_f32* model,
                                                   const void* prepared, int T, int B,
                                                   const float* x, const float* h0,
                                                   const int* lengths, float* output,
                                                   float* h_n, void* work, size_t work_size)
{
    return CYGRU_API_TABLE_->model_forward_prepared_f32(model, prepared, T, B, x, h0, lengths,
                                                        output, h_n, work, work_size);
}

static inline int cygru_model_forward_prepared_f64(const cygru_model_f64* model,
                                                   const void* prepared, int T, int B,
                                                   const double* x, const double* h0,
                                                   const int* lengths, double* output,
                                                   double* h_n, void* work, size_t work_size)
{
    return CYGRU_API_TABLE_->model_forward_prepared_f64(model, prepared, T, B, x, h0, lengths,
                                                        output, h_n, work, work_size);
}

static inline size_t cygru_model_quantized_size(int In, int H, int L, int D, int precision)
{
    return CYGRU_API_TABLE_->model_quantized_size(In, H, L, D, precision);
}

static inline int cygru_model_quantize(int In, int H, int L, int D, int precision,
                                       const cygru_direction_f32* dirs, void* quantized,
                                       size_t size)
{
    return CYGRU_API_TABLE_->model_quantize(In, H, L, D, precision, dirs, quantized, size);
}

static inline size_t cygru_model_quantized_workspace_size(int T, int B, int In, int H, int L,
                                                          int D, int precision)
{
    return CYGRU_API_TABLE_->model_quantized_workspace_size(T, B, In, H, L, D, precision);
}

static inline int cygru_model_forward_quantized(int T, int B, int In, int H, int L, int D,
                                                int precision, int reset_after, int reverse,
                                                const void* quantized, const float* x,
                                                const float* h0, const int* lengths,
                                                float* output, float* h_n, void* work,
                                                size_t work_size)
{
    return CYGRU_API_TABLE_->model_forward_quantized(T, B, In, H, L, D, precision, reset_after,
                                                     reverse, quantized, x, h0, lengths,
                                                     output, h_n, work, work_size);
}

#endif  /* !CYGRU_TYPES_ONLY */

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* CYGRU_H */
