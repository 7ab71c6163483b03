"""NeuralSort: a unimodal row-stochastic relaxation of the sorting permutation.

Reference: A. Grover, E. Wang, A. Zweig, S. Ermon, "Stochastic Optimization of Sorting Networks
via Continuous Relaxations", ICLR 2019.
"""

from __future__ import annotations

import torch

from ._validation import check_positive, check_scores


def neural_sort(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """Relaxed ascending sorting permutation of ``scores`` by NeuralSort.

    Row i (0-based, position i of the ascending order) is a softmax over the items k:

        P[i, k] = softmax_k( ((2i + 1 - n) s_k - Σ_l |s_k - s_l|) / τ )

    This is Grover et al.'s descending formula ((n + 1 - 2i') s - A_s 1) / τ (1-based i') applied
    to -s, which sorts s ascending. Rows sum to one; columns do not in general.

    Args:
        scores: (..., n) floating tensor, n >= 2.
        tau: temperature τ > 0; τ → 0 gives the exact permutation matrix.

    Returns:
        P: (..., n, n) with P @ scores ≈ scores sorted ascending, dtype/device of ``scores``.
    """
    tau = check_positive("tau", tau)
    check_scores(scores)
    return _neural_sort(scores, tau)


def _neural_sort(scores: torch.Tensor, tau: float) -> torch.Tensor:
    n = scores.shape[-1]
    spread = (scores.unsqueeze(-1) - scores.unsqueeze(-2)).abs().sum(-1)  # (..., n): Σ_l |s_k - s_l|
    # 1/τ goes on the (n,) and (..., n) factors rather than on the (..., n, n) logits.
    coeff = torch.arange(1 - n, n, 2, dtype=scores.dtype, device=scores.device) / tau  # (2i + 1 - n) / τ
    logits = coeff.unsqueeze(-1) * scores.unsqueeze(-2) - (spread / tau).unsqueeze(-2)
    return torch.softmax(logits, dim=-1)


class NeuralSort(torch.nn.Module):
    """NeuralSort relaxation (Grover et al., ICLR 2019) as a module; see :func:`neural_sort`.

    Maps scores (..., n) to a relaxed permutation matrix P (..., n, n) with P @ scores ≈
    ascending sort. Works for any n >= 2, any batch shape, dtype and device.

    >>> import torch
    >>> P = NeuralSort(tau=0.01)(torch.tensor([3.0, 1.0, 2.0]))
    >>> (P @ torch.tensor([3.0, 1.0, 2.0])).round()
    tensor([1., 2., 3.])
    """

    #: P depends on score differences only: adding a constant to a sample's scores changes
    #: nothing (NewtonLoss warns about lam=0 for losses built on such relaxations).
    shift_invariant = True

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = check_positive("tau", tau)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        check_scores(scores)
        return _neural_sort(scores, self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
