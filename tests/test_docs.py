"""Every example in the documentation runs, and prints what the documentation says.

Two sources of examples are executed here, without Sphinx (so these tests run with the
``[test]`` extra alone):

* every ``.. doctest::`` block of the pages ``docs/*.rst``. Blocks of one page share their
  names in the order they appear, per doctest *group* (the directive's argument, as in
  ``sphinx.ext.doctest``). The groups ``torch`` and ``onnx`` need optional packages
  (``GROUP_REQUIRES``); only those groups are skipped where the packages are missing,
  everything else on the page still runs. A ``>>>`` line outside a ``.. doctest::`` block
  is an error: no example on the site may escape these tests.
* every docstring example of cygru's public modules (``doctest.DocTestFinder``); an example
  that imports torch, onnx or onnxruntime is skipped where that package is missing.

Outputs are compared with ``ELLIPSIS | NORMALIZE_WHITESPACE``, the flags ``docs/conf.py``
gives ``sphinx.ext.doctest`` too (``python -m sphinx -b doctest docs <dir>`` runs the same
page examples through Sphinx).
"""

import doctest
import importlib
import importlib.util
import os
import pathlib
import re
import textwrap

import pytest

from optional_deps import import_optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# doctest group -> packages it needs (any other group needs nothing beyond cygru's own)
GROUP_REQUIRES = {
    "torch": ("torch",),
    "onnx": ("onnx", "onnxruntime"),
    "keras": ("keras", "jax"),
    "jax": ("jax",),
    "torch_onnx": ("torch", "onnx", "onnxruntime", "onnxscript"),
}
OPTIONAL_PACKAGES = ("torch", "onnx", "onnxruntime", "keras")

DOCSTRING_MODULES = (
    "cygru",
    "cygru.modules",
    "cygru.quantized",
    "cygru.functional",
    "cygru._gradcheck",
    "cygru._threads",
    "cygru.optim",
    "cygru.interop",
    "cygru.interop._torch",
    "cygru.interop._keras",
    "cygru.interop._onnx_import",
    "cygru.interop._onnx_export",
)
# modules that import an optional package themselves: their docstrings are tested when it
# imports (module -> package)
OPTIONAL_DOCSTRING_MODULES = {"cygru.torch": "torch", "cygru.onnxruntime": "onnxruntime"}


def _importable(package):
    try:
        importlib.import_module(package)
    except Exception:  # not installed, or broken: optional_deps' rule
        return False
    return True


def _docstring_modules():
    return list(DOCSTRING_MODULES) + [
        m for m, package in OPTIONAL_DOCSTRING_MODULES.items() if _importable(package)
    ]


PAGES = sorted(p for p in DOCS.glob("*.rst"))


# ---------------------------------------------------------------------------------------------
# the .rst pages
# ---------------------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r"^(?P<indent>[ ]*)\.\. doctest::[ ]*(?P<groups>.*?)[ ]*$")


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def doctest_blocks(text):
    """``[(groups, first_line_number, source, line_numbers_covered)]`` for every
    ``.. doctest::`` block of an rst text (line numbers are 1-based)."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            i += 1
            continue
        base = len(m.group("indent"))
        groups = [g.strip() for g in m.group("groups").split(",") if g.strip()] or ["default"]
        start = i
        i += 1
        # directive options (":hide:", ":options: ...") come first, then a blank line
        while i < len(lines) and lines[i].strip().startswith(":") and _indent(lines[i]) > base:
            i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        body_start = i
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            i += 1
        body = lines[body_start:i]
        while body and not body[-1].strip():
            body.pop()
        blocks.append(
            (groups, body_start + 1, textwrap.dedent("\n".join(body)), range(start + 1, i + 1))
        )
    return blocks


def _page_groups():
    params = []
    for page in PAGES:
        groups = []
        for gs, *_ in doctest_blocks(page.read_text(encoding="utf-8")):
            for g in gs:
                if g not in groups:
                    groups.append(g)
        for g in groups:
            params.append(pytest.param(page, g, id=f"{page.name}[{g}]"))
    return params


def _require(packages):
    for name in packages:
        if name == "keras":  # the examples run Keras on JAX (the test extra installs it)
            os.environ.setdefault("KERAS_BACKEND", "jax")
        import_optional(name)


def _run(test):
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=report.append, clear_globs=False)
    if result.failed:
        pytest.fail("".join(report), pytrace=False)
    return result


@pytest.mark.parametrize("page, group", _page_groups())
def test_page_examples(page, group):
    """All blocks of one group of one page run in one namespace, in page order."""
    _require(GROUP_REQUIRES.get(group, ()))
    parser = doctest.DocTestParser()
    text = page.read_text(encoding="utf-8")
    examples = []
    for groups, lineno, source, _ in doctest_blocks(text):
        if group not in groups:
            continue
        for ex in parser.get_examples(source, f"{page.name}:{lineno}"):
            ex.lineno += lineno - 1  # report the page's own line numbers
            examples.append(ex)
    assert examples, f"{page.name}: group {group!r} has no examples"
    test = doctest.DocTest(
        examples, {"__name__": "__main__"}, f"{page.name}[{group}]", str(page), 0, text
    )
    result = _run(test)
    assert result.attempted == len(examples)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_no_example_outside_doctest_blocks(page):
    """A ``>>>`` prompt outside ``.. doctest::`` would be shown on the site but never run."""
    text = page.read_text(encoding="utf-8")
    covered = set()
    for *_, lines in doctest_blocks(text):
        covered.update(lines)
    stray = [
        n
        for n, line in enumerate(text.splitlines(), 1)
        if line.lstrip().startswith(">>>") and n not in covered
    ]
    assert not stray, f"{page.name}: '>>>' outside a '.. doctest::' block at lines {stray}"


def test_pages_have_examples():
    """The pages that explain the library all carry executed examples."""
    for name in (
        "index.rst",
        "getting_started.rst",
        "concepts.rst",
        "gradients.rst",
        "interop.rst",
    ):
        page = DOCS / name
        assert page.is_file(), name
        assert doctest_blocks(page.read_text(encoding="utf-8")), f"{name} has no examples"


def test_block_parser():
    text = textwrap.dedent("""\
        Intro.

        .. doctest:: torch

           >>> 1 + 1
           2

        .. doctest::
           :options: +ELLIPSIS

           >>> print("abc")
           a...

        After.
        """)
    blocks = doctest_blocks(text)
    assert [b[0] for b in blocks] == [["torch"], ["default"]]
    assert blocks[0][2] == ">>> 1 + 1\n2"
    assert blocks[1][2] == '>>> print("abc")\na...'


# ---------------------------------------------------------------------------------------------
# the API's docstrings
# ---------------------------------------------------------------------------------------------


def _docstring_tests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    params = []
    for modname in _docstring_modules():
        module = importlib.import_module(modname)
        for test in finder.find(module, modname):
            if test.examples:
                params.append(pytest.param(test, id=test.name))
    return params


def _needed_optional(test):
    source = "\n".join(ex.source for ex in test.examples)
    return [
        p
        for p in OPTIONAL_PACKAGES
        if re.search(rf"^\s*(import|from)\s+{p}\b", source, re.M)
        or re.search(rf"^\s*import\s+.*\b{p}\b", source, re.M)
    ]


DOCSTRING_TESTS = _docstring_tests()


@pytest.mark.parametrize("test", DOCSTRING_TESTS)
def test_docstring_examples(test):
    _require(_needed_optional(test))
    # with no globals of the module's own: an example runs as a user who copies it runs it,
    # so it must import what it uses (a name only the module has, such as its private
    # ``_os``, fails here)
    test.globs = {"__name__": "__main__"}
    _run(test)


def test_public_api_has_examples():
    """Every public function and class of cygru shows a runnable example."""
    import cygru
    import cygru.functional

    names = {t.values[0].name for t in DOCSTRING_TESTS}
    public = [
        f"cygru.{n}" for n in cygru.__all__ if n not in ("functional", "optim", "__version__")
    ]
    public += ["cygru.functional.gru", "cygru.functional.gru_cell"]
    qualified = {
        "cygru.from_torch": "cygru.interop._torch.from_torch",
        "cygru.from_keras": "cygru.interop._keras.from_keras",
        "cygru.from_onnx": "cygru.interop._onnx_import.from_onnx",
        "cygru.to_onnx": "cygru.interop._onnx_export.to_onnx",
        "cygru.gradcheck": "cygru._gradcheck.gradcheck",
        "cygru.get_num_threads": "cygru._threads.get_num_threads",
        "cygru.set_num_threads": "cygru._threads.set_num_threads",
        "cygru.GRU": "cygru.modules.GRU",
        "cygru.GRUCell": "cygru.modules.GRUCell",
        "cygru.IncompatibleKeys": "cygru.modules.IncompatibleKeys",
        "cygru.quantize": "cygru.quantized.quantize",
        "cygru.QuantizedGRU": "cygru.quantized.QuantizedGRU",
        "cygru.QuantizedGRUCell": "cygru.quantized.QuantizedGRUCell",
    }
    missing = [
        n for n in public if n != "cygru.GradcheckError" and qualified.get(n, n) not in names
    ]
    assert not missing, f"public names without a docstring example: {missing}"


def test_public_methods_have_examples():
    """Every public method of cygru's public classes (the modules, the optimizers,
    cygru.capi.ExportedWeights, cygru.dask.DataParallelTrainer), inherited ones included,
    shows a runnable example, and a docstring test of its module runs it (here, or in
    tests/test_embedding.py for cygru.capi and tests/test_dask.py for cygru.dask)."""
    import inspect

    import cygru
    import cygru.capi
    from cygru import optim

    classes = [cygru.GRU, cygru.GRUCell, optim.Optimizer, optim.SGD, optim.Adam, optim.AdamW]
    classes += [cygru.QuantizedGRU, cygru.QuantizedGRUCell]
    classes.append(cygru.capi.ExportedWeights)
    modules = _docstring_modules() + ["cygru.capi"]
    if "cygru.torch" in modules:
        import cygru.torch

        classes += [cygru.torch.GRU, cygru.torch.GRUCell]
    if "cygru.onnxruntime" in modules:
        import cygru.onnxruntime

        classes.append(cygru.onnxruntime.InferenceSession)
    try:
        import cygru.dask
    except ImportError:  # the optional extra is missing: its class is not public here
        pass
    else:
        classes.append(cygru.dask.DataParallelTrainer)
        modules.append("cygru.dask")
    finder = doctest.DocTestFinder(exclude_empty=True)
    run = set()
    for modname in modules:
        run |= {t.docstring for t in finder.find(importlib.import_module(modname), modname)}
    checked, missing = [], []
    for cls in classes:
        for name in dir(cls):
            if name.startswith("_"):
                continue
            owner = next(k for k in cls.__mro__ if name in vars(k))
            value = inspect.getattr_static(cls, name)
            if not owner.__module__.startswith("cygru") or not inspect.isroutine(value):
                continue
            doc = value.__doc__ or ""
            checked.append(f"{cls.__qualname__}.{name}")
            if ">>>" not in doc or inspect.cleandoc(doc) not in {
                inspect.cleandoc(d or "") for d in run
            }:
                missing.append(f"{owner.__module__}.{owner.__qualname__}.{name}")
    assert {"SGD.step", "Adam.load_state_dict", "ExportedWeights.forward"} <= set(checked)
    assert not missing, f"public methods without a docstring example: {sorted(set(missing))}"


def test_api_page_lists_every_public_name():
    import cygru

    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    entries = set(re.findall(r"^\s+~?([\w.]+)\s*$", text, re.M))
    for name in cygru.__all__:
        if name in ("functional", "optim", "__version__"):
            continue
        assert name in entries, f"api.rst does not list cygru.{name}"
    assert {"gru", "gru_cell"} <= entries
