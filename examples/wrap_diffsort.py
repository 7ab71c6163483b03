"""Wrap diffsort's differentiable sorting network in a Newton loss — and mind its orientation.

    pip install diffsort==0.2.0                   # pure Python (also in the lab's [dev] extra)
    python examples/wrap_diffsort.py              # about 5 s on one CPU core

diffsort (Petersen et al., ICML 2021 / ICLR 2022) returns, for scores x (N, n), the sorted
values and a relaxed permutation matrix X with ``x @ X`` sorted ascending: X = Pᵀ in this
library's convention (``P @ x`` sorted, P[i, k] ≈ [item k is at position i]). Its README's
ground truth ``one_hot(argsort(values)).transpose(-2, -1)`` is the transpose too
(docs/SORTING.md, "Deviations from the reference packages"). The script

1. checks both conventions on a batch;
2. wraps diffsort two ways and shows that NewtonLoss gives the same Newton directions as with
   this library's own sorting network (same relaxation, so the same loss and curvature):
   a) as a relaxation inside RankingLoss (transpose X back; then ``.composite()`` gives
      Gauss-Newton for free),
   b) diffsort's training loss as you would write it — BCE between X and its transposed ground
      truth, made per-sample — wrapped as it is;
3. optimizes free scores of 300 ranking problems with the Gauss-Newton loss, once with the targets
   given correctly and once with diffsort's ground-truth matrices passed to RankingLoss (the
   porting mistake: it reads them as P_true, i.e. as the inverse permutation), and prints how
   many sets end up ranked correctly.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

try:
    import diffsort
except ImportError:
    sys.exit("this example needs diffsort: pip install diffsort==0.2.0")

from newton_losses import NewtonLoss
from newton_losses.sorting import DiffSortNet, RankingLoss, permutation_matrix

torch.manual_seed(0)
N, n, STEEPNESS = 300, 5, 10.0


class DiffsortRelaxation(torch.nn.Module):
    """diffsort's network as a relaxation in this library's convention: scores (N, n) -> P (N, n, n)."""

    def __init__(self, network: str, n: int, steepness: float, sigmoid: str) -> None:
        super().__init__()
        self.sorter = diffsort.DiffSortNet(network, n, steepness=steepness, distribution=sigmoid)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        _, X = self.sorter(scores)           # x @ X sorted ascending
        return X.transpose(-2, -1)           # P = Xᵀ: P @ x sorted ascending


def diffsort_protocol_loss(sorter):
    """diffsort's training loss, ``BCELoss()(X, perm_ground_truth)``, as N per-sample values."""
    def loss_fn(scores: torch.Tensor, truth_transposed: torch.Tensor) -> torch.Tensor:
        _, X = sorter(scores)
        return F.binary_cross_entropy(X, truth_transposed, reduction="none").mean((-2, -1))
    return loss_fn


def newton_directions(newton: NewtonLoss, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    s = scores.detach().clone().requires_grad_(True)
    newton(s, target).backward()
    return s.grad * s.shape[0]               # backward gives the direction / N


def main() -> None:
    values = torch.randn(N, n, dtype=torch.float64)                  # the true values to rank
    scores = (values + 0.8 * torch.randn(N, n, dtype=torch.float64))  # a noisy prediction
    sorter = diffsort.DiffSortNet("odd_even", n, steepness=STEEPNESS, distribution="logistic")

    # 1. Conventions ------------------------------------------------------------------------
    ours = DiffSortNet("odd_even", n, steepness=STEEPNESS, sigmoid="logistic", precise=False)
    _, X = sorter(scores)
    truth_diffsort = F.one_hot(torch.argsort(values, dim=-1), n).transpose(-2, -1).double()
    print(f"diffsort odd-even network, logistic swaps, steepness {STEEPNESS:g}, n = {n}, {N} sets (float64)")
    gap = float((X - ours(scores).mT).abs().max())
    print(f"  1. diffsort's X against this library's P:       max |X − Pᵀ| = {gap:.1e}")
    print(f"     diffsort's ground truth is permutation_matrix(values)ᵀ: "
          f"{torch.equal(truth_diffsort, permutation_matrix(values).mT)}")

    # 2. NewtonLoss wraps it -----------------------------------------------------------------
    lam = 0.1
    wrapped = RankingLoss(DiffsortRelaxation("odd_even", n, STEEPNESS, "logistic"), loss="bce")
    reference = RankingLoss(ours, loss="bce")

    def relative_difference(curvature: str, loss, target, ref_loss, at) -> float:
        """max |d − d_ref| / max |d_ref| between the Newton directions of loss and ref_loss."""
        d = newton_directions(NewtonLoss(loss, curvature=curvature, lam=lam), at, target)
        d_ref = newton_directions(NewtonLoss(ref_loss, curvature=curvature, lam=lam), at, values)
        return float((d - d_ref).abs().max() / d_ref.abs().max())

    # (The Hessian's 4e-7: the BCE's second derivative, 1/(P + ε)², magnifies the last-digit
    # differences between the two implementations' entries of P near 0; the relaxations agree.)
    a_hessian = relative_difference("hessian", wrapped, values, reference, scores)
    a_gauss_newton = relative_difference("gauss_newton", wrapped.composite(), values, reference.composite(), scores)
    # diffsort's BCELoss clamps each log at −100; RankingLoss shifts it by ε = 1e-12 instead. The
    # two agree where X stays away from 0 and 1, so compare them on less confident scores (a set
    # with an entry of X within ~1e-8 of 0 or 1 sees a different gradient there; docs/SORTING.md).
    mild = 0.1 * scores
    b_hessian = relative_difference("hessian", diffsort_protocol_loss(sorter), truth_diffsort, reference, mild)
    X_mild = sorter(mild)[1]
    print(f"  2. Newton directions (λ = {lam}) of the wrapped diffsort loss against this library's network,")
    print("     max |difference| / max |direction|:")
    print(f"     a) RankingLoss(diffsort relaxation), hessian       {a_hessian:.1e}")
    print(f"        the same, gauss_newton via .composite()         {a_gauss_newton:.1e}")
    print(f"     b) diffsort's own BCE on (X, its ground truth)     {b_hessian:.1e}   (scores × 0.1: every X entry "
          f"in [{float(X_mild.min()):.0e}, 1 − {float(1 - X_mild.max()):.0e}])")

    # 3. The orientation pitfall, on an optimization problem -----------------------------------
    # Free scores (the "network" is the identity), 50 Gauss-Newton steps y ← y − d each.
    def solve(target: torch.Tensor, steps: int = 50) -> float:
        y = torch.randn(N, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        newton = NewtonLoss(wrapped.composite(), curvature="gauss_newton", lam=lam)
        for _ in range(steps):
            y = y - newton_directions(newton, y, target)
        correct = y.argsort(-1).argsort(-1) == values.argsort(-1).argsort(-1)
        return 100 * float(correct.all(-1).double().mean())

    involutions = 100 * float((truth_diffsort == truth_diffsort.mT).flatten(1).all(-1).double().mean())
    print("  3. 50 Gauss-Newton steps on free scores through RankingLoss(diffsort relaxation), "
          "sets ranked exactly:")
    print(f"     targets given as values (or permutation_matrix(values))    {solve(values):5.1f}%")
    print(f"     diffsort's ground-truth matrices passed as P_true (wrong)  {solve(truth_diffsort):5.1f}%"
          f"   (only the {involutions:.1f}% of sets whose permutation is its own inverse can come out right)")


if __name__ == "__main__":
    main()
