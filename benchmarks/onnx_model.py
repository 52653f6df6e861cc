"""Whole ONNX models with their GRU nodes in cygru (cygru.onnxruntime.InferenceSession)
beside ONNX Runtime alone on the same model, float32 and cygru's int8 and bf16, 1 and 2
threads.

    python benchmarks/onnx_model.py [--quick] [--repeat N] [--json PATH]

The models are exported by PyTorch's TorchScript exporter (``torch.onnx.export(...,
dynamo=False)``) from a ``Linear`` + ``tanh`` before the GRU stack and a ``Linear`` head on
its last step:

``medium``   T=100, B=32, I=H=256, 1 layer
``deep-bi``  T=100, B=32, I=H=256, 2 bidirectional layers
``step``     T=1, B=1, I=H=256, 1 layer (one streaming step: what each part boundary costs)
``g2p_en``   the real trained grapheme-to-phoneme model of ``benchmarks/real_models.py``
             (encoder GRU -> decoder GRU -> dense; 88 words, when g2p-en is installed)

Each engine's outputs are checked against ONNX Runtime's first (float32 within 1e-4). The
sessions of one case take turns within every repeat (so a change of the machine's load hits
them alike, each after a pause of 50 ms and one untimed run, so that ONNX Runtime's worker
threads, which spin for a while after each run by default, do not take cores from the engine
timed next); the median and the best time per call are printed. ONNX Runtime runs with
``intra_op_num_threads`` = cygru's thread count and ``inter_op_num_threads`` = 1.
"""

import argparse
import io
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
try:  # an installed cygru (pip install -e .) wins; otherwise this checkout's in-place build
    import cygru
except ImportError:
    sys.path.insert(0, os.path.dirname(HERE))
    import cygru
sys.path.insert(0, HERE)

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from cygru.onnxruntime import InferenceSession  # noqa: E402
from run import _cpu_model  # noqa: E402  (benchmarks/run.py: the CPU's model name)


def _export(net, args, names):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, buf, dynamo=False, input_names=names, output_names=["y"])
    return buf.getvalue()


class _Net(torch.nn.Module):
    def __init__(self, I, H, layers, bidirectional):
        super().__init__()
        self.pre = torch.nn.Linear(I, I)
        self.gru = torch.nn.GRU(I, H, layers, bidirectional=bidirectional)
        self.head = torch.nn.Linear(H * (2 if bidirectional else 1), 10)

    def forward(self, x):
        y, _ = self.gru(torch.tanh(self.pre(x)))
        return self.head(y[-1])


def _synthetic(T, B, I, H, layers, bidirectional):
    torch.manual_seed(0)
    net = _Net(I, H, layers, bidirectional).eval()
    x = torch.randn(T, B, I)
    return _export(net, (x,), ["x"]), {"x": x.numpy()}


def cases(quick):
    T = 10 if quick else 100
    out = {
        "medium": lambda: _synthetic(T, 32, 256, 256, 1, False),
        "deep-bi": lambda: _synthetic(T, 32, 256, 256, 2, True),
        "step": lambda: _synthetic(1, 1, 256, 256, 1, False),
    }
    try:
        import importlib.util

        if importlib.util.find_spec("g2p_en") is not None:
            import real_models

            def g2p():
                real = real_models.g2p_en_onnx(False)
                return real["model"], real["feeds"]

            out["g2p_en"] = g2p
    except ImportError:
        pass
    return out


def measure(model, feeds, threads, repeat, number):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    cygru.set_num_threads(threads)
    sessions = {
        "onnxruntime": ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]),
        "cygru float32": InferenceSession(model, opts),
        "cygru int8": InferenceSession(model, opts, quantize="int8"),
        "cygru bf16": InferenceSession(model, opts, quantize="bf16"),
    }
    expected = sessions["onnxruntime"].run(None, feeds)
    got = sessions["cygru float32"].run(None, feeds)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    parts = sessions["cygru float32"].parts
    times = {name: [] for name in sessions}
    for s in sessions.values():  # warm up
        s.run(None, feeds)
    for _ in range(repeat):
        for name, s in sessions.items():
            # ONNX Runtime's workers spin for a while after a run (its default): without a
            # pause they would take cores from the engine timed next
            time.sleep(0.05)
            s.run(None, feeds)
            t0 = time.perf_counter()
            for _ in range(number):
                s.run(None, feeds)
            times[name].append((time.perf_counter() - t0) / number)
    return parts, {n: (statistics.median(t), min(t)) for n, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short sequences, 2 repeats")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    repeat = 2 if args.quick else args.repeat
    print(
        f"cygru {cygru.__version__}, onnxruntime {ort.__version__}, torch {torch.__version__}; "
        f"{_cpu_model()}; load average {os.getloadavg()[0]:.2f}"
    )
    results = []
    for name, build in cases(args.quick).items():
        model, feeds = build()
        for threads in (1, 2):
            number = 200 if name == "step" else 1
            parts, t = measure(model, feeds, threads, repeat, number)
            base = t["onnxruntime"][0]
            scale, unit = (1e6, "us") if name == "step" else (1e3, "ms")
            print(f"{name}, {threads} thread(s); cygru's parts: {parts}")
            for engine, (med, best) in t.items():
                print(
                    f"  {engine:14s} median {med * scale:9.3f} {unit}  best {best * scale:9.3f} "
                    f"{unit}  ORT/this {base / med:5.2f}x"
                )
                results.append(
                    {
                        "case": name,
                        "threads": threads,
                        "engine": engine,
                        "median_s": med,
                        "best_s": best,
                        "ort_over_this": base / med,
                    }
                )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": _cpu_model(), "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
