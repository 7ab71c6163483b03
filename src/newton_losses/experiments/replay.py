"""Replay a run's baseline training step by step, to measure things the runner does not record.

:func:`replay_baseline` trains the plain loss of a run configuration exactly as :func:`~.runner.train`
does for ``variant="none"`` — same seeding (:func:`~.runner.seed_run`: model initialization, then
the batch stream), data, network, Adam learning rate and schedule — without checkpoints,
evaluation or gradient clipping, and hands the caller every step *before* the optimizer step:
the batch, the network outputs and the loss, with the autograd graph alive. The analysis scripts
(``scripts/curvature_trace.py``, ``scripts/spike_response.py``) evaluate curvatures and Newton
losses on exactly the batches and network states of a committed baseline run;
``tests/test_scripts.py`` checks the replay against the runner's recorded losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .config import RunConfig
from .runner import build_task, seed_run

__all__ = ["ReplayStep", "replay_baseline"]


@dataclass
class ReplayStep:
    """One training step of a replay, before the optimizer step.

    Attributes:
        step: steps completed before this one (0 for the first).
        task: the run's task (its ``loss_fn``, ``outputs``, ...).
        params: the network's trainable parameters.
        y: network outputs of the batch, (N, m) or (N, *shape), with their graph.
        target: the batch's targets.
        loss: the plain loss ``task.loss_fn(y, target).mean()`` (a scalar with its graph); its
            gradient drives the step after the caller returns. Take other gradients with
            ``retain_graph=True``; leave ``p.grad`` alone (it is reset before the step).
    """

    step: int
    task: Any
    params: list
    y: torch.Tensor
    target: Any
    loss: torch.Tensor


def replay_baseline(cfg: RunConfig, steps: int) -> Iterator[ReplayStep]:
    """Yield the first ``steps`` steps of ``cfg``'s baseline training on the CPU (see the module).

    ``cfg`` may name a Newton variant: the replay trains its plain loss anyway (a Newton run's
    batches and initialization are the same as its baseline's). Raises ValueError for
    ``steps < 1`` or a configuration that does not validate.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    cfg = cfg.validate()
    dtype = getattr(torch, cfg.dtype)
    generator = seed_run(cfg.seed)  # as the runner: model initialization, then the batch stream
    task = build_task(cfg, torch.device("cpu"), dtype)
    net = task.model.to(dtype=dtype)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, cfg.lr_milestones, cfg.lr_gamma)
    for step in range(steps):
        x, target = task.sample(cfg.batch_size, generator)
        y = task.outputs(net, x)
        loss = task.loss_fn(y, target).mean()
        yield ReplayStep(step, task, params, y, target, loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
