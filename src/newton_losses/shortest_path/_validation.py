"""Argument checks shared by the shortest-path losses (private).

Every public function and class of :mod:`newton_losses.shortest_path` validates its arguments
here, at the boundary, and raises ``TypeError``/``ValueError`` naming the argument, the value and
what was expected.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from .._checks import check_positive  # noqa: F401  (re-exported for this package)

BASELINES = ("center", "loo", "none")


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value: object, allowed: tuple) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_generator(generator: object) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def check_sampling(sigma: object, n_samples: object, baseline: object) -> tuple[float, int, str]:
    """σ > 0, S >= 1 (>= 2 for the leave-one-out baseline), baseline a known name."""
    sigma = check_positive("sigma", sigma)
    if sigma * sigma == 0.0 or not math.isfinite(1.0 / (sigma * sigma)):
        raise ValueError(
            f"sigma={sigma!r} is too small: the Stein Hessian divides by σ², which is not a "
            "representable number here (σ² underflows); use sigma >= 1e-150"
        )
    n_samples = check_int("n_samples", n_samples, 1)
    baseline = check_choice("baseline", baseline, BASELINES)
    if baseline == "loo" and n_samples < 2:
        raise ValueError(
            f"baseline='loo' (leave-one-out mean of the other samples) needs n_samples >= 2, "
            f"got n_samples={n_samples}; use baseline='center' or 'none'"
        )
    return sigma, n_samples, baseline


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every entry is finite; True where it cannot be evaluated (inside torch.func, or
    while torch.compile traces: reading a value would break the graph; the eager call checks)."""
    if torch.compiler.is_compiling():
        return True
    try:
        return bool(torch.isfinite(tensor).all())
    except RuntimeError:
        return True


def _any_negative(tensor: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    try:
        return bool((tensor < 0).any())
    except RuntimeError:
        return False


def check_costs(costs: object, name: str = "costs") -> torch.Tensor:
    """Raise unless ``costs`` is a floating (B, H, W) tensor of finite, non-negative weights."""
    if not isinstance(costs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, W), got {type(costs).__name__}")
    if not costs.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (they are differentiated), got dtype {costs.dtype}"
        )
    if costs.dim() != 3:
        hint = (
            " (for flattened costs (N, H*W) reshape to (N, H, W) first)" if costs.dim() == 2 else ""
        )
        raise ValueError(
            f"{name} must have shape (B, H, W) (a batch of grids), got shape {tuple(costs.shape)}{hint}"
        )
    if 0 in costs.shape:
        raise ValueError(f"{name} must have non-empty dimensions, got shape {tuple(costs.shape)}")
    if not all_finite(costs):
        raise ValueError(f"{name} must be finite, found NaN or ±Inf")
    if _any_negative(costs):
        raise ValueError(
            f"{name} must be non-negative vertex weights (negative weights make shortest paths on "
            f"the 8-neighbour grid ill-defined), got minimum {costs.detach().min().item():.6g}"
        )
    return costs


def check_target(target: object, costs: torch.Tensor, name: str = "target") -> torch.Tensor:
    """Raise unless ``target`` is a real tensor of the shape of ``costs``; return it in its dtype."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if target.is_complex():
        raise TypeError(f"{name} must be a real tensor, got dtype {target.dtype}")
    if target.shape != costs.shape:
        raise ValueError(
            f"{name} must have the shape of the costs {tuple(costs.shape)}, got {tuple(target.shape)}"
        )
    target = target.to(device=costs.device, dtype=costs.dtype)
    if not all_finite(target):
        raise ValueError(f"{name} must be finite, found NaN or ±Inf")
    return target
