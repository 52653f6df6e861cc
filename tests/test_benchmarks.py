"""Smoke tests of the benchmark scripts: they run, print their tables and clean up.

No timing is asserted: these machines are shared and noisy.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from optional_deps import import_optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNDER_LOAD = os.path.join(ROOT, "benchmarks", "under_load.py")

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc") or not sys.platform.startswith("linux"),
    reason="the load benchmark reads /proc (Linux only)",
)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _processes_with(token):
    """PIDs of live processes whose command line contains token."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if token.encode() in cmd:
            found.append(int(name))
    return found


def _gone(token, wait_s=5.0):
    """Processes still alive with token in their command line after up to wait_s."""
    end = time.monotonic() + wait_s
    left = _processes_with(token)
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = _processes_with(token)
    return left


def test_under_load_quick_prints_tables_and_leaves_no_process(tmp_path):
    run_id = f"test-under-load-{uuid.uuid4().hex}"
    out_json = tmp_path / "r.json"
    out_md = tmp_path / "r.md"
    cmd = [
        sys.executable,
        UNDER_LOAD,
        "--quick",
        "--repeat",
        "1",
        "--sample-s",
        "0.01",
        "--json",
        str(out_json),
        "--markdown",
        str(out_md),
        "--_run-id",
        run_id,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| case | load | cygru ms | ORT ms | cygru slowdown | ORT slowdown | cygru/ORT" in out
    for label in ("idle", "user spin", "kernel loop", "omp regions", "twin"):
        assert f"| small-latency (50,1,64,128) | {label} |" in out
        assert f"| single-step (1,32,256,256) | {label} |" in out
    assert "### Targets" in out
    assert "cygru.get_num_threads()" in out
    assert "load average at start" in out
    assert "% in the kernel" in out
    assert "omp load: 1 process(es)" in out
    import importlib.util

    if importlib.util.find_spec("torch") is not None:  # --omp-backend auto: torch if installed
        assert "`torch.mm` at `torch.set_num_threads(" in out
    else:
        assert "NumPy" in out and "BLAS at" in out
    assert _gone(run_id) == []
    result = json.loads(out_json.read_text())
    assert result["run_id"] == run_id
    # measurement workers (2 or 1), spin, kernel, and per case one twin per library
    assert len(result["child_pids"]) >= 4
    for pid in result["child_pids"]:
        assert (
            not os.path.exists(f"/proc/{pid}")
            or run_id.encode() not in open(f"/proc/{pid}/cmdline", "rb").read()
        )
    assert set(result["cases"]) == {"small-latency", "single-step"}
    assert "| case | load |" in out_md.read_text()


def test_under_load_omp_kind_alone(tmp_path):
    """--loads omp: idle and the OpenMP-regions load only; the report says what it ran.

    NumPy's BLAS here (quick to start); the default run above uses torch when installed.
    """
    backend = "numpy"
    run_id = f"test-under-load-{uuid.uuid4().hex}"
    out_json = tmp_path / "r.json"
    cmd = [sys.executable, UNDER_LOAD, "--quick", "--cases", "small-latency", "--repeat", "2"]
    cmd += ["--sample-s", "0.01", "--loads", "omp", "--load-procs", "2"]
    cmd += ["--omp-backend", backend, "--json", str(out_json), "--markdown", ""]
    cmd += ["--_run-id", run_id]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| small-latency (50,1,64,128) | omp regions |" in out
    assert "| small-latency (50,1,64,128) | idle |" in out
    for other in ("user spin", "kernel loop", "twin"):
        assert f"| {other} |" not in out
    assert "omp load: 2 process(es)" in out and "256x256" in out
    assert "NumPy" in out and "BLAS at" in out
    assert _gone(run_id) == []
    result = json.loads(out_json.read_text())
    assert list(result["cases"]["small-latency"]["conditions"]) == ["idle", "omp"]
    omp = [li for li in result["load_processes"] if li["kind"] == "omp"]
    assert len(omp) == 2 and {li["kind"] for li in result["load_processes"]} == {"omp"}
    for li in omp:
        info = li["info"]
        assert info["backend"] == backend and info["matmul_n"] == 256
        assert info["threads"] >= 1 and info["region_us"] > 0 and info["gap_us"] > 0
        user, system = li["cpu"]
        assert user + system > 0  # the regions ran
    assert [t["load"] for t in result["targets"]] == ["omp"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_under_load_interrupted_stops_every_load_process(sig):
    run_id = f"test-under-load-{uuid.uuid4().hex}"
    cmd = [
        sys.executable,
        UNDER_LOAD,
        "--quick",
        "--cases",
        "small-latency",
        "--repeat",
        "1000",
        "--sample-s",
        "0.01",
        "--json",
        "",
        "--markdown",
        "",
        "--_run-id",
        run_id,
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # wait until timing under load has started: the twins are up, loads are cycling
        deadline = time.monotonic() + 120
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "repetitions x" in line:
                break
        assert any("repetitions x" in s for s in seen), "".join(seen)
        time.sleep(0.5)
        assert len(_processes_with(run_id)) >= 6  # workers, spin, kernel, omp, twins
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc != 0
    assert _gone(run_id) == []


RUN = os.path.join(ROOT, "benchmarks", "run.py")


def _load_run_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_run", RUN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_case_groups_and_new_peers_are_declared():
    run = _load_run_module()
    for p in ("ov", "ov_bf16", "torch_int8") + tuple(run.CYGRU_QUANT):
        assert p in run.PEERS and p in run.PEER_LABEL and p in run.PEER_SHORT
    assert run.PEER_ATOL["ov_bf16"] == run.PEER_ATOL["torch_int8"] == run.REDUCED_ATOL
    # issue 25: cygru's int8 and bf16 modules, and the same with their fallback kernels forced
    assert run.CYGRU_QUANT == {
        "cygru_int8": ("int8", False),
        "cygru_bf16": ("bf16", False),
        "cygru_int8_fb": ("int8", True),
        "cygru_bf16_fb": ("bf16", True),
    }
    for p in run.CYGRU_QUANT:
        assert run.PEER_ATOL[p] == run.REDUCED_ATOL and p in run.REDUCED_PEERS
    assert set(run.F32_PEERS) == {"cygru", "ort", "ov", "torch"}
    assert {"cygru_int8", "cygru_bf16"} <= set(run.MAIN_TABLE_PEERS)
    assert run.parse_args([]).quant_fallback == "auto"
    assert run.parse_args(["--quant-fallback", "none"]).quant_fallback == "none"
    assert run.FORWARD_CASES["one-step"][:2] == (1, 1)
    args = run.parse_args(["--cases", "deepbench"])
    assert args.cases == list(run.DEEPBENCH_CASES)
    for c in args.cases:
        T, B, I, H, L, D = run.FORWARD_CASES[c]
        assert 1 <= B <= 4 and 512 <= H <= 1024 and I == H and (L, D) == (1, 1)
    assert len({run.FORWARD_CASES[c][0] for c in args.cases}) >= 3  # a few timestep counts
    default = run.parse_args([]).cases
    assert "one-step" in default and not set(default) & set(run.DEEPBENCH_CASES)
    assert run.parse_args(["--cases", "all"]).cases == run.ALL_CASES


@pytest.mark.parametrize("hide_openvino", [False, True])
def test_run_quick_one_step_has_every_peer(tmp_path, hide_openvino):
    """The one-step case gives a column (or a clear "not installed" line) for every peer."""
    env = _env()
    if hide_openvino:
        fake = tmp_path / "fake" / "openvino"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
        env["PYTHONPATH"] = str(tmp_path / "fake") + os.pathsep + env["PYTHONPATH"]
    out_json = tmp_path / "r.json"
    cmd = [sys.executable, RUN, "--quick", "--repeat", "1", "--threads", "1"]
    cmd += ["--cases", "one-step", "--json", str(out_json), "--png", ""]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    head = next(line for line in out.splitlines() if line.startswith("| case | threads |"))
    cols = ("OV ms", "OV bf16 ms", "torch int8 ms", "OV/cygru", "torch int8/cygru")
    cols += ("cygru int8 ms", "cygru bf16 ms", "cygru int8/cygru", "cygru bf16/cygru")
    for col in cols:
        assert f"| {col} |" in head
    row = next(line for line in out.splitlines() if line.startswith("| one-step (1,1,64,128"))
    assert "chained h0" in row
    peers = json.loads(out_json.read_text())["runs"]["1"]["cases"]["one-step"]["peers"]
    assert peers["cygru"]["status"] == "ok"
    have_ov = not hide_openvino
    try:
        import openvino  # noqa: F401
    except ImportError:
        have_ov = False
    if have_ov:
        for p in ("ov", "ov_bf16"):
            assert peers[p]["status"] == "ok", peers[p]
            assert peers[p]["median_ms"] > 0
        assert peers["ov"]["check_max_abs_diff"] <= 1e-4
        assert peers["ov_bf16"]["precision_used"] in ("bf16", "f32")
    else:
        assert peers["ov"]["status"] == peers["ov_bf16"]["status"] == "unavailable"
        assert "OpenVINO not installed" in out and "pip install openvino" in out
        assert "| n/a |" in row
    for p in ("torch", "ort", "torch_int8", "numpy"):
        if peers.get(p, {}).get("status") == "ok":
            assert peers[p]["check_max_abs_diff"] <= peers[p]["tolerance"]
    # cygru's quantized modules, chained like cygru, checked against its float32 output; the
    # one-step case does not time the forced fallback kernels
    for p in ("cygru_int8", "cygru_bf16"):
        assert peers[p]["status"] == "ok", peers[p]
        assert peers[p]["median_ms"] > 0 and peers[p]["tolerance"] == 0.1
        assert 0 <= peers[p]["check_max_abs_diff"] <= 0.1
    assert "cygru_int8_fb" not in peers and "cygru_bf16_fb" not in peers
    assert "### Reduced precision (cygru int8 and bf16)" in out
    assert "| one-step (1,1,64,128,1,1) chained h0 | 1 |" in out.split("### Reduced precision")[1]


LATENCY = os.path.join(ROOT, "benchmarks", "latency.py")


def test_latency_quick_reports_quantiles_targets_and_leaves_no_process(tmp_path):
    """latency.py --quick: per-call quantiles per case x condition x peer, targets, JSON."""
    import_optional("onnxruntime")
    import_optional("onnx")
    run_id = f"test-latency-{uuid.uuid4().hex}"
    out_json, out_md = tmp_path / "l.json", tmp_path / "l.md"
    cmd = [sys.executable, LATENCY, "--quick", "--peers", "ort", "--calls", "40"]
    cmd += ["--rounds", "2", "--busy", "1", "--settle-ms", "5"]
    cmd += ["--json", str(out_json), "--markdown", str(out_md), "--_run-id", run_id]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    head = "| case | load | peer | median µs | p90 µs | p99 µs | max µs | p99 / idle median |"
    assert head in out
    label = "one-step (1,1,64,128, chained h0)"
    for cond in ("idle", "1 spinning process"):
        for peer in ("cygru", "ONNX Runtime"):
            assert f"| {label} | {cond} | {peer} |" in out
    assert "| OpenVINO |" not in out and "| PyTorch |" not in out  # --peers ort only
    assert "cygru p99 <= 5x cygru's idle median" in out
    assert "cygru median <= ONNX Runtime's" in out
    assert "cygru/ORT = " in out
    assert "matched cygru's before timing" in out
    assert _gone(run_id) == []
    result = json.loads(out_json.read_text())
    assert result["run_id"] == run_id and result["peers"] == ["cygru", "ort"]
    conds = result["cases"]["one-step"]["conditions"]
    assert list(conds) == ["idle", "1 spin"]
    for c in conds.values():
        for p in ("cygru", "ort"):
            e = c["peers"][p]
            assert len(e["rounds"]) == 2 and all(r["calls"] == 40 for r in e["rounds"])
            assert 0 < e["median_us"] <= e["p90_us"] <= e["p99_us"] <= e["max_us"]
            # the reported statistic is the median over the rounds
            p99s = sorted(r["p99_us"] for r in e["rounds"])
            assert e["p99_us"] == pytest.approx(sum(p99s) / 2)
    check = result["cases"]["one-step"]["check"]["ort"]["max_abs_diff"]
    assert max(check.values()) <= 1e-4
    kinds = {(t["condition"], t["target"].split()[1]) for t in result["targets"]}
    assert kinds == {("idle", "p99"), ("idle", "median"), ("1 spin", "p99"), ("1 spin", "median")}
    for t in result["targets"]:
        assert t["result"] in ("PASS", "MISS") and t["value"] > 0
        if t["target"].startswith("cygru p99"):
            idle = conds["idle"]["peers"]["cygru"]["median_us"]
            p99 = conds[t["condition"]]["peers"]["cygru"]["p99_us"]
            assert t["value"] == pytest.approx(p99 / idle)
            assert (t["result"] == "PASS") == (t["value"] <= 5.0)
    assert "| case | load | peer |" in out_md.read_text()


def test_latency_quantiles_and_arguments(monkeypatch):
    """The nearest-rank quantiles, the condition list and bad arguments (no timing)."""
    import importlib.util

    # latency.py puts benchmarks/ on sys.path and imports run and under_load: undo that after
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("run", "under_load"):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, None)
            monkeypatch.delitem(sys.modules, name)
    spec = importlib.util.spec_from_file_location("_bench_latency", LATENCY)
    lat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lat)
    v = list(range(1, 1501))
    assert lat.nearest_rank(v, 0.5) == 750 and lat.nearest_rank(v, 0.99) == 1485
    assert lat.nearest_rank([7], 0.99) == 7
    assert lat.conditions_for([0, 1, 2], ["spin", "omp"]) == [
        ("idle", None, 0),
        ("1 spin", "spin", 1),
        ("2 spin", "spin", 2),
        ("1 omp", "omp", 1),
        ("2 omp", "omp", 2),
    ]
    args = lat.parse_args(["--busy", "2", "--cases", "small-latency", "db-h512-b1-t1"])
    assert args.busy == [0, 2] and args.calls == 1500 and args.rounds == 3
    assert args.cases == ["small-latency", "db-h512-b1-t1"]
    assert lat.parse_args([]).cases == ["one-step", "small-latency"]

    # chained calls: every call starts from the state the previous one returned
    class Fake:
        chained = True

        def __init__(self):
            self.h, self.seen = 0, []

        def call(self, h):
            self.seen.append(h)
            return h + 1

        def next_h(self, out):
            return out

    fake = Fake()
    st = lat.time_calls(fake, 30, 5)
    assert fake.seen == list(range(35)) and fake.h == 35 and st["calls"] == 30
    assert st["min_us"] <= st["median_us"] <= st["p90_us"] <= st["p99_us"] <= st["max_us"]
    # --max-s stops a measurement early, after at least one call
    slow = Fake()
    slow.call = lambda h: time.sleep(0.002) or h
    st = lat.time_calls(slow, 1000, 0, max_s=0.005)
    assert 1 <= st["calls"] < 1000
    for bad in (
        ["--calls", "0"],
        ["--busy", "-1"],
        ["--gap-us", "-5"],
        ["--max-s", "0"],
        ["--cases", "nope"],
    ):
        with pytest.raises(SystemExit):
            lat.parse_args(bad)


def test_run_targets_issue_24_rows_are_judged_at_their_thread_counts():
    """One-step vs ORT at the judged count and at 1 thread, small-latency 1.3x at 1 thread,
    GRUCell 8x: computed from a results dict (no timing)."""
    run = _load_run_module()

    def runs_with(one_step_ratio, small_ratio, cell_ratio):
        def case(ratio, peer):
            return {"peers": {"cygru": {"median_ms": 1.0}, peer: {"median_ms": ratio}}}

        return {
            "cases": {
                "one-step": case(one_step_ratio, "ort"),
                "small-latency": case(small_ratio, "ort"),
                "cell": case(cell_ratio, "torch"),
            }
        }

    runs = {1: runs_with(0.4, 1.4, 6.0), 2: runs_with(1.1, 2.5, 9.0)}
    judge, rows = run.evaluate_targets(runs, ["one-step", "small-latency", "cell"])
    assert judge == 2
    got = {(r["target"], r["threads"]): (r["result"], r.get("value")) for r in rows}
    assert got[("one-step vs ORT", 2)] == ("PASS", pytest.approx(1.1))
    assert got[("one-step vs ORT 1 thread", 1)] == ("MISS", pytest.approx(0.4))
    assert got[("small-latency vs ORT", 2)] == ("PASS", pytest.approx(2.5))
    assert got[("small-latency vs ORT 1 thread", 1)] == ("PASS", pytest.approx(1.4))
    assert got[("GRUCell vs torch 8x", 2)] == ("PASS", pytest.approx(9.0))
    table = run.targets_table(judge, rows)
    assert "| one-step GRU call, chained h0 | 1 | cygru at least level with ONNX Runtime" in table
    assert "ORT/cygru 0.40x | **MISS** |" in table
    # only 2 threads run: the 1-thread rows read n/a and say why
    judge, rows = run.evaluate_targets({2: runs[2]}, ["one-step"])
    one = {r["target"]: r for r in rows if r["threads"] == 1 and "group" not in r}
    assert {"one-step vs ORT 1 thread", "small-latency vs ORT 1 thread"} <= set(one)
    # the others are issue 26's training rows
    assert set(one) == {r[0] for r in run.TARGETS if r[2] != "quant" and r[6:] == (1,)}
    assert all(r["result"] == "n/a" and r["measured"] == "1 thread not run" for r in one.values())


@pytest.mark.parametrize("fallback", ["auto", "none"])
def test_run_quick_small_latency_times_the_quantized_modules(tmp_path, fallback):
    """cygru int8 / bf16 (and, unless --quant-fallback none, the same with their fallback
    kernels forced) are checked, timed beside the peers, tabled, and judged."""
    out_json = tmp_path / "r.json"
    cmd = [sys.executable, RUN, "--quick", "--repeat", "1", "--threads", "1"]
    cmd += ["--cases", "small-latency", "--json", str(out_json), "--png", ""]
    cmd += ["--quant-fallback", fallback]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    result = json.loads(out_json.read_text())
    peers = result["runs"]["1"]["cases"]["small-latency"]["peers"]
    fb = fallback != "none"
    timed = ["cygru_int8", "cygru_bf16"] + (["cygru_int8_fb", "cygru_bf16_fb"] if fb else [])
    for p in timed:
        assert peers[p]["status"] == "ok", peers[p]
        assert peers[p]["median_ms"] > 0 and peers[p]["rounds"] == 1
        assert set(peers[p]["max_abs_diff"]) == {"output", "h_n"}
        assert 0 <= peers[p]["check_max_abs_diff"] <= 0.1
    # the kernels each ran: what this CPU picks, and the forced fallback (avx512 or below)
    kernels = result["machine"]["quant_kernels"]
    names = ("base", "avx2", "avx512", "native")
    for prec in ("int8", "bf16"):
        assert peers[f"cygru_{prec}"]["kernel"] == kernels[prec] in names
        if fb:
            got = peers[f"cygru_{prec}_fb"]["kernel"]
            assert got == kernels["fallback"][prec]
            assert names.index(got) == min(2, names.index(kernels[prec]))
    if fb:
        assert "the fallback peers forced to: int8 " in out
    else:
        assert "fallback" not in kernels
        for p in ("cygru_int8_fb", "cygru_bf16_fb"):
            assert peers[p]["status"] == "skipped"
            assert "--quant-fallback none" in peers[p]["note"]
    section = out.split("### Reduced precision (cygru int8 and bf16)")[1]
    head = next(li for li in section.splitlines() if li.startswith("| case | threads |"))
    for col in ("cygru f32 ms", "OV bf16 ms", "torch int8 ms", "cygru int8 ms", "bf16 fallback ms"):
        assert f"| {col} |" in head
    for col in ("best f32 peer", "best f32 / int8", "OV bf16 / int8", "ORT / int8"):
        assert f"| {col} |" in head
    assert "| f32 / int8 fallback | f32 / bf16 fallback |" in head
    row = next(li for li in section.splitlines() if li.startswith("| small-latency (50,1,64,128"))
    assert [c.strip() for c in row.split("|")].count("skip") == (0 if fb else 2)
    # the judged targets: small-latency's int8 vs ONNX Runtime and the fallback rows
    assert "### Targets, reduced precision (cygru int8 and bf16)" in out
    rows = {r["target"]: r for r in result["targets"]}
    r = rows["small-latency int8 vs ORT"]
    assert r["group"] == "reduced precision" and r["threads"] == 1
    if "median_ms" in peers.get("ort", {}):
        ratio = peers["ort"]["median_ms"] / peers["cygru_int8"]["median_ms"]
        assert r["value"] == pytest.approx(ratio)
        assert r["result"] == ("PASS" if ratio >= 3.0 else "MISS")
    for prec in ("int8", "bf16"):
        r = rows[f"small-latency {prec} fallback vs f32"]
        if fb:
            ratio = peers["cygru"]["median_ms"] / peers[f"cygru_{prec}_fb"]["median_ms"]
            assert r["value"] == pytest.approx(ratio)
            assert r["result"] == ("PASS" if ratio >= 1.0 else "MISS")
        else:
            assert r["result"] == "n/a" and "skipped" in r["measured"]
    assert rows["medium int8 vs best f32"]["result"] == "n/a"  # medium not run


_THREAD_PROBE = """
import os, sys, time
import numpy as np
import cygru

def ticks():
    out = {}
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[t] = int(v[11]) + int(v[12])
    return out

main = str(os.getpid())
gru = cygru.GRU(256, 256, seed=0)
x = np.random.default_rng(0).standard_normal((20, 32, 256), dtype=np.float32)
for precision in ("int8", "bf16"):
    q = cygru.quantize(gru, precision)
    for n in (1, 2):
        cygru.set_num_threads(n)
        q(x)
        a, end, other = ticks(), time.monotonic() + 3.0, 0
        while True:
            q(x)
            b = ticks()
            other = sum(v - a.get(t, 0) for t, v in b.items() if t != main)
            if n == 1 and time.monotonic() > end - 2.5 or n == 2 and (other or time.monotonic() > end):
                break
        print(precision, n, other)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc/self/task")
def test_quantized_modules_honour_the_benchmarks_thread_count(tmp_path):
    """run.py sets each worker's count with cygru.set_num_threads(n): the quantized modules
    follow it (CPU ticks per thread: at 1 no other thread of the process computes; at 2 a
    second one does)."""
    probe = tmp_path / "probe.py"
    probe.write_text(_THREAD_PROBE)
    env = _env()
    env["CYGRU_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(probe)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {tuple(li.split()[:2]): int(li.split()[2]) for li in proc.stdout.splitlines()}
    for precision in ("int8", "bf16"):
        assert got[(precision, "1")] == 0
        assert got[(precision, "2")] > 0


def test_run_fallback_levels_and_forcing(monkeypatch):
    """--quant-fallback's level: the names each format then runs (a level above what the CPU
    runs leaves its best), and force(on) / force(off) through cygru's hook (no timing)."""
    from cygru import _kernels

    run = _load_run_module()
    names = _kernels.QUANT_VARIANT_NAMES
    best = _kernels.quant_levels()
    for choice, level in (("auto", 2), ("avx512", 2), ("avx2", 1), ("base", 0)):
        k = run._quant_kernels(choice)
        assert k["forced_level"] == level
        assert k["int8"] == names[best[0]] and k["bf16"] == names[best[1]]
        assert k["fallback"] == {
            "int8": names[min(level, best[0])],
            "bf16": names[min(level, best[1])],
        }
    assert "fallback" not in run._quant_kernels("none")
    calls = []
    monkeypatch.setattr(_kernels, "_force_quant_level", calls.append)
    force = run._fallback_force(1)
    force(True)
    force(False)
    assert calls == [1, -1]
    monkeypatch.delattr(_kernels, "_force_quant_level")
    assert run._quant_kernels("auto") is None  # a cygru without the hook


def _quant_runs(f32, ov_bf16, int8, bf16, int8_fb, bf16_fb, ort_small, int8_small):
    """A fabricated results dict: medium, large and long-seq with the given medians (f32: a
    dict of float32 peer -> ms), small-latency with ORT and int8 (and cygru 1 ms)."""
    cases = {}
    for case in ("medium", "large", "long-seq"):
        peers = {p: {"status": "ok", "median_ms": ms} for p, ms in f32.items()}
        for p, ms in (
            ("ov_bf16", ov_bf16),
            ("cygru_int8", int8),
            ("cygru_bf16", bf16),
            ("cygru_int8_fb", int8_fb),
            ("cygru_bf16_fb", bf16_fb),
        ):
            peers[p] = {"status": "ok", "median_ms": ms}
        cases[case] = {"kind": "forward", "peers": peers}
    cases["small-latency"] = {
        "kind": "forward",
        "peers": {
            "cygru": {"status": "ok", "median_ms": 1.0},
            "ort": {"status": "ok", "median_ms": ort_small},
            "cygru_int8": {"status": "ok", "median_ms": int8_small},
            "cygru_int8_fb": {"status": "ok", "median_ms": 1.0},
            "cygru_bf16_fb": {"status": "ok", "median_ms": 1.25},
        },
    }
    return {"cases": cases}


def test_run_targets_issue_25_from_fabricated_medians():
    """int8 >= 2x the best float32 peer and >= 1.3x OpenVINO bf16, bf16 level with OpenVINO
    bf16, int8 >= 3x ONNX Runtime on small-latency, fallbacks no slower than float32: PASS and
    MISS from the medians of one run, at the judged count and at 1 thread (no timing)."""
    run = _load_run_module()
    f32 = {"cygru": 16.0, "ort": 18.0, "ov": 15.0, "torch": 26.0}  # best: OpenVINO, 15 ms
    runs = {
        # 2 threads: int8 exactly 2x the best (PASS at the boundary), 1.3x OV bf16 (PASS),
        # bf16 slower than OV bf16 (MISS), int8 3.2x ORT (PASS), bf16 fallback slower (MISS)
        2: _quant_runs(f32, 9.75, 7.5, 10.0, 15.0, 17.0, 3.2, 1.0),
        # 1 thread: int8 1.9x the best (MISS), 1.25x OV bf16 (MISS), bf16 level (PASS),
        # int8 2.9x ORT (MISS), both fallbacks faster than float32 (PASS)
        1: _quant_runs(
            {p: 2 * v for p, v in f32.items()}, 19.8, 30 / 1.9, 19.8, 31.0, 32.0, 2.9, 1.0
        ),
    }
    judge, rows = run.evaluate_targets(runs, list(runs[2]["cases"]))
    assert judge == 2
    got = {(r["target"], r["threads"]): r for r in rows}
    quant = [r for r in rows if r.get("group") == "reduced precision"]
    # per thread count: 3 cases x 3 rows, small-latency vs ORT, 4 cases x 2 fallback rows
    assert len(quant) == 2 * (3 * 3 + 1 + 4 * 2)
    assert {r["threads"] for r in quant} == {1, 2}
    for case in ("medium", "large", "long-seq"):
        r = got[(f"{case} int8 vs best f32", 2)]
        assert (r["result"], r["best_f32_peer"]) == ("PASS", "ov")
        assert r["value"] == pytest.approx(2.0)
        assert r["measured"] == "best float32 OV 15.0 ms / cygru int8 7.50 ms = 2.00x"
        assert "best float32 peer (cygru, ONNX Runtime, OpenVINO, PyTorch)" in r["rule"]
        r = got[(f"{case} int8 vs OV bf16", 2)]
        assert r["result"] == "PASS" and r["value"] == pytest.approx(1.3)
        r = got[(f"{case} bf16 vs OV bf16", 2)]
        assert r["result"] == "MISS" and r["value"] == pytest.approx(0.975)
        r = got[(f"{case} int8 vs best f32 1 thread", 1)]
        assert r["result"] == "MISS" and r["value"] == pytest.approx(1.9)
        r = got[(f"{case} int8 vs OV bf16 1 thread", 1)]
        assert r["result"] == "MISS" and r["value"] == pytest.approx(19.8 / (30 / 1.9))
        r = got[(f"{case} bf16 vs OV bf16 1 thread", 1)]
        assert r["result"] == "PASS" and r["value"] == pytest.approx(1.0)
        r = got[(f"{case} int8 fallback vs f32", 2)]
        assert r["result"] == "PASS" and r["value"] == pytest.approx(16 / 15)
        r = got[(f"{case} bf16 fallback vs f32", 2)]
        assert r["result"] == "MISS" and r["value"] == pytest.approx(16 / 17)
        for prec, v in (("int8", 32 / 31), ("bf16", 1.0)):
            r = got[(f"{case} {prec} fallback vs f32 1 thread", 1)]
            assert r["result"] == "PASS" and r["value"] == pytest.approx(v)
    r = got[("small-latency int8 vs ORT", 2)]
    assert r["result"] == "PASS" and r["value"] == pytest.approx(3.2)
    assert got[("small-latency int8 vs ORT 1 thread", 1)]["result"] == "MISS"
    assert got[("small-latency int8 fallback vs f32", 2)]["result"] == "PASS"  # level: 1.00x
    assert got[("small-latency bf16 fallback vs f32", 2)]["result"] == "MISS"  # 0.80x
    # the float32 targets are untouched by the quantized peers
    assert got[("medium vs ORT", 2)]["value"] == pytest.approx(18 / 16)
    table = run.targets_table(judge, quant)
    assert "| medium forward, bf16 | 2 | cygru bf16 at least level with OpenVINO bf16 hint" in table
    assert "OV bf16 9.75 ms / cygru bf16 10.0 ms = 0.97x | **MISS** |" in table
    assert "cygru int8 >= 3x faster than ONNX Runtime" in table
    assert "no slower than cygru float32" in table

    # a float32 peer not timed: the best is taken over the others, and the row says so
    runs[2]["cases"]["medium"]["peers"]["ov"] = {"status": "unavailable"}
    runs[2]["cases"]["medium"]["peers"]["torch"] = {"status": "mismatch"}
    # a quantized module or its opponent not timed: n/a with the reason
    runs[2]["cases"]["large"]["peers"]["cygru_int8"] = {"status": "error"}
    runs[2]["cases"]["long-seq"]["peers"]["ov_bf16"] = {"status": "unavailable"}
    judge, rows = run.evaluate_targets(runs, list(runs[2]["cases"]))
    got = {(r["target"], r["threads"]): r for r in rows}
    r = got[("medium int8 vs best f32", 2)]
    assert r["best_f32_peer"] == "cygru" and r["value"] == pytest.approx(16 / 7.5)
    assert r["measured"].endswith("(not timed: OV unavailable, torch mismatch)")
    assert r["result"] == "PASS"
    r = got[("large int8 vs best f32", 2)]
    assert r["result"] == "n/a" and r["measured"] == "cygru int8: error"
    r = got[("long-seq int8 vs OV bf16", 2)]
    assert r["result"] == "n/a" and r["measured"] == "OpenVINO bf16 hint: unavailable"
    assert got[("long-seq int8 vs best f32", 2)]["result"] == "PASS"
    # only 2 threads run: the 1-thread rows read n/a
    judge, rows = run.evaluate_targets({2: runs[2]}, ["medium"])
    one = [r for r in rows if r["threads"] == 1 and r.get("group") == "reduced precision"]
    assert len(one) == 18 and all(r["result"] == "n/a" for r in one)


def test_run_reduced_precision_table_from_fabricated_medians():
    """The reduced-precision table: times, the best float32 peer and the target ratios."""
    run = _load_run_module()
    runs = {
        2: _quant_runs(
            {"cygru": 16.0, "ort": 18.0, "ov": 15.0}, 9.75, 7.5, 10.0, 15.0, 17.0, 3.2, 1.0
        )
    }
    for p in ("cygru_int8", "cygru_bf16"):
        runs[2]["cases"]["medium"]["peers"][p]["check_max_abs_diff"] = 0.0123
    info = runs[2]["cases"]["medium"]
    info["shape"] = dict(T=100, B=32, I=256, H=256, layers=1, dirs=1)
    table = run.reduced_table(runs, ["medium"])
    row = next(li for li in table.splitlines() if li.startswith("| medium (100,32,256,256,1,1)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    head = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    got = dict(zip(head, cells))
    assert got["cygru f32 ms"] == "16.0" and got["cygru int8 ms"] == "7.50"
    assert got["torch int8 ms"] == "—"
    assert got["best f32 peer"] == "OV 15.0"
    assert got["best f32 / int8"] == "2.00x" and got["OV bf16 / int8"] == "1.30x"
    assert got["ORT / int8"] == "2.40x" and got["OV bf16 / bf16"] == "0.97x"
    assert got["f32 / int8 fallback"] == "1.07x" and got["f32 / bf16 fallback"] == "0.94x"
    assert got["int8 max abs diff"] == got["bf16 max abs diff"] == "0.012"
    # no quantized peer in any case: no table
    del runs[2]["cases"]["small-latency"]
    for p in run.CYGRU_QUANT:
        info["peers"].pop(p)
    assert run.reduced_table(runs, ["medium"]) is None


def test_latency_a_broken_peer_is_reported_not_timed(tmp_path):
    """A peer whose import fails in its worker is reported in the notes; cygru is still timed."""
    fake = tmp_path / "fake" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = _env()
    env["PYTHONPATH"] = str(tmp_path / "fake") + os.pathsep + env["PYTHONPATH"]
    run_id = f"test-latency-{uuid.uuid4().hex}"
    cmd = [sys.executable, LATENCY, "--quick", "--peers", "ov", "--calls", "10", "--busy", "0"]
    cmd += ["--settle-ms", "0", "--json", "", "--markdown", "", "--_run-id", run_id]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "one-step: OpenVINO failed, not timed: " in out and "hidden by the test" in out
    assert "| one-step (1,1,64,128, chained h0) | idle | cygru |" in out
    assert "| one-step (1,1,64,128, chained h0) | idle | OpenVINO | error |" in out
    assert "cygru median <= ONNX Runtime's | ONNX Runtime not timed | n/a |" in out
    assert _gone(run_id) == []


# -- issue 26: training rows ----------------------------------------------------------------


def test_run_training_cases_groups_and_targets_are_declared():
    """The training rows: shapes, dtypes, the "training" group, the default run and every
    target row of issue 26 at the judged count and at 1 thread (no timing)."""
    run = _load_run_module()
    shapes = {"medium": (100, 32, 256, 256, 1, 1), "deep-bi": (100, 32, 256, 256, 2, 2)}
    shapes["long-seq"] = (2000, 8, 128, 256, 1, 1)
    got = {(base, dtype) for base, dtype in run.TRAINING_CASES.values()}
    assert got == {(b, d) for b in shapes for d in ("float32", "float64")}
    for base, shape in shapes.items():
        assert run.training_shape(base) == shape
        assert run.training_shape(base, quick=True) == (shape[0] // 20,) + shape[1:]
    assert set(run.TRAINING_MEMORY_CASES.values()) == {"medium", "long-seq"}
    group = list(run.TRAINING_CASES) + ["cell-vjp"] + list(run.TRAINING_MEMORY_CASES)
    assert sorted(run.parse_args(["--cases", "training"]).cases) == sorted(group)
    assert "training" not in run.ALL_CASES  # the old single case is now the group
    assert set(group) <= set(run.parse_args([]).cases)
    both = run.parse_args(["--cases", "training", "medium"]).cases
    assert set(both) == set(group) | {"medium"}
    rows = {(r[0], r[5], tuple(r[6:])): r for r in run.TARGETS}
    for case, (base, dtype) in run.TRAINING_CASES.items():
        f64 = " f64" if dtype == "float64" else ""
        thr = 1.5 if base == "medium" else 1.3
        name = f"training {base}{f64} vs torch"
        for key, at in ((name, ()), (name + " 1 thread", (1,))):
            assert rows[(key, thr, at)][2:5] == ("speedup", case, "torch")
    for key, at in (("GRUCell.vjp vs torch", ()), ("GRUCell.vjp vs torch 1 thread", (1,))):
        assert rows[(key, 1.0, at)][2:5] == ("speedup", "cell-vjp", "torch")
    for case, base in run.TRAINING_MEMORY_CASES.items():
        assert rows[(f"training memory {base} vs torch", 1.0, ())][2:5] == ("peak", case, "torch")


def _training_runs(ratios, peaks):
    """A fabricated results dict: every training case with cygru at 10 ms and PyTorch at
    10 * ratio, GRUCell.vjp likewise, and the memory cases with the given peaks."""
    run = _load_run_module()
    cases = {}
    for case in list(run.TRAINING_CASES) + ["cell-vjp"]:
        r = ratios[case]
        peers = {"cygru": {"status": "ok", "median_ms": 10.0}}
        peers["torch"] = {"status": "ok", "median_ms": 10.0 * r} if r else {"status": "mismatch"}
        cases[case] = {"kind": "training", "peers": peers}
    for case, (c, t) in peaks.items():
        peers = {"cygru": {"status": "ok", "peak_mib": c}}
        peers["torch"] = {"status": "ok", "peak_mib": t} if t else {"status": "error"}
        cases[case] = {"kind": "training-memory", "peers": peers}
    return {"cases": cases}


def test_run_training_targets_from_fabricated_medians():
    """Issue 26's rows judged from a results dict: speedups at their thresholds (medium 1.5x
    in both dtypes, deep-bi and long-seq 1.3x), GRUCell.vjp level, peak memory <= PyTorch's;
    a peer not timed reads n/a with the reason (no timing)."""
    run = _load_run_module()
    two = {
        "training-medium": 1.5,  # exactly at the bound: PASS
        "training-deep-bi": 1.29,  # MISS
        "training-long-seq": 1.3,  # PASS
        "training-medium-f64": 1.4,  # medium's float64 target is 1.5: MISS
        "training-deep-bi-f64": 1.35,  # PASS
        "training-long-seq-f64": None,  # PyTorch mismatch: n/a
        "cell-vjp": 1.0,  # level: PASS
    }
    one = dict(two, **{"training-medium": 1.49, "cell-vjp": 0.9, "training-long-seq-f64": 2.0})
    peaks = {"training-memory-medium": (40.0, 40.0), "training-memory-long-seq": (60.0, 50.0)}
    runs = {2: _training_runs(two, peaks), 1: _training_runs(one, {})}
    judge, rows = run.evaluate_targets(runs, list(runs[2]["cases"]))
    assert judge == 2
    got = {(r["target"], r["threads"]): r for r in rows}
    expect = {
        ("training medium vs torch", 2): ("PASS", 1.5),
        ("training deep-bi vs torch", 2): ("MISS", 1.29),
        ("training long-seq vs torch", 2): ("PASS", 1.3),
        ("training medium f64 vs torch", 2): ("MISS", 1.4),
        ("training deep-bi f64 vs torch", 2): ("PASS", 1.35),
        ("GRUCell.vjp vs torch", 2): ("PASS", 1.0),
        ("training medium vs torch 1 thread", 1): ("MISS", 1.49),
        ("training long-seq f64 vs torch 1 thread", 1): ("PASS", 2.0),
        ("GRUCell.vjp vs torch 1 thread", 1): ("MISS", 0.9),
        ("training memory medium vs torch", 2): ("PASS", 1.0),
        ("training memory long-seq vs torch", 2): ("MISS", 1.2),
    }
    for key, (result, value) in expect.items():
        assert (got[key]["result"], got[key]["value"]) == (result, pytest.approx(value)), key
    r = got[("training long-seq f64 vs torch", 2)]
    assert r["result"] == "n/a" and r["measured"] == "PyTorch: mismatch"
    r = got[("training memory long-seq vs torch", 2)]
    assert r["measured"] == "cygru 60.0 MiB / torch 50.0 MiB = 1.20x"
    assert "peak resident memory <= 1x PyTorch's" in r["rule"]
    # a probe that failed: n/a, naming the engine
    runs[2] = _training_runs(two, {"training-memory-medium": (40.0, None)})
    judge, rows = run.evaluate_targets(runs, list(runs[2]["cases"]))
    r = next(r for r in rows if r["target"] == "training memory medium vs torch")
    assert r["result"] == "n/a" and r["measured"] == "PyTorch: error"
    r = next(r for r in rows if r["target"] == "training memory long-seq vs torch")
    assert r["result"] == "n/a" and r["measured"] == "not run"
    # the printed table: only the selected cases' rows, each once
    shown = run.shown_targets(rows, ["training-medium", "cell-vjp"])
    assert {(r["target"], r["threads"]) for r in shown} == {
        ("training medium vs torch", 2),
        ("training medium vs torch 1 thread", 1),
        ("GRUCell.vjp vs torch", 2),
        ("GRUCell.vjp vs torch 1 thread", 1),
    }
    table = run.targets_table(judge, shown)
    assert "| training (fwd+bwd) medium float32 | 1 | cygru >= 1.5x faster than PyTorch |" in table
    assert "torch/cygru 1.49x | **MISS** |" in table
    # judged at 1 thread (2 not run): a "1 thread" row and its judged twin are shown once
    judge, rows = run.evaluate_targets({1: runs[1]}, list(runs[1]["cases"]))
    assert judge == 1
    shown = run.shown_targets(rows, ["training-medium"])
    assert [(r["target"], r["threads"]) for r in shown] == [("training medium vs torch", 1)]


def _bare_worker(run):
    """A run.Worker with only what its checks use (no peer imported, no thread set)."""
    import numpy as np

    w = run.Worker.__new__(run.Worker)
    w.n, w.np, w.notes, w.mismatches = 1, np, [], []
    w.cfg = run.TimingConfig(quick=True, repeat=1)
    return w


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_run_training_check_catches_a_wrong_gradient(dtype):
    """The training check compares outputs, dx and every parameter gradient with cygru's:
    PyTorch matches and is timed; a peer whose dx or one weight gradient is off by a
    relative 1e-6 (float64) or 1e-3 (float32) is a MISMATCH and is not timed."""
    torch = import_optional("torch")
    import numpy as np

    import cygru

    run = _load_run_module()
    w = _bare_worker(run)
    dt = np.dtype(dtype)
    torch.manual_seed(0)
    net = torch.nn.GRU(5, 6, num_layers=2, bidirectional=True)
    if dt == np.float64:
        net.double()
    gru = cygru.GRU(5, 6, 2, bidirectional=True, dtype=dt)
    gru.load_state_dict({k: v.detach().numpy() for k, v in net.state_dict().items()})
    rng = np.random.default_rng(0)
    x, dO, dH = (rng.standard_normal(s).astype(dt) for s in ((7, 3, 5), (7, 3, 12), (4, 3, 6)))

    def cy_step():
        (o, h), bw = gru.vjp(x)
        return {"output": o, "h_n": h, "dx": bw(dO, dH)[0]}

    def torch_step(spoil=None, eps=1e-6 if dt == np.float64 else 1e-3):
        def step():
            xt = torch.from_numpy(x).requires_grad_()
            o, h = net(xt)
            torch.autograd.backward([o, h], [torch.from_numpy(dO), torch.from_numpy(dH)])
            if spoil == "weight":
                g = net.weight_hh_l1_reverse.grad
                g[0, 0] += eps * max(1.0, float(g.abs().max()))
            out = {"output": o, "h_n": h, "dx": xt.grad}
            if spoil == "dx":
                out["dx"] = xt.grad * (1 + eps)
            return out

        return step

    atol = run.F64_ATOL if dt == np.float64 else run.ATOL
    peers = {"torch": torch_step(), "ort": torch_step("dx"), "ov": torch_step("weight")}
    entries = w._vjp_check_and_time("training-medium", gru, cy_step, net, peers, atol)
    ok = entries["torch"]
    assert ok["status"] == "ok" and ok["median_ms"] > 0 and entries["cygru"]["median_ms"] > 0
    names = {"output", "h_n", "dx"} | {f"grad.{k}" for k, _ in net.named_parameters()}
    assert set(ok["max_abs_diff"]) == names and len(names) == 3 + 16
    assert all(ok["max_abs_diff"][k] <= ok["tolerance"][k] for k in names)
    assert ok["check_max_abs_diff"] <= (1e-12 if dt == np.float64 else 1e-5) * 100
    for p, what in (("ort", "dx"), ("ov", "grad.weight_hh_l1_reverse")):
        assert entries[p]["status"] == "mismatch" and "median_ms" not in entries[p]
        bad = [k for k, d in entries[p]["max_abs_diff"].items() if d > entries[p]["tolerance"][k]]
        assert bad == [what]
    assert [(m["peer"], m["what"]) for m in w.mismatches] == [
        ("ort", "dx"),
        ("ov", "grad.weight_hh_l1_reverse"),
    ]


def _probe(run, engine, shape):
    cmd = [sys.executable, RUN, "--_mem-probe", engine, "--_mem-shape", *map(str, shape)]
    cmd += ["--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("MEMPROBE "))
    return json.loads(line[len("MEMPROBE ") :])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs clear_refs")
@pytest.mark.parametrize("engine", ["cygru", "torch"])
def test_run_memory_probe_sees_what_a_training_step_keeps(engine):
    """The peak-memory probe: a fresh process, three measured steps, and a peak that follows
    the step's memory: 8x the sequence length adds at least the larger output and dx, which
    the measured step keeps alive (no timing)."""
    if engine == "torch":
        import_optional("torch")
    run = _load_run_module()
    small = _probe(run, engine, (40, 32, 64, 128, 1, 1))
    big = _probe(run, engine, (320, 32, 64, 128, 1, 1))
    for r in (small, big):
        assert r["engine"] == engine and len(r["samples_mib"]) == run.MEMORY_PROBE_STEPS
        assert r["peak_mib"] > 0 and r["rss_before_mib"] > r["peak_mib"] / 100
        assert r["malloc_trim"] is True  # glibc here
    kept = (320 - 40) * 32 * (128 + 64) * 4 / 2**20  # output and dx, MiB
    assert big["peak_mib"] >= small["peak_mib"] + 0.9 * kept


def test_run_quick_training_rows(tmp_path):
    """--quick --cases training: every issue-26 row is checked against PyTorch, timed,
    tabled and judged; the memory rows measure both engines (no timing asserted)."""
    import_optional("torch")
    run = _load_run_module()
    out_json = tmp_path / "r.json"
    cmd = [sys.executable, RUN, "--quick", "--repeat", "1", "--threads", "1"]
    cmd += ["--cases", "training", "--json", str(out_json), "--png", ""]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    result = json.loads(out_json.read_text())
    # the training rows use PyTorch alone: a missing OpenVINO or ONNX Runtime (neither is
    # in the test extra's every install) is noted, nothing else is
    unused_peers = ("OpenVINO not installed", "ONNX Runtime / onnx not installed")
    notes = [n for n in result["notes"] if not n.startswith(unused_peers)]
    assert result["mismatches"] == [] and notes == []
    cases = result["runs"]["1"]["cases"]
    assert set(cases) == set(run.CASE_GROUPS["training"])
    lines = out.splitlines()
    for case, (base, dtype) in run.TRAINING_CASES.items():
        info = cases[case]
        T, B, I, H, L, D = run.training_shape(base, quick=True)
        assert info["shape"] == dict(T=T, B=B, I=I, H=H, layers=L, dirs=D)
        assert (info["kind"], info["dtype"], info["base_case"]) == ("training", dtype, base)
        torch_e = info["peers"]["torch"]
        assert torch_e["status"] == "ok" and torch_e["median_ms"] > 0 and torch_e["rounds"] == 1
        assert info["peers"]["cygru"]["median_ms"] > 0
        grads = [k for k in torch_e["max_abs_diff"] if k.startswith("grad.")]
        assert len(grads) == 4 * L * D
        for k, d in torch_e["max_abs_diff"].items():
            assert 0 <= d <= torch_e["tolerance"][k]
        atol = run.F64_ATOL if dtype == "float64" else run.ATOL
        assert min(torch_e["tolerance"].values()) == pytest.approx(atol)
        label = f"| training {base} ({T},{B},{I},{H},{L},{D}) fwd+bwd"
        label += " float64 | 1 |" if dtype == "float64" else " | 1 |"
        row = next(li for li in lines if li.startswith(label))
        assert "--quick: T cut to 1/20" in row
    e = cases["cell-vjp"]["peers"]["torch"]
    assert e["status"] == "ok" and set(e["max_abs_diff"]) == {
        "h1",
        "dx",
        "dh",
        "grad.weight_ih",
        "grad.weight_hh",
        "grad.bias_ih",
        "grad.bias_hh",
    }
    assert any(li.startswith("| GRUCell.vjp fwd+bwd B=1 I=64 H=128 | 1 |") for li in lines)
    section = out.split("### Peak memory of a training step")[1].split("###")[0]
    assert "malloc_trim(0)" in section and "/proc/self/clear_refs" in section
    for case, base in run.TRAINING_MEMORY_CASES.items():
        info = cases[case]
        c, t = info["peers"]["cygru"], info["peers"]["torch"]
        assert c["status"] == t["status"] == "ok" and c["peak_mib"] > 0 and t["peak_mib"] > 0
        assert info["ratio_cygru_over_torch"] == pytest.approx(c["peak_mib"] / t["peak_mib"])
        T, B, I, H, L, D = run.training_shape(base, quick=True)
        row = next(li for li in section.splitlines() if li.startswith(f"| training {base} ("))
        assert f"({T},{B},{I},{H},{L},{D}) peak memory | 1 | {c['peak_mib']:.1f} |" in row
    # every issue-26 row judged at 1 thread (the only count run), shown once, and no row of
    # a case this run did not select
    rows = [r for r in result["targets"] if r["case"] in run.CASE_GROUPS["training"]]
    assert len(rows) == 2 * (len(run.TRAINING_CASES) + 1) + len(run.TRAINING_MEMORY_CASES)
    for r in rows:
        assert r["threads"] == 1 and r["result"] in ("PASS", "MISS"), r
        info = cases[r["case"]]["peers"]
        if r["case"] in run.TRAINING_MEMORY_CASES:
            v = info["cygru"]["peak_mib"] / info["torch"]["peak_mib"]
            assert r["result"] == ("PASS" if v <= 1.0 else "MISS")
        else:
            v = info["torch"]["median_ms"] / info["cygru"]["median_ms"]
            assert r["result"] == ("PASS" if v >= r["threshold"] else "MISS")
        assert r["value"] == pytest.approx(v)
    targets = out.split("### Targets (2 threads not run: judged at 1 threads)")[1]
    assert "| not run |" not in targets and "medium forward |" not in targets
    assert targets.count("| training (fwd+bwd) medium float32 | 1 |") == 1
    assert "### Targets, reduced precision" not in out
