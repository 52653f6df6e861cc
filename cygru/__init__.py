"""cygru: a compiled GRU for Python.

Cython kernels over SciPy's BLAS (``scipy.linalg.cython_blas``) with PyTorch's
semantics, shapes and parameter names; exact gradients; an optional CuPy backend.

>>> import numpy as np, cygru
>>> gru = cygru.GRU(4, 8, seed=0)
>>> output, h_n = gru(np.zeros((6, 2, 4), np.float32))
>>> output.shape, h_n.shape
((6, 2, 8), (1, 2, 8))
"""
import os


def _load_compiled():
    """Import the compiled CPU backend with its OpenMP runtime told to idle politely.

    libgomp reads GOMP_SPINCOUNT once, when it is loaded; by default an idle worker
    spins ~300,000 times after every parallel region, stealing the core that BLAS and
    the caller need next. The variable is set only while cygru's extension (and with
    it the system libgomp) loads, then restored, so libraries imported later (PyTorch
    ships its own libgomp) see the environment unchanged. A value set by the user wins.
    """
    saved = os.environ.get("GOMP_SPINCOUNT")
    if saved is None:
        os.environ["GOMP_SPINCOUNT"] = "2000"
    try:
        from . import _cpu  # noqa: F401
    finally:
        if saved is None:
            os.environ.pop("GOMP_SPINCOUNT", None)


_load_compiled()

from ._version import __version__  # noqa: E402
from .modules import GRU, GRUCell  # noqa: E402
from ._gradcheck import GradcheckError, gradcheck  # noqa: E402
from .interop import from_keras, from_onnx, from_torch, to_onnx  # noqa: E402
from . import functional  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402

__all__ = ["GRU", "GRUCell", "gradcheck", "GradcheckError", "from_torch", "from_keras",
           "from_onnx", "to_onnx", "functional", "get_include", "get_num_threads",
           "set_num_threads", "__version__"]


def get_include():
    """Directory to add to ``include_dirs`` when compiling an extension that
    ``cimport``\\ s cygru, the way ``numpy.get_include()`` is used.

    It is the directory that contains the ``cygru`` package, so Cython finds
    ``cygru/*.pxd`` there.

    Examples
    --------
    >>> import os, cygru
    >>> os.path.isfile(os.path.join(cygru.get_include(), "cygru", "_kernels.pxd"))
    True
    """
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
