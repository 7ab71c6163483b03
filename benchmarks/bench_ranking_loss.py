"""The exact ranking BCE (RankingLoss's default) against the naive float32 BCE and the float64
loss: its precision on confidently wrong sets and what it costs, measured in one process.

Precision: sets whose false entries (target 0) lie within [1e-12, 1e-8] of 1 in float64 (scores
rounded to float32, a random pair of the true order swapped in the target); per set, the
relative error of the float32 loss's value and score gradient against the float64 loss on the
same scores. Cost: float32 scores, batch B; forward + backward of the loss to the scores, and
the per-sample Hessian blocks of ``NewtonLoss(curvature="hessian")``; medians of interleaved
runs (one run of each loss, then the next round) and their ratio to the naive float32 loss.

    OMP_NUM_THREADS=1 python benchmarks/bench_ranking_loss.py            # docs/SORTING.md's tables
    OMP_NUM_THREADS=1 python benchmarks/bench_ranking_loss.py --quick    # a smoke run

Not a test: it prints Markdown tables and asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from newton_losses import NewtonLoss
from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix

# Each relaxation as a function of n and of `precise`: the naive rows use the sorting networks'
# lerp soft swaps (precise=False), as the study and diffsort did; the exact BCE the precise ones.
RELAXATIONS = {
    "NeuralSort τ=1": lambda n, precise: NeuralSort(1.0),
    "SoftSort τ=1": lambda n, precise: SoftSort(1.0),
    "odd-even logistic β=10": lambda n, precise: DiffSortNet("odd_even", n, 10.0, "logistic", precise=precise),
    "odd-even logistic_phi β=10": lambda n, precise: DiffSortNet("odd_even", n, 10.0, "logistic_phi", precise=precise),
    "odd-even Cauchy β=10": lambda n, precise: DiffSortNet("odd_even", n, 10.0, "cauchy", precise=precise),
    "bitonic logistic β=10": lambda n, precise: DiffSortNet("bitonic", n, 10.0, "logistic", precise=precise),
}
LOSSES = {  # label -> (RankingLoss arguments, precise soft swaps)
    "naive float32": (dict(loss="bce"), False),
    "exact float32": (dict(loss="bce_exact"), True),
    "naive float64": (dict(loss="bce", dtype=torch.float64), False),
}


def _loss(make, n: int, label: str) -> RankingLoss:
    kwargs, precise = LOSSES[label]
    return RankingLoss(make(n, precise), **kwargs)


def wrong_sets(relaxation, n: int, log_scale: tuple, count: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.empty(count, 1, dtype=torch.float64).uniform_(*log_scale, generator=g))
    y = (torch.randn(count, n, generator=g, dtype=torch.float64) * scale).float().double()
    t, i = y.clone(), torch.arange(count)
    a = torch.randint(0, n, (count,), generator=g)
    b = (a + 1 + torch.randint(0, n - 1, (count,), generator=g)) % n
    t[i, a], t[i, b] = y[i, b], y[i, a]
    T = permutation_matrix(t)
    P = RankingLoss(relaxation).inner(y)
    gap = torch.where(T == 0, 1 - P, torch.ones_like(P)).flatten(1).min(1).values
    keep = (gap <= 1e-8) & (gap >= 1e-12)
    return y[keep], T[keep]


def precision_table(n: int, count: int) -> str:
    lines = [f"| relaxation (n = {n}) | sets | loss | gradient error: median | 99% | max | value error: max |",
             "|---|---|---|---|---|---|---|"]
    for name, make in RELAXATIONS.items():
        relaxation = make(n, True)
        log_scale = (14.0, 18.0) if "Cauchy" in name else (0.0, 8.0)
        y64, T = wrong_sets(relaxation, n, log_scale, count)
        ref_y = y64.clone().requires_grad_(True)
        ref = RankingLoss(relaxation)(ref_y, T)
        (g_ref,) = torch.autograd.grad(ref.sum(), ref_y)
        for label in ("naive float32", "exact float32"):
            y32 = y64.float().requires_grad_(True)
            out = _loss(make, n, label)(y32, T.float())
            (g,) = torch.autograd.grad(out.sum(), y32)
            ge = ((g.double() - g_ref).norm(dim=-1) / g_ref.norm(dim=-1))
            ve = ((out.detach().double() - ref.detach()).abs() / ref.detach().abs())
            lines.append(f"| {name} | {len(T)} | {label} | {ge.median():.1e} | {ge.quantile(0.99):.1e} | "
                         f"{ge.max():.1e} | {ve.max():.1e} |")
    return "\n".join(lines)


def _interleaved(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def cost_table(sizes: tuple, batch: int, repeats: int) -> str:
    cols = list(LOSSES)
    lines = ["| relaxation | n | naive float32 fwd+bwd ms | " + " | ".join(f"{c} ×" for c in cols[1:])
             + " | Hessian blocks: naive ms | exact × |",
             "|---|---|---|" + "---|" * (len(cols) - 1) + "---|---|"]
    for name, make in RELAXATIONS.items():
        for n in sizes:
            g = torch.Generator().manual_seed(0)
            y0 = torch.randn(batch, n, generator=g)
            T = permutation_matrix(torch.randn(batch, n, generator=g))
            fns = {}
            for label in LOSSES:
                loss = _loss(make, n, label)

                def step(loss=loss) -> None:
                    y = y0.clone().requires_grad_(True)
                    loss(y, T).mean().backward()

                fns[label] = step
            for label in ("naive float32", "exact float32"):
                newton = NewtonLoss(_loss(make, n, label), curvature="hessian", lam=0.1, check_hessian="never")

                def hess(newton=newton) -> None:
                    newton.target(y0, T)

                fns["H " + label] = hess
            t = _interleaved(fns, repeats)
            base = t["naive float32"]
            lines.append(f"| {name} | {n} | {1e3 * base:.2f} | "
                         + " | ".join(f"{t[c] / base:.2f}" for c in cols[1:])
                         + f" | {1e3 * t['H naive float32']:.1f} | {t['H exact float32'] / t['H naive float32']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: small sizes and counts")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    count, sizes, batch, repeats = (300, (5,), 16, 3) if args.quick else (20000, (5, 10, 32), 100, 30)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("Precision on confidently wrong sets (relative error against the float64 loss):\n")
    print(precision_table(6, count))
    print(f"\nCost, float32 scores, batch {batch} (medians of {repeats} interleaved runs; × = ratio to the "
          "naive float32 loss):\n")
    print(cost_table(sizes, batch, repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
