"""Build the example extension against an installed cygru:

    python setup.py build_ext --inplace

``from cygru cimport capi`` needs Cython to find ``cygru/capi.pxd``. Cython looks
for ``.pxd`` files in ``cythonize``'s ``include_path`` and then in ``sys.path``,
never in an Extension's ``include_dirs`` (those are the C compiler's). A normal
install puts the package in site-packages, which is on ``sys.path``; an editable
install (``pip install -e``) does not (an import hook finds the package), so the
directory of the package, ``cygru.get_include()``, goes in ``include_path``: that
works with both. Nothing of cygru is linked: at import, ``stream`` imports
``cygru.capi`` and takes its function pointers.
"""

import cygru
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "stream",
        ["stream.pyx"],
        include_dirs=[numpy.get_include()],  # C headers: numpy's (cimport numpy)
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
    )
]

setup(
    name="cygru-embedding-example",
    ext_modules=cythonize(
        extensions,
        include_path=[cygru.get_include()],  # .pxd files: cygru/capi.pxd
        compiler_directives={"language_level": 3},
    ),
)
