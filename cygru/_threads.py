"""Thread count of cygru's own parallelism."""

from typing import Optional, SupportsIndex

from . import _cpu

__all__ = ["get_num_threads", "set_num_threads"]


def get_num_threads() -> int:
    """The number of threads cygru's forward and backward may use (float32 and float64).

    It is the value given to :func:`cygru.set_num_threads`, else the environment
    variable ``CYGRU_NUM_THREADS`` when set (read once, on the first call that
    needs it; a value that is not an integer in [1, 256] raises ``ValueError``
    naming the variable), else, inside a :mod:`cygru.dask` task run with ``threads=k``,
    ``k`` (that task's thread's own count, not capped at the cores), else the default:
    the cores this process may run on, limited by OpenMP's setting for the calling thread, i.e. by ``OMP_NUM_THREADS``
    (Dask's workers set it to 1) and by threadpoolctl's OpenMP limit
    (``threadpool_limits(1, user_api="openmp")``), as scikit-learn reads them; at
    most 256. OpenMP's setting is read at every call (the core count once), and calls running at the same time
    on several Python threads of one process share it (two concurrent calls use
    half each, with the same kernels and so the same bits), so that together they are
    not slower than one after the other. A direction's hidden units are cut into
    pieces (two per thread) that its threads claim every step, so a descheduled thread
    holds a step up only while it holds a claimed piece; the two directions of a
    bidirectional layer run on separate threads. Small problems use fewer threads
    (below ``cygru._cpu.MIN_WORK_PER_THREAD`` multiply-adds per thread and step, the
    step's synchronisation costs more than it saves), and a call whose whole work is
    small (below ``2 * cygru._cpu.WAKE_COST * cygru._cpu.MIN_WORK_PER_THREAD``
    multiply-adds in all, such as one time step at batch size 1) runs on the calling
    thread whatever the count: waking a thread would cost more than the call. Every
    thread count, 1 included,
    gives bit-identical results (see the Reproducibility section of the
    documentation). The forward and the backward compute every product in cygru's own
    kernels, the backward's weight gradients and input gradient included (each piece of
    hidden units adds its own rows), so no BLAS thread pool runs beside these threads
    and the gradients are bit-identical for every thread count too.

    The threads are cygru's own worker pool. A process made by ``fork()`` (``os.fork``,
    multiprocessing's ``"fork"`` start method and its pools) keeps the count: the parent's
    workers do not exist in the child, which starts its own at its first threaded call
    (same bits).

    Examples
    --------
    >>> import cygru
    >>> cygru.get_num_threads() >= 1
    True
    """
    return _cpu.get_num_threads()


def set_num_threads(n: Optional[SupportsIndex]) -> None:
    """Set the number of threads cygru's forward and backward may use.

    ``n`` is an integer (Python's or NumPy's) from 1 to 256; anything else raises
    ``ValueError``. ``None`` lifts the count set before: cygru goes back to its default
    (``CYGRU_NUM_THREADS`` if set, read again, else the usable cores, see
    :func:`cygru.get_num_threads`), which is what a caller that changed the count for a
    while should restore (setting back the value ``get_num_threads()`` returned would fix
    that value for good, and then hold it over ``cygru.dask``'s ``threads=k``). Any count works on any machine (more threads than cores only
    adds waiting), and every count gives bit-identical results. Each
    thread needs a stack (8 MiB of address space by default): under a tight
    address-space limit (``ulimit -v``) OpenMP may fail to start hundreds of them,
    and libgomp then ends the process.
    ``1`` means no threads of cygru's own. In a child forked after a threaded call
    the value is kept but calls run on one thread (see :func:`cygru.get_num_threads`).
    On a machine shared with other busy processes, the default is already safe: the
    threads of a direction claim the work of each step in pieces, so a thread the OS
    has descheduled leaves its share to the running ones (docs: Performance, busy
    machines).

    Examples
    --------
    >>> import cygru
    >>> cygru.set_num_threads(1)
    >>> cygru.get_num_threads()
    1
    >>> cygru.set_num_threads(None)  # back to the default
    >>> cygru.get_num_threads() >= 1
    True
    """
    _cpu.set_num_threads(n)
