"""The embedding API: cygru.capi from C, a real downstream extension, and threads.

* A downstream project is built for real, once per session, in a temporary
  directory: the example of ``examples/embedding`` (its own ``setup.py``), plus a
  probe extension written here. Both ``cimport cygru.capi`` with
  ``cythonize(..., include_path=[cygru.get_include()])`` and call the C API
  inside ``with nogil:``; their results are checked against cygru.GRUCell / cygru.GRU.
* The documented recipe of the example after ``pip install -e`` and ``pip install`` of
  cygru into fresh virtual environments, without PYTHONPATH.
* The C API's status codes for bad scalar input and overlapping arrays (nothing
  written on error).
* Threads: every forward and backward releases the GIL; one module called from 8
  threads gives bitwise the serial results; vjp closures from several threads
  accumulate into ``grads`` correctly; the C API is re-entrant.
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import types

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
import cygru.capi as capi
from cygru import _engine
from install_helpers import clean_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "embedding"
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# the downstream build
# ---------------------------------------------------------------------------------------------

PROBE_SETUP = """\
import cygru, numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
setup(name="cygru-capi-probe", ext_modules=cythonize(
    [Extension("cygru_capi_probe", ["cygru_capi_probe.pyx"],
               include_dirs=[numpy.get_include()],
               define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])],
    include_path=[cygru.get_include()], compiler_directives={"language_level": 3}))
"""

# A second downstream module: layer_forward, and every status code, called from C.
PROBE_PYX = r'''
# cython: language_level=3, boundscheck=False, wraparound=False
from libc.stdint cimport uintptr_t
from libc.stdlib cimport malloc, free
cimport numpy as cnp
from cygru cimport capi
import numpy as np

cnp.import_array()


cdef void* ptr(a):
    return NULL if a is None else cnp.PyArray_DATA(a)


def layer(capi.ExportedWeights w, int k, x, h0=None, lengths=None):
    """Layer k of an exported GRU through layer_forward_* (in a nogil block)."""
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = w.hidden_size
    cdef int D = w.num_directions, status
    out = np.full((T, B, D * H), np.nan, w.dtype)
    h_n = np.full((D, B, H), np.nan, w.dtype)
    cdef void* xp = ptr(x)
    cdef void* h0p = ptr(h0)
    cdef const int* lp = <const int*>ptr(lengths)
    cdef void* op = ptr(out)
    cdef void* hp = ptr(h_n)
    cdef size_t n
    cdef void* work
    with nogil:
        if w.model_f32.dirs != NULL:
            n = capi.layer_workspace_size_f32(T, B, I, H, D)
            work = malloc(n)
            status = capi.layer_forward_f32(T, B, I, H, D, <const float*>xp, <const float*>h0p,
                                            lp, w.model_f32.dirs + k * D, w.reset_after,
                                            w.reverse, <float*>op, <float*>hp, work, n)
        else:
            n = capi.layer_workspace_size_f64(T, B, I, H, D)
            work = malloc(n)
            status = capi.layer_forward_f64(T, B, I, H, D, <const double*>xp,
                                            <const double*>h0p, lp, w.model_f64.dirs + k * D,
                                            w.reset_after, w.reverse, <double*>op,
                                            <double*>hp, work, n)
        free(work)
    return status, out, h_n


def cell(capi.ExportedWeights w, x, h=None, inplace=False):
    """One cell_step_* with NULL or given h, out of place or in place."""
    cdef int B = x.shape[0], I = w.input_size, H = w.hidden_size, status
    h_out = h if inplace else np.full((B, H), np.nan, w.dtype)
    cdef void* xp = ptr(x)
    cdef void* hp = ptr(h)
    cdef void* op = ptr(h_out)
    cdef size_t n
    cdef void* work
    with nogil:
        if w.model_f32.dirs != NULL:
            n = capi.cell_workspace_size_f32(B, H)
            work = malloc(n)
            status = capi.cell_step_f32(B, I, H, <const float*>xp, <const float*>hp,
                                        w.model_f32.dirs.w_ih, w.model_f32.dirs.w_hh,
                                        w.model_f32.dirs.b_ih, w.model_f32.dirs.b_hh,
                                        w.reset_after, <float*>op, work, n)
        else:
            n = capi.cell_workspace_size_f64(B, H)
            work = malloc(n)
            status = capi.cell_step_f64(B, I, H, <const double*>xp, <const double*>hp,
                                        w.model_f64.dirs.w_ih, w.model_f64.dirs.w_hh,
                                        w.model_f64.dirs.b_ih, w.model_f64.dirs.b_hh,
                                        w.reset_after, <double*>op, work, n)
        free(work)
    return status, h_out


def sizes():
    """Workspace sizes for valid and invalid arguments."""
    return dict(
        cell_ok=capi.cell_workspace_size_f32(1, 8), cell_ok64=capi.cell_workspace_size_f64(1, 8),
        cell_B0=capi.cell_workspace_size_f32(0, 8),
        cell_Bneg=capi.cell_workspace_size_f32(-1, 8), cell_H0=capi.cell_workspace_size_f64(1, 0),
        layer_ok=capi.layer_workspace_size_f32(5, 2, 3, 4, 2),
        layer_T0=capi.layer_workspace_size_f32(0, 2, 3, 4, 1),
        layer_D3=capi.layer_workspace_size_f64(5, 2, 3, 4, 3),
        layer_I0=capi.layer_workspace_size_f32(5, 2, 0, 4, 1),
        layer_big=capi.layer_workspace_size_f32(1 << 16, 1 << 16, 3, 4, 1),
        model_ok=capi.model_workspace_size_f64(5, 2, 3, 4, 3, 2),
        model_L0=capi.model_workspace_size_f32(5, 2, 3, 4, 0, 1),
        model_Hbig=capi.model_workspace_size_f32(5, 2, 3, 1 << 29, 1, 2),
    )


def message(int status):
    return capi.status_message(status).decode()


def cell_status(str case, int B=2, int I=3, int H=4):
    """cell_step_f32 on valid buffers (sized for max(B, 1) etc.) with one thing wrong."""
    # (invalid sizes must be rejected before any memory is touched: buffers stay small)
    cdef int nb = max(B, 1), ni = max(I, 1), nh = min(max(H, 1), 64)
    buf = np.zeros(nb * ni + 2 * nb * nh + 16, np.float32)
    w_ih = np.zeros(3 * nh * ni, np.float32)
    w_hh = np.zeros(3 * nh * nh, np.float32)
    out = np.full(nb * nh + 16, 7.0, np.float32)
    cdef float* x = <float*>ptr(buf)
    cdef float* h = x + nb * ni
    cdef float* o = <float*>ptr(out)
    cdef const float* wi = <const float*>ptr(w_ih)
    cdef const float* wh = <const float*>ptr(w_hh)
    cdef size_t n = capi.cell_workspace_size_f32(B, H) + 64
    cdef char* work = <char*>malloc(n + 8)
    cdef char* wp = work
    cdef size_t wn = n
    if case == "null_x":
        x = NULL
    elif case == "null_w":
        wh = NULL
    elif case == "null_out":
        o = NULL
    elif case == "null_work":
        wp = NULL
    elif case == "small_work":
        wn = capi.cell_workspace_size_f32(B, H) - 1
    elif case == "misaligned":
        wp = work + 4
    elif case == "alias_x":
        o = x + 1
    elif case == "alias_h":
        o = h + 1
    elif case == "inplace":
        o = h
    elif case == "null_h":
        h = NULL
    status = capi.cell_step_f32(B, I, H, x, h, wi, wh, NULL, NULL, 1, o, wp, wn)
    free(work)
    return status, bool((out == 7.0).all())


def layer_status(str case, int T=4, int B=3, int I=2, int H=5, int D=1, int reverse=0,
                 lengths=None):
    """layer_forward_f32 on valid buffers with one thing wrong; returns
    (status, whether output and h_n were left untouched)."""
    cdef int nt = max(T, 1), nb = max(B, 1), ni = max(I, 1), nh = max(H, 1)
    cdef int nd = min(max(D, 1), 2), wsz = 3 * nh * max(ni, nh)
    x = np.ones(nt * nb * ni, np.float32)
    h0 = np.zeros(nd * nb * nh, np.float32)
    w = np.full(4 * wsz, 0.01, np.float32)
    out = np.full(nt * nb * nd * nh, 7.0, np.float32)
    h_n = np.full(nd * nb * nh, 7.0, np.float32)
    lens = None if lengths is None else np.asarray(lengths, np.intc)
    cdef capi.cygru_direction_f32 dirs[2]
    cdef float* wp = <float*>ptr(w)
    cdef int d
    for d in range(2):
        dirs[d].w_ih = wp + d * 2 * wsz
        dirs[d].w_hh = wp + d * 2 * wsz + wsz
        dirs[d].b_ih = NULL
        dirs[d].b_hh = NULL
    cdef const float* xp = <const float*>ptr(x)
    cdef const float* h0p = <const float*>ptr(h0)
    cdef float* op = <float*>ptr(out)
    cdef float* hp = <float*>ptr(h_n)
    cdef const int* lp = <const int*>ptr(lens)
    cdef size_t n = capi.layer_workspace_size_f32(nt, nb, ni, nh, nd) + 64
    cdef char* work = <char*>malloc(n + 8)
    cdef char* wk = work
    cdef size_t wn = n
    if case == "null_x":
        xp = NULL
    elif case == "null_out":
        op = NULL
    elif case == "null_weights":
        dirs[0].w_hh = NULL
    elif case == "small_work":
        wn = capi.layer_workspace_size_f32(T, B, I, H, D) - 1
    elif case == "misaligned":
        wk = work + 4
    elif case == "alias_out_x":
        op = <float*>xp
    elif case == "alias_hn_out":
        hp = op + 1
    elif case == "hn_is_h0":
        hp = <float*>h0p
    elif case == "hn_overlaps_h0":
        hp = <float*>h0p + 1
    status = capi.layer_forward_f32(T, B, I, H, D, xp, h0p, lp, dirs, 1, reverse, op, hp,
                                    wk, wn)
    free(work)
    return status, bool((out == 7.0).all() and (h_n == 7.0).all())


def model_status(capi.ExportedWeights w, str case, int T=4, int B=2, lengths=None):
    """model_forward_f32 of an exported float32 GRU with one thing wrong."""
    cdef capi.cygru_model_f32 m = w.model_f32
    cdef capi.cygru_direction_f32 bad[8]
    cdef int LD = m.num_layers * m.num_directions, k
    x = np.ones((max(T, 1), max(B, 1), m.input_size), np.float32)
    out = np.full((max(T, 1), max(B, 1), m.num_directions * m.hidden_size), 7.0, np.float32)
    h_n = np.full((LD, max(B, 1), m.hidden_size), 7.0, np.float32)
    lens = None if lengths is None else np.asarray(lengths, np.intc)
    cdef const capi.cygru_model_f32* mp = &m
    cdef size_t n = capi.model_workspace_size_f32(max(T, 1), max(B, 1), m.input_size,
                                                  m.hidden_size, m.num_layers,
                                                  m.num_directions)
    cdef void* work = malloc(n)
    if case == "null_model":
        mp = NULL
    elif case == "null_dirs":
        m.dirs = NULL
    elif case == "L0":
        m.num_layers = 0
    elif case == "D3":
        m.num_directions = 3
    elif case == "H0":
        m.hidden_size = 0
    elif case == "I0":
        m.input_size = 0
    elif case == "reverse_bi":
        m.reverse = 1
    elif case == "null_layer_weight":
        for k in range(LD):
            bad[k] = m.dirs[k]
        bad[LD - 1].w_ih = NULL
        m.dirs = bad
    status = capi.model_forward_f32(mp, T, B, <const float*>ptr(x), NULL,
                                    <const int*>ptr(lens), <float*>ptr(out), <float*>ptr(h_n),
                                    work, n)
    free(work)
    return status, bool((out == 7.0).all() and (h_n == 7.0).all())


# -- every array of a call in one arena, the workspace or an output moved onto or beside
#    another array (overlap_call); sizes T=3, B=2, I=3, H=4, and L=2, D=2 for "model"

def overlap_layout(str fn, str dtype):
    """[(name, bytes)] of the arrays of a cell_step_* ("cell"), layer_forward_* ("layer",
    D=2) or model_forward_* ("model", L=2, D=2) call, the workspace last."""
    cdef int T = 3, B = 2, I = 3, H = 4, L = 2 if fn == "model" else 1, D = 2, k, ik
    cdef size_t item = sizeof(float) if dtype == "f32" else sizeof(double)
    cdef size_t table = L * D * (sizeof(capi.cygru_direction_f32) if dtype == "f32"
                                 else sizeof(capi.cygru_direction_f64))
    if fn == "cell":
        need = (capi.cell_workspace_size_f32(B, H) if dtype == "f32"
                else capi.cell_workspace_size_f64(B, H))
        return [("x", B * I * item), ("h", B * H * item), ("w_ih", 3 * H * I * item),
                ("w_hh", 3 * H * H * item), ("b_ih", 3 * H * item), ("b_hh", 3 * H * item),
                ("h_out", B * H * item), ("work", need)]
    need = (capi.model_workspace_size_f32(T, B, I, H, L, D) if dtype == "f32"
            else capi.model_workspace_size_f64(T, B, I, H, L, D))
    regions = [("x", T * B * I * item), ("h0", L * D * B * H * item),
               ("lengths", B * sizeof(int)), ("dirs", table)]
    for k in range(L * D):
        ik = I if k < D else D * H
        regions += [(f"w_ih{k}", 3 * H * ik * item), (f"w_hh{k}", 3 * H * H * item),
                    (f"b_ih{k}", 3 * H * item), (f"b_hh{k}", 3 * H * item)]
    return regions + [("output", T * B * D * H * item), ("h_n", L * D * B * H * item),
                      ("work", need)]


cdef inline char* at(char* base, dict offsets, str name):
    return base + <Py_ssize_t>offsets[name]


def overlap_call(str fn, str dtype, str mover, str target, str place):
    """One call with every array in one 64-byte-aligned arena, `mover` (``"work"`` or an
    output) placed by `place` relative to `target`: ``"start"`` its first bytes on
    target's last (at most 8), ``"end"`` its last bytes on target's first (at least
    one), ``"before"`` / ``"after"`` right beside it (no overlap), ``"home"`` its own
    slot; offsets are multiples of 8 bytes.
    Arrays are a gap apart that any mover fits in, so a mover touches only its target.
    Returns (status, arena before, arena after, {name: offset}, {name: bytes})."""
    cdef int T = 3, B = 2, I = 3, H = 4, L = 2 if fn == "model" else 1, D = 2, k, status
    regions = overlap_layout(fn, dtype)
    sizes = dict(regions)
    gap = (max(sizes.values()) + 63) // 64 * 64 + 64
    offsets = {}
    end = gap
    for name, n in regions:
        offsets[name] = end
        end = (end + n + 63) // 64 * 64 + gap
    raw = np.zeros(end + 64, np.uint8)
    arena = raw[(-raw.ctypes.data) % 64:][:end]
    ftype = np.float32 if dtype == "f32" else np.float64
    rng = np.random.default_rng(0)
    for name, n in regions:
        part = arena[offsets[name]:offsets[name] + n]
        if name == "lengths":
            part.view(np.intc)[:] = [T, 1]
        elif name == "work":
            part[:] = 0x55
        elif name in ("h_out", "output", "h_n"):
            part.view(ftype)[:] = 7.0
        elif name != "dirs":
            part.view(ftype)[:] = rng.uniform(-0.5, 0.5, n // ftype().itemsize)
    if place == "start":
        offsets[mover] = (offsets[target] + sizes[target] - 1) // 8 * 8
    elif place == "end":
        offsets[mover] = (offsets[target] + 8 - sizes[mover]) // 8 * 8
    elif place == "before":
        offsets[mover] = (offsets[target] - sizes[mover]) // 8 * 8
    elif place == "after":
        offsets[mover] = (offsets[target] + sizes[target] + 7) // 8 * 8
    cdef char* base = <char*>cnp.PyArray_DATA(arena)
    cdef capi.cygru_direction_f32* t32 = NULL
    cdef capi.cygru_direction_f64* t64 = NULL
    cdef capi.cygru_model_f32 m32
    cdef capi.cygru_model_f64 m64
    cdef void* work = at(base, offsets, "work")
    cdef size_t need = sizes["work"]
    if fn != "cell":           # the table of directions, in the arena too
        t32 = <capi.cygru_direction_f32*>at(base, offsets, "dirs")
        t64 = <capi.cygru_direction_f64*>at(base, offsets, "dirs")
        for k in range(L * D):
            if dtype == "f32":
                t32[k].w_ih = <const float*>at(base, offsets, f"w_ih{k}")
                t32[k].w_hh = <const float*>at(base, offsets, f"w_hh{k}")
                t32[k].b_ih = <const float*>at(base, offsets, f"b_ih{k}")
                t32[k].b_hh = <const float*>at(base, offsets, f"b_hh{k}")
            else:
                t64[k].w_ih = <const double*>at(base, offsets, f"w_ih{k}")
                t64[k].w_hh = <const double*>at(base, offsets, f"w_hh{k}")
                t64[k].b_ih = <const double*>at(base, offsets, f"b_ih{k}")
                t64[k].b_hh = <const double*>at(base, offsets, f"b_hh{k}")
    before = arena.copy()
    if fn == "cell" and dtype == "f32":
        status = capi.cell_step_f32(
            B, I, H, <const float*>at(base, offsets, "x"), <const float*>at(base, offsets, "h"),
            <const float*>at(base, offsets, "w_ih"), <const float*>at(base, offsets, "w_hh"),
            <const float*>at(base, offsets, "b_ih"), <const float*>at(base, offsets, "b_hh"),
            1, <float*>at(base, offsets, "h_out"), work, need)
    elif fn == "cell":
        status = capi.cell_step_f64(
            B, I, H, <const double*>at(base, offsets, "x"),
            <const double*>at(base, offsets, "h"), <const double*>at(base, offsets, "w_ih"),
            <const double*>at(base, offsets, "w_hh"), <const double*>at(base, offsets, "b_ih"),
            <const double*>at(base, offsets, "b_hh"), 1, <double*>at(base, offsets, "h_out"),
            work, need)
    elif fn == "layer" and dtype == "f32":
        status = capi.layer_forward_f32(
            T, B, I, H, D, <const float*>at(base, offsets, "x"),
            <const float*>at(base, offsets, "h0"), <const int*>at(base, offsets, "lengths"),
            t32, 1, 0, <float*>at(base, offsets, "output"), <float*>at(base, offsets, "h_n"),
            work, need)
    elif fn == "layer":
        status = capi.layer_forward_f64(
            T, B, I, H, D, <const double*>at(base, offsets, "x"),
            <const double*>at(base, offsets, "h0"), <const int*>at(base, offsets, "lengths"),
            t64, 1, 0, <double*>at(base, offsets, "output"), <double*>at(base, offsets, "h_n"),
            work, need)
    elif dtype == "f32":
        m32 = capi.cygru_model_f32(I, H, L, D, 1, 0, t32)
        status = capi.model_forward_f32(
            &m32, T, B, <const float*>at(base, offsets, "x"),
            <const float*>at(base, offsets, "h0"), <const int*>at(base, offsets, "lengths"),
            <float*>at(base, offsets, "output"), <float*>at(base, offsets, "h_n"), work, need)
    else:
        m64 = capi.cygru_model_f64(I, H, L, D, 1, 0, t64)
        status = capi.model_forward_f64(
            &m64, T, B, <const double*>at(base, offsets, "x"),
            <const double*>at(base, offsets, "h0"), <const int*>at(base, offsets, "lengths"),
            <double*>at(base, offsets, "output"), <double*>at(base, offsets, "h_n"), work, need)
    return status, before, arena.copy(), offsets, sizes
'''


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _built_file(directory, name):
    found = sorted(pathlib.Path(directory).glob(f"{name}*.so")) + sorted(
        pathlib.Path(directory).glob(f"{name}*.pyd")
    )
    assert found, f"no built {name} extension in {directory}"
    return found[0]


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    """The example project of examples/embedding and the probe, built once per session
    with setuptools + Cython against this cygru (subprocesses, run side by side)."""
    import_optional("Cython")
    base = tmp_path_factory.mktemp("downstream")
    example = base / "example"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("build", "*.so", "*.c"))
    probe = base / "probe"
    probe.mkdir()
    (probe / "setup.py").write_text(PROBE_SETUP)
    (probe / "cygru_capi_probe.pyx").write_text(PROBE_PYX)
    env = dict(os.environ)
    # Build against the cygru being tested (the in-place build of this checkout, or the
    # installed one), not another that the environment may hold. This PYTHONPATH selects
    # the cygru to import; the recipe without it is test_embedding_recipe_after_install's.
    cygru_root = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([cygru_root] + [p for p in [env.get("PYTHONPATH")] if p])
    procs = [
        subprocess.Popen(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=d,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for d in (example, probe)
    ]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for d, p, log in zip((example, probe), procs, logs):
        if p.returncode != 0:
            pytest.fail(f"building the downstream extension in {d} failed:\n{log[-6000:]}")
    return types.SimpleNamespace(
        stream=_load(_built_file(example, "stream"), "stream"),
        probe=_load(_built_file(probe, "cygru_capi_probe"), "cygru_capi_probe"),
    )


# ---------------------------------------------------------------------------------------------
# the downstream extension against the Python API
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after, bias", [(True, True), (False, True), (True, False)])
def test_streaming_cell_matches_grucell(downstream, dtype, reset_after, bias):
    """CellStream: one cell_step_* per frame, in place on h, inside `with nogil:`."""
    rng = np.random.default_rng(0)
    cell = cygru.GRUCell(5, 7, bias=bias, reset_after=reset_after, dtype=dtype, seed=1)
    frames = rng.standard_normal((30, 3, 5)).astype(dtype)
    h0 = rng.standard_normal((3, 7)).astype(dtype)
    stream = downstream.stream.CellStream(capi.export_weights(cell), batch=3, h0=h0)
    out = np.empty((30, 3, 7), dtype)
    # frames arrive in blocks of different sizes, and one at a time
    first = stream.push_block(frames[:11], out=out[:11])
    assert first.dtype == dtype
    for t in range(11, 13):
        out[t] = stream.push(frames[t])
    last = stream.push_block(frames[13:], out=out[13:])
    h = h0
    for t in range(30):
        h = cell(frames[t], h)
        np.testing.assert_allclose(out[t], h, **_tol(dtype))
    np.testing.assert_array_equal(last, out[-1])
    np.testing.assert_array_equal(stream.h, out[-1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_streaming_gru_frames_equal_whole_sequence(downstream, dtype):
    """A one-layer GRU stepped frame by frame gives GRU's output over the sequence."""
    rng = np.random.default_rng(1)
    gru = cygru.GRU(6, 9, dtype=dtype, seed=2)
    x = rng.standard_normal((40, 2, 6)).astype(dtype)
    output, h_n = gru(x)
    stream = downstream.stream.CellStream(capi.export_weights(gru), batch=2)
    out = np.empty_like(output)
    stream.push_block(x, out=out)
    np.testing.assert_allclose(out, output, **_tol(dtype))
    np.testing.assert_allclose(stream.h, h_n[0], **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "layers, bidirectional, reset_after, bias, reverse",
    [
        (1, False, True, True, False),
        (2, True, True, True, False),
        (3, True, False, True, False),
        (3, False, True, False, False),
        (1, False, False, True, True),
    ],
)
def test_sequence_forward_matches_gru(
    downstream, dtype, layers, bidirectional, reset_after, bias, reverse
):
    """run_sequence: one model_forward_* (sort in C, nogil) == GRU(x, h0, lengths)."""
    rng = np.random.default_rng(2)
    gru = cygru.GRU(
        5,
        8,
        layers,
        bias=bias,
        bidirectional=bidirectional,
        reset_after=reset_after,
        reverse=reverse,
        dtype=dtype,
        seed=3,
    )
    T, B, D = 9, 6, gru.num_directions
    x = rng.standard_normal((T, B, 5)).astype(dtype)
    h0 = rng.standard_normal((layers * D, B, 8)).astype(dtype)
    lengths = np.array([3, 9, 1, 9, 5, 3])  # ties, unsorted, 1 and T
    w = capi.export_weights(gru)
    for args in [(x, None, None), (x, h0, None), (x, h0, lengths), (x, None, lengths)]:
        out, h_n = downstream.stream.run_sequence(w, *args)
        ref_out, ref_h_n = gru(*args)
        np.testing.assert_allclose(out, ref_out, **_tol(dtype))
        np.testing.assert_allclose(h_n, ref_h_n, **_tol(dtype))
        if args[2] is not None:
            for b, L in enumerate(lengths):
                assert (out[L:, b] == 0).all()
        # PyTorch's identities, bit for bit
        if D == 1 and args[2] is None:
            np.testing.assert_array_equal(out[0 if reverse else -1], h_n[-1])
        if D == 2 and args[2] is None:
            np.testing.assert_array_equal(out[-1, :, :8], h_n[-2])
            np.testing.assert_array_equal(out[0, :, 8:], h_n[-1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_forward_chains_to_the_model(downstream, dtype):
    """layer_forward_* on dirs + k*D, layer by layer, reproduces the 2-layer GRU."""
    rng = np.random.default_rng(3)
    gru = cygru.GRU(4, 6, 2, bidirectional=True, dtype=dtype, seed=4)
    x = rng.standard_normal((7, 5, 4)).astype(dtype)
    h0 = rng.standard_normal((4, 5, 6)).astype(dtype)
    lengths = np.array([7, 2, 5, 5, 1], np.intc)
    w = capi.export_weights(gru)
    st0, out0, hn0 = downstream.probe.layer(w, 0, x, np.ascontiguousarray(h0[:2]), lengths)
    st1, out1, hn1 = downstream.probe.layer(w, 1, out0, np.ascontiguousarray(h0[2:]), lengths)
    assert st0 == st1 == capi.OK
    ref_out, ref_h_n = gru(x, h0, lengths)
    np.testing.assert_allclose(out1, ref_out, **_tol(dtype))
    np.testing.assert_allclose(np.concatenate([hn0, hn1]), ref_h_n, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cell_step_null_h_and_in_place(downstream, dtype):
    rng = np.random.default_rng(4)
    cell = cygru.GRUCell(3, 5, dtype=dtype, seed=5)
    w = capi.export_weights(cell)
    x = rng.standard_normal((4, 3)).astype(dtype)
    h = rng.standard_normal((4, 5)).astype(dtype)
    status, h1 = downstream.probe.cell(w, x, None)  # NULL h: zeros
    assert status == capi.OK
    np.testing.assert_allclose(h1, cell(x), **_tol(dtype))
    status, h2 = downstream.probe.cell(w, x, h)
    h_inplace = h.copy()
    status_ip, _ = downstream.probe.cell(w, x, h_inplace, inplace=True)
    assert status == status_ip == capi.OK
    np.testing.assert_array_equal(h_inplace, h2)  # in place == out of place
    np.testing.assert_allclose(h2, cell(x, h), **_tol(dtype))


DOT_MAX_B = _engine.DOT_MAX_BATCH


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after, bias", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("B", [1, DOT_MAX_B])
def test_c_api_steps_are_bit_identical_to_gru(downstream, dtype, reset_after, bias, B):
    """At most DOT_MAX_B rows: chained cell_step_*, layer_forward_* and model_forward_*
    calls with T = 1, GRUCell steps and one GRU call over the same frames give the same
    bits (one engine, one kernel; no BLAS)."""
    rng = np.random.default_rng(B)
    I, H, T = 70, 33, 6  # I > H: cell_workspace_size(B, H) serves any input size
    gru = cygru.GRU(I, H, bias=bias, reset_after=reset_after, dtype=dtype, seed=8)
    cell = cygru.GRUCell(I, H, bias=bias, reset_after=reset_after, dtype=dtype)
    cell.load_state_dict({k[:-3]: v for k, v in gru.state_dict().items()})
    w = capi.export_weights(gru)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((1, B, H)).astype(dtype)
    whole, h_n = gru(x, h0)
    h_cell, h_step, h_layer, h_model = h0[0], h0[0].copy(), h0, h0
    for t in range(T):
        status, h_step = downstream.probe.cell(w, np.ascontiguousarray(x[t]), h_step)
        assert status == capi.OK
        status, out_l, h_layer = downstream.probe.layer(w, 0, x[t : t + 1], h_layer)
        assert status == capi.OK
        out_m, h_model = downstream.stream.run_sequence(w, x[t : t + 1], h_model)
        h_cell = cell(x[t], h_cell)
        for got in (h_step, out_l[0], out_m[0], h_cell):
            np.testing.assert_array_equal(got, whole[t])
    np.testing.assert_array_equal(h_model, h_n)
    # in place on h, and from a NULL h
    h_inplace = h0[0].copy()
    status, _ = downstream.probe.cell(w, np.ascontiguousarray(x[0]), h_inplace, inplace=True)
    np.testing.assert_array_equal(h_inplace, whole[0])
    status, h_null = downstream.probe.cell(w, np.ascontiguousarray(x[0]), None)
    np.testing.assert_array_equal(h_null, gru(x[:1])[0][0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_layer_stream_through_model_forward_is_the_gru(downstream, dtype):
    """A 2-layer model streamed a frame at a time through model_forward_* (T = 1,
    chaining h_n) gives the bits of one GRU call over the sequence."""
    rng = np.random.default_rng(9)
    gru = cygru.GRU(16, 24, 2, dtype=dtype, seed=9)
    w = capi.export_weights(gru)
    x = rng.standard_normal((10, 1, 16)).astype(dtype)
    whole, h_n = gru(x)
    h = None
    for t in range(10):
        out, h = downstream.stream.run_sequence(w, x[t : t + 1], h)
        np.testing.assert_array_equal(out[0], whole[t])
    np.testing.assert_array_equal(h, h_n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_c_api_large_batch_steps(downstream, dtype):
    """Above DOT_MAX_B rows: layer_forward_* and model_forward_* with T = 1 still give a
    GRU call's bits; cell_step_* (whose workspace cannot hold packed weights: its size
    has no input size) takes the BLAS path, equal within rounding only (docs/embedding)."""
    rng = np.random.default_rng(10)
    B = DOT_MAX_B + 3
    gru = cygru.GRU(12, 20, dtype=dtype, seed=10)
    w = capi.export_weights(gru)
    x = rng.standard_normal((3, B, 12)).astype(dtype)
    whole, _ = gru(x)
    h_step, h_layer, h_model = None, None, None
    for t in range(3):
        status, h_step = downstream.probe.cell(w, np.ascontiguousarray(x[t]), h_step)
        assert status == capi.OK
        status, out_l, h_layer = downstream.probe.layer(w, 0, x[t : t + 1], h_layer)
        out_m, h_model = downstream.stream.run_sequence(w, x[t : t + 1], h_model)
        np.testing.assert_array_equal(out_l[0], whole[t])
        np.testing.assert_array_equal(out_m[0], whole[t])
        np.testing.assert_allclose(h_step, whole[t], **_tol(dtype))


def test_c_api_from_threads_is_reentrant(downstream):
    """8 threads running model_forward (own workspaces, shared weights) at once."""
    rng = np.random.default_rng(5)
    gru = cygru.GRU(8, 16, 2, bidirectional=True, seed=6)
    w = capi.export_weights(gru)
    xs = [rng.standard_normal((12, 3, 8)).astype(np.float32) for _ in range(16)]
    lengths = np.array([12, 4, 9])
    serial = [downstream.stream.run_sequence(w, x, None, lengths) for x in xs]
    results = {}
    barrier = threading.Barrier(8)

    def work(tid):
        barrier.wait()
        for rep in range(25):
            i = (tid + rep) % len(xs)
            results[(tid, rep)] = (i, downstream.stream.run_sequence(w, xs[i], None, lengths))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    for i, (out, h_n) in results.values():
        np.testing.assert_array_equal(out, serial[i][0])
        np.testing.assert_array_equal(h_n, serial[i][1])


# ---------------------------------------------------------------------------------------------
# status codes
# ---------------------------------------------------------------------------------------------


def test_workspace_sizes(downstream):
    s = downstream.probe.sizes()
    assert s["cell_ok"] > 0 and s["cell_ok64"] > s["cell_ok"] and s["cell_B0"] > 0
    assert s["layer_ok"] > 0 and s["model_ok"] > 0
    for bad in (
        "cell_Bneg",
        "cell_H0",
        "layer_T0",
        "layer_D3",
        "layer_I0",
        "layer_big",
        "model_L0",
        "model_Hbig",
    ):
        assert s[bad] == 0, bad


@pytest.mark.parametrize(
    "case, expected",
    [
        ("ok", capi.OK),
        ("null_h", capi.OK),
        ("inplace", capi.OK),
        ("null_x", capi.ERR_NULL),
        ("null_w", capi.ERR_NULL),
        ("null_out", capi.ERR_NULL),
        ("null_work", capi.ERR_WORKSPACE),
        ("small_work", capi.ERR_WORKSPACE),
        ("misaligned", capi.ERR_ALIGN),
        ("alias_x", capi.ERR_ALIAS),
        ("alias_h", capi.ERR_ALIAS),
    ],
)
def test_cell_step_status(downstream, case, expected):
    status, untouched = downstream.probe.cell_status(case)
    assert status == expected, downstream.probe.message(status)
    if expected != capi.OK:
        assert untouched


@pytest.mark.parametrize("B, I, H", [(-1, 3, 4), (2, 0, 4), (2, 3, 0), (2, 3, -5), (2, 3, 1 << 29)])
def test_cell_step_bad_sizes(downstream, B, I, H):
    status, untouched = downstream.probe.cell_status("ok", B, I, H)
    assert status == capi.ERR_SIZE and untouched


def test_cell_step_empty_batch(downstream):
    assert downstream.probe.cell_status("ok", 0, 3, 4) == (capi.OK, True)


@pytest.mark.parametrize(
    "case, kwargs, expected",
    [
        ("ok", {}, capi.OK),
        ("ok", dict(D=2, lengths=[4, 1, 3]), capi.OK),
        ("hn_is_h0", dict(D=2), capi.OK),
        ("ok", dict(B=0), capi.OK),
        ("ok", dict(T=0), capi.ERR_SIZE),
        ("ok", dict(B=-1), capi.ERR_SIZE),
        ("ok", dict(I=0), capi.ERR_SIZE),
        ("ok", dict(H=0), capi.ERR_SIZE),
        ("ok", dict(D=0), capi.ERR_SIZE),
        ("ok", dict(D=3), capi.ERR_SIZE),
        ("ok", dict(T=1 << 16, B=1 << 16), capi.ERR_SIZE),  # T*B overflows BLAS's int
        ("ok", dict(D=2, reverse=1), capi.ERR_FLAGS),
        ("ok", dict(lengths=[4, 0, 2]), capi.ERR_LENGTH),
        ("ok", dict(lengths=[4, 5, 2]), capi.ERR_LENGTH),
        ("ok", dict(lengths=[-3, 1, 2]), capi.ERR_LENGTH),
        ("null_x", {}, capi.ERR_NULL),
        ("null_out", {}, capi.ERR_NULL),
        ("null_weights", {}, capi.ERR_NULL),
        ("small_work", {}, capi.ERR_WORKSPACE),
        ("misaligned", {}, capi.ERR_ALIGN),
        ("alias_out_x", {}, capi.ERR_ALIAS),
        ("alias_hn_out", {}, capi.ERR_ALIAS),
        ("hn_overlaps_h0", {}, capi.ERR_ALIAS),
    ],
)
def test_layer_forward_status(downstream, case, kwargs, expected):
    status, untouched = downstream.probe.layer_status(case, **kwargs)
    assert status == expected, downstream.probe.message(status)
    if expected != capi.OK:
        assert untouched, "an invalid call wrote its outputs"


@pytest.mark.parametrize(
    "case, kwargs, expected",
    [
        ("ok", {}, capi.OK),
        ("ok", dict(lengths=[4, 2]), capi.OK),
        ("null_model", {}, capi.ERR_NULL),
        ("null_dirs", {}, capi.ERR_NULL),
        ("null_layer_weight", {}, capi.ERR_NULL),
        ("L0", {}, capi.ERR_SIZE),
        ("D3", {}, capi.ERR_SIZE),
        ("H0", {}, capi.ERR_SIZE),
        ("I0", {}, capi.ERR_SIZE),
        ("reverse_bi", {}, capi.ERR_FLAGS),
        ("ok", dict(T=0), capi.ERR_SIZE),
        ("ok", dict(B=-2), capi.ERR_SIZE),
        ("ok", dict(lengths=[4, 5]), capi.ERR_LENGTH),
    ],
)
def test_model_forward_status(downstream, case, kwargs, expected):
    w = capi.export_weights(cygru.GRU(3, 4, 2, bidirectional=True, seed=0))
    status, untouched = downstream.probe.model_status(w, case, **kwargs)
    assert status == expected, downstream.probe.message(status)
    if expected != capi.OK:
        assert untouched


# What each argument may not share memory with: the workspace nothing (its bytes are
# written first), an output no input, weight or other output.
OVERLAP_MOVERS = [
    ("cell", "work"),
    ("cell", "h_out"),
    ("layer", "work"),
    ("layer", "output"),
    ("layer", "h_n"),
    ("model", "work"),
    ("model", "output"),
    ("model", "h_n"),
]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("fn, mover", OVERLAP_MOVERS)
def test_overlapping_arguments_status(downstream, fn, mover, dtype):
    """The workspace (or an output) on, or right beside, every other argument array of
    cell_step_* / layer_forward_* / model_forward_* (x, h/h0, lengths, the table of
    directions, every weight and bias of every layer and direction with its own size,
    the outputs, the workspace): an overlap by a single byte at either end is
    CYGRU_ERR_WORKSPACE_ALIAS (the workspace is involved) or CYGRU_ERR_ALIAS, with no
    byte of the arena written; beside it, the call succeeds, gives the results of the
    usual layout and writes nothing but its outputs and workspace."""
    probe = downstream.probe
    ftype = np.float32 if dtype == "f32" else np.float64
    names = [name for name, _ in probe.overlap_layout(fn, dtype)]
    outputs = {"cell": ["h_out"]}.get(fn, ["output", "h_n"])
    status, _, home, home_at, sizes = probe.overlap_call(fn, dtype, mover, mover, "home")
    assert status == capi.OK, probe.message(status)

    def part(arena, offset, name):
        return arena[offset : offset + sizes[name]].view(ftype)

    failures = []
    for target in names:
        if target == mover:
            continue
        expected = capi.ERR_WORKSPACE_ALIAS if "work" in (mover, target) else capi.ERR_ALIAS
        for place in ("start", "end", "before", "after"):
            status, before, after, at, _ = probe.overlap_call(fn, dtype, mover, target, place)
            case = f"{mover} {place} of {target}"
            if place in ("start", "end"):
                if status != expected:
                    failures.append(
                        f"{case}: status {status} ({probe.message(status)}), expected {expected}"
                    )
                if not np.array_equal(before, after):
                    failures.append(f"{case}: status {status} but bytes were written")
                continue
            if status != capi.OK:
                failures.append(f"{case} (no overlap): status {status} ({probe.message(status)})")
                continue
            writable = np.zeros(len(before), bool)
            for name in outputs + ["work"]:
                writable[at[name] : at[name] + sizes[name]] = True
            if not np.array_equal(before[~writable], after[~writable]):
                failures.append(f"{case} (no overlap): wrote outside its outputs and workspace")
            for name in outputs:
                if not np.allclose(
                    part(after, at[name], name),
                    part(home, home_at[name], name),
                    rtol=1e-5,
                    atol=1e-6,
                ):
                    failures.append(f"{case} (no overlap): {name} differs from the usual layout")
    assert not failures, "\n".join(failures)


def test_status_messages(downstream):
    codes = [
        capi.OK,
        capi.ERR_SIZE,
        capi.ERR_NULL,
        capi.ERR_LENGTH,
        capi.ERR_FLAGS,
        capi.ERR_ALIAS,
        capi.ERR_WORKSPACE,
        capi.ERR_ALIGN,
        capi.ERR_WORKSPACE_ALIAS,
        capi.ERR_WORKSPACE_BUSY,
    ]
    assert codes == list(range(10))  # values are ABI: only ever added to
    messages = [downstream.probe.message(c) for c in codes]
    assert len(set(messages)) == len(messages)
    assert messages == [capi.status_name(c) for c in codes]
    assert "unknown" in capi.status_name(99)


# ---------------------------------------------------------------------------------------------
# one workspace shared by concurrent calls: CYGRU_ERR_WORKSPACE_BUSY, never a hang (issue 23.11)
# ---------------------------------------------------------------------------------------------


def _ctypes_api():
    """The table through the ctypes mirror of examples/c_extension (ctypes releases the
    GIL during each call, so Python threads run the C calls at once)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ctypes_call", ROOT / "examples" / "c_extension" / "ctypes_call.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_api()


def _model_call(api, weights, x, lengths, work, n):
    """model_forward_f32 into fresh NaN outputs: (status, output, h_n)."""
    T, B, _ = x.shape
    out = np.full((T, B, weights.num_directions * weights.hidden_size), np.nan, np.float32)
    h_n = np.full(
        (weights.num_layers * weights.num_directions, B, weights.hidden_size), np.nan, np.float32
    )
    status = api.model_forward_f32(
        weights.address,
        T,
        B,
        x.ctypes.data,
        None,
        lengths.ctypes.data,
        out.ctypes.data,
        h_n.ctypes.data,
        work,
        n,
    )
    return status, out, h_n


def test_workspace_in_use_is_busy():
    """While a workspace's bytes are in use (held by the test hook exactly as a running
    call holds them), a call on them, or on bytes overlapping them by one, returns
    CYGRU_ERR_WORKSPACE_BUSY at once and writes nothing; bytes right beside them are
    free; after the release the same call succeeds. The same for cell_step_f32."""
    api = _ctypes_api()
    gru = cygru.GRU(4, 6, num_layers=2, bidirectional=True, seed=0)
    weights = capi.export_weights(gru)
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    lengths = np.array([5, 2, 4], np.intc)
    n = api.model_workspace_size_f32(5, 3, 4, 6, 2, 2)
    arena = np.zeros(3 * n + 64, np.uint8)
    base = (arena.ctypes.data + 63) // 64 * 64 + n  # room on both sides
    ref_out, ref_hn = gru(x, lengths=lengths)
    release = capi._hold_workspace(base, n)
    try:
        for work in (base, base - n + 8, base + n - 8):
            status, out, h_n = _model_call(api, weights, x, lengths, work, n)
            assert status == capi.ERR_WORKSPACE_BUSY, (work - base, status)
            assert np.isnan(out).all() and np.isnan(h_n).all()
        for work in (base - n, base + n):  # beside, not overlapping: free
            status, out, _ = _model_call(api, weights, x, lengths, work, n)
            assert status == capi.OK and np.allclose(out, ref_out, atol=1e-6)
        # cell_step_f32 on the held bytes
        rng = np.random.default_rng(2)
        w_ih, w_hh = (rng.standard_normal(s).astype(np.float32) for s in ((18, 4), (18, 6)))
        h_out = np.full((3, 6), np.nan, np.float32)
        cell_args = (3, 4, 6, x[0].ctypes.data, None, w_ih.ctypes.data, w_hh.ctypes.data)
        cell_args += (None, None, 1, h_out.ctypes.data)
        cell_n = api.cell_workspace_size_f32(3, 6)
        status = api.cell_step_f32(*cell_args, base, cell_n)
        assert status == capi.ERR_WORKSPACE_BUSY and np.isnan(h_out).all()
        with pytest.raises(ValueError, match="already in use"):
            capi._hold_workspace(base + 16, 8)
    finally:
        release()
    release()  # a second release does nothing
    status, out, h_n = _model_call(api, weights, x, lengths, base, n)
    assert status == capi.OK
    np.testing.assert_allclose(out, ref_out, atol=1e-6)
    np.testing.assert_allclose(h_n, ref_hn, atol=1e-6)
    assert api.cell_step_f32(*cell_args, base, cell_n) == capi.OK
    assert np.isfinite(h_out).all()
    msg = api.status_message(capi.ERR_WORKSPACE_BUSY).decode()
    assert msg == capi.status_name(capi.ERR_WORKSPACE_BUSY) and "in use" in msg


_SHARED_WORKSPACE_SCRIPT = r"""
import sys, threading
import numpy as np
import cygru, cygru.capi as capi
sys.path.insert(0, "tests")
from test_embedding import _ctypes_api, _model_call

api = _ctypes_api()
gru = cygru.GRU(16, 64, num_layers=2, bidirectional=True, seed=0)
weights = capi.export_weights(gru)
rng = np.random.default_rng(1)
xs = [rng.standard_normal((30, 4, 16)).astype(np.float32) for _ in range(4)]
lengths = np.array([30, 7, 19, 1], np.intc)
n = api.model_workspace_size_f32(30, 4, 16, 64, 2, 2)
own = np.empty(n, np.uint8)
serial = [_model_call(api, weights, x, lengths, own.ctypes.data, n) for x in xs]
assert all(s[0] == capi.OK for s in serial)
shared = np.empty(n, np.uint8)                # ONE workspace for all threads
results = []
barrier = threading.Barrier(8)

def work(tid):
    barrier.wait()
    for rep in range(40):
        i = (tid + rep) % len(xs)
        results.append((i,) + _model_call(api, weights, xs[i], lengths, shared.ctypes.data, n))

threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ok = busy = 0
for i, status, out, h_n in results:
    if status == capi.OK:
        assert np.array_equal(out, serial[i][1]) and np.array_equal(h_n, serial[i][2])
        ok += 1
    else:
        assert status == capi.ERR_WORKSPACE_BUSY, status
        assert np.isnan(out).all() and np.isnan(h_n).all()
        busy += 1
print("RESULT", ok, busy)
"""


def test_shared_workspace_from_threads_never_hangs():
    """8 threads x 40 model_forward_f32 calls on ONE workspace (which the docs forbid;
    before, the engine's counters reset by one call left another waiting forever): in a
    fresh interpreter under a timeout, every call either succeeds with the serial
    result bit for bit or returns CYGRU_ERR_WORKSPACE_BUSY with its outputs untouched.
    A busy status means another call held the workspace, and that call succeeds, so at
    least one call does."""
    try:
        r = subprocess.run(
            [sys.executable, "-c", _SHARED_WORKSPACE_SCRIPT],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:  # pragma: no cover - the regression itself
        pytest.fail("threads sharing one workspace hung")
    assert r.returncode == 0, r.stdout + r.stderr
    ok, busy = map(int, r.stdout.split("RESULT")[1].split())
    assert ok + busy == 320 and ok >= 1


_FORK_DURING_C_CALLS_SCRIPT = r"""
import os, sys, threading, time
import numpy as np
import cygru, cygru.capi as capi
sys.path.insert(0, "tests")
from test_embedding import _ctypes_api, _model_call

api = _ctypes_api()
weights = capi.export_weights(cygru.GRU(16, 64, num_layers=2, bidirectional=True, seed=0))
x = np.random.default_rng(1).standard_normal((30, 4, 16)).astype(np.float32)
lengths = np.array([30, 7, 19, 1], np.intc)
n = api.model_workspace_size_f32(30, 4, 16, 64, 2, 2)
shared = np.empty(n, np.uint8)
status, ref_out, ref_hn = _model_call(api, weights, x, lengths, shared.ctypes.data, n)
assert status == capi.OK
stop = threading.Event()

def busy():                                   # holds `shared` in use most of the time
    while not stop.is_set():
        assert _model_call(api, weights, x, lengths, shared.ctypes.data, n)[0] == capi.OK

t = threading.Thread(target=busy)
t.start()
try:
    for i in range(8):
        time.sleep(0.003 * i)
        pid = os.fork()
        if pid == 0:   # the parent's other thread does not exist here: the workspace is free
            code = 1
            try:
                s, out, h_n = _model_call(api, weights, x, lengths, shared.ctypes.data, n)
                code = 0 if (s == capi.OK and np.array_equal(out, ref_out)
                             and np.array_equal(h_n, ref_hn)) else 2
            finally:
                os._exit(code)
        for _ in range(1200):
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(st) == 0, st
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            raise SystemExit("HANG: a forked child's C API call did not return in 60 s")
finally:
    stop.set()
    t.join()
print("DONE")
"""


def test_fork_during_c_calls_frees_the_childs_workspaces():
    """Forks made while another thread is running C API calls on a workspace: in each child
    (which has no such thread) a call on that workspace succeeds with the right result,
    neither busy nor blocked on the list's lock; in a subprocess under a timeout."""
    try:
        r = subprocess.run(
            [sys.executable, "-c", _FORK_DURING_C_CALLS_SCRIPT],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired:  # pragma: no cover - a regression
        pytest.fail("a fork during C API calls hung")
    assert r.returncode == 0 and "DONE" in r.stdout, r.stdout + r.stderr


_RELEASE_IN_FORKED_CHILD_SCRIPT = r"""
import os, sys, threading
import numpy as np
import cygru, cygru.capi as capi

arena = np.zeros(8192, np.uint8)
base = arena.ctypes.data
held = {}

def hold_on_a_thread(name, offset):          # an entry made on another thread of the parent
    t = threading.Thread(target=lambda: held.update({name: capi._hold_workspace(base + offset, 64)}))
    t.start()
    t.join()

hold_on_a_thread("a", 0)
hold_on_a_thread("b", 1024)                  # the list's head, linked to a
gru = cygru.GRU(3, 4, seed=0)
weights = capi.export_weights(gru)
x = np.ones((2, 1, 3), np.float32)
pid = os.fork()
if pid == 0:
    code = 10
    try:
        release_c = capi._hold_workspace(base + 2048, 64)   # the child's own entry
        held["b"]()   # claimed before the fork: in no list here, so the child's is untouched
        code = 11
        capi._hold_workspace(base, 64)()     # a's bytes: free in the child
        code = 12
        try:
            capi._hold_workspace(base + 2048 + 8, 8)
        except ValueError:                   # c is still held
            code = 13
            held["a"]()
            release_c()
            capi._hold_workspace(base + 2048, 64)()      # c's bytes free after its release
            code = 14
            out, _ = weights.forward(x)      # a call claims and releases its own entry
            code = 0 if np.allclose(out, gru(x)[0], atol=1e-6) else 15
    finally:
        os._exit(code)
done, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status))
# the parent's list is its own: a and b still held, released normally
for offset in (0, 1024):
    try:
        capi._hold_workspace(base + offset + 8, 8)
        raise SystemExit("the parent's entry was lost")
    except ValueError:
        pass
held["a"]()
held["b"]()
capi._hold_workspace(base, 2048)()
print("DONE")
"""


def test_release_in_a_forked_child_leaves_its_list_alone():
    """An entry held (by the test hook, on another thread) before a fork and released in
    the child is in no list of the child (its atfork handler emptied it): the release
    frees it without unlinking it, so the child's own entries stay held and the parent's
    bytes are free there; the parent's list is intact. The C-level generation counter,
    bumped in the child handler, is what tells the release. In a subprocess under a
    timeout (exit codes 10-15 say which step of the child failed)."""
    try:
        r = subprocess.run(
            [sys.executable, "-c", _RELEASE_IN_FORKED_CHILD_SCRIPT],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:  # pragma: no cover - a regression
        pytest.fail("a release in a forked child hung")
    assert r.returncode == 0 and "DONE" in r.stdout, r.stdout + r.stderr
    assert "CHILD 0" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# export_weights and the Python side of cygru.capi (no build needed)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_export_layout(dtype):
    gru = cygru.GRU(3, 4, 2, bidirectional=True, dtype=dtype, seed=0)
    w = capi.export_weights(gru)
    assert (w.kind, w.input_size, w.hidden_size, w.num_layers, w.num_directions) == (
        "GRU",
        3,
        4,
        2,
        2,
    )
    assert w.dtype == dtype and w.flat.dtype == dtype and w.bias and w.reset_after
    assert list(w.params) == list(gru.state_dict())  # PyTorch's order
    assert w.flat.ctypes.data % 64 == 0
    previous_end = 0
    for name, value in gru.state_dict().items():
        view = w.params[name]
        np.testing.assert_array_equal(view, value)
        assert view.flags.c_contiguous and not view.flags.writeable
        off = w.offsets[name]
        assert off >= previous_end and (off * w.dtype.itemsize) % 64 == 0
        assert view.ctypes.data == w.flat.ctypes.data + off * w.dtype.itemsize
        np.testing.assert_array_equal(w.flat[off : off + value.size], value.ravel())
        previous_end = off + value.size
    assert not w.flat.flags.writeable
    # a snapshot: later changes to the module are not seen
    before = w.params["weight_hh_l0"].copy()
    gru.weight_hh_l0 = np.zeros((12, 4))
    np.testing.assert_array_equal(w.params["weight_hh_l0"], before)


def test_export_without_bias_and_cell():
    w = capi.export_weights(cygru.GRU(3, 4, bias=False))
    assert list(w.params) == ["weight_ih_l0", "weight_hh_l0"] and not w.bias
    c = capi.export_weights(cygru.GRUCell(3, 4, reset_after=False, dtype=np.float64))
    assert c.kind == "GRUCell" and not c.reset_after and c.dtype == np.float64
    assert list(c.params) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    with pytest.raises(TypeError, match="cygru.GRU or cygru.GRUCell"):
        capi.export_weights(object())
    with pytest.raises(TypeError):
        capi.ExportedWeights(1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exported_forward_matches_gru(dtype):
    """ExportedWeights.forward (model_forward_* from Python) == GRU, including sizes
    large enough for the Python path to use several threads, and B = 0."""
    rng = np.random.default_rng(6)
    # the last case projects the input in several chunks (2 MiB each) per direction
    for I, H, L, bi, T, B in [
        (4, 8, 3, True, 5, 3),
        (32, 96, 1, True, 20, 16),
        (16, 64, 2, False, 30, 1),
        (16, 128, 2, True, 600, 8),
    ]:
        gru = cygru.GRU(I, H, L, bidirectional=bi, dtype=dtype, seed=7)
        x = rng.standard_normal((T, B, I)).astype(dtype)
        lengths = rng.integers(1, T + 1, B)
        out, h_n = capi.export_weights(gru).forward(x, lengths=lengths)
        ref_out, ref_h_n = gru(x, lengths=lengths)
        np.testing.assert_allclose(out, ref_out, **_tol(dtype))
        np.testing.assert_allclose(h_n, ref_h_n, **_tol(dtype))
    out, h_n = capi.export_weights(gru).forward(np.zeros((4, 0, 16), dtype))
    assert out.shape == (4, 0, 256) and h_n.shape == (4, 0, 128)


def test_exported_forward_errors():
    w = capi.export_weights(cygru.GRU(3, 4, seed=0))
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"outside \[1, T\]"):
        w.forward(x, lengths=[6, 1])
    with pytest.raises(ValueError, match=r"outside \[1, T\]"):
        w.forward(x, lengths=[0, 1])
    with pytest.raises(ValueError, match="shape"):
        w.forward(np.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match="sequence length|size"):
        w.forward(np.zeros((0, 2, 3)))
    assert w.workspace_size(5, 2) > 0 and w.cell_workspace_size(2) > 0
    with pytest.raises(ValueError):
        w.workspace_size(0, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exported_forward_checks_sizes_before_converting(dtype):
    """Zero-strided views (np.broadcast_to) of sizes forward refuses, or of wrong shapes,
    raise ValueError at once: nothing is converted or copied first (a contiguous float32
    copy of the first x would be 24 GiB)."""
    import tracemalloc

    w = capi.export_weights(cygru.GRU(3, 4, num_layers=2, seed=0))
    big = 2**31  # > INT_MAX
    x = np.zeros((5, 2, 3), np.float32)
    cases = [
        (dict(x=np.broadcast_to(np.zeros(3, dtype), (2**16, 2**15, 3))), "T\\*B"),
        (dict(x=np.broadcast_to(np.zeros(3, dtype), (big, 1, 3))), "BLAS's int"),
        (dict(x=np.broadcast_to(np.zeros(3, dtype), (1, big, 3))), "BLAS's int"),
        (dict(x=np.broadcast_to(np.zeros(4, dtype), (2**20, 2**20, 4))), "shape"),
        (dict(x=x, h0=np.broadcast_to(np.zeros(4, dtype), (2, 2**31, 4))), "h0"),
        (dict(x=x, h0=np.broadcast_to(np.zeros(4, dtype), (2**20, 2**20, 4))), "h0"),
        (dict(x=x, lengths=np.broadcast_to(np.int64(5), (2**40,))), "lengths"),
    ]
    for kwargs, match in cases:
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            with pytest.raises(ValueError, match=match):
                w.forward(**kwargs)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert time.perf_counter() - t0 < 1.0, kwargs
        assert peak < 1 << 20, f"{peak} bytes allocated before refusing {kwargs}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_exported_forward_reads_read_only_inputs(dtype):
    """x, h0 and lengths that are read-only (np.frombuffer of bytes, a read-only view)
    are only read: accepted as they are, same results."""
    rng = np.random.default_rng(11)
    w = capi.export_weights(cygru.GRU(3, 5, num_layers=2, bidirectional=True, dtype=dtype, seed=0))
    x = rng.standard_normal((6, 4, 3)).astype(dtype)
    h0 = rng.standard_normal((4, 4, 5)).astype(dtype)
    lengths = np.array([6, 2, 5, 1], np.intc)
    x_ro = np.frombuffer(x.tobytes(), dtype).reshape(x.shape)  # a read-only buffer
    h0_ro = h0.copy()
    h0_ro.flags.writeable = False
    lengths_ro = np.frombuffer(lengths.tobytes(), np.intc)
    lengths_i64 = lengths.astype(np.int64)
    lengths_i64.flags.writeable = False  # converted to C int
    for args in [
        (x_ro, h0_ro, lengths_ro),
        (x_ro, h0_ro[...], lengths_i64),
        (x_ro[:, :2], h0_ro[:, :2], lengths_ro[:2]),
    ]:  # non-contiguous, read-only
        assert not any(a.flags.writeable for a in args)
        out, h_n = w.forward(*args)
        ref_out, ref_h_n = w.forward(*[np.array(a) for a in args])  # writeable copies
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(h_n, ref_h_n)


def test_capsule_keeps_weights_alive():
    import ctypes

    gru = cygru.GRU(3, 4, seed=0)
    w = capi.export_weights(gru)
    cap = w.capsule()
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    assert get_pointer(cap, b"cygru.capi.model_f32") == w.address
    address, flat = w.address, w.flat.copy()
    del w
    import gc

    gc.collect()

    class Model(ctypes.Structure):
        _fields_ = [
            ("input_size", ctypes.c_int),
            ("hidden_size", ctypes.c_int),
            ("num_layers", ctypes.c_int),
            ("num_directions", ctypes.c_int),
            ("reset_after", ctypes.c_int),
            ("reverse", ctypes.c_int),
            ("dirs", ctypes.POINTER(ctypes.c_void_p * 4)),
        ]

    m = Model.from_address(get_pointer(cap, b"cygru.capi.model_f32"))
    assert (m.input_size, m.hidden_size, m.num_layers, m.num_directions) == (3, 4, 1, 1)
    w_hh = ctypes.cast(m.dirs.contents[1], ctypes.POINTER(ctypes.c_float * 48)).contents
    np.testing.assert_array_equal(np.frombuffer(w_hh, np.float32), gru.weight_hh_l0.ravel())
    assert address == ctypes.addressof(m)
    del cap, flat


def test_c_sort_matches_numpy_schedule():
    """The engine's counting sort (the one schedule of cygru.GRU, the C API and the GPU
    backend) against NumPy: a stable argsort, longest first, and the running rows."""
    from cygru._engine import lengths_schedule

    rng = np.random.default_rng(7)
    for T, B in [(1, 1), (5, 6), (9, 40), (3, 100)]:
        lengths = rng.integers(1, T + 1, B)
        perm, active = lengths_schedule(lengths, T, B)
        np.testing.assert_array_equal(perm, np.argsort(-lengths, kind="stable"))
        np.testing.assert_array_equal(active, [(lengths > t).sum() for t in range(T)])
    with pytest.raises(ValueError):
        lengths_schedule(np.array([1, 4]), 3, 2)


def test_capi_docstring_examples():
    import doctest

    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    tests = [t for t in finder.find(capi, "cygru.capi") if t.examples]
    assert {t.name for t in tests} >= {
        "cygru.capi",
        "cygru.capi.export_weights",
        "cygru.capi.status_name",
        "cygru.capi.ExportedWeights.forward",
        "cygru.capi.ExportedWeights.workspace_size",
        "cygru.capi.ExportedWeights.cell_workspace_size",
        "cygru.capi.ExportedWeights.capsule",
    }
    for t in tests:
        t.globs = {"__name__": "__main__"}  # as copied by a reader: imports its own names
        runner.run(t, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_pxd_is_shipped():
    """capi.pxd sits where cygru.get_include() points, and the wheel's package data
    includes every .pxd."""
    assert (pathlib.Path(cygru.get_include()) / "cygru" / "capi.pxd").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"*.pxd"' in pyproject
    text = (ROOT / "cygru" / "capi.pxd").read_text()
    for name in (
        "cell_step_f32",
        "cell_step_f64",
        "layer_forward_f32",
        "layer_forward_f64",
        "model_forward_f32",
        "model_forward_f64",
        "cell_workspace_size_f32",
        "layer_workspace_size_f64",
        "model_workspace_size_f32",
        "cygru_model_f32",
        "ExportedWeights",
        "status_message",
    ):
        assert name in text


# ---------------------------------------------------------------------------------------------
# the recipe of docs/embedding.rst after `pip install -e` and `pip install`, without PYTHONPATH
# ---------------------------------------------------------------------------------------------

# (the fixture `installed`, shared with tests/test_c_header.py, is in conftest.py)


@pytest.mark.parametrize("kind", ["editable", "normal"])
def test_embedding_recipe_after_install(installed, tmp_path, kind):
    """The commands of docs/embedding.rst's example project, run as a user runs them
    after installing cygru: in a copy of examples/embedding outside any checkout, with
    the environment's python, no PYTHONPATH. (It failed after ``pip install -e`` with
    "'cygru/capi.pxd' not found" while the pxd was looked for in ``include_dirs``.)"""
    python, package_dir = installed(kind)
    example = tmp_path / "embedding"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("build", "*.so", "*.c"))

    def run(*args):
        proc = subprocess.run(
            [str(python), *args],
            cwd=example,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, (
            f"python {' '.join(args)} failed ({kind} install):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
        return proc.stdout

    where = run("-c", "import sys, cygru; print(cygru.__file__); print(sys.path)")
    module_file, path = where.splitlines()
    assert pathlib.Path(module_file).parent == package_dir
    if kind == "editable":
        # an editable install is a path entry now (pyproject.toml's package-dir, for type
        # checkers): the checkout is on sys.path. The recipe failed when it was not (an
        # import hook found cygru), and passes include_path=[cygru.get_include()] so
        # that it never depends on sys.path
        assert str(package_dir.parent) in path
    run("setup.py", "build_ext", "--inplace")
    out = run("run.py")
    assert "stream 0, max |C - Python|: 0.0" in out, out
    seq = [line for line in out.splitlines() if line.startswith("sequence:")]
    assert seq and float(seq[0].rsplit(":", 1)[1]) < 1e-5, out
    assert "a length of 30 > T: cygru C API: a sequence length is outside [1, T]" in out, out


# ---------------------------------------------------------------------------------------------
# threads: the Python API
# ---------------------------------------------------------------------------------------------


def _max_tick_gap_while(make_fn, attempts=3):
    """Run make_fn() in a thread while this thread ticks in pure Python; return
    (longest gap between ticks while it ran, its duration). A GIL held through a C
    loop shows as a gap as long as the loop. The best of a few attempts (the machine
    is shared); make_fn() makes a fresh call for each."""
    best = None
    for _ in range(attempts):
        span = {}
        fn = make_fn()

        def target():
            span["t0"] = time.perf_counter()
            fn()
            span["t1"] = time.perf_counter()

        ticks = []
        th = threading.Thread(target=target)
        th.start()
        while th.is_alive():
            ticks.append(time.perf_counter())
        th.join()
        inside = [t for t in ticks if span["t0"] <= t <= span["t1"]]
        edges = [span["t0"]] + inside + [span["t1"]]
        gap = max(b - a for a, b in zip(edges, edges[1:]))
        duration = span["t1"] - span["t0"]
        if best is None or gap / duration < best[0] / best[1]:
            best = (gap, duration)
    return best


@pytest.mark.parametrize(
    "what", ["forward", "forward_f64", "forward_reset_before", "vjp_forward", "backward", "cell"]
)
def test_gil_is_released(what):
    rng = np.random.default_rng(8)
    dtype = np.float64 if what == "forward_f64" else np.float32
    gru = cygru.GRU(
        64,
        128,
        bidirectional=True,
        reset_after=(what != "forward_reset_before"),
        dtype=dtype,
        seed=0,
    )
    x = rng.standard_normal((1500, 4, 64)).astype(dtype)
    if what.startswith("forward"):
        make_fn = lambda: lambda: gru(x)  # noqa: E731
    elif what == "vjp_forward":
        make_fn = lambda: lambda: gru.vjp(x)  # noqa: E731
    elif what == "backward":

        def make_fn():
            (out, _), backward = gru.vjp(x)
            d_out = np.ones_like(out)
            return lambda: backward(d_out, None)
    else:
        cell = cygru.GRUCell(2048, 2048, seed=0)
        xc = rng.standard_normal((64, 2048)).astype(np.float32)
        make_fn = lambda: lambda: cell(xc)  # noqa: E731
    gap, duration = _max_tick_gap_while(make_fn)
    print(f"{what}: longest stall {gap * 1e3:.2f} ms in a {duration * 1e3:.1f} ms call")
    assert duration > 0.02, "the call is too short to tell"
    # with the GIL held through the kernels the gap would be about the whole call
    assert gap < 0.5 * duration, (
        f"main thread stalled {gap * 1e3:.1f} ms of {duration * 1e3:.1f} ms"
    )


@pytest.mark.parametrize("module", ["GRU", "GRUCell"])
def test_threads_give_bitwise_serial_results(module):
    """One module called from 8 threads x 1000 calls == the same calls made serially."""
    rng = np.random.default_rng(9)
    n_threads, n_calls = 8, 1000
    if module == "GRU":
        m = cygru.GRU(6, 10, 2, bidirectional=True, seed=1)
        inputs = [rng.standard_normal((5, 3, 6)).astype(np.float32) for _ in range(64)]
        lengths = [np.array([5, 2, 4]), None]

        def call(i):
            return m(inputs[i % 64], lengths=lengths[i % 2])
    else:
        m = cygru.GRUCell(6, 10, seed=1)
        inputs = [rng.standard_normal((3, 6)).astype(np.float32) for _ in range(64)]
        states = [rng.standard_normal((3, 10)).astype(np.float32) for _ in range(64)]

        def call(i):
            return (m(inputs[i % 64], states[(i * 7) % 64]),)

    serial = [call(i) for i in range(128)]
    mismatches = []
    barrier = threading.Barrier(n_threads)

    def work(tid):
        barrier.wait()
        for k in range(n_calls):
            i = (tid * 131 + k) % 128
            got = call(i)
            if not all(np.array_equal(a, b) for a, b in zip(got, serial[i])):
                mismatches.append((tid, k))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches, f"{len(mismatches)} calls differ from the serial results"


@pytest.mark.parametrize("module", ["GRU", "GRUCell"])
def test_vjp_from_threads_accumulates(module):
    """Backward closures run in 8 threads add into grads under the module's lock:
    the total is the sum of the per-call gradients."""
    rng = np.random.default_rng(10)
    n_threads, per_thread = 8, 6
    if module == "GRU":
        make = lambda: cygru.GRU(5, 24, 2, bidirectional=True, dtype=np.float64, seed=2)  # noqa
        xs = [rng.standard_normal((20, 3, 5)) for _ in range(n_threads * per_thread)]

        def step(m, x):  # noqa: E306
            (out, h_n), backward = m.vjp(x)
            backward(np.ones_like(out), np.ones_like(h_n))
    else:
        make = lambda: cygru.GRUCell(5, 24, dtype=np.float64, seed=2)  # noqa
        xs = [rng.standard_normal((3, 5)) for _ in range(n_threads * per_thread)]

        def step(m, x):  # noqa: E306
            h1, backward = m.vjp(x)
            backward(np.ones_like(h1))

    # the expected total: each call's gradient on its own, summed
    ref = make()
    expected = {n: np.zeros_like(g) for n, g in ref.grads.items()}
    for x in xs:
        ref.zero_grad()
        step(ref, x)
        for n, g in ref.grads.items():
            expected[n] += g
    m = make()
    barrier = threading.Barrier(n_threads)
    errors = []

    def work(tid):
        try:
            barrier.wait()
            for k in range(per_thread):
                step(m, xs[tid * per_thread + k])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n, g in m.grads.items():
        np.testing.assert_allclose(g, expected[n], rtol=1e-10, atol=1e-12, err_msg=n)


def test_accumulate_holds_the_lock():
    """modules._accumulate adds under the module's lock (the lock is what makes the
    test above deterministic): while another thread holds it, nothing is added."""
    m = cygru.GRUCell(2, 3, dtype=np.float64, seed=0)
    h1, backward = m.vjp(np.ones(2))
    done = threading.Event()
    with m._lock:
        th = threading.Thread(target=lambda: (backward(np.ones(3)), done.set()))
        th.start()
        time.sleep(0.2)
        assert not done.is_set()
        assert all((g == 0).all() for g in m.grads.values())
    th.join(10)
    assert done.is_set()
    assert any((g != 0).any() for g in m.grads.values())
