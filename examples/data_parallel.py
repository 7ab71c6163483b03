"""A two-process data-parallel run (DistributedDataParallel, gloo on CPU) with a Newton loss.

    python examples/data_parallel.py            # about 15 s on one CPU core (two processes)

Under torch.distributed, NewtonLoss all-reduces the curvatures that are shared by the batch —
the empirical Fisher F = (1/N) Σ g_i g_iᵀ and the batch-averaged Hessian — so every process
solves with the matrix of the GLOBAL batch, as one process holding the whole batch would
(docs/INTEGRATION.md, "Data parallelism"). With damping="batch" the λ added to the Fisher is
λ times the mean |eigenvalue| of that global matrix, so it is the same on every process too.
Each process's loss is the mean over its own samples, and DDP averages the parameter gradients,
which makes the global mean.

The script spawns two processes, each with half of a batch of 64 ranking problems, and one
process with the whole batch, and compares:

1. the Newton directions of the first batch and the damping λ·s each process used — with the
   all-reduce (the default) and without it (``distributed=False``: each process's Fisher from
   its own 32 samples);
2. the network's weights after 30 DDP training steps against the single-process run.

Everything in float64, so "the same" means equal to rounding.
"""
from __future__ import annotations

import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from newton_losses import NewtonLoss
from newton_losses.sorting import NeuralSort, RankingLoss

BATCH, ITEMS, FEATURES, STEPS, WORLD = 64, 5, 8, 30, 2
# float64 everywhere, so that "the same" means equal to rounding (spawned processes import this
# module again, so they get it too)
torch.set_default_dtype(torch.float64)


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of a step (step −1: held out): features (64, 5, 8) of 5 items per set,
    their true values (64, 5) — a noisy linear function of the features."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, ITEMS, FEATURES, generator=g)
    w = torch.linspace(-1, 1, FEATURES)
    return x, x @ w + 0.3 * torch.randn(BATCH, ITEMS, generator=g)


def make_net() -> nn.Module:
    torch.manual_seed(0)                      # the same initial weights on every process
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(-2))


def run(rank: int, world: int, distributed: bool) -> dict:
    """Train on this process's slice of every batch; return the first directions and the weights."""
    net = make_net()
    model = DistributedDataParallel(net) if world > 1 else net
    newton = NewtonLoss(RankingLoss(NeuralSort(tau=1.0)), curvature="fisher", lam=0.1, damping="batch",
                        distributed=distributed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    out = {}
    for step in range(STEPS):
        x, values = data(step)
        x, values = x[part], values[part]     # this process's samples of the global batch
        scores = model(x)                     # (32, 5) scores; (64, 5) for one process
        if step == 0:
            out["direction"] = newton.direction(scores, values)
        loss = newton(scores, values)
        if step == 0:
            out["lam_effective"] = newton.last_diagnostics.lam_effective
        opt.zero_grad()
        loss.backward()                       # DDP averages the parameter gradients over processes
        opt.step()
    out["weights"] = torch.cat([p.detach().flatten() for p in net.parameters()])
    with torch.no_grad():                     # held-out sets: how many does the network rank exactly?
        x, values = data(-1)
        out["exact"] = float((net(x).argsort(-1) == values.argsort(-1)).all(-1).double().mean())
    return out


def untrained() -> float:
    x, values = data(-1)
    with torch.no_grad():
        return float((make_net()(x).argsort(-1) == values.argsort(-1)).all(-1).double().mean())


def worker(rank: int, world: int, tmp: str) -> None:
    # One process per rank; gloo runs on CPUs. A file in a scratch directory is the rendezvous
    # (with torchrun: init_process_group("gloo") and the environment it sets).
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    torch.set_num_threads(1)                  # two processes: one thread each
    try:
        torch.save({"global": run(rank, world, distributed=True), "local": run(rank, world, distributed=False)},
                   f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(WORLD, tmp), nprocs=WORLD, join=True)
        ranks = [torch.load(f"{tmp}/rank{r}.pt") for r in range(WORLD)]
    single = run(0, 1, distributed=False)

    print(f"NeuralSort ranking loss, NewtonLoss(fisher, λ = 0.1, damping='batch'), global batch {BATCH}, "
          f"{STEPS} SGD steps (float64)")
    print(f"  one process, {BATCH} samples per step: held-out sets ranked exactly {100 * single['exact']:.1f}% "
          f"(untrained: {100 * untrained():.1f}%)")
    print(f"  {WORLD} gloo processes × {BATCH // WORLD} samples, compared with it:")
    for key, label in (("global", "all-reduced Fisher (default)"), ("local", "distributed=False (local)")):
        d = torch.cat([r[key]["direction"] for r in ranks])
        lam = ", ".join(f"{r[key]['lam_effective']:.4g}" for r in ranks)
        dw = max(float((r[key]["weights"] - single["weights"]).abs().max()) for r in ranks)
        print(f"    {label}:")
        dd = float((d - single["direction"]).abs().max())
        print(f"      {'first batch, Newton directions':32s} max difference {dd:.1e}")
        print(f"      {'λ·s added to the Fisher':32s} {lam} (one process: {single['lam_effective']:.4g})")
        print(f"      {f'weights after {STEPS} steps':32s} max difference {dw:.1e}; "
              f"held-out exact {100 * ranks[0][key]['exact']:.1f}%")
    print("max weight difference with the all-reduce "
          f"{max(float((r['global']['weights'] - single['weights']).abs().max()) for r in ranks):.1e}")


if __name__ == "__main__":                # needed: mp.spawn imports this module in each process
    main()
