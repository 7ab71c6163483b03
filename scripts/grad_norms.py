"""Gradient-norm spikes of committed runs, from their ``metrics.jsonl``.

    python scripts/grad_norms.py RUN_DIR [RUN_DIR ...] [--out FILE.md]
    python scripts/grad_norms.py --by-row RUN_DIR_OR_GLOB [...] [--out FILE.md]

Every evaluation interval of a run records the norm of the network-parameter gradient — of the
loss the run trains with: the plain loss for a baseline (before clipping, for runs with
``clip_grad_norm``), the Newton loss for a Newton run — as its mean and maximum over the
interval's steps. Per run this prints:

- the typical norm: the median of the interval means over the calm intervals — those without a
  spike (an interval whose maximum is more than 10× its own mean; a spike of k× inflates its
  interval's mean by about k/1000) whose mean is also within 100× of the smallest such mean, so
  that a run whose gradient blows up and stays up (a collapse) is measured against its gradient
  before the blow-up rather than by the blown-up level that then fills most of its intervals —
  or over all intervals if every one has a spike;
- the largest norm (the worst spike), its ratio to the typical norm, and how many intervals had a
  step above 100× the typical norm.

Directories without a ``config.json`` (a sweep's ``report/``) are skipped; runs committed before
gradient norms were recorded are listed as "not recorded", runs without evaluations yet as such,
unfinished and failed runs are marked. With ``--by-row``, one line per report row (configuration
over seeds, finished runs only) instead: how many of its runs recorded norms, their median typical
norm, how many had a step above 100× typical, and the largest step ÷ typical. Output: a Markdown
table (stdout, or ``--out``, written atomically).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from newton_lab.report import control_label, find_runs, group_runs
from newton_lab.runner import read_metrics
from newton_lab.io import write_or_print

SPIKE_FREE = 10.0  # an interval is spike-free when its maximum is at most this × its mean
SPIKE = 100.0  # a step counts as a spike above this × the typical norm


def _stats(run_dir: Path):
    """(typical norm, largest norm, intervals with a spike, intervals, records) of a run; the
    first four are None when no gradient norms were recorded."""
    records = read_metrics(run_dir)  # skips a torn last line of a live or killed run
    norms = [r["grad_norm"] for r in records if "grad_norm" in r]
    if not norms:
        return None, None, None, None, records
    calm = [n["mean"] for n in norms if n["max"] <= SPIKE_FREE * n["mean"]]
    if calm:  # leave out a blown-up level: interval means a spike's factor above the calm floor
        floor = min(calm)
        calm = [m for m in calm if m <= SPIKE * floor]
    typical = statistics.median(calm or [n["mean"] for n in norms])
    worst = max(n["max"] for n in norms)
    spikes = sum(n["max"] > SPIKE * typical for n in norms) if typical > 0 else None
    return typical, worst, spikes, len(norms), records


def _row(run_dir: Path) -> str:
    config = json.loads((run_dir / "config.json").read_text())
    state = ("" if (run_dir / "result.json").is_file()
             else " (failed)" if (run_dir / "failed.json").is_file() else " (unfinished)")
    label = f"`{run_dir.name}`{state}"
    setting = control_label(config)
    typical, worst, spikes, intervals, records = _stats(run_dir)
    if typical is None:
        return f"| {label} | {setting} | — | — | — | {'not recorded' if records else 'no evaluations yet'} |"
    if typical <= 0:
        return f"| {label} | {setting} | 0 | {worst:.3g} | — | — |"
    return (f"| {label} | {setting} | {typical:.3g} | {worst:.3g} | {worst / typical:.3g} | "
            f"{spikes} of {intervals} |")


def by_row(paths: list) -> str:
    """One line per report row (configuration over seeds) of the finished runs under ``paths``."""
    lines = ["| relaxation | n | variant | runs with recorded norms | typical norm (median over runs) "
             f"| runs with a step > {SPIKE:g}× typical | largest step ÷ typical |",
             "|---|---|---|---|---|---|---|"]
    for g in group_runs(find_runs(paths)):
        stats = [_stats(d) for _, d, _ in g.runs]
        rec = [s for s in stats if s[0] is not None and s[0] > 0]
        head = f"| {g.label()} | {g.config.get('n', '')} | {g.variant_label()} | {len(rec)} of {len(g.runs)} |"
        if not rec:
            lines.append(head + " — | — | — |")
            continue
        lines.append(head + f" {statistics.median(s[0] for s in rec):.3g} | "
                     f"{sum(s[2] > 0 for s in rec)} of {len(rec)} | {max(s[1] / s[0] for s in rec):.3g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path,
                    help="run directories (with --by-row also directories of runs and glob patterns)")
    ap.add_argument("--by-row", action="store_true",
                    help="one line per report row (configuration over seeds) of the finished runs: "
                         "how many runs recorded norms, their median typical norm, how many had a "
                         "step above the spike level, and the largest step ÷ typical")
    ap.add_argument("--out", type=Path, help="write the table to this file instead of stdout")
    args = ap.parse_args(argv)
    if args.by_row:
        try:
            text = by_row(args.runs)
        except ValueError as exc:  # no such directory, a pattern matching nothing, an unreadable run
            ap.error(str(exc))
    else:
        runs = [r for r in args.runs if (r / "config.json").is_file()]
        if not runs:
            ap.error(f"no run directory (with a config.json) among: {', '.join(map(str, args.runs))}")
        lines = ["| run | setting | typical norm | largest norm | ratio | "
                 f"intervals with a step > {SPIKE:g}× typical |", "|---|---|---|---|---|---|"]
        lines += [_row(r) for r in sorted(runs)]
        text = "\n".join(lines) + "\n"
    write_or_print(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
