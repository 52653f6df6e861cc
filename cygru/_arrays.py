"""Array handling in one place: conversion, validation, devices and host copies.

Everything that reaches a backend passes through these checks first (the backends
assume valid input, see :mod:`cygru._backend`). The checks raise :class:`BadValue` /
:class:`BadType` (subclasses of ValueError / TypeError) whose message says what was
expected and what was given, without the caller's name: the public entry point that
called them is decorated with :func:`boundary`, which re-raises them as plain
ValueError / TypeError prefixed with its own name (``cygru.GRU: ...``). So no check
needs to be told who called it, and an error names the function the user called.

Devices and host copies (``to_host``, ``to_device``, ``device_of``, ...) are
:mod:`cygru._device`'s, re-exported here; the argument errors are :mod:`cygru._errors`'.
This module imports nothing of cygru above those two (never a backend).

Pure Python (NumPy only): CuPy is imported only for arrays that are already on a GPU,
so this module imports on any machine.
"""

from __future__ import annotations

import functools
import numbers
import operator
import os
import threading
import weakref
from typing import Any, Callable, Optional, TypeVar

import numpy as np

# Re-exported: the checks and their callers use them as ``A.<name>``. The device
# conversions live in cygru._device, below this module and the GPU backend alike.
from ._device import as_cupy, ascontiguous, is_cuda_object
from ._device import device_index as device_index
from ._device import device_of as device_of
from ._device import dlpack_on_cuda as dlpack_on_cuda
from ._device import is_cupy_array as is_cupy_array
from ._device import to_device as to_device
from ._device import to_host as to_host
from ._device import zeros_on as zeros_on
from ._errors import ArgumentError as ArgumentError
from ._errors import BadType as BadType
from ._errors import BadValue as BadValue

_F = TypeVar("_F", bound=Callable[..., Any])  # a decorated function keeps its signature

_INT_MAX = 2**31 - 1

# -- locks that a forked child gets anew ---------------------------------------------------
# A module's or an optimizer's threading locks held by another thread at fork() stay held
# forever in the child, which has only the forking thread: its first zero_grad, backward,
# load_state_dict or step would wait forever. The child replaces them (the state they
# guarded is whatever the parent's other threads had written at that moment, as for any
# fork of a threaded process).
_FORK_LOCKS: dict = {}  # id(obj) -> (weak reference to obj, names of its lock attributes)


def new_locks(obj, *names):
    """Give `obj` a fresh ``threading.Lock`` in each attribute of `names` (set with
    ``object.__setattr__``), and new ones again in a child after ``os.fork()``."""
    for name in names:
        object.__setattr__(obj, name, threading.Lock())
    key = id(obj)
    _FORK_LOCKS[key] = (weakref.ref(obj, lambda _ref, key=key: _FORK_LOCKS.pop(key, None)), names)


def _new_locks_in_child():
    for ref, names in list(_FORK_LOCKS.values()):
        obj = ref()
        if obj is not None:
            for name in names:
                object.__setattr__(obj, name, threading.Lock())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_in_child)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------
# errors, named at the boundary
# ---------------------------------------------------------------------------


def boundary(who: Optional[str] = None) -> Callable[[_F], _F]:
    """Decorator for a public entry point: argument errors raised inside it leave it as
    ``ValueError("<who>: <message>")`` (or TypeError). `who` is the public name, or None
    for a method of a cygru module (its ``_who``, e.g. ``"cygru.GRU"``). Nested
    boundaries: the innermost names the error."""

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def entry(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ArgumentError as exc:
                raise exc.named(who if who is not None else args[0]._who) from None

        return entry  # type: ignore[return-value]

    return decorate


def shape_str(shape):
    return str(tuple(int(s) for s in shape))


# ---------------------------------------------------------------------------
# option checks
# ---------------------------------------------------------------------------


def native(dtype):
    """`dtype` in the machine's byte order (``>f4`` -> ``float32`` on a little-endian
    machine): arrays of another byte order are accepted everywhere and converted to it."""
    dtype = np.dtype(dtype)
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def check_dtype(dtype):
    """A float dtype given as NumPy writes it (``np.float32``, ``np.dtype("f8")``,
    ``"float64"``, ``">f4"`` (any byte order), ...) or as PyTorch does (``torch.float32``,
    read by name: torch is never imported), normalised to ``np.dtype('float32')`` or
    ``np.dtype('float64')``."""
    if type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        name = str(dtype)  # "torch.float32"
        dt = {"torch.float32": FLOAT_DTYPES[0], "torch.float64": FLOAT_DTYPES[1]}.get(name)
        if dt is None:
            raise BadType(f"dtype must be float32 or float64, got {name}")
        return dt
    try:
        dt = native(dtype)
    except TypeError:
        raise BadType(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise BadType(f"dtype must be float32 or float64, got {dt}")
    return dt


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BadType(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise BadValue(f"{name} must be >= {minimum}, got {value}")
    if value > _INT_MAX:
        raise BadValue(f"{name} = {value} does not fit BLAS's 32-bit int (max {_INT_MAX})")
    return value


def real_float(value, name, want="a real number"):
    """`value` as a float if it is a real number: any :class:`numbers.Real` (Python's and
    NumPy's ints and floats, :class:`fractions.Fraction`), but not a bool (``True`` is
    no number here), a string, a complex number or an array. BadType saying `want`
    otherwise, BadValue for a number beyond a float's range. Finiteness and bounds are
    the caller's: this is the one type rule for real-valued options (``check_real``
    here, the hyperparameters of :mod:`cygru.optim`)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise BadType(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise BadValue(f"{name} must be {want}, got a number too large for a float") from None


def check_real(value, name, *, positive=False):
    """A finite real number >= 0 (> 0 with `positive`), as a float: not a bool, a
    string, a complex number or an array, not NaN or infinite."""
    want = "a finite number > 0" if positive else "a finite number >= 0"
    value = real_float(value, name, want)
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        raise BadValue(f"{name} must be {want}, got {value!r}")
    return value


def check_flag(value, name):
    """A boolean option: True/False (NumPy's bools, and the integers 0 and 1, too).

    The one rule for every boolean option of cygru (constructors, methods, functions,
    the optimizers' hyperparameters): ``bias=1`` means True, as ``nesterov=1`` does in
    ``torch.optim``. Anything else is refused rather than read by its truth value, so
    that ``bias="no"`` is not silently True and an array is not an ambiguous truth
    value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if (
        isinstance(value, numbers.Integral)
        and not isinstance(value, np.ndarray)
        and value in (0, 1)
    ):
        return bool(value)
    raise BadType(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_seed(seed):
    """None or a non-negative integer (NumPy's integer types included)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise BadType(
            f"seed must be None or a non-negative integer, got {type(seed).__name__} {seed!r}"
        )
    seed = operator.index(seed)
    if seed < 0:
        raise BadValue(f"seed must be None or a non-negative integer, got {seed}")
    return seed


def check_dropout(dropout):
    """A probability in [0, 1): a real number, not a bool or a string (as torch.nn.GRU)."""
    if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, numbers.Real):
        raise BadType(
            f"dropout must be a number in [0, 1), got {type(dropout).__name__} {dropout!r}"
        )
    dropout = float(dropout)
    if not 0.0 <= dropout < 1.0:
        raise BadValue(f"dropout must be in [0, 1), got {dropout}")
    return dropout


def check_direction_flags(reverse, bidirectional):
    """reverse (one direction run backwards in time) excludes bidirectional."""
    if reverse and bidirectional:
        raise BadValue(
            "reverse=True needs a single direction; bidirectional=True already runs both"
        )


def check_blas_sizes(hint="split the batch or the sequence", **sizes):
    """Every size fits BLAS's 32-bit int (the kernels index with int)."""
    for name, value in sizes.items():
        if value > _INT_MAX:
            raise BadValue(
                f"{name} = {value} does not fit BLAS's 32-bit int (max {_INT_MAX}); {hint}"
            )


# ---------------------------------------------------------------------------
# array conversion and checks
# ---------------------------------------------------------------------------


def as_float_array(a, dtype, name, device="cpu", check=None):
    """`a` as a C-contiguous array of `dtype` on `device` (copying only if needed).

    Real numeric input (bool, integer, float of any width) is converted; complex,
    object, string and other kinds raise TypeError. Arrays on the wrong device raise
    TypeError saying how to move them. `check(array)` runs on the unconverted array
    first, so shape and size errors are raised before any copy is made (a huge
    zero-strided view must not be materialised to be rejected).
    """
    if (
        type(a) is np.ndarray
        and device == "cpu"
        and a.dtype == dtype
        and a.flags.c_contiguous
        and a.flags.aligned
    ):
        # already what the kernels take: the common case, kept cheap for per-step calls
        if check is not None:
            check(a)
        return a
    on_gpu = is_cuda_object(a)
    if device == "cpu":
        if on_gpu:
            raise BadType(
                f"{name} is a GPU array but the module is on the CPU; call "
                f"module.to('cuda') or pass a NumPy array (e.g. cupy.asnumpy({name}))"
            )
        try:
            arr = np.asarray(a)
        except Exception as exc:
            raise BadType(f"{name} must be array-like, got {type(a).__name__}: {exc}") from None
    else:
        if not on_gpu:
            raise BadType(
                f"{name} is a host (NumPy) array but the module is on {device}; "
                f"pass cupy.asarray({name}) or call module.to('cpu')"
            )
        arr = as_cupy(a, device)
    if arr.dtype.kind not in "biuf":
        raise BadType(
            f"{name} must hold real numbers (it is converted to {np.dtype(dtype)}), "
            f"got dtype {arr.dtype}"
        )
    if check is not None:
        check(arr)
    if device == "cpu":
        # aligned too: the kernels read elements through typed pointers (an unaligned
        # float load is undefined behaviour in C; ascontiguousarray keeps such a buffer)
        return np.require(arr, dtype=dtype, requirements=["C", "A"])
    return ascontiguous(arr, dtype)


def as_shaped(a, shape, dtype, name, device="cpu", what=None):
    """`a` converted as :func:`as_float_array` and checked to have exactly `shape`;
    the message says ``expected <what>, got <its shape>``, `what` defaulting to
    ``<name> of shape <shape>``."""
    arr = as_float_array(a, dtype, name, device)
    if arr.shape != tuple(shape):
        what = what or f"{name} of shape {shape_str(shape)}"
        raise BadValue(f"expected {what}, got {shape_str(arr.shape)}")
    return arr


def detached(value):
    """A PyTorch tensor through ``detach()`` (a Parameter that requires grad refuses
    NumPy's and CUDA's array interfaces), anything else as it is."""
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):
        return value.detach()
    return value


def as_param(value, shape, dtype, name, device="cpu"):
    """A parameter array: `value` converted to `dtype` on `device`, of exactly `shape`
    (no copy when it already is one; the caller copies if it must own the memory). A
    PyTorch tensor that requires grad (an ``nn.Parameter``) is read through ``detach()``."""
    if value is None or isinstance(value, (str, bytes, dict)):
        raise BadType(f"{name} must be an array of numbers, got {type(value).__name__}")
    arr = as_float_array(detached(value), dtype, name, device)
    if arr.shape != tuple(shape):
        raise BadValue(f"{name} must have shape {tuple(shape)}, got {tuple(arr.shape)}")
    return arr


def check_lengths(lengths, T, B):
    """Validate per-sequence lengths: integer array of shape (B,), 1 <= L_b <= T;
    returned as a host int64 array."""
    try:
        arr = np.asarray(lengths.get() if is_cupy_array(lengths) else lengths)
    except Exception as exc:
        raise BadType(
            f"lengths must be an integer array-like, got {type(lengths).__name__}: {exc}"
        ) from None
    if arr.dtype.kind not in "iu":
        raise BadType(f"lengths must hold integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise BadValue(
            f"lengths must have shape ({B},) (one per batch row), got {shape_str(arr.shape)}"
        )
    if B and (arr.min() < 1 or arr.max() > T):
        bad = int(arr.min()) if arr.min() < 1 else int(arr.max())
        raise BadValue(f"every length must be in [1, {T}] (the sequence length), got {bad}")
    return arr.astype(np.int64)


# ---------------------------------------------------------------------------
# memory identity: arrays that would be updated twice
# ---------------------------------------------------------------------------


def memory_span(a):
    """``(low, high)``: the byte addresses that `a`'s elements occupy (``[low, high)``),
    read from its NumPy or CUDA array interface; None for an array without elements or
    an object that exposes neither interface."""
    if isinstance(a, np.ndarray) and a.flags.c_contiguous:  # the common case, quickly
        if a.size == 0:
            return None
        low = a.__array_interface__["data"][0]
        return low, low + a.nbytes
    iface = getattr(a, "__array_interface__", None)
    if not isinstance(iface, dict):
        iface = getattr(a, "__cuda_array_interface__", None)
    if not isinstance(iface, dict):
        return None
    shape = tuple(int(n) for n in iface["shape"])
    if 0 in shape:
        return None
    itemsize = np.dtype(iface["typestr"]).itemsize
    strides = iface.get("strides")
    if strides is None:  # C-contiguous
        strides, step = [], itemsize
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
    low = high = int(iface["data"][0])
    for n, s in zip(shape, strides):
        if s < 0:
            low += s * (n - 1)
        else:
            high += s * (n - 1)
    return low, high + itemsize


def overlaps_itself(a):
    """Whether two elements of `a` may share memory (a broadcast view, or an
    ``as_strided`` view with repeated elements): an in-place update of such an array
    writes one memory location several times. Read from the NumPy or CUDA array
    interface; conservative (an unusual interleaving of strides counts as overlapping).
    Contiguous arrays answer at once."""
    if isinstance(a, np.ndarray) and (a.flags.c_contiguous or a.flags.f_contiguous):
        return False
    iface = getattr(a, "__array_interface__", None)
    if not isinstance(iface, dict):
        iface = getattr(a, "__cuda_array_interface__", None)
    if not isinstance(iface, dict) or iface.get("strides") is None:
        return False  # no interface, or C-contiguous
    shape = tuple(int(n) for n in iface["shape"])
    if 0 in shape:
        return False
    dims = sorted((abs(int(s)), n) for n, s in zip(shape, iface["strides"]) if n > 1)
    extent = np.dtype(iface["typestr"]).itemsize  # bytes spanned by the inner dims
    for stride, n in dims:
        if stride < extent:
            return True
        extent += stride * (n - 1)
    return False


def _may_alias(a, b):
    """Whether two arrays whose memory spans overlap share an element: exact for NumPy
    arrays (within a bounded effort: too hard to tell counts as shared), the overlap of
    the spans for others."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        try:
            return bool(np.shares_memory(a, b, max_work=100_000))
        except RuntimeError:  # numpy's TooHardError
            return True
    return True


def shared_memory(named):
    """The first pair ``(name_a, name_b)`` of `named` (an iterable of ``(name, array)``)
    whose arrays share memory: the same array twice, or two views of one buffer
    (``w`` and ``w[0]``, ``w`` and ``w.T``); None when all are disjoint. The identity
    of the memory is what counts, not ``is``. A sweep over the sorted memory spans, so
    disjoint arrays cost one span each; distinct NumPy arrays that each own their memory
    (``flags.owndata``, as a module's parameters and gradients do) are disjoint at once."""
    named = list(named)
    owners = {}
    for name, a in named:
        if type(a) is not np.ndarray or not a.flags.owndata:
            break
        if id(a) in owners:
            return owners[id(a)], name
        owners[id(a)] = name
    else:
        return None
    spans = []
    for name, a in named:
        span = memory_span(a)
        if span is not None:
            spans.append((span[0], span[1], name, a))
    spans.sort(key=lambda s: (s[0], s[1]))
    active = []
    for low, high, name, a in spans:
        active = [s for s in active if s[1] > low]
        for _, _, other, b in active:
            if _may_alias(a, b):
                return other, name
        active.append((low, high, name, a))
    return None
