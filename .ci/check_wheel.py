"""Check a built cygru wheel's contents and print its size.

Usage: python .ci/check_wheel.py DIST/cygru-*.whl

Fails (exit 1, saying why) when the wheel ships Cython-generated C, lacks the files that
downstream builds need (.pxd, cygru.h) or the license, or holds compiled modules with
debug information (a normal build is stripped; see setup.py).
"""

import os
import struct
import sys
import zipfile


def elf_sections(data):
    """Names of the sections of a 64- or 32-bit ELF file's bytes (empty if not ELF)."""
    if data[:4] != b"\x7fELF":
        return []
    is64, little = data[4] == 2, data[5] == 1
    end = "<" if little else ">"
    if is64:
        (shoff,) = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
        fmt, name_at, off_at = end + "I", 0, 0x18
        off_fmt = end + "Q"
    else:
        (shoff,) = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
        fmt, name_at, off_at = end + "I", 0, 0x10
        off_fmt = end + "I"
    strtab = shoff + shstrndx * shentsize
    (str_off,) = struct.unpack_from(off_fmt, data, strtab + off_at)
    names = []
    for i in range(shnum):
        at = shoff + i * shentsize
        (name,) = struct.unpack_from(fmt, data, at + name_at)
        start = str_off + name
        names.append(data[start : data.index(b"\0", start)].decode())
    return names


def main(path):
    problems = []
    with zipfile.ZipFile(path) as whl:
        infos = whl.infolist()
        names = [i.filename for i in infos]
        generated = [n for n in names if n.startswith("cygru/") and n.endswith((".c", ".cpp"))]
        if generated:
            problems.append(f"generated C in the wheel: {generated}")
        for needed in ("cygru/_kernels.pxd", "cygru/capi.pxd", "cygru/include/cygru.h"):
            if needed not in names:
                problems.append(f"missing {needed} (downstream builds cimport/include it)")
        for needed in (
            "cygru/dask/__init__.py",
            "cygru/dask/_inference.py",
            "cygru/dask/_training.py",
        ):
            if needed not in names:
                problems.append(f"missing {needed} (the cygru.dask subpackage)")
        if not any(
            n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
            for n in names
        ):
            problems.append("no LICENSE in the wheel's .dist-info")
        compiled = [n for n in names if n.endswith((".so", ".pyd"))]
        if len(compiled) < 4:
            problems.append(f"expected 4 compiled modules, found {compiled}")
        for n in compiled:
            debug = [s for s in elf_sections(whl.read(n)) if s.startswith(".debug")]
            if debug:
                problems.append(f"{n} carries debug sections {debug} (expected a stripped build)")
        unpacked = sum(i.file_size for i in infos)
        print(
            f"wheel {os.path.basename(path)}: {os.path.getsize(path) / 1e6:.2f} MB, "
            f"{unpacked / 1e6:.2f} MB unpacked, {len(infos)} files"
        )
        for i in sorted(infos, key=lambda i: -i.file_size)[:6]:
            print(f"  {i.file_size / 1e6:8.3f} MB  {i.filename}")
    for p in problems:
        print("wheel check FAILED: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python .ci/check_wheel.py path/to/cygru-*.whl")
    sys.exit(main(sys.argv[1]))
