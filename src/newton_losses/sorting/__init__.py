"""Differentiable sorting relaxations and the ranking-supervision loss.

Convention shared by every relaxation here: scores of shape (..., n) map to a relaxed
permutation matrix P of shape (..., n, n) with

    P @ scores ≈ scores sorted ascending,   P[i, k] ≈ [item k is at position i].

The ground truth :func:`permutation_matrix` follows the same convention (ties broken by item
index), and :class:`RankingLoss` compares the two with a per-sample binary cross-entropy
(:func:`ranking_bce_exact` by default: exact in float32 on confidently wrong entries). (diffsort and difftopk's NeuralSort return the transpose, Pᵀ; difftopk's SoftSort
sorts descending.)

- :class:`NeuralSort` (Grover et al., ICLR 2019): temperature τ; rows stochastic.
- :class:`SoftSort` (Prillo & Eisenschlos, ICML 2020): temperature τ, power p; rows stochastic.
- :class:`DiffSortNet` (Petersen et al., ICML 2021 / ICLR 2022): odd-even or bitonic networks of
  logistic, ART ("logistic_phi") or Cauchy soft swaps, steepness β; doubly stochastic.

All are dtype/device generic, any batch shape, twice differentiable and usable under
``torch.func`` transforms (vmap, jacrev, jacfwd, hessian).
"""

from .neuralsort import NeuralSort, neural_sort
from .ranking_loss import (
    RANKING_LOSSES,
    RankingLoss,
    permutation_matrix,
    ranking_bce,
    ranking_bce_clamped,
    ranking_bce_exact,
    ranking_ce,
)
from .softsort import SoftSort, soft_sort
from .sorting_networks import DiffSortNet

__all__ = [
    "DiffSortNet",
    "NeuralSort",
    "RankingLoss",
    "SoftSort",
    "neural_sort",
    "permutation_matrix",
    "ranking_bce",
    "ranking_bce_clamped",
    "ranking_bce_exact",
    "ranking_ce",
    "RANKING_LOSSES",
    "soft_sort",
]
