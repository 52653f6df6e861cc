"""cygru's type hints (PEP 484, shipped with py.typed): ``mypy --strict`` passes on a user's
script over the public API (tests/typing/user_script.py) and catches a misuse of it."""

import os
import pathlib
import subprocess
import sys

from optional_deps import import_optional

import_optional("mypy")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "typing" / "user_script.py"


def _mypy(tmp_path, *args):
    """`python -m mypy --strict ARGS` from the repository root, with its configuration
    (pyproject.toml's [tool.mypy]) and a cache of its own."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            "--no-color-output",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPY_FORCE_COLOR": "0"},
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_package_is_marked_typed():
    import cygru

    assert os.path.isfile(os.path.join(os.path.dirname(cygru.__file__), "py.typed"))


def test_user_script_passes_mypy_strict(tmp_path):
    rc, out = _mypy(tmp_path, str(SCRIPT))
    assert rc == 0, out
    assert "Success: no issues found in 1 source file" in out, out


def test_mypy_sees_cygru_types(tmp_path):
    """The script's success means something: cygru's names are not Any to mypy, so a
    wrong argument is an error and the results have their declared types."""
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        "import numpy as np\n"
        "import cygru\n"
        "gru = cygru.GRU('3', 4)\n"
        "out, h_n = gru(np.zeros((5, 2, 3)))\n"
        "reveal_type(out)\n"
        "(y, h), backward = gru.vjp(np.zeros((5, 2, 3)))\n"
        "reveal_type(backward)\n"
        "cygru.set_num_threads('two')\n"
        "n: str = cygru.gradcheck(gru, np.zeros((5, 2, 3)))\n"
    )
    rc, out = _mypy(tmp_path, str(misuse))
    assert rc == 1, out
    assert (
        'misuse.py:3: error: Argument 1 to "GRU" has incompatible type "str"; expected "int"' in out
    ), out
    assert 'misuse.py:5: note: Revealed type is "numpy.ndarray[' in out, out
    assert 'misuse.py:7: note: Revealed type is "cygru._typing.GRUBackward"' in out, out
    assert 'misuse.py:8: error: Argument 1 to "set_num_threads" has incompatible type' in out, out
    assert (
        "misuse.py:9: error: Incompatible types in assignment (expression has type "
        '"bool", variable has type "str")' in out
    ), out
    assert "Found 3 errors in 1 file" in out, out


def _public_callables():
    """(qualified name, function) for every public function, class constructor and public
    method or property of cygru's public modules (their ``__all__``)."""
    import importlib
    import inspect

    for mod_name in ("cygru", "cygru.functional", "cygru.optim", "cygru.interop", "cygru.dask"):
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:  # cygru.dask without dask
            continue
        for name in mod.__all__:
            obj = getattr(mod, name)
            where = f"{mod_name}.{name}"
            if inspect.isfunction(obj):
                yield where, obj
            elif inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") and attr not in ("__init__", "__call__"):
                        continue
                    if isinstance(value, property):
                        value = value.fget
                    if inspect.isfunction(value):
                        yield f"{where}.{attr}", value
                for base in obj.__mro__[1:]:  # inherited public methods (_Module's)
                    if base.__module__.startswith("cygru"):
                        for attr, value in vars(base).items():
                            if isinstance(value, property):
                                value = value.fget
                            if (
                                not attr.startswith("_") or attr == "__init__"
                            ) and inspect.isfunction(value):
                                yield f"{where}.{attr} (from {base.__name__})", value


def test_every_public_function_is_annotated():
    import inspect

    seen, missing = 0, []
    for where, fn in _public_callables():
        sig = inspect.signature(fn)
        seen += 1
        for p in list(sig.parameters.values())[1 if "." in fn.__qualname__ else 0 :]:
            if p.annotation is inspect.Parameter.empty:
                missing.append(f"{where}: parameter {p.name}")
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{where}: return")
    assert seen > 40, seen
    assert not missing, missing


def test_dask_trainer_takes_cygru_optimizers(tmp_path):
    """DataParallelTrainer's optimizer hint admits cygru.optim's optimizers, an object with
    step() or step(module), and a callable; not a number."""
    import_optional("dask")
    script = tmp_path / "trainer.py"
    script.write_text(
        "from typing import List, Optional\n"
        "import numpy as np\n"
        "import cygru\n"
        "import cygru.dask\n"
        "import cygru.optim\n"
        "gru = cygru.GRU(2, 3, dtype=np.float64, seed=0)\n"
        "a = cygru.dask.DataParallelTrainer(gru, cygru.optim.Adam(gru, lr=0.05))\n"
        "b = cygru.dask.DataParallelTrainer(gru, cygru.optim.AdamW(gru))\n"
        "c = cygru.dask.DataParallelTrainer(gru, cygru.optim.SGD(gru, lr=0.1))\n"
        "class Mine:\n"
        "    def step(self, module: cygru.GRU) -> None: ...\n"
        "d = cygru.dask.DataParallelTrainer(gru, Mine())\n"
        "def update(module: cygru.GRU) -> None: ...\n"
        "e = cygru.dask.DataParallelTrainer(gru, update)\n"
        "history: List[Optional[float]] = a.history\n"
        "f = cygru.dask.DataParallelTrainer(gru, 0.1)\n"
    )
    rc, out = _mypy(tmp_path, str(script))
    assert rc == 1, out
    assert 'trainer.py:16: error: Argument 2 to "DataParallelTrainer" has incompatible type' in out
    assert "Found 1 error in 1 file" in out, out
