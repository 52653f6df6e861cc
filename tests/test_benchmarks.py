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
    for label in ("idle", "user spin", "kernel loop", "twin"):
        assert f"| small-latency (50,1,64,128) | {label} |" in out
        assert f"| single-step (1,32,256,256) | {label} |" in out
    assert "### Targets" in out
    assert "cygru.get_num_threads()" in out
    assert "load average at start" in out
    assert "% in the kernel" in out
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
        assert len(_processes_with(run_id)) >= 5  # workers, spin, kernel, twins
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc != 0
    assert _gone(run_id) == []
