#!/usr/bin/env python
"""Batch inference on Dask workers: throughput on 1 and 2 workers, and the overhead of Dask
against calling cygru directly on the same data.

    python benchmarks/dask_scaling.py [--seq-len 100] [--batch 2048] [--chunk 128]
                                      [--input 64] [--hidden 128] [--repeat 5]
                                      [--quick] [--json PATH]

One float32 GRU (1 layer, unidirectional) over ``--batch`` sequences of ``--seq-len``
steps, in batch chunks of ``--chunk`` sequences. Every figure is the median of
``--repeat`` runs, in sequences per second (higher is better):

``direct, N threads``
    ``gru(x)`` on the whole batch in this process, cygru on N threads (1, and the
    default). The baseline.
``direct, per chunk, 1 thread``
    ``gru(x_chunk)`` chunk after chunk, 1 thread: the same work cut as Dask cuts it.
``local threads``
    ``cygru.dask.forward`` on Dask's local threaded scheduler (no Client).
``K workers x 1 thread, on workers``
    a ``distributed.LocalCluster`` of K worker processes (1 Dask thread each, so 1
    cygru thread per task: the nanny's ``OMP_NUM_THREADS=1``); x already persisted on
    the workers, output left there (``client.persist`` + ``wait``): inference and
    scheduling, no transfer to or from this process.
``K workers x 1 thread, round trip``
    NumPy x in this process, NumPy output back (``da.from_array`` + ``compute``): the
    transfers included.

Beside wall time, the CPU seconds of every process involved (``time.process_time`` of
this process, which runs the client and, for a ``LocalCluster``, the scheduler, plus that
of every worker process) per run: on a machine shared with busy processes, wall time grows
with their load, CPU time much less, so sequences per CPU second measure Dask's cost more
steadily than sequences per second.

The overhead of Dask is the time of a 1-worker run over the direct 1-thread time on the
same data (both use one core): against one call over the whole batch, and against the
same chunks called one after the other (the same work as Dask's tasks). Scaling is 2 workers over 1. The load average of the
machine (``os.getloadavg``) is printed at the start and the end: on a shared machine other
processes' work falls into these figures.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
try:  # an installed cygru (pip install -e .) wins; otherwise this checkout's in-place build
    import cygru  # noqa: F401
except ImportError:
    sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from run import _cpu_model  # noqa: E402  (benchmarks/run.py: the CPU's model name)


def _median_time(fn, repeat, cpu=time.process_time):
    """(median, min, max) wall seconds of fn() over `repeat` runs, and the median CPU
    seconds that `cpu()` (a clock of every process involved) counted per run."""
    times, cpus = [], []
    for _ in range(repeat):
        c0 = cpu()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpus.append(cpu() - c0)
    return statistics.median(times), min(times), max(times), statistics.median(cpus)


class _threads:
    """cygru's thread count set to n in this process, restored to what it was."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import cygru

        self.before = cygru._cpu._num_threads
        if self.n is not None:
            cygru.set_num_threads(self.n)

    def __exit__(self, *exc):
        import cygru

        cygru._cpu._num_threads = self.before


def run(args):
    import warnings

    import dask
    import dask.array as da
    import distributed
    import numpy as np

    import cygru
    import cygru.dask

    # the round trip sends x with the graph on purpose (NumPy in, NumPy out)
    warnings.filterwarnings("ignore", message="Sending large graph")
    T, B, I, H, chunk = args.seq_len, args.batch, args.input, args.hidden, args.chunk
    gru = cygru.GRU(I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    rows = []

    def record(name, timing, note=""):
        med, lo, hi, cpu = timing
        rows.append(
            {
                "name": name,
                "median_s": med,
                "min_s": lo,
                "max_s": hi,
                "seq_per_s": B / med,
                "cpu_s": cpu,
                "seq_per_cpu_s": B / max(cpu, 1e-9),
                "note": note,
            }
        )
        print(f"  {name}: {med * 1e3:.1f} ms ({B / med:.0f} seq/s), {cpu:.2f} CPU s", flush=True)

    load_start = os.getloadavg()
    print(
        f"# cygru.dask scaling: T={T} B={B} I={I} H={H} float32, chunks of {chunk}; "
        f"{os.cpu_count()} CPUs ({_cpu_model()}); load average at start "
        f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}",
        flush=True,
    )

    ref = None
    for n in (1, None):
        with _threads(n):
            label = f"direct, {cygru.get_num_threads()} thread(s)"
            if n == 1:
                ref = gru(x)[0]
            record(label, _median_time(lambda: gru(x), args.repeat))
    with _threads(1):
        cuts = [x[:, s : s + chunk] for s in range(0, B, chunk)]
        record(
            "direct, per chunk, 1 thread", _median_time(lambda: [gru(c) for c in cuts], args.repeat)
        )
    xd = da.from_array(x, chunks=(-1, chunk, -1))
    with dask.config.set(scheduler="threads"):
        record(
            "local threads (no Client)",
            _median_time(lambda: cygru.dask.forward(gru, xd)[0].compute(), args.repeat),
            f"{cygru.get_num_threads()} cygru threads shared",
        )

    for workers in (1, 2):
        with (
            distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=40,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            client.wait_for_workers(workers)
            xw = client.persist(da.from_array(x, chunks=(-1, chunk, -1)))
            distributed.wait(xw)
            # warm up: import cygru on the workers, first task of each
            out = cygru.dask.forward(gru, xw)[0]
            first = out.compute()
            assert np.array_equal(first, ref), "distributed result differs from direct"

            def on_workers(xw=xw):
                distributed.wait(client.persist(cygru.dask.forward(gru, xw)[0]))

            def round_trip():
                cygru.dask.forward(gru, da.from_array(x, chunks=(-1, chunk, -1)))[0].compute()

            def cpu():  # this process (client and scheduler) and every worker
                return time.process_time() + sum(client.run(time.process_time).values())

            record(
                f"{workers} worker(s) x 1 thread, on workers",
                _median_time(on_workers, args.repeat, cpu),
            )
            record(
                f"{workers} worker(s) x 1 thread, round trip",
                _median_time(round_trip, args.repeat, cpu),
            )
    load_end = os.getloadavg()
    by = {r["name"]: r for r in rows}
    one = by["1 worker(s) x 1 thread, on workers"]["median_s"]
    two = by["2 worker(s) x 1 thread, on workers"]["median_s"]
    direct1 = by["direct, 1 thread(s)"]["median_s"]
    chunked1 = by["direct, per chunk, 1 thread"]["median_s"]
    summary = {
        "overhead_1_worker_vs_direct_1_thread": one / direct1 - 1,
        "overhead_1_worker_vs_direct_per_chunk": one / chunked1 - 1,
        "speedup_2_vs_1_workers": one / two,
        "round_trip_overhead_1_worker": by["1 worker(s) x 1 thread, round trip"]["median_s"]
        / direct1
        - 1,
    }

    print()
    print("| run | median ms | min-max ms | sequences/s | CPU s | sequences/CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['median_s'] * 1e3:.1f} | {r['min_s'] * 1e3:.1f}-"
            f"{r['max_s'] * 1e3:.1f} | {r['seq_per_s']:.0f} | {r['cpu_s']:.2f} | "
            f"{r['seq_per_cpu_s']:.0f} |"
        )
    print()
    print(
        f"Dask overhead (1 worker vs direct, 1 thread, data on the worker): "
        f"{summary['overhead_1_worker_vs_direct_1_thread'] * 100:+.0f}% against the whole "
        f"batch in one call, {summary['overhead_1_worker_vs_direct_per_chunk'] * 100:+.0f}% "
        "against the same chunks called one after the other"
    )
    print(
        f"Dask overhead with the transfers (round trip): "
        f"{summary['round_trip_overhead_1_worker'] * 100:+.0f}%"
    )
    print(f"2 workers vs 1: {summary['speedup_2_vs_1_workers']:.2f}x")
    fastest = {r["name"]: r["min_s"] for r in rows}
    summary["fastest_run_ratios"] = {
        "1_worker_vs_direct_1_thread": fastest["1 worker(s) x 1 thread, on workers"]
        / fastest["direct, 1 thread(s)"],
        "2_vs_1_workers": fastest["1 worker(s) x 1 thread, on workers"]
        / fastest["2 worker(s) x 1 thread, on workers"],
    }
    print(
        "the same from the fastest run of each (less sensitive to other processes): "
        f"1 worker / direct 1 thread "
        f"{summary['fastest_run_ratios']['1_worker_vs_direct_1_thread']:.2f}x the time, "
        f"2 workers vs 1 {summary['fastest_run_ratios']['2_vs_1_workers']:.2f}x"
    )
    cpu_direct = max(by["direct, 1 thread(s)"]["cpu_s"], 1e-9)
    summary["cpu_overhead_1_worker_vs_direct_1_thread"] = (
        by["1 worker(s) x 1 thread, on workers"]["cpu_s"] / cpu_direct - 1
    )
    summary["cpu_overhead_2_workers_vs_direct_1_thread"] = (
        by["2 worker(s) x 1 thread, on workers"]["cpu_s"] / cpu_direct - 1
    )
    print(
        "CPU time (all processes) against direct, 1 thread, data on the workers: "
        f"1 worker {summary['cpu_overhead_1_worker_vs_direct_1_thread'] * 100:+.0f}%, "
        f"2 workers {summary['cpu_overhead_2_workers_vs_direct_1_thread'] * 100:+.0f}% "
        "(CPU time is less sensitive than wall time to other processes' load)"
    )
    print(f"load average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    result = {
        "config": {
            "T": T,
            "B": B,
            "I": I,
            "H": H,
            "chunk": chunk,
            "repeat": args.repeat,
            "dtype": "float32",
        },
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_start": load_start,
        "load_end": load_end,
        "rows": rows,
        "summary": summary,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small problem, 1 run each: a smoke test, not a measurement",
    )
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if args.quick:
        args.seq_len, args.batch, args.chunk, args.repeat = 10, 64, 16, 1
    for name in ("seq_len", "batch", "chunk", "input", "hidden", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    run(args)


if __name__ == "__main__":
    main()
