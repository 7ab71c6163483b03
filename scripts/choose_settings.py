"""λ per table row, chosen on validation by a rule fixed before the runs.

    python scripts/choose_settings.py RUN_DIR_OR_GLOB [...] [--seed 0] [--margin 3]
        [--keep fisher=0.1 --keep hessian_batch=0.1 --keep gauss_newton=1]
        [--grid fisher=0.01,0.1,1 --grid hessian_batch=0.01,0.1,1 --grid gauss_newton=1,10]
        [--out FILE.md]

For every (relaxation, n, Newton variant, damping) among the finished runs of the given seed, the
best validation exact match of each λ (the run's evaluation with the highest validation exact
match, the same evaluation whose test accuracy the report shows; runs with another projection,
a CG cap or gradient clipping are left out). The rule: keep the table's λ
(``--keep``) unless another λ's validation exact match is more than ``--margin`` points higher;
then take the best one. A row whose grid (``--grid``) is not complete yet says which λ are
missing and gives a provisional choice. Test accuracies are not read. Output: a Markdown table
(stdout, or ``--out``, written atomically).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from newton_lab.report import control_label, find_runs, group_runs
from newton_lab.io import emit_table

TOL = 1e-4  # points; accuracies are float32 means


def _pairs(items: list[str], parse, what: str) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"{what}: expected VARIANT=VALUE, got {item!r}")
        try:
            out[name] = parse(value)
        except ValueError:
            raise SystemExit(f"{what}: cannot read the value of {item!r}") from None
    return out


def table(paths: list, *, seed: int, margin: float, keep: dict, grid: dict) -> str:
    rows: dict[tuple, dict[float, tuple[float, str]]] = {}
    for group in group_runs(find_runs(paths)):  # labels and normalized configurations as in the report
        cfg = group.config
        if cfg["variant"] == "none" or cfg["task"] != "ranking":
            continue
        for run_seed, run_dir, result in group.runs:
            if run_seed != seed:
                continue
            if cfg["projection"] != "abs" or cfg.get("cg_max_iter") or control_label(cfg):
                continue  # the table's Newton settings: default projection, no CG cap, no control
            key = (group.label(), cfg["n"], cfg["variant"], cfg["damping"])
            lam = float(cfg["lam"])
            rows.setdefault(key, {})[lam] = (100 * result["best"]["val"]["exact"], run_dir.name)
    if not rows:
        raise ValueError(f"no finished Newton runs of seed {seed} under {', '.join(map(str, paths))}")
    lams = sorted({lam for r in rows.values() for lam in r} | {lam for g in grid.values() for lam in g})
    lines = ["| relaxation | n | variant | " + " | ".join(f"λ={lam:g}" for lam in lams)
             + " | table's λ | rule's choice |",
             "|---|---|---|" + "---|" * len(lams) + "---|---|"]
    for (label, n, variant, damping), by_lam in sorted(rows.items()):
        cells = [f"{by_lam[lam][0]:.1f}" if lam in by_lam else "—" for lam in lams]
        kept = keep.get(variant)
        missing = [lam for lam in grid.get(variant, []) if lam not in by_lam]
        if kept is None:
            choice = "no table λ given"
        elif kept not in by_lam:
            choice = f"pending (λ={kept:g} not finished)"
        else:
            best = max(by_lam, key=lambda lam: by_lam[lam][0])
            # TOL: a gap of exactly the margin (e.g. 30 of 1,000 sets) must not be decided by float32 rounding.
            pick = best if by_lam[best][0] > by_lam[kept][0] + margin + TOL else kept
            choice = f"**{pick:g}**" + (" (changed)" if pick != kept else "")
            if missing:
                choice += f", provisional: λ={', '.join(f'{lam:g}' for lam in missing)} not finished"
        lines.append(f"| {label} | {n} | {variant} {damping} | " + " | ".join(cells)
                     + f" | {'—' if kept is None else f'{kept:g}'} | {choice} |")
    lines += ["", f"Best validation exact match % of seed {seed} per λ; — not run or not finished. Rule: "
              f"keep the table's λ unless another λ is more than {margin:g} points higher on validation."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories, directories of runs, or glob patterns")
    ap.add_argument("--seed", type=int, default=0, help="the seed the choice is made on (default 0)")
    ap.add_argument("--margin", type=float, default=3.0,
                    help="points of validation exact match another λ must win by (default 3)")
    ap.add_argument("--keep", action="append", default=[], metavar="VARIANT=LAM",
                    help="the table's λ of a variant (default: fisher=0.1 hessian_batch=0.1 gauss_newton=1)")
    ap.add_argument("--grid", action="append", default=[], metavar="VARIANT=LAM,LAM,...",
                    help="the λ grid of a variant, to flag rows not complete yet")
    ap.add_argument("--out", type=Path, help="write the table to this file instead of stdout")
    args = ap.parse_args(argv)
    if args.margin < 0:
        ap.error(f"--margin must be >= 0, got {args.margin}")
    keep = _pairs(args.keep, float, "--keep") or {"fisher": 0.1, "hessian_batch": 0.1, "gauss_newton": 1.0}
    grid = _pairs(args.grid, lambda v: [float(x) for x in v.split(",")], "--grid")
    return emit_table(ap, lambda: table(args.runs, seed=args.seed, margin=args.margin, keep=keep, grid=grid),
                      args.out)


if __name__ == "__main__":
    sys.exit(main())
