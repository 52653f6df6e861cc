"""Scale out on Dask: batch inference and data-parallel training across workers.

Needs the optional extra ``pip install "cygru[dask]"`` (``dask[array]`` and ``distributed``
of the same release). Import it explicitly: ``import cygru.dask``.

* :func:`forward` runs a :class:`cygru.GRU` (or a :class:`cygru.QuantizedGRU`) over a
  Dask array of sequences chunked along the batch axis and returns Dask arrays
  ``output`` and ``h_n`` in PyTorch's layouts.
* :func:`grad_step` computes the gradients of a loss over the whole batch, one shard
  (batch chunk) per task, sums them by a tree reduction in a fixed order and adds them
  into ``module.grads``; :class:`DataParallelTrainer` adds the optimiser step (any of
  :mod:`cygru.optim`'s optimizers: ``cygru.optim.SGD``, ``Adam``, ``AdamW``).

Everything runs on Dask's current scheduler: the ``distributed.Client`` you created (it
becomes the default when it starts), or Dask's local threaded scheduler without one.

How the work is cut
-------------------
A GRU runs over the whole of a sequence, so every chunk of ``x`` must hold whole
sequences: one chunk along the time and feature axes and any chunking along the batch
axis. An ``x`` cut along time or features is rechunked (with a
:class:`dask.array.PerformanceWarning` that says so) or, with ``rechunk=False``, refused
with ``ValueError``. ``lengths``, ``h0`` and training targets must be cut along the
batch like ``x`` (a NumPy array is cut to match).

The module is sent once: its options and weights (the compact pickle of
:class:`cygru.GRU`: the weights' bytes plus about 100 bytes per parameter array and a few
hundred for the options) become a single key of the
task graph, which one worker computes and the others fetch once each (twice, at most, if Dask's
work stealing moves that task); the per-chunk tasks only refer to that key. The weights are a snapshot taken when :func:`forward` or
:func:`grad_step` is called: later changes to the module do not reach tasks already built.
A key of the graph (unlike a scattered future) is recomputed like any other when the
worker holding it dies, so a lost worker never loses the model.

Threads
-------
cygru's threads times Dask's worker threads must not exceed the cores. The policy: each
task uses **one cygru thread per Dask thread by default** on a distributed worker, because
Dask's nanny starts worker processes with ``OMP_NUM_THREADS=1`` and cygru's default thread
count honours OpenMP's setting (see :func:`cygru.get_num_threads`); Dask sizes its
workers' threads to the cores, so the sum fits. On the local threaded scheduler (no
``Client``) the tasks run in the caller's process, where concurrent cygru calls share the
cores (two calls at once use half each). Give ``threads=k`` to run each task with ``k``
cygru threads instead (for a worker with fewer Dask threads than cores, e.g.
``threads_per_worker=1`` on a 4-core machine: ``threads=4``): ``k`` exactly, as
``cygru.set_num_threads(k)`` gives, whatever the worker's core count (more threads than
cores only adds waiting; you size ``k``) and not shared with the tasks running beside it;
small problems use fewer, as with any count (see :func:`cygru.get_num_threads`). It is
the task's own thread's setting, so it never changes the process-wide one. A thread count
fixed in a worker process (``CYGRU_NUM_THREADS`` in its environment or
:func:`cygru.set_num_threads` through ``client.run``) wins over both.

Reproducibility
---------------
Inference results are bitwise identical to one call of the module over the whole batch
in one process, float32, float64 and quantized (int8, bf16: their products give a row the
same bits at any batch size), whatever the chunking and the thread counts: cygru's
engine computes a sequence the same way whatever the rows around it and the threads, for a
given kernel, and each chunk's task picks the kernel of the whole batch's size (batches of
at most 4 rows take another kernel; see the Reproducibility section of the documentation).
Gradients are summed over shards in a fixed tree (``split_every`` shards per node, left to
right), never in completion order: two runs with the same chunks give the same bits, equal
to summing the per-shard ``vjp`` gradients in that order in one process, and agree with one
``vjp`` over the whole batch to float tolerance (the sums are associated differently).
"""

from __future__ import annotations

import inspect
import math
import numbers
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Callable, List, Literal, Optional, Protocol, Tuple, Union

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        'cygru.dask needs Dask: install it with `pip install "cygru[dask]"` '
        f"(dask[array] and distributed); the import failed with: {exc}"
    ) from exc

import numpy as np

from . import optim as _optim
from ._typing import ArrayLike
from .modules import GRU
from .quantized import QuantizedGRU

# defined at run time too, for typing.get_type_hints
#: a Dask array, or an array_like held in memory
_DaskOrArray = Union[da.Array, ArrayLike]
#: ``"mse"``, or ``loss(output, h_n, target) -> (value, d_output, d_h_n)``
_Loss = Union[Literal["mse"], Callable[..., Tuple[Any, Any, Any]]]

__all__ = ["forward", "grad_step", "DataParallelTrainer"]


class _StepsModule(Protocol):
    """An optimiser whose ``step(module)`` updates the module from ``module.grads``."""

    def step(self, module: GRU, /) -> object: ...


class _StepsItself(Protocol):
    """An optimiser whose ``step()`` reads the gradients of the module it holds."""

    def step(self) -> object: ...


#: what :class:`DataParallelTrainer` accepts as its optimizer
_OptimizerLike = Union[_optim.Optimizer, _StepsModule, _StepsItself, Callable[[GRU], object]]

if not TYPE_CHECKING:  # (a module __getattr__ would make every name Any to type checkers)

    def __getattr__(name):
        if name == "SGD":
            raise AttributeError(
                "cygru.dask.SGD was removed: use cygru.optim.SGD(module, lr=..., "
                "momentum=...), which DataParallelTrainer takes, as it takes cygru.optim.Adam "
                "and AdamW"
            )
        raise AttributeError(f"module 'cygru.dask' has no attribute {name!r}")


_WHO = "cygru.dask"


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
    from . import _cpu

    try:
        return _cpu._parse_thread_count(threads, f"{who}: threads")
    except ValueError as exc:
        raise ValueError(f"{exc} (or None: cygru's default)") from None


def _task_thread_count(threads):
    """A context manager: within it, cygru calls on the calling (task's) thread use
    `threads` threads, as cygru.set_num_threads(threads) would, however many cores the
    worker has; the process-wide setting is untouched. None: cygru's default."""
    from contextlib import nullcontext

    from . import _cpu

    return nullcontext() if threads is None else _cpu._thread_count(threads)


def _task_threads(threads):
    """cygru's thread count in a task run with `threads` (what the policy gives)."""
    from . import get_num_threads

    with _task_thread_count(threads):
        return get_num_threads()


# -- cutting the inputs along the batch -----------------------------------------------------


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
        stacklevel=4,
    )
    return arr.rechunk({ax: -1 for ax in split})


def _known_chunks(arr, name, who):
    if any(math.isnan(c) for cs in arr.chunks for c in cs):
        raise ValueError(
            f"{who}: {name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        )


def _blocks(arr, axis, batch_chunks, shape, name, who, rechunk):
    """Per batch chunk, the piece of `arr` (batch axis `axis`): a list of Delayed for a
    Dask array (whose batch chunks must match), of NumPy slices otherwise; None -> Nones."""
    if arr is None:
        return [None] * len(batch_chunks)
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
        return list(arr.to_delayed().reshape(-1))
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
    return pieces


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


class _Plan:
    """x validated and cut along its batch axis, and the per-chunk pieces of every input
    aligned with it."""

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
        self.x_blocks = list(x.to_delayed().reshape(-1))
        _check_numpy_lengths(lengths, self.T, who)
        self.lengths = _blocks(lengths, 0, self.chunks, (self.B,), "lengths", who, rechunk)
        self.h0 = _blocks(h0, 1, self.chunks, (self.LD, self.B, self.H), "h0", who, rechunk)

    def output_shape(self, b):
        return (b, self.T, self.DH) if self.batch_axis == 0 else (self.T, b, self.DH)

    def cut(self, arr, shape, axis, name):
        return _blocks(arr, axis, self.chunks, shape, name, self.who, self.rechunk)


# -- inference ------------------------------------------------------------------------------


def _forward_block(module, x, lengths, h0, threads, batch):
    # `batch`: the whole batch's size, which picks the kernel of the chunk's products (the
    # small-batch dot kernel or the packed one round differently), so every chunk gives
    # its rows the bits of one call over the whole batch
    from . import _cpu

    with _task_thread_count(threads), _cpu._kernel_rows(batch):
        return module(x, h0=h0, lengths=lengths)


def forward(
    module: Union[GRU, QuantizedGRU],
    x: da.Array,
    lengths: Optional[_DaskOrArray] = None,
    h0: Optional[ArrayLike] = None,
    *,
    threads: Optional[int] = None,
    rechunk: bool = True,
) -> Tuple[da.Array, da.Array]:
    """Run a GRU over a Dask array of sequences, one task per batch chunk.

    Parameters
    ----------
    module : cygru.GRU or cygru.QuantizedGRU
        On the CPU. Its options and current weights are sent once (one key of the task
        graph); later changes to the module do not reach this computation. A
        :class:`cygru.QuantizedGRU` (int8 or bf16, from :func:`cygru.quantize`) gives the
        bits of calling it on the whole batch, like a float module.
    x : dask.array.Array
        (T, B, I), or (B, T, I) when ``module.batch_first``, chunked along the batch
        axis only. Chunks along time or features are merged into one (with a
        ``dask.array.PerformanceWarning``), or refused with ``rechunk=False``.
    lengths : dask.array.Array or array_like of int, optional
        (B,) per-sequence lengths (see :meth:`cygru.GRU.__call__`). A Dask array must be
        chunked like x's batch axis; a NumPy array is cut to match.
    h0 : dask.array.Array or array_like, optional
        (L*D, B, H) initial states; the batch axis is axis 1, chunked like x's batch
        axis if a Dask array. Zeros when omitted.
    threads : int, optional
        cygru threads per task, 1 to 256: exactly ``threads``, as
        ``cygru.set_num_threads(threads)`` gives, whatever the worker's core count, set
        for the task's own thread only (small problems use fewer, as with any count). By
        default, cygru's default in the worker: 1 under Dask's nanny
        (``OMP_NUM_THREADS=1``). A count fixed in the worker process
        (``CYGRU_NUM_THREADS``, :func:`cygru.set_num_threads`) wins.
    rechunk : bool, default True
        Merge chunks along time/features (with a warning) instead of raising.

    Returns
    -------
    output : dask.array.Array
        (T, B, D*H), or (B, T, D*H) with ``batch_first``; chunked like x's batch axis.
    h_n : dask.array.Array
        (L*D, B, H), chunked along axis 1 like x's batch axis.

    Raises
    ------
    TypeError
        x is not a Dask array; module is not a :class:`cygru.GRU` or
        :class:`cygru.QuantizedGRU`.
    ValueError
        Wrong shapes, chunks of lengths/h0 not aligned with x's batch chunks, x cut along
        time or features with ``rechunk=False``, lengths out of range. Errors in a chunk's
        values (lengths in a Dask array) are raised by cygru when computed.

    Examples
    --------
    >>> import numpy as np, dask, dask.array as da, cygru, cygru.dask
    >>> gru = cygru.GRU(3, 4, bidirectional=True, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((5, 10, 3)).astype(np.float32)
    >>> out, h_n = cygru.dask.forward(gru, da.from_array(x, chunks=(5, 4, 3)))
    >>> out.chunks[1], h_n.chunks[1]
    ((4, 4, 2), (4, 4, 2))
    >>> with dask.config.set(scheduler="threads"):
    ...     out_np, h_n_np = dask.compute(out, h_n)
    >>> ref_out, ref_h_n = gru(x)
    >>> bool(np.array_equal(out_np, ref_out) and np.array_equal(h_n_np, ref_h_n))
    True

    A quantized module runs the same way, with the bits of one call over the batch:

    >>> q = cygru.quantize(gru, "int8")
    >>> out, h_n = cygru.dask.forward(q, da.from_array(x, chunks=(5, 3, 3)))
    >>> with dask.config.set(scheduler="threads"):
    ...     out_np, h_n_np = dask.compute(out, h_n)
    >>> ref_out, ref_h_n = q(x)
    >>> bool(np.array_equal(out_np, ref_out) and np.array_equal(h_n_np, ref_h_n))
    True
    """
    who = f"{_WHO}.forward"
    threads = _check_threads(threads, who)
    plan = _Plan(module, x, lengths, h0, rechunk, who, inference=True)
    mod = _module_key(module)
    run = dask.delayed(_forward_block, nout=2, pure=True)
    dtype = module.dtype
    outs, hns = [], []
    for b, xb, lb, hb in zip(plan.chunks, plan.x_blocks, plan.lengths, plan.h0):
        o, h = run(mod, xb, lb, hb, threads, plan.B)
        outs.append(
            da.from_delayed(o, plan.output_shape(b), dtype=dtype, meta=np.empty((0, 0, 0), dtype))
        )
        hns.append(
            da.from_delayed(h, (plan.LD, b, plan.H), dtype=dtype, meta=np.empty((0, 0, 0), dtype))
        )
    return (da.concatenate(outs, axis=plan.batch_axis), da.concatenate(hns, axis=1))


# -- data-parallel training -----------------------------------------------------------------


def _valid_mask(lengths, T, batch_axis):
    """(T, b, 1) or (b, T, 1) boolean: step t of sequence b is inside its length."""
    valid = np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    return (valid.T if batch_axis == 0 else valid)[..., None]


def _shard_grads(module, x, lengths, h0, target, d_output, d_h_n, loss, on, threads):
    """One shard: vjp + backward on a private copy of the module (tasks of one worker
    share the module object, and backward adds into its grads). Returns
    (loss sum or None, element count, gradients)."""
    local = _snapshot(module)
    with _task_thread_count(threads):
        (out, h_n), backward = local.vjp(x, h0=h0, lengths=lengths)
        value, count = None, 0
        if callable(loss):
            value, d_output, d_h_n = loss(out, h_n, target)
            value = None if value is None else float(value)
        elif target is not None:
            batch_axis = 0 if module.batch_first else 1
            y = out if on == "output" else h_n
            diff = y - np.asarray(target, dtype=y.dtype)
            if on == "output" and lengths is not None:
                diff = diff * _valid_mask(lengths, out.shape[1 - batch_axis], batch_axis)
                count = int(np.sum(lengths)) * out.shape[2]
            else:
                count = diff.size
            value = float(np.sum(np.square(diff, dtype=np.float64)))
            grad = 2 * diff  # of the summed loss; the mean is taken at the end
            d_output, d_h_n = (grad, None) if on == "output" else (None, grad)
        backward(d_output, d_h_n)
    return value, count, local.grads


def _sum_parts(*parts):
    """Sum shard results left to right (a fixed order: bitwise reproducible)."""
    value, count, grads = parts[0]
    grads = {k: g.copy() for k, g in grads.items()}
    for v, c, g in parts[1:]:
        value = None if value is None or v is None else value + v
        count += c
        for k in grads:
            grads[k] += g[k]
    return value, count, grads


def grad_step(
    module: GRU,
    x: da.Array,
    targets: Optional[_DaskOrArray] = None,
    *,
    lengths: Optional[_DaskOrArray] = None,
    h0: Optional[ArrayLike] = None,
    loss: _Loss = "mse",
    on: Literal["output", "h_n"] = "output",
    d_output: Optional[_DaskOrArray] = None,
    d_h_n: Optional[_DaskOrArray] = None,
    split_every: int = 2,
    threads: Optional[int] = None,
    rechunk: bool = True,
) -> Optional[float]:
    """Gradients of a loss over the whole batch, one shard per task, added into
    ``module.grads``.

    Each batch chunk of x (a shard) runs ``vjp`` and ``backward`` on a worker; the
    per-shard gradients are summed by a tree reduction (``split_every`` per node, in a
    fixed order) and the sum is ADDED into ``module.grads``, as a ``backward`` closure
    would (call :meth:`cygru.GRU.zero_grad` first). Computes now, on Dask's current
    scheduler; the weights are not changed (see :class:`DataParallelTrainer`).

    The loss is given in one of three ways:

    * ``targets`` with ``loss="mse"``: the mean squared error between ``targets`` and
      ``output`` (``on="output"``, the same layout as output) or ``h_n`` (``on="h_n"``,
      (L*D, B, H)), averaged over the **whole batch**: with ``lengths``, over the steps
      inside each sequence only (padded steps count neither in the sum nor in the count).
      Each shard backpropagates the gradient of its sum of squares and the total is
      divided once by the global count, so the result is the gradient of the mean over
      the whole batch, not a mean of shard means.
    * ``loss`` a callable ``loss(output, h_n, target) -> (value, d_output, d_h_n)``, run on
      each shard (``target`` is that shard's piece of ``targets``, or None); d_output or
      d_h_n may be None. Shard values and gradients are **summed**: for a mean over the
      batch, divide by the global count inside the callable.
    * ``d_output`` and/or ``d_h_n``: the loss gradients as arrays (Dask arrays chunked
      like x's batch axis, or NumPy arrays); the loss value is then unknown (None).

    Parameters
    ----------
    module : cygru.GRU
        On the CPU, ``dropout == 0`` (each shard would draw the same masks).
    x, lengths, h0, threads, rechunk
        As in :func:`forward`.
    targets : dask.array.Array or array_like, optional
        Shaped like output (``on="output"``) or h_n (``on="h_n"``) over the whole
        batch, cut along the batch like x (its batch axis: that of output, or 1).
    loss : "mse" or callable
    on : "output" or "h_n"
        What ``targets`` are compared with (``loss="mse"``), and their layout (for a
        callable too).
    d_output, d_h_n : dask.array.Array or array_like, optional
        Gradients of the loss with respect to output and h_n.
    split_every : int, default 2
        Shard results summed per node of the reduction tree.

    Returns
    -------
    float or None
        The loss over the whole batch (mean for ``"mse"``, the sum of shard values for a
        callable), None for ``d_output``/``d_h_n``.

    Examples
    --------
    >>> import numpy as np, dask, dask.array as da, cygru, cygru.dask
    >>> gru = cygru.GRU(3, 4, dtype=np.float64, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((5, 8, 3)), rng.standard_normal((5, 8, 4))
    >>> with dask.config.set(scheduler="threads"):
    ...     loss = cygru.dask.grad_step(gru, da.from_array(x, chunks=(5, 2, 3)), y)
    >>> distributed = {k: g.copy() for k, g in gru.grads.items()}
    >>> gru.zero_grad()
    >>> (out, _), backward = gru.vjp(x)          # the same over the whole batch at once
    >>> _ = backward(2 * (out - y) / out.size)
    >>> bool(np.isclose(loss, np.mean((out - y) ** 2), rtol=1e-12))
    True
    >>> all(np.allclose(distributed[k], g, rtol=1e-12, atol=1e-14) for k, g in gru.grads.items())
    True
    """
    who = f"{_WHO}.grad_step"
    _check_module(module, who)
    threads = _check_threads(threads, who)
    if (
        isinstance(split_every, (bool, np.bool_))
        or not isinstance(split_every, numbers.Integral)
        or split_every < 2
    ):
        raise ValueError(f"{who}: split_every must be an integer >= 2, got {split_every!r}")
    has_grads = d_output is not None or d_h_n is not None
    if not callable(loss) and loss != "mse":
        raise ValueError(
            f"{who}: loss must be 'mse' or a callable "
            f"loss(output, h_n, target) -> (value, d_output, d_h_n), got {loss!r}"
        )
    if on not in ("output", "h_n"):
        raise ValueError(f"{who}: on must be 'output' or 'h_n', got {on!r}")
    if has_grads and (targets is not None or callable(loss)):
        raise ValueError(
            f"{who}: give either d_output/d_h_n, or targets and/or a loss callable, not both"
        )
    if not has_grads and targets is None and not callable(loss):
        raise ValueError(
            f"{who}: nothing to differentiate: give targets (loss='mse'), a "
            "loss callable, or d_output/d_h_n"
        )
    if isinstance(module, GRU) and module.dropout > 0 and module.num_layers > 1:
        raise ValueError(
            f"{who}: dropout > 0 is not supported in data-parallel training "
            "(every shard would draw the same masks); set module.dropout = 0"
        )
    plan = _Plan(module, x, lengths, h0, rechunk, who)
    if plan.B == 0:
        raise ValueError(f"{who}: x holds no sequences (its batch axis has length 0)")
    out_shape = plan.output_shape(plan.B)
    hn_shape = (plan.LD, plan.B, plan.H)
    t_shape, t_axis = (out_shape, plan.batch_axis) if on == "output" else (hn_shape, 1)
    t_blocks = plan.cut(targets, t_shape, t_axis, "targets")
    do_blocks = plan.cut(d_output, out_shape, plan.batch_axis, "d_output")
    dh_blocks = plan.cut(d_h_n, hn_shape, 1, "d_h_n")
    mod = _module_key(module)
    shard = dask.delayed(_shard_grads, pure=True)
    level = [
        shard(mod, xb, lb, hb, tb, ob, hnb, loss, on, threads)
        for xb, lb, hb, tb, ob, hnb in zip(
            plan.x_blocks, plan.lengths, plan.h0, t_blocks, do_blocks, dh_blocks
        )
    ]
    combine = dask.delayed(_sum_parts, pure=True)
    while len(level) > 1:
        level = [
            combine(*level[i : i + split_every])
            if len(level[i : i + split_every]) > 1
            else level[i]
            for i in range(0, len(level), split_every)
        ]
    ((value, count, grads),) = dask.compute(level[0])
    if not callable(loss) and not has_grads:
        # the mean over the whole batch: the shards' sums, divided once
        value = value / count
        grads = {k: g / g.dtype.type(count) for k, g in grads.items()}
    module._accumulate(grads, who=who)  # all or nothing: a failed call adds nothing
    return value


# -- optimisers and the trainer -------------------------------------------------------------


def _optimizer_step(optimizer, module):
    """A function module -> None that steps `optimizer` after the trainer's gradients are in
    ``module.grads``: a :class:`cygru.optim.Optimizer` over the module (its ``step()``
    reads them), an object with ``.step(module)`` or ``.step()``, or a callable
    ``update(module)``."""
    who = "cygru.dask.DataParallelTrainer"
    if isinstance(optimizer, _optim.Optimizer):
        items = optimizer._params
        if not any(item is module for item in items):
            raise ValueError(
                f"{who}: the optimizer ({optimizer!r}) does not update the trainer's module: "
                "build it over that module, e.g. cygru.optim.Adam(module, lr=1e-3)"
            )
        others = [item for item in items if item is not module]
        if others:
            what = ", ".join(
                type(o).__name__ if _optim._is_module(o) else f"plain arrays {list(o)}"
                for o in others
            )
            raise ValueError(
                f"{who}: the optimizer also updates {what}, for which the trainer "
                "computes no gradients; give it an optimizer over the trainer's module "
                "alone (step the others with an optimizer of their own)"
            )
        return lambda m: optimizer.step()
    step = getattr(optimizer, "step", None)
    if callable(step):
        try:
            params = list(inspect.signature(step).parameters.values())
        except (TypeError, ValueError):
            params = None
        # step(module) when its first parameter is required; step() when it takes none or
        # its first has a default (PyTorch's step(closure=None): it reads the grads itself)
        takes_module = params is None or (
            bool(params)
            and params[0].default is inspect.Parameter.empty
            and params[0].kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )
        return (lambda m: step(m)) if takes_module else (lambda m: step())
    if callable(optimizer):
        return optimizer
    raise TypeError(
        f"{who}: optimizer must be a cygru.optim optimizer over the module (e.g. "
        "cygru.optim.Adam(module, lr=1e-3)), an object with a .step(module) method (or "
        ".step() reading the module's grads) or a callable update(module), got "
        f"{type(optimizer).__name__}"
    )


class DataParallelTrainer:
    """Data-parallel training of a :class:`cygru.GRU` on Dask workers.

    Every :meth:`step`: zero the module's gradients, compute the whole batch's gradients
    with :func:`grad_step` (one shard per batch chunk, summed by a tree reduction), let
    the optimiser update the weights on the driver; the next step sends the new weights
    to the workers (once, as one key of its graph).

    Parameters
    ----------
    module : cygru.GRU
        Trained in place.
    optimizer : cygru.optim.Optimizer, object with ``step(module)`` or ``step()``, or callable
        Reads ``module.grads`` and updates the parameters in place: one of
        :mod:`cygru.optim`'s optimizers built over ``module`` (``cygru.optim.SGD``,
        ``Adam``, ``AdamW``; its state, e.g. Adam's moments, lives on the driver and
        carries over from step to step), an object whose ``step(module)`` (or ``step()``)
        does that, or a callable ``update(module)``.
    loss, on, split_every, threads, rechunk
        As in :func:`grad_step`.

    Raises
    ------
    TypeError
        ``module`` is not a :class:`cygru.GRU`, or ``optimizer`` has no ``step`` and is
        not callable.
    ValueError
        A :mod:`cygru.optim` optimizer that does not update ``module``, or that also
        updates plain arrays or other modules (the trainer computes no gradients for
        them).

    Attributes
    ----------
    history : list of float
        The loss of every step.

    Examples
    --------
    >>> import numpy as np, dask, dask.array as da, cygru, cygru.dask
    >>> gru = cygru.GRU(2, 4, dtype=np.float64, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> x = da.from_array(rng.standard_normal((6, 8, 2)), chunks=(6, 4, 2))
    >>> y = np.zeros((6, 8, 4))
    >>> trainer = cygru.dask.DataParallelTrainer(gru, cygru.optim.Adam(gru, lr=0.05))
    >>> with dask.config.set(scheduler="threads"):
    ...     losses = [trainer.step(x, y) for _ in range(5)]
    >>> bool(losses[-1] < losses[0])
    True
    """

    history: List[Optional[float]]

    def __init__(
        self,
        module: GRU,
        optimizer: _OptimizerLike,
        *,
        loss: _Loss = "mse",
        on: Literal["output", "h_n"] = "output",
        split_every: int = 2,
        threads: Optional[int] = None,
        rechunk: bool = True,
    ) -> None:
        _check_module(module, "cygru.dask.DataParallelTrainer")
        self._module = module
        self.optimizer = optimizer  # checked against the module (the property below)
        self.loss, self.on, self.split_every = loss, on, split_every
        self.threads, self.rechunk = threads, rechunk
        self.history = []

    @property
    def module(self) -> GRU:
        """The module trained (read-only: a trainer for another module is a new trainer,
        with an optimizer over that module)."""
        return self._module

    @module.setter
    def module(self, value: GRU) -> None:
        raise AttributeError(
            "cygru.dask.DataParallelTrainer: module is read-only (the optimizer updates "
            "this module); build a new trainer, with an optimizer over the new module"
        )

    @property
    def optimizer(self) -> _OptimizerLike:
        """The optimizer; one assigned later is checked as the constructor checks it
        (a :mod:`cygru.optim` optimizer must update :attr:`module` alone) and used from
        the next :meth:`step`."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: _OptimizerLike) -> None:
        update = _optimizer_step(value, self._module)
        self._optimizer, self._update = value, update

    def step(
        self,
        x: da.Array,
        targets: Optional[_DaskOrArray] = None,
        *,
        lengths: Optional[_DaskOrArray] = None,
        h0: Optional[ArrayLike] = None,
    ) -> Optional[float]:
        """One training step over the batch ``x``; returns its loss (see
        :func:`grad_step` for the arguments).

        The module's gradients are zeroed, :func:`grad_step` computes the whole batch's
        (added into ``module.grads``), the optimizer updates the weights on the driver,
        and the loss is appended to :attr:`history`.

        Examples
        --------
        A step is exactly ``zero_grad``, :func:`grad_step` and the optimizer's step:

        >>> import numpy as np, dask, dask.array as da, cygru, cygru.dask
        >>> gru = cygru.GRU(2, 3, dtype=np.float64, seed=0)
        >>> twin = cygru.GRU(2, 3, dtype=np.float64, seed=0)
        >>> rng = np.random.default_rng(1)
        >>> x = da.from_array(rng.standard_normal((5, 6, 2)), chunks=(5, 3, 2))  # 2 shards
        >>> y = np.zeros((5, 6, 3))
        >>> lengths = np.array([5, 4, 5, 2, 5, 3])
        >>> trainer = cygru.dask.DataParallelTrainer(gru, cygru.optim.SGD(gru, lr=0.1))
        >>> with dask.config.set(scheduler="sync"):
        ...     loss = trainer.step(x, y, lengths=lengths)
        ...     by_hand = cygru.dask.grad_step(twin, x, y, lengths=lengths)
        >>> cygru.optim.SGD(twin, lr=0.1).step()
        >>> loss == by_hand, trainer.history == [loss]
        (True, True)
        >>> all(np.array_equal(a, b) for a, b in zip(gru.parameters(), twin.parameters()))
        True
        """
        self.module.zero_grad()
        value = grad_step(
            self.module,
            x,
            targets,
            lengths=lengths,
            h0=h0,
            loss=self.loss,
            on=self.on,
            split_every=self.split_every,
            threads=self.threads,
            rechunk=self.rechunk,
        )
        self._update(self.module)
        self.history.append(value)
        return value
