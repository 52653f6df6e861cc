"""Helpers shared by cygru's converters: gate permutation, dtypes; the parameter names
(cygru._backend's rule) and the host converter (cygru._arrays) are imported from the one
place each lives."""

from __future__ import annotations

import numpy as np

_ONNX_HINT = 'pip install "cygru[onnx]"'


def _modules():
    # Imported lazily: cygru/__init__.py imports this module, and modules.py may import us.
    from .. import modules

    return modules


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"cygru's ONNX conversion needs the 'onnx' package: {_ONNX_HINT}"
        ) from exc
    return onnx


from .._arrays import native as _native  # noqa: E402  (the one byte-order rule)
from .._arrays import to_host as _as_host  # noqa: E402,F401  (the one host converter)
from .._backend import GATE_NAMES, param_suffix as _layer_suffix  # noqa: E402,F401


def _float_dtype(dtype, what):
    dtype = _native(dtype)  # either byte order: the module converts the arrays
    if dtype == np.float32:
        return np.dtype(np.float32)
    if dtype == np.float64:
        return np.dtype(np.float64)
    raise TypeError(f"{what} has dtype {dtype}; cygru supports float32 and float64 only")


# Gate-block permutations. ``hidden_size`` is the block size H; ``axis`` the axis stacking the
# three gates. z,r,h (Keras/ONNX) -> r,z,n (cygru) swaps the first two blocks, and so does the
# inverse, so one function serves both directions.
def _swap_rz(array, hidden_size, axis=0):
    h = hidden_size
    a = np.moveaxis(np.asarray(array), axis, 0)
    out = np.concatenate([a[h : 2 * h], a[:h], a[2 * h : 3 * h]], axis=0)
    return np.moveaxis(out, 0, axis)
