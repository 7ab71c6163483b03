"""The documentation site (mkdocs.yml, docs/DOCS.md): the strict build and what it produces.

One strict build (a warning is an error: broken links and anchors, pages missing from the
navigation, docstring entries that name no parameter), then checks on its HTML: every page has
its title and the navigation; the API reference holds NewtonLoss with its signature and
docstring; the maths is MathJax markup and MathJax is served from the site; no page loads CSS,
JavaScript or fonts from elsewhere; the examples page shows every examples/*.py. Skipped where
the [docs] extra is not installed. About 10 s on 2 cores.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

for _module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mathjax"):
    try:
        _found = importlib.util.find_spec(_module) is not None
    except ModuleNotFoundError:
        _found = False
    if not _found:
        pytest.skip(f"the [docs] extra is not installed ({_module} missing): pip install -e '.[docs]'",
                    allow_module_level=True)


class _Page(HTMLParser):
    """What the checks need from one HTML page: title, nav, assets, text."""

    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.has_nav = False
        self.assets: list[str] = []  # src/href of <script>, <link rel=stylesheet|preload|...>, <img>
        self.classes: set[str] = set()
        self.text: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.classes.update((a.get("class") or "").split())
        if tag == "title":
            self._in_title = True
        if tag == "nav" and "md-nav--primary" in (a.get("class") or ""):
            self.has_nav = True
        if tag in ("script", "img", "iframe") and a.get("src"):
            self.assets.append(a["src"])
        if tag == "link" and a.get("href") and (a.get("rel") or "") != "canonical":
            self.assets.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"strict build failed:\n{proc.stdout}\n{proc.stderr}"
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def test_every_page_has_title_and_nav(site):
    pages = [p for p in site.rglob("*.html") if p.name != "404.html"]
    assert len(pages) > 20
    for p in pages:
        page = _parse(p)
        assert page.title.strip().endswith("newton-losses"), p
        assert page.has_nav, p
    for must in ("index.html", "GUIDE.html", "TROUBLESHOOTING.html", "examples.html",
                 "api/newton_losses.html", "study.html", "results/reports.html"):
        assert (site / must).is_file(), must


def test_nothing_is_loaded_from_elsewhere(site):
    for p in site.rglob("*.html"):
        for url in _parse(p).assets:
            assert not re.match(r"^(https?:)?//", url), f"{p.relative_to(site)} loads {url}"
            if url.startswith("data:"):
                continue
            path = url.split("?")[0].split("#")[0]
            local = (site / path.lstrip("/")) if path.startswith("/") else (p.parent / path).resolve()
            assert local.exists(), f"{p.relative_to(site)} loads {url}, which the site lacks"
    for css in site.rglob("*.css"):
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css.read_text(encoding="utf-8")):
            assert not re.match(r"^(https?:)?//", url), f"{css.relative_to(site)} loads {url}"


def test_api_reference_has_newton_loss(site):
    html = (site / "api/newton_losses.html").read_text(encoding="utf-8")
    text = " ".join(_parse(site / "api/newton_losses.html").text)
    assert 'id="newton_losses.NewtonLoss"' in html
    assert "Wrap a loss so that the network is trained with the regularized Newton step" in text
    # the signature, with its parameters
    assert re.search(r"NewtonLoss\s*\(", text) and "loss_fn" in text and "projection" in text
    # Sphinx roles became cross-references, not literal ":class:" text
    assert ":class:`" not in text and ":func:`" not in text
    assert 'href="curvature.html#newton_losses.curvature.CompositeLoss"' in html
    for module in ("curvature", "sorting", "shortest_path", "precision", "integrations", "newton_lab"):
        assert (site / f"api/{module}.html").is_file(), module
    assert 'id="newton_losses.sorting.RankingLoss"' in (site / "api/sorting.html").read_text(encoding="utf-8")
    lab = (site / "api/newton_lab.html").read_text(encoding="utf-8")
    assert 'id="newton_lab.register_custom_task"' in lab and 'id="newton_lab.registry"' in lab


def test_api_reference_documents_the_public_constants(site):
    """The name tuples in ``__all__`` render with their docstrings, not as bare names."""
    for page, name, words in (("sorting", "RANKING_LOSSES", "ranking losses"),
                              ("shortest_path", "PATH_LOSSES", "elementwise losses"),
                              ("curvature", "BUILTIN_CURVATURES", "built-in curvature names")):
        html = (site / f"api/{page}.html").read_text(encoding="utf-8")
        assert f'id="newton_losses.{page}.{name}"' in html, name
        assert words in " ".join(_parse(site / f"api/{page}.html").text), name


def test_maths_is_mathjax_served_locally(site):
    page = _parse(site / "METHOD.html")
    assert "arithmatex" in page.classes
    scripts = [u for u in page.assets if "mathjax" in u.lower()]
    assert any(u.endswith("assets/mathjax/tex-mml-chtml.js") for u in scripts), scripts
    assert (site / "assets/mathjax/tex-mml-chtml.js").stat().st_size > 100_000
    assert any((site / "assets/mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))


def test_examples_page_shows_every_example(site):
    text = "".join(_parse(site / "examples.html").text)
    squeezed = re.sub(r"\s+", "", text)  # highlighting splits the code into many text nodes
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert script.name in text, script.name
        output = ROOT / "docs" / "examples" / f"{script.stem}.txt"
        if output.is_file():
            lines = [ln for ln in output.read_text(encoding="utf-8").splitlines() if ln.strip()]
            for line in lines[:1] + lines[-1:]:
                assert re.sub(r"\s+", "", line)[:60] in squeezed, (output, line)
        else:
            assert f"python examples/{script.name}" in text


def test_repository_links_become_site_links(site):
    # README.md and RESULTS.md link docs/X.md and each other as on GitHub: none of it survives
    for p in site.rglob("*.html"):
        html = p.read_text(encoding="utf-8")
        assert not re.search(r'href="(\.\./)*(docs/|README\.md|RESULTS\.md)', html), p
    study = (site / "study.html").read_text(encoding="utf-8")
    assert "results/reports.html" in study  # RESULTS.md's docs/results/


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_site_hooks", ROOT / "docs" / "hooks" / "site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_link_rewriting():
    hooks = _hooks()
    readme, guide = ROOT / "README.md", ROOT / "docs" / "GUIDE.md"
    rewrite = hooks._rewrite_text
    assert rewrite("[g](docs/GUIDE.md#how-to-choose)", readme, "index.md") == "[g](GUIDE.md#how-to-choose)"
    assert rewrite("[r](../RESULTS.md)", guide, "GUIDE.md") == "[r](study.md)"
    assert rewrite("[r](../README.md#quickstart)", guide, "GUIDE.md") == "[r](index.md#quickstart)"
    assert rewrite("[r](RESULTS.md)", readme, "index.md") == "[r](study.md)"
    # a repository file the site does not hold: text kept, link dropped
    assert rewrite("see [`newton.py`](src/newton_losses/newton.py)", readme, "index.md") == "see `newton.py`"
    # examples go to the examples page
    assert rewrite("[e](examples/)", readme, "index.md") == "[e](examples.md)"
    # left alone: URLs, anchors, code spans, and links to nothing (the strict build reports those)
    for same in ("[a](https://arxiv.org/abs/2410.19055)", "[a](#layout)", "`[a](src/x.py)`", "[a](NOPE.md)"):
        assert rewrite(same, readme, "index.md") == same


def test_griffe_extension_rewrites():
    spec = importlib.util.spec_from_file_location("docs_griffe_roles", ROOT / "docs" / "hooks" / "griffe_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    split = module._split_entries("Intro.\n\nArgs:\n    a, b: both.\n        More.\n    c: one.\n")
    assert split.splitlines()[2:] == ["Args:", "    a: both.", "        More.", "    b: see `a`.", "    c: one."]
    table = module._markdown_table(["===  ===", "x    y", "===  ===", "1    2", "===  ==="])
    assert table == ["| x | y |", "|---|---|", "| 1 | 2 |"]
