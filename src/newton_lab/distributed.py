"""Data parallelism: one process per device, started by ``torchrun``.

``torchrun --nproc-per-node K -m newton_lab train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (gloo on CPU, NCCL on GPU). Every
rank draws the same global batch from the same seeded generator and trains on its own
contiguous slice of it; ``DistributedDataParallel`` averages the parameter gradients, and
:class:`~newton_losses.NewtonLoss` all-reduces the Fisher / batch Hessian, so the run follows
the single-process run on the global batch (up to the order of floating-point sums).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "setup", "teardown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes; ``active`` under torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup(device_type: str) -> DistContext:
    """Join the process group when started by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(rank=rank, world=world, local_rank=local_rank, active=True)


def teardown(ctx: DistContext, *, failed: bool = False) -> None:
    """Leave the process group. After success, all ranks first meet at a barrier: destroying a
    gloo group while another rank still completes the last collective aborts the process
    ("terminate called without an active exception"). After a failure a barrier could wait
    for a rank that will never come, so the group is destroyed directly."""
    if ctx.active and dist.is_initialized():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()
