"""Sphinx configuration of cygru's documentation site.

Build (warnings are errors; the gallery in ``examples/`` is executed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Every example on the pages is a ``.. doctest::`` block; ``tests/test_docs.py`` executes them
(and every docstring example of the API), and so does ``python -m sphinx -b doctest docs
<dir>``.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

try:  # an installed cygru (pip install -e .) wins; otherwise the built checkout
    import cygru
except ImportError:
    sys.path.insert(0, ROOT)
    import cygru

# -- project ------------------------------------------------------------------------------------
project = "cygru"
author = "the cygru developers"
copyright = "the cygru developers, BSD-3-Clause"
release = cygru.__version__
version = ".".join(release.split(".")[:2])

# -- extensions (no intersphinx: the build needs no network) -----------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "matplotlib.sphinxext.plot_directive",
]

# -- sphinx-copybutton: copy code without prompts or outputs --------------------------------
# ">>> " and "... " (doctest), "$ " (shell); lines without a prompt (outputs) are left out
# of what is copied in blocks that have prompts, and copied whole in blocks that have none.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
copybutton_remove_prompts = True

# -- matplotlib's plot directive (the Performance page's chart, drawn from its JSON) ---------
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
# SVG: the chart scales to the width of the text column (a phone's too) and stays sharp
plot_formats = [("svg", 110)]
plot_rcparams = {"savefig.bbox": "tight"}

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "py:obj"

# -- autodoc / autosummary / numpydoc ----------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_use_plots = False

# -- doctest (python -m sphinx -b doctest docs <dir>): the flags tests/test_docs.py uses --------
import doctest as _doctest  # noqa: E402

doctest_default_flags = _doctest.ELLIPSIS | _doctest.NORMALIZE_WHITESPACE
doctest_test_doctest_blocks = "default"

# -- sphinx-gallery: docs/examples/plot_*.py, executed at build time ---------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "write_computation_times": False,
    "remove_config_comments": True,
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "plot_gallery": "True",
}

# matplotlib: no display needed
os.environ.setdefault("MPLBACKEND", "agg")

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"cygru {release}"
html_theme_options = {
    "navbar_align": "left",
    # index.rst's toctree puts the pages a reader looks for first (API reference and
    # Performance among them) ahead of the rest: these are in the top bar itself, the rest
    # under its "More" menu. tools/check_docs_html.py checks the built navbar.
    "header_links_before_dropdown": 6,
    "show_prev_next": True,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# The primary (left) sidebar shows a section's sub-pages. cygru's pages are flat (one
# level under the top bar), so it would be an empty "Section Navigation" box that only
# narrows the text: no left sidebar, except where a section has sub-pages (the API
# reference's entries, the gallery's examples). The right one keeps the page's contents.
html_sidebars = {
    os.path.splitext(name)[0]: []
    for name in os.listdir(HERE)
    if name.endswith(".rst") and name != "api.rst"
}
html_show_sourcelink = False
html_copy_source = False
html_static_path = ["_static"]
html_css_files = ["cygru.css"]


# -- tables: cells that hold a number (0.205 ms, 3.3x, 1.05-1.8x) never wrap --------------------
# (cygru.css: td.cygru-num { white-space: nowrap }); tools/check_docs_html.py checks the HTML.
_NUMBER_CELL = re.compile(
    r"[~≈<>±+\-−]?\d[\d.,]*(?:\s*[-–]\s*\d[\d.,]*)?\s*"
    r"(?:x|×|%|ms|µs|us|ns|s|GFLOP/s|GB/s|[KMG]i?B)?\*?|—"
)


def _mark_number_cells(app, doctree, docname):
    from docutils import nodes

    for entry in doctree.findall(nodes.entry):
        if _NUMBER_CELL.fullmatch(entry.astext().strip()):
            entry["classes"].append("cygru-num")


def setup(app):
    app.connect("doctree-resolved", _mark_number_cells)
