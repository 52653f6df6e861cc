"""Data-parallel training on Dask: :func:`grad_step` (one task per shard, the gradients
summed in a fixed tree) and :class:`DataParallelTrainer` (grad_step and any
:mod:`cygru.optim` optimizer's step)."""

from __future__ import annotations

import inspect
import numbers
import uuid
from typing import Any, Callable, List, Literal, Optional, Protocol, Tuple, Union

import numpy as np

from .._typing import ArrayLike
from ..modules import GRU
from ..optim import Optimizer, _is_module
from ._common import (  # dask and dask.array from there: its import error names the extra
    da,
    dask,
    _RECORD_META,
    _WHO,
    _block,
    _check_module,
    _check_threads,
    _DaskOrArray,
    _module_key,
    _Plan,
    _snapshot,
    _task_thread_count,
)

#: ``"mse"``, or ``loss(output, h_n, target) -> (value, d_output, d_h_n)``
_Loss = Union[Literal["mse"], Callable[..., Tuple[Any, Any, Any]]]

__all__ = ["grad_step", "DataParallelTrainer"]


class _StepsModule(Protocol):
    """An optimiser whose ``step(module)`` updates the module from ``module.grads``."""

    def step(self, module: GRU, /) -> object: ...


class _StepsItself(Protocol):
    """An optimiser whose ``step()`` reads the gradients of the module it holds."""

    def step(self) -> object: ...


#: what :class:`DataParallelTrainer` accepts as its optimizer
_OptimizerLike = Union[Optimizer, _StepsModule, _StepsItself, Callable[[GRU], object]]


def _valid_mask(lengths, T, batch_axis):
    """(T, b, 1) or (b, T, 1) boolean: step t of sequence b is inside its length."""
    valid = np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    return (valid.T if batch_axis == 0 else valid)[..., None]


def _shard_grads(module, x, lengths, h0, target, d_output, d_h_n, loss, on, threads):
    """One shard: vjp + backward on a private copy of the module (tasks of one worker
    share the module object, and backward adds into its grads). Returns
    (loss sum or None, element count, gradients)."""
    lengths, h0, target = _block(lengths), _block(h0), _block(target)
    d_output, d_h_n = _block(d_output), _block(d_h_n)
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
    t_arg = plan.cut(targets, t_shape, t_axis, "targets")
    do_arg = plan.cut(d_output, out_shape, plan.batch_axis, "d_output")
    dh_arg = plan.cut(d_h_n, hn_shape, 1, "d_h_n")
    xi = plan.x_index
    shards = da.blockwise(  # one task per shard: (loss sum, count, gradients)
        _shard_grads,
        xi,
        _module_key(module),
        None,
        plan.x,
        xi,
        *plan.lengths,
        *plan.h0,
        *t_arg,
        *do_arg,
        *dh_arg,
        loss,
        None,
        on,
        None,
        threads,
        None,
        name=f"cygru-grad-shards-{uuid.uuid4().hex}",
        dtype=object,
        meta=_RECORD_META,
        concatenate=None,
        align_arrays=False,  # (their chunks were checked against x's)
    )
    level = list(shards.to_delayed().reshape(-1))  # the shards in batch order
    combine = dask.delayed(_sum_parts, pure=True)
    while len(level) > 1:  # a fixed tree: split_every shards per node, left to right
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
    if isinstance(optimizer, Optimizer):
        items = optimizer._params
        if not any(item is module for item in items):
            raise ValueError(
                f"{who}: the optimizer ({optimizer!r}) does not update the trainer's module: "
                "build it over that module, e.g. cygru.optim.Adam(module, lr=1e-3)"
            )
        others = [item for item in items if item is not module]
        if others:
            what = ", ".join(
                type(o).__name__ if _is_module(o) else f"plain arrays {list(o)}" for o in others
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
