#!/usr/bin/env python
"""Per-call latency and tails: every call timed alone, idle and beside busy processes.

    python benchmarks/latency.py [--quick] [--cases CASE ...] [--peers PEER ...]
                                 [--calls N] [--rounds R] [--busy K ...] [--loads KIND ...]
                                 [--warm N] [--gap-us G] [--json PATH] [--markdown PATH]

cygru, ONNX Runtime, OpenVINO and PyTorch (those installed; ``--peers`` chooses) run the
same float32 GRU at their DEFAULT thread settings (no thread count is set; OpenVINO gets
only the f32 precision hint, since its default on CPUs with bf16 support is bf16). Each
peer lives in its own long-lived worker process (this script with ``--_role measure``),
so no thread pool shares a process with another. Before timing, every peer computes the
case once from the same h0 and its ``output`` and ``h_n`` are compared with cygru's (max
abs diff <= 1e-4); a peer that differs is reported and not timed.

A measurement is ``--calls`` calls (default 1500) of one peer, each timed alone with
``time.perf_counter_ns()`` around the call, after ``--warm`` untimed calls (default 20).
In the chained cases (``one-step``) each call starts from the state the previous call
returned (h0 chained, as a streaming pipeline does); the feedback happens outside the
timed region. From the calls' times the worker takes the median, p90, p99 (nearest rank)
and max; a round measures every peer under every condition; the report gives the median
over ``--rounds`` rounds (default 3) of each of these statistics.

Conditions: ``idle`` and, for every ``--busy`` count K > 0 (default 1 and 2) and every
``--loads`` kind (default ``spin``; ``omp`` adds OpenMP-region processes), K busy processes
of that kind, started once by under_load.py's process machinery (``spin``: a tight Python
loop; ``omp``: short parallel regions on every core with short gaps; see under_load.py),
held with SIGSTOP outside their condition and killed at the end (also on Ctrl-C, SIGTERM,
an exception, or the death of this script). Rounds are interleaved: every round visits
every condition in an order rotated by one each round, and within a condition every peer,
in an order rotated by one each round and condition.

Targets (issue 24), PASS or MISS with the measured ratio: cygru's p99 <= 5x cygru's idle
median, per case and condition; and in the chained one-step case cygru's median <= ONNX
Runtime's under the same condition.

See benchmarks/README.md ("Per-call latency") for how to read the output.
"""

import argparse
import math
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run as _run  # noqa: E402  (shapes, the ONNX model builder, JSON helpers)
import under_load as _ul  # noqa: E402  (child processes, load processes, machine info)

DEFAULT_CASES = ["one-step", "small-latency"]
QUICK_CASES = ["one-step"]
PEERS = ["cygru", "ort", "ov", "torch"]
PEER_LABEL = {"cygru": "cygru", "ort": "ONNX Runtime", "ov": "OpenVINO", "torch": "PyTorch"}
PEER_SHORT = {"cygru": "cygru", "ort": "ORT", "ov": "OV", "torch": "torch"}
PEER_MODULES = {
    "cygru": ("cygru",),
    "ort": ("onnxruntime", "onnx"),
    "ov": ("openvino", "onnx"),
    "torch": ("torch",),
}
LOAD_KINDS = ["spin", "omp"]
STATS = ("median", "p90", "p99", "max")
QUANTILES = {"median": 0.5, "p90": 0.9, "p99": 0.99}
ATOL = _run.ATOL
TAIL_FACTOR = 5.0  # target: cygru's p99 <= 5x cygru's idle median
MEDIAN_RATIO = 1.0  # target (chained one-step): cygru median / ORT median <= 1
SETTLE_S = 0.05  # after resuming loads: they ramp up


def _now():
    return time.perf_counter()


# ============================================================================================
# worker: one peer's model, timed call by call
# ============================================================================================


def _case_files(workdir, case):
    files = {k: os.path.join(workdir, f"{case}-{k}.npy") for k in ("x", "h0")}
    files["npz"] = os.path.join(workdir, f"{case}-weights.npz")
    return files


def write_case_files(case, workdir):
    """The weights (PyTorch names, from cygru.GRU(seed=0)), x and h0 every worker loads."""
    import numpy as np

    import cygru

    T, B, I, H, L, D = _run.FORWARD_CASES[case]
    files = _case_files(workdir, case)
    gru = cygru.GRU(I, H, L, bidirectional=(D == 2), seed=0)
    np.savez(files["npz"], **gru.state_dict())
    rng = np.random.default_rng(0)
    np.save(files["x"], rng.standard_normal((T, B, I), dtype=np.float32))
    np.save(files["h0"], rng.standard_normal((L * D, B, H), dtype=np.float32) * np.float32(0.5))


class Model:
    """One peer's model for one case: ``call(h)`` runs it, ``next_h(out)`` chains the state.

    ``h`` is None for the cases that are not chained (every call from a zero state).
    ``arrays(out)`` gives PyTorch's layout (output (T, B, D*H), h_n (L*D, B, H)) for the
    check, outside any timing.
    """

    def __init__(self, lib, case, workdir):
        import numpy as np

        T, B, I, H, L, D = _run.FORWARD_CASES[case]
        files = _case_files(workdir, case)
        self.chained = case in _run.CHAINED_CASES
        x = np.load(files["x"])
        h0 = np.load(files["h0"])
        self.h0 = h0 if self.chained else None
        with np.load(files["npz"]) as z:
            state = {k: z[k] for k in z.files}
        self.info = {}
        if lib == "cygru":
            import cygru

            gru = cygru.GRU(I, H, L, bidirectional=(D == 2))
            gru.load_state_dict(state)
            self.call = (lambda h: gru(x, h)) if self.chained else (lambda h: gru(x))
            self.next_h = lambda o: o[1]
            self.arrays = lambda o: {"output": o[0], "h_n": o[1]}
            self.info["threads"] = f"cygru.get_num_threads() = {cygru.get_num_threads()}"
        elif lib in ("ort", "ov"):
            model = _run.build_onnx_gru(state, I, H, L, D, h0=self.chained)

            def feed(h):
                f = {"X": x}
                if h is not None:
                    f.update({f"H0_{k}": h[k * D : (k + 1) * D] for k in range(L)})
                return f

            if lib == "ort":
                import onnxruntime as ort

                ort.set_default_logger_severity(3)
                before = _ul._task_count()
                so = ort.SessionOptions()  # defaults: no thread counts set
                sess = ort.InferenceSession(
                    model, sess_options=so, providers=["CPUExecutionProvider"]
                )
                after = _ul._task_count()
                names = [o.name for o in sess.get_outputs()]
                self.call = lambda h: sess.run(names, feed(h))
                pool = None if before is None or after is None else after - before
                self.info["threads"] = (
                    f"intra_op_num_threads = {so.intra_op_num_threads} (default)"
                    + (f" -> {pool + 1} intra-op threads" if pool is not None else "")
                )
            else:
                import openvino

                core = openvino.Core()
                compiled = core.compile_model(
                    core.read_model(model=model, weights=b""),
                    "CPU",
                    {"INFERENCE_PRECISION_HINT": "f32"},  # its default may be bf16
                )
                req = compiled.create_infer_request()
                n_out = len(compiled.outputs)

                def ov_call(h):
                    req.infer(feed(h))
                    return _run._ov_outputs(req, n_out)

                self.call = ov_call
                props = []
                for name in ("INFERENCE_NUM_THREADS", "PERFORMANCE_HINT", "NUM_STREAMS"):
                    try:
                        props.append(f"{name} = {compiled.get_property(name)}")
                    except Exception:  # informational only
                        pass
                self.info["threads"] = ", ".join(props) + " (defaults; f32 precision hint)"
            self.next_h = lambda o: np.concatenate(o[1:], axis=0)
            self.arrays = lambda o: dict(
                zip(("output", "h_n"), _run._ort_to_torch_layout(o, T, B, H, D))
            )
        elif lib == "torch":
            import torch

            torch.set_grad_enabled(False)
            net = torch.nn.GRU(I, H, L, bidirectional=(D == 2))
            net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            net.eval()
            xt = torch.from_numpy(x)
            self.h0 = torch.from_numpy(h0) if self.chained else None
            self.call = (lambda h: net(xt, h)) if self.chained else (lambda h: net(xt))
            self.next_h = lambda o: o[1]
            self.arrays = lambda o: {"output": o[0].numpy(), "h_n": o[1].numpy()}
            self.info["threads"] = (
                f"torch.get_num_threads() = {torch.get_num_threads()} (default), "
                f"interop {torch.get_num_interop_threads()}"
            )
        else:
            raise ValueError(f"unknown peer {lib!r}")
        self.h = self.h0


def nearest_rank(sorted_v, q):
    """The q-quantile of an ascending list by the nearest-rank rule (q in (0, 1])."""
    return sorted_v[max(0, math.ceil(q * len(sorted_v)) - 1)]


def time_calls(model, calls, warm, gap_s=0.0, max_s=None):
    """``warm`` untimed calls, then ``calls`` calls each timed alone; stats in µs.

    A measurement that runs past ``max_s`` seconds stops after the call in progress (at
    least one call is timed): ``stats["calls"]`` says how many calls it timed.
    """
    import resource

    clock = time.perf_counter_ns
    call, next_h = model.call, model.next_h
    h = model.h
    for _ in range(warm):
        out = call(h)
        if model.chained:
            h = next_h(out)
    ns = [0] * calls
    done = calls
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = _now()
    end_ns = clock() + int(max_s * 1e9) if max_s else None
    for i in range(calls):
        t0 = clock()
        out = call(h)
        t1 = clock()
        ns[i] = t1 - t0
        if model.chained:
            h = next_h(out)
        if gap_s:
            time.sleep(gap_s)
        if end_ns is not None and t1 > end_ns:
            done = i + 1
            break
    wall = _now() - w0
    del ns[done:]
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    model.h = h
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    v = sorted(ns)
    stats = {f"{k}_us": nearest_rank(v, q) / 1e3 for k, q in QUANTILES.items()}
    stats["max_us"] = v[-1] / 1e3
    stats["min_us"] = v[0] / 1e3
    stats["mean_us"] = sum(v) / len(v) / 1e3
    stats["over_1ms"] = sum(1 for t in v if t > 1_000_000)
    stats["calls"] = done
    stats["cpu_cores"] = cpu / wall if wall > 0 else None
    stats["wall_s"] = wall
    return stats


def measure_main(args):
    """A measurement worker: JSON requests on stdin, JSON replies on the saved stdout."""
    models = {}

    def handle(req):
        cmd = req["cmd"]
        if cmd == "setup":
            import numpy as np

            m = Model(args._lib, req["case"], req["workdir"])
            models[req["case"]] = m
            t0 = _now()
            out = m.call(m.h0)  # the first call, from h0: compared with cygru's
            first = _now() - t0
            path = os.path.join(req["workdir"], f"{req['case']}-{args._lib}-out.npz")
            np.savez(path, **m.arrays(out))
            return {"ok": True, "out": path, "first_call_ms": 1e3 * first, "info": m.info}
        if cmd == "sample":
            m = models[req["case"]]
            stats = time_calls(
                m, req["calls"], req["warm"], req.get("gap_s", 0.0), req.get("max_s")
            )
            return {"ok": True, **stats}
        if cmd == "drop":
            models.pop(req["case"], None)
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    return _ul.serve_requests(args._parent, handle)


# ============================================================================================
# parent
# ============================================================================================


def conditions_for(busy, kinds):
    """[(name, kind, count)]: idle first, then every kind at every busy count > 0."""
    conds = [("idle", None, 0)] if 0 in busy else []
    for kind in kinds:
        for k in sorted(set(busy)):
            if k > 0:
                conds.append((f"{k} {kind}", kind, k))
    return conds


def cond_label(kind, count):
    if kind is None:
        return "idle"
    what = {"spin": "spinning", "omp": "OpenMP-region"}[kind]
    return f"{count} {what} process{'es' if count > 1 else ''}"


def _case_label(case):
    T, B, I, H, L, D = _run.FORWARD_CASES[case]
    extra = "" if (L, D) == (1, 1) else f",{L},{D}"
    chained = ", chained h0" if case in _run.CHAINED_CASES else ""
    return f"{case} ({T},{B},{I},{H}{extra}{chained})"


def cpu_ns(pid):
    """CPU time of all threads of a process in ns (/proc/<pid>/task/*/schedstat), or None.

    schedstat counts nanoseconds, where /proc/<pid>/stat counts clock ticks (10 ms): a
    measurement of a few milliseconds needs the former.
    """
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return total
    except OSError:
        return None


def _median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def run_case(case, args, workers, loads, conds, workdir, peers, log):
    """Set up and check every peer, then the interleaved rounds. Returns the case's dict."""
    import numpy as np

    T, B, I, H, L, D = _run.FORWARD_CASES[case]
    res = {
        "shape": dict(T=T, B=B, I=I, H=H, layers=L, dirs=D),
        "chained_h0": case in _run.CHAINED_CASES,
        "peers": {},
        "check": {},
    }
    write_case_files(case, workdir)
    outs = {}
    for p in peers:
        try:
            r = workers[p].request({"cmd": "setup", "case": case, "workdir": workdir})
        except RuntimeError as exc:  # the peer failed to build or run: report, go on
            res["peers"][p] = {"status": "error", "note": str(exc)}
            log(f"{case}: {PEER_LABEL[p]} failed: {exc}")
            continue
        outs[p] = r["out"]
        res["peers"][p] = {"status": "ok", "first_call_ms": r["first_call_ms"], "info": r["info"]}
    if "cygru" not in outs:
        raise RuntimeError("cygru failed to set up: nothing to compare with")
    timed = []
    with np.load(outs["cygru"]) as ref:
        for p in peers:
            if p not in outs:
                continue
            if p == "cygru":
                timed.append(p)
                continue
            with np.load(outs[p]) as got:
                diffs = {k: _ul._maxdiff(ref[k], got[k]) for k in ("output", "h_n")}
            worst = max(diffs.values())
            res["check"][p] = {"max_abs_diff": diffs, "tolerance": ATOL}
            if worst <= ATOL:
                timed.append(p)
            else:
                bar = "!" * 78
                log(
                    f"\n{bar}\n!!! MISMATCH {case}: {PEER_LABEL[p]} differs from cygru by "
                    f"{worst:.3g} (> {ATOL:g}); NOT timed\n{bar}\n"
                )
                res["peers"][p]["status"] = "mismatch"
    if len(timed) > 1:
        worst = max(max(res["check"][p]["max_abs_diff"].values()) for p in timed[1:])
        log(f"{case}: outputs agree (max abs diff {worst:.2g} <= {ATOL:g})")

    rounds = {c[0]: {p: [] for p in timed} for c in conds}
    t0 = _now()
    log(
        f"{case}: {args.rounds} round(s) x {len(conds)} conditions x {len(timed)} peers "
        f"x {args.calls} calls"
    )
    for rnd in range(args.rounds):
        k = rnd % len(conds)
        for ci, (name, kind, count) in enumerate(conds[k:] + conds[:k]):
            active = loads[kind][:count] if kind else []
            for c in active:
                c.resume()
            try:
                time.sleep(SETTLE_S)
                j = (rnd + ci) % len(timed)
                for p in timed[j:] + timed[:j]:
                    # the previous peer's worker threads may still spin: let them go quiet
                    time.sleep(args.settle_ms * 1e-3)
                    cpu0 = [cpu_ns(c.pid) for c in active]
                    w0 = _now()
                    s = workers[p].request(
                        {
                            "cmd": "sample",
                            "case": case,
                            "calls": args.calls,
                            "warm": args.warm,
                            "gap_s": args.gap_us * 1e-6,
                            "max_s": args.max_s,
                        }
                    )
                    wall = _now() - w0
                    cpu1 = [cpu_ns(c.pid) for c in active]
                    used = [b - a for a, b in zip(cpu0, cpu1) if a is not None and b is not None]
                    s["load_cores"] = 1e-9 * sum(used) / wall if active and wall > 0 else 0.0
                    s["round"] = rnd
                    s.pop("ok", None)
                    rounds[name][p].append(s)
            finally:
                for c in active:
                    c.pause()
        if args.progress:
            log(f"{case}: round {rnd + 1}/{args.rounds} done ({_now() - t0:.0f} s)")
    for p in timed:
        workers[p].request({"cmd": "drop", "case": case})
    res["wall_s"] = _now() - t0
    res["conditions"] = summarize(rounds, conds)
    return res


def summarize(rounds, conds):
    """Median over rounds of each statistic; ratios to cygru's."""
    out = {}
    for name, kind, count in conds:
        row = {}
        for p, rs in rounds[name].items():
            row[p] = {f"{s}_us": _median([r[f"{s}_us"] for r in rs]) for s in STATS}
            row[p]["mean_us"] = _median([r["mean_us"] for r in rs])
            row[p]["over_1ms"] = [r["over_1ms"] for r in rs]
            row[p]["calls"] = [r["calls"] for r in rs]
            row[p]["load_cores"] = _median([r["load_cores"] for r in rs])
            row[p]["rounds"] = rs
        out[name] = {"kind": kind, "busy": count, "label": cond_label(kind, count), "peers": row}
    return out


def evaluate_targets(cases_res):
    """Tail target for cygru per case and condition; median vs ORT in the chained cases."""
    rows = []
    for case, res in cases_res.items():
        conds = res.get("conditions")
        if not conds or "cygru" not in conds.get("idle", {}).get("peers", {}):
            continue
        idle_med = conds["idle"]["peers"]["cygru"]["median_us"]
        for name, c in conds.items():
            cy = c["peers"].get("cygru")
            if cy is None:
                continue
            r = cy["p99_us"] / idle_med
            rows.append(
                {
                    "case": case,
                    "condition": name,
                    "label": c["label"],
                    "target": f"cygru p99 <= {TAIL_FACTOR:g}x cygru's idle median",
                    "value": r,
                    "measured": f"p99 {_fmt_us(cy['p99_us'])} µs = {r:.2f}x the idle median "
                    f"{_fmt_us(idle_med)} µs",
                    "result": "PASS" if r <= TAIL_FACTOR else "MISS",
                }
            )
            if res.get("chained_h0"):
                ort = c["peers"].get("ort")
                row = {
                    "case": case,
                    "condition": name,
                    "label": c["label"],
                    "target": "cygru median <= ONNX Runtime's",
                }
                if ort is None:
                    row.update(value=None, measured="ONNX Runtime not timed", result="n/a")
                else:
                    q = cy["median_us"] / ort["median_us"]
                    row.update(
                        value=q,
                        measured=f"cygru/ORT = {q:.2f} ({_fmt_us(cy['median_us'])} vs "
                        f"{_fmt_us(ort['median_us'])} µs)",
                        result="PASS" if q <= MEDIAN_RATIO else "MISS",
                    )
                rows.append(row)
    return rows


def _fmt_us(us):
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 100:
        return f"{us:.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def results_table(cases_res):
    head = [
        "case",
        "load",
        "peer",
        "median µs",
        "p90 µs",
        "p99 µs",
        "max µs",
        "p99 / idle median",
        "median / cygru's",
        "calls > 1 ms",
        "load cores",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for case, res in cases_res.items():
        conds = res.get("conditions")
        if not conds:
            continue
        for name, c in conds.items():
            for p in PEERS:
                e = c["peers"].get(p)
                if e is None:
                    st = res["peers"].get(p, {}).get("status")
                    if st and st != "ok" and name == next(iter(conds)):
                        cell = {"mismatch": "MISMATCH"}.get(st, st)
                        lines.append(
                            f"| {_case_label(case)} | {c['label']} | {PEER_LABEL[p]} | {cell} "
                            + "| — " * (len(head) - 4)
                            + "|"
                        )
                    continue
                idle = conds.get("idle", {}).get("peers", {}).get(p)
                cy = c["peers"].get("cygru")
                cells = [_case_label(case), c["label"], PEER_LABEL[p]]
                cells += [_fmt_us(e[f"{s}_us"]) for s in STATS]
                cells.append(f"{e['p99_us'] / idle['median_us']:.1f}x" if idle else "—")
                cells.append(
                    "—"
                    if p == "cygru" or cy is None
                    else f"{e['median_us'] / cy['median_us']:.2f}x"
                )
                cells.append("/".join(str(v) for v in e["over_1ms"]))
                cells.append("—" if c["kind"] is None else f"{e['load_cores']:.2f}")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(rows):
    lines = ["| case | load | target | measured | result |", "|---|---|---|---|---|"]
    for t in rows:
        res = f"**{t['result']}**" if t["result"] == "MISS" else t["result"]
        lines.append(
            f"| {_case_label(t['case'])} | {t['label']} | {t['target']} | {t['measured']} | {res} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Per-call latency (median, p90, p99, max) of cygru and its peers at their "
        "default threads, each in its own process, idle and beside busy processes."
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: one-step only, 200 calls, 1 round, idle and 1 busy process",
    )
    ap.add_argument(
        "--cases",
        nargs="+",
        choices=list(_run.FORWARD_CASES),
        metavar="CASE",
        default=None,
        help="cases from run.py's forward cases (default: "
        + " ".join(DEFAULT_CASES)
        + "; --quick: "
        + " ".join(QUICK_CASES)
        + "); any of "
        + ", ".join(_run.FORWARD_CASES),
    )
    ap.add_argument(
        "--peers",
        nargs="+",
        choices=PEERS,
        metavar="PEER",
        default=None,
        help="peers to time besides cygru: any of ort ov torch (default: all installed); "
        "cygru is always timed",
    )
    ap.add_argument("--calls", type=int, default=None, help="calls per measurement (default 1500)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds (measurements per peer and condition; default 3)",
    )
    ap.add_argument(
        "--busy",
        type=int,
        nargs="+",
        default=None,
        help="numbers of busy processes to run beside (default: 0 1 2; 0 = idle)",
    )
    ap.add_argument(
        "--loads",
        nargs="+",
        choices=LOAD_KINDS,
        metavar="KIND",
        default=["spin"],
        help="kinds of busy process: spin (a tight Python loop; default), omp (short OpenMP "
        "parallel regions on every core, as under_load.py's omp kind)",
    )
    ap.add_argument(
        "--omp-backend",
        choices=_ul.OMP_BACKENDS,
        default="auto",
        help="what the omp load runs (see under_load.py; default auto)",
    )
    ap.add_argument(
        "--warm", type=int, default=20, help="untimed calls before each measurement (default 20)"
    )
    ap.add_argument(
        "--max-s",
        type=float,
        default=30.0,
        help="stop a measurement after this many seconds, with fewer calls (default 30; "
        "a peer whose threads keep waiting for a core can take seconds per call)",
    )
    ap.add_argument(
        "--settle-ms",
        type=float,
        default=50.0,
        help="pause before each measurement, after the previous peer's (default 50 ms)",
    )
    ap.add_argument(
        "--gap-us",
        type=float,
        default=0.0,
        help="pause after each call in µs, outside the timing (default 0: back to back)",
    )
    ap.add_argument(
        "--json",
        default=os.path.join(HERE, "results", "latency.json"),
        help="results file (default benchmarks/results/latency.json; '' none)",
    )
    ap.add_argument(
        "--markdown",
        default=os.path.join(HERE, "results", "latency.md"),
        help="markdown report (default benchmarks/results/latency.md; '' none)",
    )
    ap.add_argument("--_role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_lib", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_parent", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_run-id", dest="_run_id", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cases is None:
        args.cases = QUICK_CASES if args.quick else DEFAULT_CASES
    args.cases = list(dict.fromkeys(args.cases))
    if args.calls is None:
        args.calls = 200 if args.quick else 1500
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.busy is None:
        args.busy = [0, 1] if args.quick else [0, 1, 2]
    if args.calls < 1 or args.rounds < 1 or args.warm < 0:
        ap.error(
            f"--calls and --rounds must be >= 1 and --warm >= 0 (got --calls {args.calls}, "
            f"--rounds {args.rounds}, --warm {args.warm})"
        )
    if any(k < 0 for k in args.busy):
        ap.error(f"--busy counts must be >= 0 (got {args.busy})")
    if 0 not in args.busy:
        args.busy = [0] + args.busy  # idle is the reference of the tail target
    if args.max_s <= 0:
        ap.error(f"--max-s must be > 0 (got {args.max_s})")
    if args.gap_us < 0 or args.settle_ms < 0:
        ap.error(f"--gap-us and --settle-ms must be >= 0 (got {args.gap_us}, {args.settle_ms})")
    args.loads = list(dict.fromkeys(args.loads))
    args.progress = not args.quick
    return args


def machine_info():
    info = _ul.machine_info()
    for mod in ("torch", "openvino"):
        try:
            info["versions"][mod] = __import__(mod).__version__
        except ImportError:
            info["versions"][mod] = None
    return info


def _installed(p):
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in PEER_MODULES[p])


def main(argv=None):
    args = parse_args(argv)
    if args._role == "measure":
        return measure_main(args)

    t_start = _now()
    run_id = args._run_id or f"cygru-latency-{os.getpid()}-{int(time.time())}"

    def log(msg):
        print(msg, flush=True)

    _ul.exit_on_term_signals()

    load0 = os.getloadavg()
    notes = []
    wanted = ["cygru"] + [p for p in (args.peers or PEERS) if p != "cygru"]
    peers = []
    for p in wanted:
        if _installed(p):
            peers.append(p)
        else:
            mods = " and ".join(PEER_MODULES[p])
            notes.append(f"{PEER_LABEL[p]} not installed ({mods}): skipped")
    if "cygru" not in peers:
        print("cygru is not importable: build it in place first", file=sys.stderr)
        return 1
    env = machine_info()
    header, busy_machine = _ul.machine_header(env, load0, "tails")
    conds = conditions_for(args.busy, args.loads)
    log(
        f"cygru per-call latency: cases {', '.join(args.cases)}; peers "
        f"{', '.join(PEER_SHORT[p] for p in peers)}; {args.calls} calls x {args.rounds} "
        f"round(s); conditions {', '.join(c[0] for c in conds)}; run id {run_id}"
    )
    for h in header:
        log(h)

    reg = _ul.Registry(run_id)
    cases_res, load_info, threads = {}, [], {}
    interrupted = None
    workdir = tempfile.mkdtemp(prefix="cygru-latency-")
    try:
        workers = {
            p: _ul.Child(
                reg,
                "measure",
                ["--_lib", p],
                f"{PEER_SHORT[p]} worker",
                stdin=True,
                script=__file__,
            )
            for p in peers
        }
        most = max(args.busy)
        loads = {
            k: [_ul.start_load(reg, k, i, omp_backend=args.omp_backend) for i in range(most)]
            for k in args.loads
            if most > 0
        }
        for cs in loads.values():
            _ul.ready_and_pause(cs)
        for case in args.cases:
            try:
                cases_res[case] = run_case(case, args, workers, loads, conds, workdir, peers, log)
            except (_ul.ChildDied, TimeoutError, RuntimeError) as exc:
                notes.append(f"{case}: failed: {exc}")
                log(f"{case}: FAILED: {exc}")
                cases_res[case] = {"error": str(exc)}
                if isinstance(exc, _ul.ChildDied):
                    break
                continue
            for p, e in cases_res[case]["peers"].items():
                if e.get("info"):
                    threads.setdefault(p, e["info"].get("threads"))
        _ul.stop_loads_and_workers(loads, workers, load_info)
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
    except SystemExit as exc:
        interrupted = f"terminated (exit {exc.code})"
        raise
    finally:
        _ul.clean_up(reg, workdir, interrupted)
    if interrupted:
        return 130

    for case, r in cases_res.items():
        for p, e in r.get("peers", {}).items():
            if e.get("status") == "error":
                notes.append(f"{case}: {PEER_LABEL[p]} failed, not timed: {e.get('note')}")
        for c in r.get("conditions", {}).values():
            for p, e in c["peers"].items():
                short = [n for n in e["calls"] if n < args.calls]
                if short:
                    notes.append(
                        f"{case}, {c['label']}, {PEER_LABEL[p]}: {len(short)} measurement(s) "
                        f"stopped at --max-s {args.max_s:g} s after "
                        f"{', '.join(map(str, short))} of {args.calls} calls"
                    )
    targets = evaluate_targets(cases_res)
    n_pass = sum(t["result"] == "PASS" for t in targets)
    n_judged = sum(t["result"] != "n/a" for t in targets)
    v = env["versions"]
    report = [
        "",
        "## Per-call latency (float32 forward, default threads, each peer in its own process)",
        "",
        *[h if not h.startswith("WARNING") else f"**{h}**" for h in header],
        "Versions: Python "
        + env["python"]
        + ", "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        + (f"; commit {env['git_head'][:10]}" if env.get("git_head") else ""),
        "",
        "Threads each peer used (its defaults):",
        "",
        *[f"- {PEER_LABEL[p]}: {threads[p]}" for p in PEERS if p in threads],
        "",
        f"Each call timed alone (`perf_counter_ns`); {args.calls} calls per measurement "
        f"after {args.warm} untimed ones and a {args.settle_ms:g} ms pause"
        + (f", {args.gap_us:g} µs pause after each call" if args.gap_us else ", back to back")
        + f"; every statistic is the median over {args.rounds} interleaved round(s). "
        "p99 / idle median: the peer's p99 over its own idle median; median / cygru's: "
        "> 1 means cygru is faster; calls > 1 ms: per round; load cores: CPU the busy "
        "processes got while the peer was timed.",
        "",
        results_table(cases_res),
        "",
    ]
    if targets:
        report += [f"### Targets: {n_pass} of {n_judged} PASS", "", targets_table(targets), ""]
    omp_line = _ul.omp_load_line([li.get("info") for li in load_info if li["kind"] == "omp"])
    if omp_line:
        report += [omp_line, ""]
    mism = [
        f"{case}: {PEER_LABEL[p]}"
        for case, r in cases_res.items()
        for p, e in r.get("peers", {}).items()
        if e.get("status") == "mismatch"
    ]
    if mism:
        report += ["### !!! MISMATCH (not timed): " + ", ".join(mism), ""]
    elif len(peers) > 1:
        report += [
            f"Every timed peer's output and h_n matched cygru's before timing (max abs diff "
            f"<= {ATOL:g}).",
            "",
        ]
    if notes:
        report += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    total = _now() - t_start
    report.append(f"Total wall time: {total:.0f} s")
    text = "\n".join(report)
    log(text)
    result = {
        "machine": env,
        "loadavg_start": list(load0),
        "busy_at_start": busy_machine,
        "args": {k: val for k, val in vars(args).items() if not k.startswith("_")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_id": run_id,
        "peers": peers,
        "threads": threads,
        "conditions": [{"name": n, "kind": k, "busy": c} for n, k, c in conds],
        "cases": cases_res,
        "load_processes": load_info,
        "child_pids": reg.pids(),
        "targets": targets,
        "notes": notes,
        "total_wall_s": total,
        "report_markdown": text,
    }
    _ul.write_outputs(args, result, text, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
