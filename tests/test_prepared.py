"""Prepared weights in the C API: model_prepare_* once, model_forward_prepared_* per call.

A downstream Cython extension (built once per module, as tests/test_embedding.py builds
its probe) calls the C functions in ``nogil`` blocks on a model whose direction table
points at a live :class:`cygru.GRU`'s parameter arrays (not a snapshot), so that the
tests can change a weight the ways a user does (in place, assigned, loaded, stepped by an
optimizer) and see what a prepared buffer does:

* prepared calls give model_forward_*'s and cygru.GRU's bits (L=2, D=1/2, both gate
  forms, float32/64, B=1 and 5, T=1 and 7, with lengths); a chain of T=1 prepared calls
  (h_n written over h0) gives one long call's bits;
* the buffer is a copy: a weight changed in place is not seen until model_prepare runs
  again (then it is); an assigned or loaded parameter (new arrays, new pointers) makes
  the old buffer "not prepared for this model" (CYGRU_ERR_PREPARED) until prepared again;
* bad buffers and arguments are refused with their status, writing nothing.
"""

import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
import cygru.capi as capi
import cygru.optim

ROOT = pathlib.Path(__file__).resolve().parents[1]
DTYPES = [np.float32, np.float64]

SETUP = """\
import cygru, numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
setup(name="cygru-prepared-probe", ext_modules=cythonize(
    [Extension("cygru_prepared_probe", ["cygru_prepared_probe.pyx"],
               include_dirs=[numpy.get_include()],
               define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])],
    include_path=[cygru.get_include()], compiler_directives={"language_level": 3}))
"""

PYX = r'''
# cython: language_level=3, boundscheck=False, wraparound=False
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
cimport numpy as cnp
from cygru cimport capi
import numpy as np

cnp.import_array()


cdef void* ptr(a):
    return NULL if a is None else cnp.PyArray_DATA(a)


cdef class Live:
    """A cygru_model_* whose table points at a cygru.GRU's own parameter arrays."""
    cdef capi.cygru_model_f32 m32
    cdef capi.cygru_model_f64 m64
    cdef capi.cygru_direction_f32 d32[8]
    cdef capi.cygru_direction_f64 d64[8]
    cdef public object arrays, dtype
    cdef public int In, H, L, D
    cdef bint is32

    def __init__(self, gru):
        self.In, self.H, self.L, self.D = (gru.input_size, gru.hidden_size, gru.num_layers,
                                          gru.num_directions)
        self.dtype = np.dtype(gru.dtype)
        self.is32 = self.dtype == np.float32
        self.arrays = []
        cdef int k, d, idx
        for k in range(self.L):
            for d in range(self.D):
                idx = k * self.D + d
                sfx = f"_l{k}" + ("_reverse" if d else "")
                a = [getattr(gru, n + sfx) if gru.bias or n.startswith("weight") else None
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                for arr in a:
                    assert arr is None or (isinstance(arr, np.ndarray)
                                           and arr.flags.c_contiguous)
                self.arrays.append(a)
                if self.dtype == np.float32:
                    self.d32[idx].w_ih = <const float*>ptr(a[0])
                    self.d32[idx].w_hh = <const float*>ptr(a[1])
                    self.d32[idx].b_ih = <const float*>ptr(a[2])
                    self.d32[idx].b_hh = <const float*>ptr(a[3])
                else:
                    self.d64[idx].w_ih = <const double*>ptr(a[0])
                    self.d64[idx].w_hh = <const double*>ptr(a[1])
                    self.d64[idx].b_ih = <const double*>ptr(a[2])
                    self.d64[idx].b_hh = <const double*>ptr(a[3])
        self.m32.input_size = self.m64.input_size = self.In
        self.m32.hidden_size = self.m64.hidden_size = self.H
        self.m32.num_layers = self.m64.num_layers = self.L
        self.m32.num_directions = self.m64.num_directions = self.D
        self.m32.reset_after = self.m64.reset_after = gru.reset_after
        self.m32.reverse = self.m64.reverse = gru.reverse
        self.m32.dirs = &self.d32[0]
        self.m64.dirs = &self.d64[0]

    def prepared_size(self):
        if self.dtype == np.float32:
            return capi.model_prepared_size_f32(&self.m32)
        return capi.model_prepared_size_f64(&self.m64)

    def prepare(self, buf, Py_ssize_t offset=0, size=None):
        """model_prepare_* into buf (a uint8 array) at `offset`."""
        cdef char* p = <char*>ptr(buf) + offset
        cdef size_t n = buf.nbytes - offset if size is None else size
        cdef int status
        with nogil:
            if self.is32:
                status = capi.model_prepare_f32(&self.m32, p, n)
            else:
                status = capi.model_prepare_f64(&self.m64, p, n)
        return status

    def workspace(self, int T, int B, bint prepared):
        if self.dtype == np.float32:
            if prepared:
                return capi.model_prepared_workspace_size_f32(T, B, self.In, self.H, self.L,
                                                              self.D)
            return capi.model_workspace_size_f32(T, B, self.In, self.H, self.L, self.D)
        if prepared:
            return capi.model_prepared_workspace_size_f64(T, B, self.In, self.H, self.L, self.D)
        return capi.model_workspace_size_f64(T, B, self.In, self.H, self.L, self.D)

    cdef int _call(self, const void* prep, int T, int B, const void* x, const void* h0,
                   const int* lengths, void* out, void* h_n, void* work, size_t n,
                   bint use_prepared) noexcept nogil:
        if use_prepared:
            if self.is32:
                return capi.model_forward_prepared_f32(&self.m32, prep, T, B,
                                                       <const float*>x, <const float*>h0,
                                                       lengths, <float*>out, <float*>h_n,
                                                       work, n)
            return capi.model_forward_prepared_f64(&self.m64, prep, T, B, <const double*>x,
                                                   <const double*>h0, lengths,
                                                   <double*>out, <double*>h_n, work, n)
        if self.is32:
            return capi.model_forward_f32(&self.m32, T, B, <const float*>x, <const float*>h0,
                                          lengths, <float*>out, <float*>h_n, work, n)
        return capi.model_forward_f64(&self.m64, T, B, <const double*>x, <const double*>h0,
                                      lengths, <double*>out, <double*>h_n, work, n)

    def forward(self, x, h0=None, lengths=None, prepared=None, bint frames=False):
        """(status, output, h_n): one call over x (T, B, I), or with `frames` one T=1 call
        per step, h_n written over the state it started from (h0 chained in place; the
        streaming form: every sequence must run all T steps)."""
        cdef int T = x.shape[0], B = x.shape[1], t, status = 0
        cdef int LD = self.L * self.D, H = self.H
        out = np.full((T, B, self.D * H), np.nan, self.dtype)
        h = (np.zeros((LD, B, H), self.dtype) if h0 is None
             else np.array(h0, self.dtype, copy=True))
        h_n = h if frames else np.full((LD, B, H), np.nan, self.dtype)
        cdef size_t n = self.workspace(1 if frames else T, B, prepared is not None)
        cdef void* work = malloc(n)
        cdef const void* pp = ptr(prepared)
        cdef char* xp = <char*>ptr(x)
        cdef char* op = <char*>ptr(out)
        cdef void* hp = ptr(h)
        cdef void* hnp = ptr(h_n)
        cdef const int* lp = <const int*>ptr(lengths)
        cdef size_t xrow = <size_t>B * self.In * self.dtype.itemsize
        cdef size_t orow = <size_t>B * self.D * H * self.dtype.itemsize
        with nogil:
            if frames:
                for t in range(T):
                    status = self._call(pp, 1, B, xp + t * xrow, hp, NULL, op + t * orow, hp,
                                        work, n, pp != NULL)
                    if status != 0:
                        break
            else:
                status = self._call(pp, T, B, xp, hp, lp, op, hnp, work, n, pp != NULL)
        free(work)
        return status, out, h_n


def forward_status(Live m, prepared, str case, int T=3, int B=2):
    """model_forward_prepared_* with one thing wrong: (status, outputs untouched)."""
    cdef int LD = m.L * m.D
    cdef size_t item = m.dtype.itemsize
    x = np.ones((T, B, m.In), m.dtype)
    out = np.full((T, B, m.D * m.H), 7.0, m.dtype)
    h_n = np.full((LD, B, m.H), 7.0, m.dtype)
    cdef size_t n = m.workspace(T, B, True)
    work_arr = np.zeros(n + 64, np.uint8)
    cdef char* work = <char*>ptr(work_arr)
    cdef size_t wn = n
    cdef char* pp = <char*>ptr(prepared)
    cdef char* op = <char*>ptr(out)
    cdef char* hp = <char*>ptr(h_n)
    copy = None
    if case == "null_prepared":
        pp = NULL
    elif case == "misaligned":
        pp = pp + 4
    elif case == "small_work":
        wn = n - 1
    elif case == "null_work":
        work = NULL
    elif case == "output_on_prepared":
        op = pp + <Py_ssize_t>prepared.nbytes - 8
    elif case == "hn_on_prepared":
        hp = pp + 64
    elif case == "work_on_prepared":
        work = pp + <Py_ssize_t>prepared.nbytes - 64
    elif case == "moved":
        # a copy elsewhere (memcpy) is the same prepared weights
        copy = np.empty(prepared.nbytes + 64, np.uint8)
        start = (-copy.ctypes.data) % 64
        copy = copy[start:start + prepared.nbytes]
        copy[...] = prepared
        pp = <char*>ptr(copy)
    elif case == "hn_is_h0":
        pass
    elif case != "ok":
        raise ValueError(case)
    cdef int status
    cdef void* xp = ptr(x)
    with nogil:
        status = m._call(pp, T, B, xp, NULL, NULL, op, hp, work, wn, True)
    untouched = bool((out == 7.0).all() and (h_n == 7.0).all())
    return status, untouched


def prepare_status(Live m, str case):
    """model_prepare_* with one thing wrong: (status, buffer untouched)."""
    cdef size_t need = m.prepared_size()
    buf = np.full(need + 128, 0xAB, np.uint8)
    cdef char* p = <char*>ptr(buf)
    p = p + (-(<Py_ssize_t>p) % 64)
    cdef size_t n = need
    cdef capi.cygru_model_f32 m32 = m.m32
    cdef capi.cygru_model_f64 m64 = m.m64
    cdef const capi.cygru_model_f32* mp32 = &m32
    cdef const capi.cygru_model_f64* mp64 = &m64
    if case == "small":
        n = need - 1
    elif case == "null_buffer":
        p = NULL
    elif case == "null_model":
        mp32 = NULL
        mp64 = NULL
    elif case == "misaligned":
        p = p + 4
    elif case == "on_weights" and m.dtype == np.float32:
        p = <char*>m32.dirs[0].w_hh
    elif case == "on_weights":
        p = <char*>m64.dirs[0].w_hh
    elif case == "H0":
        m32.hidden_size = m64.hidden_size = 0
    elif case == "reverse_bi":
        m32.reverse = m64.reverse = 1
    elif case != "ok":
        raise ValueError(case)
    cdef int status
    if m.dtype == np.float32:
        status = capi.model_prepare_f32(mp32, p, n)
    else:
        status = capi.model_prepare_f64(mp64, p, n)
    return status, bool((buf == 0xAB).all())


cdef double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def time_frames(Live m, str mode, int frames, int B=1):
    """Seconds of each of `frames` streaming frames of a float32 2-layer, 1-direction
    model at batch B, timed one by one in C: "model" (model_forward_f32, T=1), "prepared"
    (model_forward_prepared_f32 on a buffer prepared once), "cells" (two chained
    cell_step_f32, in place)."""
    assert m.dtype == np.float32 and m.L == 2 and m.D == 1
    cdef int In = m.In, H = m.H, f, status = 0
    x = (np.random.default_rng(0).standard_normal((B, In)) * 0.1).astype(np.float32)
    h = np.zeros((2, B, H), np.float32)
    out = np.zeros((B, H), np.float32)
    times = np.zeros(frames)
    cdef double[::1] tv = times
    cdef size_t n
    prepared = None
    if mode == "model":
        n = capi.model_workspace_size_f32(1, B, In, H, 2, 1)
    elif mode == "prepared":
        n = capi.model_prepared_workspace_size_f32(1, B, In, H, 2, 1)
        prepared = np.zeros(m.prepared_size() + 64, np.uint8)
        prepared = prepared[(-prepared.ctypes.data) % 64:][:m.prepared_size()]
        assert m.prepare(prepared) == 0
    elif mode == "cells":
        n = capi.cell_workspace_size_f32(B, H)
    else:
        raise ValueError(mode)
    work_arr = np.zeros(n + 64, np.uint8)
    cdef void* work = ptr(work_arr)
    cdef const void* pp = ptr(prepared)
    cdef const float* xp = <const float*>ptr(x)
    cdef float* h0 = <float*>ptr(h)
    cdef float* h1 = h0 + B * H
    cdef float* op = <float*>ptr(out)
    cdef const capi.cygru_direction_f32* d = m.m32.dirs
    cdef double t0
    with nogil:
        for f in range(frames):
            t0 = _now()
            if mode[0] == "m":
                status |= capi.model_forward_f32(&m.m32, 1, B, xp, h0, NULL, op, h0, work, n)
            elif mode[0] == "p":
                status |= capi.model_forward_prepared_f32(&m.m32, pp, 1, B, xp, h0, NULL, op,
                                                          h0, work, n)
            else:
                status |= capi.cell_step_f32(B, In, H, xp, h0, d[0].w_ih, d[0].w_hh, d[0].b_ih,
                                             d[0].b_hh, m.m32.reset_after, h0, work, n)
                status |= capi.cell_step_f32(B, H, H, h0, h1, d[1].w_ih, d[1].w_hh, d[1].b_ih,
                                             d[1].b_hh, m.m32.reset_after, h1, work, n)
            tv[f] = _now() - t0
    assert status == 0, status
    return times
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """The probe extension, built with setuptools + Cython against this cygru."""
    import_optional("Cython")
    base = tmp_path_factory.mktemp("prepared_probe")
    (base / "setup.py").write_text(SETUP)
    (base / "cygru_prepared_probe.pyx").write_text(PYX)
    env = dict(os.environ)
    cygru_root = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([cygru_root] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the probe failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    import importlib.util

    built = sorted(base.glob("cygru_prepared_probe*.so")) + sorted(
        base.glob("cygru_prepared_probe*.pyd")
    )
    assert built, "no built probe"
    spec = importlib.util.spec_from_file_location("cygru_prepared_probe", built[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _aligned(nbytes, align=64):
    raw = np.zeros(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start : start + nbytes]


def _prepared(probe, live):
    buf = _aligned(live.prepared_size())
    assert live.prepare(buf) == capi.OK
    return buf


# ---------------------------------------------------------------------------------------------
# the same bits as model_forward and cygru.GRU
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("T, B", [(1, 1), (7, 1), (1, 5), (7, 5)])
def test_prepared_forward_is_bitwise_model_forward_and_gru(probe, dtype, D, reset_after, T, B):
    gru = cygru.GRU(
        6, 20, num_layers=2, bidirectional=D == 2, reset_after=reset_after, dtype=dtype, seed=T
    )
    live = probe.Live(gru)
    buf = _prepared(probe, live)
    rng = np.random.default_rng(B)
    x = rng.standard_normal((T, B, 6)).astype(dtype)
    h0 = rng.standard_normal((2 * D, B, 20)).astype(dtype)
    lengths = None if B == 1 else np.array([T, 1, max(T - 2, 1), T, 2 if T > 1 else 1], np.intc)
    status, out, h_n = live.forward(x, h0, lengths, prepared=buf)
    assert status == capi.OK, capi.status_name(status)
    status, ref_out, ref_h_n = live.forward(x, h0, lengths)
    assert status == capi.OK
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(h_n, ref_h_n)
    gru_out, gru_h_n = gru(x, h0, lengths=lengths)
    np.testing.assert_array_equal(out, gru_out)
    np.testing.assert_array_equal(h_n, gru_h_n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("B", [1, 5])
def test_frames_of_prepared_calls_equal_one_long_call(probe, dtype, reset_after, B):
    """A stream fed one T=1 prepared call per frame (h_n over h0) gives the bits of one
    call over all frames, and of cygru.GRU over the sequence."""
    gru = cygru.GRU(5, 33, num_layers=2, reset_after=reset_after, dtype=dtype, seed=3)
    live = probe.Live(gru)
    buf = _prepared(probe, live)
    x = np.random.default_rng(0).standard_normal((9, B, 5)).astype(dtype)
    status, out, h = live.forward(x, prepared=buf, frames=True)
    assert status == capi.OK
    status, long_out, long_h_n = live.forward(x, prepared=buf)
    assert status == capi.OK
    np.testing.assert_array_equal(out, long_out)
    np.testing.assert_array_equal(h, long_h_n)
    gru_out, gru_h_n = gru(x)
    np.testing.assert_array_equal(out, gru_out)
    np.testing.assert_array_equal(h, gru_h_n)


def test_one_prepared_buffer_shared_by_threads(probe):
    """Threads share one prepared buffer (read only), each with its own workspace."""
    gru = cygru.GRU(4, 40, num_layers=2, bidirectional=True, seed=0)
    live = probe.Live(gru)
    buf = _prepared(probe, live)
    xs = [np.random.default_rng(i).standard_normal((6, 3, 4)).astype(np.float32) for i in range(4)]
    want = [gru(x) for x in xs]
    got = [None] * len(xs)

    def run(i):
        for _ in range(20):
            got[i] = live.forward(xs[i], prepared=buf)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (status, out, h_n), (ref_out, ref_h_n) in zip(got, want):
        assert status == capi.OK
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(h_n, ref_h_n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H", [5, 16, 40, 100])
@pytest.mark.parametrize("D, reset_after", [(1, True), (2, False)])
def test_engine_prepared_layer_on_any_thread_count(dtype, H, D, reset_after):
    """The engine's layer_forward_prepared on 1-4 threads (pieces of 16-unit panels read
    from one prepared block per direction) gives cygru.GRU's bits: the packed layout
    does not depend on the thread plan."""
    from cygru import _engine

    gru = cygru.GRU(7, H, bidirectional=D == 2, reset_after=reset_after, dtype=dtype, seed=H)
    x = np.random.default_rng(H).standard_normal((6, 33, 7)).astype(dtype)
    want_out, want_h_n = gru(x)
    weights = [
        tuple(
            np.ascontiguousarray(getattr(gru, n + "_l0" + ("_reverse" if d else "")))
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        for d in range(D)
    ]
    for threads in (1, 2, 3, 4):
        out, h_n = _engine._forward_prepared(x, weights, H, reset_after, False, threads)
        np.testing.assert_array_equal(out, want_out, err_msg=f"{threads} threads")
        np.testing.assert_array_equal(h_n, want_h_n, err_msg=f"{threads} threads")


# ---------------------------------------------------------------------------------------------
# a copy: changed weights are seen after model_prepare again, never half
# ---------------------------------------------------------------------------------------------


def _x(dtype=np.float32):
    return np.random.default_rng(7).standard_normal((4, 2, 3)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_change_needs_prepare_again(probe, dtype):
    gru = cygru.GRU(3, 18, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    live = probe.Live(gru)
    buf = _prepared(probe, live)
    x = _x(dtype)
    before = gru(x)
    gru.weight_hh_l1_reverse[...] *= 1.5  # in place: same arrays, same pointers
    gru.bias_ih_l0[:3] += 0.25
    after = gru(x)
    assert not np.array_equal(before[0], after[0])
    # not prepared again: the buffer still holds the old weights (a copy, documented)
    status, out, h_n = live.forward(x, prepared=buf)
    assert status == capi.OK
    np.testing.assert_array_equal(out, before[0])
    # prepared again: the new weights, bit for bit
    assert live.prepare(buf) == capi.OK
    status, out, h_n = live.forward(x, prepared=buf)
    assert status == capi.OK
    np.testing.assert_array_equal(out, after[0])
    np.testing.assert_array_equal(h_n, after[1])


def test_weights_changed_on_another_thread_never_reach_a_prepared_buffer(probe):
    """While another thread changes the weights in place (and prepares a second buffer),
    calls on the first buffer keep giving the old results exactly (a copy: never half
    old, half new); the second buffer gives the new ones."""
    gru = cygru.GRU(3, 40, num_layers=2, seed=5)
    live = probe.Live(gru)
    old_buf = _prepared(probe, live)
    x = _x()
    old_out, old_h_n = gru(x)
    new_buf = _aligned(old_buf.nbytes)
    done = threading.Event()

    def change():
        for _ in range(200):
            gru.weight_hh_l0[...] *= 1.001
            gru.weight_ih_l1[::2] += 1e-3
        assert live.prepare(new_buf) == capi.OK
        done.set()

    changer = threading.Thread(target=change)
    changer.start()
    calls = 0
    while not done.is_set() or calls < 5:
        status, out, h_n = live.forward(x, prepared=old_buf)
        assert status == capi.OK
        np.testing.assert_array_equal(out, old_out)
        np.testing.assert_array_equal(h_n, old_h_n)
        calls += 1
    changer.join()
    status, out, h_n = live.forward(x, prepared=new_buf)
    assert status == capi.OK
    new_out, new_h_n = gru(x)
    assert not np.array_equal(new_out, old_out)
    np.testing.assert_array_equal(out, new_out)
    np.testing.assert_array_equal(h_n, new_h_n)


def test_assigned_or_loaded_parameters_refuse_the_old_buffer(probe):
    """New arrays (assigned, or load_state_dict) are new weight pointers: the old buffer
    is not prepared for the new model (CYGRU_ERR_PREPARED) until model_prepare runs."""
    gru = cygru.GRU(3, 18, num_layers=2, seed=1)
    buf = _prepared(probe, probe.Live(gru))
    x = _x()
    gru.weight_ih_l0 = np.asarray(gru.weight_ih_l0) * 0.5  # assigned: a new array
    live = probe.Live(gru)
    status, out, _ = live.forward(x, prepared=buf)
    assert status == capi.ERR_PREPARED and np.isnan(out).all()
    assert live.prepare(buf) == capi.OK
    status, out, h_n = live.forward(x, prepared=buf)
    assert status == capi.OK
    np.testing.assert_array_equal(out, gru(x)[0])

    before_load = gru(x)
    other = cygru.GRU(3, 18, num_layers=2, seed=2)
    gru.load_state_dict(other.state_dict())
    live = probe.Live(gru)
    status, out, h_n = live.forward(x, prepared=buf)
    if status == capi.OK:  # loaded in place (same pointers): the old copy until prepared
        np.testing.assert_array_equal(out, before_load[0])
    else:  # new arrays: not this model's buffer
        assert status == capi.ERR_PREPARED
    assert live.prepare(buf) == capi.OK
    status, out, h_n = live.forward(x, prepared=buf)
    assert status == capi.OK
    np.testing.assert_array_equal(out, other(x)[0])
    np.testing.assert_array_equal(h_n, other(x)[1])


def test_optimizer_step_then_prepare_again(probe):
    gru = cygru.GRU(3, 18, num_layers=2, seed=4)
    live = probe.Live(gru)
    buf = _prepared(probe, live)
    x = _x()
    before = gru(x)
    for g in gru.grads.values():
        g[...] = 0.05
    cygru.optim.SGD(gru, lr=0.5).step()
    after = gru(x)
    assert not np.array_equal(before[0], after[0])
    live = probe.Live(gru)  # the parameters the optimizer updated (in place)
    status, out, _ = live.forward(x, prepared=buf)
    assert status in (capi.OK, capi.ERR_PREPARED)
    if status == capi.OK:
        np.testing.assert_array_equal(out, before[0])  # the copy made before the step
    assert live.prepare(buf) == capi.OK
    status, out, h_n = live.forward(x, prepared=buf)
    assert status == capi.OK
    np.testing.assert_array_equal(out, after[0])
    np.testing.assert_array_equal(h_n, after[1])


# ---------------------------------------------------------------------------------------------
# refused: bad buffers and arguments, nothing written
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, expected",
    [
        ("ok", capi.OK),
        ("small", capi.ERR_PREPARED_SIZE),
        ("null_buffer", capi.ERR_NULL),
        ("null_model", capi.ERR_NULL),
        ("misaligned", capi.ERR_ALIGN),
        ("on_weights", capi.ERR_ALIAS),
        ("H0", capi.ERR_SIZE),
        ("reverse_bi", capi.ERR_FLAGS),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_prepare_status(probe, case, expected, dtype):
    live = probe.Live(cygru.GRU(3, 17, num_layers=2, bidirectional=True, dtype=dtype, seed=0))
    status, untouched = probe.prepare_status(live, case)
    assert status == expected, capi.status_name(status)
    if expected != capi.OK:
        assert untouched, "a refused model_prepare wrote its buffer"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("ok", capi.OK),
        ("moved", capi.OK),
        ("null_prepared", capi.ERR_NULL),
        ("misaligned", capi.ERR_ALIGN),
        ("small_work", capi.ERR_WORKSPACE),
        ("null_work", capi.ERR_WORKSPACE),
        ("output_on_prepared", capi.ERR_ALIAS),
        ("hn_on_prepared", capi.ERR_ALIAS),
        ("work_on_prepared", capi.ERR_WORKSPACE_ALIAS),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_prepared_status(probe, case, expected, dtype):
    live = probe.Live(cygru.GRU(3, 17, num_layers=2, bidirectional=True, dtype=dtype, seed=0))
    buf = _prepared(probe, live)
    snapshot = buf.copy()
    status, untouched = probe.forward_status(live, buf, case)
    assert status == expected, capi.status_name(status)
    if expected != capi.OK:
        assert untouched, "a refused call wrote its outputs"
    np.testing.assert_array_equal(buf, snapshot)  # the prepared buffer is only read


def test_buffers_not_prepared_for_the_model_are_refused(probe):
    """Never prepared, prepared for another model (other sizes, other weights, the other
    dtype), or with a damaged tag: CYGRU_ERR_PREPARED, nothing written."""
    x = _x()
    gru = cygru.GRU(3, 18, num_layers=2, seed=1)
    live = probe.Live(gru)
    buf = _prepared(probe, live)

    def refused(prepared, model=live, xs=x):
        status, out, h_n = model.forward(xs, prepared=prepared)
        assert status == capi.ERR_PREPARED, capi.status_name(status)
        assert np.isnan(out).all() and np.isnan(h_n).all()

    refused(_aligned(buf.nbytes))  # zeros: never prepared
    same_sizes = probe.Live(cygru.GRU(3, 18, num_layers=2, seed=2))
    refused(_prepared(probe, same_sizes))  # other weights, same sizes
    for other in (
        cygru.GRU(3, 18, num_layers=3, seed=1),
        cygru.GRU(3, 19, num_layers=2, seed=1),
        cygru.GRU(4, 18, num_layers=2, seed=1),
    ):
        small = _aligned(max(buf.nbytes, probe.Live(other).prepared_size()))
        assert probe.Live(other).prepare(small) == capi.OK
        refused(small)
    # the same model in float64: same sizes and layout of directions, other dtype
    live64 = probe.Live(gru.double())
    buf64 = _prepared(probe, live64)
    refused(buf64)
    refused(buf, model=live64, xs=x.astype(np.float64))
    # a damaged tag (any byte of the first 64)
    for byte in (0, 9, 20, 33, 47, 55):
        bad = buf.copy()
        bad[byte] ^= 0x10
        refused(bad)
    status, out, _ = live.forward(x, prepared=buf)
    assert status == capi.OK


def test_workspace_and_size_queries(probe):
    live = probe.Live(cygru.GRU(8, 64, num_layers=2, seed=0))
    for T, B in [(1, 1), (5, 8)]:
        assert 0 < live.workspace(T, B, True) < live.workspace(T, B, False)
    w = capi.export_weights(cygru.GRU(8, 64, num_layers=2, seed=0))
    assert w.prepared_size() == live.prepared_size()
    # packed W_ih and W_hh of both layers (f32), and the tag
    assert w.prepared_size() >= 4 * 3 * 64 * (8 + 64 + 64 + 64) + 64
    assert w.prepared_workspace_size(1, 1) == live.workspace(1, 1, True)


def test_python_wrappers():
    gru = cygru.GRU(4, 24, num_layers=2, bidirectional=True, seed=0)
    w = capi.export_weights(gru)
    prepared = w.prepare()
    assert prepared.dtype == np.uint8 and not prepared.flags.writeable
    assert prepared.ctypes.data % 64 == 0 and prepared.nbytes == w.prepared_size()
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    out, h_n = w.forward(x, lengths=[5, 2, 4], prepared=prepared)
    ref = gru(x, lengths=[5, 2, 4])
    np.testing.assert_array_equal(out, ref[0])
    np.testing.assert_array_equal(h_n, ref[1])
    other = capi.export_weights(gru)  # the same values, other pointers: not this model's
    with pytest.raises(ValueError, match="ExportedWeights.forward: .*not prepared"):
        other.forward(x, prepared=prepared)
    with pytest.raises(TypeError, match="ExportedWeights.forward: prepared must be"):
        w.forward(x, prepared=[0, 1])
    with pytest.raises(ValueError, match="ExportedWeights.forward: prepared holds 64 bytes"):
        w.forward(x, prepared=prepared[:64])
    with pytest.raises(ValueError, match="prepared_workspace_size"):
        w.prepared_workspace_size(-1, 2)
    out, h_n = w.forward(np.zeros((3, 0, 4), np.float32), prepared=prepared)  # B = 0
    assert out.shape == (3, 0, 48) and h_n.shape == (4, 0, 24)


def test_status_names_of_the_new_codes():
    codes = [capi.ERR_PREPARED_SIZE, capi.ERR_PREPARED]
    assert codes == [10, 11]  # appended: existing values never change
    names = [capi.status_name(c) for c in range(12)]
    assert len(set(names)) == 12 and not any("unknown" in n for n in names)
    assert "model_prepared_size" in names[10] and "not prepared" in names[11]


# ---------------------------------------------------------------------------------------------
# a rough timing of a streaming frame (not an assertion: the machine is shared); run
# `pytest tests/test_prepared.py -k timing -s` to print the medians
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("H, B", [(128, 1), (256, 1), (128, 8)])
def test_timing_of_a_stream_frame(probe, H, B):
    live = probe.Live(cygru.GRU(64, H, num_layers=2, seed=0))
    medians = {}
    for mode in ("model", "prepared", "cells"):
        times = probe.time_frames(live, mode, 300, B)
        assert (times > 0).all()
        medians[mode] = float(np.median(times[50:])) * 1e6
    print(
        f"\n2-layer stream frame, I=64, H={H}, B={B}, float32, medians of 250 frames (µs): "
        + ", ".join(f"{k} {v:.1f}" for k, v in medians.items())
    )
