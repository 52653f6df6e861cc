"""Checks of the GPU backend that need no GPU.

- ``nvcc`` (when on PATH) compiles ``cygru/_gru_kernels.cu`` to PTX and to a cubin for sm_90,
  warnings as errors, and the PTX defines exactly the kernels ``cygru._cupy`` looks up, in
  float and double.
- NVRTC (when CuPy and its NVRTC library load) compiles it with the options CuPy's RawModule
  uses, which is how the backend compiles it at run time.
- Host emulation (when a C++ compiler is on PATH): the .cu is compiled as plain C++ (one
  "thread" whose grid-stride loop covers every element), NumPy arrays stand in for CuPy
  arrays and NumPy matmul for cuBLAS, and the whole backend (``cygru/_cupy.py``: sorting by
  length, the time loops, the strided output, the caches, the backward GEMMs) is compared
  with the NumPy reference.  Uninitialised buffers are filled with NaN, so a read of
  anything a kernel should have written shows up.  Races cannot show up here; the kernels
  are written so that every thread writes only its own (row, column) element.

The backend and the reference are loaded from their files (the backend as a module of a
stand-in package whose path is ``cygru/``, so its relative imports of the pure-Python
``_arrays`` and ``_backend`` resolve without running ``cygru/__init__``), so these tests need
neither the compiled extensions nor CuPy, except the one that runs a whole module on the
emulated backend.
"""

import contextlib
import ctypes
import importlib.util
import itertools
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from optional_deps import import_optional

PKG = Path(__file__).resolve().parents[1] / "cygru"
CU = PKG / "_gru_kernels.cu"


_STANDIN = "_cygru_test_pkg"


def _load(name):
    """cygru/<name>.py as a fresh module of a stand-in package (no compiled extension)."""
    if _STANDIN not in sys.modules:
        pkg = types.ModuleType(_STANDIN)
        pkg.__path__ = [str(PKG)]
        sys.modules[_STANDIN] = pkg
    spec = importlib.util.spec_from_file_location(f"{_STANDIN}.{name}", PKG / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def backend():
    return _load("_cupy")


def _entries(ptx):
    return set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))


# ---------------------------------------------------------------------------------------------
# nvcc
# ---------------------------------------------------------------------------------------------

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")


@needs_nvcc
def test_nvcc_ptx_defines_every_kernel(tmp_path, backend):
    ptx = tmp_path / "k.ptx"
    res = subprocess.run(
        [NVCC, "-arch=sm_90", "--ptx", "-Werror", "all-warnings", "-o", str(ptx), str(CU)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    names = _entries(ptx.read_text())
    assert names == set(backend.KERNEL_NAMES)
    assert {n for n in names if n.endswith("_f32")} and {n for n in names if n.endswith("_f64")}


@needs_nvcc
def test_nvcc_cubin_float_and_double(tmp_path):
    # -cubin also runs ptxas (register allocation, machine code) for every instantiation
    out = tmp_path / "k.cubin"
    res = subprocess.run(
        [NVCC, "-arch=sm_90", "-cubin", "-Werror", "all-warnings", "-o", str(out), str(CU)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# NVRTC, as cupy.RawModule runs it
# ---------------------------------------------------------------------------------------------


def test_nvrtc_compiles_with_rawmodule_options(backend):
    try:
        from cupy.cuda import compiler

        compiler._get_nvrtc_version()
        program = compiler._NVRTCProgram
    except Exception as exc:  # no CuPy, no NVRTC library, or a CuPy without these
        pytest.skip(f"CuPy's NVRTC is not usable here: {exc}")
    # what RawModule adds: -ftz=true, -arch=compute_XX, --device-as-default-execution-space
    opts = tuple(backend._NVRTC_OPTIONS) + (
        "-ftz=true",
        "-arch=compute_90",
        "--device-as-default-execution-space",
    )
    prog = program(CU.read_text(), "kern.cu", (), (), name_expressions=None, method="ptx")
    ptx, _ = prog.compile(opts)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert _entries(ptx) == set(backend.KERNEL_NAMES)


# ---------------------------------------------------------------------------------------------
# host emulation of the whole backend
# ---------------------------------------------------------------------------------------------

CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")

_PRELUDE = """
#include <math.h>
struct cy_dim3 { unsigned x, y, z; };
static const cy_dim3 blockIdx = {0, 0, 0};
static const cy_dim3 threadIdx = {0, 0, 0};
static const cy_dim3 blockDim = {1, 1, 1};
static const cy_dim3 gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
"""

# argument kinds per kernel: i = long long, T = array of the dtype (or None), P = int64 perm
_SIGNATURES = {
    "fwd_ra": "iiiTTTTTTiPTTTTT",
    "fwd_nr1": "iiiTTTTTPTT",
    "fwd_nr2": "iiiTTTTTTTiPTT",
    "bwd_ra": "iiiTiPTTTTTTTT",
    "bwd_nr1": "iiiTiPTTTTTTT",
    "bwd_nr2": "iiiTPTTTTT",
}


class _HostKernel:
    def __init__(self, lib, base, suffix, dtype):
        self.base, self.dtype = base, np.dtype(dtype)
        self.fn = getattr(lib, f"gru_{base}_{suffix}")
        self.fn.restype = None

    def __call__(self, grid, block, args):
        sig = _SIGNATURES[self.base]
        assert len(args) == len(sig), f"{self.base}: {len(args)} arguments, expected {len(sig)}"
        cargs = []
        for a, kind in zip(args, sig):
            if kind == "i":
                assert type(a) is np.int64, f"{self.base}: scalar {type(a)} is not numpy.int64"
                cargs.append(ctypes.c_longlong(int(a)))
            elif a is None:
                cargs.append(ctypes.c_void_p(None))
            else:
                want = np.int64 if kind == "P" else self.dtype
                assert isinstance(a, np.ndarray) and a.dtype == want, f"{self.base}: bad array"
                assert a.strides[-1] == a.itemsize
                cargs.append(ctypes.c_void_p(a.ctypes.data))
        self.fn(*cargs)


def _host_gemm(transa, transb, a, b, out, beta=0.0):
    assert a.ndim == b.ndim == out.ndim == 2 and a.dtype == b.dtype == out.dtype
    A = a if transa == "N" else a.T
    Bm = b if transb == "N" else b.T
    assert A.shape[1] == Bm.shape[0] and out.shape == (A.shape[0], Bm.shape[1])
    assert A.shape[0] > 0
    p = A @ Bm
    out[...] = p if beta == 0.0 else p + beta * out  # beta = 0: C is not read (cuBLAS)


def _nan_empty(shape, dtype=np.float64):
    a = np.empty(shape, dtype=dtype)
    a.fill(np.nan if a.dtype.kind == "f" else -(1 << 40))
    return a


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """The backend module, running on the CPU."""
    if CXX is None:
        pytest.skip("no C++ compiler on PATH for the host emulation")
    d = tmp_path_factory.mktemp("emu")
    (d / "prelude.h").write_text(_PRELUDE)
    lib_path = d / "libgru_emu.so"
    res = subprocess.run(
        [
            CXX,
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-shared",
            "-fPIC",
            "-include",
            str(d / "prelude.h"),
            "-x",
            "c++",
            str(CU),
            "-o",
            str(lib_path),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lib = ctypes.CDLL(str(lib_path))
    mod = _load("_cupy")

    class Kernels:
        def __init__(self, dtype):
            sfx = mod._SUFFIX[np.dtype(dtype)]
            for base in mod._KERNEL_BASES:
                setattr(self, base, _HostKernel(lib, base, sfx, dtype))

    fake = types.SimpleNamespace(
        empty=_nan_empty,
        zeros=np.zeros,
        take=np.take,
        concatenate=np.concatenate,
        ascontiguousarray=np.ascontiguousarray,
        asarray=np.asarray,
        asnumpy=np.asarray,
        ndarray=np.ndarray,
    )
    mod._cp = lambda: fake
    mod._gemm = _host_gemm
    mod._device_ctx = lambda a: contextlib.nullcontext()
    mod._get_kernels = Kernels
    return mod


@pytest.fixture(scope="module")
def reference():
    return _load("_reference")


def _layers(rng, I, H, L, D, dtype, bias):
    s = 1 / np.sqrt(H)
    u = lambda *shape: rng.uniform(-s, s, shape).astype(dtype)  # noqa: E731
    return [
        [
            (
                u(3 * H, I if k == 0 else D * H),
                u(3 * H, H),
                u(3 * H) if bias else None,
                u(3 * H) if bias else None,
            )
            for _ in range(D)
        ]
        for k in range(L)
    ]


def _lengths(rng, mode, T, B):
    if mode == "none":
        return None
    if mode == "random":
        return rng.integers(1, T + 1, B).astype(np.int64)
    if mode == "sorted":  # already non-increasing: the identity permutation
        return np.sort(rng.integers(1, T + 1, B))[::-1].astype(np.int64)
    # "short": every sequence shorter than T, so trailing steps have no active row
    return rng.integers(1, max(2, (T + 1) // 2), B).astype(np.int64)


def _cases():
    n = 0
    for ra, D, L, lmode, bf, dtype in itertools.product(
        [True, False],
        [1, 2],
        [1, 2, 3],
        ["none", "random", "sorted", "short"],
        [False, True],
        [np.float32, np.float64],
    ):
        for reverse in [False, True] if D == 1 else [False]:
            n += 1
            yield dict(
                T=1 + n % 6,
                B=1 + (n * 7) % 5,
                I=1 + n % 4,
                H=1 + (n * 3) % 5,
                L=L,
                D=D,
                reverse=reverse,
                reset_after=ra,
                lengths=lmode,
                batch_first=bf,
                dtype=dtype,
                bias=n % 3 != 0,
                masks=n % 2 == 0,
                h0=n % 4 != 1,
                grads=["out", "hn", "both", "none"][n % 4],
                seed=n,
            )
    for ra, dtype in itertools.product([True, False], [np.float32, np.float64]):
        yield dict(
            T=9,
            B=7,
            I=5,
            H=6,
            L=2,
            D=2,
            reverse=False,
            reset_after=ra,
            lengths="random",
            batch_first=True,
            dtype=dtype,
            bias=True,
            masks=True,
            h0=True,
            grads="both",
            seed=100,
        )
        yield dict(
            T=12,
            B=5,
            I=3,
            H=8,
            L=3,
            D=1,
            reverse=True,
            reset_after=ra,
            lengths="random",
            batch_first=False,
            dtype=dtype,
            bias=True,
            masks=True,
            h0=True,
            grads="both",
            seed=101,
        )


def _check_case(gc, ref, c):
    rng = np.random.default_rng(c["seed"])
    T, B, I, H, L, D, dtype = c["T"], c["B"], c["I"], c["H"], c["L"], c["D"], c["dtype"]
    bf = c["batch_first"]
    layers = _layers(rng, I, H, L, D, dtype, c["bias"])
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype) if c["h0"] else None
    lengths = _lengths(rng, c["lengths"], T, B)
    masks = None
    if c["masks"] and L > 1:
        masks = [((rng.random((T, B, D * H)) > 0.3) / 0.7).astype(dtype) for _ in range(L - 1)]
    kw = dict(
        hidden_size=H,
        num_directions=D,
        reverse=c["reverse"],
        reset_after=c["reset_after"],
        lengths=lengths,
        batch_first=bf,
        dropout_masks=masks,
    )
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    x_before = x.copy()

    out, h_n, cache = gc.gru_forward(x, h0, layers, need_cache=True, **kw)
    out2, h_n2, none = gc.gru_forward(x, h0, layers, need_cache=False, **kw)
    r_out, r_hn = ref.gru_forward(x, h0, layers, **kw)
    assert none is None
    # the backend contract's cache type, with the fields the Python layer reads
    assert type(cache).__name__ == "ForwardCache"
    assert (cache.T, cache.B, cache.H, cache.D) == (T, B, H, D)
    assert (cache.batch_first, cache.reverse, cache.reset_after) == (
        bf,
        c["reverse"],
        c["reset_after"],
    )
    assert cache.dropout_masks is masks
    assert out.shape == r_out.shape and out.dtype == dtype and h_n.shape == r_hn.shape
    np.testing.assert_allclose(out, r_out, **tol)
    np.testing.assert_allclose(h_n, r_hn, **tol)
    np.testing.assert_array_equal(out, out2)  # the cache does not change the numbers
    np.testing.assert_array_equal(h_n, h_n2)

    d_out = rng.standard_normal(out.shape).astype(dtype) if c["grads"] in ("out", "both") else None
    d_hn = rng.standard_normal(h_n.shape).astype(dtype) if c["grads"] in ("hn", "both") else None
    start = [
        [
            tuple(None if w is None else rng.standard_normal(w.shape).astype(dtype) for w in t)
            for t in layer
        ]
        for layer in layers
    ]
    grads = [[tuple(None if g is None else g.copy() for g in t) for t in layer] for layer in start]
    dx, dh0 = gc.gru_backward(cache, d_out, d_hn, grads)
    r_dx, r_dh0, r_grads = ref.gru_backward(x, h0, layers, d_out, d_hn, **kw)
    np.testing.assert_array_equal(x, x_before)
    assert dx.shape == x.shape and dh0.shape == (L * D, B, H)
    np.testing.assert_allclose(dx, r_dx, **tol)
    np.testing.assert_allclose(dh0, r_dh0, **tol)
    for layer_g, layer_s, layer_r in zip(grads, start, r_grads):
        for tg, ts, tr in zip(layer_g, layer_s, layer_r):
            for g, s, r in zip(tg, ts, tr):
                assert (g is None) == (r is None)
                if g is not None:
                    np.testing.assert_allclose(g - s, r, **tol)  # added into, not overwritten
    if lengths is not None:
        out_tm = out.transpose(1, 0, 2) if bf else out
        dx_tm = dx.transpose(1, 0, 2) if bf else dx
        for b in range(B):
            assert not out_tm[lengths[b] :, b].any()
            assert not dx_tm[lengths[b] :, b].any()


@pytest.mark.parametrize(
    "case",
    list(_cases()),
    ids=lambda c: "-".join(f"{k}={getattr(v, '__name__', v)}" for k, v in c.items() if k != "seed"),
)
def test_emulated_backend_matches_reference(emulated, reference, case):
    _check_case(emulated, reference, case)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_h", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_emulated_cell_matches_reference(emulated, reference, reset_after, dtype, with_h, bias):
    rng = np.random.default_rng(7)
    B, I, H = 4, 3, 5
    ((w_ih, w_hh, b_ih, b_hh),) = _layers(rng, I, H, 1, 1, dtype, bias)[0]
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype) if with_h else None
    h_before = None if h is None else h.copy()
    got = emulated.cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after)
    want = reference.cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after)
    tol = dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)
    assert got.dtype == dtype and got.shape == (B, H)
    np.testing.assert_allclose(got, want, **tol)
    if h is not None:
        np.testing.assert_array_equal(h, h_before)


def test_backend_imports_without_cupy():
    code = (
        "import sys, types, importlib.util; sys.modules['cupy'] = None; "
        f"pkg = types.ModuleType('p'); pkg.__path__ = [{str(PKG)!r}]; sys.modules['p'] = pkg; "
        f"spec = importlib.util.spec_from_file_location('p._cupy', {str(PKG / '_cupy.py')!r}); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "assert m.is_available() is False; assert m.is_cupy_array(1) is False; "
        "a = sys.modules['p._device']; "
        "import numpy as np; assert a.to_host(np.ones(2)).sum() == 2; "
        "assert 'p._arrays' not in sys.modules; "
        "assert 'cygru' not in sys.modules; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr


def test_module_on_emulated_backend_masks_reach_backward(emulated, reference, monkeypatch):
    """A whole GRU with dropout, its calls routed to the (emulated) GPU backend: the masks
    the forward drew reach ``backward.dropout_masks`` and the backward (which the
    reference, given those masks, reproduces), and gradcheck holds them fixed. (The GPU
    backend's cache once called them ``masks``, so on a GPU ``backward.dropout_masks`` was
    None and gradcheck differentiated without them.)"""
    cygru = import_optional("cygru")
    from cygru import functional

    monkeypatch.setattr(functional, "_backend", lambda device: emulated)
    rng = np.random.default_rng(3)
    T, B, I, H, L = 5, 3, 4, 3, 3
    gru = cygru.GRU(I, H, num_layers=L, bidirectional=True, dropout=0.4, dtype=np.float64, seed=1)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([5, 2, 4])
    (out, h_n), backward = gru.vjp(x, lengths=lengths)
    masks = backward.dropout_masks
    assert masks is not None and len(masks) == L - 1
    assert all(m.shape == (T, B, 2 * H) for m in masks)
    assert any((m == 0).any() for m in masks)  # something was dropped
    d_out, d_hn = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    dx, dh0 = backward(d_out, d_hn)
    layers = functional.layer_weights(gru.state_dict(), L, 2, True)
    kw = dict(
        hidden_size=H,
        num_directions=2,
        reverse=False,
        reset_after=True,
        lengths=lengths,
        batch_first=False,
        dropout_masks=masks,
    )
    r_out, _ = reference.gru_forward(x, None, layers, **kw)
    r_dx, r_dh0, _ = reference.gru_backward(x, None, layers, d_out, d_hn, **kw)
    np.testing.assert_allclose(out, r_out, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dx, r_dx, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dh0, r_dh0, rtol=1e-11, atol=1e-11)
    # without the masks the backward would differ: they matter in this case
    kw["dropout_masks"] = None
    assert not np.allclose(dx, reference.gru_backward(x, None, layers, d_out, d_hn, **kw)[0])
    assert cygru.gradcheck(gru, x, lengths=lengths)


def test_empty_batch_cache_is_the_contract_type():
    """An empty batch runs no backend: its forward cache is a ForwardCache with B = 0 (no
    sentinel), and its backward gives zeros of x's and h0's shapes."""
    cygru = import_optional("cygru")
    from cygru._backend import ForwardCache

    gru = cygru.GRU(3, 2, num_layers=2, dropout=0.5, dtype=np.float64, seed=0)
    call = gru._call(np.zeros((4, 0, 3)), None, None)
    out, h_n, cache = call.run(gru._layers(), need_cache=True)
    assert isinstance(cache, ForwardCache) and cache.B == 0 and (cache.T, cache.H) == (4, 2)
    assert out.shape == (4, 0, 2) and h_n.shape == (2, 0, 2)
    (out, h_n), backward = gru.vjp(np.zeros((4, 0, 3)))
    dx, dh0 = backward(np.ones(out.shape), None)
    assert dx.shape == (4, 0, 3) and dh0.shape == (2, 0, 2)
    assert not dx.any() and not dh0.any()
