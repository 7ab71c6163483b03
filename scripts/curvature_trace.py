"""Curvature along a baseline run: how the per-sample Hessian and the Newton direction change as
the network learns.

    python scripts/curvature_trace.py RUN_DIR [--steps 351] [--every 50] [--lam 10 ...]

RUN_DIR is a committed run (its ``config.json`` is read; only the task, loss and data settings
matter). The script trains that run's *baseline* (the plain loss, Adam at the run's learning
rate, same seed and batch size) for ``--steps`` steps and, every ``--every`` steps, on the
current batch:

- the per-sample Hessians' eigenvalues ∇²ℓ_i(y_i) (m × m, float64): quantiles over the batch of
  the smallest and the largest eigenvalue;
- for each λ: the cosine between the network gradient of the Newton loss (the run's variant and
  solver settings, with that λ) and the plain gradient, and the ratio of their norms.

A cosine near 1 means the Newton loss is a rescaled gradient (Adam undoes the scale); a cosine far
from 1 means the curvature changes the direction. Output: a Markdown table on stdout. Used for
RESULTS.md §4 (the relaxed Bellman-Ford NL-Hessian runs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from newton_losses.curvature import hessian_blocks
from newton_losses.experiments.config import RunConfig
from newton_losses.experiments.runner import build_task, newton_loss_for


def _config(run_dir: Path, overrides: dict) -> RunConfig:
    path = run_dir / "config.json" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (give a run directory with a config.json)")
    data = json.loads(path.read_text())
    data = data.get("config", data)  # result.json nests it
    return RunConfig.from_dict({**data, **overrides}).validate()


def _flat_grad(params) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in params])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--steps", type=int, default=351, help="baseline training steps (default 351)")
    ap.add_argument("--every", type=int, default=50, help="measure every k steps (default 50)")
    ap.add_argument("--lam", type=float, nargs="+", default=None,
                    help="λ values of the Newton loss (default: the run's λ)")
    ap.add_argument("--variant", default=None, help="Newton variant (default: the run's; baseline runs need one)")
    ap.add_argument("--train-size", type=int, default=2000,
                    help="training maps/sets loaded (default 2000; the measurement needs few)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        ap.error("--steps and --every must be >= 1")

    overrides = {"train_size": args.train_size} if args.train_size else {}
    cfg = _config(args.run_dir, overrides)
    variant = args.variant or (cfg.variant if cfg.variant != "none" else None)
    if variant is None:
        ap.error("the run is a baseline: name a Newton variant with --variant")
    lams = args.lam or [cfg.lam]
    torch.manual_seed(cfg.seed)
    task = build_task(cfg, torch.device("cpu"), torch.float32)
    net = task.model
    params = [p for p in net.parameters() if p.requires_grad]
    newton = {lam: newton_loss_for(cfg.replace(variant=variant, lam=lam).validate(), task)
              for lam in lams}
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    q = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    head = "| step | train loss | min eigenvalue (min / median / max over the batch) | max eigenvalue (min / median / max) |"
    head += "".join(f" cos, norm ratio (λ={lam:g}) |" for lam in lams)
    print(f"Baseline of {args.run_dir} ({cfg.method} {cfg.method_args}), Newton variant {variant}"
          f"{f', CG ≤ {cfg.cg_max_iter}' if cfg.cg_max_iter else ''}, damping {cfg.damping}\n")
    print(head)
    print("|" + "---|" * (4 + len(lams)))
    for step in range(args.steps):
        x, target = task.sample(cfg.batch_size, gen)
        y = task.outputs(net, x)
        loss = task.loss_fn(y, target).mean()
        if step % args.every == 0:
            N = y.shape[0]
            yf = y.detach().reshape(N, -1).requires_grad_(True)
            (g,) = torch.autograd.grad(task.loss_fn(yf.reshape(y.shape), target).sum(), yf, create_graph=True)
            ev = torch.linalg.eigvalsh(hessian_blocks(g, yf).detach().to(torch.float64))
            opt.zero_grad(set_to_none=True)
            loss.backward(retain_graph=True)
            gb = _flat_grad(params).clone()
            cells = []
            for lam in lams:
                opt.zero_grad(set_to_none=True)
                newton[lam](y, target).backward(retain_graph=True)
                gn = _flat_grad(params)
                cos = float(gn @ gb / (gn.norm() * gb.norm()).clamp_min(1e-300))
                cells.append(f" {cos:.2f}, {float(gn.norm() / gb.norm().clamp_min(1e-300)):.2g} |")
            lo = " / ".join(f"{v:.2g}" for v in ev[:, 0].quantile(q).tolist())
            hi = " / ".join(f"{v:.2g}" for v in ev[:, -1].quantile(q).tolist())
            print(f"| {step} | {loss.item():.4f} | {lo} | {hi} |" + "".join(cells), flush=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
