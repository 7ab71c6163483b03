"""Hessian blocks ``H_i = ∇²ℓ_i(y_i)`` and their batch average (docs/PAPER.md §1, Definition 1).

A batch of N independent samples with outputs y: (N, m) and a separable loss
``S(y) = Σ_i ℓ_i(y_i)`` has per-sample gradients ``g_i = ∂S/∂y_i`` and a block-diagonal
Hessian. Because ``∂g_i/∂y_j = 0`` for ``i ≠ j``, one backward pass of ``Σ_i g_i[k]`` yields
row k of *every* block at once, so all N blocks cost m backward passes (batched with
``is_grads_batched``), not N·m. Sample i's loss must depend on y_i only.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ._reduce import reduce_loss
from .chunking import ChunkSpec, batched_grad, resolve_chunk
from .estimate import CurvatureEstimate
from .fisher import all_reduce_sum
from .provider import CurvatureContext, CurvatureProvider
from .second_order import NotTwiceDifferentiableError, raise_double_backward, require_graph

__all__ = ["BatchHessian", "HessianBlocks", "hessian_blocks", "hessian_blocks_vmap", "hessian_matvec"]


def hessian_blocks(g: Tensor, y: Tensor, *, chunk_size: ChunkSpec = None) -> Tensor:
    """Per-sample Hessian blocks from the per-sample gradients, by m batched backward passes.

    Args:
        g: (N, m) per-sample gradients ``∂S/∂y``, computed with ``create_graph=True``.
        y: (N, m) the leaf they were taken with respect to.
        chunk_size: how many of the m passes to batch at once (None: all; 1: a loop; a
            callable ``(output, inputs, grad_outputs) -> int`` such as
            :func:`~newton_losses.curvature.choose_chunk_size` picks).

    Returns:
        H: (N, m, m) with ``H[i] = ∇²ℓ_i(y_i)``. Row k of every block is
        ``∂(Σ_i g_i[k])/∂y`` — valid because the loss is separable over samples.
    """
    require_graph(g, "curvature='hessian'")
    N, m = g.shape
    eye = torch.eye(m, dtype=g.dtype, device=g.device)
    basis = eye.unsqueeze(1).expand(m, N, m)  # basis[k, i] = e_k
    try:
        chunk = resolve_chunk(chunk_size, g, y, basis)
        rows = batched_grad(g, y, basis, chunk_size=chunk)  # (m, N, m): rows[k, i] = H_i[k]
    except RuntimeError as exc:
        raise_double_backward(exc)
    return rows.permute(1, 0, 2)


def hessian_matvec(g: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    """Matrix-free per-sample Hessian-vector products ``V (N, m) -> (H_i v_i)_i``.

    One double-backward pass through the retained graph of ``g`` per product.
    """
    require_graph(g, "curvature='hessian' (matrix-free)")

    def matvec(v: Tensor) -> Tensor:
        try:
            (hv,) = torch.autograd.grad(g, y, v, retain_graph=True, allow_unused=True)
        except RuntimeError as exc:
            raise_double_backward(exc)
        return torch.zeros_like(v) if hv is None else hv

    return matvec


def hessian_blocks_vmap(
    per_sample_loss: Callable[..., Tensor], y: Tensor, args: tuple, kwargs: dict
) -> Tensor:
    """Per-sample Hessian blocks with ``torch.func.vmap(torch.func.hessian(...))``.

    ``per_sample_loss(y_batch, *args, **kwargs)`` is called on a batch of one sample inside the
    vmap. Tensor arguments whose first dimension equals N are sliced per sample; all other
    arguments are passed whole. A reference point for :func:`hessian_blocks` (docs/PERFORMANCE.md
    compares the two).
    """
    N = y.shape[0]

    def batched(a: Any) -> bool:
        return isinstance(a, Tensor) and a.ndim >= 1 and a.shape[0] == N

    flat = list(args) + list(kwargs.values())
    in_dims = tuple(0 if batched(a) else None for a in flat)
    n_args = len(args)
    keys = list(kwargs)

    def one(yi: Tensor, *rest: Any) -> Tensor:
        r = [a.unsqueeze(0) if (d == 0) else a for a, d in zip(rest, in_dims)]
        out = per_sample_loss(yi.unsqueeze(0), *r[:n_args], **dict(zip(keys, r[n_args:])))
        return out.sum()

    from torch.func import hessian, vmap

    try:
        return vmap(hessian(one), in_dims=(0,) + in_dims)(y, *flat)
    except RuntimeError as exc:
        raise NotTwiceDifferentiableError(
            f"torch.func could not compute the Hessian of this loss ({exc}); use "
            "hessian_method='rows' (autograd) or curvature='fisher'."
        ) from exc


class HessianBlocks(CurvatureProvider):
    """``"hessian"``: per-sample blocks ``C_i = ∇²ℓ_i(y_i)``, dense (m passes) or matrix-free."""

    second_order = True
    solvers: tuple[str, ...] = ("dense", "cg")

    def needs_graph(self, solver: str, hessian_method: str) -> bool:
        return not (hessian_method == "vmap" and solver == "dense")

    def estimate(self, ctx: CurvatureContext) -> CurvatureEstimate:
        if ctx.solver == "cg":
            return CurvatureEstimate(matvec=hessian_matvec(ctx.g, ctx.y), method="cg")
        H, method = self._blocks(ctx)
        return CurvatureEstimate(matrix=H, method=method)

    @staticmethod
    def _blocks(ctx: CurvatureContext) -> tuple[Tensor, str]:
        if ctx.hessian_method != "vmap":
            return hessian_blocks(ctx.g, ctx.y, chunk_size=ctx.chunk_size).detach(), "rows"
        tail, loss_fn = tuple(ctx.shape[1:]), ctx.loss_fn

        def summed(yy: Tensor, *a: Any, **k: Any) -> Tensor:
            return reduce_loss(loss_fn(yy.reshape((yy.shape[0],) + tail), *a, **k), yy.shape[0])[1]

        return hessian_blocks_vmap(summed, ctx.y.detach(), ctx.args, ctx.kwargs).detach(), "vmap"


class BatchHessian(HessianBlocks):
    """``"hessian_batch"``: ``C = (1/N) Σ_j ∇²ℓ_j(y_j)``, one matrix for the (global) batch."""

    solvers = ("dense",)  # one shared matrix: m passes beat N products per CG iteration

    def estimate(self, ctx: CurvatureContext) -> CurvatureEstimate:
        H, method = self._blocks(ctx)
        S = H.to(torch.float64).sum(0)
        n = torch.tensor([float(H.shape[0])], dtype=torch.float64, device=H.device)
        if ctx.distributed:
            S, n = all_reduce_sum(S), all_reduce_sum(n)
        return CurvatureEstimate(matrix=S / n, shared=True, method=method)
