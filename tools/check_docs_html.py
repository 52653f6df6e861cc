"""Check the built documentation site for what a ``-W`` Sphinx build does not catch.

    python tools/check_docs_html.py docs/_build/html

CI (``.ci/run``) runs it right after its ``sphinx-build``; ``tests/test_docs_html.py`` runs
the same checks on ``docs/_build/html`` (or ``$CYGRU_DOCS_HTML``) when it exists. Checks:

* no table has a header row whose cells are all empty (a reStructuredText simple table
  whose header starts with a blank cell renders that way: its header is lost);
* the Performance page's chart is responsive: no fixed width wider than a phone's screen
  (``PHONE_PX``) on the image, nor in the site's CSS for it, and a rule that fits it to the
  text column;
* every table cell that holds a number (``0.205 ms``, ``3.3x``) is marked ``cygru-num`` and
  the CSS keeps such cells on one line;
* the top bar lists the API reference and Performance pages directly, not under "More";
* README.md and CONTRIBUTING.md give the same command to build the docs, and it is the
  ``-W`` build CI runs.

Exit status 1 (and one line per problem) when a check fails. Standard library only.
"""

from __future__ import annotations

import pathlib
import re
import sys
from html.parser import HTMLParser

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHONE_PX = 360  # the text column of a 390 px wide phone screen
NAVBAR_PAGES = ("API reference", "Performance")
NUMBER = re.compile(r"[~≈<>±+\-−]?\d[\d.,]*\s*(?:ms|µs|us|ns|s|x|×|%)")
SPHINX_COMMAND = "python -m sphinx -W --keep-going -b html docs docs/_build/html"

_VOID = {"img", "br", "hr", "meta", "link", "input", "col", "source", "wbr", "area", "base"}


class _Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children: list[_Node | str] = []

    @property
    def classes(self):
        return (self.attrs.get("class") or "").split()

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self, tag=None):
        for c in self.children:
            if isinstance(c, _Node):
                if tag is None or c.tag == tag:
                    yield c
                yield from c.iter(tag)

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class _TreeBuilder(HTMLParser):
    """A forgiving DOM: enough of one for Sphinx's well-formed output."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = _Node("#document", [], None)
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, attrs, self.current)
        self.current.children.append(node)
        if tag not in _VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(_Node(tag, attrs, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html: str) -> _Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def _rel(path, site):
    return str(pathlib.Path(path).relative_to(site)) if site else str(path)


def empty_table_headers(html: str, where: str = "page") -> list[str]:
    """Tables with a header row whose cells are all empty."""
    problems = []
    for k, table in enumerate(parse(html).iter("table")):
        for thead in table.iter("thead"):
            for row in thead.iter("tr"):
                cells = [c for c in row.children if isinstance(c, _Node) and c.tag in ("th", "td")]
                if cells and not any(c.text().strip() for c in cells):
                    first = next((c for c in table.iter("td")), None)
                    hint = f" (its first cell: {first.text().strip()[:40]!r})" if first else ""
                    problems.append(
                        f"{where}: table {k + 1} has a header row of {len(cells)} empty cells{hint}"
                    )
    return problems


_WIDTH_PX = re.compile(r"(?<![-\w])(?:min-)?width\s*:\s*(\d+(?:\.\d+)?)px", re.I)


def chart_problems(html: str, css: str, where: str = "performance.html") -> list[str]:
    """The Performance page's chart: present, and no fixed width wider than a phone."""
    doc = parse(html)
    charts = [
        img
        for img in doc.iter("img")
        if "plot-directive" in img.classes or "performance" in img.attrs.get("src", "")
    ]
    if not charts:
        return [f"{where}: no chart (an <img class='plot-directive'>) found"]
    problems = []
    for img in charts:
        src = img.attrs.get("src", "")
        width = img.attrs.get("width", "")
        if width.rstrip("px").isdigit() and int(width.rstrip("px")) > PHONE_PX:
            problems.append(f"{where}: the chart {src} has width={width!r}, wider than a phone")
        for m in _WIDTH_PX.finditer(img.attrs.get("style", "")):
            if float(m.group(1)) > PHONE_PX:
                problems.append(f"{where}: the chart {src} has the style {m.group(0)!r}")
        for parent in img.ancestors():
            for m in _WIDTH_PX.finditer(parent.attrs.get("style", "")):
                if float(m.group(1)) > PHONE_PX:
                    problems.append(f"{where}: the chart's <{parent.tag}> has {m.group(0)!r}")
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    fitted = False
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        if not re.search(r"\bimg\b|plot-directive|figure", selector):
            continue
        for m in _WIDTH_PX.finditer(body):
            if float(m.group(1)) > PHONE_PX:
                problems.append(
                    f"{where}: the CSS rule {selector.strip()!r} gives the chart "
                    f"{m.group(0)!r}, wider than a phone's screen"
                )
        if re.search(r"max-width\s*:\s*none", body):
            problems.append(f"{where}: the CSS rule {selector.strip()!r} lifts max-width")
        if re.search(r"(?<![-\w])(?:max-)?width\s*:\s*100%", body):
            fitted = True
    if not fitted:
        problems.append(f"{where}: no CSS rule fits the chart to the text column (width 100%)")
    return problems


def number_cell_problems(html: str, css: str, where: str = "page") -> list[str]:
    """Cells holding a number must be marked cygru-num, and the CSS must keep them whole."""
    problems = []
    unmarked = [
        td.text().strip()
        for td in parse(html).iter("td")
        if NUMBER.fullmatch(td.text().strip()) and "cygru-num" not in td.classes
    ]
    if unmarked:
        problems.append(
            f"{where}: {len(unmarked)} number cell(s) may wrap (no class cygru-num), e.g. "
            f"{unmarked[:3]}"
        )
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    if not re.search(r"td\.cygru-num[^{]*\{[^}]*white-space\s*:\s*nowrap", css):
        problems.append(f"{where}: the CSS has no 'td.cygru-num {{ white-space: nowrap }}' rule")
    return problems


def navbar_links(html: str) -> tuple[list[str], list[str]]:
    """(the top bar's direct links, those under its "More" menu)."""
    doc = parse(html)
    nav = next((ul for ul in doc.iter("ul") if "bd-navbar-elements" in ul.classes), None)
    if nav is None:
        return [], []
    direct, more = [], []
    for a in nav.iter("a"):
        in_menu = any("dropdown-menu" in p.classes for p in a.ancestors())
        (more if in_menu else direct).append(" ".join(a.text().split()))
    return direct, more


def navbar_problems(html: str, where: str = "index.html") -> list[str]:
    direct, more = navbar_links(html)
    if not direct:
        return [f"{where}: no top bar (ul.bd-navbar-elements) found"]
    return [
        f"{where}: the top bar does not list {page!r} directly"
        + (" (it is under 'More')" if page in more else "")
        + f"; its links: {direct}"
        for page in NAVBAR_PAGES
        if page not in direct
    ]


def docs_command(markdown: str) -> str | None:
    """The fenced block of the '## Documentation' section that runs sphinx."""
    section = re.search(r"^## Documentation\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    text = section.group(1) if section else markdown
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S):
        if "sphinx" in block:
            return block.strip()
    return None


def command_problems(readme: str, contributing: str) -> list[str]:
    got = {"README.md": docs_command(readme), "CONTRIBUTING.md": docs_command(contributing)}
    problems = [f"{name}: no docs build command found" for name, c in got.items() if c is None]
    if problems:
        return problems
    if got["README.md"] != got["CONTRIBUTING.md"]:
        problems.append(
            "README.md and CONTRIBUTING.md build the docs differently: "
            f"{got['README.md']!r} vs {got['CONTRIBUTING.md']!r}"
        )
    if SPHINX_COMMAND not in got["README.md"]:
        problems.append(f"README.md's docs command does not run {SPHINX_COMMAND!r}")
    return problems


def check_site(site: pathlib.Path) -> list[str]:
    """Every check on a built site (``docs/_build/html`` or CI's output folder)."""
    site = pathlib.Path(site)
    problems = []
    pages = sorted(p for p in site.rglob("*.html") if not p.name.startswith("_"))
    pages = [p for p in pages if "_static" not in p.parts and "_sources" not in p.parts]
    if not pages:
        return [f"{site}: no HTML pages"]
    css_path = site / "_static" / "cygru.css"
    css = css_path.read_text(encoding="utf-8") if css_path.exists() else ""
    if not css:
        problems.append(f"{site}: _static/cygru.css is missing")
    for page in pages:
        html = page.read_text(encoding="utf-8")
        problems += empty_table_headers(html, _rel(page, site))
        if "<table" in html:
            problems += [
                p
                for p in number_cell_problems(html, css, _rel(page, site))
                if "may wrap" in p  # the CSS rule is checked once, below
            ]
    problems += [p for p in number_cell_problems("", css, "_static/cygru.css") if "CSS" in p]
    performance = site / "performance.html"
    if performance.exists():
        problems += chart_problems(performance.read_text(encoding="utf-8"), css)
    else:
        problems.append(f"{site}: performance.html is missing")
    for name in ("index.html", "performance.html", "api.html"):
        if (site / name).exists():
            problems += navbar_problems((site / name).read_text(encoding="utf-8"), name)
    return problems


def check_commands(root: pathlib.Path = ROOT) -> list[str]:
    return command_problems(
        (root / "README.md").read_text(encoding="utf-8"),
        (root / "CONTRIBUTING.md").read_text(encoding="utf-8"),
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tools/check_docs_html.py BUILT_HTML_DIR", file=sys.stderr)
        return 2
    site = pathlib.Path(argv[0])
    if not site.is_dir():
        print(f"check_docs_html: {site} is not a directory", file=sys.stderr)
        return 2
    problems = check_site(site) + check_commands()
    for problem in problems:
        print(f"check_docs_html: {problem}")
    if not problems:
        print(f"check_docs_html: {site} ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
