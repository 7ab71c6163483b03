"""Network outputs given as a tuple, list, dict or nested mix of them (a pytree), private.

``NewtonLoss`` works on one (N, m) matrix of outputs per batch. A pytree of tensors, every leaf
(N, *shape_j) with the same N, is viewed as the concatenation of its flattened leaves,
(N, Σ_j m_j), and the loss is called on the pytree rebuilt from slices of it: the curvature then
couples all outputs of a sample, as the Newton step of a loss on several heads should.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .curvature.composite import CompositeLoss

__all__ = ["FlatOutputs", "flatten_outputs"]


class FlatOutputs:
    """How a pytree of outputs maps to its (N, M) concatenation and back.

    Attributes:
        flat: (N, M) the concatenation of the leaves, each flattened to (N, m_j) —
            differentiable, so a gradient on it reaches the leaves.
        spec: the pytree structure; shapes: each leaf's (N, *shape_j); sizes: the m_j.
    """

    def __init__(self, flat: Tensor, spec: Any, shapes: list, sizes: list) -> None:
        self.flat, self.spec, self.shapes, self.sizes = flat, spec, shapes, sizes

    def unflatten(self, flat: Tensor) -> Any:
        """The pytree of (N', *shape_j) leaves for an (N', M) tensor (N' may differ from N)."""
        n = flat.shape[0]
        parts = torch.split(flat, self.sizes, dim=1)
        leaves = [p.reshape((n,) + tuple(s[1:])) for p, s in zip(parts, self.shapes)]
        return pytree.tree_unflatten(leaves, self.spec)

    def wrap(self, loss_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """``loss_fn`` as a function of the (N, M) concatenation (a CompositeLoss stays one)."""
        if isinstance(loss_fn, CompositeLoss):
            return CompositeLoss(_OnFlat(loss_fn.inner, self), loss_fn.outer)
        return _OnFlat(loss_fn, self)


class _OnFlat:
    """``fn(unflatten(flat), *args, **kwargs)``; keeps the attributes NewtonLoss reads."""

    def __init__(self, fn: Callable[..., Tensor], layout: FlatOutputs) -> None:
        self.fn, self.layout = fn, layout
        for name in ("stochastic", "shift_invariant", "hessian_estimator", "gauss_newton_estimator"):
            if hasattr(fn, name):
                setattr(self, name, getattr(fn, name))

    def __call__(self, flat: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.fn(self.layout.unflatten(flat), *args, **kwargs)


def flatten_outputs(y: Any) -> FlatOutputs:
    """Check a pytree of output tensors and concatenate its leaves (see :class:`FlatOutputs`).

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
    flat = torch.cat([leaf.reshape(N, -1) for leaf in leaves], dim=1)
    sizes = [int(torch.Size(leaf.shape[1:]).numel()) for leaf in leaves]
    return FlatOutputs(flat, spec, [tuple(leaf.shape) for leaf in leaves], sizes)
