/*
 * threads: a C program that embeds Python only to make a cygru model, then runs it
 * from two POSIX threads at once, without the GIL, through cygru.h.
 *
 *     ./threads /path/to/python      (the interpreter whose environment has cygru)
 *
 * 1. Python is started with the interpreter's path as its program name, so that it
 *    finds that interpreter's environment (a virtual environment included).
 * 2. cygru.GRU(5, 6, num_layers=2, bidirectional=True, seed=0) is made and exported
 *    (cygru.capi.export_weights); the model struct comes from the export's capsule.
 * 3. import_cygru() fills the function table; the GIL is released.
 * 4. Two threads run cygru_model_forward_f32 REPEAT times each on their own input,
 *    with their own workspace and outputs (the weights are shared: they are only
 *    read), and check that every run gives the same bits as their first.
 * 5. Each thread's output and h_n are printed ("%.9g": float32 round-trips).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cygru.h"

enum { T = 7, B = 3, IN = 5, H = 6, L = 2, D = 2, REPEAT = 200, NTHREADS = 2 };

typedef struct {
    const cygru_model_f32* model;   /* shared, read-only */
    int id;
    float x[T * B * IN];
    int lengths[B];
    float output[T * B * D * H];
    float h_n[L * D * B * H];
    int status;
    int identical;                  /* runs whose output and h_n equal the first's */
} job;

/* The input of thread `id`: small exact binary fractions, easy to rebuild in Python:
   x.flat[i] = ((37 i + 11 id) % 101 - 50) / 64 */
static void fill_input(job* j)
{
    int i;
    for (i = 0; i < T * B * IN; i++)
        j->x[i] = (float)((37 * i + 11 * j->id) % 101 - 50) / 64.0f;
}

static void* run(void* arg)
{
    job* j = (job*)arg;
    size_t work_size = cygru_model_workspace_size_f32(T, B, IN, H, L, D);
    void* work = malloc(work_size);            /* this thread's own workspace */
    float* out = malloc(sizeof j->output);
    float* h_n = malloc(sizeof j->h_n);
    int r, status;
    if (work == NULL || out == NULL || h_n == NULL) {
        j->status = -1;
        goto done;
    }
    j->status = cygru_model_forward_f32(j->model, T, B, j->x, NULL, j->lengths, j->output,
                                        j->h_n, work, work_size);
    j->identical = 1;
    for (r = 1; r < REPEAT && j->status == CYGRU_OK; r++) {
        status = cygru_model_forward_f32(j->model, T, B, j->x, NULL, j->lengths, out, h_n,
                                         work, work_size);
        if (status != CYGRU_OK)
            j->status = status;
        else if (memcmp(out, j->output, sizeof j->output) == 0
                 && memcmp(h_n, j->h_n, sizeof j->h_n) == 0)
            j->identical++;
    }
done:
    free(work);
    free(out);
    free(h_n);
    return NULL;
}

static void print_array(const char* name, int id, const float* a, int n)
{
    int i;
    printf("%s %d:", name, id);
    for (i = 0; i < n; i++)
        printf(" %.9g", (double)a[i]);
    printf("\n");
}

/* The model, made and exported in Python; *keep holds what must stay alive. */
static const cygru_model_f32* make_model(PyObject** keep)
{
    PyObject *cygru = NULL, *capi = NULL, *cls = NULL, *gru = NULL, *args = NULL;
    PyObject *kwargs = NULL, *weights = NULL, *capsule = NULL;
    const cygru_model_f32* model = NULL;

    cygru = PyImport_ImportModule("cygru");
    capi = cygru ? PyImport_ImportModule("cygru.capi") : NULL;
    cls = capi ? PyObject_GetAttrString(cygru, "GRU") : NULL;
    args = Py_BuildValue("(ii)", IN, H);
    kwargs = Py_BuildValue("{s:i,s:O,s:i}", "num_layers", L, "bidirectional", Py_True,
                           "seed", 0);
    if (cls == NULL || args == NULL || kwargs == NULL)
        goto done;
    gru = PyObject_Call(cls, args, kwargs);
    if (gru == NULL)
        goto done;
    weights = PyObject_CallMethod(capi, "export_weights", "O", gru);
    if (weights == NULL)
        goto done;
    /* the capsule holds a reference to the export, whose buffer holds the weights */
    capsule = PyObject_CallMethod(weights, "capsule", NULL);
    if (capsule == NULL)
        goto done;
    model = (const cygru_model_f32*)PyCapsule_GetPointer(capsule, "cygru.capi.model_f32");
    if (model != NULL) {
        *keep = capsule;
        capsule = NULL;
    }
done:
    Py_XDECREF(cygru);
    Py_XDECREF(capi);
    Py_XDECREF(cls);
    Py_XDECREF(gru);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(weights);
    Py_XDECREF(capsule);
    return model;
}

int main(int argc, char** argv)
{
    static job jobs[NTHREADS];
    static const int lengths[NTHREADS][B] = {{T, 3, 5}, {2, T, 4}};
    pthread_t threads[NTHREADS];
    const cygru_model_f32* model;
    PyObject* keep = NULL;
    PyThreadState* saved;
    PyConfig config;
    PyStatus st;
    int k, failed = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s /path/to/python\n", argv[0]);
        return 2;
    }
    PyConfig_InitPythonConfig(&config);
    st = PyConfig_SetBytesString(&config, &config.program_name, argv[1]);
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);

    model = make_model(&keep);
    if (model == NULL || import_cygru() < 0) {
        PyErr_Print();
        return 1;
    }
    PyRun_SimpleString("import cygru; print('cygru:', cygru.__file__, flush=True)");
    printf("model: I=%d H=%d L=%d D=%d\n", model->input_size, model->hidden_size,
           model->num_layers, model->num_directions);

    saved = PyEval_SaveThread();               /* no Python from here: release the GIL */
    for (k = 0; k < NTHREADS; k++) {
        jobs[k].model = model;
        jobs[k].id = k;
        memcpy(jobs[k].lengths, lengths[k], sizeof jobs[k].lengths);
        fill_input(&jobs[k]);
        if (pthread_create(&threads[k], NULL, run, &jobs[k]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (k = 0; k < NTHREADS; k++)
        pthread_join(threads[k], NULL);
    PyEval_RestoreThread(saved);

    for (k = 0; k < NTHREADS; k++) {
        printf("thread %d: status %d (%s), %d of %d runs identical\n", k, jobs[k].status,
               jobs[k].status >= 0 ? cygru_status_message(jobs[k].status) : "no memory",
               jobs[k].identical, REPEAT);
        print_array("output", k, jobs[k].output, T * B * D * H);
        print_array("h_n", k, jobs[k].h_n, L * D * B * H);
        failed |= jobs[k].status != CYGRU_OK || jobs[k].identical != REPEAT;
    }
    Py_DECREF(keep);                           /* the weights may go now */
    if (Py_FinalizeEx() < 0)
        return 1;
    return failed;
}
