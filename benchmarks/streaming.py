#!/usr/bin/env python
"""Streaming latency: a GRU cell step called from Python vs through cygru's C API.

    python benchmarks/streaming.py [--batch 1] [--input 64] [--hidden 128]
                                   [--frames 20000] [--calls 2000] [--repeat 21]
                                   [--blas-threads 1] [--build-dir DIR] [--json PATH]

It builds the downstream example project ``examples/embedding`` (its ``setup.py``,
into ``--build-dir`` or a temporary directory) and measures one float32 GRU cell step
(B x I -> H) five ways, each the median of ``--repeat`` samples, the ways interleaved
within every sample so that the noise of a shared machine falls on all alike:

``GRUCell (Python)``
    ``h = cell(x, h)`` from a Python loop: the public API, validation included.
``CellStream.push (Python)``
    ``stream.push(x)``: one frame from Python into the example's Cython class,
    which calls ``cell_step_f32``.
``C API, downstream nogil loop``
    ``stream.push_block(xs)``: N frames in one ``with nogil:`` loop of the
    downstream extension, one ``capi.cell_step_f32`` per frame, in place on h (a
    call through the function pointer that ``cimport cygru.capi`` imports).
``C API, in-module nogil loop``
    the same loop compiled inside ``cygru.capi`` (``capi._time_steps``).
``raw kernel (the math)``
    the internal kernel alone in a nogil loop, without the C API's checks and
    its copy of h: what one step costs at all.

BLAS runs on ``--blas-threads`` threads (threadpoolctl; 1 by default: a stream is
one thread's work, several streams run on several threads) in every way alike.

The C API's cost beyond the math is "C API" minus "raw kernel"; Python's is
"GRUCell" minus "raw kernel". These machines are noisy: read the medians, and the
spread (min-max over the samples) printed beside them.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "embedding")
try:  # an installed cygru (pip install -e .) wins; otherwise this checkout's in-place build
    import cygru  # noqa: F401
except ImportError:
    sys.path.insert(0, ROOT)


def build_example(build_dir):
    """Build examples/embedding in build_dir (reused when already built) and import it."""
    import importlib.util

    import cygru

    os.makedirs(build_dir, exist_ok=True)
    for name in ("setup.py", "stream.pyx"):
        src, dst = os.path.join(EXAMPLE, name), os.path.join(build_dir, name)
        if not os.path.exists(dst) or open(src).read() != open(dst).read():
            shutil.copy(src, dst)
    env = dict(os.environ)
    cygru_root = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([cygru_root] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=build_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"building {EXAMPLE} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    so = [f for f in os.listdir(build_dir) if f.startswith("stream") and f.endswith(".so")]
    spec = importlib.util.spec_from_file_location("stream", os.path.join(build_dir, so[0]))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--input", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--frames", type=int, default=20000, help="steps per nogil-loop sample")
    ap.add_argument("--calls", type=int, default=2000, help="Python calls per sample")
    ap.add_argument("--repeat", type=int, default=21, help="samples per way (median)")
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="limit BLAS to this many threads (0: leave as is)",
    )
    ap.add_argument("--build-dir", default=None, help="where to build the example (kept)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    import numpy as np

    import cygru
    import cygru.capi as capi

    tmp = None
    if args.build_dir is None:
        tmp = tempfile.mkdtemp(prefix="cygru-streaming-")
        args.build_dir = tmp
    t0 = time.perf_counter()
    stream_mod = build_example(args.build_dir)
    build_s = time.perf_counter() - t0

    blas_note = "BLAS threads as configured"
    if args.blas_threads > 0:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.blas_threads)
            blas_note = f"BLAS limited to {args.blas_threads} thread(s)"
        except ImportError:
            blas_note = "threadpoolctl missing: BLAS threads as configured"

    B, I, H = args.batch, args.input, args.hidden
    rng = np.random.default_rng(0)
    cell = cygru.GRUCell(I, H, seed=0)  # float32
    weights = capi.export_weights(cell)
    x = (0.1 * rng.standard_normal((B, I))).astype(np.float32)
    xs = np.ascontiguousarray(np.broadcast_to(x, (args.frames, B, I)))
    stream = stream_mod.CellStream(weights, batch=B)

    # the C API loop and the Python loop compute the same states
    h_py = None
    for _ in range(50):
        h_py = cell(x, h_py)
    check = stream_mod.CellStream(weights, batch=B).push_block(xs[:50])
    max_diff = float(np.abs(check - h_py).max())

    def python_cell():
        h = None
        t = time.perf_counter()
        for _ in range(args.calls):
            h = cell(x, h)
        return (time.perf_counter() - t) / args.calls

    def python_push():
        t = time.perf_counter()
        for _ in range(args.calls):
            stream.push(x)
        return (time.perf_counter() - t) / args.calls

    def c_downstream():
        t = time.perf_counter()
        stream.push_block(xs)
        return (time.perf_counter() - t) / args.frames

    if B == 1:

        def c_in_module():
            return capi._time_steps(weights, args.frames) / args.frames

        def raw_kernel():
            return capi._time_steps(weights, args.frames, raw_kernel=True) / args.frames
    else:
        c_in_module = raw_kernel = None

    ways = [
        ("GRUCell (Python)", python_cell),
        ("CellStream.push (Python)", python_push),
        ("C API, downstream nogil loop", c_downstream),
        ("C API, in-module nogil loop", c_in_module),
        ("raw kernel (the math)", raw_kernel),
    ]
    ways = [(n, f) for n, f in ways if f is not None]
    samples = {n: [] for n, _ in ways}
    for _, f in ways:  # warm up
        f()
    for _ in range(args.repeat):
        for n, f in ways:
            samples[n].append(f())
    med = {n: statistics.median(v) for n, v in samples.items()}

    print(
        f"cygru {cygru.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {blas_note}; example built in {build_s:.1f} s"
    )
    print(
        f"GRUCell float32 step, B={B}, I={I}, H={H}; medians of {args.repeat} samples "
        f"({args.calls} Python calls / {args.frames} C steps each); "
        f"C vs Python states max |diff| {max_diff:.1e}"
    )
    print()
    print(f"| {'way':<30} | {'per step':>12} | {'spread (min-max)':>22} |")
    print(f"|{'-' * 32}|{'-' * 14}:|{'-' * 24}:|")

    def fmt(sec):
        return f"{sec * 1e6:.2f} us" if sec >= 1e-6 else f"{sec * 1e9:.0f} ns"

    for n, v in samples.items():
        spread = f"{fmt(min(v))} - {fmt(max(v))}"
        print(f"| {n:<30} | {fmt(med[n]):>12} | {spread:>22} |")
    print()
    paired = {}
    if "raw kernel (the math)" in med:
        # beyond the math: the median over samples of (way - raw kernel), both measured
        # in the same round, so slow drifts of the machine's load cancel
        raw = samples["raw kernel (the math)"]
        for n in samples:
            if n != "raw kernel (the math)":
                paired[n] = statistics.median(a - b for a, b in zip(samples[n], raw))
        print(
            f"C API beyond the math (median paired difference): downstream "
            f"{paired['C API, downstream nogil loop'] * 1e9:+.0f} ns, in-module "
            f"{paired['C API, in-module nogil loop'] * 1e9:+.0f} ns per step"
        )
        print(
            f"Python beyond the math: GRUCell {paired['GRUCell (Python)'] * 1e6:.2f} us, "
            f"CellStream.push {paired['CellStream.push (Python)'] * 1e6:.2f} us per call"
        )
    print(
        f"GRUCell from Python / C API loop: "
        f"{med['GRUCell (Python)'] / med['C API, downstream nogil loop']:.1f}x"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "sizes": {"B": B, "I": I, "H": H},
                    "median_s": med,
                    "beyond_math_s": paired,
                    "samples_s": samples,
                    "max_abs_diff": max_diff,
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                },
                f,
                indent=1,
            )
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
