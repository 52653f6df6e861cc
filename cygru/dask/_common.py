"""What :mod:`cygru.dask`'s inference and training share: the checks of the module and of the
thread count, the module sent once as one key of the task graph, and the cutting of the
inputs along the batch axis into the arguments of one blockwise operation (one task per
batch chunk)."""

from __future__ import annotations

import math
import os
import sys
import uuid
import warnings
from contextlib import nullcontext
from typing import Union

try:
    import dask
    import dask.array as da
    from dask.layers import ArrayBlockwiseDep
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        'cygru.dask needs Dask: install it with `pip install "cygru[dask]"` '
        f"(dask[array] and distributed); the import failed with: {exc}"
    ) from exc

import numpy as np

from .._cpu import _parse_thread_count, _thread_count
from .._threads import get_num_threads
from .._typing import ArrayLike
from ..modules import GRU
from ..quantized import QuantizedGRU

# defined at run time too, for typing.get_type_hints
#: a Dask array, or an array_like held in memory
_DaskOrArray = Union[da.Array, ArrayLike]

_WHO = "cygru.dask"

#: the meta of a Dask array whose blocks are a task's record (a tuple), not arrays
_RECORD_META = np.empty((0, 0, 0), dtype=object)


# -- the module, sent once ------------------------------------------------------------------


def _check_module(module, who, inference=False):
    """A cygru.GRU on the CPU (or, for inference, a QuantizedGRU)."""
    if isinstance(module, QuantizedGRU) and not inference:
        raise TypeError(
            f"{who}: a cygru.QuantizedGRU ({module.precision}) is for inference only "
            "(cygru.dask.forward); train the float32 cygru.GRU and call cygru.quantize on "
            "it again"
        )
    if not isinstance(module, (GRU, QuantizedGRU) if inference else GRU):
        want = "a cygru.GRU or cygru.QuantizedGRU" if inference else "a cygru.GRU"
        raise TypeError(
            f"{who}: module must be {want}, got {type(module).__name__}"
            + (
                " (a GRUCell has no time axis: run it step by step, or use a GRU with num_layers=1)"
                if type(module).__name__ in ("GRUCell", "QuantizedGRUCell")
                else ""
            )
        )
    if module.device != "cpu":
        raise ValueError(
            f"{who}: cygru.dask runs modules on the workers' CPUs; this module "
            f"is on {module.device!r}: move it with module.to('cpu')"
        )


def _snapshot(module):
    """A copy of the module's options and current weights (no gradients), rebuilt
    through the validated unpickling path: what every task will run."""
    state = module.__getstate__()
    if isinstance(module, GRU):
        state["grads"] = None
    copy = type(module).__new__(type(module))
    copy.__setstate__(state)
    return copy


def _module_key(module):
    """The snapshot as one key of the task graph (computed on one worker, fetched once by
    each other worker that needs it; recomputed if the worker holding it dies)."""
    return dask.delayed(_snapshot(module), name=f"cygru-module-{uuid.uuid4().hex}")


# -- threads --------------------------------------------------------------------------------


def _check_threads(threads, who):
    """None, or a thread count as cygru.set_num_threads takes it, read by the one parser
    (cygru._cpu._parse_thread_count); a ValueError naming `who` otherwise. Checked in the
    client, before any task is built."""
    if threads is None:
        return None
    try:
        return _parse_thread_count(threads, f"{who}: threads")
    except ValueError as exc:
        raise ValueError(f"{exc} (or None: cygru's default)") from None


def _task_thread_count(threads):
    """A context manager: within it, cygru calls on the calling (task's) thread use
    `threads` threads, as cygru.set_num_threads(threads) would, however many cores the
    worker has; the process-wide setting is untouched. None: cygru's default."""
    return nullcontext() if threads is None else _thread_count(threads)


def _task_threads(threads):
    """cygru's thread count in a task run with `threads` (what the policy gives)."""
    with _task_thread_count(threads):
        return get_num_threads()


# -- cutting the inputs along the batch -----------------------------------------------------


class _BatchPieces(ArrayBlockwiseDep):
    """NumPy pieces of an input, one per batch chunk, as an argument of a blockwise
    operation: each task's piece is written into that task (no task of its own)."""

    def __init__(self, pieces, batch_chunks):
        super().__init__((tuple(batch_chunks),))
        self.pieces = pieces
        self._token = uuid.uuid4().hex

    def __getitem__(self, idx):
        return self.pieces[idx[0]]

    def __dask_tokenize__(self):
        return ("cygru-batch-pieces", self._token)


def _block(arg):
    """A task's block of an input: a Dask array's block arrives in nested one-item lists
    (one level per axis other than the batch's, each one chunk), a NumPy piece as is."""
    while isinstance(arg, list):
        (arg,) = arg
    return arg


def _caller_stacklevel():
    """The ``stacklevel`` of a warning issued by the caller of this function that points
    at the first frame outside cygru.dask (the user's call, whatever the path inside)."""
    frame, level = sys._getframe(1), 1
    here = os.path.dirname(os.path.abspath(__file__))
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return level


def _one_chunk(arr, keep_axis, rechunk, name, who):
    """`arr` (a Dask array) with every axis but `keep_axis` in one chunk."""
    split = [ax for ax in range(arr.ndim) if ax != keep_axis and len(arr.chunks[ax]) > 1]
    if not split:
        return arr
    what = ", ".join(f"axis {ax} in {len(arr.chunks[ax])} chunks" for ax in split)
    msg = (
        f"{who}: {name} must be chunked along its batch axis (axis {keep_axis}) only, "
        f"with whole sequences in each chunk (a GRU runs over a whole sequence); it is "
        f"cut along {what}"
    )
    if not rechunk:
        raise ValueError(
            msg + "; rechunk it, e.g. "
            f"{name}.rechunk({{{', '.join(f'{ax}: -1' for ax in split)}}}), "
            "or pass rechunk=True"
        )
    warnings.warn(
        msg + "; rechunking those axes into one chunk (pass rechunk=False to make this an error)",
        da.PerformanceWarning,
        stacklevel=_caller_stacklevel(),
    )
    return arr.rechunk({ax: -1 for ax in split})


def _known_chunks(arr, name, who):
    if any(math.isnan(c) for cs in arr.chunks for c in cs):
        raise ValueError(
            f"{who}: {name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        )


def _batch_arg(arr, axis, batch_chunks, shape, name, who, rechunk, letters):
    """`arr` (batch axis `axis`) as an (argument, index) pair of ``da.blockwise`` whose
    batch index is ``"b"``: a Dask array (whose batch chunks must match x's; its other
    axes get letters of their own from `letters`, each one chunk), NumPy pieces written
    into the tasks otherwise; None -> (None, None)."""
    if arr is None:
        return None, None
    if isinstance(arr, da.Array):
        if arr.ndim != len(shape):
            raise ValueError(
                f"{who}: {name} must have {len(shape)} dimensions {shape}, got shape {arr.shape}"
            )
        _known_chunks(arr, name, who)
        if tuple(arr.shape) != shape:
            raise ValueError(f"{who}: {name} must have shape {shape}, got {arr.shape}")
        if tuple(arr.chunks[axis]) != tuple(batch_chunks):
            raise ValueError(
                f"{who}: {name}'s chunks along its batch axis (axis {axis}) "
                f"{arr.chunks[axis]} must match x's batch chunks {batch_chunks}; "
                f"rechunk it with {name}.rechunk({{{axis}: x.chunks[...]}})"
            )
        integral = np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_
        if name == "lengths" and not integral:
            raise TypeError(f"{who}: lengths must be integers, got dtype {arr.dtype}")
        if not (integral or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{who}: {name} must hold real numbers, got dtype {arr.dtype}")
        arr = _one_chunk(arr, axis, rechunk, name, who)
        index = "".join("b" if ax == axis else next(letters) for ax in range(arr.ndim))
        return arr, index
    if hasattr(arr, "__dask_graph__"):
        raise TypeError(
            f"{who}: {name} must be a Dask array or a NumPy array, got {type(arr).__name__}"
        )
    try:
        arr = np.asarray(arr)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{who}: {name} must be an array, got {type(arr).__name__}: {exc}"
        ) from None
    if arr.dtype == object or arr.shape != shape:
        raise ValueError(
            f"{who}: {name} must have shape {shape}, got {arr.shape}"
            + (" of objects" if arr.dtype == object else "")
        )
    edges = np.cumsum((0,) + tuple(batch_chunks))
    index = [slice(None)] * arr.ndim
    pieces = []
    for a, b in zip(edges[:-1], edges[1:]):
        index[axis] = slice(int(a), int(b))
        pieces.append(arr[tuple(index)].copy())  # the caller's array is never shared
    return _BatchPieces(pieces, batch_chunks), "b"


def _check_numpy_lengths(lengths, T, who):
    if lengths is None or isinstance(lengths, da.Array):
        return
    arr = np.asarray(lengths)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{who}: lengths must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 1 or arr.max() > T):
        raise ValueError(
            f"{who}: lengths must be in [1, {T}] (the time axis), got values "
            f"from {arr.min()} to {arr.max()}"
        )


#####
class _Plan:
    """x validated and cut along its batch axis, and every input aligned with it as
    arguments of one blockwise operation: x's index is ``x_index`` (``"b"`` its batch
    axis, ``"t"`` time, ``"i"`` features), every other input's batch index is ``"b"``."""

    def __init__(self, module, x, lengths, h0, rechunk, who, inference=False):
        _check_module(module, who, inference)
        if not isinstance(x, da.Array):
            raise TypeError(
                f"{who}: x must be a dask.array.Array chunked along the batch "
                f"axis, got {type(x).__name__}; wrap a NumPy array with "
                "dask.array.from_array(x, chunks=...) or call the module directly"
            )
        if x.ndim != 3:
            raise ValueError(
                f"{who}: x must be a batch of sequences, (T, B, I) or with "
                f"batch_first (B, T, I); got {x.ndim} dimensions {x.shape}"
            )
        _known_chunks(x, "x", who)
        self.batch_axis = b_ax = 0 if module.batch_first else 1
        t_ax = 1 - b_ax
        if x.shape[2] != module.input_size:
            raise ValueError(
                f"{who}: x has {x.shape[2]} features (axis 2), the module's "
                f"input_size is {module.input_size}"
            )
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"{who}: x must hold real numbers, got dtype {x.dtype}")
        x = _one_chunk(x, b_ax, rechunk, "x", who)
        self.x, self.T, self.B = x, x.shape[t_ax], x.shape[b_ax]
        self.chunks = tuple(int(c) for c in x.chunks[b_ax])
        self.module = module
        self.who = who
        self.LD = module.num_layers * module.num_directions
        self.H = module.hidden_size
        self.DH = module.num_directions * module.hidden_size
        self.rechunk = rechunk
        self.x_index = "bti" if b_ax == 0 else "tbi"
        self._letters = iter("cdefgjklmnopqrsuvwxyz")  # the other inputs' other axes
        _check_numpy_lengths(lengths, self.T, who)
        self.lengths = self.cut(lengths, (self.B,), 0, "lengths")
        self.h0 = self.cut(h0, (self.LD, self.B, self.H), 1, "h0")

    def output_shape(self, b):
        return (b, self.T, self.DH) if self.batch_axis == 0 else (self.T, b, self.DH)

    def cut(self, arr, shape, axis, name):
        """`arr` as an (argument, index) pair of the blockwise operation."""
        return _batch_arg(
            arr, axis, self.chunks, shape, name, self.who, self.rechunk, self._letters
        )
