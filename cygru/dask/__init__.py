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

Each batch chunk is **one task**: :func:`forward` is one blockwise operation whose task
per chunk runs the module and returns ``(output, h_n)``, plus one getter per output
(Dask's graph optimisation fuses the getter into the task when one output alone is
computed); :func:`grad_step` is one blockwise task per shard, then the fixed reduction
tree. ``lengths``, ``h0``, targets and loss gradients are inputs of that task: a Dask
array's block, or a NumPy array's piece written into the task itself (no task of its own).

The code: :mod:`cygru.dask._inference` (:func:`forward`), :mod:`cygru.dask._training`
(:func:`grad_step`, :class:`DataParallelTrainer`) and the helpers both use,
:mod:`cygru.dask._common` (the checks, the module's key, the cutting of the inputs).

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

from typing import TYPE_CHECKING, List, Optional  # noqa: F401  (see below)

# _common first: without Dask, its ImportError says which extra to install
from . import _common  # noqa: F401
from ._inference import forward
from ._training import DataParallelTrainer, grad_step

__all__ = ["forward", "grad_step", "DataParallelTrainer"]

# the public names are cygru.dask's (documentation, doctest, pickles by reference); so
# typing.get_type_hints resolves DataParallelTrainer's class annotations (``history``) in
# this module's namespace, which therefore holds the names they use (List, Optional)
for _obj in (forward, grad_step, DataParallelTrainer):
    _obj.__module__ = __name__
for _obj in vars(DataParallelTrainer).values():
    for _f in (_obj, getattr(_obj, "fget", None), getattr(_obj, "fset", None)):
        if callable(_f) and hasattr(_f, "__module__"):
            _f.__module__ = __name__
del _obj, _f

if not TYPE_CHECKING:  # (a module __getattr__ would make every name Any to type checkers)

    def __getattr__(name):
        if name == "SGD":
            raise AttributeError(
                "cygru.dask.SGD was removed: use cygru.optim.SGD(module, lr=..., "
                "momentum=...), which DataParallelTrainer takes, as it takes cygru.optim.Adam "
                "and AdamW"
            )
        raise AttributeError(f"module 'cygru.dask' has no attribute {name!r}")
