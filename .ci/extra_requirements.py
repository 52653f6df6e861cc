"""Print the requirements of one of cygru's extras, one per line, from pyproject.toml.

    python -m pip install $(python .ci/extra_requirements.py docs) -c .ci/constraints.txt

installs an extra's dependencies into an environment that already has cygru (an editable
install, say) without reinstalling cygru itself: `pip install -e ".[docs]"` would rebuild
and recompile the package. Needs Python >= 3.11 (tomllib).
"""

import pathlib
import sys
import tomllib

if len(sys.argv) != 2:
    sys.exit("usage: python .ci/extra_requirements.py EXTRA")
pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
if sys.argv[1] not in extras:
    sys.exit(f"no extra {sys.argv[1]!r} in pyproject.toml; there are: {', '.join(extras)}")
print("\n".join(extras[sys.argv[1]]))
