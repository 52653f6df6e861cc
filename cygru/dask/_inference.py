"""Batch inference on Dask: :func:`forward`, one blockwise task per batch chunk."""

from __future__ import annotations

import operator
import uuid
from typing import Optional, Tuple, Union

import numpy as np

from .._cpu import _kernel_rows
from .._typing import ArrayLike
from ..modules import GRU
from ..quantized import QuantizedGRU
from ._common import (  # dask and dask.array from there: its import error names the extra
    da,
    _RECORD_META,
    _WHO,
    _DaskOrArray,
    _block,
    _check_threads,
    _module_key,
    _Plan,
    _task_thread_count,
)

__all__ = ["forward"]


def _forward_chunk(module, x, lengths, h0, threads, batch):
    """One batch chunk's task: (output, h_n) of the module over the chunk's sequences.

    `batch`: the whole batch's size, which picks the kernel of the chunk's products (the
    small-batch dot kernel or the packed one round differently), so every chunk gives its
    rows the bits of one call over the whole batch."""
    with _task_thread_count(threads), _kernel_rows(batch):
        return module(x, h0=_block(h0), lengths=_block(lengths))


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

    The graph holds, per batch chunk, one task that runs the module over the chunk and
    returns ``(output, h_n)``, and one getter per output (computing ``output`` alone,
    Dask's graph optimisation fuses its getter into the task); the module is one key for
    the whole graph, and ``lengths``/``h0`` are inputs of each chunk's task.

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
    token = uuid.uuid4().hex
    xi = plan.x_index
    # one task per chunk computes both outputs (a tuple: the record) ...
    record = da.blockwise(
        _forward_chunk,
        xi,
        _module_key(module),
        None,
        plan.x,
        xi,
        *plan.lengths,
        *plan.h0,
        threads,
        None,
        plan.B,
        None,
        name=f"cygru-forward-{token}",
        dtype=object,
        meta=_RECORD_META,
        concatenate=None,
        align_arrays=False,  # (their chunks were checked against x's)
    )
    # ... and one getter per output picks its array (fused with the task by Dask's graph
    # optimisation when only one of the outputs is computed)
    dtype = module.dtype
    meta = np.empty((0, 0, 0), dtype)
    output = da.blockwise(
        operator.getitem,
        xi,
        record,
        xi,
        0,
        None,
        adjust_chunks={"i": plan.DH},
        name=f"cygru-forward-output-{token}",
        dtype=dtype,
        meta=meta,
    )
    h_n = da.blockwise(  # (L*D, B, H): batch axis 1, whatever x's layout
        operator.getitem,
        "tbi",
        record,
        xi,
        1,
        None,
        adjust_chunks={"t": plan.LD, "i": plan.H},
        name=f"cygru-forward-h_n-{token}",
        dtype=dtype,
        meta=meta,
    )
    return output, h_n
