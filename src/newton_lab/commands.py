"""Argument parsing of ``newton-losses train / sweep / report / plot / demo --ranking``."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional

from newton_lab import registry
from newton_lab.config import DAMPINGS, PROJECTIONS, RunConfig, protocol_config

# Exit codes of `train`, `sweep` and `report` (argparse usage errors are 2 as well).
EXIT_CONFIG, EXIT_FAILED, EXIT_LOCKED = 2, 3, 4


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str], what: str) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} expects KEY=VALUE; got {item!r}")
        out[key.replace("-", "_")] = _value(value)
    return out


def _import_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first: it registers tasks, methods or curvatures of your own "
                        "(newton_lab.registry, newton_losses.register_curvature); repeatable")


def _set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="newton-losses train",
        description="One training run (resumes if RUN_DIR holds an unfinished run of the same "
                    "configuration). Under `torchrun --nproc-per-node K -m newton_lab train ...` "
                    "it runs data-parallel.",
    )
    tasks = [registry.task(t) for t in registry.tasks()]
    # No argparse choices for names: --import may register more; validation lists them.
    p.add_argument("task", help=" | ".join(t.cli_name for t in tasks) + " (or --task NAME)")
    p.add_argument("--protocol", help="; ".join(f"{t.cli_name}: {', '.join(t.protocols)}" for t in tasks)
                   + " (default: the --config file's, else quick)")
    p.add_argument("--config", help="a JSON file of RunConfig fields (applied before the options below)")
    p.add_argument("--method", help="; ".join(f"{t.cli_name}: {', '.join(registry.methods(t.name))}"
                                              for t in tasks) + " (default: the protocol's)")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE",
                   help="a method argument, e.g. --arg tau=0.5 --arg sigmoid=cauchy")
    argful = [t for t in tasks if t.args]
    if argful:
        p.add_argument("--task-arg", action="append", metavar="KEY=VALUE",
                       help="a task argument, e.g. --task-arg deg=4 --task-arg problem=knapsack ("
                            + "; ".join(f"{t.cli_name}: {', '.join(t.args)}" for t in argful) + ")")
    p.add_argument("--variant", help=f"Newton variant: {', '.join(registry.variants())} (default: none = "
                                     "the baseline); every curvature registered with newton_losses (a "
                                     "method takes those it supports; the error lists them)")
    p.add_argument("--lam", type=float, help="λ, required (> 0) for a Newton variant, e.g. --lam 0.1 "
                                             "(default: the --config file's, else 0 = none, which only "
                                             "the baseline accepts)")
    p.add_argument("--damping", choices=DAMPINGS,
                   help="absolute: add λ; batch: λ · mean |eigenvalue| over the batch; relative: per matrix")
    p.add_argument("--projection", choices=PROJECTIONS)
    p.add_argument("--n", type=int, help="ranking: items per set")
    p.add_argument("--steps", type=int)
    p.add_argument("--epochs", type=int, help=f"{', '.join(t.cli_name for t in tasks if t.epoch_size)}: epochs "
                                              "(steps and lr decay at 60%%/80%%)")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--model", help="; ".join(f"{t.cli_name}: {', '.join(t.models)}" for t in tasks)
                                   + " (default: the protocol's)")
    p.add_argument("--data", help="mnist/terrain or synthetic")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"])
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="any other RunConfig field, e.g. --set val_sets=500")
    _import_option(p)
    p.add_argument("--out", default="runs", help="parent directory of run directories (default: runs)")
    p.add_argument("--run-dir", help="the run directory (default: OUT/RUN_ID)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice / OMP_NUM_THREADS)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN_DIR/tensorboard")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    spec = registry.task(args.task)
    task = spec.name
    fields: dict = {}
    if args.config:
        try:
            loaded = json.loads(Path(args.config).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{args.config} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config} must hold a JSON object of RunConfig fields; "
                             f"got a {type(loaded).__name__}")
        fields.update(loaded)
        if fields.pop("task", task) != task:
            raise ValueError(f"{args.config} configures another task than {args.task!r}")
    protocol = fields.pop("protocol", "quick")
    if args.protocol is not None:
        protocol = args.protocol
    if protocol not in spec.protocols:
        raise ValueError(f"protocol must be one of {tuple(spec.protocols)}; got {protocol!r}")
    direct = {"method": args.method, "variant": args.variant, "lam": args.lam, "damping": args.damping,
              "projection": args.projection, "n": args.n, "steps": args.steps,
              "eval_every": args.eval_every, "batch_size": args.batch_size, "lr": args.lr,
              "model": args.model, "data": args.data, "seed": args.seed, "device": args.device}
    fields.update({k: v for k, v in direct.items() if v is not None})
    if args.arg:
        fields["method_args"] = {**fields.get("method_args", {}), **_pairs(args.arg, "--arg")}
    if getattr(args, "task_arg", None):
        fields["task_args"] = {**fields.get("task_args", {}), **_pairs(args.task_arg, "--task-arg")}
    fields.update(_pairs(args.set, "--set"))
    if args.method and "method_args" not in fields:
        fields["method_args"] = {}
    if args.epochs is not None:
        if spec.epoch_size is None:
            epoch_tasks = [registry.task(t).cli_name for t in registry.tasks() if registry.task(t).epoch_size]
            raise ValueError(f"--epochs applies to {' and '.join(epoch_tasks)} runs ({args.task} "
                             "draws fresh samples: use --steps)")
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1; got {args.epochs}")
        base = protocol_config(task, protocol, **fields)
        per_epoch = math.ceil(spec.epoch_size(base) / base.batch_size)
        fields.update(steps=args.epochs * per_epoch, eval_every=per_epoch,
                      lr_milestones=sorted({max(1, round(f * args.epochs)) * per_epoch for f in (0.6, 0.8)}))
    cfg = protocol_config(task, protocol, **fields)
    return cfg


def _task_option_to_positional(argv: list[str]) -> list[str]:
    """``--task NAME`` / ``--task=NAME`` (as a sweep file or the Python API names it) read as the
    positional TASK."""
    out, task, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out += argv[i:]
            break
        if a == "--task" and i + 1 < len(argv):
            task, i = argv[i + 1], i + 2
            continue
        if a.startswith("--task="):
            task = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return [task] + out if task is not None else argv


def train_main(argv: list[str]) -> int:
    args = train_parser().parse_args(_task_option_to_positional(argv))
    from newton_lab.runner import RunFailed, RunInterrupted, RunLocked, train

    try:
        registry.import_extensions(args.imports)
        cfg = config_from_args(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"newton-losses train: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _set_threads(args.threads)
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.out) / cfg.run_id()
    try:
        result = train(cfg, run_dir, progress=not args.no_progress, tensorboard=args.tensorboard)
    except RunFailed as exc:
        print(f"newton-losses train: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RunLocked as exc:
        print(f"newton-losses train: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except RunInterrupted as exc:
        print(f"\nnewton-losses train: {exc}", file=sys.stderr)
        return 130
    except ValueError as exc:
        print(f"newton-losses train: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary_line(result, run_dir))
    return 0


def summary_line(result: dict, run_dir: Path) -> str:
    best = result["best"]
    test = best["test"]
    metrics = ", ".join([f"{k} {100 * v:.2f}%" for k, v in test.items() if registry.is_percent(k)]
                        + [f"{k.replace('_', ' ')} {v:.4f}" for k, v in test.items() if not registry.is_percent(k)])
    t = result["time"]
    return (f"{run_dir}: test at best validation (step {best['step']}): {metrics}; "
            f"{1e3 * t['step_s']:.2f} ms/step (network {1e3 * t['network_s']:.2f}, Newton "
            f"{1e3 * t['newton_s']:.2f}); {t['total_s']:.0f} s")


# ----------------------------------------------------------------------------------------------
def sweep_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="newton-losses sweep",
                                description="Run a grid of configurations (docs/EXPERIMENTS.md) in "
                                            "worker processes; finished runs are skipped, "
                                            "interrupted ones resumed.")
    p.add_argument("config", help="sweep configuration (JSON)")
    p.add_argument("--workers", type=int, help="parallel worker processes (default: the config's, else 1)")
    p.add_argument("--out", help="directory of the run directories (default: the config's `out`)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their status, run nothing")
    p.add_argument("--no-report", action="store_true", help="do not print the report table at the end")
    p.add_argument("--no-progress", action="store_true")
    _import_option(p)
    args = p.parse_args(argv)
    from newton_lab.sweep import SweepSpec, run_sweep

    try:
        registry.import_extensions(args.imports)
        spec = SweepSpec.load(args.config)
        spec.imports = list(dict.fromkeys(spec.imports + args.imports))
        if args.out:
            spec.out = args.out
        if args.workers is not None:
            if args.workers < 1:
                raise ValueError(f"--workers must be >= 1; got {args.workers}")
            spec.workers = args.workers
        configs = spec.expand()
    except (ValueError, TypeError, OSError) as exc:
        print(f"newton-losses sweep: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # SIGINT and SIGTERM (`timeout`, a batch system's limit) stop the sweep: the running runs are
    # stopped too and resume from their last checkpoint next time. Installed explicitly, so that
    # SIGINT works also where the process inherited it ignored (a background job).
    received = [signal.SIGINT]

    def on_signal(signum, frame):
        received[0] = signum
        raise KeyboardInterrupt

    previous = {} if args.dry_run else {sig: signal.signal(sig, on_signal)
                                        for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_sweep(spec, configs, threads=args.threads, dry_run=args.dry_run,
                            progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\nnewton-losses sweep: interrupted ({signal.Signals(received[0]).name}); finished runs "
              "are complete, unfinished ones resume from their last checkpoint when the same "
              f"command runs again ({spec.out})", file=sys.stderr)
        return 128 + int(received[0])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if args.dry_run:
        return 0
    if not args.no_report and summary["finished"]:
        from newton_lab.report import build_report

        print(build_report([spec.out], out=Path(spec.out) / "report").markdown)
    if summary["failed"] or summary["errors"]:
        return EXIT_FAILED
    if summary["locked"]:
        print(f"newton-losses sweep: {len(summary['locked'])} run(s) are being trained by another "
              "process and were left to it", file=sys.stderr)
        return EXIT_LOCKED
    return 0


def report_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="newton-losses report",
                                description="Markdown table (mean ± std over seeds; exact match with "
                                            "element-wise in parentheses), Welch t-tests of each Newton "
                                            "variant against its baseline, CSV/JSON and PNG plots.")
    p.add_argument("runs", nargs="*", help="run directories or directories holding them")
    p.add_argument("--out", help="where to write report.md/.csv/.json and plots (default: RUNS[0]/report)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--template", help="render a results document from this markdown template instead "
                                      "(its `<!-- report NAME: DIR ... -->` directives become tables and "
                                      "plots of the runs; see newton_lab/results_doc.py)")
    p.add_argument("--results", default="RESULTS.md",
                   help="the document --template renders (default RESULTS.md)")
    _import_option(p)
    args = p.parse_args(argv)
    from newton_lab.report import build_report

    try:
        registry.import_extensions(args.imports)
    except ValueError as exc:
        print(f"newton-losses report: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    if args.template:
        from newton_lab.results_doc import render_results

        try:
            render_results(args.template, args.results, alpha=args.alpha, plots=not args.no_plots)
        except (ValueError, OSError) as exc:
            print(f"newton-losses report: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"written: {args.results}", file=sys.stderr)
        return 0
    if not args.runs:
        p.error("give run directories, or --template")

    out = Path(args.out) if args.out else Path(args.runs[0]) / "report"
    try:
        report = build_report(args.runs, out=out, alpha=args.alpha, plots=not args.no_plots)
    except ValueError as exc:
        print(f"newton-losses report: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(report.markdown)
    print(f"\nwritten: {', '.join(str(p) for p in report.files)}", file=sys.stderr)
    return 0


def plot_main(argv: list[str]) -> int:
    usage = "usage: newton-losses plot gradients [--out FILE] [options]  (see plot gradients --help)"
    if argv and argv[0] in ("-h", "--help"):
        print(usage + "\n\n  gradients   the gradient of a relaxed sorting loss with respect to one input "
              "as that input moves, original versus Newton loss")
        return 0
    if not argv or argv[0] != "gradients":
        print(usage, file=sys.stderr)
        return EXIT_CONFIG
    from newton_lab.gradients import main as gradients_main

    return gradients_main(argv[1:])


def demo_ranking_main(argv: list[str]) -> int:
    from newton_lab.demo_ranking import main

    return main(argv)
