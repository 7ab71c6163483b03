"""CurvatureEstimate: what a curvature provider hands to the solver.

The solver follows from what the estimate holds (:mod:`newton_losses.newton`):
``low_rank`` → Woodbury (:func:`~newton_losses.linalg.low_rank_damped_solve`), ``matrix`` →
projected dense solve (:func:`~newton_losses.linalg.damped_solve`), ``matvec`` → conjugate
gradients (:func:`~newton_losses.linalg.conjugate_gradient`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import Tensor

__all__ = ["CurvatureEstimate"]


@dataclass
class CurvatureEstimate:
    """A curvature matrix for the Newton step: dense blocks, a shared matrix, a matvec or a factor.

    Set ``matrix`` or ``low_rank`` (or both), or ``matvec`` alone.

    Attributes:
        matrix: (N, m, m) one matrix per sample, or (m, m) shared by the batch.
        matvec: V (N, m) -> (N, m); row i is ``C_i v_i`` (or ``C v_i`` if ``shared``).
        shared: whether one matrix serves every sample (Fisher, batch-averaged Hessian).
        psd: known to be positive semidefinite by construction (Fisher, Gauss-Newton).
        low_rank: (K, m) factor G with ``C = (1/n_total) GᵀG`` (the empirical Fisher); when set,
            the solve uses Woodbury (a K×K system) instead of an m×m one. Needs λ > 0.
        n_total: the K of ``low_rank`` (the global batch size).
        method: how the estimate was obtained ("rows", "vmap", "cg", "fisher", "woodbury", ...),
            recorded in :class:`~newton_losses.NewtonDiagnostics`; ``None`` reads as "custom".
    """

    matrix: Optional[Tensor] = None
    matvec: Optional[Callable[[Tensor], Tensor]] = None
    shared: bool = False
    psd: bool = False
    low_rank: Optional[Tensor] = None
    n_total: Optional[int] = None
    method: Optional[str] = None

    def __post_init__(self) -> None:
        dense = self.matrix is not None or self.low_rank is not None
        if dense == (self.matvec is not None):
            raise ValueError(
                "CurvatureEstimate needs exactly one of matrix= (optionally with low_rank=), "
                "low_rank= and matvec="
            )
        if self.matrix is not None and self.matrix.ndim not in (2, 3):
            raise ValueError(
                f"CurvatureEstimate.matrix must have shape (N, m, m) or (m, m); "
                f"got {tuple(self.matrix.shape)}"
            )
        if self.low_rank is not None and self.low_rank.ndim != 2:
            raise ValueError(
                f"CurvatureEstimate.low_rank must have shape (K, m); got {tuple(self.low_rank.shape)}"
            )
        if (self.matrix is not None and self.matrix.ndim == 2) or self.low_rank is not None:
            self.shared = True
