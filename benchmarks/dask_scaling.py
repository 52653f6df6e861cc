#!/usr/bin/env python
"""Batch inference on Dask workers: throughput on 1 and 2 workers, the graph's tasks per
chunk, and the cost of Dask against calling cygru directly on the same data.

    python benchmarks/dask_scaling.py [--seq-len 100] [--batch 2048] [--chunks 128,32]
                                      [--input 64] [--hidden 128] [--repeat 5]
                                      [--quick] [--json PATH]

One float32 GRU (1 layer, unidirectional) over ``--batch`` sequences of ``--seq-len``
steps, in batch chunks of each of ``--chunks`` sequences (by default 128 and 32: 16 and
64 chunks of B=2048). Every figure is the median of ``--repeat`` runs, in sequences per
second (higher is better):

``direct, N threads``
    ``gru(x)`` on the whole batch in this process, cygru on N threads (1, and the
    default). The baseline.
``direct, per chunk of C, 1 thread``
    ``gru(x_chunk)`` chunk after chunk, 1 thread: the same work cut as Dask cuts it.
``local threads, chunks of C``
    ``cygru.dask.forward`` on Dask's local threaded scheduler (no Client).
``K workers x 1 thread, chunks of C, on workers``
    a ``distributed.LocalCluster`` of K worker processes (1 Dask thread each, so 1
    cygru thread per task: the nanny's ``OMP_NUM_THREADS=1``); x already persisted on
    the workers, output left there (``client.persist`` + ``wait``): inference and
    scheduling, no transfer to or from this process.
``K workers x 1 thread, chunks of C, round trip``
    NumPy x in this process, NumPy output back (``da.from_array`` + ``compute``): the
    transfers included.

Beside wall time, the CPU seconds of every process involved per run: this process (the
client and, for a ``LocalCluster``, the scheduler) and all its child processes (the
nannies and the workers), read with ``psutil``. On a machine shared with busy processes,
wall time grows with their load, CPU time much less, so CPU seconds measure Dask's cost
more steadily than wall time.

Graph size: the tasks ``cygru.dask.forward`` adds per chunk for ``(output, h_n)`` (one
task that runs the GRU and one getter per output; the module is one key for the whole
graph) and for ``output`` alone after Dask's graph optimisation (the getter fused into
the task).

Targets (issue 29): CPU seconds of all processes within 1.10x of the direct 1-thread call
at 16 and 64 chunks; 2 workers at least 1.8x the throughput of 1 worker (on an idle
2-core machine; the CPU-bound figure ``2 x CPU(1 worker) / CPU(2 workers)`` is the
steady one when the wall clock is noisy); tasks per chunk at most 1 + 2 outputs. The
load average of the machine (``os.getloadavg``) is printed at the start and the end: on a
shared machine other processes' work falls into these figures.
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


def _malloc_trim_env():
    """MALLOC_TRIM_THRESHOLD_ in the process it runs in (a worker), None if unset."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _first_step(block):
    """A task that does no work: Dask's own cost of one task per chunk."""
    return block[:1]


def _schedstat_ns(path):
    """The run time (ns) of one thread, the first field of its schedstat; 0 if it ended."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


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
    import psutil  # (a dependency of distributed)
    from dask._task_spec import DataNode

    import cygru
    import cygru.dask

    # the round trip sends x with the graph on purpose (NumPy in, NumPy out)
    warnings.filterwarnings("ignore", message="Sending large graph")
    T, B, I, H, chunk_sizes = args.seq_len, args.batch, args.input, args.hidden, args.chunks
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
        print(f"  {name}: {med * 1e3:.1f} ms ({B / med:.0f} seq/s), {cpu:.3f} CPU s", flush=True)

    def cpu_all():
        """CPU seconds of this process (client, scheduler) and all its children (the
        nannies and workers of a LocalCluster): ``time.process_time`` here, and the
        children's threads' run time from /proc/PID/task/TID/schedstat (nanoseconds; the
        10 ms clock ticks of /proc/PID/stat are too coarse for a 30 ms run) where Linux
        has it, else psutil's tick-based figure."""
        total = time.process_time()
        for child in psutil.Process().children(recursive=True):
            try:
                tasks = os.listdir(f"/proc/{child.pid}/task")
                total += (
                    sum(_schedstat_ns(f"/proc/{child.pid}/task/{tid}/schedstat") for tid in tasks)
                    / 1e9
                )
            except OSError:
                try:
                    t = child.cpu_times()
                except psutil.Error:  # a process that ended meanwhile
                    continue
                total += t.user + t.system
        return total

    load_start = os.getloadavg()
    print(
        f"# cygru.dask scaling: T={T} B={B} I={I} H={H} float32, chunks of "
        f"{', '.join(map(str, chunk_sizes))}; {os.cpu_count()} CPUs ({_cpu_model()}); "
        f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}",
        flush=True,
    )

    graph = {}
    for chunk in chunk_sizes:
        xd = da.from_array(x, chunks=(-1, chunk, -1))
        n = xd.numblocks[1]
        base = set(dict(xd.__dask_graph__()))
        out, h_n = cygru.dask.forward(gru, xd)
        both = {**dict(out.__dask_graph__()), **dict(h_n.__dask_graph__())}
        own = [k for k in both if k not in base]
        modules = [k for k in own if str(k).startswith("cygru-module-")]
        (only_out,) = dask.optimize(out)
        fused = dict(only_out.__dask_graph__())
        computing = [k for k, v in fused.items() if not isinstance(v, DataNode)]
        graph[chunk] = {
            "chunks": n,
            "tasks_per_chunk": (len(own) - len(modules)) / n,
            "module_keys": len(modules),
            "tasks_per_chunk_output_only_optimized": len(computing) / n,
        }
        print(
            f"  graph, {n} chunks of {chunk}: {graph[chunk]['tasks_per_chunk']:.2f} tasks per "
            f"chunk for (output, h_n) + {len(modules)} module key; "
            f"{graph[chunk]['tasks_per_chunk_output_only_optimized']:.2f} for output alone "
            "after optimisation",
            flush=True,
        )

    ref = None
    for n in (1, None):
        with _threads(n):
            label = f"direct, {cygru.get_num_threads()} thread(s)"
            if n == 1:
                ref = gru(x)[0]
            record(label, _median_time(lambda: gru(x), args.repeat, cpu_all))
    with _threads(1):
        for chunk in chunk_sizes:
            # each chunk its own contiguous array, as a Dask block is (a strided view of x
            # would be copied by every call: a cost Dask's chunks do not have)
            cuts = [np.ascontiguousarray(x[:, s : s + chunk]) for s in range(0, B, chunk)]
            record(
                f"direct, per chunk of {chunk}, 1 thread",
                _median_time(lambda cuts=cuts: [gru(c) for c in cuts], args.repeat, cpu_all),
            )
    xd = da.from_array(x, chunks=(-1, chunk_sizes[0], -1))
    with dask.config.set(scheduler="threads"):
        record(
            f"local threads (no Client), chunks of {chunk_sizes[0]}",
            _median_time(lambda: cygru.dask.forward(gru, xd)[0].compute(), args.repeat, cpu_all),
            f"{cygru.get_num_threads()} cygru threads shared",
        )

    for tuned in (False, True):
        # Dask's defaults, then "tuned workers": MALLOC_TRIM_THRESHOLD_ unset in the worker
        # processes (Dask's nanny sets 65536, which also fixes glibc's mmap threshold at
        # 128 KiB: every array a task allocates is fresh pages, faulted in) and Dask's
        # statistical profiler off
        config = (
            {
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                "distributed.worker.profile.enabled": False,
            }
            if tuned
            else {}
        )
        tag = ", tuned workers" if tuned else ""
        for workers in (1, 2):
            environ = dict(os.environ)  # (the nanny leaves its variables in ours)
            with (
                dask.config.set(config),
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
                trim = set(client.run(_malloc_trim_env).values())
                if tuned and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
                    assert trim == {None}, trim
                for chunk in chunk_sizes:
                    xw = client.persist(da.from_array(x, chunks=(-1, chunk, -1)))
                    distributed.wait(xw)
                    # warm up: import cygru on the workers, first task of each
                    first = cygru.dask.forward(gru, xw)[0].compute()
                    assert np.array_equal(first, ref), "distributed result differs from direct"

                    def on_workers(xw=xw):
                        distributed.wait(client.persist(cygru.dask.forward(gru, xw)[0]))

                    def no_op(xw=xw, chunk=chunk):  # Dask's own cost of one task per chunk
                        distributed.wait(
                            client.persist(xw.map_blocks(_first_step, chunks=(1, chunk, I)))
                        )

                    def round_trip(chunk=chunk):
                        xd = da.from_array(x, chunks=(-1, chunk, -1))
                        cygru.dask.forward(gru, xd)[0].compute()

                    record(
                        f"{workers} worker(s) x 1 thread, chunks of {chunk}, on workers{tag}",
                        _median_time(on_workers, args.repeat, cpu_all),
                    )
                    record(
                        f"{workers} worker(s) x 1 thread, chunks of {chunk}, no-op tasks{tag}",
                        _median_time(no_op, args.repeat, cpu_all),
                        "x.map_blocks(lambda b: b[:1]): Dask's cost of the same tasks",
                    )
                    if not tuned:
                        record(
                            f"{workers} worker(s) x 1 thread, chunks of {chunk}, round trip",
                            _median_time(round_trip, args.repeat, cpu_all),
                        )
                    del xw
            os.environ.clear()
            os.environ.update(environ)
    load_end = os.getloadavg()
    by = {r["name"]: r for r in rows}
    direct1 = by["direct, 1 thread(s)"]
    summary = {}
    print()
    print("| run | median ms | min-max ms | sequences/s | CPU s | sequences/CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['median_s'] * 1e3:.1f} | {r['min_s'] * 1e3:.1f}-"
            f"{r['max_s'] * 1e3:.1f} | {r['seq_per_s']:.0f} | {r['cpu_s']:.3f} | "
            f"{r['seq_per_cpu_s']:.0f} |"
        )
    print()
    for chunk in chunk_sizes:
        runs = {
            name: by[f"{k} worker(s) x 1 thread, chunks of {chunk}, {what}{tag}"]
            for name, k, what, tag in [
                ("one", 1, "on workers", ""),
                ("two", 2, "on workers", ""),
                ("one_tuned", 1, "on workers", ", tuned workers"),
                ("two_tuned", 2, "on workers", ", tuned workers"),
                ("noop_one", 1, "no-op tasks", ""),
                ("noop_one_tuned", 1, "no-op tasks", ", tuned workers"),
                ("trip", 1, "round trip", ""),
            ]
        }
        one, two, one_t, two_t = (runs[k] for k in ("one", "two", "one_tuned", "two_tuned"))
        per_chunk = by[f"direct, per chunk of {chunk}, 1 thread"]
        cpu_d = max(direct1["cpu_s"], 1e-9)
        s = {
            "chunks": graph[chunk]["chunks"],
            "tasks_per_chunk": graph[chunk]["tasks_per_chunk"],
            "tasks_per_chunk_output_only_optimized": graph[chunk][
                "tasks_per_chunk_output_only_optimized"
            ],
            "cpu_direct_per_chunk_vs_direct_1_thread": per_chunk["cpu_s"] / cpu_d,
            "cpu_1_worker_vs_direct_1_thread": one["cpu_s"] / cpu_d,
            "cpu_2_workers_vs_direct_1_thread": two["cpu_s"] / cpu_d,
            "cpu_1_worker_vs_direct_1_thread_tuned": one_t["cpu_s"] / cpu_d,
            "cpu_2_workers_vs_direct_1_thread_tuned": two_t["cpu_s"] / cpu_d,
            "cpu_1_worker_vs_direct_per_chunk_tuned": one_t["cpu_s"] / per_chunk["cpu_s"],
            "cpu_noop_tasks_1_worker_vs_direct_1_thread": runs["noop_one"]["cpu_s"] / cpu_d,
            "cpu_noop_tasks_1_worker_vs_direct_1_thread_tuned": runs["noop_one_tuned"]["cpu_s"]
            / cpu_d,
            "wall_1_worker_vs_direct_1_thread": one["median_s"] / direct1["median_s"],
            "speedup_2_vs_1_workers_wall": one["median_s"] / two["median_s"],
            "speedup_2_vs_1_workers_wall_tuned": one_t["median_s"] / two_t["median_s"],
            "speedup_2_vs_1_workers_fastest": one["min_s"] / two["min_s"],
            "speedup_2_vs_1_workers_cpu_bound": 2 * one["cpu_s"] / max(two["cpu_s"], 1e-9),
            "speedup_2_vs_1_workers_cpu_bound_tuned": 2
            * one_t["cpu_s"]
            / max(two_t["cpu_s"], 1e-9),
            "cpu_round_trip_1_worker_vs_direct_1_thread": runs["trip"]["cpu_s"] / cpu_d,
        }
        summary[str(chunk)] = s
    print(
        "CPU seconds of all processes over those of the direct 1-thread call on the whole "
        "batch (tuned: MALLOC_TRIM_THRESHOLD_ unset and the profiler off in the workers); "
        "2x1 vs 1x1: throughput of 2 workers over 1 (wall: median times; CPU-bound: "
        "2 x CPU(1 worker) / CPU(2 workers))"
    )
    print()
    print(
        "| chunks | tasks/chunk | direct per chunk | no-op tasks 1x1 | 1x1 | 2x1 | 1x1 tuned "
        "| 2x1 tuned | 2x1 vs 1x1 wall | wall, tuned | CPU-bound | CPU-bound, tuned |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for chunk in chunk_sizes:
        s = summary[str(chunk)]
        print(
            f"| {s['chunks']} | {s['tasks_per_chunk']:.0f} "
            f"| {s['cpu_direct_per_chunk_vs_direct_1_thread']:.2f}x "
            f"| {s['cpu_noop_tasks_1_worker_vs_direct_1_thread']:.2f}x "
            f"| {s['cpu_1_worker_vs_direct_1_thread']:.2f}x "
            f"| {s['cpu_2_workers_vs_direct_1_thread']:.2f}x "
            f"| {s['cpu_1_worker_vs_direct_1_thread_tuned']:.2f}x "
            f"| {s['cpu_2_workers_vs_direct_1_thread_tuned']:.2f}x "
            f"| {s['speedup_2_vs_1_workers_wall']:.2f}x "
            f"| {s['speedup_2_vs_1_workers_wall_tuned']:.2f}x "
            f"| {s['speedup_2_vs_1_workers_cpu_bound']:.2f}x "
            f"| {s['speedup_2_vs_1_workers_cpu_bound_tuned']:.2f}x |"
        )
    print()
    for chunk in chunk_sizes:
        s = summary[str(chunk)]
        met = {
            "CPU <= 1.10x direct (1 worker)": s["cpu_1_worker_vs_direct_1_thread"] <= 1.10,
            "CPU <= 1.10x direct (2 workers)": s["cpu_2_workers_vs_direct_1_thread"] <= 1.10,
            "CPU <= 1.10x direct (1 worker, tuned)": s["cpu_1_worker_vs_direct_1_thread_tuned"]
            <= 1.10,
            "2x1 >= 1.8x 1x1 (wall)": s["speedup_2_vs_1_workers_wall"] >= 1.8,
            "2x1 >= 1.8x 1x1 (CPU-bound)": s["speedup_2_vs_1_workers_cpu_bound"] >= 1.8,
            "tasks per chunk <= 1 + 2": s["tasks_per_chunk"] <= 3,
        }
        s["targets_met"] = met
        print(
            f"{s['chunks']} chunks: "
            + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items())
        )
    print(f"load average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    result = {
        "config": {
            "T": T,
            "B": B,
            "I": I,
            "H": H,
            "chunks": list(chunk_sizes),
            "repeat": args.repeat,
            "dtype": "float32",
        },
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "load_start": load_start,
        "load_end": load_end,
        "graph": {str(k): v for k, v in graph.items()},
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
    p.add_argument(
        "--chunks",
        default="128,32",
        help="batch chunk sizes, comma-separated (default: 16 and 64 chunks of B=2048)",
    )
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
        args.seq_len, args.batch, args.chunks, args.repeat = 10, 64, "16,4", 1
    try:
        args.chunks = [int(c) for c in args.chunks.split(",")]
    except ValueError:
        p.error(f"--chunks must be integers separated by commas, got {args.chunks!r}")
    if not args.chunks or min(args.chunks) < 1:
        p.error("--chunks must be at least 1")
    for name in ("seq_len", "batch", "input", "hidden", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    run(args)


if __name__ == "__main__":
    main()
