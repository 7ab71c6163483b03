"""The training loop: one run in its own directory, resumable, deterministic.

Run directory (every file but the metrics log is written atomically — temporary file, fsync,
rename — so a reader, or a run killed at any instant, never sees half a file)::

    config.json         the validated RunConfig (a directory belongs to one configuration)
    metrics.jsonl       one line per evaluation (appended; truncated back on resume)
    checkpoint.pt       after every evaluation: model, optimizer, scheduler, data and noise
                        generator states, step, best-validation record, metrics-file offset
    result.json         written last: the run is finished
    failed.json         a NaN/Inf loss stopped the run (with checkpoint_nan.pt: the state
                        that produced it, and its batch)

A run killed at any point (SIGKILL included) resumes from its last checkpoint and, on the same
machine and thread count, reaches bit-identical metrics: the data generator's state is part of
the checkpoint and everything random is drawn from seeded generators. Timings are the only
non-reproducible numbers and live under the ``"time"`` key of each record.

The best evaluation (the checkpoint's ``best``, the result's test metrics) is the one with the
highest validation primary metric, or the lowest where the task says lower is better
(``registry.Task.lower_is_better``: the predict-then-optimize regret).

Per evaluation the metrics line holds the mean training loss since the previous evaluation,
validation and test metrics, the learning rate, Newton diagnostics counts, and the time per
step split into network time (data, forward, backward, optimizer) and Newton-step time
(curvature + solve, from :class:`~newton_losses.NewtonDiagnostics`).
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from newton_losses import NewtonLoss, check_precision

from newton_lab import registry
from newton_lab.config import RunConfig
from newton_lab.distributed import DistContext, setup, teardown
from newton_lab.io import atomic_write, atomic_write_text
from newton_lab.machine import machine_description

__all__ = ["RunFailed", "RunInterrupted", "RunLocked", "train", "read_metrics", "run_status", "build_task", "newton_loss_for", "seed_run"]


class RunFailed(RuntimeError):
    """The run stopped on a non-finite loss; its state is saved in the run directory."""


class RunLocked(RuntimeError):
    """Another process is running this run directory."""


class RunInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C); it resumes from its last checkpoint.

    Attributes:
        step: the step reached; checkpoint_step: the step of the last checkpoint (0: none yet).
    """

    def __init__(self, run_dir: Path, step: int, checkpoint_step: int) -> None:
        self.run_dir, self.step, self.checkpoint_step = run_dir, step, checkpoint_step
        resume = f"resume from step {checkpoint_step}" if checkpoint_step else "start again (no checkpoint yet)"
        super().__init__(f"{run_dir}: interrupted at step {step}; run the same command to {resume}")


def build_task(cfg: RunConfig, device: torch.device, dtype: torch.dtype, **kwargs: Any):
    """The task object of a configuration (its registered task's factory)."""
    return registry.task(cfg.task).factory(cfg, device=device, dtype=dtype, **kwargs)


def run_status(run_dir: str | os.PathLike) -> str:
    """``"finished"``, ``"failed"``, ``"partial"`` (has a checkpoint), ``"new"``."""
    d = Path(run_dir)
    if (d / "result.json").exists():
        return "finished"
    if (d / "failed.json").exists():
        return "failed"
    if (d / "checkpoint.pt").exists():
        return "partial"
    return "new"


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The evaluation records of a run (complete lines only)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def train(
    cfg: RunConfig,
    run_dir: str | os.PathLike,
    *,
    progress: bool = True,
    tensorboard: bool = False,
    task_kwargs: Optional[dict] = None,
    on_step: Optional[Callable[[int], None]] = None,
) -> dict:
    """Train one run into ``run_dir``, resuming from its checkpoint if there is one.

    Under torchrun every process calls this with the same arguments (see
    :mod:`.distributed`); rank 0 writes the files.

    Args:
        cfg: the run configuration (validated here, before any work).
        run_dir: the run's directory (created).
        progress: show a progress bar (rank 0).
        tensorboard: also log to ``run_dir/tensorboard`` if tensorboard is installed.
        task_kwargs: extra arguments of the task (e.g. ``mnist=`` an already loaded data set).
        on_step: called with the number of completed steps after each step (tests).

    Returns:
        The result record (also ``run_dir/result.json``).

    Raises:
        ValueError: invalid configuration, or ``run_dir`` holds another configuration.
        RunFailed: a non-finite loss (state saved, see the module docstring).
        RunLocked: another process holds the run directory.
    """
    cfg = RunConfig.from_dict(cfg.to_dict()).validate()
    device = _device(cfg.device)
    ctx = setup(device.type)
    failed = True
    try:
        if cfg.batch_size % ctx.world:
            raise ValueError(
                f"batch_size ({cfg.batch_size}) must be divisible by the number of processes "
                f"({ctx.world}): each process trains on an equal slice of the global batch"
            )
        if ctx.active and device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
        run_dir = Path(run_dir)
        with _lock(run_dir, ctx):
            result = _check_config(run_dir, cfg, ctx)  # the result if already finished
            if result is None:
                result = _Trainer(cfg, run_dir, ctx, device, progress, tensorboard, task_kwargs or {},
                                  on_step).run()
        failed = False
        return result
    finally:
        if ctx.active:
            # DistributedDataParallel sits in reference cycles that hold the process group;
            # left to interpreter shutdown, their gloo work threads abort the process
            # ("terminate called without an active exception"). Free them now.
            import gc

            gc.collect()
        teardown(ctx, failed=failed)


def loss_inputs(cfg: RunConfig, y: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
    """The network outputs ``y`` and the targets as the loss receives them: cast to
    ``cfg.loss_dtype`` (floating targets only), or unchanged when it is empty. The cast is
    differentiable, so the gradient reaches the network in the network's dtype."""
    if not cfg.loss_dtype:
        return y, target
    dtype = getattr(torch, cfg.loss_dtype)
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        target = target.to(dtype)
    return y.to(dtype), target


def newton_loss_for(cfg: RunConfig, task: Any, **kwargs: Any) -> Optional[NewtonLoss]:
    """The :class:`NewtonLoss` a run of ``cfg`` trains with (``None`` for the baseline):
    the task's loss, the variant's curvature (a stochastic method's Stein estimator for
    ``"hessian"``), λ, damping and projection; NaN/Inf samples are skipped and counted.
    ``kwargs`` override NewtonLoss arguments (benchmarks)."""
    if cfg.variant == "none":
        return None
    curvature = task.curvature(cfg.variant) if hasattr(task, "curvature") else registry.variant(cfg.variant).curvature
    options = dict(curvature=curvature, lam=cfg.lam, damping=cfg.damping, projection=cfg.projection,
                   on_nonfinite="skip")
    if cfg.cg_max_iter:  # validate() allowed it only for a matrix-free variant: force CG, capped
        options.update(solver="cg", cg_max_iter=cfg.cg_max_iter)
    return NewtonLoss(task.loss_fn, **{**options, **kwargs})


# ----------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False; use device='cpu'")
    return torch.device(name)


@contextlib.contextmanager
def _lock(run_dir: Path, ctx: DistContext):
    if not ctx.is_main:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{run_dir} is being trained by another process") from None
        yield
    finally:
        os.close(fd)


def _check_config(run_dir: Path, cfg: RunConfig, ctx: DistContext) -> Optional[dict]:
    """Write config.json, or check it equals ``cfg``; return the result if already finished."""
    error, result = None, None
    if ctx.is_main:
        path = run_dir / "config.json"
        if path.exists():
            stored = None
            try:  # fields added since the run was written (LATER_DEFAULTS) take their defaults
                stored = RunConfig.from_dict(json.loads(path.read_text())).to_dict()
            except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
                error = f"{path} is not a run configuration this version can read: {exc}"
            if error is None and stored != cfg.to_dict():
                diff = sorted(k for k in set(stored) | set(cfg.to_dict()) if stored.get(k) != cfg.to_dict().get(k))
                error = (f"{run_dir} holds a run with a different configuration (fields {diff}); "
                         "use another directory")
        else:
            atomic_write_text(path, cfg.to_json())
        if error is None and (run_dir / "result.json").exists():
            result = json.loads((run_dir / "result.json").read_text())
    error, result = ctx.broadcast_object((error, result))
    if error:
        raise ValueError(error)
    return result


class _Trainer:
    def __init__(self, cfg, run_dir, ctx, device, progress, tensorboard, task_kwargs, on_step):
        self.cfg, self.dir, self.ctx, self.device = cfg, run_dir, ctx, device
        self.dtype = getattr(torch, cfg.dtype)
        self.progress, self.on_step = progress, on_step
        batch_generator = seed_run(cfg.seed)
        if ctx.active:
            task_kwargs = {"rank": ctx.rank, **task_kwargs}
        self.task = build_task(cfg, device, self.dtype, **task_kwargs)
        self.model = self.task.model.to(device=device, dtype=self.dtype)
        self.net = self.model
        if ctx.active:
            from torch.nn.parallel import DistributedDataParallel

            if device.type == "cuda":
                # Batch statistics over the global batch, as one process would compute them
                # (SyncBatchNorm needs CUDA; on CPU each process normalizes its own slice).
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, cfg.lr_milestones, cfg.lr_gamma)
        self.newton = newton_loss_for(cfg, self.task)
        self.generator = batch_generator
        self.step = 0
        self.best: Optional[dict] = None
        self.offset = 0
        self.elapsed = 0.0
        self.totals = {"step_s": 0.0, "newton_s": 0.0, "steps": 0, "spikes": 0}
        self.spikes = SpikeCounter()
        self.checkpoint_step = 0
        self.tb = _tensorboard(run_dir) if tensorboard and ctx.is_main else None
        self._reset_interval()

    def _reset_interval(self):
        self.acc = {"loss": 0.0, "steps": 0, "step_s": 0.0, "newton_s": 0.0, "indefinite": 0, "fallback": 0,
                    "grad_norm_sum": 0.0, "grad_norm_max": 0.0, "spikes": 0,
                    "precision_checks": 0, "precision_sick": 0, "precision_worst": 0.0}

    # --------------------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            self._resume()
        except KeyboardInterrupt:
            raise RunInterrupted(self.dir, self.step, self.checkpoint_step) from None
        cfg = self.cfg
        bar = None
        if self.progress and self.ctx.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=self.dir.name[:64], unit="step",
                       dynamic_ncols=True, file=sys.stderr)
        try:
            while self.step < cfg.steps:
                self._train_step()
                self.step += 1
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    record = self._evaluate()
                    if bar is not None:  # metrics as the summary line prints them
                        p = self.task.primary
                        value = record["val"][p]
                        shown = f"{100 * value:.2f}%" if registry.is_percent(p) else f"{value:.4f}"
                        bar.set_postfix({f"val {p}": shown, "loss": f"{record['train_loss']:.4f}"})
                if self.on_step is not None:
                    self.on_step(self.step)
        except KeyboardInterrupt:
            raise RunInterrupted(self.dir, self.step, self.checkpoint_step) from None
        finally:
            if bar is not None:
                bar.close()
        try:
            return self._finish()
        except KeyboardInterrupt:  # the result is written atomically: all or nothing
            raise RunInterrupted(self.dir, self.step, self.checkpoint_step) from None

    def _train_step(self):
        cfg, ctx = self.cfg, self.ctx
        t0 = time.perf_counter()
        self.net.train()
        x, target = self.task.sample(cfg.batch_size, self.generator)
        if ctx.active:
            b = cfg.batch_size // ctx.world
            x, target = x[ctx.rank * b:(ctx.rank + 1) * b], target[ctx.rank * b:(ctx.rank + 1) * b]
        x, target = x.to(self.device), target.to(self.device)
        y, target = loss_inputs(cfg, self.task.outputs(self.net, x), target)
        finite = bool(torch.isfinite(y).all())
        if cfg.precision_every and self.step % cfg.precision_every == 0 and finite:
            self._check_precision(y, target)
        if ctx.active:
            # Agree before the Newton loss: its Fisher / batch-Hessian all-reduce must be entered
            # by every rank or by none.
            bad = ctx.all_reduce_sum(torch.tensor([0.0 if finite else 1.0], device=self.device))
            finite = bool(bad.item() == 0)
        newton_s = 0.0
        if finite and self.newton is not None:
            loss = self.newton(y, target)
            diag = self.newton.last_diagnostics
            finite = not diag.skipped
            newton_s = diag.time_gradient_s + diag.time_curvature_s + diag.time_solve_s
            self.acc["indefinite"] += diag.n_indefinite
            self.acc["fallback"] += diag.n_fallback
        elif finite:
            loss = self.task.loss_fn(y, target).mean()
            finite = bool(torch.isfinite(loss))
        else:
            loss = torch.full((), float("nan"))
        stats = torch.tensor([float(loss.detach()) if finite else 0.0, 0.0 if finite else 1.0],
                             dtype=torch.float64)
        stats = ctx.all_reduce_sum(stats.to(self.device)).cpu()
        if stats[1] > 0:
            self._fail(x, target, float(loss.detach()) if not finite else float("nan"))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm:  # returns the norm before clipping
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm))
        else:
            grad_norm = _grad_norm(self.model.parameters())
        if not math.isfinite(grad_norm):  # before the step: the saved state is the last good one
            self._fail(x, target, float(stats[0]),
                       what=f"non-finite parameter gradient (norm {grad_norm}, loss {float(stats[0]):.6g})")
        self.opt.step()
        self.sched.step()
        dt = time.perf_counter() - t0
        self.acc["loss"] += float(stats[0]) / ctx.world
        self.acc["grad_norm_sum"] += grad_norm
        self.acc["grad_norm_max"] = max(self.acc["grad_norm_max"], grad_norm)
        spike = self.spikes.add(grad_norm)
        self.acc["spikes"] += spike
        if "spikes" in self.totals:  # not for a run resumed from a checkpoint older than the count
            self.totals["spikes"] += spike
        self.acc["steps"] += 1
        self.acc["step_s"] += dt
        self.acc["newton_s"] += newton_s
        self.totals["step_s"] += dt
        self.totals["newton_s"] += newton_s
        self.totals["steps"] += 1

    def _check_precision(self, y: torch.Tensor, target) -> None:
        """The batch's per-sample loss gradients in the loss's dtype against float64 (each process
        checks its own slice; the main process's figures are recorded)."""
        report = check_precision(self.task.loss_fn, y.detach(), target)  # deterministic losses only
        for acc in (self.acc, self.totals):
            acc["precision_checks"] = acc.get("precision_checks", 0) + 1
            acc["precision_sick"] = acc.get("precision_sick", 0) + int(report.sick.numel())
            acc["precision_worst"] = max(acc.get("precision_worst", 0.0), report.worst)

    def _evaluate(self) -> dict:
        t0 = time.perf_counter()
        record = None
        if self.ctx.is_main:
            self.model.eval()
            val = self.task.evaluate(self.model, "val")
            test = self.task.evaluate(self.model, "test")
            self.model.train()
            a = self.acc
            k = max(a["steps"], 1)
            p = self.task.primary
            record = {
                "step": self.step,
                "train_loss": a["loss"] / k,
                "val": val,
                "test": test,
                "lr": self.opt.param_groups[0]["lr"],
                "newton": {"indefinite": a["indefinite"], "fallback": a["fallback"]},
                # the parameters' gradient norm over the interval, before any clipping
                "grad_norm": {"mean": a["grad_norm_sum"] / k, "max": a["grad_norm_max"]},
                # steps whose gradient norm exceeded SPIKE × the typical norm (SpikeCounter)
                "spikes": a["spikes"],
            }
            if a["precision_checks"]:
                record["precision"] = {"checks": a["precision_checks"], "sick": a["precision_sick"],
                                       "worst": a["precision_worst"]}
            # the best validation of the primary metric: the highest, or the lowest for a task
            # whose primary metric is an error (registry.Task.lower_is_better: regret)
            if self.best is None or registry.task(self.cfg.task).better(p, val[p], self.best["val"][p]):
                self.best = {"step": self.step, "val": val, "test": test}
            record["time"] = {
                "step_s": a["step_s"] / k,
                "newton_s": a["newton_s"] / k,
                "network_s": (a["step_s"] - a["newton_s"]) / k,
                "eval_s": time.perf_counter() - t0,
            }
            self._append(record)
            if self.tb is not None:
                self.tb.add_scalar("train/loss", record["train_loss"], self.step)
                for split in ("val", "test"):
                    for name, value in record[split].items():
                        self.tb.add_scalar(f"{split}/{name}", value, self.step)
                self.tb.add_scalar("time/step_s", record["time"]["step_s"], self.step)
                self.tb.flush()
        self._reset_interval()
        self._checkpoint()
        return self.ctx.broadcast_object(record)

    def _append(self, record: dict) -> None:
        with open(self.dir / "metrics.jsonl", "ab") as f:
            f.write((json.dumps(record, sort_keys=True) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
            self.offset = f.tell()

    # --------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "format": 1,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "generator": self.generator.get_state(),
            "task": self.task.state_dict() if hasattr(self.task, "state_dict") else None,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "best": self.best,
            "metrics_offset": self.offset,
            "elapsed_s": self.elapsed_now(),
            "totals": dict(self.totals),
            "spikes": self.spikes.state_dict(),
        }

    def elapsed_now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t_start)

    def _checkpoint(self) -> None:
        if self.ctx.is_main:
            with atomic_write(self.dir / "checkpoint.pt") as f:
                torch.save(self._state(), f)
        self.checkpoint_step = self.step  # once it is on disk
        self.ctx.barrier()

    def _resume(self) -> None:
        self._t_start = time.perf_counter()
        path = self.dir / "checkpoint.pt"
        if not path.exists():
            if self.ctx.is_main:
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / "metrics.jsonl").unlink()
            self.ctx.barrier()
            return
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        if hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(state["task"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        self.step, self.best = state["step"], state["best"]
        self.checkpoint_step = self.step
        self.offset, self.elapsed = state["metrics_offset"], state["elapsed_s"]
        self.totals = dict(state["totals"])
        self.spikes.load_state_dict(state.get("spikes"))  # None: a checkpoint from before spikes were counted
        if self.ctx.is_main:
            # Lines written after the checkpoint (and any torn line) are recomputed identically.
            metrics = self.dir / "metrics.jsonl"
            size = metrics.stat().st_size if metrics.exists() else 0
            if size < self.offset:
                raise ValueError(
                    f"{metrics} holds {size} bytes but the checkpoint (step {self.step}) was written "
                    f"after {self.offset}: the run directory was modified; delete it to start over"
                )
            with open(metrics, "ab") as f:
                f.truncate(self.offset)
        self.ctx.barrier()

    def _fail(self, x, target, value: float, what: Optional[str] = None) -> None:
        last = self.step - self.step % self.cfg.eval_every
        if what is None:
            what = (f"non-finite training loss ({value})" if not math.isfinite(value)
                    else f"non-finite Newton direction (loss {value:.6g})")
        where = (f"the last good checkpoint (step {last}) in checkpoint.pt" if last > 0
                 else "no checkpoint was written before it")
        msg = (f"{what} at step {self.step + 1} of run {self.dir}: stopped; the state before this "
               f"step and its batch are in {self.dir / 'checkpoint_nan.pt'}, {where}. Lower lr, "
               f"raise lam, or change the method's parameters.")
        if self.ctx.is_main:
            state = self._state()
            state["batch"] = {"x": x.cpu(), "target": target.cpu()}
            with atomic_write(self.dir / "checkpoint_nan.pt") as f:
                torch.save(state, f)
            atomic_write_text(self.dir / "failed.json", json.dumps(
                {"status": "failed", "step": self.step + 1, "reason": "non-finite loss",
                 "message": msg}, indent=2) + "\n")
        raise RunFailed(msg)

    def _finish(self) -> dict:
        t = self.totals
        k = max(t["steps"], 1)
        result = {
            "status": "finished",
            "run_id": self.cfg.run_id(),
            "config": self.cfg.to_dict(),
            "steps": self.step,
            "best": self.best,
            "final": read_metrics(self.dir)[-1] if self.ctx.is_main else None,
            "world_size": self.ctx.world,
            "machine": _machine(self.device),
            "time": {
                "total_s": self.elapsed_now(),
                "step_s": t["step_s"] / k,
                "newton_s": t["newton_s"] / k,
                "network_s": (t["step_s"] - t["newton_s"]) / k,
            },
        }
        if "spikes" in t:  # runs resumed from checkpoints older than the spike count have none
            result["spikes"] = t["spikes"]
        if t.get("precision_checks"):
            result["precision"] = {k_: t[k_] for k_ in ("precision_checks", "precision_sick", "precision_worst")}
        if self.ctx.is_main:
            atomic_write_text(self.dir / "result.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
        if self.tb is not None:
            self.tb.close()
        self.ctx.barrier()
        return self.ctx.broadcast_object(result)


class SpikeCounter:
    """Counts gradient spikes online, after the study's rule (scripts/grad_norms.py: a step above
    ``SPIKE`` × a run's typical norm): a step whose parameter-gradient norm exceeds ``SPIKE`` ×
    the median of the last ``WINDOW`` non-spike steps (known after ``WARMUP`` of them). Unlike
    the script's single typical norm per run (read afterwards from interval means), this one
    moves with the run: after a lasting jump of the gradient level by more than ``SPIKE``× (a
    collapse) every later step counts. Its window is checkpointed, so a resumed run counts what
    an uninterrupted one does."""

    SPIKE, WINDOW, WARMUP = 100.0, 1000, 100

    def __init__(self) -> None:
        self.window: collections.deque = collections.deque(maxlen=self.WINDOW)

    def add(self, norm: float) -> int:
        """1 if ``norm`` is a spike (it is then left out of the window), else 0."""
        if len(self.window) >= self.WARMUP and norm > self.SPIKE * statistics.median(self.window):
            return 1
        self.window.append(norm)
        return 0

    def state_dict(self) -> list:
        return list(self.window)

    def load_state_dict(self, state: Optional[list]) -> None:
        self.window = collections.deque(state or (), maxlen=self.WINDOW)


def _grad_norm(parameters) -> float:
    """The total 2-norm of the parameters' gradients (read only)."""
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in parameters if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _machine(device: torch.device) -> str:
    text = machine_description()
    if device.type == "cuda":
        text += f"; {torch.cuda.get_device_name(device)}"
    return text


def _derived_seed(seed: int, stream: int) -> int:
    return (seed * 1_000_003 + stream * 7919) % (2**63 - 1)


def seed_run(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators as a run with this ``seed`` does.

    Call it before building the task (model initialization draws from torch's global
    generator); it returns the generator of the run's training-batch stream (a stream derived
    from ``seed``, independent of the global one). Scripts that replay a run's baseline
    training (``scripts/curvature_trace.py``) use it to see the same initialization and the
    same batches as :func:`train`.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(_derived_seed(seed, 1))


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard logging requested but tensorboard is not installed "
                      "(pip install tensorboard); continuing without it", stacklevel=3)
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
