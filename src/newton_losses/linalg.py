"""Damped linear solves with curvature matrices: dense (eigendecomposition) and matrix-free (CG).

Every solve computes the regularized Newton direction

    d_i = (C_i + λ I)^{-1} g_i            g: (N, m), C_i: (m, m) per sample or one shared C

where C may be indefinite or singular (Hessians of relaxed algorithms usually are, see
docs/PAPER.md §1). A Newton step with an indefinite ``C + λI`` can point uphill, so the dense solver
always works on the eigendecomposition ``C = Q diag(μ) Qᵀ`` and applies one of three spectral
maps before damping:

==============  ===========================  ===============================================
projection      eigenvalues used             remark
==============  ===========================  ===============================================
``"abs"``       ``|μ| + λ``                  saddle-free Newton (Dauphin et al., 2014); default
``"clamp"``     ``max(μ, 0) + λ``            projection onto the PSD cone (nearest in Frobenius)
``"tikhonov"``  ``μ + λ``                    the paper's plain form; a matrix with ``μ + λ < 0``
                                             falls back to ``fallback`` (``"abs"`` by default)
==============  ===========================  ===============================================

All three agree with the exact damped Newton step wherever ``C`` is positive semidefinite, and
all return a descent direction (``gᵀd > 0`` for ``g ≠ 0``).  Solves run in float64 by default:
for m ≤ a few hundred this costs little (docs/PAPER.md §1: float32 Hessians agree with float64 to 1e-4,
but their inverses amplify that by the condition number).

The matrix-free solver is batched conjugate gradients on ``C + λI`` with Steihaug-style
truncation at negative curvature, so it too never returns an uphill direction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

PROJECTIONS = ("abs", "clamp", "tikhonov")
DAMPINGS = ("absolute", "relative", "batch")

__all__ = [
    "PROJECTIONS",
    "DAMPINGS",
    "SolveInfo",
    "damped_solve",
    "low_rank_damped_solve",
    "conjugate_gradient",
]


@dataclass
class SolveInfo:
    """What a solve saw: spectrum, fallbacks and effort.

    Attributes:
        min_eig: smallest eigenvalue of C (over all matrices), before projection and damping;
            ``None`` for matrix-free solves.
        max_eig: largest eigenvalue of C; ``None`` for matrix-free solves.
        n_matrices: number of distinct matrices solved with (N per-sample, 1 if shared).
        n_indefinite: matrices with a negative eigenvalue (matrix-free: with negative curvature
            of C + λI detected along a CG search direction).
        n_fallback: matrices for which the requested form was not used as is: ``"tikhonov"``
            matrices with ``μ + λ < 0`` (solved with the fallback projection), or CG systems
            truncated at negative curvature.
        lam_effective: the λ actually added (differs from λ with relative damping), averaged
            over matrices.
        iterations: CG iterations (0 for dense solves).
        max_residual: largest relative residual ‖(C+λI)d − g‖/‖g‖ at exit over the rows that
            were not truncated (CG only; the recurrence residual).
        n_singular: matrices with a direction left out of the solve because its damped
            eigenvalue was (numerically) zero — with λ = 0 and a singular C (dense solves); CG
            rows stopped on zero curvature (λ = 0 only).
        n_unscaled: matrices (with a nonzero right-hand side) whose relative or batch damping
            scale (mean |eigenvalue|) was zero — an all-zero curvature, e.g. of a loss linear in
            the outputs (L1, hinge) — and which were therefore damped with the absolute λ (step
            g/λ) instead of λ × 0 (dense solves).
    """

    min_eig: Optional[float]
    max_eig: Optional[float]
    n_matrices: int
    n_indefinite: int
    n_fallback: int
    lam_effective: float
    iterations: int = 0
    max_residual: Optional[float] = None
    n_singular: int = 0
    n_unscaled: int = 0


def _check_common(g: Tensor, lam: float, projection: str, fallback: str, damping: str) -> None:
    if g.ndim != 2:
        raise ValueError(f"g must have shape (N, m); got shape {tuple(g.shape)}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}; got {projection!r}")
    if fallback not in ("abs", "clamp"):
        raise ValueError(f"fallback must be 'abs' or 'clamp'; got {fallback!r}")
    if damping not in DAMPINGS:
        raise ValueError(f"damping must be one of {DAMPINGS}; got {damping!r}")
    if not (lam >= 0.0 and lam < float("inf")):
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")


def _spectral_map(mu: Tensor, lam: float, projection: str, fallback: str, damping: str,
                  eps: Optional[float] = None, reduce: Optional[Callable[[Tensor], Tensor]] = None):
    """Map eigenvalues mu (..., m) to the damped, projected eigenvalues; return extras.

    Returns (denominator (..., m), lam_eff (...,), fallback_mask (...,), unscaled (...,)).
    ``unscaled`` marks matrices whose relative/batch scale was zero (an all-zero curvature):
    λ × 0 would leave nothing to solve with, so they are damped with the absolute λ.
    """
    if damping == "absolute":
        lam_eff = torch.full(mu.shape[:-1], lam, dtype=mu.dtype, device=mu.device)
        unscaled = torch.zeros(mu.shape[:-1], dtype=torch.bool, device=mu.device)
    else:
        if damping == "relative":
            # λ relative to the curvature's own scale: mean |eigenvalue| of each matrix. This makes
            # λ independent of the loss's reduction and of the relaxation's sharpness.
            scale = mu.abs().mean(dim=-1)
            lam_eff = lam * scale
        else:
            # One scale for all matrices: mean |eigenvalue| over the batch (all-reduced if asked).
            total = torch.stack([mu.abs().sum(), torch.tensor(float(mu.numel()), dtype=mu.dtype, device=mu.device)])
            if reduce is not None:
                total = reduce(total)
            lam_eff = torch.full(mu.shape[:-1], 0.0, dtype=mu.dtype, device=mu.device) + lam * total[0] / total[1]
            scale = total[0].expand(mu.shape[:-1])
        # A zero scale (an all-zero curvature) leaves λ × 0, nothing to solve with: those matrices
        # are damped with the absolute λ (counted by the caller). Tested on the scale, not on
        # λ × scale, which can underflow for a tiny nonzero scale.
        unscaled = (scale == 0) & (lam > 0)
        lam_eff = torch.where(unscaled, torch.full_like(lam_eff, lam), lam_eff)  # no branch: no host sync
    lam_b = lam_eff.unsqueeze(-1)
    fb = torch.zeros(mu.shape[:-1], dtype=torch.bool, device=mu.device)
    if projection == "abs":
        den = mu.abs() + lam_b
    elif projection == "clamp":
        den = mu.clamp_min(0.0) + lam_b
    else:
        den = mu + lam_b
        tol = _zero_tol(mu, eps)
        # Negative beyond roundoff: not positive semidefinite. (Zero eigenvalues with λ = 0 are
        # handled by the pseudo-inverse below, the same way for every projection.)
        fb = (den < -tol).any(dim=-1)
        alt = (mu.abs() if fallback == "abs" else mu.clamp_min(0.0)) + lam_b  # no branch: no host sync
        den = torch.where(fb.unsqueeze(-1), alt, den)
    return den, lam_eff, fb, unscaled


def _zero_tol(mu: Tensor, eps: Optional[float] = None) -> Tensor:
    """Eigenvalues at or below this count as zero (relative to the matrix's largest |μ|).

    ``eps`` is the machine epsilon of the dtype C was *computed* in: a float32 Hessian solved in
    float64 still carries float32 roundoff, and its rounding-level negative eigenvalues are
    not indefiniteness.
    """
    eps = torch.finfo(mu.dtype).eps if eps is None else eps
    scale = mu.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(mu.dtype).tiny)
    return scale * eps * mu.shape[-1] * 10


def damped_solve(
    C: Tensor,
    g: Tensor,
    lam: float,
    *,
    projection: str = "abs",
    fallback: str = "abs",
    damping: str = "absolute",
    dtype: Optional[torch.dtype] = torch.float64,
    reduce: Optional[Callable[[Tensor], Tensor]] = None,
) -> tuple[Tensor, SolveInfo]:
    """Dense damped Newton directions ``d_i = (proj(C_i) + λI)^{-1} g_i``.

    Args:
        C: (N, m, m) one matrix per sample, or (m, m) shared by all samples. Symmetrized as
            ``(C + Cᵀ)/2`` (stochastic estimates are not exactly symmetric).
        g: (N, m) right-hand sides (per-sample gradients).
        lam: λ ≥ 0. With ``damping="relative"`` the added value is ``λ · mean|μ|`` per matrix;
            with ``damping="batch"`` it is ``λ`` times the mean |μ| over all N matrices.
        projection: ``"abs"``, ``"clamp"`` or ``"tikhonov"`` (see the module docstring).
        fallback: projection used for ``"tikhonov"`` matrices whose ``μ + λ`` is not positive.
        damping: ``"absolute"``, ``"relative"`` or ``"batch"``.
        dtype: dtype of the eigendecomposition (float64 by default); ``None`` keeps C's dtype.
        reduce: with ``damping="batch"``, a sum over processes (e.g. an all-reduce) applied to
            the pair (Σ|μ|, count) so that every process uses the global batch's scale.

    Returns:
        d: (N, m) in g's dtype, and a :class:`SolveInfo`.

    Directions along which the damped eigenvalue is (numerically) zero — only possible with
    λ = 0 and a singular C — are left out (pseudo-inverse), never divided by zero. A matrix whose
    relative/batch damping scale is zero (C = 0) is damped with the absolute λ instead
    (``SolveInfo.n_unscaled``).
    """
    _check_common(g, lam, projection, fallback, damping)
    N, m = g.shape
    shared = C.ndim == 2
    expected = (m, m) if shared else (N, m, m)
    if tuple(C.shape) != expected:
        raise ValueError(
            f"curvature must have shape (N, m, m) = {(N, m, m)} or (m, m) = {(m, m)}; "
            f"got {tuple(C.shape)}"
        )
    work = dtype or C.dtype
    Cw = C.to(work)
    Cw = 0.5 * (Cw + Cw.transpose(-1, -2))
    mu, Q = torch.linalg.eigh(Cw)
    eps_in = torch.finfo(C.dtype).eps
    den, lam_eff, fb, unscaled = _spectral_map(mu, lam, projection, fallback, damping, eps_in, reduce)
    # With λ = 0 nothing lifts the spectrum: an eigenvalue at the rounding level of the dtype C
    # was computed in is a zero, not curvature (a sampled estimate of rank < m has m − rank of
    # them), and dividing by it would blow the step up by 1/eps.
    keep = den > (_zero_tol(den, eps_in) if lam == 0 else _zero_tol(den))
    inv = torch.where(keep, 1.0 / den, torch.zeros_like(den))
    gw = g.to(work)
    if shared:
        coeff = (gw @ Q) * inv  # (N, m)
        d = coeff @ Q.transpose(0, 1)
    else:
        coeff = torch.einsum("nkm,nk->nm", Q, gw) * inv
        d = torch.einsum("nkm,nm->nk", Q, coeff)
    if torch.compiler.is_compiling():  # the figures below would each synchronise with the host
        return d.to(g.dtype), SolveInfo(None, None, 1 if shared else N, 0, 0, float("nan"))
    moved = (gw != 0).any(dim=-1)
    if shared:  # one matrix for all rows
        moved = moved.any()
    info = SolveInfo(
        min_eig=float(mu.min()),
        max_eig=float(mu.max()),
        n_matrices=1 if shared else N,
        n_indefinite=int((mu.amin(dim=-1) < -_zero_tol(mu, eps_in).squeeze(-1)).sum()),
        n_fallback=int(fb.sum()),
        lam_effective=float(lam_eff.mean()),
        n_singular=int((~keep).any(dim=-1).sum()),
        # counted where it changes the step: a zero gradient gives a zero step either way
        n_unscaled=int((unscaled & moved).sum()),
    )
    return d.to(g.dtype), info


def low_rank_damped_solve(
    G: Tensor, n_total: int, g: Tensor, lam: float, *, dtype: Optional[torch.dtype] = torch.float64
) -> tuple[Tensor, SolveInfo]:
    """Solve with an empirical Fisher ``F = (1/n_total) GᵀG`` without forming the m×m matrix.

    Woodbury: ``(F + λI)^{-1} g = (g − Gᵀ (n_total λ I + G Gᵀ)^{-1} G g) / λ`` — an N×N solve
    instead of an m×m one, for outputs with m ≫ N. Requires λ > 0 (F has rank ≤ N < m).

    Args:
        G: (K, m) the per-sample gradients the Fisher is built from.
        n_total: the number of samples F averages over (K unless gradients were gathered).
        g: (N, m) right-hand sides.
        lam: λ > 0.
    """
    if not (lam > 0.0 and lam < float("inf")):
        raise ValueError(f"lam must be finite and > 0 for a low-rank Fisher solve; got {lam!r}")
    work = dtype or G.dtype
    Gw, gw = G.to(work), g.to(work)
    K = Gw @ Gw.transpose(0, 1)  # (K, K)
    A = K + n_total * lam * torch.eye(K.shape[0], dtype=work, device=K.device)
    rhs = Gw @ gw.transpose(0, 1)  # (K, N)
    sol = torch.linalg.solve(A, rhs)
    d = (gw - (Gw.transpose(0, 1) @ sol).transpose(0, 1)) / lam
    if torch.compiler.is_compiling():  # the figures below would each synchronise with the host
        return d.to(g.dtype), SolveInfo(None, None, 1, 0, 0, float(lam))
    eig = torch.linalg.eigvalsh(K) / n_total
    info = SolveInfo(
        min_eig=0.0 if G.shape[1] > G.shape[0] else float(eig.min()),
        max_eig=float(eig.max()),
        n_matrices=1,
        n_indefinite=0,
        n_fallback=0,
        lam_effective=float(lam),
    )
    return d.to(g.dtype), info


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    g: Tensor,
    lam: float,
    *,
    max_iter: Optional[int] = None,
    rtol: Optional[float] = None,
    dtype: Optional[torch.dtype] = torch.float64,
) -> tuple[Tensor, SolveInfo]:
    """Batched conjugate gradients for ``(C_i + λI) d_i = g_i``, i = 1..N, all at once.

    Each row of ``g`` is its own system: ``matvec`` maps V (N, m) to the rows ``C_i v_i``
    (per-sample curvature, e.g. Hessian-vector products of the summed loss) or ``C v_i``
    (shared curvature). Step sizes are per row; converged rows stop moving.

    Negative curvature (Steihaug, 1983): if a search direction p has ``pᵀ(C+λI)p ≤ 0`` the row
    stops at its current iterate, which is a descent direction; at the first iteration (iterate
    still zero) it takes the gradient step ``g / (|pᵀCp|/‖p‖² + λ)`` — the absolute curvature
    along g, as the ``"abs"`` projection would. Such rows are counted as fallbacks.

    Zero curvature with λ = 0: C singular and g_i not in its range (a sampled estimate of rank
    below m) leaves CG a search direction with ``pᵀCp`` at the rounding level of g's dtype, and
    dividing by it would blow the iterate up. With λ = 0 a row stops at its current iterate once
    ``pᵀCp ≤ 10·m·eps·max_seen(pᵀCp/‖p‖²)·‖p‖²`` (its solution on the range CG has explored, as
    the dense solve's pseudo-inverse); such rows are counted in ``n_singular``.

    Args:
        matvec: V (N, m) in g's dtype -> (N, m), without λ.
        g: (N, m) right-hand sides.
        lam: λ ≥ 0.
        max_iter: iteration cap (default m; CG is exact after m steps in exact arithmetic).
        rtol: stop a row when ‖r_i‖ ≤ rtol ‖g_i‖ (default 1e-10 for float64 g, 1e-5 else).
        dtype: dtype of the CG recurrences (float64 by default); products run in g's dtype.
    """
    if g.ndim != 2:
        raise ValueError(f"g must have shape (N, m); got shape {tuple(g.shape)}")
    if not (lam >= 0.0 and lam < float("inf")):
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
    N, m = g.shape
    if max_iter is None:
        max_iter = m
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    if rtol is None:
        rtol = 1e-10 if g.dtype == torch.float64 else 1e-5
    work = dtype or g.dtype

    def A(v: Tensor) -> Tensor:
        return matvec(v.to(g.dtype)).to(work) + lam * v

    b = g.to(work)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(-1)
    bnorm = rr.sqrt()
    active = bnorm > 0
    truncated = torch.zeros(N, dtype=torch.bool, device=g.device)
    neg_seen = torch.zeros(N, dtype=torch.bool, device=g.device)
    flat_seen = torch.zeros(N, dtype=torch.bool, device=g.device)
    max_rq = torch.zeros(N, dtype=work, device=g.device)  # largest pᵀCp/‖p‖² met per row
    flat_tol = 10 * m * torch.finfo(g.dtype).eps
    it = 0
    for it in range(1, max_iter + 1):
        if not bool(active.any()):
            it -= 1
            break
        Ap = A(p)
        pAp = (p * Ap).sum(-1)
        pp = (p * p).sum(-1)
        neg = active & (pAp <= 1e-30 * pp.clamp_min(1e-300))
        if lam == 0:
            rq = pAp / pp.clamp_min(1e-300)
            flat = active & ~neg & (rq <= flat_tol * max_rq)
            max_rq = torch.where(active, torch.maximum(max_rq, rq.abs()), max_rq)
            if bool(flat.any()):
                flat_seen |= flat
                active = active & ~flat
        if bool(neg.any()):
            neg_seen |= neg
            first = neg & (x.abs().sum(-1) == 0)
            if bool(first.any()):
                curv = (pAp - lam * pp).abs() / pp.clamp_min(1e-300) + lam
                curv = torch.where(curv > 0, curv, torch.ones_like(curv))
                x = torch.where(first.unsqueeze(-1), p / curv.unsqueeze(-1), x)
            truncated |= neg
            active = active & ~neg
        safe = torch.where(active, pAp, torch.ones_like(pAp))
        alpha = torch.where(active, rr / safe, torch.zeros_like(rr))
        x = x + alpha.unsqueeze(-1) * p
        r = r - alpha.unsqueeze(-1) * Ap
        rr_new = (r * r).sum(-1)
        done = active & (rr_new.sqrt() <= rtol * bnorm)
        beta = torch.where(active & ~done, rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        p = torch.where((active & ~done).unsqueeze(-1), r + beta.unsqueeze(-1) * p, p)
        rr = torch.where(active, rr_new, rr)
        active = active & ~done
    # The recurrence residual (no extra product); truncated rows stopped on purpose.
    res = rr.sqrt() / bnorm.clamp_min(torch.finfo(work).tiny)
    res = torch.where((bnorm > 0) & ~truncated & ~flat_seen, res, torch.zeros_like(res))
    info = SolveInfo(
        min_eig=None,
        max_eig=None,
        n_matrices=N,
        n_indefinite=int(neg_seen.sum()),
        n_fallback=int(truncated.sum()),
        lam_effective=float(lam),
        iterations=it,
        max_residual=float(res.max()) if N else 0.0,
        n_singular=int(flat_seen.sum()),
    )
    return x.to(g.dtype), info
