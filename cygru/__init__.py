"""cygru: a compiled GRU for Python.

Cython kernels (cygru's own vectorised products, no BLAS in a forward or backward) with
PyTorch's semantics, shapes and parameter names; exact gradients; an optional CuPy
backend.

>>> import numpy as np, cygru
>>> gru = cygru.GRU(4, 8, seed=0)
>>> output, h_n = gru(np.zeros((6, 2, 4), np.float32))
>>> output.shape, h_n.shape
((6, 2, 8), (1, 2, 8))
"""

# Module-level names are the public API (__all__), cygru's own submodules and private
# names with a leading underscore: nothing else (tests/test_pytorch_habits.py).
import os as _os

# Environment for the thread pools that load with cygru's extension, each read once
# when its library loads:
# - GOMP_SPINCOUNT (libgomp, which cygru's _cpu links for omp_get_max_threads; cygru's
#   own threads are its worker pool, but another library may run OpenMP regions on the
#   same libgomp): by default an idle worker spins ~300,000 times after every parallel
#   region, stealing the core that BLAS and the caller need.
# - OPENBLAS_THREAD_TIMEOUT (SciPy's OpenBLAS, loaded by the extension's BLAS import
#   unless scipy.linalg was imported first): its idle pool spins 2^28 cycles (~0.1 s)
#   after every threaded GEMM, i.e. through the whole time loop that follows on cygru's
#   threads. 2^20 cycles (~0.3 ms) took the medium training step (forward + backward,
#   2 threads) from 86 to 50-56 ms when the backward's weight gradients were BLAS GEMMs
#   (before issue 26; 2^12-2^18 measured alike within noise). Now only the C API's
#   cell_step above 4 rows calls BLAS.
_POOL_ENVIRONMENT = {"GOMP_SPINCOUNT": "2000", "OPENBLAS_THREAD_TIMEOUT": "20"}


def _load_compiled():
    """Import the compiled CPU backend with its thread pools told to idle politely.

    The variables of ``_POOL_ENVIRONMENT`` are set only while cygru's extension (and
    with it libgomp and SciPy's BLAS) loads, then restored, so libraries imported later
    (PyTorch ships its own libgomp) see the environment unchanged. A value set by the
    user wins.
    """
    added = [k for k in _POOL_ENVIRONMENT if k not in _os.environ]
    for k in added:
        _os.environ[k] = _POOL_ENVIRONMENT[k]
    try:
        from . import _cpu  # noqa: F401
    except ImportError as exc:
        message, built = _compiled_import_error(exc)
        # not built: the original error ("... most likely due to a circular import") only
        # misleads; built but broken: its cause is the useful part
        raise ImportError(message) from (exc if built else None)
    finally:
        for k in added:
            _os.environ.pop(k, None)


def _compiled_import_error(exc):
    """(message, whether a compiled _cpu exists) for a failed import of the compiled
    modules: the message says what is wrong and what to run.

    Without this, an unbuilt checkout says "cannot import name '_cpu' from partially
    initialized module 'cygru' (most likely due to a circular import)".
    """
    import importlib.machinery

    package = _os.path.dirname(_os.path.abspath(__file__))
    built = [
        f
        for f in _os.listdir(package)
        if f.startswith("_cpu.")
        and any(f.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)
    ]
    if not built:
        return (
            f"cygru's compiled modules are not built: this cygru ({package}) is a source "
            "checkout with no compiled _cpu module. Build them in place, from the "
            "repository root: `pip install -e .` (or `python setup.py build_ext "
            "--inplace`). If cygru is installed (`pip install .` or a wheel), run Python "
            "from outside the source tree, so that the installed package is imported "
            "instead of this directory."
        ), False
    return (
        f"cygru's compiled module {built[0]} in {package} failed to load ({exc}). It "
        "may have been built for another Python or NumPy, or a library it needs is "
        "missing: rebuild it from the repository root with `pip install -e .` (or "
        "`python setup.py build_ext --inplace --force`), or reinstall cygru."
    ), True


_load_compiled()

from ._version import __version__  # noqa: E402
from .modules import GRU, GRUCell, IncompatibleKeys  # noqa: E402
from .quantized import QuantizedGRU, QuantizedGRUCell, quantize  # noqa: E402
from ._gradcheck import GradcheckError, gradcheck  # noqa: E402
from .interop import from_keras, from_onnx, from_torch, to_onnx  # noqa: E402
from . import functional  # noqa: E402
from . import optim  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402

__all__ = [
    "GRU",
    "GRUCell",
    "IncompatibleKeys",
    "quantize",
    "QuantizedGRU",
    "QuantizedGRUCell",
    "gradcheck",
    "GradcheckError",
    "from_torch",
    "from_keras",
    "from_onnx",
    "to_onnx",
    "functional",
    "optim",
    "get_include",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]


def get_include(*, c_headers: bool = False) -> str:
    """Directory of cygru's headers for building an extension against cygru.

    By default, the directory to give Cython as ``include_path`` when compiling an
    extension that ``cimport``\\ s cygru:
    ``cythonize(..., include_path=[cygru.get_include()])``. It is the directory that
    contains the ``cygru`` package, so Cython finds ``cygru/*.pxd`` there. (An
    Extension's ``include_dirs`` is the C compiler's search path, which Cython does not
    search for ``.pxd`` files: with it alone, the build fails after an editable
    install, ``pip install -e``.)

    With ``c_headers=True``, the directory of the plain-C header ``cygru.h`` (the
    package's ``include`` folder), for a C or C++ compiler's search path:
    ``Extension(..., include_dirs=[cygru.get_include(c_headers=True)])``, then
    ``#include "cygru.h"`` and ``import_cygru()`` in the module's init function (see
    the Embedding page of the documentation).

    Both work after a normal and an editable install.

    Parameters
    ----------
    c_headers : bool, default False
        Return the directory of ``cygru.h`` instead of the one for ``.pxd`` files.

    Returns
    -------
    str

    Examples
    --------
    >>> import os, cygru
    >>> os.path.isfile(os.path.join(cygru.get_include(), "cygru", "_kernels.pxd"))
    True
    >>> os.path.isfile(os.path.join(cygru.get_include(c_headers=True), "cygru.h"))
    True
    """
    from . import _arrays

    try:
        c_headers = _arrays.check_flag(c_headers, "c_headers")
    except _arrays.ArgumentError as exc:
        raise exc.named("cygru.get_include") from None
    package = _os.path.dirname(_os.path.abspath(__file__))
    if c_headers:
        return _os.path.join(package, "include")
    return _os.path.dirname(package)
