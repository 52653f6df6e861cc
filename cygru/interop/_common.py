"""Helpers shared by cygru's converters: gate permutation, parameter names, dtypes."""

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


def _as_host(array):
    """A NumPy view of a parameter that may live on the GPU (CuPy arrays have ``.get()``)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if callable(get) and type(array).__module__.split(".")[0] == "cupy":
        return get()
    return np.asarray(array)


def _float_dtype(dtype, what):
    dtype = np.dtype(dtype)
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


def _layer_suffix(layer, direction):
    """The suffix of cygru's (PyTorch's) parameter names: ``_l{layer}``, plus ``_reverse`` for
    direction 1 (``weight_ih_l1_reverse``). The one place interop spells the rule."""
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")
