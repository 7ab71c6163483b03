"""The README's figure: what the float32 rounding of the ranking BCE does to training, and what
repairs it (RESULTS.md §2, "Where the spikes come from", the float64 control and the exact loss).

For each spiking relaxation at n = 5 (NeuralSort, SoftSort, the logistic odd-even network;
5 seeds each), the test exact match over training steps (mean over seeds, band: the range over
seeds) of four committed rows of the study:

- the baseline on the naive float32 BCE (``results/study/table``, ``loss=bce``),
- NL-Fisher (λ = 0.1, batch damping) on the same naive loss (``results/study/table``),
- the baseline with the loss computed in float64 (``results/study/float64``),
- the baseline on the exact float32 BCE, the library's default (``results/study/exact``).

Reads only committed runs (no training)::

    python scripts/readme_figure.py --out docs/figures/precision.png
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

PANELS = (
    ("NeuralSort (τ = 1)", "neuralsort", {}),
    ("SoftSort (τ = 1)", "softsort", {}),
    ("logistic odd-even network (β = 10)", "odd_even", {"sigmoid": "logistic"}),
)
ROWS = (  # label, directory pattern ({m}: method), colour
    ("naive float32 BCE", "results/study/table/ranking-{m}-n5-none-s*", "tab:red"),
    ("NL-Fisher on the naive BCE", "results/study/table/ranking-{m}-n5-fisher-lam0.1b-s*", "tab:orange"),
    ("float64 loss", "results/study/float64/ranking-{m}-n5-none-loss64-s*", "tab:blue"),
    ("exact float32 BCE (default)", "results/study/exact/ranking-{m}-bce_exact-n5-none-s*", "tab:green"),
)


def _runs(pattern: str, args: dict) -> list[Path]:
    """Finished run directories matching ``pattern`` whose method arguments include ``args``."""
    out = []
    for d in sorted(glob.glob(str(ROOT / pattern))):
        d = Path(d)
        if not (d / "result.json").exists():
            continue
        cfg = json.loads((d / "config.json").read_text())
        if all(cfg.get("method_args", {}).get(k) == v for k, v in args.items()):
            out.append(d)
    return out


def _curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    steps, acc = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "test" in rec and "exact" in rec["test"]:
            steps.append(rec["step"])
            acc.append(100 * rec["test"]["exact"])
    return np.array(steps), np.array(acc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/figures/precision.png", help="PNG file to write")
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.8), sharey=True)
    for ax, (title, method, margs) in zip(axes, PANELS):
        for label, pattern, color in ROWS:
            runs = _runs(pattern.format(m=method), margs)
            if not runs:
                raise SystemExit(f"no finished runs match {pattern.format(m=method)}")
            curves = [_curve(r) for r in runs]
            k = min(len(s) for s, _ in curves)
            steps = curves[0][0][:k]
            vals = np.stack([c[:k] for _, c in curves])
            ax.plot(steps, vals.mean(0), color=color, label=f"{label} ({len(runs)} seeds)")
            ax.fill_between(steps, vals.min(0), vals.max(0), color=color, alpha=0.12, lw=0)
        ax.set_title(f"{title}, n = 5", fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test exact match % (mean; band: seed range)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [l.rsplit(" (", 1)[0] for l in labels], loc="lower center", ncol=4, fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out = ROOT / a.out if not Path(a.out).is_absolute() else Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
