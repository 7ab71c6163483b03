"""newton_losses — Newton losses for PyTorch (Petersen et al., NeurIPS 2024).

Wrap a hard-to-optimize loss on a batch of network outputs so that the network is trained with
the regularized Newton step of the loss::

    from newton_losses import NewtonLoss
    newton = NewtonLoss(loss_fn, curvature="fisher", lam=0.1)
    loss = newton(y, target)     # y: (N, m) network outputs; value = loss_fn(y, target).mean()
    loss.backward()              # y receives (1/N) (C + λI)^{-1} ∇ℓ_i(y_i)

Public API: :class:`NewtonLoss` and its functional form :func:`newton_direction`,
:class:`NewtonTotals`, :class:`CompositeLoss` (for Gauss-Newton),
:class:`CurvatureEstimate` (custom curvature), :class:`NewtonDiagnostics`,
:class:`NonFiniteLossError`, :class:`NotTwiceDifferentiableError`; the curvature registry
(:func:`register_curvature`, :func:`available_curvatures`, :class:`CurvatureProvider`,
:class:`CurvatureContext`); the precision check (:func:`check_precision`,
:class:`PrecisionReport`); the sorting relaxations and
ranking loss (:mod:`newton_losses.sorting`); the shortest-path solver and losses
(:mod:`newton_losses.shortest_path`). The library needs torch and numpy only; the experiment
harness (data sets, training runs, sweeps, reports, the ``newton-losses`` command) is the separate
package :mod:`newton_lab`, which depends on this one and is never imported by it.
"""
from .curvature import (
    CompositeLoss,
    CurvatureContext,
    CurvatureEstimate,
    CurvatureProvider,
    NotTwiceDifferentiableError,
    available_curvatures,
    register_curvature,
)
from .newton import CURVATURES, NewtonDiagnostics, NewtonLoss, NewtonTotals, NonFiniteLossError, newton_direction
from .precision import PrecisionReport, check_precision
from .sorting import (
    DiffSortNet,
    NeuralSort,
    RankingLoss,
    SoftSort,
    permutation_matrix,
    ranking_bce,
    ranking_bce_exact,
)

__version__ = "0.2.0"

__all__ = [
    "NewtonLoss",
    "newton_direction",
    "NewtonTotals",
    "CompositeLoss",
    "CurvatureEstimate",
    "NewtonDiagnostics",
    "NonFiniteLossError",
    "NotTwiceDifferentiableError",
    "CURVATURES",
    "CurvatureProvider",
    "CurvatureContext",
    "register_curvature",
    "available_curvatures",
    "check_precision",
    "PrecisionReport",
    "NeuralSort",
    "SoftSort",
    "DiffSortNet",
    "RankingLoss",
    "permutation_matrix",
    "ranking_bce",
    "ranking_bce_exact",
    "__version__",
]
