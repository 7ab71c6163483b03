"""What the first call of a dense-Hessian Newton loss spends choosing its chunk size.

    python scripts/chunk_tuning_cost.py [--batch 8]

``NewtonLoss(curvature="hessian")`` with the default ``hessian_method="auto"`` builds each
set's m × m Hessian from m backward passes, batched (vmap) in chunks whose size
``curvature.choose_chunk_size`` picks by timing on the first call. This script measures, on one
batch of the relaxed Bellman-Ford loss (the shortest-path task's network outputs at
initialization on 12 × 12 terrain tiles, so m = 144; ``--batch`` sets):

- the time ``choose_chunk_size`` takes and the chunk it picks;
- the first and the second call of the Newton loss (forward + backward), so the tuning's cost
  can be read against the work it tunes;
- the cost per row of each candidate chunk, timed once after a warm-up.

Wall times on a shared machine are noisy: read the ratios, not the seconds.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import newton_losses.curvature as curv
from newton_losses import NewtonLoss
from newton_lab.config import protocol_config
from newton_lab.runner import build_task, seed_run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="sets per batch")
    args = ap.parse_args(argv)
    if args.batch < 1:
        ap.error("--batch must be ≥ 1")

    cfg = protocol_config("shortest_path", "tiny", method="bf_for", batch_size=args.batch)
    task = build_task(cfg, torch.device("cpu"), torch.float32)
    x, target = task.sample(cfg.batch_size, seed_run(cfg.seed))
    y = task.outputs(task.model, x).detach()

    tuned = {}
    choose = curv.choose_chunk_size

    def timed_choose(*a, **k):
        t0 = time.perf_counter()
        c = choose(*a, **k)
        tuned.update(chunk=c, seconds=time.perf_counter() - t0)
        return c

    curv.choose_chunk_size = timed_choose
    try:
        newton = NewtonLoss(task.loss_fn, curvature="hessian", lam=0.5, damping="batch")
        calls = []
        for _ in range(2):
            yy = y.clone().requires_grad_(True)
            t0 = time.perf_counter()
            newton(yy, target).backward()
            calls.append(time.perf_counter() - t0)
    finally:
        curv.choose_chunk_size = choose

    m = y[0].numel()
    print(f"relaxed Bellman-Ford (For, {cfg.method_args['loss'].upper()}), 12×12 tiles: "
          f"N = {y.shape[0]} sets, m = {m}")
    print(f"choose_chunk_size: {tuned['seconds']:.2f} s, picked chunk {tuned['chunk']}")
    print(f"first call (with tuning): {calls[0]:.2f} s; second call: {calls[1]:.2f} s; "
          f"tuning / second call = {tuned['seconds'] / calls[1]:.1f}×")

    flat = y.reshape(y.shape[0], -1).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(task.loss_fn(flat.reshape(y.shape), target).sum(), flat, create_graph=True)
    basis = torch.eye(m).unsqueeze(1).expand(m, flat.shape[0], m)
    print("| chunk | ms per row |")
    print("|---:|---:|")
    for c in sorted({min(c, m) for c in (1, 4, 16, 64)}):
        curv.batched_grad(g, flat, basis[:c], chunk_size=c)  # warm-up
        t0 = time.perf_counter()
        curv.batched_grad(g, flat, basis[:c], chunk_size=c)
        print(f"| {c} | {1000 * (time.perf_counter() - t0) / c:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
