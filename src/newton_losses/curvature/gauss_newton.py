"""Generalized Gauss-Newton ``G_i = J_iᵀ ∇²h_i J_i`` for ``ℓ_i = h_i(a(y_i))`` (docs/PAPER.md §1).

``J_i = ∂a/∂y_i``; G is positive semidefinite whenever h is convex. The loss comes as a
:class:`~newton_losses.CompositeLoss`; :func:`~newton_losses.curvature.composite.composite_gradient`
supplies a, ``∇h(a)`` (with its graph) and the detached leaf the outer was evaluated on.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .chunking import ChunkSpec, batched_grad, resolve_chunk
from .estimate import CurvatureEstimate
from .provider import CurvatureContext, CurvatureProvider
from .second_order import NotTwiceDifferentiableError, graph_reaches, raise_double_backward, require_graph

__all__ = ["GaussNewton", "gauss_newton_blocks", "gauss_newton_matvec"]


def gauss_newton_blocks(
    a: Tensor, y: Tensor, ga: Tensor, a_leaf: Tensor, *, chunk_size: ChunkSpec = None
) -> Tensor:
    """Per-sample generalized Gauss-Newton blocks ``G_i = J_iᵀ ∇²h_i J_i``, (N, m, m).

    Args:
        a: (N, p) the inner map's output, still attached to the graph of ``y``.
        y: (N, m) the leaf.
        ga: (N, p) per-sample gradients of the outer losses at ``a_leaf``, with create_graph.
        a_leaf: (N, p) the detached copy of ``a`` the outer was evaluated on.

    Cost: m passes for the Jacobian columns ``J e_k`` (a double-backward through the inner map,
    linear in the dummy cotangent) and m Hessian-vector products of the outer.
    """
    require_graph(ga, "curvature='gauss_newton' (outer function)")
    JE, chunk = _jacobian_columns(a, y, chunk_size=chunk_size)  # (m, N, p)
    try:
        HJ = batched_grad(ga, a_leaf, JE, chunk_size=chunk)  # (m, N, p)
    except RuntimeError as exc:
        raise_double_backward(exc)
    return torch.einsum("kip,lip->ikl", JE, HJ)


def _jvp_builder(a: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Return (u, w) with ``u = Jᵀ w`` built with a graph, so ``∂(u·v)/∂w = J v`` (a JVP)."""
    w = torch.zeros_like(a, requires_grad=True)
    (u,) = torch.autograd.grad(a, y, w, create_graph=True, allow_unused=True)
    # u must depend on w: a once_differentiable backward in the inner map returns a u that
    # requires grad (through an error node) but is not connected to w — its JVPs would be 0.
    if u is None or not u.requires_grad or not graph_reaches(u, w):
        raise NotTwiceDifferentiableError(
            "curvature='gauss_newton': the inner map's Jacobian-vector products could not be "
            "formed (its backward is not differentiable). Use curvature='fisher'."
        )
    return u, w


def _jacobian_columns(a: Tensor, y: Tensor, *, chunk_size: ChunkSpec = None) -> tuple[Tensor, Optional[int]]:
    N, m = y.shape
    u, w = _jvp_builder(a, y)
    eye = torch.eye(m, dtype=y.dtype, device=y.device)
    basis = eye.unsqueeze(1).expand(m, N, m)
    chunk = resolve_chunk(chunk_size, u, w, basis)
    return batched_grad(u, w, basis, chunk_size=chunk), chunk  # (m, N, p): [k, i] = J_i e_k


def gauss_newton_matvec(a: Tensor, y: Tensor, ga: Tensor, a_leaf: Tensor) -> Callable[[Tensor], Tensor]:
    """Matrix-free ``V (N, m) -> (J_iᵀ ∇²h_i J_i v_i)_i``: three backward passes per product."""
    require_graph(ga, "curvature='gauss_newton' (outer function)")
    u, w = _jvp_builder(a, y)

    def matvec(v: Tensor) -> Tensor:
        (jv,) = torch.autograd.grad(u, w, v, retain_graph=True)
        (hjv,) = torch.autograd.grad(ga, a_leaf, jv, retain_graph=True, allow_unused=True)
        if hjv is None:
            return torch.zeros_like(v)
        (out,) = torch.autograd.grad(a, y, hjv, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if out is None else out

    return matvec


class GaussNewton(CurvatureProvider):
    """``"gauss_newton"``: ``C_i = J_iᵀ ∇²h_i J_i`` of a :class:`~newton_losses.CompositeLoss`."""

    second_order = True  # of the outer function
    needs_composite = True
    psd = True
    solvers = ("dense", "cg")

    def needs_graph(self, solver: str, hessian_method: str) -> bool:
        return True

    def estimate(self, ctx: CurvatureContext) -> CurvatureEstimate:
        c = ctx.composite
        if c is None:  # set by NewtonLoss for providers with needs_composite
            raise TypeError("curvature 'gauss_newton' needs ctx.composite: the loss must be a CompositeLoss")
        if ctx.solver == "cg":
            return CurvatureEstimate(matvec=gauss_newton_matvec(c.a, ctx.y, c.ga, c.a_leaf), psd=True, method="cg")
        G = gauss_newton_blocks(c.a, ctx.y, c.ga, c.a_leaf, chunk_size=ctx.chunk_size)
        return CurvatureEstimate(matrix=G.detach(), psd=True, method="rows")
