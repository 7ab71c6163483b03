"""The batch reduction every provider agrees on (private)."""
from __future__ import annotations

from typing import Any

from torch import Tensor


def reduce_loss(out: Any, N: int) -> tuple[Tensor, Tensor]:
    """Return (mean, sum over samples) of a loss that gave N values (N,) or their mean (a scalar)."""
    if not isinstance(out, Tensor):
        raise TypeError(f"loss_fn must return a torch.Tensor; got {type(out).__name__}")
    if out.ndim == 0:
        return out, out * N
    if out.ndim == 1 and out.shape[0] == N:
        return out.mean(), out.sum()
    raise ValueError(
        f"loss_fn must return a scalar (the mean over the batch) or N={N} per-sample losses of "
        f"shape ({N},); got shape {tuple(out.shape)}"
    )
