"""Import every package that one or more of cygru's extras installed; fail, saying which and
why, if any cannot be imported.

    python .ci/check_imports.py test            # after pip install -e ".[test]" ...
    python .ci/check_imports.py docs lint

`pip check` alone misses a broken pair: distributed 2021.4.1 declares ``dask>=2021.04.0``,
which dask 2026.11.0 satisfies, and then fails to import ``collections_to_dsk`` from
``dask.base``. CI (.ci/run) runs `pip check` and this script after each install it does.

The requirements come from pyproject.toml's extras (and ``lint``: the linters CI installs);
each requirement's name is mapped below to what must import. A requirement without an entry
is an error, so a new dependency cannot go unchecked. Needs Python >= 3.11 (tomllib).
"""

import importlib
import os
import pathlib
import re
import sys
import tomllib

# requirement name (normalised: lower case, "-" for "_" and ".") -> what must import: a
# module, or "module:attribute" for a name the package must provide
IMPORTS = {
    "pytest": ["pytest"],
    "hypothesis": ["hypothesis"],
    "torch": ["torch"],
    "onnx": ["onnx", "onnx.reference"],
    "onnxruntime": ["onnxruntime"],
    "openvino": ["openvino", "openvino:Core"],
    "onnxscript": ["onnxscript"],
    "cython": ["Cython", "Cython.Build:cythonize"],
    "setuptools": ["setuptools"],
    "matplotlib": ["matplotlib", "matplotlib.pyplot"],
    "threadpoolctl": ["threadpoolctl:ThreadpoolController"],
    "keras": ["keras"],  # on JAX (KERAS_BACKEND below), as the tests run it
    "jax": ["jax", "jaxlib", "jax.numpy"],
    "dask": ["dask", "dask.array", "dask.base"],
    "distributed": ["distributed", "distributed:Client", "distributed:LocalCluster"],
    "mypy": ["mypy", "mypy.api"],
    "g2p-en": ["g2p_en:G2p"],  # its import asks nltk for data: offline, it only warns
    "sleepecg": ["sleepecg:load_classifier", "sleepecg:extract_features"],
    "cupy-cuda12x": ["cupy"],
    "sphinx": ["sphinx", "sphinx.application"],
    "pydata-sphinx-theme": ["pydata_sphinx_theme"],
    "numpydoc": ["numpydoc"],
    "sphinx-gallery": ["sphinx_gallery", "sphinx_gallery.gen_gallery"],
    "sphinx-copybutton": ["sphinx_copybutton"],
    "ruff": ["ruff"],
    "cython-lint": ["cython_lint"],
}
# dask's extras that install packages of their own (dask[distributed] installs distributed)
DASK_EXTRAS = {"distributed": "distributed"}
# the linters CI installs (.ci/run's lint step; not an extra of cygru)
LINT = ["ruff", "cython-lint"]


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(extra, extras):
    """The normalised names of the distributions an extra installs directly."""
    if extra == "lint":
        return list(LINT)
    if extra not in extras:
        sys.exit(
            f"check_imports.py: no extra {extra!r} in pyproject.toml; there are: "
            f"{', '.join(extras)} (and 'lint')"
        )
    names = []
    for req in extras[extra]:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[([^\]]*)\])?", req)
        if m is None:
            sys.exit(f"check_imports.py: cannot read the requirement {req!r} of extra {extra!r}")
        name = normalise(m.group(1))
        names.append(name)
        if name == "dask" and m.group(3):
            for sub in m.group(3).split(","):
                if normalise(sub.strip()) in DASK_EXTRAS:
                    names.append(DASK_EXTRAS[normalise(sub.strip())])
    return names


def check(target):
    """None if `target` ("module" or "module:attribute") imports, else the reason."""
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
        if attr:
            getattr(mod, attr)
    except Exception as exc:  # noqa: BLE001 - any failure is what we report
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv):
    if not argv:
        sys.exit("usage: python .ci/check_imports.py EXTRA [EXTRA ...]")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    names = []
    for extra in argv:
        for n in requirement_names(extra, extras):
            if n not in names:
                names.append(n)
    unmapped = [n for n in names if n not in IMPORTS]
    if unmapped:
        sys.exit(
            f"check_imports.py: no import check for {unmapped}: add what each must import "
            "to IMPORTS in .ci/check_imports.py"
        )
    failures = []
    for name in names:
        for target in IMPORTS[name]:
            why = check(target)
            if why is None:
                print(f"ok    {name}: {target}")
            else:
                print(f"FAIL  {name}: {target}: {why}")
                failures.append((name, target, why))
                break  # the package's other checks would fail the same way
    if failures:
        print(
            f"\ncheck_imports.py: {len(failures)} import(s) of the {' + '.join(argv)} "
            "dependencies failed, though pip installed them:",
            file=sys.stderr,
        )
        for name, target, why in failures:
            print(f"  {name}: import {target}: {why}", file=sys.stderr)
        print(
            "Install matching versions (pip install ... -c .ci/constraints.txt) and see "
            "`pip check`; a pair such as dask and distributed must come from the same release.",
            file=sys.stderr,
        )
        return 1
    print(f"check_imports.py: every {' + '.join(argv)} dependency imports ({len(names)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
