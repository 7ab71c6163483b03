"""Argument checks shared by the sorting relaxations and the ranking loss (private)."""

from __future__ import annotations

import numbers

import torch

from .._checks import check_positive  # noqa: F401  (re-exported for this package)


def check_in_unit_interval(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a real number in [0, 1], else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


def check_size(name: str, value: object) -> int:
    """Return ``value`` if it is an integer >= 2 (a sortable length), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < 2:
        raise ValueError(f"{name} must be >= 2 (there is nothing to sort below two items), got {value}")
    return int(value)


def _inside_torch_func(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is being transformed by ``torch.func`` (vmap, grad, jacrev, jacfwd, ...).

    torch has no public API for this question, so this isolates the use of a private one,
    ``torch._C._functorch.is_functorch_wrapped_tensor`` (present since torch 2.0). It only
    chooses the faster of two exact implementations (the fused layers are correct under
    torch.func too, tested, just 2-5x slower there) and skips input-value checks that the
    untransformed call already made. Should the private function disappear, this returns False
    and everything keeps working, more slowly under transforms.
    """
    check = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    return bool(check(tensor)) if check is not None else False


def _traced(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s values cannot be read here: while ``torch.compile`` traces (reading
    one would break the graph) or inside a ``torch.func`` transform (:func:`_inside_torch_func`).
    Value checks are skipped then (the untransformed, eager call makes them) and the layers
    take their plain-torch form."""
    return torch.compiler.is_compiling() or _inside_torch_func(tensor)


def _holds(condition: torch.Tensor) -> bool:
    """Whether every entry of the boolean ``condition`` is True; True where it cannot be evaluated.

    Under ``torch.func.vmap`` (which ``jacfwd`` and ``hessian`` use internally) a tensor cannot be
    turned into a Python bool. The values were checked when the same inputs went through the
    untransformed call, so the check is skipped there rather than breaking the transform.
    """
    try:
        return bool(condition.all())
    except RuntimeError:
        return True


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every entry of ``tensor`` is finite; True where the check cannot be evaluated
    (inside ``torch.func`` transforms, see :func:`_holds`)."""
    if _traced(tensor):  # skipped without computing it: the check costs under vmap
        return True
    return _holds(torch.isfinite(tensor))


def all_in_unit_interval(tensor: torch.Tensor) -> bool:
    """Whether every entry of ``tensor`` lies in [0, 1] (so no NaN or ±Inf); True where the check
    cannot be evaluated (inside ``torch.func`` transforms, see :func:`_holds`)."""
    if _traced(tensor):
        return True
    return _holds((tensor >= 0) & (tensor <= 1))


def check_scores(scores: object, name: str = "scores", n: int | None = None) -> None:
    """Raise unless ``scores`` is a finite floating tensor of shape (..., n) with n >= 2."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {scores.dtype}")
    if scores.dim() == 0:
        raise ValueError(f"{name} must have shape (..., n) with n >= 2, got a 0-d tensor")
    size = scores.shape[-1]
    if n is None and size < 2:
        raise ValueError(f"{name} must have shape (..., n) with n >= 2, got shape {tuple(scores.shape)}")
    if n is not None and size != n:
        raise ValueError(
            f"{name} must have shape (..., {n}) for this sorting network of size {n}, "
            f"got shape {tuple(scores.shape)}"
        )
    if not all_finite(scores):
        raise ValueError(f"{name} must be finite, got NaN or Inf entries")
