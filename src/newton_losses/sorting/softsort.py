"""SoftSort: a row-stochastic relaxation of the sorting permutation from distances to the sorted values.

Reference: S. Prillo, J. Eisenschlos, "SoftSort: A Continuous Relaxation for the argsort
Operator", ICML 2020.
"""

from __future__ import annotations

import torch

from ._validation import check_positive, check_scores


def soft_sort(scores: torch.Tensor, tau: float, power: float = 1.0) -> torch.Tensor:
    """Relaxed ascending sorting permutation of ``scores`` by SoftSort.

        P[i, k] = softmax_k( -|s_k - sort(s)_i|^p / τ )

    where sort(s) is the ascending sort (differentiable: a gather of s). Rows sum to one.

    Prillo & Eisenschlos (and difftopk) sort descending; this is their formula with an ascending
    sort, equal to difftopk's ``SoftSort(tau, pow=p)(-s)``.

    Every entry whose difference s_k - sort(s)_i is exactly zero (k the item sorted into position
    i, or an item tied with it) is set to zero without differentiating |·|^p at 0, where its
    derivatives are infinite or NaN for p < 2. First and second derivatives are then finite for
    every p > 0, ties included: at an exact tie they are those of |·|^p at 0 where it has them
    (the first for p > 1, the second for p > 2), and 0 where it has none (the symmetric choice
    torch.abs makes for p = 1).

    Args:
        scores: (..., n) floating tensor, n >= 2.
        tau: temperature τ > 0; τ → 0 gives the exact permutation matrix.
        power: exponent p > 0 of the distance (1 in the SoftSort paper).

    Returns:
        P: (..., n, n) with P @ scores ≈ scores sorted ascending, dtype/device of ``scores``.
    """
    tau = check_positive("tau", tau)
    power = check_positive("power", power)
    check_scores(scores)
    return _soft_sort(scores, tau, power)


def _soft_sort(scores: torch.Tensor, tau: float, power: float) -> torch.Tensor:
    # Sort values directly (one SortBackward node): under torch.func transforms this is markedly
    # cheaper than argsort + gather (measured in benchmarks/bench_sorting.py at n = 32).
    sorted_scores = torch.sort(scores, dim=-1).values
    diff = scores.unsqueeze(-2) - sorted_scores.unsqueeze(-1)  # [i, k] = s_k - sort(s)_i
    if power == 1.0:
        dist = diff.abs()
    elif power == 2.0:
        dist = diff.square()
    else:
        zero = diff == 0  # each item's own entry, and every tie
        # Double where: the masked branch never sees |0|^p, whose derivatives are inf or NaN.
        safe = torch.where(zero, torch.ones_like(diff), diff.abs())
        dist = torch.where(zero, torch.zeros_like(diff), safe.pow(power))
    return torch.softmax(dist / -tau, dim=-1)


class SoftSort(torch.nn.Module):
    """SoftSort relaxation (Prillo & Eisenschlos, ICML 2020) as a module; see :func:`soft_sort`.

    Maps scores (..., n) to a relaxed permutation matrix P (..., n, n) with P @ scores ≈
    ascending sort. Works for any n >= 2, any batch shape, dtype and device.

    >>> import torch
    >>> P = SoftSort(tau=0.01)(torch.tensor([3.0, 1.0, 2.0]))
    >>> (P @ torch.tensor([3.0, 1.0, 2.0])).round()
    tensor([1., 2., 3.])
    """

    #: P depends on score differences only: adding a constant to a sample's scores changes
    #: nothing (NewtonLoss warns about lam=0 for losses built on such relaxations).
    shift_invariant = True

    def __init__(self, tau: float = 1.0, power: float = 1.0) -> None:
        super().__init__()
        self.tau = check_positive("tau", tau)
        self.power = check_positive("power", power)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        check_scores(scores)
        return _soft_sort(scores, self.tau, self.power)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, power={self.power}"
