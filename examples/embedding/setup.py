"""Build the example extension against an installed cygru:

    python setup.py build_ext --inplace

``cygru.get_include()`` is the directory that holds the ``cygru`` package, so
``from cygru cimport capi`` finds ``cygru/capi.pxd``; nothing of cygru is linked:
at import, ``stream`` imports ``cygru.capi`` and takes its function pointers.
"""
import cygru
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "stream",
        ["stream.pyx"],
        include_dirs=[cygru.get_include(), numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
    )
]

setup(
    name="cygru-embedding-example",
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
)
