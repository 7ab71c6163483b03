"""Gradient-norm spikes of committed runs, from their ``metrics.jsonl``.

    python scripts/grad_norms.py RUN_DIR [RUN_DIR ...] [--out FILE.md]

Every evaluation interval of a run records the norm of the network-parameter gradient (before
clipping, for runs with ``clip_grad_norm``): its mean and its maximum over the interval's steps.
For each run this prints the median of the interval means (the typical norm), the largest
maximum (the worst spike), their ratio, and how many intervals had a step above 100× the typical
norm. Runs committed before gradient norms were recorded are listed as such; runs without a
result.json are marked unfinished. Output: a Markdown
table (stdout, or ``--out``, written atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path


def _row(run_dir: Path) -> str:
    metrics = run_dir / "metrics.jsonl"
    config = json.loads((run_dir / "config.json").read_text())
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    label = f"`{run_dir.name}`" + ("" if (run_dir / "result.json").is_file() else " (unfinished)")
    extra = f"clip {config['clip_grad_norm']:g}" if config.get("clip_grad_norm") else ""
    norms = [r["grad_norm"] for r in records if "grad_norm" in r]
    if not norms:
        return f"| {label} | {extra} | — | — | — | not recorded |"
    typical = statistics.median(n["mean"] for n in norms)
    worst = max(n["max"] for n in norms)
    spikes = sum(n["max"] > 100 * typical for n in norms)
    return (f"| {label} | {extra} | {typical:.3g} | {worst:.3g} | {worst / typical:.3g} | "
            f"{spikes} of {len(norms)} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories")
    ap.add_argument("--out", type=Path, help="write the table to this file instead of stdout")
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "metrics.jsonl").is_file()]
    if missing:
        ap.error(f"not run directories with a metrics.jsonl: {', '.join(missing)}")
    lines = ["| run | | typical norm (median of interval means) | largest norm | ratio | "
             "intervals with a step > 100× typical |", "|---|---|---|---|---|---|"]
    lines += [_row(r) for r in sorted(args.runs)]
    text = "\n".join(lines) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
