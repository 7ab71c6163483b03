"""How a Newton loss redistributes the update over the samples of a batch.

For a trained ranking model and a large batch of training sets, compare the per-set output-space
update of each Newton variant, ``d_i = (C + λI)^{-1} g_i`` (what the network receives, up to the
common factor 1/N), with the plain gradient ``g_i``:

- the share of the update's mass (Σ_i ‖d_i‖) on sets the model currently ranks wrongly;
- the effective sample fraction ``(Σ‖d_i‖)² / (N Σ‖d_i‖²)`` — 1 when every set contributes
  equally, ≈ k/N when k sets carry the update;
- the share carried by the top 1% of sets;
- the per-set cosine between ``d_i`` and ``g_i``.

Usage (the model: a run's ``checkpoint.pt`` or a ``state_dict`` file)::

    python -m newton_lab.analysis RUN_DIR [--model FILE] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

from newton_losses.newton import NewtonLoss
from newton_lab.config import RunConfig

__all__ = ["SETTINGS", "update_weights"]

#: (curvature, λ, damping) compared against the plain gradient.
SETTINGS = (
    ("hessian", 1.0, "batch"), ("hessian", 0.1, "batch"), ("hessian", 0.01, "batch"),
    ("hessian_batch", 0.1, "batch"), ("fisher", 0.1, "batch"),
    ("gauss_newton", 0.1, "batch"), ("gauss_newton", 0.1, "relative"),
)


def update_weights(run_dir: str | Path, model_file: Optional[str | Path] = None, *, sets: int = 1000,
                   seed: int = 5, settings=SETTINGS) -> list[dict]:
    """One row per setting (the first is the plain gradient); see the module docstring."""
    from newton_losses.sorting import permutation_matrix
    from newton_lab.tasks.ranking import ranking_metrics
    from newton_lab.runner import build_task

    run_dir = Path(run_dir)
    cfg = RunConfig.from_json((run_dir / "config.json").read_text()).validate()
    if cfg.task != "ranking":
        raise ValueError(f"{run_dir} is a {cfg.task} run; the analysis is for ranking runs")
    task = build_task(cfg, torch.device("cpu"), torch.float32)
    state = torch.load(model_file or run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    task.model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    task.model.eval()
    batch = task.train.sample(sets, generator=torch.Generator().manual_seed(seed))
    target = permutation_matrix(batch.ranks, dtype=torch.float32)
    with torch.no_grad():
        y = task.outputs(task.model, batch.images)
    wrong = ~ranking_metrics(y, batch.ranks)[0].bool()
    leaf = y.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(task.loss_fn(leaf, target).sum(), leaf)
    rows = []
    for curvature, lam, damping in (("gradient", 0.0, ""),) + tuple(settings):
        if curvature == "gradient":
            d = g
        else:
            newton = NewtonLoss(task.loss_fn, curvature=curvature, lam=lam, damping=damping)
            d = y - newton.target(y, target)
        w = d.norm(dim=1)
        cos = torch.nn.functional.cosine_similarity(d, g, dim=1)
        top = max(1, len(w) // 100)
        rows.append({
            "update": curvature if curvature == "gradient" else f"NL-{curvature} λ={lam:g} {damping}",
            "share_on_wrong_sets": float(w[wrong].sum() / w.sum()),
            "effective_sample_fraction": float(w.sum() ** 2 / (w ** 2).sum()) / len(w),
            "top_1pct_share": float(torch.sort(w, descending=True).values[:top].sum() / w.sum()),
            "cos_median": float(cos.median()), "cos_min": float(cos.min()),
        })
    rows[0]["wrong_fraction"] = float(wrong.float().mean())
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| update | share on wrongly ranked sets | effective sample fraction | top 1% of sets carry "
             "| cos(d, g) median (min) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['update']} | {r['share_on_wrong_sets']:.2f} | {r['effective_sample_fraction']:.2f} "
                     f"| {r['top_1pct_share']:.2f} | {r['cos_median']:.2f} ({r['cos_min']:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m newton_lab.analysis",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a ranking run directory (its config.json)")
    p.add_argument("--model", help="model weights (default: RUN_DIR/checkpoint.pt)")
    p.add_argument("--sets", type=int, default=1000, help="training sets in the batch (default 1000)")
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        rows = update_weights(args.run_dir, args.model, sets=args.sets)
    except (ValueError, OSError) as exc:
        print(f"analysis: {exc}", file=sys.stderr)
        return 2
    text = (f"{args.sets} training sets, {100 * rows[0]['wrong_fraction']:.0f}% ranked wrongly by the "
            f"model\n\n" + table(rows))
    print(text)
    if args.out:
        from newton_lab.io import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
