"""tools/sanitize.sh itself (the sanitizer runs take minutes and are not part of the suite):
its modes, and the valgrind mode's count of errors in cygru's own code, which once counted
every error with "cygru" anywhere in a path (a virtual environment named
cygru-acceptance made CPython's and SciPy's own errors fail the run)."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from install_helpers import ROOT

SCRIPT = ROOT / "tools" / "sanitize.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args, env=None):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_script_parses_and_documents_every_mode():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    help_text = _run("--help").stdout
    for mode in ("debug", "asan", "ubsan", "tsan", "valgrind"):
        assert f"#   {mode} " in help_text, mode
    assert "libarcher" in help_text and "-fno-sanitize-recover" in help_text
    bad = _run("msan")
    assert bad.returncode == 2
    assert "unknown mode 'msan' (debug, asan, ubsan, tsan, valgrind)" in bad.stderr


def test_valgrind_counts_only_errors_in_the_builds_own_files(tmp_path):
    build = "/tmp/cygru-sanitize-Ab12/valgrind"
    venv = "/home/u/cygru-acceptance/venv"
    log = tmp_path / "valgrind.log"
    log.write_text(
        textwrap.dedent(
            f"""\
            ==77== Memcheck, a memory error detector
            ==77== Command: {venv}/bin/python -m pytest -q tests/test_reliability.py
            ==77==
            ==77== Conditional jump or move depends on uninitialised value(s)
            ==77==    at 0x4A: PyObject_Free (in {venv}/lib/libpython3.11.so.1.0)
            ==77==    by 0x4B: f (in {venv}/lib/python3.11/site-packages/scipy/_lib/x.so)
            ==77==
            ==77== Invalid read of size 8
            ==77==    at 0x4C: strlen (vg_replace_strmem.c:494)
            ==77==    by 0x4D: g (in /home/u/cygru/lib/other.so)
            ==77==  Address 0x1 is 0 bytes after a block of size 8 alloc'd
            ==77==    at 0x4E: malloc (in {build}/cygru/_engine.cpython-311-x86_64-linux-gnu.so)
            ==77==
            ==77== Invalid write of size 4
            ==77==    at 0x4F: __pyx_f_5cygru_7_engine_layer_forward (in {build}/cygru/_engine.cpython-311-x86_64-linux-gnu.so)
            ==77==    by 0x50: PyObject_Call (in {venv}/lib/libpython3.11.so.1.0)
            ==77==
            ==77== Use of uninitialised value of size 8
            ==77==    at 0x51: cygru_work_wait ({build}/cygru/include/cygru_work.h:120)
            ==77==    by 0x52: gru_direction_forward ({build}/cygru/_kernels.c:4242)
            ==77==
            ==77== ERROR SUMMARY: 4 errors from 4 contexts (suppressed: 0 from 0)
            """
        )
    )
    r = _run("--count-valgrind-errors", str(log), build)
    assert r.returncode == 0, r.stderr
    # the two records whose own stack is in the build's files; not the venv's (its path has
    # "cygru" in it), not /home/u/cygru/..., not an allocation stack in a block's details
    assert r.stdout.strip() == "2", (r.stdout, r.stderr)
    assert "Invalid write of size 4" in r.stderr and "Use of uninitialised value" in r.stderr
    assert "Conditional jump" not in r.stderr and "Invalid read" not in r.stderr


@pytest.mark.parametrize("value", ["memory", "yes"])
def test_setup_refuses_an_unknown_sanitizer(value):
    env = dict(os.environ, CYGRU_SANITIZE=value)
    r = subprocess.run(
        [sys.executable, "setup.py", "--name"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert f"CYGRU_SANITIZE={value!r}: expected 1, address, undefined or thread" in r.stderr
