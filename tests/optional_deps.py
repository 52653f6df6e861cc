"""Importing the optional dependencies the tests use: a test (or a test module) that needs
one is skipped, with the reason, when it cannot be imported, never stops the collection.

``pytest.importorskip`` skips only a package that is not installed (ModuleNotFoundError,
before pytest 8.2's ``exc_type``): a package that is installed but broken, say a
``distributed`` too old for the installed ``dask`` ("cannot import name
'collections_to_dsk' from 'dask.base'"), raises ImportError from it, and at module level
that stops pytest's collection of the whole suite. Use :func:`import_optional` instead
(tests/test_packaging.py checks that no test calls ``pytest.importorskip``).
"""

import importlib

import pytest


def import_optional(name, reason=None):
    """The module ``name``, imported; skip the calling test (or the test module, at module
    level) when the import raises any ImportError (or any other exception: a broken install
    such as mismatched keras and jax can raise AttributeError or RuntimeError while it
    imports), with the error in the reason."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, and what a broken install raises at import
        top = name.partition(".")[0]
        if isinstance(exc, ModuleNotFoundError) and exc.name in (name, top):
            why = f"{name} is not installed"
        else:
            why = (
                f"{name} is installed but cannot be imported ({type(exc).__name__}: {exc}); "
                "check the environment with `pip check`, or install the pinned versions: "
                "pip install -e '.[test]' -c .ci/constraints.txt"
            )
        pytest.skip(why if reason is None else f"{reason} ({why})", allow_module_level=True)
