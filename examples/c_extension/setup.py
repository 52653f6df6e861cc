"""Build the plain-C example extension against an installed cygru:

    python setup.py build_ext --inplace

``gru_c.c`` includes ``cygru.h``, which lives in the directory
``cygru.get_include(c_headers=True)`` (inside the installed package, after a normal
or an editable install). Nothing of cygru is linked: at import, ``gru_c`` calls
``import_cygru()``, which imports ``cygru.capi`` and takes its function table.
Neither Cython nor NumPy's headers are needed.
"""

import cygru
from setuptools import Extension, setup

setup(
    name="cygru-c-extension-example",
    ext_modules=[
        Extension(
            "gru_c",
            ["gru_c.c"],
            include_dirs=[cygru.get_include(c_headers=True)],  # cygru.h
        )
    ],
)
