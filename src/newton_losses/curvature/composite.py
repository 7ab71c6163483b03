"""CompositeLoss ``ℓ = h ∘ a`` and its gradient through the split, for Gauss-Newton."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ._reduce import reduce_loss, require_grad

__all__ = ["CompositeLoss", "CompositeGradient", "composite_gradient"]


class CompositeLoss:
    """A loss given as an outer function of an inner map: ``ℓ(y, *args) = outer(inner(y), *args)``.

    This is what ``NewtonLoss(..., curvature="gauss_newton")`` needs: the generalized
    Gauss-Newton matrix ``G_i = J_iᵀ ∇²h_i J_i`` uses the Jacobian J of ``inner`` and the Hessian
    of ``outer`` with respect to its first argument. G is positive semidefinite when ``outer`` is
    convex in its first argument (binary cross-entropy of a relaxed permutation matrix, L1/L2 of a
    relaxed path).

    Args:
        inner: ``a = inner(y)``; y: (N, *shape) -> a: (N, *a_shape), sample i of a depending only
            on sample i of y (a relaxed sort, a relaxed shortest path).
        outer: ``outer(a, *args, **kwargs)`` -> (N,) per-sample losses or their mean (a scalar);
            the extra arguments (targets) go to ``outer`` only.

    Example:
        >>> import torch
        >>> loss = CompositeLoss(torch.sigmoid, lambda a, t: ((a - t) ** 2).sum(-1))
        >>> loss(torch.zeros(2, 3), torch.ones(2, 3))
        tensor([0.7500, 0.7500])
    """

    #: Optional, set on an instance (e.g. by ``RankingLoss.composite()``): each sample's loss is
    #: unchanged by adding a constant to its outputs. Read with ``getattr(..., False)``.
    shift_invariant: bool

    def __init__(self, inner: Callable[..., Tensor], outer: Callable[..., Tensor]) -> None:
        if not callable(inner):
            raise TypeError(f"inner must be callable; got {type(inner).__name__}")
        if not callable(outer):
            raise TypeError(f"outer must be callable; got {type(outer).__name__}")
        self.inner = inner
        self.outer = outer

    def __call__(self, y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.outer(self.inner(y), *args, **kwargs)

    def __repr__(self) -> str:
        return f"CompositeLoss(inner={self.inner!r}, outer={self.outer!r})"


@dataclass
class CompositeGradient:
    """The pieces of ``g = Jᵀ ∇h(a)`` that Gauss-Newton (and its second-order check) reuse.

    Attributes:
        a: (N, p) the inner map's output, flattened, still attached to the graph of y.
        a_leaf: (N, p) its detached copy, the leaf the outer was evaluated on.
        ga: (N, p) per-sample gradients ``∇h_i(a_i)``, built with ``create_graph=True``.
        outer: the outer function, ``outer(a (N, *a_shape), *args, **kwargs)``.
        a_shape: the inner map's output shape (N, *a_shape).
        scalar: the outer returned a scalar (the batch's mean or sum), not per-sample losses.
    """

    a: Tensor
    a_leaf: Tensor
    ga: Tensor
    outer: Callable[..., Tensor]
    a_shape: torch.Size
    scalar: bool = False


def composite_gradient(loss: CompositeLoss, y: Tensor, shape: torch.Size, args: tuple, kwargs: dict,
                       reduction: str = "mean"):
    """Evaluate ``outer(inner(y))`` split at a: returns (mean, sum, g (N, m), CompositeGradient).

    y: (N, m) leaf; ``shape`` the (N, *shape) view the inner map expects. The outer's gradient
    ``ga`` keeps its graph (for ∇²h); ``g = Jᵀ ga`` is one backward pass through the inner map.
    """
    N = y.shape[0]
    a = loss.inner(y.reshape(shape))
    if not isinstance(a, Tensor) or a.ndim < 1 or a.shape[0] != N:
        raise ValueError(
            f"CompositeLoss.inner must return a tensor (N, *a_shape) with N={N}; got "
            f"{tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__}"
        )
    require_grad(a, "CompositeLoss.inner's output")
    a_flat = a.reshape(N, -1)
    a_leaf = a_flat.detach().requires_grad_(True)
    out = loss.outer(a_leaf.reshape(a.shape), *args, **kwargs)
    value, total = reduce_loss(out, N, reduction)
    require_grad(total, "CompositeLoss.outer's value")
    (ga,) = torch.autograd.grad(total, a_leaf, create_graph=True, allow_unused=True)
    if ga is None:
        ga = torch.zeros_like(a_leaf)
    (g,) = torch.autograd.grad(a_flat, y, ga.detach(), retain_graph=True, allow_unused=True)
    if g is None:
        g = torch.zeros_like(y)
    return value, total, g, CompositeGradient(a_flat, a_leaf, ga, loss.outer, a.shape, out.ndim == 0)
