"""MkDocs hooks of the documentation site (mkdocs.yml ``hooks:``; docs/DOCS.md).

- Pages whose one source lies outside docs/: README.md is the home page (``index.md``) and
  RESULTS.md the study page (``study.md``); both are read where they are, not copied.
- Generated pages: ``examples.md`` from examples/*.py and their recorded output
  docs/examples/<name>.txt (whatever files exist at build time), and ``results/reports.md``
  listing the sweep reports under docs/results/ (written by ``make results``).
- Links: every page is written for GitHub, relative to where its file lies in the repository.
  A link to README.md, RESULTS.md or a file under docs/ becomes a link to that page or file of
  the site, and one to examples/ or examples/NAME.py a link to the examples page; a link to any
  other repository file (src/, results/, scripts/, ...) keeps its text and loses the link (the
  site has no repository browser); a link to nothing is left alone, so that the strict build
  reports it.
- MathJax 3 is served from the site: its files are taken from the django-static-mathjax wheel
  (the [docs] extra; it ships MathJax 3.2.2 as plain files and needs no Django).
"""
from __future__ import annotations

import ast
import importlib.util
import os
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# Site page -> the repository file it is built from.
ROOT_PAGES = {"index.md": "README.md", "study.md": "RESULTS.md"}
EXAMPLES_PAGE = "examples.md"
REPORTS_PAGE = "results/reports.md"

# MathJax files copied into assets/mathjax/ (the combined TeX component, plus what it loads
# lazily: fonts, TeX extensions, the menu and its accessibility parts).
MATHJAX_FILES = ("tex-mml-chtml.js",)
MATHJAX_DIRS = ("a11y", "adaptors", "input", "output/chtml", "sre", "ui")


# ---------------------------------------------------------------- files


def _mathjax_dir() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "MathJax is not installed: the site serves its own copy, from the django-static-mathjax "
            "package of the docs extra (pip install -e '.[docs]')"
        )
    es5 = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-mml-chtml.js").is_file():
        raise RuntimeError(f"MathJax's tex-mml-chtml.js is missing under {es5}")
    return es5


def on_files(files: Files, config) -> Files:
    for uri, src in ROOT_PAGES.items():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / src)))
    files.append(File.generated(config, EXAMPLES_PAGE, content=examples_markdown()))
    files.append(File.generated(config, REPORTS_PAGE, content=reports_markdown()))

    es5 = _mathjax_dir()
    paths = [es5 / name for name in MATHJAX_FILES]
    for d in MATHJAX_DIRS:
        paths += sorted(p for p in (es5 / d).rglob("*") if p.is_file())
    paths.append(es5.parent / "LICENSE")
    for p in paths:
        rel = p.relative_to(es5) if p.is_relative_to(es5) else Path(p.name)
        files.append(File.generated(config, f"assets/mathjax/{rel.as_posix()}", abs_src_path=str(p)))
    return files


# ---------------------------------------------------------------- generated pages


def _fence(text: str, lang: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}\n"


def _summary(source: str) -> tuple[str, str]:
    """The module docstring's first line (title) and the rest of its first paragraph."""
    try:
        doc = ast.get_docstring(ast.parse(source)) or ""
    except SyntaxError:
        doc = ""
    paragraph = doc.strip().split("\n\n")[0].strip()
    first, _, rest = paragraph.partition("\n")
    return first.strip(), " ".join(line.strip() for line in rest.splitlines())


def examples_markdown() -> str:
    # The order of examples/README.md's list (quickstart first), then any script it misses.
    listed = (ROOT / "examples" / "README.md")
    order = re.findall(r"`([A-Za-z0-9_]+)\.py`", listed.read_text(encoding="utf-8")) if listed.is_file() else []
    rank = {name: i for i, name in enumerate(dict.fromkeys(["quickstart", *order]))}
    scripts = sorted((ROOT / "examples").glob("*.py"), key=lambda s: (rank.get(s.stem, len(rank)), s.name))
    out = [
        "# Examples\n",
        "Short scripts to copy from, in `examples/` of the repository. Each runs in under a "
        "minute on a CPU (`python examples/NAME.py` from the repository root) and the test suite "
        "runs them; the output shown is the one recorded in `docs/examples/NAME.txt`.\n",
    ]
    if not scripts:
        out.append("No examples yet.\n")
    for script in scripts:
        source = script.read_text(encoding="utf-8")
        title, rest = _summary(source)
        out.append(f"## `{script.name}` {{ #{script.stem} }}\n")
        if title:
            out.append(f"{title} {rest}".strip() + "\n")
        out.append(_fence(source, "python"))
        output = DOCS / "examples" / f"{script.stem}.txt"
        if output.is_file():
            out.append(f"Output (`docs/examples/{output.name}`):\n")
            out.append(_fence(output.read_text(encoding="utf-8"), "text"))
        else:
            out.append(f"*No recorded output yet* (`python examples/{script.name}`).\n")
    return "\n".join(out)


def _title(md: Path) -> str:
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return md.stem


def reports_markdown() -> str:
    out = [
        "# Sweep reports\n",
        "The reports of the study's sweeps that [RESULTS.md](../study.md) quotes, generated by "
        "`make results` into `docs/results/` (tables, tests, plots; `runs.csv` and "
        "`summary.csv` beside each).\n",
    ]
    for md in sorted((DOCS / "results").glob("*/*.md")):
        rel = md.relative_to(DOCS / "results").as_posix()
        sweep = md.parent.name
        name = "report" if md.stem == "report" else md.stem.replace("_", " ")
        out.append(f"- `{sweep}`: [{name}]({rel}) — {_title(md)}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- links

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
_LINK = re.compile(r"(?P<text>!?\[(?:[^\[\]]|\[[^\[\]]*\])*\])\((?P<target>[^()\s]+)(?P<title>\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)(?<!`)\1(?!`)", re.DOTALL)


def _site_target(page_src: Path, target: str, page_uri: str):
    """The site link for a repository-relative link; None: drop the link; target: unchanged."""
    path, sep, fragment = target.partition("#")
    if not path or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", path) or path.startswith("/"):
        return target  # an anchor on the page, a URL, or absolute: not ours
    resolved = Path(os.path.normpath(page_src.parent / path))
    try:
        rel_repo = resolved.relative_to(ROOT).as_posix()
    except ValueError:
        return target
    site_uri = None
    if rel_repo == "examples" or (rel_repo.startswith("examples/") and rel_repo.endswith(".py")):
        site_uri = EXAMPLES_PAGE
        if rel_repo != "examples" and not sep:  # the script's section of the page
            sep, fragment = "#", Path(rel_repo).stem
    for uri, src in ROOT_PAGES.items():
        if rel_repo == src:
            site_uri = uri
    if site_uri is None and resolved.is_relative_to(DOCS) and not resolved.is_relative_to(DOCS / "hooks"):
        if resolved == DOCS / "results":
            site_uri = REPORTS_PAGE  # the folder of sweep reports: their generated index
        elif not resolved.is_dir():
            site_uri = resolved.relative_to(DOCS).as_posix()
    if site_uri is None:
        return None if resolved.exists() else target
    new = posixpath.relpath(site_uri, posixpath.dirname(page_uri) or ".")
    return new + (sep + fragment if sep else "")


def _rewrite_text(text: str, page_src: Path, page_uri: str) -> str:
    """Rewrite the links of a run of Markdown outside fenced code (code spans left alone)."""
    spans = [m.span() for m in _CODE_SPAN.finditer(text)]

    def repl(m: re.Match) -> str:
        if any(a <= m.start() < b for a, b in spans):
            return m.group(0)
        new = _site_target(page_src, m["target"], page_uri)
        if new == m["target"]:
            return m.group(0)
        if new is None:
            text = m["text"]
            return text[2:-1] if text.startswith("!") else text[1:-1]
        return f"{m['text']}({new}{m['title'] or ''})"

    return _LINK.sub(repl, text)


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.abs_src_path
    page_src = Path(src) if src else DOCS / page.file.src_uri
    out: list[str] = []
    para: list[str] = []  # a paragraph outside fences: code spans may run over its lines
    fence = None

    def flush() -> None:
        if para:
            out.append(_rewrite_text("\n".join(para), page_src, page.file.src_uri))
            para.clear()

    for line in markdown.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            flush()
            fence = m.group(2)
            out.append(line)
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            out.append(line)
        elif not line.strip():
            flush()
            out.append(line)
        else:
            para.append(line)
    flush()
    return "\n".join(out)
