"""Cost of each shortest-path loss family and of each Newton curvature on it, in one process.

For 12×12 grids at batch 70 (the Warcraft protocol) by default, and for every family:

- relaxed Bellman-Ford, For and While loops × L1 and squared L2 (β = ``--beta``);
- stochastic smoothing of the loss (L1) and of the algorithm (L2), for each S of ``--samples``
  (default 3 10 30);
- the perturbed optimizer with the Fenchel-Young loss, for each S of ``--samples``;

it prints the plain forward+backward time (``loss(y, target).mean().backward()``) and, for each
curvature, the time of ``NewtonLoss(loss, curvature)(y, target).backward()`` relative to it,
with the core's method (``last_diagnostics.method``: ``rows``/``cg``/``fisher``/``custom``), the
part it spends building the curvature (``last_diagnostics.time_curvature_s``) and in the solve
(``last_diagnostics.time_solve_s``: the dense eigendecomposition, or the conjugate-gradient
iterations with their Hessian-vector products), the CG iterations and
``last_diagnostics.n_fallback`` — the N systems CG truncated at negative curvature (Steihaug)
for CG solves, the matrices that needed the Tikhonov fallback for dense ones.
Curvatures: Fisher; Hessian and Gauss-Newton (L2) for relaxed Bellman-Ford (matrix-free CG for
m = H·W > 64, dense blocks below); the Stein/Fenchel-Young estimators of the stochastic families,
matrix-free |C| (``projection="abs"``, the default) and dense (``projection="dense"``, the core's
eigendecomposition). Times are medians over ``--repeats`` runs after ``--warmup``, measured
in turn (interleaved) so a load change on a shared machine does not favour one row.

    OMP_NUM_THREADS=1 python benchmarks/bench_shortest_path.py                 # 12×12, batch 70
    OMP_NUM_THREADS=1 python benchmarks/bench_shortest_path.py --batch 4 --size 6 --repeats 1   # smoke

Not a test: it prints a Markdown table and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from newton_losses import NewtonLoss
from newton_losses.shortest_path import (
    FenchelYoungLoss,
    RelaxedShortestPathLoss,
    SmoothedAlgorithmLoss,
    SmoothedLoss,
    shortest_path,
)


def _median_ms(fns: list[Callable[[], object]], warmup: int, repeats: int) -> list[float]:
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]


def _families(args, generator: torch.Generator):
    """(family name, loss, [(curvature label, NewtonLoss factory)])."""
    out = []
    for mode in ("for", "while"):
        for kind in ("l1", "l2"):
            loss = RelaxedShortestPathLoss(args.beta, kind, mode=mode)
            curvatures = [
                ("fisher", lambda loss=loss: NewtonLoss(loss, curvature="fisher", lam=args.lam)),
                ("hessian", lambda loss=loss: NewtonLoss(loss, curvature="hessian", lam=args.lam)),
            ]
            if kind != "l1":
                curvatures.append((
                    "gauss-newton",
                    lambda loss=loss: NewtonLoss(loss.composite(), curvature="gauss_newton", lam=args.lam),
                ))
            name = f"relaxed BF {mode.capitalize()} {kind.upper()} (β={args.beta:g})"
            out.append((name, loss, curvatures))
    families = []
    for n_samples in args.samples:
        stochastic = dict(sigma=args.sigma, n_samples=n_samples, generator=generator)
        families += [
            ("smoothing of the loss L1", SmoothedLoss("l1", **stochastic), ["hessian_estimator"]),
            ("smoothing of the algorithm L2", SmoothedAlgorithmLoss("l2", **stochastic),
             ["hessian_estimator", "gauss_newton_estimator"]),
            ("perturbed + Fenchel-Young", FenchelYoungLoss(**stochastic), ["hessian_estimator"]),
        ]
    for name, loss, estimators in families:
        curvatures = [("fisher", lambda loss=loss: NewtonLoss(loss, curvature="fisher", lam=args.lam))]
        for est in estimators:
            for projection in ("abs", "dense"):
                curvatures.append((
                    f"{est.replace('_estimator', '')} est. ({projection})",
                    lambda loss=loss, est=est, projection=projection: NewtonLoss(
                        loss, curvature=getattr(loss, est)(projection=projection), lam=args.lam
                    ),
                ))
        out.append((f"{name} (S={loss.n_samples}, σ={args.sigma:g})", loss, curvatures))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=70)
    parser.add_argument("--size", type=int, default=12, help="grid side H = W")
    parser.add_argument("--samples", type=int, nargs="+", default=[3, 10, 30],
                        help="S of the stochastic families (one row group per value)")
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=10.0)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, args.size, args.size)
    costs = torch.rand(shape, generator=gen, dtype=dtype) * 8.4 + 0.8
    target = shortest_path(torch.rand(shape, generator=gen, dtype=dtype) * 8.4 + 0.8).path
    grids = (max(args.samples) + 1) * args.batch
    big = torch.rand((grids, args.size, args.size), generator=gen, dtype=dtype) * 8.4 + 0.8
    (solver_ms,) = _median_ms([lambda: shortest_path(big)], args.warmup, args.repeats)
    print(
        f"torch {torch.__version__}, {args.dtype}, CPU threads {torch.get_num_threads()}, "
        f"grids {args.size}x{args.size}, batch {args.batch}, λ={args.lam:g}, median of "
        f"{args.repeats} (ms)\nexact solver on (max S + 1)·batch = {grids} grids: {solver_ms:.2f} ms\n"
    )
    print("| family | curvature | core method | fwd+bwd (ms) | × plain | curvature (ms) | solve (ms) "
          "| CG iters | fallbacks/truncated |")
    print("|---|---|---|---|---|---|---|---|---|")
    for family, loss, curvatures in _families(args, gen):
        newtons = [(label, make()) for label, make in curvatures]

        def plain(loss=loss):
            y = costs.detach().requires_grad_()
            loss(y, target).mean().backward()

        solves: dict[str, list[float]] = {label: [] for label, _ in newtons}
        curvs: dict[str, list[float]] = {label: [] for label, _ in newtons}
        iters: dict[str, list[int]] = {label: [] for label, _ in newtons}
        methods: dict[str, str] = {}
        truncated: dict[str, list[int]] = {label: [] for label, _ in newtons}

        def newton_step(label, newton):
            y = costs.detach().requires_grad_()
            newton(y, target).backward()
            solves[label].append(newton.last_diagnostics.time_solve_s)
            curvs[label].append(newton.last_diagnostics.time_curvature_s)
            iters[label].append(newton.last_diagnostics.cg_iterations)
            methods[label] = newton.last_diagnostics.method
            truncated[label].append(newton.last_diagnostics.n_fallback)

        fns = [plain] + [lambda lb=label, nl=newton: newton_step(lb, nl) for label, newton in newtons]
        times = _median_ms(fns, args.warmup, args.repeats)
        print(f"| {family} | none (plain) | | {times[0]:.1f} | 1.00 | | | | |", flush=True)
        for (label, _), t in zip(newtons, times[1:]):
            # the last `repeats` entries are the timed runs (the first ones are the warm-up)
            solve = 1e3 * statistics.median(solves[label][-args.repeats :])
            curv = 1e3 * statistics.median(curvs[label][-args.repeats :])
            its = statistics.median(iters[label][-args.repeats :])
            trunc = statistics.median(truncated[label][-args.repeats :])
            print(
                f"| | {label} | {methods[label]} | {t:.1f} | {t / times[0]:.2f} | {curv:.1f} | {solve:.1f} | {its:g} "
                f"| {trunc:g} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
