"""Packaging: one version, the license, what the installed package holds, the extras and
CI's constraints, and the message of an import from an unbuilt checkout."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import cygru

from install_helpers import clean_env
from optional_deps import import_optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
tomllib = import_optional("tomllib")  # Python >= 3.11


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_has_one_source():
    project = pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "cygru._version.__version__"
    text = (ROOT / "cygru" / "_version.py").read_text()
    assert re.fullmatch(r'__version__ = "\d+\.\d+\.\d+\S*"\n', text), text
    assert cygru.__version__ == re.search(r'"(.*)"', text).group(1)


def test_license_file_and_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "The cygru developers" in text
    project = pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(project["urls"])


def test_extras_leave_a_users_torch_alone_and_ci_pins_it():
    project = pyproject()["project"]
    for extra, reqs in project["optional-dependencies"].items():
        exact = [r for r in reqs if "==" in r]
        assert not exact, f"extra {extra!r} pins {exact}: pins belong in .ci/constraints.txt"
    pins = dict(
        line.split("==")
        for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["torch"] == "2.13.0"
    readme = (ROOT / "README.md").read_text()
    test_command = readme.split("<!-- test-command -->")[1].split("```")[1]
    assert "-c .ci/constraints.txt" in test_command
    assert "sphinx-copybutton" in project["optional-dependencies"]["docs"]


def test_extra_requirements_script_prints_an_extra():
    out = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "extra_requirements.py"), "docs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == pyproject()["project"]["optional-dependencies"]["docs"]
    bad = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "extra_requirements.py"), "nope"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "no extra 'nope'" in bad.stderr


def _requirement(text):
    from packaging.requirements import Requirement  # pytest's own dependency

    return Requirement(text)


def test_dask_extras_resolve_to_a_matching_pair():
    """Every extra with Dask asks for dask[distributed] (whose own extra pins the distributed
    of the same release) with lower bounds on both, and CI pins the same release of both.
    (Unbounded "dask[array]" + "distributed" once resolved to dask 2026.11.0 with
    distributed 2021.4.1, which cannot be imported beside it.)"""
    from packaging.version import Version

    extras = pyproject()["project"]["optional-dependencies"]
    with_dask = {name: reqs for name, reqs in extras.items() if any("dask" in r for r in reqs)}
    assert {"test", "dask", "docs"} <= set(with_dask)
    for name, reqs in with_dask.items():
        parsed = {r.name: r for r in map(_requirement, reqs)}
        dask, distributed = parsed["dask"], parsed["distributed"]
        assert {"array", "distributed"} <= dask.extras, (name, str(dask))
        for req in (dask, distributed):
            lows = [s for s in req.specifier if s.operator == ">="]
            assert lows and Version(lows[0].version) >= Version("2026.8.0"), (name, str(req))
    pins = dict(
        line.split("==")
        for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["dask"] == pins["distributed"] == "2026.8.0"
    for reqs in with_dask.values():  # the pins satisfy the extras' bounds
        for req in map(_requirement, reqs):
            if req.name in ("dask", "distributed"):
                assert pins[req.name] in req.specifier, str(req)


def _check_imports_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_imports", ROOT / ".ci" / "check_imports.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_imports_knows_every_requirement_of_every_extra():
    """.ci/check_imports.py has an import check for each package an extra installs (a new
    dependency without one makes it fail), dask[distributed] included."""
    check_imports = _check_imports_module()
    extras = pyproject()["project"]["optional-dependencies"]
    for extra in [*extras, "lint"]:
        names = check_imports.requirement_names(extra, extras)
        assert names and set(names) <= set(check_imports.IMPORTS), (extra, names)
    assert "distributed:Client" in check_imports.IMPORTS["distributed"]
    assert "dask.array" in check_imports.IMPORTS["dask"]


def _write_broken_distributed(where):
    """A package named distributed that is installed but fails on import as distributed
    2021.4.1 does beside dask 2026.11.0."""
    pkg = where / "distributed"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'collections_to_dsk' from 'dask.base'\")\n"
    )


def test_check_imports_fails_on_a_broken_install_that_pip_check_passes(tmp_path):
    import_optional("dask")
    script = str(ROOT / ".ci" / "check_imports.py")
    env = clean_env()
    ok = subprocess.run(
        [sys.executable, script, "dask"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    if ok.returncode != 0:
        import_optional("distributed")  # not installed here: skip; installed: the failure
        import_optional("threadpoolctl")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    distributed: distributed:Client" in ok.stdout
    _write_broken_distributed(tmp_path / "shadow")
    env["PYTHONPATH"] = str(tmp_path / "shadow")
    bad = subprocess.run(
        [sys.executable, script, "dask"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL  distributed: distributed: ImportError: cannot import name" in bad.stdout
    assert "1 import(s) of the dask dependencies failed" in bad.stderr
    assert "collections_to_dsk" in bad.stderr
    nope = subprocess.run([sys.executable, script, "nope"], capture_output=True, text=True)
    assert nope.returncode == 1 and "no extra 'nope'" in nope.stderr


def test_ci_checks_after_every_install():
    """.ci/run follows every pip install with check_install (pip check, then the import
    check of what it installed), the README's commands included (their install part runs
    first, then the checks, then the rest)."""
    lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    code = [l for l in lines if l and not l.startswith("#")]
    installs = [
        i
        for i, l in enumerate(code)
        if ("pip install" in l and not l.startswith(("echo", "if", "#")) and "!=" not in l)
        or l == 'bash -euo pipefail -c "$install"'
    ]
    assert len(installs) >= 5, installs
    for i in installs:
        assert code[i + 1].startswith("check_install "), (code[i], code[i + 1])
    assert 'run_readme_command "$main_cmd"' in code
    assert 'run_readme_command "$test_cmd" test' in code
    assert any(l.startswith("check_install python test docs") for l in code)
    assert '"$py" -m pip check || {' in " ".join(code)


def test_a_broken_optional_dependency_skips_the_tests_that_need_it(tmp_path):
    """A test module that needs an optional package which is installed but raises
    ImportError (not ModuleNotFoundError) is skipped with the error as the reason; pytest
    collects and runs the rest. (pytest.importorskip raised there and stopped the whole
    collection.)"""
    _write_broken_distributed(tmp_path / "site")
    shutil.copy(ROOT / "tests" / "optional_deps.py", tmp_path / "optional_deps.py")
    (tmp_path / "test_needs_it.py").write_text(
        textwrap.dedent(
            """\
            from optional_deps import import_optional

            distributed = import_optional("distributed")


            def test_uses_it():
                raise AssertionError("never runs")
            """
        )
    )
    (tmp_path / "test_inside.py").write_text(
        textwrap.dedent(
            """\
            from optional_deps import import_optional


            def test_needs_it_inside():
                import_optional("distributed.client")
                raise AssertionError("never runs")


            def test_needs_a_missing_one():
                import_optional("cygru_no_such_package", reason="needs the nothing extra")
                raise AssertionError("never runs")


            def test_other():
                assert True
            """
        )
    )
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), str(tmp_path)])
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-rs",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            f"--junitxml={tmp_path / 'report.xml'}",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "error" not in out.lower().replace("importerror", ""), out
    import xml.etree.ElementTree as ET

    suite = ET.parse(tmp_path / "report.xml").getroot().find("testsuite")
    assert suite.get("errors") == "0" and suite.get("failures") == "0", out
    assert int(suite.get("skipped")) == 3 and int(suite.get("tests")) == 4, out
    skips = {
        c.get("classname").rpartition(".")[2] + "::" + c.get("name"): c.find("skipped").get(
            "message"
        )
        for c in suite.iter("testcase")
        if c.find("skipped") is not None
    }
    # the module-level skip: pytest's -rs summary gives its reason
    assert "::test_needs_it" in skips
    broken = "distributed is installed but cannot be imported (ImportError: cannot import name"
    summary = [l for l in run.stdout.splitlines() if l.startswith("SKIPPED")]
    assert any(broken in l and "collections_to_dsk" in l for l in summary), out
    inside = skips["test_inside::test_needs_it_inside"]
    assert "distributed.client is installed but cannot be imported" in inside, inside
    assert "collections_to_dsk" in inside
    missing = skips["test_inside::test_needs_a_missing_one"]
    assert missing == "needs the nothing extra (cygru_no_such_package is not installed)", missing


def test_no_test_calls_pytest_importorskip():
    """Tests import their optional dependencies with optional_deps.import_optional, which
    also skips an installed package that fails to import (see its docstring)."""
    offenders = [
        f"{p.name}:{i}"
        for p in sorted((ROOT / "tests").glob("**/*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "pytest.importorskip(" in line and p.name != "test_packaging.py"
    ]
    assert not offenders, offenders


def test_unbuilt_checkout_says_what_to_run(tmp_path):
    """A copy of the package without its compiled modules, as in a fresh clone. (-S: no
    site-packages, where an editable install's import hook would find another cygru; the
    package fails before it imports anything from there.)"""
    shutil.copytree(
        ROOT / "cygru",
        tmp_path / "cygru",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"),
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", "import cygru"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: cygru's compiled modules are not built"), proc.stderr
    assert str(tmp_path / "cygru") in last
    assert "pip install -e ." in last and "python setup.py build_ext --inplace" in last
    assert "circular import" not in proc.stderr


def test_broken_compiled_module_names_it(tmp_path):
    """A compiled module that exists but cannot load (here: not a shared library)."""
    shutil.copytree(
        ROOT / "cygru",
        tmp_path / "cygru",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"),
    )
    import importlib.machinery

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (tmp_path / "cygru" / f"_cpu{suffix}").write_bytes(b"not a shared library")
    proc = subprocess.run(
        [sys.executable, "-S", "-c", "import cygru"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert f"compiled module _cpu{suffix}" in last and "failed to load" in last, proc.stderr
    assert "rebuild" in last


def test_installed_package_contents(installed):
    """`pip install .` of a copy of this checkout (tests/install_helpers.py): the package
    holds the compiled modules, .pxd and .h files, the .pyx sources and py.typed, and no
    generated C; its metadata holds the license and the version of cygru/_version.py."""
    python, package_dir = installed("normal")
    files = {
        p.relative_to(package_dir).as_posix()
        for p in package_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert not [f for f in files if f.endswith((".c", ".cpp", ".html"))], sorted(files)
    for needed in (
        "_kernels.pxd",
        "_engine.pxd",
        "capi.pxd",
        "_blas.pxd",
        "include/cygru.h",
        "include/cygru_gemm_t.h",
        "include/cygru_dot.h",
        "include/cygru_dot_t.h",
        "capi.pyx",
        "_gru_kernels.cu",
        "_version.py",
        "py.typed",
    ):
        assert needed in files, needed
    compiled = sorted(f.split(".")[0] for f in files if f.endswith((".so", ".pyd")))
    assert compiled == ["_blas", "_cpu", "_engine", "_kernels", "capi"], compiled
    dist_info = [p for p in package_dir.parent.glob("cygru-*.dist-info")]
    assert len(dist_info) == 1
    licenses = list(dist_info[0].rglob("LICENSE"))
    assert licenses and licenses[0].read_text() == (ROOT / "LICENSE").read_text()
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, cygru; "
            "print(m.version('cygru'), cygru.__version__, m.metadata('cygru')['License-Expression'])",
        ],
        cwd=os.path.dirname(str(python)),
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    ).stdout.split()
    assert out == [cygru.__version__, cygru.__version__, "BSD-3-Clause"]
