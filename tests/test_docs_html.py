"""The built documentation site: what ``sphinx-build -W`` does not catch (issue 22.7).

tools/check_docs_html.py holds the checks; CI runs it on its own build (.ci/run). Here the
checks are run on small pages written to fail or pass each one, on README.md and
CONTRIBUTING.md, and on a built site: ``docs/_build/html`` (what CONTRIBUTING.md's command
writes) or ``$CYGRU_DOCS_HTML``, skipped with the reason when neither was built.
"""

import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load("check_docs_html", ROOT / "tools" / "check_docs_html.py")

GOOD_CSS = """
.bd-article img { max-width: 100%; height: auto; }
.bd-article img.plot-directive { width: 100%; max-width: 36rem; height: auto; }
.bd-article td.cygru-num { white-space: nowrap; }
"""
CHART = '<figure><img alt="" class="plot-directive" src="_images/performance-1.svg" /></figure>'


def _table(header_cells, rows=(("gate order", "r, z, n"),)):
    head = "".join(f"<th class='head'>{c}</th>" for c in header_cells)
    body = "".join("<tr>" + "".join(f"<td><p>{c}</p></td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _navbar(direct, more):
    def items(names, cls):
        return "".join(
            f'<li><a class="nav-link {cls}" href="x.html">\n {n}\n</a></li>' for n in names
        )

    menu = (
        '<li class="nav-item dropdown"><button>More</button>'
        f'<ul class="dropdown-menu">{items(more, "dropdown-item")}</ul></li>'
    )
    return f'<nav><ul class="bd-navbar-elements navbar-nav">{items(direct, "")}{menu}</ul></nav>'


def test_empty_header_row_is_found():
    # what docutils made of interop.rst's simple table, whose header began with a blank cell
    problems = check.empty_table_headers(_table(["", "", "", ""]), "interop.html")
    assert problems == [
        "interop.html: table 1 has a header row of 4 empty cells (its first cell: 'gate order')"
    ]
    # a header with one empty corner cell is a header
    assert check.empty_table_headers(_table(["", "cygru / PyTorch", "Keras", "ONNX"])) == []
    assert check.empty_table_headers(_table(["format", "Keras"])) == []
    # a table without a header row is not flagged
    assert check.empty_table_headers("<table><tbody><tr><td>a</td></tr></tbody></table>") == []


def test_fixed_width_chart_is_found():
    assert check.chart_problems(CHART, GOOD_CSS) == []
    # the rule the site had: 620 px inside a scroller on phones
    old = GOOD_CSS + (
        "@media (max-width: 720px) { .bd-article figure:has(img.plot-directive) "
        "{ overflow-x: auto; }\n .bd-article img.plot-directive { max-width: none; width: 620px; } }"
    )
    problems = check.chart_problems(CHART, old)
    assert any("'width: 620px', wider than a phone" in p for p in problems)
    assert any("lifts max-width" in p for p in problems)
    # a width on the image itself, or in a style attribute
    wide = CHART.replace("<img ", '<img width="620" ')
    assert any("width='620'" in p for p in check.chart_problems(wide, GOOD_CSS))
    styled = CHART.replace("<figure>", '<figure style="min-width: 500px">')
    assert any("min-width: 500px" in p for p in check.chart_problems(styled, GOOD_CSS))
    # a phone-sized fixed width is fine; no rule fitting the chart to the column is not
    assert check.chart_problems(CHART, GOOD_CSS + "img.plot-directive { width: 300px }") == []
    assert any("no CSS rule fits" in p for p in check.chart_problems(CHART, "p { color: red }"))
    assert check.chart_problems("<p>no chart</p>", GOOD_CSS) == [
        "performance.html: no chart (an <img class='plot-directive'>) found"
    ]


def test_wrapping_number_cells_are_found():
    marked = "<table><tbody><tr><td class='cygru-num'><p>0.205 ms</p></td></tr></tbody></table>"
    assert check.number_cell_problems(marked, GOOD_CSS) == []
    unmarked = marked.replace(" class='cygru-num'", "")
    assert "may wrap" in check.number_cell_problems(unmarked, GOOD_CSS)[0]
    no_rule = check.number_cell_problems(marked, ".bd-article img { max-width: 100% }")
    assert no_rule and "white-space: nowrap" in no_rule[0]
    words = "<table><tbody><tr><td><p>gate order</p></td></tr></tbody></table>"
    assert check.number_cell_problems(words, GOOD_CSS) == []


def test_docs_marks_every_number_cell_the_check_requires():
    """docs/conf.py's marker and the check's pattern agree on what a number cell is."""
    conf = _load("cygru_docs_conf", ROOT / "docs" / "conf.py")
    for text in ("0.205 ms", "3.3x", "0.68x", "24.8 µs", "296 ms", "12%", "1.05-1.8x", "—"):
        assert conf._NUMBER_CELL.fullmatch(text), text
    for text in ("0.205 ms", "3.3x", "24.8 µs", "12%"):
        assert check.NUMBER.fullmatch(text), text
    for text in ("gate order", "medium (100,32,256,256,1,1)", "reset_after=True", "2 layers"):
        assert not conf._NUMBER_CELL.fullmatch(text), text


def test_navbar_under_more_is_found():
    good = _navbar(["Getting started", "Performance", "API reference"], ["Dask"])
    assert check.navbar_links(good) == (
        ["Getting started", "Performance", "API reference"],
        ["Dask"],
    )
    assert check.navbar_problems(good) == []
    hidden = _navbar(["Getting started", "Concepts"], ["Performance", "API reference"])
    problems = check.navbar_problems(hidden)
    assert len(problems) == 2 and all("(it is under 'More')" in p for p in problems)
    assert check.navbar_problems("<p>no bar</p>") == [
        "index.html: no top bar (ul.bd-navbar-elements) found"
    ]


def test_readme_and_contributing_docs_commands_are_equal():
    assert check.check_commands(ROOT) == []
    command = check.docs_command((ROOT / "README.md").read_text(encoding="utf-8"))
    assert check.SPHINX_COMMAND in command
    # and a difference is found
    readme = "## Documentation\n\n```\npip install -e .[docs] && python -m sphinx -W -b html docs d\n```\n"
    contributing = f"## Documentation\n\n```\n{check.SPHINX_COMMAND}\n```\n"
    problems = check.command_problems(readme, contributing)
    assert problems and "build the docs differently" in problems[0]


def test_ci_checks_its_docs_build():
    """.ci/run runs the checker on the folder its sphinx-build writes."""
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in run.splitlines()]
    build = next(i for i, line in enumerate(lines) if line.startswith("python -m sphinx"))
    assert lines[build + 1].startswith("python tools/check_docs_html.py ")
    out_dir = next(word for word in lines[build].split() if word.startswith('"$'))
    assert lines[build + 1].split("#")[0].split()[-1] == out_dir


def _built_site():
    site = pathlib.Path(os.environ.get("CYGRU_DOCS_HTML") or ROOT / "docs" / "_build" / "html")
    if not (site / "index.html").exists():
        pytest.skip(
            f"no built documentation at {site} (build it with CONTRIBUTING.md's command, or "
            "point CYGRU_DOCS_HTML at a build)"
        )
    return site


def test_built_site_passes_every_check():
    site = _built_site()
    assert check.check_site(site) == []
    # the built pages the issue named, looked at directly
    interop = (site / "interop.html").read_text(encoding="utf-8")
    assert "cygru / PyTorch" in interop
    direct, _ = check.navbar_links((site / "index.html").read_text(encoding="utf-8"))
    assert {"API reference", "Performance"} <= set(direct)
