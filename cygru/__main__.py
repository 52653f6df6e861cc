"""``python -m cygru``: version, BLAS, GPU availability, threads, a self-check against the
NumPy reference, a short demo and a timing table beside PyTorch and ONNX Runtime (when they
are installed). Exits 1 if the self-check fails, 2 for bad arguments.

Run ``python -m cygru --help`` for the options.
"""

import argparse
import importlib.util
import io
import sys
import time

import numpy as np

# from the modules that define them, not from cygru/__init__ (nothing imports the
# package's top: tests/test_import_graph.py)
from . import _blas, _reference
from ._threads import get_num_threads, set_num_threads
from ._version import __version__
from .modules import GRU, GRUCell

_DESCRIPTION = """\
Check this cygru installation and time it beside its peers.

Prints the version, the BLAS in use, whether the GPU backend is usable and the thread
count; compares forward, backward and variable-length results with cygru's NumPy
reference implementation (float32 and float64, both GRU variants); runs a small demo; then
times float32 forward calls of cygru, PyTorch and ONNX Runtime (each when installed) on a
few sizes, in interleaved rounds until the medians are stable, and prints the medians with
their spread.

Exit status: 0 when the self-check passed, 1 when it failed, 2 for bad arguments.
"""

_EPILOG = """\
The timings are of this machine, now: other busy processes slow every engine, so compare
the engines within one run. On a machine shared with busy processes, fewer threads than
cores are often faster (try --threads 1). The full benchmark (more sizes, training, threads) is
`python benchmarks/run.py` in a clone of the repository.
"""

# (name, T, B, I, H), float32; T=None: one GRUCell step (ONNX Runtime: a GRU with T=1)
_CASES = [
    ("small-latency", 50, 1, 64, 128),
    ("medium", 100, 32, 256, 256),
    ("one step (cell)", None, 1, 64, 128),
]
_QUICK_CASES = [("small-latency", 50, 1, 64, 128), ("one step (cell)", None, 1, 64, 128)]


def _gpu_status():
    from . import _cupy

    try:
        return (
            "available" if _cupy.is_available() else "not available (needs CuPy and an NVIDIA GPU)"
        )
    except Exception as exc:  # pragma: no cover - defensive: never fail the banner
        return f"not available ({exc})"


def _layers_of(m):
    return m._layers()


def self_check():
    """Compare forward, backward and lengths against the NumPy reference; return failures."""
    rng = np.random.default_rng(0)
    failures = []
    configs = [
        dict(num_layers=1, bidirectional=False, reset_after=True),
        dict(num_layers=2, bidirectional=True, reset_after=True, batch_first=True),
        dict(num_layers=2, bidirectional=True, reset_after=False),
        dict(num_layers=3, bidirectional=False, reset_after=False, bias=False),
    ]
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        for cfg in configs:
            m = GRU(5, 7, dtype=dtype, seed=1, **cfg)
            T, B = 6, 3
            shape = (B, T, 5) if m.batch_first else (T, B, 5)
            x = rng.standard_normal(shape).astype(dtype)
            h0 = rng.standard_normal((m.num_layers * m.num_directions, B, 7)).astype(dtype)
            lengths = np.array([6, 2, 4])
            kw = dict(
                hidden_size=7,
                num_directions=m.num_directions,
                reset_after=m.reset_after,
                batch_first=m.batch_first,
                lengths=lengths,
            )
            (out, h_n), backward = m.vjp(x, h0, lengths)
            ref_out, ref_hn = _reference.gru_forward(x, h0, _layers_of(m), **kw)
            d_out = rng.standard_normal(out.shape).astype(dtype)
            d_hn = rng.standard_normal(h_n.shape).astype(dtype)
            dx, dh0 = backward(d_out, d_hn)
            rdx, rdh0, _ = _reference.gru_backward(x, h0, _layers_of(m), d_out, d_hn, **kw)
            for name, a, b in (
                ("output", out, ref_out),
                ("h_n", h_n, ref_hn),
                ("dx", dx, rdx),
                ("dh0", dh0, rdh0),
            ):
                err = float(np.max(np.abs(a - b)) / (1 + np.max(np.abs(b))))
                if not err <= tol:
                    failures.append(f"{np.dtype(dtype).name} {cfg}: {name} differs by {err:.2e}")
    return failures


# -- peers -------------------------------------------------------------------------------------


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _torch_engine(threads, T, B, I, H, weights):
    """A callable running the same float32 forward in PyTorch, or the reason it can't."""
    if not _installed("torch"):
        return None, "not installed"
    import torch

    torch.set_num_threads(threads)
    if T is None:
        net = torch.nn.GRUCell(I, H)
    else:
        net = torch.nn.GRU(I, H)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(weights[name.replace("_l0", "")]))
    net.eval()
    shape = (B, I) if T is None else (T, B, I)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    h = torch.zeros(B, H) if T is None else None

    def run():
        with torch.no_grad():
            return net(x, h) if T is None else net(x)

    return run, f"PyTorch {torch.__version__.split('+')[0]}"


def _ort_engine(threads, T, B, I, H, weights):
    if not _installed("onnxruntime"):
        return None, "not installed"
    if not _installed("onnx"):
        return None, "installed, but exporting the model needs the onnx package"
    import onnxruntime as ort

    from .interop import to_onnx

    gru = GRU(I, H)
    gru.load_state_dict({f"{k}_l0": v for k, v in weights.items()})
    buf = io.BytesIO()
    to_onnx(gru, buf, h0="none")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(buf.getvalue(), sess_options=so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((T or 1, B, I)).astype(np.float32)
    return (lambda: sess.run(None, {"x": x})), f"ONNX Runtime {ort.__version__}"


def _cygru_engine(T, B, I, H, weights):
    x = np.random.default_rng(1).standard_normal((B, I) if T is None else (T, B, I))
    x = x.astype(np.float32)
    if T is None:
        cell = GRUCell(I, H)
        cell.load_state_dict(weights)
        h = np.zeros((B, H), np.float32)
        return lambda: cell(x, h)
    gru = GRU(I, H)
    gru.load_state_dict({f"{k}_l0": v for k, v in weights.items()})
    return lambda: gru(x)


# -- measuring ---------------------------------------------------------------------------------


class _Progress:
    """One line on stderr, rewritten in place on a terminal (plain lines otherwise)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = 0.0

    def show(self, text, force=False):
        now = time.perf_counter()
        if self.tty and (force or now - self.last > 0.1):
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self.last = now
        elif not self.tty and force:
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self):
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def measure(
    engines, budget_s, min_rounds=5, max_rounds=200, tolerance=0.02, progress=None, label=""
):
    """Median seconds per call of each engine (name -> callable), measured in interleaved
    rounds until every median is stable.

    Each round times a batch of calls of every engine (about 10 ms each), in an order that
    rotates from round to round. From ``min_rounds`` on, the run stops once every engine's
    median over all rounds moved less than ``tolerance`` (relative) in each of the last
    two rounds, or when ``budget_s`` has passed. Returns ``(results, rounds, stable)``,
    ``results[name] = (median, spread)`` with spread half the interquartile range of the
    rounds, relative to the median.
    """
    names = list(engines)
    inner = {}
    for name in names:  # warm up, and size a batch to ~10 ms
        fn = engines[name]
        fn()
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-7)
        inner[name] = max(1, min(10000, int(0.01 / one)))
    samples = {n: [] for n in names}
    history = []
    start = time.perf_counter()
    stable = False
    rounds = 0
    while rounds < max_rounds:
        order = names[rounds % len(names) :] + names[: rounds % len(names)]
        for name in order:
            fn, n = engines[name], inner[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
        rounds += 1
        medians = {n: float(np.median(samples[n])) for n in names}
        history.append(medians)
        if progress is not None:
            progress.show(
                f"measuring {label}: round {rounds}, "
                + ", ".join(f"{n} {1e3 * m:.4g} ms" for n, m in medians.items())
            )
        if (
            rounds >= min_rounds
            and len(history) >= 3
            and all(
                abs(h[n] - medians[n]) <= tolerance * medians[n]
                for h in history[-3:-1]
                for n in names
            )
        ):
            stable = True
            break
        if time.perf_counter() - start > budget_s:
            break
    results = {}
    for n in names:
        q1, med, q3 = np.percentile(samples[n], [25, 50, 75])
        results[n] = (float(med), float((q3 - q1) / 2 / med))
    return results, rounds, stable


def timing_table(threads, quick=False, progress=None):
    """Rows of measurements and the peers' status lines, for :func:`format_table`."""
    rng = np.random.default_rng(0)
    cases = _QUICK_CASES if quick else _CASES
    budget = 1.0 if quick else 4.0
    rows, peers = [], {}
    for i, (name, T, B, I, H) in enumerate(cases):
        k = 1.0 / np.sqrt(H)
        weights = {
            n: rng.uniform(-k, k, s).astype(np.float32)
            for n, s in (
                ("weight_ih", (3 * H, I)),
                ("weight_hh", (3 * H, H)),
                ("bias_ih", (3 * H,)),
                ("bias_hh", (3 * H,)),
            )
        }
        engines = {"cygru": _cygru_engine(T, B, I, H, weights)}
        for key, make in (("PyTorch", _torch_engine), ("ONNX Runtime", _ort_engine)):
            try:
                fn, what = make(threads, T, B, I, H, weights)
            except Exception as exc:  # a broken peer never stops the check
                fn, what = None, f"failed to set up ({type(exc).__name__}: {exc})"
            if fn is None:
                peers.setdefault(key, what)
            else:
                peers[key] = what
                engines[key] = fn
        if progress is not None:
            progress.show(f"measuring {name} ({i + 1}/{len(cases)}) ...", force=True)
        sizes = f"B={B} I={I} H={H}" if T is None else f"T={T} B={B} I={I} H={H}"
        results, rounds, stable = measure(
            engines, budget, progress=progress, label=f"{name} ({i + 1}/{len(cases)})"
        )
        rows.append((name, sizes, results, rounds, stable))
    if progress is not None:
        progress.done()
    return rows, peers


def format_table(rows, engine_names):
    """An aligned plain-text table: median ms ± spread per engine, and cygru's speed-up."""
    header = (
        ["case", "sizes"]
        + [f"{n} ms" for n in engine_names]
        + [f"vs {n}" for n in engine_names if n != "cygru"]
        + ["rounds"]
    )
    lines = [header]
    for name, sizes, results, rounds, stable in rows:
        cells = [name, sizes]
        for n in engine_names:
            if n in results:
                med, spread = results[n]
                cells.append(f"{1e3 * med:.4g} ±{100 * spread:.0f}%")
            else:
                cells.append("-")
        for n in engine_names:
            if n != "cygru":
                cells.append(f"{results[n][0] / results['cygru'][0]:.2f}x" if n in results else "-")
        cells.append(f"{rounds}{'' if stable else '*'}")
        lines.append(cells)
    widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
    out = []
    for r, row in enumerate(lines):
        # text columns left-aligned, numbers right-aligned
        out.append(
            "  ".join(
                cell.ljust(w) if c < 2 else cell.rjust(w)
                for c, (cell, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
        if r == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _threads_arg(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= n <= 256:
        raise argparse.ArgumentTypeError(f"must be between 1 and 256, got {n}")
    return n


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m cygru",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--threads",
        type=_threads_arg,
        metavar="N",
        help="threads for cygru and for the peers it is timed beside "
        "(default: cygru's default, the usable cores; see "
        "cygru.set_num_threads)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer sizes and shorter measurements (a few seconds)"
    )
    parser.add_argument(
        "--no-timing", action="store_true", help="only the self-check and the demo, no timing table"
    )
    parser.add_argument("--version", action="version", version=f"cygru {__version__}")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        set_num_threads(args.threads)
    threads = get_num_threads()
    print(f"cygru {__version__}")
    print(f"BLAS: {_blas.blas_name()}")
    print(f"GPU backend: {_gpu_status()}")
    print(
        f"threads: {threads} ({'--threads' if args.threads is not None else 'default'}; "
        "the peers are timed with the same count)"
    )
    print(
        "self-check against the NumPy reference (forward, backward, lengths, both variants,"
        " float32/float64) ...",
        end=" ",
        flush=True,
    )
    failures = self_check()
    if failures:
        print("FAILED")
        for f in failures:
            print("  " + f)
        return 1
    print("ok")
    gru = GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    out, h_n = gru(x)
    print(
        f"demo: {gru}: x {x.shape} -> output {out.shape}, h_n {h_n.shape}; "
        f"output[-1,:,:4] == h_n[-2]: {bool((out[-1, :, :4] == h_n[-2]).all())}"
    )
    if args.no_timing:
        return 0
    rows, peers = timing_table(threads, quick=args.quick, progress=_Progress())
    engines = ["cygru"] + [n for n in ("PyTorch", "ONNX Runtime") if any(n in r[2] for r in rows)]
    print(
        f"\nfloat32 forward, {threads} thread{'s' if threads != 1 else ''}: median ms per "
        "call (± half the interquartile range of the rounds); vs X: X's time / cygru's, "
        "above 1 when cygru is faster"
    )
    print(format_table(rows, engines))
    timed = [peers[n] for n in engines if n in peers]
    if timed:
        print("peers: " + ", ".join(timed))
    for name, what in peers.items():
        if name not in engines:
            hint = "pip install torch" if name == "PyTorch" else "pip install onnx onnxruntime"
            print(f"{name}: {what}, not timed ({hint} to compare)")
    if any(not stable for *_, stable in rows):
        print("* not stable within the time allowed (a busy machine?): the medians are rough")
    print("Full benchmark: python benchmarks/run.py (in a clone of the repository)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
