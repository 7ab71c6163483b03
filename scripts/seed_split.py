"""A Newton row against its baseline, split by the seed its λ was tuned on.

    python scripts/seed_split.py RUN_DIR_OR_GLOB_OR_SWEEP [...] [--tuning-seed 0] [--out FILE.md]

When λ was chosen on one seed's validation accuracy (RESULTS §4: λ = 10 for relaxed
Bellman-Ford and λ = 1 for the perturbed optimizer + Fenchel-Young, both on seed 0), the runs of
that seed were part of the choice and its test accuracy is not an independent estimate. For
every Newton row among the finished runs and its baseline (the report's pairing: same task,
method, arguments and protocol), this prints

- all seeds: mean ± std of the test metric (the report's primary one, at the best validation),
  Δ and Welch's p;
- the tuning seed alone: both values and Δ;
- the other seeds only (the ones the choice never saw): mean ± std, Δ, Welch's p;
- the per-seed spread: the standard deviation of each side over the other seeds and the
  Brown-Forsythe test (Levene's test around the median) of equal variances — does the Newton
  loss widen the spread?
- every seed's values, baseline / Newton, in seed order.

Output: Markdown (stdout, or ``--out``, written atomically).
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from newton_lab import registry
from newton_lab.io import emit_table
from newton_lab.report import _baseline_key, _scale, find_runs, group_runs, welch


def _fmt(v: np.ndarray) -> str:
    if v.size == 0:
        return "—"
    return f"{v.mean():.1f}" if v.size == 1 else f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def _p(a: np.ndarray, b: np.ndarray) -> str:
    if a.size < 2 or b.size < 2:
        return ""
    _, p = welch(a, b)
    return f"{p:.3g}"


def _spread_p(a: np.ndarray, b: np.ndarray) -> str:
    if a.size < 2 or b.size < 2 or (a.std() == 0 and b.std() == 0):
        return ""
    from scipy import stats

    return f"{stats.levene(a, b, center='median').pvalue:.3g}"


def split_table(paths: list, tuning_seed: int = 0) -> str:
    groups = group_runs(find_runs(paths))
    by_key = {g.key: g for g in groups}
    rows = []
    for g in groups:
        if g.config["variant"] == "none":
            continue
        base = by_key.get(_baseline_key(g.config))
        if base is None:
            continue
        metric = registry.task(g.task).metrics[0]
        scale = _scale(metric)
        b = {s: scale * r["best"]["test"][metric] for s, _, r in base.runs}
        n = {s: scale * r["best"]["test"][metric] for s, _, r in g.runs}
        seeds = sorted(set(b) & set(n))
        rest = [s for s in seeds if s != tuning_seed]
        bv, nv = np.array([b[s] for s in seeds]), np.array([n[s] for s in seeds])
        br, nr = np.array([b[s] for s in rest]), np.array([n[s] for s in rest])
        tuned = (f"{b[tuning_seed]:.1f} → {n[tuning_seed]:.1f} ({n[tuning_seed] - b[tuning_seed]:+.1f})"
                 if tuning_seed in b and tuning_seed in n else "—")
        delta_rest = f"{nr.mean() - br.mean():+.1f}" if rest else "—"
        sd = (f"{br.std(ddof=1):.1f} / {nr.std(ddof=1):.1f}" if len(rest) > 1 else "—")
        per_seed = ", ".join(f"s{s}: {b[s]:.1f}/{n[s]:.1f}" for s in seeds)
        rows.append(
            f"| {g.label()} | {g.variant_label()} | {len(seeds)} | {_fmt(bv)} | {_fmt(nv)} | "
            f"{nv.mean() - bv.mean():+.1f} | {_p(nv, bv)} | {tuned} | {len(rest)} | {_fmt(br)} | {_fmt(nr)} | "
            f"{delta_rest} | {_p(nr, br)} | {sd} | {_spread_p(nr, br)} | {per_seed} |")
    if not rows:
        raise ValueError("no Newton row with a baseline among the finished runs")
    unit = "%" if registry.is_percent(registry.task(groups[0].task).metrics[0]) else ""
    head = (f"| method | variant | seeds | baseline{unit and ' %'} | Newton{unit and ' %'} | Δ | p | "
            f"seed {tuning_seed} (tuning): baseline → Newton (Δ) | other seeds | baseline | Newton | Δ | p | "
            f"std baseline / Newton | p equal spread | per seed (baseline/Newton) |\n"
            + "|---" * 16 + "|\n")
    note = (f"\nTest metric at the best validation; p: Welch's t-test (unadjusted); \"other seeds\": every "
            f"seed but {tuning_seed}, on which λ was chosen; p equal spread: Brown-Forsythe (Levene around "
            "the median) over the other seeds.\n")
    return head + "\n".join(rows) + "\n" + note


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="run directories, globs or sweep files")
    p.add_argument("--tuning-seed", type=int, default=0, help="the seed λ was chosen on (default 0)")
    p.add_argument("--out", help="Markdown file to write (default: stdout)")
    a = p.parse_args(argv)
    return emit_table(p, lambda: split_table(a.paths, a.tuning_seed), a.out)


if __name__ == "__main__":
    sys.exit(main())
