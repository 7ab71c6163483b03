"""Gauss-Newton through a composite loss ℓ = h ∘ a: check it by hand, then see what it buys.

    python examples/gauss_newton_composite.py            # about 20 s on one CPU core
    python examples/gauss_newton_composite.py --quick    # 40 problems, 50 steps

For a loss that is a convex function h of an inner map a — a relaxed permutation matrix compared
with the truth, a relaxed path compared with the true one — the generalized Gauss-Newton matrix
of sample i,

    G_i = J_iᵀ ∇²h_i J_i,        J_i = ∂a(y_i)/∂y_i,

is positive semidefinite even where the loss's Hessian is indefinite. NewtonLoss needs the loss
split into its two parts: ``CompositeLoss(inner=a, outer=h)``, or ``RankingLoss(...).composite()``
for the ranking loss (inner: the relaxed sort, scores (N, n) -> P (N, n, n); outer: the BCE).

1. A CompositeLoss of your own (a squared error on the relaxed permutation matrix) and
   RankingLoss.composite(): the direction NewtonLoss(curvature="gauss_newton") sends back is
   compared with (G_i + λI)⁻¹ g_i built from torch.func.jacrev / torch.func.hessian per sample.
2. The demo's optimization problem (README, "The demo", part 2): 200 ranking problems of n = 10
   with free scores, the odd-even sorting network with Cauchy swaps; the same update
   y ← y − η·d for 100 steps, d the plain gradient or a Newton direction, η = 10 for every method
   (the step size the demo's grid picked for each). Printed: sets ranked exactly, the final loss,
   and the time per step.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.func import hessian, jacrev

from newton_losses import CompositeLoss, NewtonLoss
from newton_losses.sorting import DiffSortNet, RankingLoss, permutation_matrix

LAM = 0.1


def newton_directions(newton: NewtonLoss, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    y = y.detach().clone().requires_grad_(True)
    newton(y, target).backward()
    return y.grad * y.shape[0]                  # the backward pass hands y the direction / N


def gauss_newton_by_hand(inner, outer, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(J_iᵀ ∇²h_i J_i + λI)⁻¹ g_i, g_i = J_iᵀ ∇h_i, one sample at a time with torch.func."""
    out = []
    for y_i, t_i in zip(y, target):
        a_i = inner(y_i[None])[0]
        J = jacrev(lambda s: inner(s[None])[0])(y_i).reshape(-1, y_i.numel())          # (n², n)
        h = lambda a: outer(a[None], t_i[None])[0]                                        # noqa: E731
        H = hessian(h)(a_i).reshape(J.shape[0], J.shape[0])                              # (n², n²)
        g = J.T @ torch.func.grad(h)(a_i).reshape(-1)
        out.append(torch.linalg.solve(J.T @ H @ J + LAM * torch.eye(y_i.numel(), dtype=y.dtype), g))
    return torch.stack(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="40 problems and 50 steps")
    args = p.parse_args(argv)
    sets, steps = (40, 50) if args.quick else (200, 100)
    n = 10
    torch.manual_seed(0)
    sorter = DiffSortNet("odd_even", n, steepness=10.0, sigmoid="cauchy")

    # 1. Hand check -------------------------------------------------------------------------
    y = torch.randn(16, n, dtype=torch.float64)
    values = torch.randn(16, n, dtype=torch.float64)
    target = permutation_matrix(values)                         # (16, n, n), P_true @ values sorted

    def squared_error(P: torch.Tensor, P_true: torch.Tensor) -> torch.Tensor:
        """Your outer function: convex in P, one value per sample."""
        return (P - P_true).pow(2).mean((-2, -1))

    mine = CompositeLoss(inner=sorter, outer=squared_error)
    ranking = RankingLoss(sorter).composite()                   # inner: sorter, outer: exact BCE
    print(f"odd-even sorting network, Cauchy swaps, steepness 10, n = {n}, λ = {LAM} (float64)")
    print("  1. NewtonLoss(gauss_newton) against J_iᵀ ∇²h_i J_i built with torch.func, 16 samples:")
    for name, loss in (("CompositeLoss(sorter, squared error)", mine),
                       ("RankingLoss(sorter).composite()", ranking)):
        ours = newton_directions(NewtonLoss(loss, curvature="gauss_newton", lam=LAM), y, target)
        hand = gauss_newton_by_hand(loss.inner, loss.outer, y, target)
        rel = float((ours - hand).abs().max() / hand.abs().max())
        print(f"     {name:38s} max |difference| / max |direction| = {rel:.1e}")
    # (A loss that is not split raises a ValueError naming CompositeLoss:
    #  NewtonLoss(RankingLoss(sorter), curvature="gauss_newton")(y, target).)

    # 2. What the direction buys ----------------------------------------------------------------
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(sets, n, generator=gen, dtype=torch.float64)
    target = permutation_matrix(values)
    start = torch.randn(sets, n, generator=gen, dtype=torch.float64)
    loss = RankingLoss(sorter)
    print(f"  2. {sets} problems, free scores, {steps} steps y ← y − 10·d:")
    variants = (("gradient (no Newton loss)", None),
                ("NewtonLoss, hessian", NewtonLoss(loss, curvature="hessian", lam=LAM)),
                ("NewtonLoss, gauss_newton", NewtonLoss(loss.composite(), curvature="gauss_newton", lam=LAM)))
    for label, newton in variants:
        y = start.clone()
        t0 = time.perf_counter()
        for _ in range(steps):
            if newton is None:
                s = y.clone().requires_grad_(True)
                loss(s, target).sum().backward()        # per-sample gradients ∇ℓ_i
                d = s.grad
            else:
                d = newton_directions(newton, y, target)
            y = y - 10.0 * d
        ms = 1e3 * (time.perf_counter() - t0) / steps
        with torch.no_grad():
            exact = float((y.argsort(-1) == values.argsort(-1)).all(-1).double().mean())
            final = float(loss(y, target).mean())
        print(f"     {label:26s} exact {100 * exact:5.1f}%   final loss {final:.4f}   {ms:6.1f} ms/step")


if __name__ == "__main__":
    main()
