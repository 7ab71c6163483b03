"""Per-sample losses between a (relaxed or expected) path mask and the true path.

With ``r = pred − target`` over the m = H·W cells of each grid:

==============  ==============================================  ======================  ====================
kind            ℓ(pred, target)                                 ∂ℓ/∂pred                ∂²ℓ/∂pred² (diagonal)
==============  ==============================================  ======================  ====================
``"l1"``        (1/m) Σ |r|                                     sign(r)/m               0 (a.e.)
``"l2"``        (1/m) Σ r²                                      2r/m                    2/m
``"smooth_l1"`` (1/m) Σ (√(r² + δ²) − δ)   (pseudo-Huber)      r/(m√(r²+δ²))           δ²/(m (r²+δ²)^{3/2})
==============  ==============================================  ======================  ====================

The mean over cells matches ``torch.nn.L1Loss`` / ``MSELoss`` on masks (their batch mean is this
loss's batch mean). All three are convex in ``pred``. L1 has no curvature of its own (zero almost
everywhere, undefined at r = 0), so a Gauss-Newton matrix ``Jᵀ ∇²ℓ J`` of a relaxed path with L1
is identically zero; use ``"l2"`` or the smooth, strictly convex ``"smooth_l1"`` (which tends to
L1 as δ → 0) when a Gauss-Newton curvature is wanted. The autograd Hessian of L1 ∘ relaxed path
is still defined almost everywhere (``Σ sign(r) ∇² pred``): autograd takes sign'(r) = 0 and
sign(0) = 0.
"""

from __future__ import annotations

import torch

from ._validation import all_finite, check_choice, check_positive, check_target

__all__ = ["PATH_LOSSES", "PathLoss", "path_loss"]

PATH_LOSSES = ("l1", "l2", "smooth_l1")
"""The elementwise losses :func:`path_loss` and :class:`PathLoss` compare a relaxed path with the
label by (``loss=``)."""


def path_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "l2", *, delta: float = 0.1
) -> torch.Tensor:
    """Per-sample loss between predicted and true path masks (see the module table).

    Args:
        pred: (B, H, W) floating, a relaxed, expected or exact path mask.
        target: (B, H, W) the true path mask (cast to pred's dtype).
        kind: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        delta: δ > 0 of ``"smooth_l1"``.

    Returns:
        (B,) losses, the mean over the H·W cells of each grid. Twice differentiable (L1 almost
        everywhere).
    """
    return PathLoss(kind, delta=delta)(pred, target)


class PathLoss:
    """``PathLoss(kind, delta)(pred, target) -> (B,)``: :func:`path_loss` as a callable object.

    Used as the ``outer`` function of ``CompositeLoss`` (Gauss-Newton); :meth:`derivatives`
    gives the analytic gradient and diagonal Hessian used by the stochastic curvature estimators.
    """

    def __init__(self, kind: str = "l2", *, delta: float = 0.1) -> None:
        self.kind = check_choice("kind", kind, PATH_LOSSES)
        self.delta = check_positive("delta", delta)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(pred, torch.Tensor) or not pred.is_floating_point():
            raise TypeError(
                "pred must be a floating-point torch.Tensor of shape (B, H, W), got "
                f"{pred.dtype if isinstance(pred, torch.Tensor) else type(pred).__name__}"
            )
        if pred.dim() != 3:
            raise ValueError(f"pred must have shape (B, H, W), got shape {tuple(pred.shape)}")
        if not all_finite(pred):
            raise ValueError("pred must be finite, found NaN or ±Inf")
        target = check_target(target, pred)
        r = (pred - target).flatten(1)
        if self.kind == "l1":
            per_cell = r.abs()
        elif self.kind == "l2":
            per_cell = r * r
        else:
            d = self.delta
            per_cell = torch.sqrt(r * r + d * d) - d
        return per_cell.mean(1)

    def derivatives(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Analytic ``(∂ℓ/∂pred, diag ∂²ℓ/∂pred²)``, each (B, m) with m = H·W (flattened)."""
        r = (pred - target.to(pred.dtype)).flatten(1)
        m = r.shape[1]
        if self.kind == "l1":
            return torch.sign(r) / m, torch.zeros_like(r)
        if self.kind == "l2":
            return 2 * r / m, torch.full_like(r, 2.0 / m)
        s = r * r + self.delta**2
        return r / (m * s.sqrt()), self.delta**2 / (m * s * s.sqrt())

    def __repr__(self) -> str:
        extra = f", delta={self.delta}" if self.kind == "smooth_l1" else ""
        return f"PathLoss({self.kind!r}{extra})"
