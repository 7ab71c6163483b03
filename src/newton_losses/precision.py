"""Is this loss's gradient right in the dtype it is computed in? A per-sample check against float64.

Floating-point rounding can make a loss's gradient wrong by orders of magnitude without any NaN
or Inf: the naive ranking BCE in float32 rounds a relaxed permutation entry within 6·10⁻⁸ of 1
to exactly 1 and weighs it by 1/ε (docs/SORTING.md, Precision). :func:`check_precision`
evaluates the per-sample gradients of a batch twice — in the inputs' dtype and in float64 — and
names the samples whose gradient differs by more than a tolerance, with advice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .curvature._reduce import reduce_loss

__all__ = ["PrecisionReport", "check_precision"]

#: A sample's gradient is "sick" when it differs from float64 by more than this, relative to the
#: float64 gradient's norm: far above float32's own conditioning, far below what rounding
#: failures give (docs/SORTING.md, Precision).
DEFAULT_RTOL = 0.1

#: Errors are measured against at least this fraction of the batch's mean float64 gradient norm,
#: so that a sample whose true gradient is negligible (a saturated relaxation: 10⁻⁶ of the batch's
#: and less) is not "sick" for a large relative error that moves nothing
#: (``scripts/precision_sick_samples.py``; RESULTS §2, "The exact float32 loss").
DEFAULT_FLOOR = 1e-3


@dataclass
class PrecisionReport:
    """The outcome of :func:`check_precision` for one batch.

    Attributes:
        dtype: the dtype checked (the inputs').
        error: (N,) per-sample ``‖g_i − g64_i‖ / max(‖g64_i‖, floor · mean_j ‖g64_j‖)`` (0 where
            both are 0; inf where the reference is 0 and the difference is not).
        ratio: (N,) per-sample ``‖g_i‖ / ‖g64_i‖`` — how many times too large (or small) the
            gradient is.
        sick: indices of the samples with ``error > rtol``.
        rtol: the tolerance used.
    """

    dtype: torch.dtype
    error: Tensor
    ratio: Tensor
    sick: Tensor
    rtol: float

    @property
    def worst(self) -> float:
        """The largest per-sample error (0 for an empty batch)."""
        return float(self.error.max()) if self.error.numel() else 0.0

    @property
    def ok(self) -> bool:
        return self.sick.numel() == 0

    def advice(self) -> str:
        """What to do about sick samples (an empty string when there are none)."""
        if self.ok:
            return ""
        i = int(self.sick[self.error[self.sick].argmax()])
        return (
            f"{self.sick.numel()} of {self.error.numel()} samples have a {self.dtype} gradient more "
            f"than {self.rtol:g} (relative) away from float64; the worst, sample {i}, is off by "
            f"{float(self.error[i]):.3g} (its norm ×{float(self.ratio[i]):.3g}). Compute the loss in "
            "float64 (cast its inputs, e.g. RankingLoss(..., dtype=torch.float64)) or use a form "
            "of it that is exact in this dtype (ranking: RankingLoss's default loss='bce_exact')."
        )

    def __str__(self) -> str:
        if self.ok:
            return f"PrecisionReport({self.dtype}: all {self.error.numel()} samples within {self.rtol:g} of float64; worst {self.worst:.2g})"
        return f"PrecisionReport({self.advice()})"


def check_precision(loss_fn: Callable[..., Tensor], y: Tensor, *args: Any, rtol: float = DEFAULT_RTOL,
                    floor: float = DEFAULT_FLOOR, **kwargs: Any) -> PrecisionReport:
    """Per-sample gradients of ``loss_fn`` at ``y`` in y's dtype against float64.

    Args:
        loss_fn: ``loss_fn(y, *args, **kwargs)`` -> N per-sample losses or their mean; sample i's
            loss depends on y_i only (as for :class:`~newton_losses.NewtonLoss`).
        y: (N, *shape) floating outputs (detached here).
        *args, **kwargs: the loss's other arguments; floating tensors among them are cast to
            float64 for the reference.
        rtol: a sample is sick when ``‖g_i − g64_i‖ > rtol · max(‖g64_i‖, floor · mean_j ‖g64_j‖)``.
        floor: the error's reference is at least this fraction of the batch's mean float64
            gradient norm (default 10⁻³), so that samples with a negligible gradient are not
            flagged for a relative error that changes nothing; ``floor=0`` judges every sample
            against its own gradient alone.

    Returns:
        a :class:`PrecisionReport`. Cost: two forward and backward passes of the loss (one in
        float64).

    Example:
        >>> import torch
        >>> from newton_losses.sorting import DiffSortNet, RankingLoss, permutation_matrix
        >>> scores = torch.tensor([[0.1154, 0.2010, 0.5388, -1.7510, 0.2929]])
        >>> target = permutation_matrix(torch.tensor([[0.0, 4.0, 3.0, 1.0, 2.0]]))
        >>> net = DiffSortNet("odd_even", 5, steepness=10.0)
        >>> check_precision(RankingLoss(net, loss="bce"), scores, target).ok   # naive float32 BCE
        False
        >>> check_precision(RankingLoss(net), scores, target).ok               # the exact form
        True
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor; got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"y must be a floating-point tensor; got dtype {y.dtype}")
    if y.ndim < 1 or y.shape[0] < 1:
        raise ValueError(f"y must have a batch dimension, (N, ...) with N >= 1; got shape {tuple(y.shape)}")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0:
        raise ValueError(f"rtol must be a positive number; got {rtol!r}")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < 1:
        raise ValueError(f"floor must be a number in [0, 1); got {floor!r}")
    if getattr(loss_fn, "stochastic", False):
        raise ValueError(
            f"{type(loss_fn).__name__} draws random samples on every call: its two evaluations "
            "would differ by their samples, not by rounding, so they cannot be compared"
        )
    g = _per_sample_gradient(loss_fn, y, args, kwargs)
    wide = tuple(to_float64(a) for a in args), {k: to_float64(v) for k, v in kwargs.items()}
    try:
        g64 = _per_sample_gradient(loss_fn, y.to(torch.float64), *wide)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"the loss could not be evaluated in float64 for the comparison ({type(exc).__name__}: "
            f"{exc}); a loss with parameters or buffers of its own (e.g. an nn.Linear) needs them "
            "in float64 too: check a float64 copy of it"
        ) from exc
    N = y.shape[0]
    diff = (g.to(torch.float64) - g64).reshape(N, -1).norm(dim=1)
    ref = g64.reshape(N, -1).norm(dim=1)
    scale = torch.maximum(ref, floor * ref.mean())  # at least `floor` of the batch's mean norm
    norm = g.to(torch.float64).reshape(N, -1).norm(dim=1)
    error = torch.where(scale > 0, diff / scale.clamp_min(torch.finfo(torch.float64).tiny),
                        torch.where(diff > 0, torch.inf, 0.0))
    ratio = torch.where(ref > 0, norm / ref.clamp_min(torch.finfo(torch.float64).tiny),
                        torch.where(norm > 0, torch.inf, 1.0))
    sick = torch.nonzero(~(error <= rtol)).flatten()  # NaN counts as sick
    return PrecisionReport(y.dtype, error.detach(), ratio.detach(), sick, float(rtol))


def _per_sample_gradient(loss_fn, y: Tensor, args: tuple, kwargs: dict) -> Tensor:
    leaf = y.detach().requires_grad_(True)
    with torch.enable_grad():
        _, total = reduce_loss(loss_fn(leaf, *args, **kwargs), leaf.shape[0])
        if not total.requires_grad:  # the loss does not depend on y (differentiably)
            return torch.zeros_like(leaf)
        (g,) = torch.autograd.grad(total, leaf, allow_unused=True)
    return torch.zeros_like(leaf) if g is None else g


def to_float64(a: Any) -> Any:
    """A floating tensor argument as float64 (detached); anything else unchanged."""
    return a.detach().to(torch.float64) if isinstance(a, Tensor) and a.is_floating_point() else a
