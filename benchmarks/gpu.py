#!/usr/bin/env python
"""cygru GPU benchmark: cygru's CuPy backend vs torch.nn.GRU on CUDA (cuDNN), float32.

    python benchmarks/gpu.py [--repeat N] [--quick] [--json PATH] [--cases CASE ...]
                             [--device N] [--allow-tf32]

Needs an NVIDIA GPU, CuPy and (for the peer) a CUDA build of PyTorch. Without a GPU or
CuPy it prints why and exits with status 0; without CUDA PyTorch it times cygru alone.

For every case the two implementations get the same weights (PyTorch's initialisation,
loaded into cygru with ``load_state_dict`` and moved with ``.to("cuda")``) and the same
input (a CuPy array for cygru, a CUDA tensor for PyTorch). Their outputs and h_n are
compared first (max abs diff <= 1e-4); a peer that does not match is reported and not
timed. Timings are wall-clock with the device synchronised (``cupy.cuda.Device().
synchronize()`` and ``torch.cuda.synchronize()``) before the timer starts and before it
stops; each sample is a loop of calls, the median over samples is reported (the same
adaptive scheme as benchmarks/run.py).

TF32 is off by default on both sides (PyTorch's cuDNN RNN would otherwise use TF32 on
Ampere and later GPUs, which does not match float32 to 1e-4); ``--allow-tf32`` turns it on
for both (PyTorch's cuDNN RNN flag and ``CUPY_TF32=1``) and relaxes the check to 1e-2.
"""

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from run import (  # noqa: E402
    FORWARD_CASES,
    TimingConfig,
    _cpu_model,
    _fmt_ms,
    _git_head,
    _json_default,
    _maxdiff,
    gru_flops,
    measure,
)

# (T, B, I, H, layers, directions)
GPU_CASES = dict(FORWARD_CASES)
GPU_CASES.update(
    {
        "large-batch": (200, 256, 1024, 1024, 1, 1),
        "batch-1": (100, 1, 256, 256, 1, 1),
        "batch-4": (100, 4, 256, 256, 1, 1),
        "batch-8": (100, 8, 256, 256, 1, 1),
    }
)
ATOL = 1e-4
ATOL_TF32 = 1e-2


class Backend:
    """Where the arrays live. ``dry_run`` substitutes NumPy and CPU PyTorch for CuPy and
    CUDA, to exercise this script's logic on a machine without a GPU (the timings of a dry
    run mean nothing)."""

    def __init__(self, device, dry_run, torch):
        self.dry_run = dry_run
        self.torch = torch
        if dry_run:
            import numpy

            self.xp = numpy
            self.tdev = "cpu"
            self.cy_device = "cpu"
            self.asnumpy = numpy.asarray
            self.name = "dry run on the CPU (NumPy + CPU PyTorch standing in for the GPU)"
            return
        import cupy

        self.xp = cupy
        self.device = device
        cupy.cuda.Device(device).use()
        self.tdev = f"cuda:{device}"
        self.cy_device = f"cuda:{device}"
        self.asnumpy = cupy.asnumpy
        props = cupy.cuda.runtime.getDeviceProperties(device)
        name = props["name"]
        self.name = name.decode() if isinstance(name, bytes) else str(name)

    def sync(self):
        if self.dry_run:
            return
        self.xp.cuda.Device(self.device).synchronize()
        if self.torch is not None:
            self.torch.cuda.synchronize(self.device)


def _status_ok_gpu(dry_run):
    """(ok, message): whether CuPy sees a GPU and cygru's GPU backend is usable."""
    if dry_run:
        return True, ""
    try:
        import cupy
    except ImportError as exc:
        return False, f'CuPy is not installed ({exc}); install cupy-cuda12x (or "cygru[gpu]")'
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return False, f"CuPy sees no CUDA device ({type(exc).__name__}: {exc})"
    if n < 1:
        return False, "CuPy sees no CUDA device"
    from cygru import _cupy

    if not _cupy.is_available():
        return False, "cygru's GPU backend reports it is not available"
    return True, ""


def _torch_cuda(dry_run):
    """torch (if it can run the peer), and a note when it cannot."""
    try:
        import torch
    except ImportError as exc:
        return None, f"PyTorch not installed ({exc}): cygru timed alone"
    if not dry_run and not torch.cuda.is_available():
        return None, "PyTorch has no CUDA here (CPU-only build or no driver): cygru timed alone"
    return torch, None


def set_tf32(torch, allow):
    if torch is None:
        return
    rnn = getattr(getattr(torch.backends, "cudnn", None), "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):  # PyTorch >= 2.9 API
        rnn.fp32_precision = "tf32" if allow else "ieee"
    else:  # legacy flag
        torch.backends.cudnn.allow_tf32 = bool(allow)


def run_case(name, be, torch, cfg, tol, log):
    import numpy as np
    import cygru

    T, B, I, H, L, D = GPU_CASES[name]
    x = np.random.default_rng(0).standard_normal((T, B, I), dtype=np.float32)
    if torch is not None:
        torch.manual_seed(0)
        net = torch.nn.GRU(I, H, num_layers=L, bidirectional=(D == 2)).eval()
        state = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        net = net.to(be.tdev)
        xt = torch.from_numpy(x).to(be.tdev)
    else:
        state = cygru.GRU(I, H, L, bidirectional=(D == 2), seed=0).state_dict()
    gru = cygru.GRU(I, H, L, bidirectional=(D == 2))
    gru.load_state_dict(state)
    if not be.dry_run:
        gru.to(be.cy_device)
    xc = be.xp.asarray(x)

    entry = {
        "shape": dict(T=T, B=B, I=I, H=H, layers=L, dirs=D),
        "flops": gru_flops(T, B, I, H, L, D),
        "peers": {},
    }
    t0 = time.perf_counter()
    out_c, hn_c = gru(xc)  # first call also compiles cygru's kernels
    be.sync()
    entry["cygru_first_call_s"] = time.perf_counter() - t0
    out_c, hn_c = be.asnumpy(out_c), be.asnumpy(hn_c)
    fns = {"cygru": lambda: gru(xc)}
    entry["peers"]["cygru"] = {"status": "ok"}
    if torch is not None:
        with torch.no_grad():
            out_t, hn_t = net(xt)
        be.sync()
        diffs = {
            "output": _maxdiff(out_t.cpu().numpy(), out_c),
            "h_n": _maxdiff(hn_t.cpu().numpy(), hn_c),
        }
        worst = max(diffs.values())
        if worst <= tol:
            entry["peers"]["torch"] = {"status": "ok", "max_abs_diff": diffs}

            def torch_call():
                with torch.no_grad():
                    return net(xt)

            fns["torch"] = torch_call
        else:
            bar = "!" * 78
            print(
                f"\n{bar}\n!!! MISMATCH {name}: torch (cuDNN) differs from cygru by "
                f"{worst:.3g} (> {tol:g}); NOT timed\n{bar}\n",
                flush=True,
            )
            entry["peers"]["torch"] = {"status": "mismatch", "max_abs_diff": diffs}
    else:
        entry["peers"]["torch"] = {"status": "unavailable"}
    timed = measure(fns, cfg, sync=be.sync)
    for p, t in timed.items():
        entry["peers"][p].update(t)
        entry[f"{p}_gflops"] = entry["flops"] / (t["median_ms"] * 1e-3) / 1e9
    c = timed["cygru"]["median_ms"]
    msg = f"{name}: cygru {c:.4g} ms"
    if "torch" in timed:
        msg += (
            f", torch {timed['torch']['median_ms']:.4g} ms "
            f"(torch/cygru {timed['torch']['median_ms'] / c:.2f}x)"
        )
    log(msg)
    return entry


def table(results):
    head = [
        "case (T,B,I,H,layers,dirs)",
        "cygru ms",
        "torch cuDNN ms",
        "torch/cygru",
        "cygru GFLOP/s",
        "torch GFLOP/s",
        "notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for name, e in results.items():
        s = e["shape"]
        label = f"{name} ({s['T']},{s['B']},{s['I']},{s['H']},{s['layers']},{s['dirs']})"
        c = e["peers"]["cygru"].get("median_ms")
        t = e["peers"].get("torch", {})
        tms = t.get("median_ms")
        cells = [
            label,
            _fmt_ms(c),
            _fmt_ms(tms)
            if tms
            else {"mismatch": "MISMATCH", "unavailable": "n/a"}.get(t.get("status"), "—"),
            f"{tms / c:.2f}x" if tms and c else "—",
            f"{e['cygru_gflops']:.0f}" if "cygru_gflops" in e else "—",
            f"{e['torch_gflops']:.0f}" if "torch_gflops" in e else "—",
            f"first cygru call {e['cygru_first_call_s']:.2f} s (compiles kernels)"
            if e.get("cygru_first_call_s", 0) > 1
            else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment(be, torch):
    import numpy
    import cygru

    info = {
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "gpu": be.name,
        "git_head": _git_head(),
        "versions": {
            "numpy": numpy.__version__,
            "cygru": cygru.__version__,
            "torch": torch.__version__ if torch is not None else None,
        },
    }
    if not be.dry_run:
        cp = be.xp
        info["versions"]["cupy"] = cp.__version__
        try:
            info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
            info["cuda_driver"] = cp.cuda.runtime.driverGetVersion()
        except Exception:
            pass
        if torch is not None:
            info["versions"]["torch_cuda"] = torch.version.cuda
            info["versions"]["cudnn"] = torch.backends.cudnn.version()
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="cygru (CuPy) vs torch.nn.GRU (cuDNN) on an NVIDIA GPU, float32 forward."
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="fixed number of timed samples per implementation and case",
    )
    ap.add_argument("--quick", action="store_true", help="5x shorter timing")
    ap.add_argument(
        "--json",
        default=os.path.join(HERE, "results", "gpu-latest.json"),
        help="where to write the results (default: benchmarks/results/"
        "gpu-latest.json); '' for none",
    )
    ap.add_argument(
        "--cases",
        nargs="+",
        default=list(GPU_CASES),
        choices=list(GPU_CASES),
        metavar="CASE",
        help="cases (default: all): " + ", ".join(GPU_CASES),
    )
    ap.add_argument("--device", type=int, default=0, help="CUDA device id (default 0)")
    ap.add_argument(
        "--allow-tf32", action="store_true", help="let both use TF32 (checks relaxed to 1e-2)"
    )
    ap.add_argument("--dry-run-cpu", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.allow_tf32:
        os.environ["CUPY_TF32"] = "1"  # read by CuPy when it is imported

    ok, why = _status_ok_gpu(args.dry_run_cpu)
    if not ok:
        print(f"cygru GPU benchmark: skipped: {why}.")
        return 0
    torch, note = _torch_cuda(args.dry_run_cpu)
    if note:
        print(f"note: {note}")
    set_tf32(torch, args.allow_tf32)
    be = Backend(args.device, args.dry_run_cpu, torch)
    cfg = TimingConfig(quick=args.quick, repeat=args.repeat)
    tol = ATOL_TF32 if args.allow_tf32 else ATOL
    print(f"cygru GPU benchmark on {be.name}; cases: {', '.join(args.cases)}", flush=True)

    def log(msg):
        print(f"[gpu] {msg}", flush=True)

    results, failures = {}, {}
    t_start = time.perf_counter()
    for name in args.cases:
        try:
            results[name] = run_case(name, be, torch, cfg, tol, log)
        except Exception as exc:  # e.g. out of memory: report and go on
            import traceback

            traceback.print_exc()
            failures[name] = f"{type(exc).__name__}: {exc}"
            log(f"{name}: FAILED: {failures[name]}")
        finally:
            if not be.dry_run:
                try:
                    be.xp.get_default_memory_pool().free_all_blocks()
                    if torch is not None:
                        torch.cuda.empty_cache()
                except Exception:
                    pass
    env = environment(be, torch)
    text = [
        f"\n## GPU results (float32 forward, median ms; {env['gpu']}; "
        f"TF32 {'allowed' if args.allow_tf32 else 'off'})",
        "",
        ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        "",
        "torch/cygru > 1 means cygru is faster.",
        "",
        table(results),
        "",
    ]
    mism = [
        n for n, e in results.items() if e["peers"].get("torch", {}).get("status") == "mismatch"
    ]
    if mism:
        text.append("!!! MISMATCH (torch not timed): " + ", ".join(mism))
    if failures:
        text += [f"- {n} failed: {m}" for n, m in failures.items()]
    text.append(f"Total wall time: {time.perf_counter() - t_start:.0f} s")
    report = "\n".join(text)
    print(report)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": env,
                    "args": vars(args),
                    "cases": results,
                    "failures": failures,
                    "mismatches": mism,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "report_markdown": report,
                },
                f,
                indent=1,
                default=_json_default,
            )
        print(f"\nwrote {args.json}")
    return 1 if failures and not results else 0


if __name__ == "__main__":
    sys.exit(main())
