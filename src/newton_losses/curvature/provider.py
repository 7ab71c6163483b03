"""What a curvature provider receives (CurvatureContext) and declares (CurvatureProvider)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from .chunking import ChunkSpec
from .composite import CompositeGradient, CompositeLoss
from .estimate import CurvatureEstimate

__all__ = ["CurvatureContext", "CurvatureProvider", "FunctionProvider", "UserCurvature"]


@dataclass
class CurvatureContext:
    """Everything a provider may use to build its estimate for one batch.

    Attributes:
        y: (N, m) the flattened leaf the loss was evaluated on.
        g: (N, m) per-sample gradients ``∇ℓ_i(y_i)``, with a graph when the provider's
            :meth:`~CurvatureProvider.needs_graph` said so.
        loss_fn: the user's loss, ``loss_fn(y.reshape(shape), *args, **kwargs)``.
        shape: (N, *shape) the shape the loss expects.
        args, kwargs: the loss's extra arguments.
        solver: the form wanted, ``"dense"`` (a matrix) or ``"cg"`` (a matvec), already
            restricted to the provider's :attr:`~CurvatureProvider.solvers`.
        lam: the λ the solve will add.
        chunk_size: how many backward passes to batch (an int, None for all, or a picker
            ``(output, inputs, grad_outputs) -> int``).
        hessian_method: ``"auto"``, ``"rows"``, ``"vmap"`` or ``"cg"``.
        distributed: whether to all-reduce over torch.distributed processes.
        solve_dtype: dtype of the solves.
        composite: for a :class:`CompositeLoss` (providers with ``needs_composite``), the split
            gradient ``g = Jᵀ ∇h``.
    """

    y: Tensor
    g: Tensor
    loss_fn: Callable[..., Tensor]
    shape: torch.Size
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    solver: str = "dense"
    lam: float = 0.0
    chunk_size: ChunkSpec = None
    hessian_method: str = "auto"
    distributed: bool = False
    solve_dtype: torch.dtype = torch.float64
    composite: Optional[CompositeGradient] = None


class CurvatureProvider:
    """One curvature: says what it needs up front, then builds a :class:`CurvatureEstimate`.

    Subclass, set the class attributes, implement :meth:`estimate` and register an instance with
    :func:`~newton_losses.register_curvature`.

    Attributes:
        second_order: uses second derivatives of the loss; the gradient is then built with
            ``create_graph=True`` and checked (``NewtonLoss(check_hessian=...)``).
        needs_composite: the loss must be a :class:`CompositeLoss`; ``ctx.composite`` is set.
        psd: estimates are positive semidefinite by construction.
        solvers: the forms :meth:`estimate` can produce when asked via ``ctx.solver``, first
            the preferred one: ``"dense"`` (matrix or low-rank factor), ``"cg"`` (matvec).
    """

    second_order: bool = False
    needs_composite: bool = False
    psd: bool = False
    solvers: tuple[str, ...] = ("dense",)

    def needs_graph(self, solver: str, hessian_method: str) -> bool:
        """Whether ``ctx.g`` must be built with ``create_graph=True``."""
        return self.second_order

    def check_loss(self, loss_fn: Callable[..., Any], name: str) -> None:
        """Raise ``TypeError`` if this provider cannot work with ``loss_fn``."""
        if self.needs_composite and not isinstance(loss_fn, CompositeLoss):
            raise TypeError(
                f"curvature={name!r} needs the loss as an outer function of an inner map: pass "
                f"loss_fn=CompositeLoss(inner, outer); got {type(loss_fn).__name__}"
            )

    def estimate(self, ctx: CurvatureContext) -> CurvatureEstimate:
        raise NotImplementedError


class FunctionProvider(CurvatureProvider):
    """A first-order provider from a function ``estimate(ctx) -> CurvatureEstimate``."""

    def __init__(self, fn: Callable[[CurvatureContext], CurvatureEstimate]) -> None:
        self.fn = fn

    def estimate(self, ctx: CurvatureContext) -> CurvatureEstimate:
        out = self.fn(ctx)
        if not isinstance(out, CurvatureEstimate):
            raise TypeError(f"a curvature provider must return a CurvatureEstimate; got {type(out).__name__}")
        return out


class UserCurvature(CurvatureProvider):
    """``NewtonLoss(curvature=fn)``: ``fn(y, g, *args, **kwargs)`` with y, g: (N, m) detached,
    returning a (N, m, m) or (m, m) tensor or a :class:`CurvatureEstimate`."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def estimate(self, ctx: CurvatureContext) -> CurvatureEstimate:
        out = self.fn(ctx.y.detach(), ctx.g.detach(), *ctx.args, **ctx.kwargs)
        if isinstance(out, CurvatureEstimate):
            return out
        if not isinstance(out, Tensor):
            raise TypeError(
                "a custom curvature must return a Tensor (N, m, m) / (m, m) or a "
                f"CurvatureEstimate; got {type(out).__name__}"
            )
        N, m = ctx.y.shape
        if tuple(out.shape) not in ((N, m, m), (m, m)):
            raise ValueError(
                f"a custom curvature must return shape (N, m, m) = {(N, m, m)} or (m, m) = "
                f"{(m, m)}; got {tuple(out.shape)}"
            )
        return CurvatureEstimate(matrix=out.detach())
