"""A results document (RESULTS.md) rendered from committed runs and a markdown template.

The template holds the prose; every number in the rendered document comes from runs on disk.
A directive is an HTML comment on a line of its own:

``<!-- report NAME: DIR [DIR ...] -->``
    The report table of the finished runs under the DIRs (:func:`~.report.build_report`), with
    its files (summary CSV/JSON, ``curves.png``, ``lambda.png``) written to
    ``FIGURES/NAME/`` and the plots linked below the table.
``<!-- runs: DIR [DIR ...] -->``
    A line: number of finished runs, their total training wall time, and the machine(s) they
    recorded.
``<!-- include: FILE -->``
    The text of FILE (e.g. a committed analysis table), as it is.
``<!-- progress: SWEEP.json [SWEEP.json ...] -->``
    A table: for each sweep configuration, how many of its runs are finished, failed, started
    (a checkpoint, no result) and not started — what ``newton-losses sweep FILE --dry-run``
    lists, counted.
``<!-- paper: DIR [DIR ...] -->``
    The paper's ranking numbers beside ours (:func:`~.paper.paper_table`): one row per
    relaxation and n, our mean ± std per variant from the finished runs under the DIRs (one
    setting per variant: narrow the DIRs, e.g. with glob patterns, to the table's settings).

``{{value NAME PATTERN FIELD}}`` (inline, anywhere in a line of prose)
    One number of the template's report NAME: the row that has a run whose directory name
    matches the glob PATTERN (exactly one row must), and FIELD one of ``mean``, ``std``, ``last``
    (the primary metric in %, one decimal), ``delta`` (signed, one decimal, "−" a Unicode
    minus), ``p``, ``p_holm``
    (two significant digits) or ``seeds``. Prose that quotes a table's numbers stays true when
    the table changes, e.g. when new rows enlarge the Holm family.

Paths in directives are relative to the current directory (the repository root). Rendering is
deterministic given the runs, so a committed RESULTS.md can be checked by regenerating it.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shlex
from pathlib import Path
from typing import Optional

from newton_lab.io import atomic_write_text
from newton_lab.paper import paper_table
from newton_lab.machine import machine_label
from newton_lab import registry
from newton_lab.report import build_report, find_runs

__all__ = ["render_results"]

_VALUE = re.compile(r"\{\{\s*value\b(.*?)\}\}")
_FIELDS = ("mean", "std", "last", "delta", "p", "p_holm", "seeds")
_DIRECTIVE = re.compile(r"^<!--\s*(report\s+[\w.-]+|runs|include|paper|progress)\s*:\s*(.+?)\s*-->\s*$")


def render_results(template: str | os.PathLike, out: str | os.PathLike, *,
                   figures: Optional[str | os.PathLike] = None, alpha: float = 0.05,
                   plots: bool = True) -> str:
    """Render ``template`` into ``out`` (atomically); returns the text.

    Args:
        template: the markdown template (see the module docstring for its directives).
        out: the document to write, e.g. ``RESULTS.md``.
        figures: where report files go (default: ``docs/results`` beside ``out``).
        alpha: significance level of the reports' Welch tests.
        plots: draw the reports' PNG plots (and link them).

    Raises:
        ValueError: an unknown or malformed directive, an include that is not a file, a
            directive whose directories hold no finished run, a report NAME used twice, or an
            inline value that names no report of the template, matches no row or several, or
            has no number (e.g. a p-value of a one-seed row). Every directive is checked before
            anything is written, so a failing template leaves ``out`` and the figures as they were.
    """
    template, out = Path(template), Path(out)
    figures = Path(figures) if figures is not None else out.parent / "docs" / "results"
    parts: list = []  # str lines, or (number, kind, dirs) directives
    reports: dict = {}  # report NAME -> its directories
    for number, line in enumerate(template.read_text().splitlines(), 1):
        if not line.lstrip().startswith("<!--") or "-->" not in line:
            parts.append(line)
            continue
        m = _DIRECTIVE.match(line.strip())
        if m is None:
            if re.match(r"^<!--\s*(report|runs|include|paper|progress)\b", line.strip()):
                raise ValueError(f"{template}:{number}: malformed directive {line.strip()!r}; expected "
                                 "'<!-- report NAME: DIR ... -->', '<!-- runs: DIR ... -->', "
                                 "'<!-- paper: DIR ... -->', '<!-- progress: SWEEP.json ... -->' "
                                 "or '<!-- include: FILE -->'")
            parts.append(line)  # an ordinary comment
            continue
        kind, dirs = m.group(1), shlex.split(m.group(2))
        if kind == "include":
            if len(dirs) != 1 or not Path(dirs[0]).is_file():
                raise ValueError(f"{template}:{number}: include: expected one existing file; got {dirs}")
        elif kind == "progress":  # reads only: render it now, so its errors come before any write
            try:
                parts += _progress_table(dirs)
            except ValueError as exc:
                raise ValueError(f"{template}:{number}: {exc}") from None
            continue
        elif not find_runs(dirs):
            raise ValueError(f"{template}:{number}: no finished runs under {', '.join(dirs)}")
        if kind == "paper":  # writes nothing, so render it now: its errors come before any write
            try:
                parts += paper_table(build_report(dirs, alpha=alpha, plots=False).groups, alpha=alpha)
            except ValueError as exc:
                raise ValueError(f"{template}:{number}: {exc}") from None
            continue
        if kind.startswith("report"):
            name = kind.split()[1]
            if name in reports:
                raise ValueError(f"{template}:{number}: report name {name!r} is used twice")
            reports[name] = dirs
        parts.append((number, kind, dirs))
    parts = _fill_values(parts, reports, template, alpha)  # before any write, like the checks above
    lines = []
    for part in parts:
        if isinstance(part, str):
            lines.append(part)
            continue
        number, kind, dirs = part
        try:
            if kind == "runs":
                lines.append(_runs_line(dirs))
            elif kind == "include":
                lines += Path(dirs[0]).read_text().rstrip().splitlines()
            else:
                name = kind.split()[1]
                lines += _report_block(dirs, figures / name, out.parent, alpha=alpha, plots=plots)
        except ValueError as exc:
            raise ValueError(f"{template}:{number}: {exc}") from None
    text = "\n".join(lines).rstrip() + "\n"
    atomic_write_text(out, text)
    return text


def _fill_values(parts: list, reports: dict, template: Path, alpha: float) -> list:
    """Replace the inline ``{{value NAME PATTERN FIELD}}`` of the template's text lines."""
    built: dict = {}
    filled = []
    for part in parts:
        if not isinstance(part, str) or "{{" not in part:
            filled.append(part)
            continue

        def one(m: re.Match) -> str:
            words = m.group(1).split()
            if len(words) != 3 or words[2] not in _FIELDS:
                raise ValueError(f"malformed inline value {m.group(0)!r}; expected "
                                 f"'{{{{value NAME PATTERN FIELD}}}}' with FIELD one of {', '.join(_FIELDS)}")
            name, pattern, what = words
            if name not in reports:
                raise ValueError(f"inline value {m.group(0)!r}: no '<!-- report {name}: ... -->' in the "
                                 f"template (reports: {', '.join(sorted(reports)) or 'none'})")
            if name not in built:
                built[name] = build_report(reports[name], alpha=alpha, plots=False).groups
            return _value(built[name], pattern, what, m.group(0))

        try:
            filled.append(_VALUE.sub(one, part))
        except ValueError as exc:
            # (progress and paper directives are already expanded here, so name the text, not a line number)
            raise ValueError(f"{template}: {exc} (in the line {part.strip()[:80]!r})") from None
    return filled


def _value(rows: list[dict], pattern: str, what: str, token: str) -> str:
    hits = [r for r in rows if any(fnmatch.fnmatchcase(Path(d).name, pattern) for d in r["runs"])]
    if len(hits) != 1:
        which = "; ".join(f"{r['label']} n={r['n']} {r['variant_label']}" for r in hits)
        raise ValueError(f"inline value {token!r}: the pattern {pattern!r} matches the runs of "
                         f"{len(hits)} rows" + (f" ({which})" if hits else "") + "; it must match exactly one")
    row = hits[0]
    primary = registry.task(row["task"]).metrics[0]
    scale = 100.0 if registry.is_percent(primary) else 1.0
    value = {"mean": scale * row[f"{primary}_mean"], "std": scale * row[f"{primary}_std"],
             "last": scale * row[f"last_{primary}_mean"], "delta": row["delta_vs_baseline"],
             "p": row["welch_p"], "p_holm": row["welch_p_holm"], "seeds": len(row["seeds"])}[what]
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"inline value {token!r}: the row {row['label']} n={row['n']} "
                         f"{row['variant_label']} ({len(row['seeds'])} seed(s)) has no {what}")
    if what == "seeds":
        return str(value)
    if what in ("p", "p_holm"):
        return f"{value:.2g}"
    if what != "delta":
        return f"{value:.1f}"
    # A Unicode minus, so that a value that starts a line is not a Markdown list item; no "−0.0".
    text = f"{value:+.1f}"
    return "+0.0" if text == "-0.0" else text.replace("-", "−")


def _report_block(dirs: list[str], where: Path, doc_dir: Path, *, alpha: float = 0.05,
                  plots: bool = True) -> list[str]:
    report = build_report(dirs, out=where, alpha=alpha, plots=plots)
    block = report.markdown.rstrip().splitlines()
    for png in ("curves.png", "lambda.png"):
        path = where / png
        if path in report.files:
            rel = os.path.relpath(path, doc_dir)
            caption = "test accuracy over steps (mean, 95% band)" if png == "curves.png" else "accuracy over λ"
            block += ["", f"![{caption}]({rel})"]
    return block


def _progress_table(files: list[str]) -> list[str]:
    from newton_lab.runner import run_status
    from newton_lab.sweep import SweepSpec  # here: sweep imports report, which this module imports

    lines = ["| sweep | runs | finished | failed | started, not finished | not started |",
             "|---|---|---|---|---|---|"]
    for f in files:
        if not (f.endswith(".json") and Path(f).is_file()):
            raise ValueError(f"progress: {f!r} is not a sweep configuration file (.json)")
        spec = SweepSpec.load(f)
        counts = {"finished": 0, "failed": 0, "partial": 0, "new": 0}
        configs = spec.expand()
        for c in configs:
            counts[run_status(Path(spec.out) / c.run_id())] += 1
        lines.append(f"| `{f}` | {len(configs)} | {counts['finished']} | {counts['failed']} "
                     f"| {counts['partial']} | {counts['new']} |")
    return lines


def _runs_line(dirs: list[str]) -> str:
    runs = find_runs(dirs)
    if not runs:
        raise ValueError(f"no finished runs under {', '.join(dirs)}")
    total = sum(r["time"]["total_s"] for _, r in runs)
    counts: dict = {}
    for _, r in runs:
        machine = machine_label(r) or "not recorded (older runs)"
        counts[machine] = counts.get(machine, 0) + 1
    machines = "; ".join(f"{m} ({k} run{'s' if k != 1 else ''})" for m, k in sorted(counts.items()))
    return (f"{len(runs)} finished runs, {total / 3600:.1f} h of training wall time in total. "
            f"Machines (the one that finished each run): {machines}.")
