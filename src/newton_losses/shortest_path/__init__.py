"""Shortest paths on vertex-weighted grids (the Warcraft benchmark's combinatorial problem), and
the four families of shortest-path losses of the Newton-losses paper (docs/PAPER.md §1–2).

Convention: costs are vertex weights ``(B, H, W) ≥ 0``; a path runs from the top-left to the
bottom-right cell over the 8-neighbourhood and its cost includes both ends; paths are 0/1 masks
``(B, H, W)``. Every loss returns one value per grid, ``(B,)``, for ``NewtonLoss``.

- :mod:`.solver`: the exact, batched solver (labels, black-box oracle) — :func:`shortest_path`.
- :mod:`.relaxed`: relaxed Bellman-Ford (softmin, For/While loops, soft traceback), twice
  differentiable — :func:`relaxed_shortest_path`, :class:`RelaxedBellmanFord`,
  :class:`RelaxedShortestPathLoss`.
- :mod:`.path_loss`: L1, squared L2 and smooth-L1 losses between path masks — :func:`path_loss`.
- :mod:`.smoothing`: stochastic smoothing of the loss (:class:`SmoothedLoss`, generic
  :class:`GaussianSmoothing`) and of the algorithm (:class:`SmoothedAlgorithmLoss`).
- :mod:`.perturbed`: the perturbed optimizer (:class:`PerturbedOptimizer`) and the
  Fenchel-Young loss (:class:`FenchelYoungLoss`), Berthet et al. 2020.
- :mod:`.stein`: the Stein gradient/Jacobian/Hessian estimators and the low-rank curvature form
  (:class:`LowRankCurvature`); the stochastic losses hand out :class:`SteinCurvature` objects
  (``loss.hessian_estimator()``) to pass as ``NewtonLoss(loss, curvature=...)``.

Documentation with formulas and costs: docs/SHORTEST_PATH.md.
"""

from ._sampling import PerturbationSamples, SteinCurvature
from .path_loss import PATH_LOSSES, PathLoss, path_loss
from .perturbed import FenchelYoungLoss, PerturbedOptimizer, path_oracle
from .relaxed import RelaxedBellmanFord, RelaxedPathResult, RelaxedShortestPathLoss, relaxed_shortest_path
from .smoothing import GaussianSmoothing, SmoothedAlgorithmLoss, SmoothedLoss
from .solver import NEIGHBOUR_OFFSETS, ShortestPathResult, shortest_path
from .stein import LowRankCurvature

__all__ = [
    "NEIGHBOUR_OFFSETS",
    "ShortestPathResult",
    "shortest_path",
    "RelaxedPathResult",
    "relaxed_shortest_path",
    "RelaxedBellmanFord",
    "RelaxedShortestPathLoss",
    "PATH_LOSSES",
    "PathLoss",
    "path_loss",
    "GaussianSmoothing",
    "SmoothedLoss",
    "SmoothedAlgorithmLoss",
    "PerturbedOptimizer",
    "FenchelYoungLoss",
    "path_oracle",
    "SteinCurvature",
    "PerturbationSamples",
    "LowRankCurvature",
]
