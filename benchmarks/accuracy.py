#!/usr/bin/env python
"""The accuracy contract of ``cygru.quantize``: int8 and bf16 against float32, beside PyTorch.

    python benchmarks/accuracy.py [--configs NAME ...] [--models NAME ...] [--full]
                                  [--max-steps T] [--json PATH]

For each forward configuration of benchmarks/run.py (small-latency, medium, large, deep-bi,
long-seq: the same seeded weights, PyTorch's ``nn.GRU`` initialisation with seed 0 where torch
is installed, and the same standard-normal input, seed 0) and for each real trained model of
benchmarks/real_models.py (g2p_en's encoder and decoder, sleepecg's BiGRU), the float32 cygru
module is the reference and three reduced-precision runs of the same weights on the same
inputs are compared with it:

* ``int8``: ``cygru.quantize(module, "int8")``;
* ``bf16``: ``cygru.quantize(module, "bf16")``;
* ``torch-int8``: PyTorch's dynamic int8 GRU (``torch.ao.quantization.quantize_dynamic``,
  the default per-tensor qconfig, as benchmarks/run.py times it) loaded with the same float
  weights (a ``reset_after=False`` module has no PyTorch equivalent).

Reported per row: the max and mean absolute error of ``output`` (over the valid time steps
where ``lengths`` is given) and of ``h_n`` (a cell: its new state is ``output``), and for the
real models the fraction of the model's decisions (g2p_en: each word's phoneme sequence;
sleepecg: each 30-s epoch's stage) that equal the float32 model's. The run prints a markdown
table and writes the JSON to benchmarks/results/accuracy.json.

By default "large" runs 50 of its 200 steps (``SHORT_STEPS``; the error does not grow along a
sequence: long-seq's 2000 steps show it), so that the whole run stays within a few minutes on
2 cores wherever the quantized kernels take their portable path; ``--full`` runs every
configuration at its benchmark length (the table in docs/performance.rst), ``--max-steps T``
caps every configuration at T steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):  # this checkout's cygru (built in place) and run.py, real_models.py
    if _p not in sys.path:
        sys.path.insert(0, _p)

import cygru  # noqa: E402
from run import FORWARD_CASES, _cpu_model, _torch_gru, _torch_int8_gru  # noqa: E402

CONFIGS = ["small-latency", "medium", "large", "deep-bi", "long-seq"]
PRECISIONS = ["int8", "bf16", "torch-int8"]
DEFAULT_JSON = os.path.join(HERE, "results", "accuracy.json")
SHORT_STEPS = {"large": 50}  # the default run's step counts, where shorter than run.py's


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class TorchInt8:
    """PyTorch's dynamic int8 GRU (GRUCell) with a cygru module's weights and call API.

    ``TorchInt8(m)(x, h0=None, lengths=None) -> (output, h_n)`` as numpy arrays (a cell:
    ``(x, h=None) -> h'``); ``lengths`` go through ``pack_padded_sequence``.
    """

    def __init__(self, torch, module):
        self.torch = torch
        self.cell = not hasattr(module, "num_layers")
        state = {
            k: torch.from_numpy(np.array(v, np.float32)) for k, v in module.state_dict().items()
        }
        if self.cell:
            net = torch.nn.GRUCell(module.input_size, module.hidden_size)
            net.load_state_dict(state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.q = torch.ao.quantization.quantize_dynamic(
                    _Wrap(torch, net), {torch.nn.GRUCell}, dtype=torch.qint8
                )
        else:
            if module.batch_first:
                raise ValueError("TorchInt8: batch_first modules are not used here")
            net = torch.nn.GRU(
                module.input_size,
                module.hidden_size,
                module.num_layers,
                bidirectional=module.bidirectional,
            )
            net.load_state_dict(state)
            self.q = _torch_int8_gru(torch, net)
        self.q.eval()

    def __call__(self, x, h0=None, lengths=None, h=None):
        torch = self.torch
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            if self.cell:
                state = h0 if h0 is not None else h
                ht = None if state is None else torch.from_numpy(np.asarray(state, np.float32))
                return self.q(xt, ht).numpy()
            ht = None if h0 is None else torch.from_numpy(np.asarray(h0, np.float32))
            if lengths is None:
                out, h_n = self.q(xt, ht)
                return out.numpy(), h_n.numpy()
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            packed = pack_padded_sequence(
                xt, torch.as_tensor(np.asarray(lengths)), enforce_sorted=False
            )
            out, h_n = self.q(packed, ht)
            out, _ = pad_packed_sequence(out, total_length=xt.shape[0])
            return out.numpy(), h_n.numpy()


def _Wrap(torch, inner):
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = inner

        def forward(self, x, h=None):
            return self.gru(x, h)

    return Wrap()


def converters(torch, quantize):
    """precision -> (float module -> module with the same call API), or None if n/a."""

    def torch_int8(m):
        if torch is None or not getattr(m, "reset_after", True):
            return None
        engines = torch.backends.quantized.supported_engines
        if not engines or engines == ["none"]:
            return None
        return TorchInt8(torch, m)

    return {
        "int8": lambda m: quantize(m, "int8"),
        "bf16": lambda m: quantize(m, "bf16"),
        "torch-int8": torch_int8,
    }


def _errors(ref, got, mask=None):
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))
    if mask is not None:
        diff = diff[mask]
    return float(diff.max()), float(diff.mean())


def compare(module, x, kwargs, runner):
    """Errors of runner(x, **kwargs) against module(x, **kwargs) (both the same API)."""
    ref = module(x, **kwargs)
    got = runner(x, **kwargs)
    if isinstance(ref, tuple):
        mask = None
        lengths = kwargs.get("lengths")
        if lengths is not None:
            T = ref[0].shape[0]
            mask = np.broadcast_to(
                (np.arange(T)[:, None] < np.asarray(lengths)[None, :])[..., None], ref[0].shape
            )
        o_max, o_mean = _errors(ref[0], got[0], mask)
        h_max, h_mean = _errors(ref[1], got[1])
        return {"output_max": o_max, "output_mean": o_mean, "h_n_max": h_max, "h_n_mean": h_mean}
    o_max, o_mean = _errors(ref, got)
    return {"output_max": o_max, "output_mean": o_mean, "h_n_max": None, "h_n_mean": None}


def config_module(torch, name, max_steps=None, full=True):
    """The float32 module and input of one of run.py's forward configurations (T cut to
    ``SHORT_STEPS`` unless ``full``, and to ``max_steps`` if given)."""
    T, B, I, H, L, D = FORWARD_CASES[name]
    if not full:
        T = min(T, SHORT_STEPS.get(name, T))
    if max_steps is not None:
        T = min(T, max_steps)
    if torch is not None:
        net = _torch_gru(torch, I, H, L, D, seed=0)
        state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    else:
        state = cygru.GRU(I, H, L, bidirectional=(D == 2), seed=0).state_dict()
    gru = cygru.GRU(I, H, L, bidirectional=(D == 2), dtype=np.float32)
    gru.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((T, B, I), dtype=np.float32)
    return gru, x, (T, B, I, H, L, D)


def run(configs=CONFIGS, models=None, max_steps=None, full=True, log=print):
    torch = _import_torch()
    conv = converters(torch, cygru.quantize)
    rows, skipped = [], {}
    for name in configs:
        gru, x, shape = config_module(torch, name, max_steps, full)
        for prec in PRECISIONS:
            t0 = time.perf_counter()
            runner = conv[prec](gru)
            if runner is None:
                skipped[f"{name}/{prec}"] = "PyTorch (or its quantized engine) unavailable"
                continue
            row = {"source": "config", "name": name, "module": "GRU", "shape": list(shape)}
            row.update(precision=prec, **compare(gru, x, {}, runner), decisions_agree=None)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            log(_row_line(row))
    import real_models

    for model in real_models.load_all(models, skipped):
        for prec in PRECISIONS:
            t0 = time.perf_counter()
            runners = {k: conv[prec](m) for k, (m, _, _) in model.modules.items()}
            if any(r is None for r in runners.values()):
                skipped[f"{model.name}/{prec}"] = "PyTorch (or its quantized engine) unavailable"
                continue
            ref = model.decide(lambda m: m)
            cache = {id(m): runners[k] for k, (m, _, _) in model.modules.items()}
            got = model.decide(lambda m, c=cache: c[id(m)])
            agree = float(np.mean([a == b for a, b in zip(ref, got)]))
            for k, (m, x, kw) in model.modules.items():
                row = {
                    "source": "model",
                    "name": model.name,
                    "module": f"{k} ({type(m).__name__})",
                    "shape": list(x.shape),
                    "package": f"{model.package} {model.version} ({model.license})",
                }
                row.update(precision=prec, **compare(m, x, kw, runners[k]))
                row["decisions_agree"] = agree
                row["decisions"] = len(ref)
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                log(_row_line(row))
    return {"rows": rows, "skipped": skipped}


def _fmt(v):
    return "-" if v is None else f"{v:.2e}"


def _row_line(r):
    agree = "" if r["decisions_agree"] is None else f"  decisions {r['decisions_agree']:.4f}"
    return (
        f"{r['name']:>14} {r['module']:<20} {r['precision']:<10} out {_fmt(r['output_max'])}"
        f"/{_fmt(r['output_mean'])}  h_n {_fmt(r['h_n_max'])}/{_fmt(r['h_n_mean'])}{agree}"
    )


def markdown(result):
    lines = [
        "| model / config | module | precision | output max | output mean | h_n max "
        "| h_n mean | decisions equal |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        agree = (
            "-"
            if r["decisions_agree"] is None
            else f"{r['decisions_agree'] * 100:.1f}% of {r['decisions']}"
        )
        name = r["name"]
        if r["source"] == "config":
            name += " ({},{},{},{},{},{})".format(*r["shape"])
        lines.append(
            f"| {name} | {r['module']} | {r['precision']} | {_fmt(r['output_max'])} | "
            f"{_fmt(r['output_mean'])} | {_fmt(r['h_n_max'])} | {_fmt(r['h_n_mean'])} | "
            f"{agree} |"
        )
    return "\n".join(lines)


def _git_head():
    try:
        return subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment():
    import scipy

    torch = _import_torch()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "commit": _git_head(),
        "versions": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "cygru": cygru.__version__,
            "torch": None if torch is None else torch.__version__,
        },
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="*", default=CONFIGS, choices=CONFIGS)
    p.add_argument("--models", nargs="*", default=None, help="real models (default: all)")
    p.add_argument(
        "--full", action="store_true", help="every configuration at its benchmark length"
    )
    p.add_argument("--max-steps", type=int, default=None, help="cap T of the configurations")
    p.add_argument("--json", default=DEFAULT_JSON, help="where to write the JSON ('' for none)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.configs, args.models, args.max_steps, args.full)
    result["environment"] = environment()
    result["max_steps"] = args.max_steps
    result["full"] = args.full
    result["seconds"] = time.perf_counter() - t0
    print()
    print(markdown(result))
    if result["skipped"]:
        print("\nskipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items()))
    env = result["environment"]
    print(
        f"\nCPU: {env['cpu_model']}; cygru {env['versions']['cygru']} at {env['commit']}; "
        f"torch {env['versions']['torch']}; {result['seconds']:.0f} s"
    )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
