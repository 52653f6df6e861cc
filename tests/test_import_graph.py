"""cygru's import graph points only down: no module imports, directly or through others,
a module that imports it (DESIGN.md §2; docs/architecture.rst, "Import graph").

Every import statement counts, wherever it is: at module level, inside a function (a lazy
import is still an edge: it runs whenever that function does), under ``if TYPE_CHECKING:``
(type checkers follow it, and ``typing.get_type_hints`` needs the name at run time), and
the ``import`` / ``cimport`` lines of the Cython sources (.pyx, .pxd). The graph is read
from the source with :mod:`ast` (nothing is imported), so a cycle is found even in code no
test runs.

Edges, for a module ``m`` of the package:

* ``import p.q.r`` and ``from p.q.r import name``: an edge to ``p.q.r``, where ``p`` is the
  package; relative imports are resolved against ``m``'s package;
* ``from p.q import name``: an edge to ``p.q.name`` when that is a module (a submodule
  import), else to ``p.q`` (a name its ``__init__`` defines);
* importing a module of a subpackage also runs the subpackage's ``__init__``: an edge to
  every package above the target, except the packages that hold ``m`` itself (their
  ``__init__`` is already running when ``m`` is) and the top package;
* the top package ``cygru`` (cygru/__init__.py) is above every module: it may import any of
  them, and no module may import it (``import cygru``, ``from cygru import name``,
  ``from . import name`` of a name its ``__init__`` defines), even where that closes no
  cycle of explicit edges (every submodule import runs cygru/__init__ first, so the edge
  up is a circle through the package that holds the module).
"""

from __future__ import annotations

import ast
import pathlib
import re
import textwrap
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "cygru"

#: importer -> {imported module: [where, ...]}, where = "path:line: statement"
Graph = Dict[str, Dict[str, List[str]]]

_SOURCE_SUFFIXES = (".py", ".pyx", ".pxd")


def _module_name(path: pathlib.Path, base: pathlib.Path) -> str:
    """cygru/interop/_common.py -> cygru.interop._common; cygru/interop/__init__.py ->
    cygru.interop; cygru/_engine.pyx and .pxd -> cygru._engine."""
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_sources(base: pathlib.Path, package: str) -> Dict[str, List[pathlib.Path]]:
    """{module name: its source files} for every .py, .pyx and .pxd under base/package,
    recursively (a .pyx and its .pxd are one module)."""
    modules: Dict[str, List[pathlib.Path]] = {}
    for path in sorted((base / package).rglob("*")):
        if path.suffix in _SOURCE_SUFFIXES and path.is_file():
            modules.setdefault(_module_name(path, base), []).append(path)
    return modules


def _is_package(name: str, modules: Dict[str, List[pathlib.Path]]) -> bool:
    return any(p.name == "__init__.py" for p in modules.get(name, ()))


def _resolve(importer: str, is_package: bool, level: int, module: Optional[str]) -> str:
    """The absolute module name of ``from <level dots><module> import ...`` in `importer`."""
    if level == 0:
        return module or ""
    parts = importer.split(".")
    if not is_package:
        parts.pop()  # a plain module's package
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def _imports_of_python(path: pathlib.Path) -> Iterator[Tuple[int, int, Optional[str], List[str]]]:
    """(line, level, module, names) of every import statement in a .py file, at any depth
    (functions, classes, ``if TYPE_CHECKING:``, ``try``); ``import a.b`` is (line, 0, None,
    ["a.b"])."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node.lineno, 0, None, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.level, node.module, [a.name for a in node.names]


_CYTHON_FROM = re.compile(r"^\s*from\s+(\.*)([\w.]*)\s+c?import\s+(.*)$")
_CYTHON_IMPORT = re.compile(
    r"^\s*c?import\s+([\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*)\s*$"
)


def _imports_of_cython(path: pathlib.Path) -> Iterator[Tuple[int, int, Optional[str], List[str]]]:
    """As :func:`_imports_of_python` for a .pyx/.pxd, from its ``import`` / ``cimport`` lines
    (a parenthesised name list may span lines); lines of docstrings that happen to read
    like imports are not told apart, so do not write them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].split("#")[0]
        lineno = i + 1
        i += 1
        m = _CYTHON_FROM.match(line)
        if m:
            names_text = m.group(3)
            if "(" in names_text:
                while ")" not in names_text and i < len(lines):
                    names_text += " " + lines[i].split("#")[0]
                    i += 1
            names = [
                n.split()[0]
                for n in names_text.replace("(", " ").replace(")", " ").split(",")
                if n.strip()
            ]
            yield lineno, len(m.group(1)), m.group(2) or None, names
            continue
        m = _CYTHON_IMPORT.match(line)
        if m:
            yield lineno, 0, None, [n.split()[0] for n in m.group(1).split(",")]


def import_graph(base: pathlib.Path, package: str) -> Graph:
    """The package's internal import edges (see the module docstring)."""
    modules = package_sources(base, package)
    graph: Graph = {name: {} for name in modules}

    def add(importer: str, target: str, where: str) -> None:
        wheres = graph[importer].setdefault(target, [])
        if where not in wheres:  # once per statement, not per name it imports
            wheres.append(where)
        # a module of a subpackage runs the subpackage's __init__ first
        parts = target.split(".")
        for k in range(2, len(parts)):
            above = ".".join(parts[:k])
            if not (importer == above or importer.startswith(above + ".")):
                via = f"{where} (runs {above.replace('.', '/')}/__init__.py)"
                wheres = graph[importer].setdefault(above, [])
                if via not in wheres:
                    wheres.append(via)

    for importer, paths in modules.items():
        is_package = _is_package(importer, modules)
        for path in paths:
            reader = _imports_of_python if path.suffix == ".py" else _imports_of_cython
            source_lines = path.read_text(encoding="utf-8").splitlines()
            for lineno, level, module, names in reader(path):
                rel = path.relative_to(base).as_posix()
                where = f"{rel}:{lineno}: {source_lines[lineno - 1].strip()}"
                if module is None and level == 0:  # import a.b.c
                    for name in names:
                        if name == package or name.startswith(package + "."):
                            add(importer, name, where)
                    continue
                base_name = _resolve(importer, is_package, level, module)
                if not (base_name == package or base_name.startswith(package + ".")):
                    continue
                for name in names:
                    sub = f"{base_name}.{name}"
                    target = sub if sub in modules else base_name
                    if target != importer:  # a .pyx cimporting its own .pxd
                        add(importer, target, where)
    return graph


def find_cycles(graph: Graph) -> List[Tuple[List[str], List[str]]]:
    """(one cycle, a list of modules with first == last; all the modules of its strongly
    connected component) per component of more than one module, found by Tarjan's
    algorithm; [] for a graph that points only down."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack = set()
    components: List[List[str]] = []
    counter = [0]

    def connect(v: str) -> None:  # recursion depth = module count: small
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # shortest path start -> ... -> start inside the component (breadth first)
        parent: Dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, ())):
                    if w not in members:
                        continue
                    if w == start:
                        found = v
                        break
                    if w not in parent:
                        parent[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v != start:
            path.append(v)
            v = parent[v]
        path.append(start)
        path.reverse()
        cycles.append((path, component))
    return cycles


def describe_cycle(graph: Graph, cycle: List[str], component: List[str]) -> str:
    """A cycle as its modules and, per edge, the import statements that make it; then the
    other modules caught in circles with them, if any."""
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        lines.append(f"  {a} -> {b}:")
        lines.extend(f"      {where}" for where in graph[a][b])
    others = sorted(set(component) - set(cycle))
    if others:
        lines.append("  more modules on circles through these: " + ", ".join(others))
    return "\n".join(lines)


def imports_of_top(graph: Graph, package: str) -> List[str]:
    """Every import statement by which a module of `package` imports the top package
    itself (its __init__)."""
    return [
        f"{importer} -> {package}: {where}"
        for importer, targets in sorted(graph.items())
        if importer != package
        for where in targets.get(package, ())
    ]


def check(base: pathlib.Path, package: str) -> List[str]:
    """The problems of `package`'s import graph, each described: cycles and imports of
    the top package; [] when the graph points only down."""
    graph = import_graph(base, package)
    problems = [
        "import cycle: " + describe_cycle(graph, cycle, component)
        for cycle, component in find_cycles(graph)
    ]
    problems += [
        "a module imports the top package, which is above every module: " + up
        for up in imports_of_top(graph, package)
    ]
    return problems


# ---------------------------------------------------------------------------------------------
# cygru itself
# ---------------------------------------------------------------------------------------------


def test_cygru_import_graph_points_only_down():
    problems = check(ROOT, PACKAGE)
    assert not problems, "\n\n".join(problems)


def test_the_graph_sees_every_kind_of_import():
    """The reader finds what the rule is about in cygru's own sources: the package's
    imports of its submodules, subpackage __init__ edges, lazy imports inside functions,
    and Cython cimports (if any of these broke silently the cycle test would pass
    vacuously)."""
    graph = import_graph(ROOT, PACKAGE)
    modules = package_sources(ROOT, PACKAGE)
    # every source file under cygru/, subpackages included, is a node
    assert set(graph) == set(modules)
    assert "cygru.interop._common" in graph and "cygru.interop" in graph
    assert "cygru.modules" in graph["cygru"]  # from .modules import GRU, ...
    assert "cygru._cpu" in graph["cygru"]  # from . import _cpu (inside a function)
    assert "cygru.modules" in graph["cygru.interop._keras"]  # from ..modules import GRU
    assert "cygru._blas" in graph["cygru._kernels"]  # from cygru._blas cimport ...
    assert "cygru._kernels" in graph["cygru._engine"]  # a multi-line cimport
    assert "cygru._engine" in graph["cygru._cpu"]
    assert "cygru._arrays" in graph["cygru.capi"]  # from cygru import _arrays as A
    assert "cygru._engine" in graph["cygru._cupy"]  # a lazy import inside a method


def test_the_low_layers_import_only_lower_ones():
    """The layering docs/architecture.rst describes ("Import graph"), as edges that must
    not turn around."""
    graph = import_graph(ROOT, PACKAGE)
    # types: nothing of cygru, so typing.get_type_hints never needs an import cycle
    assert graph["cygru._typing"] == {}
    assert graph["cygru._errors"] == {}
    # device conversion below both the checks and the GPU backend
    assert set(graph["cygru._device"]) == {"cygru._errors"}
    assert "cygru._device" in graph["cygru._arrays"] and "cygru._device" in graph["cygru._cupy"]
    assert "cygru._cupy" not in graph["cygru._arrays"]
    assert "cygru._arrays" not in graph["cygru._cupy"]
    # the ONNX writer below the modules; the modules never import the converters
    assert set(graph["cygru._onnx"]) <= {"cygru._backend", "cygru._device", "cygru._typing"}
    assert "cygru._onnx" in graph["cygru.modules"]
    assert not any(t.startswith("cygru.interop") for t in graph["cygru.modules"])
    assert "cygru._arrays" in graph["cygru.functional"]


#: docs/architecture.rst's "Import graph" list, top first: a module (or a package with all
#: its modules) imports only modules of its own entry or of entries further down
DOCUMENTED_LAYERS = (
    ("cygru", "cygru.__main__"),
    (
        "cygru.interop",
        "cygru.torch",
        "cygru.jax",
        "cygru.onnxruntime",
        "cygru.dask",
        "cygru.optim",
        "cygru._gradcheck",
        "cygru.capi",
    ),
    ("cygru.quantized", "cygru.modules"),
    ("cygru.functional", "cygru._threads"),
    ("cygru._cpu", "cygru._cupy", "cygru._engine", "cygru._kernels", "cygru._blas"),
    ("cygru._onnx", "cygru._arrays"),
    (
        "cygru._device",
        "cygru._errors",
        "cygru._backend",
        "cygru._reference",
        "cygru._version",
        "cygru._typing",
    ),
)


def _documented_layer(module: str) -> Optional[int]:
    for k, entry in enumerate(DOCUMENTED_LAYERS):
        for name in entry:
            if module == name or (name != PACKAGE and module.startswith(name + ".")):
                return k
    return None


def test_the_graph_follows_the_documented_layers():
    """Every module is in the documented list, and every import points to its own entry
    or further down (a new module belongs on the list, in the docs and here)."""
    graph = import_graph(ROOT, PACKAGE)
    unplaced = sorted(m for m in graph if _documented_layer(m) is None)
    assert not unplaced, f"modules missing from docs/architecture.rst's import graph: {unplaced}"
    upward = [
        f"{a} (entry {_documented_layer(a) + 1}) -> {b} (entry {_documented_layer(b) + 1}): "
        + "; ".join(graph[a][b])
        for a in sorted(graph)
        for b in sorted(graph[a])
        if _documented_layer(b) < _documented_layer(a)
    ]
    assert not upward, "\n".join(upward)


# ---------------------------------------------------------------------------------------------
# the checker itself, on synthetic packages
# ---------------------------------------------------------------------------------------------


def _write_package(base: pathlib.Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


_CLEAN = {
    "pkg/__init__.py": """\
        from .high import top
        from . import low
        """,
    "pkg/low.py": """\
        import os

        def f():
            return os.sep
        """,
    "pkg/mid.py": """\
        from typing import TYPE_CHECKING

        from .low import f
        if TYPE_CHECKING:
            from . import low

        def g():
            from pkg import low as again  # a submodule: not the top package
            return again.f()
        """,
    "pkg/high.py": """\
        from . import mid
        from .sub import conv

        def top():
            import pkg.mid
            return pkg.mid.g()
        """,
    "pkg/sub/__init__.py": """\
        from .conv import convert
        """,
    "pkg/sub/conv.py": """\
        from .. import mid
        from ._util import helper

        def convert():
            return mid.g()
        """,
    "pkg/sub/_util.py": """\
        from ..low import f as helper
        """,
    "pkg/_fast.pyx": """\
        from pkg._fast cimport thing
        from pkg._lower cimport (a,
            b)
        import numpy as np
        """,
    "pkg/_fast.pxd": """\
        from pkg._lower cimport a
        """,
    "pkg/_lower.pxd": """\
        cdef int a
        """,
}


def test_a_package_without_cycles_passes(tmp_path):
    _write_package(tmp_path, _CLEAN)
    graph = import_graph(tmp_path, "pkg")
    assert set(graph) == {
        "pkg",
        "pkg.low",
        "pkg.mid",
        "pkg.high",
        "pkg.sub",
        "pkg.sub.conv",
        "pkg.sub._util",
        "pkg._fast",
        "pkg._lower",
    }
    assert graph["pkg.high"].keys() == {"pkg.mid", "pkg.sub.conv", "pkg.sub"}
    assert graph["pkg.mid"].keys() == {"pkg.low"}
    # inside pkg.sub, importing a sibling does not add an edge to pkg.sub's own __init__
    assert graph["pkg.sub.conv"].keys() == {"pkg.mid", "pkg.sub._util"}
    assert graph["pkg._fast"].keys() == {"pkg._lower"}  # its own .pxd: no self edge
    assert check(tmp_path, "pkg") == []


@pytest.mark.parametrize(
    "extra, cycle",
    [
        # a lazy import inside a function closes the circle
        (
            {"pkg/low.py": "def f():\n    from .high import top\n    return top\n"},
            "pkg.high -> pkg.mid -> pkg.low -> pkg.high",
        ),
        # under TYPE_CHECKING, absolute
        (
            {
                "pkg/low.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    import pkg.sub.conv\n"
                "def f():\n    return 1\n"
            },
            "pkg.low -> pkg.sub.conv -> pkg.mid -> pkg.low",
        ),
        # a subpackage module importing a name of its own package's __init__
        (
            {"pkg/sub/_util.py": "from . import convert as helper\n"},
            "pkg.sub -> pkg.sub.conv -> pkg.sub._util -> pkg.sub",
        ),
        # a .pxd cimporting a module that cimports it back
        (
            {"pkg/_lower.pxd": "from pkg._fast cimport thing\ncdef int a\n"},
            "pkg._fast -> pkg._lower -> pkg._fast",
        ),
    ],
    ids=["lazy", "type-checking", "subpackage-init", "cython"],
)
def test_a_cycle_is_found_and_printed(tmp_path, extra, cycle):
    _write_package(tmp_path, {**_CLEAN, **extra})
    problems = check(tmp_path, "pkg")
    assert len(problems) == 1, problems
    assert problems[0].startswith("import cycle: " + cycle + "\n"), problems[0]
    # every edge of the cycle is shown with the statement that makes it
    for a, b in zip(cycle.split(" -> "), cycle.split(" -> ")[1:]):
        assert f"  {a} -> {b}:\n" in problems[0], problems[0]
    with pytest.raises(AssertionError, match="import cycle: " + re.escape(cycle)):
        problems = check(tmp_path, "pkg")
        assert not problems, "\n\n".join(problems)


def test_a_lazy_cycle_names_its_file_and_line(tmp_path):
    _write_package(
        tmp_path,
        {
            **_CLEAN,
            "pkg/low.py": "import os\n\n\ndef f():\n    from . import high\n    return high\n",
        },
    )
    (problem,) = check(tmp_path, "pkg")
    assert "pkg/low.py:5: from . import high" in problem, problem


@pytest.mark.parametrize(
    "statement",
    ["import pkg", "from pkg import top", "from . import top", "from .. import top"],
)
def test_importing_the_top_package_is_refused(tmp_path, statement):
    """An import of the top package from below is refused even where no explicit edge
    leads back (pkg/__init__ never imports the module): cygru/__init__ is the top."""
    where = "pkg/lone/late.py" if statement.startswith("from ..") else "pkg/lone.py"
    files = {**_CLEAN, where: f"def late():\n    {statement}\n    return 1\n"}
    if where == "pkg/lone/late.py":
        files["pkg/lone/__init__.py"] = ""
    _write_package(tmp_path, files)
    problems = check(tmp_path, "pkg")
    assert len(problems) == 1, problems
    assert "imports the top package" in problems[0], problems[0]
    assert f"{where}:2: {statement}" in problems[0], problems[0]
