"""Sweeps: a grid of run configurations (methods × Newton variants × λ × seeds), run in worker
processes, each run in ``OUT/RUN_ID``.

A sweep configuration is JSON::

    {
      "out": "runs/quick-neuralsort",       # where the run directories go
      "workers": 2,                          # parallel worker processes
      "task": "ranking", "protocol": "quick",
      "imports": ["my_relaxations"],         # optional: modules that register your own methods
      "base": {"steps": 30000},              # RunConfig fields shared by every run
      "grid": [                              # a grid (dict: field -> list of values) or a list
        {"variant": ["none"], "seed": [0, 1, 2]},              # of grids, whose union is run
        {"variant": ["fisher", "hessian"], "lam": [0.1, 1.0], "seed": [0, 1, 2]}
      ]
    }

A grid (or ``base``) key ``"task_args.KEY"`` sets one of the task's own arguments
(``RunConfig.task_args``), e.g. ``{"task_args.deg": [1, 2, 4, 6]}`` for the predict-then-optimize
task; the others keep their defaults (or ``base``'s).

``imports`` names modules (importable by this Python, e.g. installed or on ``PYTHONPATH``) that
register tasks, methods or variants of your own (:mod:`newton_lab.registry`); they are imported
before the grid is validated and in every worker process.

Every combination is validated before anything runs (an invalid one stops the sweep with a
message naming it). Runs are identified by :meth:`RunConfig.run_id` (a hash of the whole
configuration), so duplicates collapse (e.g. the baseline's λ is ignored), a finished run
(``result.json``) is skipped, a run that failed on a NaN loss (``failed.json``) is reported and
skipped, and an interrupted run resumes from its checkpoint. Killing the sweep at any instant
loses no finished run: each run's result is written atomically by the run itself. Worker
processes die with the sweep (Linux), and a per-run lock keeps two sweeps from training the same
run at once.
"""
from __future__ import annotations

import ctypes
import itertools
import json
import os
import signal
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from newton_lab.io import atomic_write_text
from newton_lab import registry
from newton_lab.config import RunConfig, protocol_config
from newton_lab.runner import RunFailed, RunLocked, run_status, train

__all__ = ["SweepSpec", "run_sweep"]

_SPEC_KEYS = {"out", "workers", "task", "protocol", "base", "grid", "name", "imports"}


@dataclass
class SweepSpec:
    """A parsed sweep configuration (see the module docstring)."""

    out: str
    task: str = "ranking"
    protocol: str = "quick"
    workers: int = 1
    base: dict = field(default_factory=dict)
    grid: list = field(default_factory=list)
    name: str = ""
    #: Modules that register extensions (imported here and in every worker).
    imports: list = field(default_factory=list)
    #: The file the configuration was loaded from ("" when built in code): the key under which
    #: ``sweep.json`` records this sweep's runs.
    source: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SweepSpec":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        spec = cls.from_dict(data, default_out=str(Path("runs") / Path(path).stem))
        spec.source = str(path)
        return spec

    @classmethod
    def from_dict(cls, data: dict, default_out: str = "runs/sweep") -> "SweepSpec":
        if not isinstance(data, dict):
            raise ValueError("a sweep configuration must be a JSON object")
        unknown = sorted(set(data) - _SPEC_KEYS)
        if unknown:
            raise ValueError(f"sweep configuration: unknown key(s) {unknown}; known: {sorted(_SPEC_KEYS)}")
        grid = data.get("grid", [{}])
        grid = [grid] if isinstance(grid, dict) else grid
        if not isinstance(grid, list) or not all(isinstance(g, dict) for g in grid):
            raise ValueError("sweep configuration: grid must be an object (field -> list of values) or a list of them")
        if not grid:
            raise ValueError("sweep configuration: grid is an empty list: it would run nothing "
                             "(use {} for the base configuration alone)")
        out = data.get("out", default_out)
        if not isinstance(out, str) or not out:
            raise ValueError(f"sweep configuration: out must be a directory path (a string); got {out!r}")
        for where, fields in [("base", data.get("base", {}))] + [("grid", g) for g in grid]:
            clash = sorted({"task", "protocol"} & set(fields if isinstance(fields, dict) else ()))
            if clash:
                raise ValueError(f"sweep configuration: {clash} belong at the top level of the sweep "
                                 f"configuration, not in {where!r}")
        for g in grid:
            for key, values in g.items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"sweep configuration: grid field {key!r} must be a non-empty list; got {values!r}")
        workers = data.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"sweep configuration: workers must be an integer >= 1; got {workers!r}")
        base = data.get("base", {})
        if not isinstance(base, dict):
            raise ValueError("sweep configuration: base must be an object of RunConfig fields")
        imports = data.get("imports", [])
        if not isinstance(imports, list) or not all(isinstance(m, str) and m for m in imports):
            raise ValueError(f"sweep configuration: imports must be a list of module names; got {imports!r}")
        registry.import_extensions(imports)
        return cls(out=out, task=data.get("task", "ranking"),
                   protocol=data.get("protocol", "quick"), workers=workers, base=base, grid=grid,
                   name=data.get("name", ""), imports=imports)

    def expand(self) -> list[RunConfig]:
        """Every run of the grid, validated, without duplicates, in grid order."""
        configs: dict[str, RunConfig] = {}
        for g in self.grid:
            keys = list(g)
            for values in itertools.product(*(g[k] for k in keys)):
                fields: dict[str, Any] = _fold_task_args({**self.base, **dict(zip(keys, values))})
                try:
                    cfg = protocol_config(self.task, self.protocol, **fields)
                except ValueError as exc:
                    combo = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values))
                    raise ValueError(f"grid combination ({combo}): {exc}") from None
                configs.setdefault(cfg.run_id(), cfg)
        return list(configs.values())


def _fold_task_args(fields: dict) -> dict:
    """``{"task_args.deg": 4, ...}`` (a grid over one task argument) folded into ``task_args``
    (over any ``task_args`` dict given as well)."""
    dotted = {k: v for k, v in fields.items() if k.startswith("task_args.")}
    if not dotted:
        return fields
    out = {k: v for k, v in fields.items() if k not in dotted}
    given = out.get("task_args", {})
    if not isinstance(given, dict):
        raise ValueError(f"task_args must be an object of task arguments; got {given!r}")
    out["task_args"] = {**given, **{k.split(".", 1)[1]: v for k, v in dotted.items()}}
    return out


def _die_with_parent() -> None:
    """Linux: deliver SIGKILL to this worker when the sweep process dies, so an interrupted
    sweep leaves no orphan training a run (a restarted sweep resumes it instead)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_PROGRESS_EVERY_S = 2.0  # how often a worker reports its run's step to the sweep's progress bar
_progress_queue = None  # in a worker process: the queue of (run_dir, step) reports


def _init_worker(threads: int, queue=None, imports=()) -> None:
    global _progress_queue
    _die_with_parent()
    registry.import_extensions(imports)
    # Ctrl-C reaches the whole process group: the parent stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _progress_queue = queue
    import torch

    torch.set_num_threads(threads)


def _step_reporter(run_dir: str, report) -> Any:
    """An ``on_step`` callback calling ``report(run_dir, step)`` at most every
    ``_PROGRESS_EVERY_S`` seconds (and at the first step, so a resumed run shows where it is)."""
    last = [-float("inf")]

    def on_step(step: int) -> None:
        now = time.monotonic()
        if now - last[0] >= _PROGRESS_EVERY_S:
            last[0] = now
            report(run_dir, step)

    return on_step


def _run_one(cfg_dict: dict, run_dir: str, report=None) -> tuple[str, str, Any]:
    """Train one run; returns (status, run_dir, result or message). Never raises.

    ``report(run_dir, step)`` (in-process), else the worker's progress queue, receives the
    run's progress."""
    cfg = RunConfig.from_dict(cfg_dict)
    if report is None and _progress_queue is not None:
        report = lambda d, step: _progress_queue.put((d, step))  # noqa: E731
    on_step = _step_reporter(run_dir, report) if report is not None else None
    try:
        return "finished", run_dir, train(cfg, run_dir, progress=False, on_step=on_step)
    except RunFailed as exc:
        return "failed", run_dir, str(exc)
    except RunLocked as exc:
        return "locked", run_dir, str(exc)
    except Exception:  # noqa: BLE001 — one broken run must not stop the others
        return "error", run_dir, traceback.format_exc()


_OLD_RECORD = "(recorded before per-sweep records)"


def _record(path: Path, spec: SweepSpec, configs: list[RunConfig]) -> None:
    """Write ``sweep.json``: every run's configuration (``runs``, by run id, merged over all the
    sweeps that share the output directory) and, per sweep (keyed by its configuration file, or
    its name when built in code), its name, task, protocol and the run ids it defines now.

    A record this version cannot read is replaced; one in the earlier single-sweep format keeps
    its name under ``sweeps["(recorded before per-sweep records)"]``.
    """
    previous: Any = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = {}
    if not isinstance(previous, dict):
        previous = {}
    runs = previous.get("runs") if isinstance(previous.get("runs"), dict) else {}
    sweeps = previous.get("sweeps") if isinstance(previous.get("sweeps"), dict) else {}
    sweeps = {k: v for k, v in sweeps.items() if isinstance(v, dict)}
    if "sweeps" not in previous and isinstance(previous.get("name"), str):
        sweeps[_OLD_RECORD] = {"name": previous["name"], "task": previous.get("task"),
                               "protocol": previous.get("protocol"), "runs": sorted(runs)}
    key = spec.source or spec.name or "(unnamed)"
    sweeps[key] = {"name": spec.name, "task": spec.task, "protocol": spec.protocol,
                   "runs": [c.run_id() for c in configs]}
    atomic_write_text(path, json.dumps(
        {"sweeps": sweeps, "runs": {**runs, **{c.run_id(): c.to_dict() for c in configs}}},
        indent=2, sort_keys=True) + "\n")


def run_sweep(spec: SweepSpec, configs: list[RunConfig], *, threads: int = 1, dry_run: bool = False,
              progress: bool = True) -> dict:
    """Run every configuration not finished yet; returns counts and messages.

    Returns: ``{"finished": [...run dirs], "failed": [...], "locked": [...], "errors": [...],
    "skipped": n}`` (``skipped``: finished or failed before this call).
    """
    out = Path(spec.out)
    if not dry_run:  # a dry run changes nothing on disk
        out.mkdir(parents=True, exist_ok=True)
        _record(out / "sweep.json", spec, configs)
    todo, summary = [], {"finished": [], "failed": [], "locked": [], "errors": [], "skipped": 0}
    for cfg in configs:
        run_dir = out / cfg.run_id()
        status = run_status(run_dir)
        if dry_run:
            print(f"{status:9s} {run_dir}")
        if status == "finished":
            summary["finished"].append(str(run_dir))
            summary["skipped"] += 1
        elif status == "failed":
            summary["failed"].append(str(run_dir))
            summary["skipped"] += 1
        else:
            todo.append((cfg, str(run_dir)))
    if dry_run or not todo:
        return summary
    print(f"sweep {spec.out}: {len(configs)} runs, {summary['skipped']} already done, "
          f"{len(todo)} to run on {min(spec.workers, len(todo))} worker(s)", file=sys.stderr)
    from tqdm.auto import tqdm

    # One bar in training steps over every run to do, labelled with the runs done; workers report
    # their run's step every few seconds. A resumed run counts only the steps after its last
    # evaluation (where its checkpoint is); a run that fails or is locked takes its remaining
    # steps off the total rather than counting them as done.
    steps = {run_dir: cfg.steps for cfg, run_dir in todo}
    seen = {run_dir: _resume_step(run_dir) for _, run_dir in todo}
    bar = tqdm(total=sum(steps[d] - seen[d] for d in steps), desc=f"runs 0/{len(todo)}", unit="step",
               unit_scale=True, disable=not progress, file=sys.stderr, smoothing=0.05)
    done = [0]

    def advance(run_dir: str, step: int) -> None:
        if step > seen[run_dir]:
            bar.update(step - seen[run_dir])
            seen[run_dir] = step

    def collect(status: str, run_dir: str, payload: Any) -> None:
        key = {"finished": "finished", "failed": "failed", "locked": "locked"}.get(status, "errors")
        summary[key].append(run_dir)
        rest = steps[run_dir] - seen[run_dir]
        if status == "finished":
            bar.update(rest)
        else:
            tqdm.write(f"{status}: {run_dir}: {payload}", file=sys.stderr)
            bar.total -= rest
            bar.refresh()
        seen[run_dir] = steps[run_dir]
        done[0] += 1
        bar.set_description(f"runs {done[0]}/{len(todo)}")

    try:
        if spec.workers == 1:
            import torch

            torch.set_num_threads(threads)
            for cfg, run_dir in todo:
                collect(*_run_one(cfg.to_dict(), run_dir, report=advance))
        else:
            ctx = get_context("spawn")
            queue = ctx.Queue() if progress else None
            pool = ProcessPoolExecutor(max_workers=min(spec.workers, len(todo)), mp_context=ctx,
                                       initializer=_init_worker, initargs=(threads, queue, tuple(spec.imports)))
            try:
                pending = {pool.submit(_run_one, cfg.to_dict(), run_dir) for cfg, run_dir in todo}
                while pending:
                    finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    _drain(queue, advance)  # reports of a finished run come before its result
                    for fut in finished:
                        collect(*fut.result())
            except BaseException:
                # Interrupted (Ctrl-C, SIGTERM from a time limit) or failed: stop the running
                # runs too — each keeps its last checkpoint (atomic writes) and resumes from it —
                # instead of waiting for them at interpreter exit. A second signal must not
                # interrupt this.
                held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    workers = list((getattr(pool, "_processes", None) or {}).values())
                    pool.shutdown(wait=False, cancel_futures=True)  # forgets its processes
                    for proc in workers:
                        proc.terminate()
                finally:
                    for sig, handler in held.items():
                        if handler is not None:
                            signal.signal(sig, handler)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
    return summary


def _resume_step(run_dir: str) -> int:
    """The step an unfinished run resumes from: its last evaluation's (0 for a new run)."""
    from newton_lab.runner import read_metrics

    try:
        records = read_metrics(run_dir)
    except (OSError, ValueError):
        return 0
    return int(records[-1]["step"]) if records else 0


def _drain(queue, advance) -> None:
    """Apply every progress report waiting in ``queue`` (None: progress is off)."""
    if queue is None:
        return
    import queue as _queue

    while True:
        try:
            run_dir, step = queue.get_nowait()
        except _queue.Empty:
            return
        advance(run_dir, step)
