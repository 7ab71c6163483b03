"""Griffe extension of the documentation site (mkdocs.yml, mkdocstrings ``extensions:``).

The docstrings are Google-style with a little reST, written to read well in ``help()``. Before
mkdocstrings renders them as Markdown, this rewrites, in the rendered copy only:

- Sphinx roles (``:class:`X```, ``:func:`~a.b.f```, ``:mod:`.sub```, ``:meth:``, ``:attr:``,
  ``:data:``, ``:exc:``, ``:obj:``) into cross-references to the API reference, resolved in the
  scope of the documented object; a name the site does not document stays inline code
  (optional references: never a warning).
- reST literal blocks introduced by ``::`` at the end of a line: the colons become one (the
  indented block that follows is already a Markdown code block).
- reST simple tables (rows framed by ``====  ====`` lines) into Markdown tables, and doctests
  (``>>>`` lines) into fenced code blocks (Markdown would read ``>>>`` as nested quotes).
- Entries that document several names at once (``cg_max_iter, cg_rtol: ...`` in an ``Args:``
  or ``Attributes:`` section) into one entry per name, so that each matches the signature.
"""
from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj):`(~?)([^`<>]+?)`")
_TABLE_RULE = re.compile(r"^\s*=+(\s+=+)+\s*$")
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params|Attributes|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
_MULTI = re.compile(r"^(\s+)(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+):(\s.*|)$")


def _split_entries(text: str) -> str:
    """``a, b: text`` in a parameter-like section -> ``a: text`` and ``b: see `a`.``."""
    lines = text.split("\n")
    out: list[str] = []
    section_indent: int | None = None
    item_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _SECTION.match(line)
        if m:
            section_indent, item_indent = len(m.group(1)), None
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        if section_indent is not None and line.strip():
            if indent <= section_indent:
                section_indent = None
            elif item_indent is None:
                item_indent = indent
        mm = _MULTI.match(line) if section_indent is not None and indent == item_indent else None
        if not mm:
            out.append(line)
            i += 1
            continue
        names = [n.strip() for n in mm.group(2).split(",")]
        out.append(f"{mm.group(1)}{names[0]}:{mm.group(3)}")
        i += 1
        # The entry's continuation: deeper-indented lines (blank lines inside it included).
        while i < len(lines):
            nxt = lines[i]
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= item_indent:
                break
            if not nxt.strip():
                rest = next((ln for ln in lines[i:] if ln.strip()), "")
                if len(rest) - len(rest.lstrip()) <= item_indent:
                    break
            out.append(nxt)
            i += 1
        first = names[0].lstrip("*")
        out += [f"{mm.group(1)}{n}: see `{first}`." for n in names[1:]]
    return "\n".join(out)


def _markdown_table(block: list[str]) -> list[str] | None:
    """A reST simple table (three rule lines, one header row) as a Markdown table."""
    rules = [k for k, ln in enumerate(block) if _TABLE_RULE.match(ln)]
    if len(rules) != 3 or rules[0] != 0 or rules[2] != len(block) - 1 or rules[1] != 2:
        return None
    indent = re.match(r"\s*", block[0]).group(0)
    cols = [m.span() for m in re.finditer(r"=+", block[0])]

    def cells(row: str) -> list[str]:
        parts = []
        for k, (a, _) in enumerate(cols):
            b = cols[k + 1][0] if k + 1 < len(cols) else None
            parts.append(row[a:b].strip().replace("|", "\\|"))
        return parts

    head = cells(block[1])
    body = [cells(row) for row in block[3:-1]]
    fmt = lambda row: indent + "| " + " | ".join(row) + " |"  # noqa: E731
    return [fmt(head), indent + "|" + "---|" * len(cols), *[fmt(r) for r in body]]


def _resolve(obj: griffe.Object, name: str, kind: str) -> str:
    """The dotted path of ``name`` as seen from ``obj`` (best effort: the name itself)."""
    module = obj if obj.is_module else obj.module
    if name.startswith("."):  # relative to the current module/package
        base = module.path if module.is_init_module else module.path.rpartition(".")[0]
        rest = name.lstrip(".")
        ups = len(name) - len(rest) - 1
        for _ in range(ups):
            base = base.rpartition(".")[0]
        return f"{base}.{rest}" if rest else base
    head, _, tail = name.partition(".")
    if "." in name and head in ("newton_losses", "newton_lab", "torch"):
        return name
    try:
        path = obj.resolve(head)
    except Exception:
        try:
            path = module.resolve(head)
        except Exception:
            return name
    return f"{path}.{tail}" if tail else path


def _as_written(obj: griffe.Object, name: str) -> str | None:
    """``name`` under the nearest enclosing scope that has its first part as a member (the path
    as re-exported, e.g. a package's ``path_loss`` function beside its ``path_loss`` module)."""
    head = name.partition(".")[0]
    scope: griffe.Object | None = obj
    while scope is not None:
        if head in scope.members:
            return f"{scope.path}.{name}"
        scope = scope.parent
    return None


def _role(obj: griffe.Object, m: re.Match) -> str:
    kind, tilde, name = m.group(1), m.group(2), m.group(3).strip()
    path = _resolve(obj, name, kind)
    if kind != "mod":  # a function named like its module (path_loss.path_loss): the function
        try:
            target = obj.modules_collection[path]
            last = path.rpartition(".")[2]
            if target.is_module and last in target.members:
                path = f"{path}.{last}"
        except Exception:
            pass
    written = None if name.startswith(".") else _as_written(obj, name)
    slug = f' slug="{html.escape(written)}"' if written and written != path else ""
    shown = name.lstrip(".")
    if tilde:
        shown = shown.rpartition(".")[2]
    if kind in ("func", "meth"):
        shown += "()"
    return (
        f'<autoref identifier="{html.escape(path)}"{slug} optional>'
        f"<code>{html.escape(shown)}</code></autoref>"
    )


def _rewrite(obj: griffe.Object, text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _TABLE_RULE.match(line):
            # A simple table: up to and including its closing rule (the third rule line).
            j, rules = i, 0
            while j < len(lines) and rules < 3:
                if _TABLE_RULE.match(lines[j]):
                    rules += 1
                elif not lines[j].strip():
                    break
                j += 1
            table = _markdown_table(lines[i:j])
            if table is None:  # not the shape we know: show it as written
                indent = re.match(r"\s*", line).group(0)
                table = [f"{indent}```text", *lines[i:j], f"{indent}```"]
            out += [_ROLE.sub(lambda m: _role(obj, m), row) for row in table]
            i = j
            continue
        if line.lstrip().startswith(">>> ") and not (out and out[-1].lstrip().startswith("```")):
            # A doctest: a fenced block (Markdown would read ">>>" as nested quotes).
            indent = re.match(r"\s*", line).group(0)
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out += [f"{indent}```pycon", *lines[i:j], f"{indent}```"]
            i = j
            continue
        if line.rstrip().endswith("::") and not line.strip() == "::":
            line = line.rstrip()[:-1]
        elif line.strip() == "::":
            line = ""
        out.append(_ROLE.sub(lambda m: _role(obj, m), line))
        i += 1
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite the reST of docstrings into Markdown with cross-references (see module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # noqa: ARG002
        self._walk(pkg, set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = _rewrite(obj, _split_entries(obj.docstring.value))
        for member in obj.members.values():
            if member.is_alias:
                continue
            self._walk(member, seen)
