"""`newton-losses demo`: plain gradient descent vs Newton losses on hard relaxed sorting losses.

The problem: N = 200 independent ranking problems of n = 10 items. Each has its own free
scores ``y_i ∈ R^n`` (the "network" is the identity, ``y = θ``) and a ground-truth order; the
loss is the ranking-supervision binary cross-entropy between a relaxed permutation matrix
``P(y_i)`` and the true one — the loss the paper trains through. Every method runs the same
update ``y ← y − η · N · ∂L/∂y`` for the same number of steps from the same random start:

- ``none`` (the baseline): the gradient of the loss itself;
- ``hessian``, ``gauss_newton``, ``fisher``: the gradient of the Newton loss with that curvature
  (λ = 0.1), i.e. ``(C + λI)^{-1} ∇ℓ_i`` per problem.

Relaxations and variants are named as everywhere in the harness (:mod:`newton_lab.registry`):
ranking method specs such as ``odd_even:sigmoid=cauchy`` and the variant names of ``train``.

Each method gets its best step size η from a grid (best mean exact-match over seeds), so no
method is handicapped by a badly chosen step. With the identity network the Newton loss is a
damped (generalized) Newton method on the loss, which isolates what the method changes: the
direction in output space. Whether that carries over to training a network on data is what the
ranking runs (`newton-losses demo --ranking`, `newton-losses train ranking`, RESULTS.md) measure.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import torch

from newton_losses import NewtonLoss
from newton_losses.sorting import permutation_matrix

from newton_lab import registry

#: The default relaxations (ranking method specs) and variants of the demo.
RELAXATIONS = ("odd_even:sigmoid=cauchy", "neuralsort:tau=0.1")
VARIANTS = ("none", "hessian", "gauss_newton", "fisher")
LAM = 0.1
#: Variant names the demo used before the registry (``--methods GD NL-Hessian ...``).
_EARLIER_VARIANTS = {"GD": "none", "NL-Hessian": "hessian", "NL-GaussNewton": "gauss_newton",
                     "NL-Fisher": "fisher"}


@dataclass
class RunResult:
    relaxation: str
    variant: str
    lr: float
    seed: int
    exact: float
    elementwise: float
    loss: float
    seconds_per_step: float


def run_one(relaxation: str, variant: str, lr: float, seed: int, n: int, n_sets: int, steps: int) -> RunResult:
    """One optimization run of a relaxation (a ranking method spec) and a variant; deterministic
    given its arguments."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(n_sets, n, generator=gen, dtype=torch.float64)
    target = permutation_matrix(values)
    name, args = registry.parse_spec("ranking", relaxation)
    loss, _ = registry.task("ranking").build_loss(SimpleNamespace(method=name, method_args=args, n=n,
                                                                  variant=variant), None)
    y = torch.randn(n_sets, n, generator=gen, dtype=torch.float64).requires_grad_(True)
    curvature = registry.variant(variant).curvature
    newton = None if curvature is None else NewtonLoss(loss, curvature=curvature, lam=LAM)
    t0 = time.perf_counter()
    for _ in range(steps):
        value = loss(y, target).mean() if newton is None else newton(y, target)
        (grad,) = torch.autograd.grad(value, y)
        with torch.no_grad():
            y -= lr * n_sets * grad
        if not bool(torch.isfinite(y).all()):
            break
    elapsed = (time.perf_counter() - t0) / steps
    with torch.no_grad():
        finite = bool(torch.isfinite(y).all())
        ok = y.argsort(-1) == values.argsort(-1)
        final = float(loss(y, target).mean()) if finite else math.inf
    return RunResult(relaxation, variant, lr, seed, float(ok.all(-1).double().mean()) if finite else 0.0,
                     float(ok.double().mean()) if finite else 0.0, final, elapsed)


def _run_star(args: tuple) -> RunResult:
    return run_one(*args)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="newton-losses demo", description=__doc__.split("\n")[0])
    p.add_argument("--relaxations", nargs="+", default=list(RELAXATIONS), metavar="SPEC",
                   help="ranking method specs NAME[:KEY=VALUE,...] (default: "
                        f"{' '.join(RELAXATIONS)}); methods: {', '.join(registry.methods('ranking'))}")
    p.add_argument("--variants", "--methods", nargs="+", default=list(VARIANTS), metavar="VARIANT",
                   help=f"Newton variants at λ = {LAM} (default: {' '.join(VARIANTS)}); "
                        f"registered: {', '.join(registry.variants())}")
    p.add_argument("--n", type=int, default=10, help="items per ranking (default 10)")
    p.add_argument("--sets", type=int, default=200, help="independent ranking problems (200)")
    p.add_argument("--steps", type=int, default=100, help="update steps (100)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per setting (3)")
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0, 100.0],
                   help="step-size grid; each method is reported at its best")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="parallel worker processes (default: up to 2)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers relaxations or curvatures of your own)")
    a = p.parse_args(argv)
    for name in ("n", "sets", "steps", "seeds", "workers"):
        if getattr(a, name) < 1 or (name == "n" and a.n < 2):
            p.error(f"--{name} must be >= {2 if name == 'n' else 1}; got {getattr(a, name)}")
    if any(not (lr > 0 and math.isfinite(lr)) for lr in a.lrs):
        p.error(f"--lrs must be positive finite numbers; got {a.lrs}")
    try:
        registry.import_extensions(a.imports)
        relaxations = [registry.format_spec("ranking", *registry.parse_spec("ranking", r))
                       for r in a.relaxations]
        variants = [_variant_name(v) for v in a.variants]
    except ValueError as exc:
        p.error(str(exc))

    jobs = [(r, v, lr, s, a.n, a.sets, a.steps) for r in relaxations for v in variants
            for lr in a.lrs for s in range(a.seeds)]
    print(f"newton-losses demo: {a.sets} ranking problems of n={a.n}, {a.steps} steps, "
          f"{a.seeds} seeds, step sizes {a.lrs}, {len(jobs)} runs on {a.workers} workers")
    t0 = time.perf_counter()
    results: list[RunResult] = []
    bar = _progress(len(jobs))
    if a.workers == 1:
        for job in jobs:
            results.append(run_one(*job))
            bar.update(1)
    else:
        # Workers import the extension modules too (under a spawn or forkserver start method
        # they would not inherit the registrations).
        with ProcessPoolExecutor(max_workers=a.workers, initializer=registry.import_extensions,
                                 initargs=(tuple(a.imports),)) as pool:
            for res in pool.map(_run_star, jobs):
                results.append(res)
                bar.update(1)
    bar.close()
    print(format_table(results, a.seeds))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s. Exact match: every item of a ranking in "
          "place; element-wise: items in place. Each method at its best step size.")
    return 0


def _variant_name(name: str) -> str:
    if name in _EARLIER_VARIANTS:
        warnings.warn(f"{name!r} is an earlier name of the variant {_EARLIER_VARIANTS[name]!r}; use "
                      f"{_EARLIER_VARIANTS[name]!r}", FutureWarning, stacklevel=3)
        name = _EARLIER_VARIANTS[name]
    registry.variant(name)  # raises for an unknown name, listing the registered ones
    return name


def format_table(results: list[RunResult], seeds: int) -> str:
    lines = [
        "",
        "| relaxation | variant | best step | exact match % | element-wise % | final loss | ms/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for relax in dict.fromkeys(r.relaxation for r in results):
        for method in dict.fromkeys(r.variant for r in results):
            best, best_key = None, None
            for lr in dict.fromkeys(r.lr for r in results):
                rs = [r for r in results if r.relaxation == relax and r.variant == method and r.lr == lr]
                if not rs:
                    continue
                key = (statistics.mean(r.exact for r in rs), -statistics.mean(r.loss for r in rs))
                if best_key is None or key > best_key:
                    best, best_key = rs, key
            if best is None:
                continue
            ex = [100 * r.exact for r in best]
            el = [100 * r.elementwise for r in best]
            sd = statistics.stdev(ex) if len(ex) > 1 else 0.0
            lines.append(
                f"| {relax} | {registry.variant(method).label} | {best[0].lr:g} | {statistics.mean(ex):.1f} ± {sd:.1f} | "
                f"{statistics.mean(el):.1f} | {statistics.mean(r.loss for r in best):.4f} | "
                f"{1e3 * statistics.mean(r.seconds_per_step for r in best):.1f} |"
            )
    return "\n".join(lines)


class _NoBar:
    def update(self, k: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional (extras "experiments"/"dev")
        return _NoBar()
    return tqdm(total=total, desc="runs", file=sys.stderr, disable=None)  # None: off unless a TTY
