"""cygru's type hints (PEP 484, shipped with py.typed): ``mypy --strict`` passes on a user's
script over the public API (tests/typing/user_script.py) and catches a misuse of it."""

import os
import pathlib
import subprocess
import sys

import pytest
from install_helpers import clean_env
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

    modules = ("cygru", "cygru.functional", "cygru.optim", "cygru.interop", "cygru.dask")
    for mod_name in modules + ("cygru.torch", "cygru.jax", "cygru.onnxruntime"):
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:  # cygru.dask without dask, cygru.torch without torch, ...
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


def _public_classes():
    """(qualified name, class) for every public class of cygru's public modules, and the
    Protocols that vjp's closures are typed with."""
    import importlib
    import inspect

    from cygru._typing import GRUBackward, GRUCellBackward

    modules = ("cygru", "cygru.functional", "cygru.optim", "cygru.interop", "cygru.dask")
    for mod_name in modules + ("cygru.torch", "cygru.jax", "cygru.onnxruntime"):
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:  # cygru.dask without dask, cygru.torch without torch, ...
            continue
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj):
                yield f"{mod_name}.{name}", obj
    yield "cygru._typing.GRUBackward", GRUBackward
    yield "cygru._typing.GRUCellBackward", GRUCellBackward


def test_get_type_hints_resolves_every_public_annotation():
    """typing.get_type_hints (what Sphinx extensions, beartype, pydantic and typer read at
    run time) resolves every public function's, method's and class's annotations: no name
    is imported only for type checkers. It raised ``NameError: name 'DTypeLike' is not
    defined`` on ``cygru.GRU.__init__``."""
    import importlib
    import typing

    failures, seen = [], set()
    for where, obj in [*_public_callables(), *_public_classes()]:
        seen.add(where.split(" ")[0])
        try:
            typing.get_type_hints(obj)
        except Exception as exc:  # any failure is the bug
            failures.append(f"{where}: {exc!r}")
    assert not failures, failures
    # the loop covered what it should (dask's names only where dask imports)
    for name in (
        "cygru.GRU.__init__",
        "cygru.GRU.__call__",
        "cygru.GRU.to_onnx",
        "cygru.GRU.load_state_dict",
        "cygru.GRUCell.vjp",
        "cygru.gradcheck",
        "cygru.from_torch",
        "cygru.to_onnx",
        "cygru.from_onnx",
        "cygru.from_keras",
        "cygru.functional.gru",
        "cygru.functional.gru_cell",
        "cygru.optim.Adam.__init__",
        "cygru.optim.clip_grad_norm_",
        "cygru.interop.lengths_from_mask",
        "cygru.interop.repeat_last_state",
        "cygru._typing.GRUBackward",
    ):
        assert any(w.startswith(name) for w in seen), (name, sorted(seen))
    try:
        import cygru.dask  # noqa: F401
    except ImportError:
        pass
    else:
        assert "cygru.dask.forward" in seen and "cygru.dask.DataParallelTrainer.step" in seen
    for optional, names in (
        ("cygru.torch", ("cygru.torch.GRU.__init__", "cygru.torch.GRU.forward")),
        ("cygru.jax", ("cygru.jax.gru",)),
        ("cygru.onnxruntime", ("cygru.onnxruntime.InferenceSession.run",)),
    ):
        try:
            importlib.import_module(optional)
        except ImportError:
            continue
        for name in names:
            assert any(w.startswith(name) for w in seen), (name, sorted(seen))


def test_get_type_hints_values():
    """The resolved hints are the declared types, not placeholders."""
    import typing

    from numpy.typing import ArrayLike, DTypeLike

    import cygru
    import cygru.optim
    from cygru._typing import Array, GRUBackward

    init = typing.get_type_hints(cygru.GRU.__init__)
    assert init["dtype"] == DTypeLike and init["input_size"] is int
    assert init["seed"] == typing.Optional[int]
    call = typing.get_type_hints(cygru.GRU.__call__)
    assert call["hx"] == typing.Optional[ArrayLike]
    assert call["return"] == typing.Tuple[Array, Array]
    assert (
        typing.get_type_hints(cygru.GRU.vjp)["return"]
        == typing.Tuple[typing.Tuple[Array, Array], GRUBackward]
    )
    assert (
        typing.get_type_hints(cygru.from_torch)["return"]
        == typing.Union[cygru.GRU, cygru.GRUCell, cygru.QuantizedGRU, cygru.QuantizedGRUCell]
    )
    assert (
        typing.get_type_hints(cygru.gradcheck)["module"] == typing.Union[cygru.GRU, cygru.GRUCell]
    )
    params = typing.get_type_hints(cygru.optim.SGD.__init__)["params"]
    assert params == cygru.optim.Params and cygru.GRU in typing.get_args(params)
    onnx_hints = typing.get_type_hints(cygru.GRU.to_onnx)
    assert set(onnx_hints) == {"path_or_file", "opset", "h0", "lengths", "return"}


def test_to_onnx_method_has_real_keywords():
    """GRU.to_onnx names to_onnx's options (editors complete them; a typo is a TypeError
    at the call) instead of ``**kwargs``; they mean the same as cygru.to_onnx's."""
    import inspect
    import io

    import cygru

    method = inspect.signature(cygru.GRU.to_onnx).parameters
    function = inspect.signature(cygru.to_onnx).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in method.values())
    assert [n for n in method if n != "self"] == [n for n in function if n != "module"]
    for name in ("h0", "lengths"):
        assert method[name].default == function[name].default
        assert method[name].kind is function[name].kind is inspect.Parameter.KEYWORD_ONLY
    gru = cygru.GRU(3, 4, seed=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lenghts'"):
        gru.to_onnx(io.BytesIO(), lenghts="none")
    import_optional("onnx")
    for kwargs in ({}, {"opset": 13, "h0": "none", "lengths": "required"}, {"lengths": False}):
        a, b = io.BytesIO(), io.BytesIO()
        model = gru.to_onnx(a, **kwargs)
        cygru.to_onnx(gru, b, **kwargs)
        assert a.getvalue() == b.getvalue(), kwargs
        assert model.opset_import[0].version == kwargs.get("opset", 17)


def test_from_torch_overloads(tmp_path):
    """mypy types from_torch(nn.GRU) as cygru.GRU and from_torch(nn.GRUCell) as
    cygru.GRUCell (tests/typing/from_torch_overloads.py), so neither needs a cast; torch
    is imported for type checkers only."""
    import_optional("torch")
    rc, out = _mypy(tmp_path, str(ROOT / "tests" / "typing" / "from_torch_overloads.py"))
    assert rc == 0, out
    lines = [line for line in out.splitlines() if "Revealed type" in line]
    assert [line.split("note: ", 1)[1] for line in lines] == [
        'Revealed type is "cygru.modules.GRU"',
        'Revealed type is "cygru.modules.GRUCell"',
        'Revealed type is "cygru.modules.GRU | cygru.modules.GRUCell | '
        'cygru.quantized.QuantizedGRU | cygru.quantized.QuantizedGRUCell"',
    ], out
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, cygru; print('torch' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr


def test_user_mypy_sees_cygru_after_editable_install(installed, tmp_path):
    """The README's install (``pip install -e .``) as a user meets it: a fresh virtual
    environment with cygru installed editable from a copy of the checkout, and mypy run
    from a directory outside the checkout on a user's script. It reported "Cannot find
    implementation or library stub for module named cygru": setuptools installed the
    editable project as an import hook, which mypy cannot follow; pyproject.toml's
    ``package-dir`` makes it a path entry (a .pth file listing the checkout)."""
    python, package_dir = installed("editable")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    entries = sorted(os.listdir(purelib))
    # the mechanism: a path entry naming the checkout, no import hook
    assert not [e for e in entries if "cygru" in e and e.endswith("_finder.py")], entries
    pth = [e for e in entries if e.startswith("__editable__") and e.endswith(".pth")]
    assert len(pth) == 1, entries
    lines = pathlib.Path(purelib, pth[0]).read_text().split()
    assert [pathlib.Path(p).resolve() for p in lines] == [package_dir.parent.resolve()], lines

    user = tmp_path / "user project"
    user.mkdir()
    (user / "script.py").write_text(SCRIPT.read_text())
    (user / "misuse.py").write_text(
        "import numpy as np\n"
        "import cygru\n"
        "out, h_n = cygru.GRU(3, 4)(np.zeros((5, 2, 3)), hx=np.zeros((1, 2, 4)))\n"
        "reveal_type(out)\n"
        "cell: cygru.GRU = cygru.GRUCell(3, 4)\n"
    )

    def mypy(name):
        proc = subprocess.run(
            [str(python), "-m", "mypy", "--strict", "--no-color-output", name],
            cwd=user,
            capture_output=True,
            text=True,
            timeout=300,
            env={**clean_env(), "MYPY_FORCE_COLOR": "0"},
        )
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = mypy("script.py")
    assert rc == 0 and "Success: no issues found in 1 source file" in out, out
    rc, out = mypy("misuse.py")
    assert "Cannot find implementation or library stub" not in out, out
    assert 'misuse.py:4: note: Revealed type is "numpy.ndarray[' in out, out
    assert (
        'misuse.py:5: error: Incompatible types in assignment (expression has type "GRUCell", '
        'variable has type "GRU")' in out
    ), out


def test_annotations_evaluate_on_the_oldest_supported_python():
    """cygru supports Python 3.9, where ``typing.get_type_hints`` cannot evaluate PEP 604
    unions (``int | None``: "unsupported operand type(s) for |"), which ``from __future__
    import annotations`` lets a module write. Every annotation in cygru spells unions with
    ``Optional``/``Union`` (checked in the source, so on any Python running the suite)."""
    import ast

    found = []
    for path in sorted((ROOT / "cygru").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            annotations = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                    if arg is not None and arg.annotation is not None:
                        annotations.append(arg.annotation)
                if node.returns is not None:
                    annotations.append(node.returns)
            elif isinstance(node, ast.AnnAssign):
                annotations.append(node.annotation)
            for ann in annotations:
                if any(
                    isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(ann)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{ann.lineno}: {ast.unparse(ann)}")
    assert not found, found
