"""The examples in examples/ run and do what they say."""

import importlib.util
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _load(name):
    path = os.path.join(EXAMPLES, name)
    spec = importlib.util.spec_from_file_location(f"cygru_example_{name[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_toy_loss_falls_tenfold():
    train_toy = _load("train_toy.py")
    for seed in (0, 1):
        history = train_toy.main(steps=100, seed=seed)
        assert len(history) == 100
        assert all(np.isfinite(history))
        final = float(np.mean(history[-10:]))
        assert history[0] / final >= 10.0, (seed, history[0], final)


def test_train_toy_is_reproducible():
    train_toy = _load("train_toy.py")
    assert train_toy.main(steps=5, seed=3) == train_toy.main(steps=5, seed=3)


def test_train_toy_script_runs():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = (
        "import runpy, sys; sys.argv = ['train_toy.py']; "
        "import numpy; m = runpy.run_path(sys.argv[0], run_name='not_main'); "
        "h = m['main'](steps=3, verbose=True, print_every=1)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("loss") == 3
