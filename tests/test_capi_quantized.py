"""Quantized models in the C API: model_quantize once, model_forward_quantized per call.

The results must be the bits of ``cygru.quantize(module, precision)(x, h0, lengths)``
(int8 and bf16; layers, bidirectional, lengths, h0, both gate forms, no bias, reverse),
through the three ways a caller reaches the C API:

* Cython: a downstream extension built here (setuptools + Cython, ``cimport cygru.capi``),
  calling the functions inside ``with nogil:``;
* plain C: a C extension built here that includes ``cygru.h``, calls ``import_cygru()``
  and the ``cygru_*`` wrappers;
* the function table from Python through the ctypes mirror of ``examples/c_extension``.

Bad precisions, buffers quantized for another model or precision (or never), too small
or misaligned buffers, non-finite weights and overlaps are refused with the documented
status, writing nothing.
"""

import ctypes
import importlib.util
import os
import pathlib
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
import cygru.capi as capi

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRECISIONS = {"int8": capi.INT8, "bf16": capi.BF16}

CYTHON_SETUP = """\
import cygru, numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
setup(name="cygru-quant-probe", ext_modules=cythonize(
    [Extension("cygru_quant_probe", ["cygru_quant_probe.pyx"],
               include_dirs=[numpy.get_include()],
               define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])],
    include_path=[cygru.get_include()], compiler_directives={"language_level": 3}))
"""

CYTHON_PYX = r"""
# cython: language_level=3
cimport numpy as cnp
from cygru cimport capi

cnp.import_array()


cdef void* ptr(a):
    return NULL if a is None else cnp.PyArray_DATA(a)


def sizes(int In, int H, int L, int D, int precision, int T, int B):
    return (capi.model_quantized_size(In, H, L, D, precision),
            capi.model_quantized_workspace_size(T, B, In, H, L, D, precision))


def quantize(capi.ExportedWeights w, int precision, cnp.ndarray buf):
    cdef int status
    cdef void* p = ptr(buf)
    cdef size_t n = buf.nbytes
    with nogil:
        status = capi.model_quantize(w.input_size, w.hidden_size, w.num_layers,
                                     w.num_directions, precision, w.model_f32.dirs, p, n)
    return status


def forward(capi.ExportedWeights w, int precision, cnp.ndarray q, x, h0, lengths, out,
            h_n, cnp.ndarray work):
    cdef int status
    cdef int T = x.shape[0], B = x.shape[1]
    cdef const void* qp = ptr(q)
    cdef const float* xp = <const float*>ptr(x)
    cdef const float* hp = <const float*>ptr(h0)
    cdef const int* lp = <const int*>ptr(lengths)
    cdef float* op = <float*>ptr(out)
    cdef float* np_ = <float*>ptr(h_n)
    cdef void* wp = ptr(work)
    cdef size_t wn = work.nbytes
    with nogil:
        status = capi.model_forward_quantized(
            T, B, w.input_size, w.hidden_size, w.num_layers, w.num_directions, precision,
            w.reset_after, w.reverse, qp, xp, hp, lp, op, np_, wp, wn)
    return status
"""

C_SETUP = """\
import cygru
from setuptools import Extension, setup
setup(name="cygru-quant-c", ext_modules=[
    Extension("cygru_quant_c", ["cygru_quant_c.c"],
              include_dirs=[cygru.get_include(c_headers=True)],
              extra_compile_args=["-std=c99", "-Wall", "-Wextra", "-Werror"])])
"""

# Plain C: every pointer arrives as an integer address (numpy's ctypes.data)
C_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "cygru.h"

#define P(a) ((void*)(uintptr_t)(a))

static PyObject* q_sizes(PyObject* self, PyObject* args)
{
    int In, H, L, D, precision, T, B;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiiiii", &In, &H, &L, &D, &precision, &T, &B))
        return NULL;
    return Py_BuildValue("(nn)", (Py_ssize_t)cygru_model_quantized_size(In, H, L, D, precision),
                         (Py_ssize_t)cygru_model_quantized_workspace_size(T, B, In, H, L, D,
                                                                          precision));
}

static PyObject* q_quantize(PyObject* self, PyObject* args)
{
    int In, H, L, D, precision, status;
    unsigned long long dirs, dst;
    Py_ssize_t size;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiiiKKn", &In, &H, &L, &D, &precision, &dirs, &dst, &size))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = cygru_model_quantize(In, H, L, D, precision, (const cygru_direction_f32*)P(dirs),
                                  P(dst), (size_t)size);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(status);
}

static PyObject* q_forward(PyObject* self, PyObject* args)
{
    int T, B, In, H, L, D, precision, reset_after, reverse, status;
    unsigned long long q, x, h0, lengths, out, h_n, work;
    Py_ssize_t work_size;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiiiiiiiiKKKKKKKn", &T, &B, &In, &H, &L, &D, &precision,
                          &reset_after, &reverse, &q, &x, &h0, &lengths, &out, &h_n, &work,
                          &work_size))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = cygru_model_forward_quantized(T, B, In, H, L, D, precision, reset_after, reverse,
                                           P(q), (const float*)P(x), (const float*)P(h0),
                                           (const int*)P(lengths), (float*)P(out),
                                           (float*)P(h_n), P(work), (size_t)work_size);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(status);
}

static PyMethodDef methods[] = {
    {"sizes", q_sizes, METH_VARARGS, NULL},
    {"quantize", q_quantize, METH_VARARGS, NULL},
    {"forward", q_forward, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cygru_quant_c", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_cygru_quant_c(void)
{
    if (import_cygru() < 0)
        return NULL;
    return PyModule_Create(&module);
}
"""


def _load(directory, name):
    found = sorted(pathlib.Path(directory).glob(f"{name}*.so")) + sorted(
        pathlib.Path(directory).glob(f"{name}*.pyd")
    )
    assert found, f"no built {name} extension in {directory}"
    spec = importlib.util.spec_from_file_location(name, found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ctypes_api():
    spec = importlib.util.spec_from_file_location(
        "ctypes_call", ROOT / "examples" / "c_extension" / "ctypes_call.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_api()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The Cython probe and the plain C extension, built side by side against this cygru."""
    import_optional("Cython")
    base = tmp_path_factory.mktemp("quantized_capi")
    dirs = {"cython": base / "cython", "c": base / "c"}
    for d in dirs.values():
        d.mkdir()
    (dirs["cython"] / "setup.py").write_text(CYTHON_SETUP)
    (dirs["cython"] / "cygru_quant_probe.pyx").write_text(CYTHON_PYX)
    (dirs["c"] / "setup.py").write_text(C_SETUP)
    (dirs["c"] / "cygru_quant_c.c").write_text(C_SOURCE)
    env = dict(os.environ)
    cygru_root = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([cygru_root] + [p for p in [env.get("PYTHONPATH")] if p])
    procs = {
        k: subprocess.Popen(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=d,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k, d in dirs.items()
    }
    for k, p in procs.items():
        log = p.communicate(timeout=900)[0]
        if p.returncode != 0:
            pytest.fail(f"building the {k} extension failed:\n{log[-6000:]}")
    return types.SimpleNamespace(
        cython=_load(dirs["cython"], "cygru_quant_probe"),
        c=_load(dirs["c"], "cygru_quant_c"),
        api=_ctypes_api(),
    )


def _aligned(nbytes, align=64, offset=0, fill=0):
    raw = np.full(nbytes + align + offset, fill, np.uint8)
    start = (-raw.ctypes.data) % align + offset
    return raw[start : start + nbytes]


def _dirs_offset():
    return capi._abi_layout()["cygru_model_f32"][1]["dirs"]


def _dirs_address(w):
    """The cygru_direction_f32* of an ExportedWeights, read from its cygru_model_f32."""
    return ctypes.c_void_p.from_address(w.address + _dirs_offset()).value


class _Way:
    """One way of calling the C API: quantize and forward on numpy arrays."""

    def __init__(self, name, built):
        self.name, self.built = name, built

    def sizes(self, w, p, T, B):
        args = (w.input_size, w.hidden_size, w.num_layers, w.num_directions, p)
        if self.name == "cython":
            return self.built.cython.sizes(*args, T, B)
        if self.name == "c":
            return self.built.c.sizes(*args, T, B)
        api = self.built.api
        return api.model_quantized_size(*args), api.model_quantized_workspace_size(
            T, B, *args[:4], p
        )

    def quantize(self, w, p, buf):
        if self.name == "cython":
            return self.built.cython.quantize(w, p, buf)
        args = (w.input_size, w.hidden_size, w.num_layers, w.num_directions, p)
        addr = (_dirs_address(w), buf.ctypes.data, buf.nbytes)
        if self.name == "c":
            return self.built.c.quantize(*args, *addr)
        return self.built.api.model_quantize(*args, *addr)

    def forward(self, w, p, q, x, h0, lengths, out, h_n, work):
        if self.name == "cython":
            return self.built.cython.forward(w, p, q, x, h0, lengths, out, h_n, work)
        T, B = x.shape[:2]

        def a(arr):
            return 0 if arr is None else arr.ctypes.data

        args = (T, B, w.input_size, w.hidden_size, w.num_layers, w.num_directions, p)
        args += (int(w.reset_after), int(w.reverse), a(q), a(x), a(h0), a(lengths))
        args += (a(out), a(h_n), a(work), work.nbytes)
        if self.name == "c":
            return self.built.c.forward(*args)
        return self.built.api.model_forward_quantized(*args)  # address 0: NULL


WAYS = ["cython", "c", "ctypes"]

# (I, H, L, bidirectional, reset_after, bias, reverse)
CONFIGS = [
    (5, 20, 1, False, True, True, False),
    (6, 17, 2, True, False, True, False),
    (7, 33, 3, False, True, False, False),
    (4, 16, 1, False, True, True, True),
    (9, 24, 2, True, True, True, False),
]


def _gru(I, H, L, bidi, reset_after, bias, reverse, seed=0):
    return cygru.GRU(
        I,
        H,
        num_layers=L,
        bias=bias,
        bidirectional=bidi,
        reset_after=reset_after,
        reverse=reverse,
        seed=seed,
    )


def _run(way, w, p, q, x, h0=None, lengths=None):
    """(status, output, h_n) of one model_forward_quantized call into NaN outputs."""
    T, B = x.shape[:2]
    LD, H = w.num_layers * w.num_directions, w.hidden_size
    out = np.full((T, B, w.num_directions * H), np.nan, np.float32)
    h_n = np.full((LD, B, H), np.nan, np.float32)
    _, n = way.sizes(w, p, T, B)
    work = _aligned(n)
    if lengths is not None:
        lengths = np.ascontiguousarray(lengths, dtype=np.intc)
    status = way.forward(w, p, q, x, h0, lengths, out, h_n, work)
    return status, out, h_n


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("precision", ["int8", "bf16"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "I{}H{}L{}bi{}ra{}b{}rev{}".format(*c))
def test_forward_quantized_is_the_bits_of_cygru_quantize(built, way, precision, config):
    way = _Way(way, built)
    gru = _gru(*config)
    w = capi.export_weights(gru)
    p = PRECISIONS[precision]
    n_q, _ = way.sizes(w, p, 1, 1)
    assert n_q == w.quantized_size(precision)
    q = _aligned(n_q, fill=0xAB)
    assert way.quantize(w, p, q) == capi.OK
    ref = cygru.quantize(gru, precision)
    rng = np.random.default_rng(1)
    LD = gru.num_layers * gru.num_directions
    for T, B in [(6, 1), (5, 3), (4, 7)]:
        x = rng.standard_normal((T, B, gru.input_size)).astype(np.float32)
        h0 = rng.standard_normal((LD, B, gru.hidden_size)).astype(np.float32)
        lengths = rng.integers(1, T + 1, B)
        lengths[0] = T
        for h0_, len_ in [(None, None), (h0, None), (h0, lengths), (None, lengths)]:
            status, out, h_n = _run(way, w, p, q, x, h0_, len_)
            assert status == capi.OK, capi.status_name(status)
            want_out, want_h_n = ref(x, h0_, len_)
            np.testing.assert_array_equal(out, want_out)
            np.testing.assert_array_equal(h_n, want_h_n)
    # quantized, not float: the float module's numbers differ (a little)
    assert not np.array_equal(out, gru(x, h0_, len_)[0])


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_buffer_equals_the_python_wrapper_and_is_self_contained(built, precision):
    """Every way writes the same bytes (those of ExportedWeights.quantize, whatever the
    buffer held before); the buffer needs nothing else: the weights freed and the
    buffer moved by a copy, the calls give the same bits."""
    gru = _gru(6, 20, 2, True, True, True, False)
    p = PRECISIONS[precision]
    x = np.random.default_rng(2).standard_normal((5, 3, 6)).astype(np.float32)
    want = cygru.quantize(gru, precision)(x)
    w = capi.export_weights(gru)
    buffers = []
    for name in WAYS:
        q = _aligned(w.quantized_size(precision), fill=0xC3)
        assert _Way(name, built).quantize(w, p, q) == capi.OK
        buffers.append(q)
    buffers.append(w.quantize(precision))
    for q in buffers[1:]:
        np.testing.assert_array_equal(q, buffers[0])
    q = buffers[0]
    del w
    moved = _aligned(q.nbytes, offset=8)  # another place, 8-byte aligned
    moved[:] = q
    q[:] = 0
    w = capi.export_weights(_gru(6, 20, 2, True, True, True, False, seed=5))  # other weights
    for name in WAYS:
        status, out, h_n = _run(_Way(name, built), w, p, moved, x)
        assert status == capi.OK
        np.testing.assert_array_equal(out, want[0])
        np.testing.assert_array_equal(h_n, want[1])
    # the zeroed original is no longer a quantized buffer
    assert _run(_Way("ctypes", built), w, p, q, x)[0] == capi.ERR_PREPARED


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_frames_chained_in_place_equal_one_call(built, precision):
    """A stream cut into T = 1 calls (h_n written over h0) gives the bits of one call."""
    way = _Way("cython", built)
    gru = _gru(4, 32, 2, False, True, True, False)
    w = capi.export_weights(gru)
    p = PRECISIONS[precision]
    q = w.quantize(precision)
    x = np.random.default_rng(3).standard_normal((9, 2, 4)).astype(np.float32)
    _, whole, whole_h_n = _run(way, w, p, q, x)
    h = np.zeros((2, 2, 32), np.float32)
    _, n = way.sizes(w, p, 1, 2)
    work = _aligned(n)
    for t in range(9):
        out = np.empty((1, 2, 32), np.float32)
        assert way.forward(w, p, q, x[t : t + 1], h, None, out, h, work) == capi.OK
        np.testing.assert_array_equal(out[0], whole[t])
    np.testing.assert_array_equal(h, whole_h_n)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_gru_cell_export_steps_like_the_quantized_cell(built, precision):
    cell = cygru.GRUCell(5, 12, seed=3)
    w = capi.export_weights(cell)
    p = PRECISIONS[precision]
    q = w.quantize(precision)
    qcell = cygru.quantize(cell, precision)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 4, 5)).astype(np.float32)
    h = rng.standard_normal((1, 4, 12)).astype(np.float32)
    status, out, h_n = _run(_Way("c", built), w, p, q, x, h)
    assert status == capi.OK
    np.testing.assert_array_equal(h_n[0], qcell(x[0], h[0]))


def test_one_buffer_shared_by_threads(built):
    gru = _gru(8, 48, 2, True, True, True, False)
    w = capi.export_weights(gru)
    q = w.quantize("int8")
    xs = [np.random.default_rng(i).standard_normal((6, 3, 8)).astype(np.float32) for i in range(6)]
    want = [cygru.quantize(gru, "int8")(x) for x in xs]
    got = [None] * len(xs)

    def run(i):
        got[i] = _run(_Way("ctypes", built), w, capi.INT8, q, xs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (status, out, h_n), (want_out, want_h_n) in zip(got, want):
        assert status == capi.OK
        np.testing.assert_array_equal(out, want_out)
        np.testing.assert_array_equal(h_n, want_h_n)


# ---------------------------------------------------------------------------------------------
# statuses (through the table, via ctypes: any pointer can be passed)
# ---------------------------------------------------------------------------------------------


class _Dirs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in ("w_ih", "w_hh", "b_ih", "b_hh")]


def _own_dirs(I, H, L, D, seed=0):
    """A direction table over fresh float32 arrays (to put NaN in, or overlap)."""
    rng = np.random.default_rng(seed)
    keep, table = [], (_Dirs * (L * D))()
    for k in range(L * D):
        K = I if k < D else D * H
        arrs = [
            rng.standard_normal((3 * H, K)).astype(np.float32),
            rng.standard_normal((3 * H, H)).astype(np.float32),
            rng.standard_normal(3 * H).astype(np.float32),
            rng.standard_normal(3 * H).astype(np.float32),
        ]
        keep.append(arrs)
        table[k] = _Dirs(*(a.ctypes.data for a in arrs))
    return table, keep


@pytest.mark.parametrize("bad", [0, 3, -1, 256])
def test_bad_precision_is_refused(built, bad):
    api = built.api
    table, keep = _own_dirs(3, 8, 1, 1)
    assert api.model_quantized_size(3, 8, 1, 1, bad) == 0
    assert api.model_quantized_workspace_size(4, 2, 3, 8, 1, 1, bad) == 0
    q = _aligned(capi.export_weights(cygru.GRU(3, 8)).quantized_size("int8"), fill=7)
    before = q.copy()
    addr = ctypes.addressof(table)
    assert api.model_quantize(3, 8, 1, 1, bad, addr, q.ctypes.data, q.nbytes) == capi.ERR_PRECISION
    np.testing.assert_array_equal(q, before)
    x = np.ones((4, 2, 3), np.float32)
    out = np.full((4, 2, 8), np.nan, np.float32)
    work = _aligned(1 << 16)
    args = (4, 2, 3, 8, 1, 1, bad, 1, 0, q.ctypes.data, x.ctypes.data, None, None)
    assert api.model_forward_quantized(*args, out.ctypes.data, None, work.ctypes.data, 1 << 16) == (
        capi.ERR_PRECISION
    )
    assert np.isnan(out).all()
    assert "CYGRU_INT8" in capi.status_name(capi.ERR_PRECISION)


def _quantized(api, I, H, L, D, p, seed=0):
    table, keep = _own_dirs(I, H, L, D, seed)
    q = _aligned(api.model_quantized_size(I, H, L, D, p))
    assert api.model_quantize(I, H, L, D, p, ctypes.addressof(table), q.ctypes.data, q.nbytes) == 0
    return q, (table, keep)


def _forward_status(api, q, I, H, L, D, p, T=3, B=2, reverse=0, lengths=None, out=None, work=None):
    x = np.ones((T, B, I), np.float32)
    if out is None:
        out = np.full((T, B, D * H), np.nan, np.float32)
    n = api.model_quantized_workspace_size(T, B, I, H, L, D, p)
    if work is None:
        work = _aligned(n)
    lp = None if lengths is None else np.asarray(lengths, np.intc).ctypes.data
    status = api.model_forward_quantized(
        T, B, I, H, L, D, p, 1, reverse, q.ctypes.data, x.ctypes.data, None, lp,
        out.ctypes.data, None, work.ctypes.data, work.nbytes,
    )  # fmt: skip
    return status, out


def test_buffers_of_another_model_or_precision_are_refused(built):
    api = built.api
    q8, keep8 = _quantized(api, 3, 16, 2, 2, capi.INT8)
    qb, keepb = _quantized(api, 3, 16, 2, 2, capi.BF16)
    assert _forward_status(api, q8, 3, 16, 2, 2, capi.INT8)[0] == capi.OK
    assert _forward_status(api, qb, 3, 16, 2, 2, capi.BF16)[0] == capi.OK
    for q, p in [(q8, capi.BF16), (qb, capi.INT8)]:  # another precision
        status, out = _forward_status(api, q, 3, 16, 2, 2, p)
        assert status == capi.ERR_PREPARED and np.isnan(out).all()
    # other sizes: each of I, H, L, D
    for sizes in [(4, 16, 2, 2), (3, 8, 2, 2), (3, 16, 1, 2), (3, 16, 2, 1)]:
        big = _aligned(max(q8.nbytes, api.model_quantized_size(*sizes, capi.INT8)))
        big[: q8.nbytes] = q8
        assert _forward_status(api, big, *sizes, capi.INT8)[0] == capi.ERR_PREPARED
    # never quantized; a prepared (float) buffer; a tag with one byte changed
    assert _forward_status(api, _aligned(q8.nbytes), 3, 16, 2, 2, capi.INT8)[0] == (
        capi.ERR_PREPARED
    )
    w = capi.export_weights(cygru.GRU(3, 16, num_layers=2, bidirectional=True))
    prepared = _aligned(max(w.prepared_size(), q8.nbytes))
    prepared[: w.prepared_size()] = w.prepare()
    assert _forward_status(api, prepared, 3, 16, 2, 2, capi.INT8)[0] == capi.ERR_PREPARED
    for i in (0, 9, 17, 40, 55):
        bent = _aligned(q8.nbytes)
        bent[:] = q8
        bent[i] ^= 1
        assert _forward_status(api, bent, 3, 16, 2, 2, capi.INT8)[0] == capi.ERR_PREPARED


@pytest.mark.parametrize("p", [capi.INT8, capi.BF16])
def test_quantize_status(built, p):
    api = built.api
    I, H, L, D = 3, 8, 2, 2
    table, keep = _own_dirs(I, H, L, D)
    n = api.model_quantized_size(I, H, L, D, p)
    addr = ctypes.addressof(table)

    def status(buf, size=None, tbl=addr, sizes=(I, H, L, D)):
        before = buf.copy()
        s = api.model_quantize(
            *sizes, p, tbl, buf.ctypes.data, buf.nbytes if size is None else size
        )
        if s != capi.OK:
            np.testing.assert_array_equal(buf, before)  # nothing written
        return s

    assert status(_aligned(n)) == capi.OK
    assert status(_aligned(n), size=n - 1) == capi.ERR_PREPARED_SIZE
    assert status(_aligned(n, offset=4)) == capi.ERR_ALIGN
    assert status(_aligned(n), tbl=None) == capi.ERR_NULL
    assert status(_aligned(n), sizes=(0, H, L, D)) == capi.ERR_SIZE
    assert status(_aligned(n), sizes=(I, H, L, 3)) == capi.ERR_SIZE
    assert api.model_quantize(I, H, L, D, p, addr, None, n) == capi.ERR_NULL
    # a NULL weight in the table
    saved = table[2].w_hh
    table[2].w_hh = None
    assert status(_aligned(n)) == capi.ERR_NULL
    table[2].w_hh = saved
    # inner sizes past the int8 limit (input size, or D*H above the first layer)
    assert api.model_quantized_size(131073, 8, 1, 1, p) == 0
    assert api.model_quantized_size(131072, 8, 1, 1, p) > 0
    assert api.model_quantized_size(8, 65537, 2, 2, p) == 0
    assert api.model_quantized_workspace_size(1, 1, 131073, 8, 1, 1, p) == 0
    # a non-finite weight or bias: nothing written
    for k, j, v in [(0, 0, np.nan), (3, 1, np.inf), (1, 2, -np.inf), (2, 3, np.nan)]:
        arr = keep[k][j]
        old = arr.flat[5]
        arr.flat[5] = v
        assert status(_aligned(n, fill=0x5A)) == capi.ERR_NOT_FINITE
        arr.flat[5] = old
    # the buffer over a weight (it would change what it quantizes)
    w_ih = keep[0][0]
    over = w_ih.view(np.uint8)
    assert api.model_quantize(I, H, L, D, p, addr, over.ctypes.data - 64, n) == capi.ERR_ALIAS


def test_forward_status(built):
    api = built.api
    I, H, L, D, p = 3, 8, 2, 1, capi.BF16
    q, keep = _quantized(api, I, H, L, D, p)
    assert _forward_status(api, q, I, H, L, D, p)[0] == capi.OK
    assert _forward_status(api, q, I, H, L, D, p, lengths=[3, 0])[0] == capi.ERR_LENGTH
    assert _forward_status(api, q, I, H, L, D, p, lengths=[4, 1])[0] == capi.ERR_LENGTH
    n = api.model_quantized_workspace_size(3, 2, I, H, L, D, p)
    assert _forward_status(api, q, I, H, L, D, p, work=_aligned(n - 1))[0] == capi.ERR_WORKSPACE
    assert _forward_status(api, q, I, H, L, D, p, work=_aligned(n, offset=4))[0] == capi.ERR_ALIGN
    # an output or the workspace over the quantized buffer
    over = q[64:].view(np.uint8)
    status, _ = _forward_status(api, q, I, H, L, D, p, out=np.frombuffer(over, np.float32, 48))
    assert status == capi.ERR_ALIAS
    arena = _aligned(q.nbytes + n + 128)
    arena[: q.nbytes] = q
    status, _ = _forward_status(api, arena[: q.nbytes], I, H, L, D, p, work=arena[64 : 64 + n])
    assert status == capi.ERR_WORKSPACE_ALIAS
    status, _ = _forward_status(api, arena[: q.nbytes], I, H, L, D, p, work=arena[-n:])
    assert status == capi.OK
    # reverse with two directions
    q2, keep2 = _quantized(api, I, H, 1, 2, p)
    assert _forward_status(api, q2, I, H, 1, 2, p, reverse=1)[0] == capi.ERR_FLAGS
    x = np.ones((3, 2, I), np.float32)
    out = np.empty((3, 2, H), np.float32)
    work = _aligned(n)
    assert api.model_forward_quantized(3, 2, I, H, L, D, p, 1, 0, None, x.ctypes.data, None, None,
                                       out.ctypes.data, None, work.ctypes.data, n) == capi.ERR_NULL  # fmt: skip


def test_status_names_and_constants():
    assert (capi.INT8, capi.BF16) == (1, 2)
    assert capi.PRECISIONS == {"int8": 1, "bf16": 2}
    assert (capi.ERR_PRECISION, capi.ERR_NOT_FINITE) == (12, 13)
    assert "not finite" in capi.status_name(capi.ERR_NOT_FINITE)
    assert "model_quantize" in capi.status_name(capi.ERR_PREPARED)


def test_python_wrappers_refuse_bad_arguments():
    w = capi.export_weights(cygru.GRU(3, 4, seed=0))
    with pytest.raises(ValueError, match=r"ExportedWeights.quantize: precision must be one of"):
        w.quantize("int4")
    with pytest.raises(TypeError, match=r"precision must be one of"):
        w.quantize(1)
    w64 = capi.export_weights(cygru.GRU(3, 4, dtype=np.float64, seed=0))
    with pytest.raises(TypeError, match=r"takes float32 weights; this export is float64"):
        w64.quantize("int8")
    x = np.ones((2, 1, 3), np.float32)
    q = w.quantize("bf16")
    with pytest.raises(TypeError, match="quantized and precision go together"):
        w.forward(x, quantized=q)
    qi = w.quantize("int8")
    wrong = (qi, "bf16") if qi.nbytes >= q.nbytes else (q, "int8")  # big enough, wrong tag
    with pytest.raises(ValueError, match="not made by model_quantize"):
        w.forward(x, quantized=wrong[0], precision=wrong[1])
    with pytest.raises(ValueError, match=r"quantized holds \d+ bytes"):
        w.forward(
            x, quantized=min(q, qi, key=len), precision="bf16" if len(q) > len(qi) else "int8"
        )
    with pytest.raises(ValueError, match=r"quantized holds 10 bytes"):
        w.forward(x, quantized=q[:10], precision="bf16")
    out, h_n = w.forward(x, quantized=q, precision="bf16")
    assert out.dtype == np.float32 and out.shape == (2, 1, 4)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_every_product_variant_gives_the_same_bits_through_the_c_api(precision):
    """Each compiled variant of the products this CPU runs (forced, as the kernels' tests
    force them) gives the C API the bits of the default one."""
    from cygru import _kernels

    gru = _gru(12, 40, 2, True, True, True, False, seed=7)
    w = capi.export_weights(gru)
    q = w.quantize(precision)
    x = np.random.default_rng(8).standard_normal((6, 5, 12)).astype(np.float32)
    want = w.forward(x, lengths=[6, 1, 3, 6, 2], quantized=q, precision=precision)
    best = _kernels.quant_max_levels()[0 if precision == "int8" else 1]
    try:
        for level in range(best + 1):
            _kernels._force_quant_level(level)
            got = w.forward(x, lengths=[6, 1, 3, 6, 2], quantized=q, precision=precision)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), level
    finally:
        _kernels._force_quant_level(-1)
