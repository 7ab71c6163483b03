"""Is your loss's gradient right in float32? check_precision flags the naive ranking BCE.

    python examples/precision_check.py           # about 5 s on one CPU core

Float32 has no number between 1 − 6·10⁻⁸ and 1. A relaxed sort that places an item confidently
at a wrong position gives an entry P_ik a few 10⁻⁸ from 1 where the truth is 0; float32 rounds
it to exactly 1, the naive binary cross-entropy's log(1 − P_ik + ε) then weighs its gradient by
1/ε = 10¹² instead of 1/(1 − P_ik), and that set's gradient comes out thousands of times too
large — no NaN, no Inf, nothing to notice (docs/SORTING.md, "Precision"; the gradient spikes of
RESULTS.md §2). ``RankingLoss``'s default, ``loss="bce_exact"``, takes such an entry's
complement from the rest of its row instead and stays accurate.

``newton_losses.check_precision(loss_fn, y, *args)`` evaluates each sample's gradient in y's
dtype and in float64 and flags the samples more than 10% off. The script runs it on 1,000
float32 ranking sets with widely spread scores (many confidently wrong), for the naive and the
exact BCE on three relaxations, then shows the same check running inside NewtonLoss
(``precision_every=k``) during training. (The sorting network computes its soft swaps to full
relative precision by default, so its naive BCE is off by tens of percent rather than by
thousands; ``DiffSortNet(..., precise=False)``, diffsort's arithmetic, is off by thousands.)
"""
from __future__ import annotations

import warnings

import torch

from newton_losses import NewtonLoss, check_precision
from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix


def main() -> None:
    g = torch.Generator().manual_seed(0)
    N, n = 1000, 6
    scores = 10 * torch.randn(N, n, generator=g)                   # float32, far-apart scores
    target = permutation_matrix(torch.randn(N, n, generator=g))    # random true orders

    print(f"{N} float32 sets of n = {n}, scores 10·N(0, 1), random true orders; per-set score gradients "
          "against float64")
    for name, relaxation in (("NeuralSort τ=1", NeuralSort(1.0)),
                             ("SoftSort τ=1", SoftSort(1.0)),
                             ("odd-even logistic β=10", DiffSortNet("odd_even", n, steepness=10.0))):
        # Confidently wrong: a false entry within 10⁻⁶ of 1 in float64, which float32 may round to 1.
        P64 = relaxation(scores.double())
        wrong = ((1 - P64 < 1e-6) & (target == 0)).flatten(1).any(1)
        print(f"  {name}: {int(wrong.sum())} sets confidently wrong")
        for loss in ("bce", "bce_exact"):
            report = check_precision(RankingLoss(relaxation, loss=loss), scores, target)
            among = f"; all of them confidently wrong: {bool(wrong[report.sick].all())}" if not report.ok else ""
            print(f"    loss={loss!r:12s} flagged {report.sick.numel():4d} of {N}; largest ‖g32‖/‖g64‖ "
                  f"{float(report.ratio.max()):.3g}{among}")

    naive = RankingLoss(NeuralSort(1.0), loss="bce")
    print("\nWhat the report says (NeuralSort, naive BCE):")
    print("  " + check_precision(naive, scores, target).advice())
    print("the exact BCE:")
    print("  " + str(check_precision(RankingLoss(NeuralSort(1.0)), scores, target)))

    # The same check inside a training loop: every 10th call of the Newton loss (the first
    # included) also checks its batch; the counts add up in newton.totals, and the first sick
    # batch warns once, with the advice above.
    print("\nInside NewtonLoss(..., precision_every=10): 30 calls on random batches of 100 of these sets")
    for label, loss in (("naive BCE", naive), ("exact BCE", RankingLoss(NeuralSort(1.0)))):
        newton = NewtonLoss(loss, curvature="fisher", lam=0.1, damping="batch", precision_every=10)
        y = scores.clone().requires_grad_(True)
        pick = torch.Generator().manual_seed(1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(30):
                batch = torch.randperm(N, generator=pick)[:100]
                newton(y[batch], target[batch]).backward()
        t = newton.totals
        print(f"  {label}: {t.precision_checks} batches checked, {t.precision_sick} sets flagged, "
              f"{sum(issubclass(w.category, RuntimeWarning) for w in caught)} RuntimeWarning")

if __name__ == "__main__":
    main()
