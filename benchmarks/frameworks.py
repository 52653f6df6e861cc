"""Issue 27's timing table in one run: cygru inside PyTorch and inside ONNX Runtime, beside
the frameworks alone, 1 and 2 threads, with the targets marked PASS or MISS.

    python benchmarks/frameworks.py [--quick] [--json PATH]

Rows (float32 unless named; best time of the repeats, the cases of a row taking turns within
each repeat, so a change of the machine's load hits them alike):

* ``torch_module.py``'s: the wrapper's own cost per call (``cygru.torch.GRU`` under
  ``torch.no_grad`` minus ``cygru.GRU`` on the same arrays, T=1, B=1, I=64, H=128, 1 thread);
  inference and a training step (GRU + ``Linear`` head, cross-entropy, Adam) at T=100,
  B=32, I=H=256, beside ``cygru.GRU`` and ``torch.nn.GRU``.
* ``onnx_model.py``'s: whole exported models (medium, deep-bi, one streaming step, g2p_en)
  in ONNX Runtime alone and in ``cygru.onnxruntime.InferenceSession`` in float32, int8 and
  bf16.

Targets (issue 27): a training step with ``cygru.torch.GRU`` faster than with
``torch.nn.GRU``; the wrapper's cost <= 5 us per call; ``cygru.torch.GRU`` inference within
5% of ``cygru.GRU``; a whole ONNX model with its GRUs in cygru no slower than ONNX Runtime
alone (the medium, deep-bi and g2p_en models; the one-step model is shown, not a target: a
part boundary costs an ONNX Runtime call there), and faster with a reduced-precision module.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import onnx_model  # noqa: E402
import torch_module  # noqa: E402
from run import _cpu_model  # noqa: E402


def _mark(ok):
    return "PASS" if ok else "MISS"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, not a measurement")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    repeat = 2 if args.quick else 7
    T = 10 if args.quick else 100
    load0 = os.getloadavg()[0]
    rows = []

    def row(case, threads, what, value, unit, target=None, ok=None):
        rows.append(
            {
                "case": case,
                "threads": threads,
                "what": what,
                "value": value,
                "unit": unit,
                "target": target,
                "result": None if ok is None else _mark(ok),
            }
        )

    small = torch_module.small_call(repeat, 200 if args.quick else 2000)
    cost = small["cygru.torch.GRU, no_grad"] - small["cygru.GRU (NumPy)"]
    for name, us in small.items():
        row("T=1 B=1 I=64 H=128", 1, name, us, "us")
    row("T=1 B=1 I=64 H=128", 1, "wrapper's own cost", cost, "us", "<= 5 us", cost <= 5.0)
    for threads in (1, 2):
        med = torch_module.medium(threads, repeat, T=T)
        for name, ms in med.items():
            row("medium torch", threads, name, ms, "ms")
        inf = med["inference cygru.torch.GRU"] / med["inference cygru.GRU (NumPy)"]
        row(
            "medium torch",
            threads,
            "inference cygru.torch / cygru.GRU",
            inf,
            "x",
            "<= 1.05",
            inf <= 1.05,
        )
        train = med["training step torch.nn.GRU"] / med["training step cygru.torch.GRU"]
        row(
            "medium torch",
            threads,
            "training step torch.nn.GRU / cygru.torch",
            train,
            "x",
            "> 1",
            train > 1.0,
        )
    for name, build in onnx_model.cases(args.quick).items():
        model, feeds = build()
        for threads in (1, 2):
            number = 200 if name == "step" else 1
            parts, t = onnx_model.measure(model, feeds, threads, 2 * repeat - 1, number)
            base = t["onnxruntime"][1]
            scale, unit = (1e6, "us") if name == "step" else (1e3, "ms")
            for engine, (_, best) in t.items():
                row(f"onnx {name}", threads, engine, best * scale, unit)
            for engine in ("cygru float32", "cygru int8", "cygru bf16"):
                ratio = base / t[engine][1]
                target = ok = None
                if name != "step":
                    target, ok = (
                        (">= 1", ratio >= 1.0)
                        if engine == "cygru float32"
                        else ("> 1", ratio > 1.0)
                    )
                row(f"onnx {name}", threads, f"ORT / {engine}", ratio, "x", target, ok)
    load1 = os.getloadavg()[0]
    print(f"{_cpu_model()}; load average {load0:.2f} at the start, {load1:.2f} at the end")
    print("| case | threads | what | value | target | result |")
    print("|---|---:|---|---:|---|---|")
    for r in rows:
        value = f"{r['value']:.2f}{'x' if r['unit'] == 'x' else ' ' + r['unit']}"
        print(
            f"| {r['case']} | {r['threads']} | {r['what']} | {value} | {r['target'] or ''} | "
            f"{r['result'] or ''} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": _cpu_model(), "load": [load0, load1], "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
