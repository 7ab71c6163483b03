"""Two gloo processes with half a batch each give the single-process Newton directions."""
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from newton_losses import NewtonLoss

sys.path.insert(0, os.path.dirname(__file__))
from _losses import wavy  # noqa: E402

N, M = 8, 5


def _problem():
    gen = torch.Generator().manual_seed(123)
    W = torch.randn(4, M, dtype=torch.float64, generator=gen)
    t = torch.randn(N, M, dtype=torch.float64, generator=gen)
    y = torch.randn(N, M, dtype=torch.float64, generator=gen)
    return W, t, y


def _directions(curvature, rank=None, world=1):
    W, t, y = _problem()
    if rank is not None:
        half = N // world
        sl = slice(rank * half, (rank + 1) * half)
        t, y = t[sl], y[sl]

    def loss(yy, tt):
        return wavy(W, tt)(yy)

    newton = NewtonLoss(loss, curvature=curvature, lam=0.1)
    yl = y.clone().requires_grad_(True)
    newton(yl, t).backward()
    # The gradient that reaches y is d/N_local; DDP averages parameter gradients over ranks,
    # so the effective weight is d/(world·N_local) = d/N — compare the directions d themselves.
    return yl.grad * y.shape[0]


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        res = {c: _directions(c, rank, world) for c in ("fisher", "hessian_batch", "hessian")}
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_two_gloo_processes_match_one_process(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for curvature in ("fisher", "hessian_batch", "hessian"):
        single = _directions(curvature)
        both = torch.cat([p[curvature] for p in parts])
        torch.testing.assert_close(both, single, rtol=1e-10, atol=1e-12)
    # Sanity: without the all-reduce the Fisher directions would differ.
    local = torch.cat([_local_fisher(r, world) for r in range(world)])
    assert not torch.allclose(local, _directions("fisher"))


def _local_fisher(rank, world):
    return _directions("fisher", rank, world)
