"""The batch reduction every provider agrees on (private)."""
from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["REDUCTIONS", "reduce_loss", "require_grad"]

#: How a scalar loss value is read: "mean" of the N per-sample losses, or their "sum". ("auto",
#: NewtonLoss's default, reads it as the mean and checks that on the first call.)
REDUCTIONS = ("auto", "mean", "sum")


def reduce_loss(out: Any, N: int, reduction: str = "mean") -> tuple[Tensor, Tensor]:
    """Return (mean, sum over samples) of a loss that gave N values (N,), or a scalar: their
    mean, or their sum for ``reduction="sum"``."""
    if not isinstance(out, Tensor):
        raise TypeError(f"loss_fn must return a torch.Tensor; got {type(out).__name__}")
    if not out.is_floating_point():
        raise TypeError(
            f"loss_fn must return a floating-point tensor; got dtype {out.dtype}. A loss built from "
            "counts, comparisons, argmax or rounding has no gradient: compute it from y with "
            "differentiable operations (a relaxation) in a floating dtype"
        )
    if out.ndim == 0:
        return (out / N, out) if reduction == "sum" else (out, out * N)
    if out.ndim == 1 and out.shape[0] == N:
        return out.mean(), out.sum()
    hint = ""
    if out.ndim >= 1 and out.shape[0] == N:
        hint = (" (one loss per sample: squeeze the trailing dimension, .squeeze(-1))" if out[0].numel() == 1
                else " (per-element losses: sum or average them per sample, e.g. .sum(-1))")
    raise ValueError(
        f"loss_fn must return N={N} per-sample losses of shape ({N},) or a scalar (their mean, or "
        f"their sum with reduction='sum'); got shape {tuple(out.shape)}{hint}"
    )


def require_grad(t: Tensor, what: str = "loss_fn's value") -> None:
    """Raise ``ValueError`` if no gradient can flow from ``t`` back to the outputs y."""
    if not t.requires_grad:
        raise ValueError(
            f"{what} does not depend on y: no gradient flows from it back to the network's outputs. "
            "Does the loss detach y (.detach(), .item(), .numpy(), .tolist()), run under "
            "torch.no_grad(), or use only non-differentiable operations (argmax, round, comparisons)?"
        )
