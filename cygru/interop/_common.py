"""Helpers shared by cygru's converters: dtypes; the gate permutation and the ONNX import
(cygru._onnx, beside the ONNX writer that ``GRU.to_onnx`` calls), the parameter names
(cygru._backend's rule) and the host converter (cygru._arrays) are imported from the one
place each lives."""

from __future__ import annotations

import numpy as np

from .. import modules as _modules_module
from .._arrays import native as _native  # the one byte-order rule
from .._arrays import to_host as _as_host  # noqa: F401  (the one host converter)
from .._backend import GATE_NAMES, param_suffix as _layer_suffix  # noqa: F401
from .._onnx import import_onnx as _import_onnx  # noqa: F401
from .._onnx import swap_rz as _swap_rz  # noqa: F401  (z, r, h <-> r, z, n)


def _modules():
    """cygru.modules (the converters read its classes through this)."""
    return _modules_module


def _float_dtype(dtype, what):
    dtype = _native(dtype)  # either byte order: the module converts the arrays
    if dtype == np.float32:
        return np.dtype(np.float32)
    if dtype == np.float64:
        return np.dtype(np.float64)
    raise TypeError(f"{what} has dtype {dtype}; cygru supports float32 and float64 only")
