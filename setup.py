"""Build cygru's Cython extensions.

Compiler directives are set once here. Set CYGRU_DEBUG=1 at build time to turn
bounds checking, wraparound and initialisation checks back on (and keep asserts and
debug symbols), e.g. `CYGRU_DEBUG=1 pip install --no-build-isolation -e .`.
"""
import os

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
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
if os.environ.get("CYGRU_SANITIZE"):
    compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer"]


def ext(name, openmp=False):
    omp = ["-fopenmp"] if openmp else []
    return Extension(
        f"cygru.{name}",
        [f"cygru/{name}.pyx"],
        include_dirs=[np.get_include(), "cygru/include"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args + omp,
        extra_link_args=omp + (["-fsanitize=address"] if os.environ.get("CYGRU_SANITIZE") else []),
    )


setup(
    ext_modules=cythonize(
        [ext("_blas"), ext("_kernels"), ext("_cpu", openmp=True), ext("capi")],
        compiler_directives=directives,
        show_all_warnings=False,
    ),
)
