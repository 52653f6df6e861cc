"""Build cygru's Cython extensions.

Compiler directives are set once here. Set CYGRU_DEBUG=1 at build time to turn
bounds checking, wraparound and initialisation checks back on (and keep asserts and
debug symbols), e.g. `CYGRU_DEBUG=1 pip install --no-build-isolation -e .`. A normal
build is stripped of debug information (see compile_args below).
"""

import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CYGRU_DEBUG", "0") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# -fno-trapping-math lets GCC turn the selects of the float32 activations
# (cygru/include/cygru_fastmath.h) into SIMD blends; it changes no result.
# A release build carries no debug information: -g0 (last, so it overrides the -g that
# Python's own CFLAGS usually bring) and the linker's -S (strip debug sections) shrink the
# compiled modules about fivefold. Debug information stays with CYGRU_DEBUG=1, with
# CYGRU_SANITIZE=1 (tools/sanitize.sh) and when CFLAGS asks for it (CFLAGS="-g": an
# optimised build for a profiler).
# CYGRU_SANITIZE (tools/sanitize.sh): 1 or "address" (AddressSanitizer), "undefined"
# (UBSan, every report fatal), "thread" (ThreadSanitizer). CYGRU_OPENMP_LIB, a directory
# holding LLVM's libomp: link the OpenMP module to it instead of GCC's libgomp (only
# _cpu uses OpenMP, for omp_get_max_threads; the engine's threads are its own pool, so
# tools/sanitize.sh no longer needs it). Neither is for a release build.
SANITIZE = os.environ.get("CYGRU_SANITIZE", "")
SANITIZE = {"": "", "0": "", "1": "address"}.get(SANITIZE, SANITIZE)
if SANITIZE not in ("", "address", "undefined", "thread"):
    sys.exit(f"setup.py: CYGRU_SANITIZE={SANITIZE!r}: expected 1, address, undefined or thread")
OPENMP_LIB = os.environ.get("CYGRU_OPENMP_LIB", "")
STRIP = not (
    DEBUG or SANITIZE or "-g" in os.environ.get("CFLAGS", "").split() or sys.platform == "win32"
)
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
compile_args += ["-g0"] if STRIP else []
link_args = ["-Wl,-S"] if STRIP else []
if SANITIZE:
    flags = {
        "address": ["-fsanitize=address"],
        "undefined": ["-fsanitize=undefined", "-fno-sanitize-recover=all"],
        "thread": ["-fsanitize=thread"],
    }[SANITIZE]
    compile_args += flags + ["-fno-omit-frame-pointer"]
    link_args += flags


def ext(name, openmp=False, extra_compile_args=()):
    omp = ["-fopenmp"] if openmp else []
    # GCC emits libgomp's entry points (GOMP_*), which LLVM's libomp also provides
    omp_link = omp
    if openmp and OPENMP_LIB:
        omp_link = [f"-L{OPENMP_LIB}", f"-Wl,-rpath,{OPENMP_LIB}", "-lomp", "-pthread"]
    return Extension(
        f"cygru.{name}",
        [f"cygru/{name}.pyx"],
        include_dirs=[np.get_include(), "cygru/include"],
        # the C kernels: an edit of a header alone rebuilds the extensions
        depends=sorted(glob.glob("cygru/include/*.h")),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args + omp + list(extra_compile_args),
        extra_link_args=omp_link + link_args,
    )


setup(
    ext_modules=cythonize(
        [
            ext("_blas"),
            ext("_kernels"),
            ext("_engine"),
            ext("_cpu", openmp=True),
            # capi fills cygru.h's function table: a signature that differs from the
            # header's must stop the build (GCC < 14 and Clang only warn by default)
            ext("capi", extra_compile_args=["-Werror=incompatible-pointer-types"]),
        ],
        compiler_directives=directives,
        show_all_warnings=False,
    ),
)
