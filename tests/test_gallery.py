"""The gallery example docs/examples/plot_train_vs_pytorch.py runs, with and without PyTorch.

The documentation build executes every gallery example (with PyTorch installed, as in CI);
these tests run this one outside Sphinx, in a subprocess (the example sets thread counts and
draws figures): without PyTorch, the path a user with only the ``docs`` extra takes, which
must still train and check the cygru half; and with PyTorch, where the example itself
asserts that the two engines' float64 loss curves agree and that both reach the same test
accuracy. The printed report is checked here too.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from optional_deps import import_optional

import cygru

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "plot_train_vs_pytorch.py"

_REPORT = re.compile(
    r"^(?P<engine>cygru|PyTorch)\s+loss (?P<first>[\d.]+) \(first batch\) -> "
    r"(?P<last>[\d.]+) \(mean of the last epoch\), test accuracy (?P<acc>[\d.]+); "
    r"per epoch (?P<epoch_ms>\d+) ms, per step (?P<step_ms>[\d.]+) ms \(medians\)$",
    re.M,
)


def _run_example(block_torch, example=EXAMPLE):
    """Run the example as sphinx-gallery does (``__name__ == "__main__"``, its own
    directory), optionally with ``import torch`` failing; return its stdout."""
    prelude = "import sys; sys.modules['torch'] = None; " if block_torch else ""
    code = prelude + f"import runpy; runpy.run_path({str(example)!r}, run_name='__main__')"
    env = dict(os.environ, MPLBACKEND="agg")
    # the cygru this test process imported (a checkout built in place, or an installation)
    where = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [where, env.get("PYTHONPATH")]))
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=example.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _reports(stdout):
    return {m["engine"]: m for m in _REPORT.finditer(stdout)}


def test_train_vs_pytorch_without_torch():
    """Without PyTorch the example says so, and still trains and checks the cygru half."""
    out = _run_example(block_torch=True)
    assert "PyTorch is not installed: only the cygru half of this example runs." in out
    assert "PyTorch: not installed, not run" in out
    reports = _reports(out)
    assert set(reports) == {"cygru"}, out
    cy = reports["cygru"]
    assert float(cy["last"]) < 0.4 * float(cy["first"])
    assert float(cy["acc"]) > 0.8
    assert int(cy["epoch_ms"]) > 0


@pytest.mark.slow
def test_train_vs_pytorch_with_torch():
    """With PyTorch, both engines train the same model to the same losses and accuracy."""
    import_optional("torch")
    out = _run_example(block_torch=False)
    reports = _reports(out)
    assert set(reports) == {"cygru", "PyTorch"}, out
    cy, pt = reports["cygru"], reports["PyTorch"]
    for key in ("first", "last", "acc"):
        assert cy[key] == pt[key], (key, out)
    worst = float(re.search(r"loss curves: ([\d.e+-]+)", out).group(1))
    assert worst < 1e-6
    assert re.search(r"time per epoch, PyTorch / cygru: \d+\.\d\d$", out, re.M)


def test_dask_inference_over_a_store_larger_than_memory():
    """docs/examples/plot_dask_inference.py: a GRU over a NumPy memmap store larger than
    each worker's memory limit, the outputs written to stores with da.store; each of the
    two workers' peak memory (VmHWM) is reported below the limit, and two chunks of the
    stored outputs equal a direct call bit for bit (the example asserts these; the report
    is checked here too)."""
    import_optional("dask.array")
    import_optional("distributed")
    out = _run_example(False, ROOT / "docs" / "examples" / "plot_dask_inference.py")
    m = re.search(
        r"^x: (\d+) MiB on disk in (\d+) chunks of [\d.]+ MiB; output: \d+ MiB; "
        r"each worker's memory limit: (\d+) MiB$",
        out,
        re.M,
    )
    assert m, out
    x_mib, chunks, limit = (int(g) for g in m.groups())
    assert x_mib > limit and chunks > 1
    m = re.search(r"peak memory of the workers: (\d+) MiB, (\d+) MiB \(limit (\d+) MiB\)", out)
    assert m, out
    peaks = [int(m.group(1)), int(m.group(2))]
    assert int(m.group(3)) == limit and all(0 < p < limit for p in peaks), out
    assert out.count("bitwise equal to a direct call: True") == 2, out
