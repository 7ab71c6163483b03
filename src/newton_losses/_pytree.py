"""Network outputs given as a tuple, list, dict or nested mix of them (a pytree), private.

``NewtonLoss`` works on one (N, m) matrix of outputs per batch. A pytree of tensors, every leaf
(N, *shape_j) with the same N, is viewed as the concatenation of its flattened *variable* leaves,
(N, Σ_j m_j), and the loss is called on the pytree rebuilt from slices of it: the curvature then
couples all outputs of a sample, as the Newton step of a loss on several heads should.

The variables are the leaves that require grad, if any does (a leaf that does not — a fixed input
of the loss passed along with the outputs — is held constant, as it would be held by autograd);
if none does (``target``/``direction`` on detached outputs), every leaf.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .curvature.composite import CompositeLoss

__all__ = ["FlatOutputs", "flatten_outputs", "subset_loss"]


class FlatOutputs:
    """How a pytree of outputs maps to the (N, M) concatenation of its variable leaves and back.

    Attributes:
        flat: (N, M) the concatenation of the variable leaves, each flattened to (N, m_j) —
            differentiable, so a gradient on it reaches them.
        spec: the pytree structure; leaves: all leaves; variable: for each leaf, whether it is a
            variable; sizes: the m_j of the variable leaves.
    """

    def __init__(self, flat: Tensor, spec: Any, leaves: list, variable: list, sizes: list) -> None:
        self.flat, self.spec, self.leaves, self.variable, self.sizes = flat, spec, leaves, variable, sizes

    def unflatten(self, flat: Tensor, fill: str = "fixed", index: Optional[Tensor] = None) -> Any:
        """The pytree for an (N', M) tensor of the variable leaves: the fixed leaves as they are
        (``fill="fixed"``; rows ``index`` of them when given, for a subset of the samples) or
        zeros (``fill="zeros"``, for a direction)."""
        n = flat.shape[0]
        parts = iter(torch.split(flat, self.sizes, dim=1))
        out = []
        for leaf, var in zip(self.leaves, self.variable):
            if var:
                out.append(next(parts).reshape((n,) + tuple(leaf.shape[1:])))
            elif fill == "zeros":
                out.append(torch.zeros_like(leaf))
            else:
                fixed = leaf.detach()
                out.append(fixed if index is None else fixed[index])
        return pytree.tree_unflatten(out, self.spec)

    def wrap(self, loss_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """``loss_fn`` as a function of the (N, M) concatenation (a CompositeLoss stays one)."""
        if isinstance(loss_fn, CompositeLoss):
            return CompositeLoss(_OnFlat(loss_fn.inner, self), loss_fn.outer)
        return _OnFlat(loss_fn, self)


class _OnFlat:
    """``fn(unflatten(flat), *args, **kwargs)``; keeps the attributes NewtonLoss reads."""

    def __init__(self, fn: Callable[..., Tensor], layout: FlatOutputs, index: Optional[Tensor] = None) -> None:
        self.fn, self.layout, self.index = fn, layout, index
        for name in ("stochastic", "shift_invariant", "hessian_estimator", "gauss_newton_estimator"):
            if hasattr(fn, name):
                setattr(self, name, getattr(fn, name))

    def __call__(self, flat: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.fn(self.layout.unflatten(flat, index=self.index), *args, **kwargs)

    def subset(self, index: Tensor) -> "_OnFlat":
        """The same loss for the samples ``index`` only (the fixed leaves sliced to them)."""
        return _OnFlat(self.fn, self.layout, index)


def subset_loss(fn: Callable[..., Tensor], index: Tensor) -> Callable[..., Tensor]:
    """``fn`` for a subset of the samples: a pytree wrapper slices its fixed leaves; any other
    loss is returned as it is (its tensor arguments are sliced by the caller)."""
    if isinstance(fn, _OnFlat):
        return fn.subset(index)
    if isinstance(fn, CompositeLoss) and isinstance(fn.inner, _OnFlat):
        return CompositeLoss(fn.inner.subset(index), fn.outer)
    return fn


def flatten_outputs(y: Any) -> FlatOutputs:
    """Check a pytree of output tensors and concatenate its variable leaves (see :class:`FlatOutputs`).

    Raises:
        TypeError: a leaf is not a floating tensor, or the leaves' dtypes or devices differ.
        ValueError: no leaves, a 0-d leaf, or leaves with different batch sizes.
    """
    leaves, spec = pytree.tree_flatten(y)
    if not leaves:
        raise ValueError(f"y must be a tensor or a tuple/list/dict of tensors; got an empty {type(y).__name__}")
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, Tensor):
            raise TypeError(f"every leaf of y must be a torch.Tensor; leaf {i} is a {type(leaf).__name__} "
                            f"(structure: {spec})")
        if not leaf.is_floating_point():
            raise TypeError(f"every leaf of y must be a floating-point tensor; leaf {i} has dtype {leaf.dtype}")
        if leaf.ndim < 1:
            raise ValueError(f"every leaf of y must have a batch dimension, (N, *shape); leaf {i} is 0-d")
    first = leaves[0]
    for i, leaf in enumerate(leaves[1:], 1):
        if leaf.shape[0] != first.shape[0]:
            raise ValueError(f"every leaf of y must have the same batch size N; leaf 0 has {first.shape[0]}, "
                             f"leaf {i} has {leaf.shape[0]}")
        if leaf.dtype != first.dtype or leaf.device != first.device:
            raise TypeError(f"every leaf of y must have the same dtype and device; leaf 0 is {first.dtype} on "
                            f"{first.device}, leaf {i} is {leaf.dtype} on {leaf.device}")
    N = first.shape[0]
    grads = [leaf.requires_grad for leaf in leaves]
    variable = grads if any(grads) else [True] * len(leaves)
    chosen = [leaf for leaf, v in zip(leaves, variable) if v]
    flat = torch.cat([leaf.reshape(N, -1) for leaf in chosen], dim=1)
    sizes = [int(torch.Size(leaf.shape[1:]).numel()) for leaf in chosen]
    return FlatOutputs(flat, spec, leaves, variable, sizes)
