"""Replay a run's baseline training step by step, to measure things the runner does not record.

:func:`replay_baseline` trains the plain loss of a run configuration exactly as :func:`~.runner.train`
does for ``variant="none"`` — same seeding (:func:`~.runner.seed_run`: model initialization, then
the batch stream), data, network, Adam learning rate and schedule — without checkpoints,
evaluation or gradient clipping, and hands the caller every step *before* the optimizer step:
the batch, the network outputs and the loss, with the autograd graph alive. The analysis scripts
(``scripts/curvature_trace.py``, ``scripts/spike_response.py``) evaluate curvatures and Newton
losses on exactly the batches and network states of a committed baseline run;
``tests/test_scripts.py`` checks the replay against the runner's recorded losses.

Reproduced exactly: single-process runs on the CPU with the deterministic losses (the replay runs
on the CPU, one process; a run trained under torchrun or on a GPU differs in its batch
statistics, per-rank noise and floating-point order — :func:`load_run_config` warns). Callers
must not draw from the task's noise generator (the stochastic shortest-path losses): the
training loss draws from it too, and extra draws change the replayed trajectory.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from newton_lab.config import RunConfig
from newton_lab.runner import build_task, loss_inputs, read_metrics, seed_run

__all__ = ["ReplayStep", "replay_baseline", "baseline_config", "load_run_config", "fidelity"]


@dataclass
class ReplayStep:
    """One training step of a replay, before the optimizer step.

    Attributes:
        step: steps completed before this one (0 for the first).
        task: the run's task (its ``loss_fn``, ``outputs``, ...).
        params: the network's trainable parameters.
        y: network outputs of the batch, (N, m) or (N, *shape), with their graph, in the loss's
            dtype (``loss_dtype``).
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
    batches and initialization are the same as its baseline's). Gradient clipping
    (``clip_grad_norm``) is applied as the runner applies it. Raises ValueError for ``steps < 1``
    or a configuration that does not validate, and RuntimeError when the loss or the gradient
    becomes non-finite (where the runner stops the run).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    cfg = RunConfig.from_dict(cfg.to_dict()).validate()  # a copy: validate() fills in defaults
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
        y, target = loss_inputs(cfg, task.outputs(net, x), target)
        loss = task.loss_fn(y, target).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"replay of seed {cfg.seed}: non-finite loss at step {step}")
        yield ReplayStep(step, task, params, y, target, loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm)
        else:
            norm = torch.cat([p.grad.flatten() for p in params if p.grad is not None]).norm()
        if not torch.isfinite(norm):
            raise RuntimeError(f"replay of seed {cfg.seed}: non-finite parameter gradient at step {step}")
        opt.step()
        sched.step()


def load_run_config(run_dir: Path) -> RunConfig:
    """The validated configuration of a run directory (its ``config.json``), for a replay.

    Raises ValueError with the reason when the file is missing or not a run configuration;
    warns when the run's ``result.json`` says it was trained in several processes or on a GPU
    (the CPU replay then follows a slightly different trajectory).
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise ValueError(f"{path} not found (give a run directory with a config.json)")
    try:
        cfg = RunConfig.from_json(path.read_text()).validate()
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a run configuration this version can read: {exc}") from None
    result = path.parent / "result.json"
    if result.is_file():
        try:
            world = json.loads(result.read_text()).get("world_size", 1)
        except ValueError:
            world = 1
        if world != 1 or cfg.device != "cpu":
            warnings.warn(f"{path.parent} was trained with {world} process(es) on {cfg.device!r}; the "
                          "replay runs one process on the CPU and follows a slightly different "
                          "trajectory", stacklevel=2)
    return cfg


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The configuration whose training :func:`replay_baseline` reproduces for ``cfg``: no Newton
    loss (``variant="none"``, its Newton-only fields at their defaults), gradient clipping kept."""
    return cfg.replace(variant="none", cg_max_iter=0).validate()


def fidelity(run_dir: Path, losses: list, eval_every: int, rtol: float = 1e-4) -> str:
    """One sentence: does a replay follow the recorded run? Compares the replay's mean training
    loss per evaluation interval (``losses``: the loss of every replayed step, in order) with the
    ``train_loss`` the run recorded in its ``metrics.jsonl``, up to relative ``rtol``.

    A replay follows the run bit for bit on the machine kind that trained it; on another CPU the
    floating-point order of the matrix products can differ, and after a gradient spike the
    trajectories may part — the sentence then says from which interval on.

    A replay is always the *baseline's* training, so when ``run_dir`` is a Newton run the record
    compared is that of its :func:`baseline_config`'s run, looked up next to it (same folder, its
    run id); the sentence names it, or says that it is missing.
    """
    run_dir = Path(run_dir)
    try:
        cfg = load_run_config(run_dir) if (run_dir / "config.json").is_file() else None
    except ValueError:
        cfg = None
    if cfg is None or cfg.variant == "none":
        return _compare(run_dir, losses, eval_every, rtol)
    base_id = baseline_config(cfg).run_id()
    if not (run_dir.parent / base_id).is_dir():
        return (f"{run_dir.name} is a Newton run ({cfg.variant}) and the replay is its baseline's "
                f"training; the baseline run ({base_id}) is not in the same folder, so there is "
                "no record to check the replay against.")
    return (f"Checked against the baseline run of the same configuration, {base_id}: "
            + _compare(run_dir.parent / base_id, losses, eval_every, rtol))


def _compare(run_dir: Path, losses: list, eval_every: int, rtol: float) -> str:
    records = [r for r in read_metrics(run_dir) if "train_loss" in r] if run_dir.is_dir() else []
    pairs = []
    for r in records:
        end = r["step"]
        chunk = losses[max(0, end - eval_every):end]
        if end > len(losses) or not chunk:
            break
        pairs.append((end, sum(chunk) / len(chunk), r["train_loss"]))
    if not pairs:
        return "The run's recorded losses were not available to check the replay against."
    bad = next(((end, a, b) for end, a, b in pairs if abs(a - b) > rtol * max(abs(b), 1e-12)), None)
    if bad is None:
        return (f"The replay's mean training loss matches the run's record in all {len(pairs)} "
                f"intervals compared (relative difference ≤ {rtol:g}).")
    end, a, b = bad
    same = sum(1 for e, *_ in pairs if e < end)
    if same == 0:
        return (f"The replay's mean training loss departs from the run's record already in the first "
                f"interval (ending at step {end:,}: replay {a:.5g}, run {b:.5g}; relative tolerance "
                f"{rtol:g}): the replay follows its own trajectory (same data and seed; floating-point "
                "order differs across machines).")
    return (f"The replay's mean training loss matches the run's record in the first {same} of {len(pairs)} "
            f"intervals (relative difference ≤ {rtol:g}) and departs from it in the interval ending at "
            f"step {end:,} (replay {a:.5g}, run {b:.5g}): from there on the replay follows its own "
            "trajectory (same data and seed; floating-point order differs across machines).")
