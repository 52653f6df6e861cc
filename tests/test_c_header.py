"""The plain-C interface: cygru/include/cygru.h and the table cygru.capi._C_API.

* The header compiles as strict C99 and C++ (with and without Python.h, one file or
  several sharing one table), and agrees with capi.pxd and cygru.capi: status values,
  struct layouts, the ABI version, and a table entry for every function of capi.pxd,
  in capi.pxd's order (the ctypes mirror of examples/c_extension too).
* Against cygru installed by pip into fresh virtual environments (the session fixture
  ``installed`` of conftest.py, shared with tests/test_embedding.py), without
  PYTHONPATH, the example of examples/c_extension:
  - gru_c.c, a C extension (no Cython) built by setuptools with
    ``cygru.get_include(c_headers=True)``, after a normal and an editable install;
  - threads.c, a C program that embeds Python to make a model and runs it from two
    pthreads without the GIL;
  - ctypes_call.py, the table read and called through ctypes, including a workspace
    that overlaps an argument (CYGRU_ERR_WORKSPACE_ALIAS);
  - gru_c.c compiled against a header of another ABI version (or a larger table)
    fails to import with the message of import_cygru(), not a crash.
"""

import ctypes
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

import cygru
import cygru.capi as capi
from install_helpers import ROOT, clean_env

HEADER_DIR = ROOT / "cygru" / "include"
HEADER = HEADER_DIR / "cygru.h"
EXAMPLE = ROOT / "examples" / "c_extension"
CC = shutil.which("gcc") or shutil.which("cc")
CXX = shutil.which("g++") or shutil.which("c++")

needs_cc = pytest.mark.skipif(CC is None, reason="needs a C compiler")


def _run(cmd, cwd=None, timeout=300):
    """Run a command in a user's environment (no PYTHONPATH); it must succeed."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed "
        f"(rc={proc.returncode}):\n{proc.stdout[-4000:]}\n"
        f"{proc.stderr[-4000:]}"
    )
    return proc


def _parallel(commands, cwd):
    """Run commands side by side (in `cwd`, or each in its own of a list of them);
    [(command, returncode, stdout, stderr)]."""
    cwds = cwd if isinstance(cwd, list) else [cwd] * len(commands)
    procs = [
        subprocess.Popen(
            [str(c) for c in cmd],
            cwd=d,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd, d in zip(commands, cwds)
    ]
    results = []
    for cmd, p in zip(commands, procs):
        out, err = p.communicate(timeout=300)
        results.append((cmd, p.returncode, out, err))
    return results


def _python_config(python):
    """Compiler facts of the interpreter `python`: its include directory, extension
    suffix, library directory, whether libpython is shared, and its pythonX.Y-config."""
    code = (
        "import json, sysconfig as s, os, cygru; b = s.get_config_var('BINDIR'); "
        "v = s.get_config_var('VERSION'); "
        "print(json.dumps(dict(include=s.get_paths()['include'], "
        "ext_suffix=s.get_config_var('EXT_SUFFIX'), libdir=s.get_config_var('LIBDIR'), "
        "shared=bool(s.get_config_var('Py_ENABLE_SHARED')), "
        "linkforshared=s.get_config_var('LINKFORSHARED') or '', "
        "config=[p for p in (os.path.join(b, f'python{v}-config'), "
        "os.path.join(b, 'python3-config')) if os.path.isfile(p)], "
        "c_include=cygru.get_include(c_headers=True))))"
    )
    # run outside any checkout: `python -c` imports from its working directory first
    return json.loads(_run([python, "-c", code], cwd=pathlib.Path(python).parent).stdout)


def _copy_example(tmp_path):
    target = tmp_path / "c_extension"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("build", "*.so", "*.o"))
    return target


# ---------------------------------------------------------------------------------------------
# the header itself, against capi.pxd and cygru.capi (this checkout's build)
# ---------------------------------------------------------------------------------------------


def _pxd_functions():
    """The functions of capi.pxd, in their order."""
    text = (ROOT / "cygru" / "capi.pxd").read_text()
    return re.findall(r"^cdef (?:const char\*|size_t|int) (\w+)\(", text, re.M)


def _pxd_constants():
    text = (ROOT / "cygru" / "capi.pxd").read_text()
    return {k: int(v) for k, v in re.findall(r"^\s+(CYGRU_\w+) = (\d+)", text, re.M)}


def test_header_declares_every_function_in_order():
    """One table entry and one cygru_ wrapper per function of capi.pxd, in its order; the
    status enum holds exactly capi.pxd's statuses (CYGRU_WORK_ALIGN is a #define)."""
    text = HEADER.read_text()
    names = _pxd_functions()
    assert len(names) == 25 and names[0] == "status_message", names
    assert names[13:] == [  # appended after the first release: the table only grows
        "model_prepared_size_f32",
        "model_prepared_size_f64",
        "model_prepare_f32",
        "model_prepare_f64",
        "model_prepared_workspace_size_f32",
        "model_prepared_workspace_size_f64",
        "model_forward_prepared_f32",
        "model_forward_prepared_f64",
        "model_quantized_size",
        "model_quantize",
        "model_quantized_workspace_size",
        "model_forward_quantized",
    ]
    table = text[text.index("typedef struct cygru_api {") : text.index("} cygru_api;")]
    entries = re.findall(r"\(\*(\w+)\)\(", table)
    assert entries == names
    for name in names:
        assert re.search(rf"static inline [\w\s\*]+\bcygru_{name}\(", text), name
    enum = text[text.index("typedef enum cygru_status {") : text.index("} cygru_status;")]
    statuses = {k: int(v) for k, v in re.findall(r"(CYGRU_\w+) = (\d+)", enum)}
    not_statuses = ("CYGRU_WORK_ALIGN", "CYGRU_INT8", "CYGRU_BF16")
    expected = {k: v for k, v in _pxd_constants().items() if k not in not_statuses}
    assert statuses == expected
    assert "#define CYGRU_WORK_ALIGN 8" in text
    precision = text[
        text.index("typedef enum cygru_precision {") : text.index("} cygru_precision;")
    ]
    assert dict(re.findall(r"(CYGRU_\w+) = (\d+)", precision)) == {
        "CYGRU_INT8": "1",
        "CYGRU_BF16": "2",
    }


_PROBE = r"""
#define CYGRU_TYPES_ONLY        /* types and constants only: no Python.h */
#include "cygru.h"
#include <stdio.h>
#define FIELD(s, f) printf("%s %s %zu\n", #s, #f, offsetof(s, f))
#define SIZE(s) printf("%s sizeof %zu\n", #s, sizeof(s))
#define VALUE(c) printf("value %s %ld\n", #c, (long)(c))
int main(void)
{
    cygru_status ok = CYGRU_OK;
%(body)s
    return (int)ok;
}
"""

_FULL_TU = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "cygru.h"
int probe_import(void) { return import_cygru(); }
size_t probe_size(void) { return cygru_model_workspace_size_f32(4, 2, 3, 5, 2, 2); }
"""

_SHARED_A = r"""
#define CYGRU_API_UNIQUE_SYMBOL probe_cygru_api
#include "cygru.h"
int probe_init(void) { return import_cygru(); }
"""

_SHARED_B = r"""
#define CYGRU_API_UNIQUE_SYMBOL probe_cygru_api
#define CYGRU_NO_IMPORT
#include "cygru.h"
const char* probe_message(int status) { return cygru_status_message(status); }
"""


@needs_cc
def test_header_compiles_strictly_and_matches_capi(tmp_path):
    """gcc -std=c99 -Wall -Wextra -Werror (and -pedantic without Python.h), g++ -Wall
    -Wextra -Werror; the layouts, values and table offsets the C compiler sees are those
    of cygru.capi (Cython's structs), and of the ctypes mirror in the example."""
    import sysconfig

    layout = capi._abi_layout()
    api_fields = ["abi_version", "size"] + _pxd_functions()
    body = ["VALUE(CYGRU_ABI_VERSION);", "VALUE(CYGRU_WORK_ALIGN);"]
    body += [f"VALUE({name});" for name in _pxd_constants() if name != "CYGRU_WORK_ALIGN"]
    for struct, (_, fields) in layout.items():
        body.append(f"SIZE({struct});")
        for f in fields or api_fields:
            body.append(f"FIELD({struct}, {f});")
    (tmp_path / "probe.c").write_text(
        _PROBE.replace("%(body)s", "\n".join("    " + line for line in body))
    )
    (tmp_path / "full.c").write_text(_FULL_TU)
    (tmp_path / "a.c").write_text(_SHARED_A)
    (tmp_path / "b.c").write_text(_SHARED_B)
    inc = ["-I", HEADER_DIR, "-I", sysconfig.get_paths()["include"]]
    strict = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
    commands = [
        [CC, *strict, "-pedantic", "-I", HEADER_DIR, "probe.c", "-o", "probe"],
        [CC, *strict, *inc, "-c", "full.c", "-o", "full.o"],
        [CC, *strict, *inc, "-fPIC", "-c", "a.c", "-o", "a.o"],
        [CC, *strict, *inc, "-fPIC", "-c", "b.c", "-o", "b.o"],
    ]
    if CXX:
        commands += [
            [
                CXX,
                "-x",
                "c++",
                "-Wall",
                "-Wextra",
                "-Werror",
                *inc,
                "-c",
                "full.c",
                "-o",
                "full_cpp.o",
            ],
            [
                CXX,
                "-x",
                "c++",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-I",
                HEADER_DIR,
                "probe.c",
                "-o",
                "probe_cpp",
            ],
        ]
    for cmd, rc, out, err in _parallel(commands, tmp_path):
        assert rc == 0, f"{' '.join(map(str, cmd))}:\n{out}\n{err}"
    # several files, one table: links, and the table is one symbol
    _run([CC, "-shared", "a.o", "b.o", "-o", "libshared.so"], cwd=tmp_path)
    nm = shutil.which("nm")
    if nm:
        symbols = _run([nm, "-D", "--defined-only", "libshared.so"], cwd=tmp_path).stdout
        assert re.search(r"\bprobe_cygru_api\b", symbols)

    outputs = [_run([tmp_path / "probe"]).stdout]
    if CXX:
        outputs.append(_run([tmp_path / "probe_cpp"]).stdout)
    for out in outputs:
        seen = {}
        values = {}
        for line in out.splitlines():
            a, b, c = line.split()
            if a == "value":
                values[b] = int(c)
            else:
                seen.setdefault(a, {})[b] = int(c)
        assert values.pop("CYGRU_ABI_VERSION") == capi.ABI_VERSION
        assert values.pop("CYGRU_WORK_ALIGN") == capi.WORK_ALIGN
        assert values == {k: v for k, v in _pxd_constants().items() if k != "CYGRU_WORK_ALIGN"}
        assert values["CYGRU_ERR_WORKSPACE_ALIAS"] == capi.ERR_WORKSPACE_ALIAS
        for struct, (size, fields) in layout.items():
            c_fields = dict(seen[struct])
            assert c_fields.pop("sizeof") == size, struct
            if fields is not None:
                assert c_fields == fields, struct
        # the table: one pointer per entry after the two header fields, in order
        offsets = [seen["cygru_api"][f] for f in api_fields]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)

    # the ctypes mirror of the example has the header's layout
    spec = importlib.util.spec_from_file_location(
        "cygru_ctypes_example", EXAMPLE / "ctypes_call.py"
    )
    mirror = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mirror)
    assert mirror.ABI_VERSION == capi.ABI_VERSION
    assert ctypes.sizeof(mirror.CygruApi) == layout["cygru_api"][0]
    assert [name for name, _ in mirror.CygruApi._fields_] == api_fields
    for name in api_fields:
        assert getattr(mirror.CygruApi, name).offset == seen["cygru_api"][name], name


def test_capsule_and_get_include():
    """cygru.capi._C_API is the named capsule; get_include(c_headers=True) has cygru.h."""
    assert type(capi._C_API).__name__ == "PyCapsule"
    assert 'capsule object "cygru.capi._C_API"' in repr(capi._C_API)
    assert isinstance(capi.ABI_VERSION, int) and capi.ABI_VERSION >= 1
    assert f"#define CYGRU_ABI_VERSION {capi.ABI_VERSION}\n" in HEADER.read_text()
    include = pathlib.Path(cygru.get_include(c_headers=True))
    assert include == pathlib.Path(cygru.__file__).parent / "include"
    assert (include / "cygru.h").is_file()
    assert pathlib.Path(cygru.get_include()) == include.parent.parent
    assert '"include/*.h"' in (ROOT / "pyproject.toml").read_text()


# ---------------------------------------------------------------------------------------------
# against an installed cygru, without PYTHONPATH
# ---------------------------------------------------------------------------------------------


def _max_diffs(out):
    return [float(m) for m in re.findall(r"max \|C - Python\|: (\S+)", out)]


@needs_cc
@pytest.mark.parametrize("kind", ["normal", "editable"])
def test_c_extension_example(installed, tmp_path, kind):
    """examples/c_extension: gru_c.c, plain C, built by its setup.py against the installed
    cygru's header, runs a 2-layer bidirectional model like cygru.GRU (run.py)."""
    python, package_dir = installed(kind)
    example = _copy_example(tmp_path)
    config = _python_config(python)
    assert pathlib.Path(config["c_include"]) == package_dir / "include"
    assert (package_dir / "include" / "cygru.h").is_file()
    build = _run([python, "setup.py", "build_ext", "--inplace"], cwd=example)
    assert str(package_dir / "include") in build.stdout, build.stdout[-3000:]
    out = _run([python, "run.py"], cwd=example).stdout
    diffs = _max_diffs(out)
    assert len(diffs) == 2 and max(diffs) <= 1e-6, out
    assert "a length of 10 > T: cygru: a sequence length is outside [1, T] (status 3)" in out, out


@needs_cc
def test_c_program_runs_a_model_from_two_threads(installed, tmp_path):
    """examples/c_extension/threads.c, built with pythonX.Y-config --embed: Python makes the
    model, two pthreads run it at once without the GIL, 200 times each, bit-identical
    every time, and equal to cygru.GRU on the same input."""
    python, package_dir = installed("normal")
    config = _python_config(python)
    if not config["config"]:
        pytest.skip("no pythonX.Y-config for this interpreter")
    py_config = config["config"][0]
    cflags = _run([py_config, "--cflags", "--embed"]).stdout.split()
    ldflags = _run([py_config, "--ldflags", "--embed"]).stdout.split()
    # a shared libpython: find it at run time; a static one: export its symbols to the
    # extension modules the program loads (cygru's, NumPy's)
    rpath = (
        [f"-Wl,-rpath,{config['libdir']}"] if config["shared"] else config["linkforshared"].split()
    )
    example = _copy_example(tmp_path)
    _run(
        [
            CC,
            *cflags,
            "-I",
            config["c_include"],
            "threads.c",
            "-o",
            "threads",
            *ldflags,
            *rpath,
            "-lpthread",
        ],
        cwd=example,
    )
    out = _run([example / "threads", python], cwd=tmp_path, timeout=120).stdout
    assert f"cygru: {package_dir / '__init__.py'}" in out, out

    T, B, I, H, L, D = 7, 3, 5, 6, 2, 2
    gru = cygru.GRU(I, H, num_layers=L, bidirectional=True, seed=0)
    lengths = [[T, 3, 5], [2, T, 4]]
    for k in range(2):
        assert f"thread {k}: status 0 (ok), 200 of 200 runs identical" in out, out
        got = {
            name: np.array(
                re.search(rf"^{name} {k}: (.*)$", out, re.M).group(1).split(), np.float32
            )
            for name in ("output", "h_n")
        }
        x = (((37 * np.arange(T * B * I) + 11 * k) % 101 - 50) / 64).astype(np.float32)
        ref_out, ref_hn = gru(x.reshape(T, B, I), lengths=lengths[k])
        np.testing.assert_allclose(got["output"].reshape(ref_out.shape), ref_out, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got["h_n"].reshape(ref_hn.shape), ref_hn, rtol=0, atol=1e-6)


def test_ctypes_caller(installed, tmp_path):
    """examples/c_extension/ctypes_call.py: the table through ctypes, model_forward_f32 on
    NumPy buffers, a workspace overlapping x refused with CYGRU_ERR_WORKSPACE_ALIAS, and
    frames streamed through model_forward_prepared_f32 with cygru.GRU's bits."""
    python, package_dir = installed("normal")
    example = _copy_example(tmp_path)
    out = _run(
        [
            python,
            "-c",
            "import runpy, cygru; print('cygru:', cygru.__file__); "
            "runpy.run_path('ctypes_call.py', run_name='__main__')",
        ],
        cwd=example,
    ).stdout
    assert f"cygru: {package_dir / '__init__.py'}" in out, out
    assert "status 0 ok" in out, out
    diffs = _max_diffs(out)
    assert len(diffs) == 2 and max(diffs) <= 1e-6, out
    assert (
        f"overlapping workspace: status {capi.ERR_WORKSPACE_ALIAS} "
        f"{capi.status_name(capi.ERR_WORKSPACE_ALIAS)} | output untouched: True"
    ) in out
    assert "prepared frames: status 0 | bit-identical to cygru.GRU: True" in out, out


@needs_cc
def test_abi_mismatch_is_an_import_error(installed, tmp_path):
    """gru_c.c compiled against a cygru.h of another ABI version, or with a larger table
    than the installed cygru provides, fails to import with import_cygru()'s message
    (and no crash); compiled the same way against the installed header, it imports."""
    python, package_dir = installed("normal")
    config = _python_config(python)
    text = (package_dir / "include" / "cygru.h").read_text()
    version = capi.ABI_VERSION
    headers = {
        "same": text,
        "version": text.replace(
            f"#define CYGRU_ABI_VERSION {version}\n", f"#define CYGRU_ABI_VERSION {version + 98}\n"
        ),
        "larger": text.replace("} cygru_api;", "    void (*added_later)(void);\n} cygru_api;"),
    }
    assert headers["version"] != text and headers["larger"] != text
    commands = []
    for case, header in headers.items():
        (tmp_path / case / "include").mkdir(parents=True)
        (tmp_path / case / "include" / "cygru.h").write_text(header)
        commands.append(
            [
                CC,
                "-shared",
                "-fPIC",
                "-I",
                tmp_path / case / "include",
                "-I",
                config["include"],
                EXAMPLE / "gru_c.c",
                "-o",
                tmp_path / case / f"gru_c{config['ext_suffix']}",
            ]
        )
    for cmd, rc, out, err in _parallel(commands, tmp_path):
        assert rc == 0, f"{' '.join(map(str, cmd))}:\n{out}\n{err}"
    imports = _parallel(
        [[python, "-c", "import gru_c; print('imported')"]] * len(headers),
        [tmp_path / case for case in headers],
    )
    for case, (_, rc, out, err) in zip(headers, imports):
        if case == "same":
            assert rc == 0 and "imported" in out, err
            continue
        assert rc == 1, (case, rc, err)  # an exception, not a signal
        assert "ImportError: cygru C API: " in err, err
        if case == "version":
            assert (
                f"compiled against cygru.h with ABI version {version + 98}, but the "
                f"installed cygru provides ABI version {version}; rebuild the "
                "extension against the installed cygru"
            ) in err, err
        else:
            assert "upgrade cygru, or rebuild the extension" in err, err


def test_workspace_sizes_too_large_are_zero_not_wrapped():
    """Sizes whose workspace would exceed 2^61 bytes are invalid (0), never a size_t
    that wrapped around to a small number. (Found by a hostile review:
    model_workspace_size_f64(2**31-1, 1, 1, 2**29-1, 3, 1) returned 51,539,607,744.)"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ctypes_call", EXAMPLE / "ctypes_call.py")
    mirror = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mirror)
    api = mirror.load_api()
    big = 2**31 - 1
    assert api.model_workspace_size_f64(big, 1, 1, 2**29 - 1, 3, 1) == 0
    # (the packed weights of a batch above DOT_MAX_B rows: 3H*H floats; a smaller batch
    # packs nothing and its workspace of T ints is a true, if large, size)
    assert api.model_workspace_size_f32(big // 16, 16, 1, 2**29 - 1, 1, 1) == 0
    assert 0 < api.model_workspace_size_f32(big, 1, 1, 2**29 - 1, 1, 1) < 2**40
    assert api.layer_workspace_size_f64(big // 16, 16, 1, 2**29 - 1, 1) == 0
    assert api.cell_workspace_size_f64(big, 2**29 - 1) == 0
    assert api.cell_workspace_size_f32(big, 2**29 - 1) == 0
    # sizes that fit still get their (exact, positive) size
    assert api.model_workspace_size_f32(100, 32, 256, 256, 2, 2) > 0
    assert api.cell_workspace_size_f64(32, 256) > 0


@pytest.mark.parametrize("bad", ["False", "no", 2, [0], None])
def test_get_include_c_headers_must_be_a_boolean(bad):
    """A string or a number is refused (c_headers="False" used to mean True)."""
    import cygru

    with pytest.raises(TypeError, match="c_headers must be True or False"):
        cygru.get_include(c_headers=bad)
