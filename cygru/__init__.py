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

from ._version import __version__
from .modules import GRU, GRUCell
from ._gradcheck import GradcheckError, gradcheck
from .interop import from_keras, from_onnx, from_torch, to_onnx
from . import functional
from ._threads import get_num_threads, set_num_threads

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
