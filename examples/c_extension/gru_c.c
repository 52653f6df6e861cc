/*
 * gru_c: a Python extension written in plain C (no Cython) that runs a cygru model
 * through cygru's C API (cygru.h).
 *
 *     forward(model, x, output, h_n=None, lengths=None)
 *
 * model    the capsule of a float32 model: cygru.capi.export_weights(gru).capsule()
 * x        (T, B, I) float32, C-contiguous (any object with the buffer protocol)
 * output   (T, B, D*H) float32, C-contiguous, writable: filled in
 * h_n      (L*D, B, H) float32, C-contiguous, writable, or None
 * lengths  (B,) int32 (C int), each in [1, T], or None
 *
 * The arrays travel through the buffer protocol, so the module needs neither NumPy's
 * headers nor Cython to build. The model runs with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cygru.h"      /* include_dirs=[cygru.get_include(c_headers=True)] */

/* Get a C-contiguous buffer of `ndim` dimensions of one item type ("f": float, "i":
   int), or set a Python exception and return -1. */
static int get_array(PyObject* obj, Py_buffer* view, const char* name, const char* format,
                     Py_ssize_t itemsize, int ndim, int writable)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->ndim != ndim || view->itemsize != itemsize || view->format == NULL
            || strcmp(view->format, format) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected a %d-D array of format '%s', got "
                     "%d-D of format '%s'", name, ndim, format, view->ndim,
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Whether a buffer has the shape (a, b, c) (c unused for 2-D, b and c for 1-D). */
static int has_shape(const Py_buffer* v, Py_ssize_t a, Py_ssize_t b, Py_ssize_t c)
{
    return v->shape[0] == a && (v->ndim < 2 || v->shape[1] == b)
        && (v->ndim < 3 || v->shape[2] == c);
}

static PyObject* forward(PyObject* self, PyObject* args, PyObject* kwargs)
{
    static char* keywords[] = {"model", "x", "output", "h_n", "lengths", NULL};
    PyObject *capsule, *x_obj, *out_obj, *hn_obj = Py_None, *len_obj = Py_None;
    Py_buffer x, out, hn, len;
    int have_hn = 0, have_len = 0, status;
    const cygru_model_f32* model;
    PyObject* result = NULL;
    size_t work_size;
    void* work = NULL;
    int T, B, L, D, H;
    (void)self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OO", keywords, &capsule, &x_obj,
                                     &out_obj, &hn_obj, &len_obj))
        return NULL;
    /* The capsule keeps the exported weights alive; we hold it for the whole call. */
    model = (const cygru_model_f32*)PyCapsule_GetPointer(capsule, "cygru.capi.model_f32");
    if (model == NULL)
        return NULL;
    if (get_array(x_obj, &x, "x", "f", sizeof(float), 3, 0) < 0)
        return NULL;
    if (get_array(out_obj, &out, "output", "f", sizeof(float), 3, 1) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (hn_obj != Py_None) {
        if (get_array(hn_obj, &hn, "h_n", "f", sizeof(float), 3, 1) < 0)
            goto done;
        have_hn = 1;
    }
    if (len_obj != Py_None) {
        if (get_array(len_obj, &len, "lengths", "i", sizeof(int), 1, 0) < 0)
            goto done;
        have_len = 1;
    }

    L = model->num_layers;
    D = model->num_directions;
    H = model->hidden_size;
    if (x.shape[0] > INT_MAX || x.shape[1] > INT_MAX || x.shape[2] != model->input_size) {
        PyErr_Format(PyExc_ValueError, "x: expected shape (T, B, %d)", model->input_size);
        goto done;
    }
    T = (int)x.shape[0];
    B = (int)x.shape[1];
    if (!has_shape(&out, T, B, (Py_ssize_t)D * H)
            || (have_hn && !has_shape(&hn, (Py_ssize_t)L * D, B, H))
            || (have_len && !has_shape(&len, B, 0, 0))) {
        PyErr_SetString(PyExc_ValueError, "expected output (T, B, D*H), h_n (L*D, B, H) "
                        "and lengths (B,)");
        goto done;
    }

    /* Caller-owned scratch: one workspace per call here; a stream would keep one. */
    work_size = cygru_model_workspace_size_f32(T, B, model->input_size, H, L, D);
    if (work_size > 0) {        /* 0: invalid sizes, which the call reports as a status */
        work = malloc(work_size);
        if (work == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    status = cygru_model_forward_f32(model, T, B, (const float*)x.buf, NULL,
                                     have_len ? (const int*)len.buf : NULL,
                                     (float*)out.buf, have_hn ? (float*)hn.buf : NULL,
                                     work, work_size);
    Py_END_ALLOW_THREADS
    if (status != CYGRU_OK) {
        PyErr_Format(PyExc_ValueError, "cygru: %s (status %d)", cygru_status_message(status),
                     status);
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);

done:
    free(work);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (have_hn)
        PyBuffer_Release(&hn);
    if (have_len)
        PyBuffer_Release(&len);
    return result;
}

static PyMethodDef methods[] = {
    {"forward", (PyCFunction)(void (*)(void))forward, METH_VARARGS | METH_KEYWORDS,
     "forward(model, x, output, h_n=None, lengths=None): a cygru model over x (T, B, I), "
     "through cygru_model_forward_f32."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "gru_c", "A cygru model run from plain C.", -1, methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit_gru_c(void)
{
    /* Fill the function table (and check its ABI version) before anything calls
       cygru: on failure, the ImportError it set says why, and the import fails. */
    if (import_cygru() < 0)
        return NULL;
    return PyModule_Create(&module_def);
}
