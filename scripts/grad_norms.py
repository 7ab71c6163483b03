"""Gradient-norm spikes of committed runs, from their ``metrics.jsonl``.

    python scripts/grad_norms.py RUN_DIR [RUN_DIR ...] [--out FILE.md]

Every evaluation interval of a run records the norm of the network-parameter gradient — of the
loss the run trains with: the plain loss for a baseline (before clipping, for runs with
``clip_grad_norm``), the Newton loss for a Newton run — as its mean and maximum over the
interval's steps. Per run this prints:

- the typical norm: the median of the interval means over the intervals without a spike (an
  interval whose maximum is more than 10× its own mean; a spike of k× inflates its interval's
  mean by about k/1000), or over all intervals if every one has a spike;
- the largest norm (the worst spike), its ratio to the typical norm, and how many intervals had a
  step above 100× the typical norm.

Directories without a ``config.json`` (a sweep's ``report/``) are skipped; runs committed before
gradient norms were recorded are listed as "not recorded", runs without evaluations yet as such,
unfinished and failed runs are marked. Output: a Markdown table (stdout, or ``--out``, written
atomically).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from newton_losses.experiments.runner import read_metrics
from newton_losses.io import atomic_write_text

SPIKE_FREE = 10.0  # an interval is spike-free when its maximum is at most this × its mean
SPIKE = 100.0  # a step counts as a spike above this × the typical norm


def _row(run_dir: Path) -> str:
    config = json.loads((run_dir / "config.json").read_text())
    state = ("" if (run_dir / "result.json").is_file()
             else " (failed)" if (run_dir / "failed.json").is_file() else " (unfinished)")
    label = f"`{run_dir.name}`{state}"
    setting = f"clip {config['clip_grad_norm']:g}" if config.get("clip_grad_norm") else ""
    records = read_metrics(run_dir)  # skips a torn last line of a live or killed run
    norms = [r["grad_norm"] for r in records if "grad_norm" in r]
    if not norms:
        return f"| {label} | {setting} | — | — | — | {'not recorded' if records else 'no evaluations yet'} |"
    calm = [n["mean"] for n in norms if n["max"] <= SPIKE_FREE * n["mean"]]
    typical = statistics.median(calm or [n["mean"] for n in norms])
    worst = max(n["max"] for n in norms)
    if typical <= 0:
        return f"| {label} | {setting} | 0 | {worst:.3g} | — | — |"
    spikes = sum(n["max"] > SPIKE * typical for n in norms)
    return (f"| {label} | {setting} | {typical:.3g} | {worst:.3g} | {worst / typical:.3g} | "
            f"{spikes} of {len(norms)} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories")
    ap.add_argument("--out", type=Path, help="write the table to this file instead of stdout")
    args = ap.parse_args(argv)
    runs = [r for r in args.runs if (r / "config.json").is_file()]
    if not runs:
        ap.error(f"no run directory (with a config.json) among: {', '.join(map(str, args.runs))}")
    lines = ["| run | setting | typical norm | largest norm | ratio | "
             f"intervals with a step > {SPIKE:g}× typical |", "|---|---|---|---|---|---|"]
    lines += [_row(r) for r in sorted(runs)]
    text = "\n".join(lines) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
