"""``python -m cygru``: its options, its errors and the shape of its output (never its
speed: timings are checked by benchmarks/ only)."""

import os
import re
import subprocess
import sys

import pytest

import cygru
from cygru import __main__ as main_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "cygru", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_help_prints_usage_and_runs_nothing():
    proc = run("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m cygru")
    for option in ("--threads N", "--quick", "--no-timing", "--version", "Exit status"):
        assert option in proc.stdout
    assert "self-check" in proc.stdout and "ok" not in proc.stdout.split()


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"cygru {cygru.__version__}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "0"], "argument --threads: must be between 1 and 256, got 0"),
        (["--threads", "two"], "argument --threads: must be a whole number, got 'two'"),
        (["--threads"], "argument --threads: expected one argument"),
        (["--fast"], "unrecognized arguments: --fast"),
        (["extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, message):
    proc = run(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("usage: python -m cygru")
    assert message in proc.stderr


def _table(stdout):
    """The table's lines: the header, the dashes under it, the rows."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("case "))
    end = next(
        (
            i
            for i in range(start + 2, len(lines))
            if not lines[i].strip()
            or lines[i].startswith(("peers:", "PyTorch:", "ONNX", "*", "Full"))
        ),
        len(lines),
    )
    return lines[start:end]


def _columns(dashes):
    """(start, end) of each column, from the row of dashes."""
    return [m.span() for m in re.finditer(r"-+", dashes)]


def test_quick_run_output():
    proc = run("--quick", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"cygru {cygru.__version__}\nBLAS: ")
    assert "threads: 1 (--threads; the peers are timed with the same count)" in out
    assert "self-check against the NumPy reference" in out and "... ok" in out
    assert "float32 forward, 1 thread: median ms per call" in out
    assert "|" not in out  # no Markdown pipes
    header, dashes, *rows = _table(out)
    spans = _columns(dashes)
    names = [header[a:b].strip() for a, b in spans]
    assert names[:3] == ["case", "sizes", "cygru ms"] and names[-1] == "rounds"
    assert [r[:16].strip() for r in rows] == ["small-latency", "one step (cell)"]
    for row in rows:
        # every cell lies inside its column: the gaps between columns are blank
        for (_, b), (c, _) in zip(spans, spans[1:]):
            assert row[b:c].strip() == "", (row, b, c)
        cells = {n: row[a:b].strip() for n, (a, b) in zip(names, spans)}
        assert re.fullmatch(r"[0-9.e+-]+ ±\d+%", cells["cygru ms"]), cells
        assert re.fullmatch(r"\d+\*?", cells["rounds"]), cells
        for n in names:
            if n.startswith("vs "):
                assert re.fullmatch(r"[0-9.]+x", cells[n]), cells
    for peer, module in (("PyTorch", "torch"), ("ONNX Runtime", "onnxruntime")):
        installed = main_module._installed(module) and (
            peer == "PyTorch" or main_module._installed("onnx")
        )
        assert (f"{peer} ms" in names) == installed
        assert (f"vs {peer}" in names) == installed
    # the progress lines go to stderr, never into the table
    assert "measuring small-latency (1/2)" in proc.stderr
    assert "measuring" not in out


def test_without_peers_it_says_so(monkeypatch, capsys):
    """On a machine with numpy and scipy only: cygru's column alone, and a line per peer."""
    monkeypatch.setattr(main_module, "_installed", lambda name: False)
    monkeypatch.setattr(main_module, "_QUICK_CASES", [("tiny", 3, 1, 2, 3)])
    before = cygru.get_num_threads()
    try:
        assert main_module.main(["--quick", "--threads", "2"]) == 0
    finally:
        cygru.set_num_threads(before)
    out = capsys.readouterr().out
    assert "threads: 2 (--threads" in out
    header, dashes, row = _table(out)
    assert header.split() == ["case", "sizes", "cygru", "ms", "rounds"]
    assert row.split()[:5] == ["tiny", "T=3", "B=1", "I=2", "H=3"]
    assert "PyTorch: not installed, not timed (pip install torch to compare)" in out
    assert "ONNX Runtime: not installed, not timed (pip install onnx onnxruntime to compare)" in out
    assert "peers:" not in out


def test_no_timing():
    proc = run("--no-timing")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1].startswith("demo: GRU(3, 4, num_layers=2")
    assert "median" not in proc.stdout and proc.stderr == ""


def test_measure_and_table_units():
    """measure() returns a median and a relative spread per engine; format_table aligns."""
    calls = []
    results, rounds, stable = main_module.measure(
        {"a": lambda: calls.append(1), "b": lambda: None}, budget_s=0.5, min_rounds=3
    )
    assert set(results) == {"a", "b"} and rounds >= 3 and calls
    for med, spread in results.values():
        assert med > 0 and spread >= 0
    text = main_module.format_table(
        [
            ("x", "T=1", {"cygru": (1e-3, 0.05), "PyTorch": (2e-3, 0.1)}, 7, True),
            ("longer name", "T=10", {"cygru": (2e-3, 0.0)}, 9, False),
        ],
        ["cygru", "PyTorch"],
    )
    lines = text.splitlines()
    assert lines[0].split() == [
        "case",
        "sizes",
        "cygru",
        "ms",
        "PyTorch",
        "ms",
        "vs",
        "PyTorch",
        "rounds",
    ]
    assert lines[2].split() == ["x", "T=1", "1", "±5%", "2", "±10%", "2.00x", "7"]
    assert lines[3].split() == ["longer", "name", "T=10", "2", "±0%", "-", "-", "9*"]
    assert len({len(line) for line in lines[:3]}) == 1  # right-aligned to one width
