"""Packaging: one version, the license, what the installed package holds, the extras and
CI's constraints, and the message of an import from an unbuilt checkout."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import cygru

from install_helpers import clean_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


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
