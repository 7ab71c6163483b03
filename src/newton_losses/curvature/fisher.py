"""Empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` (docs/PAPER.md §1, Definition 2), all-reduced."""
from __future__ import annotations

import torch
from torch import Tensor

from .estimate import CurvatureEstimate
from .provider import CurvatureContext, CurvatureProvider

__all__ = ["EmpiricalFisher", "all_reduce_sum", "empirical_fisher"]

# Above this m (and m > N, λ > 0, one process) the Fisher is solved by Woodbury on its (N, m)
# factor: an N×N system instead of an m×m eigendecomposition.
LOW_RANK_MIN_M = 512


def _dist_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum a tensor over all processes when torch.distributed is initialized (else identity).

    The all-reduce is done in float64 so that every rank ends with the same bits that a single
    process summing the whole batch would get up to summation order.
    """
    import torch.distributed as dist

    if not _dist_active():
        return t
    buf = t.detach().to(torch.float64).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.dtype)


def empirical_fisher(g: Tensor, *, distributed: bool = True) -> tuple[Tensor, int]:
    """Empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` of per-sample gradients g: (N, m).

    With ``distributed=True`` and torch.distributed initialized, both the sum and N run over the
    global batch (all-reduce), so every rank gets the matrix one process with the whole batch
    would. Returns (F (m, m) in float64, N_global).
    """
    gw = g.detach().to(torch.float64)
    S = gw.transpose(0, 1) @ gw
    if not (distributed and _dist_active()):  # the batch size is known: no host sync
        return S / g.shape[0], g.shape[0]
    n = torch.tensor([float(g.shape[0])], dtype=torch.float64, device=g.device)
    S = all_reduce_sum(S)
    n = all_reduce_sum(n)
    n_total = int(round(float(n.item())))
    return S / n_total, n_total


class EmpiricalFisher(CurvatureProvider):
    """``"fisher"``: first derivatives only; PSD; one shared matrix, or its factor for large m."""

    psd = True

    def estimate(self, ctx: CurvatureContext) -> CurvatureEstimate:
        N, m = ctx.g.shape
        if not ctx.distributed and m > LOW_RANK_MIN_M and N < m and ctx.lam > 0:
            # the factor alone: the m×m matrix (O(N m²) work, m² memory) is never formed
            return CurvatureEstimate(psd=True, low_rank=ctx.g.detach(), n_total=N, method="woodbury")
        F, n_total = empirical_fisher(ctx.g, distributed=ctx.distributed)
        return CurvatureEstimate(matrix=F, shared=True, psd=True, n_total=n_total, method="fisher")
