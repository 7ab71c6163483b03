"""Gaussian-smoothing (Stein / score-function) estimators and their low-rank curvature form.

For f: R^m → R^p and the Gaussian smoothing ``f_σ(y) = E_ε f(y + σε)``, ε ~ N(0, I), Stein's
lemma gives, for any baseline b independent of ε (Nesterov & Spokoiny 2017; Berthet et al. 2020;
docs/PAPER.md §1):

    ∇f_σ(y)  = E[(f(y + σε) − b) εᵀ] / σ                  (Jacobian, p × m)
    ∇²f_σ(y) = E[(f(y + σε) − b) (εεᵀ − I)] / σ²          (scalar f; symmetric by construction)

With S samples ε_1..ε_S the estimates are the sample means. Baselines (variance reduction; all
leave the estimates unbiased because b does not depend on ε_s):

- ``"center"``: b = f(y), one extra evaluation at the unperturbed point (the form of docs/PAPER.md;
  for piecewise-constant f — a solver — most samples then contribute exactly zero at small σ);
- ``"loo"``: b_s = mean of the other S − 1 samples' values (no extra evaluation, S ≥ 2);
- ``"none"``: b = 0.

Every curvature estimate built here has the form ``C_i = α_i I + U_i M_i U_iᵀ`` per sample, with
U_i (m × r) made of the noise vectors (r = S or 2S) and M_i (r × r) symmetric, so
:class:`LowRankCurvature` applies it, or its *absolute value* ``|C_i|`` (the saddle-free
projection of the core's ``projection="abs"``), matrix-free in O(m r) per product after an
O(m r²) thin QR, instead of building and eigendecomposing N dense m × m matrices
(docs/PERFORMANCE.md compares the two).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..curvature import CurvatureEstimate
from ._validation import BASELINES, check_choice

__all__ = [
    "BASELINES",
    "LowRankCurvature",
    "gaussian_noise",
    "centered",
    "stein_gradient",
    "stein_hessian",
    "stein_jacobian",
    "stein_hessian_curvature",
    "fenchel_young_curvature",
    "gauss_newton_curvature",
]


def gaussian_noise(
    n_samples: int,
    like: torch.Tensor,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """ε ~ N(0, I) of shape (S, *like.shape) in like's dtype and device.

    Drawn in float64 with ``generator`` on the generator's device, then cast and moved to like's
    dtype and device, so that one seed gives the same noise (to the precision of like's dtype) for
    float32 and float64 inputs and for CPU and GPU runs (torch.randn's streams differ by dtype);
    the default torch RNG if None.
    """
    shape = (n_samples,) + tuple(like.shape)
    if generator is None:
        noise = torch.randn(shape, dtype=torch.float64, device=like.device)
    else:
        noise = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    return noise.to(device=like.device, dtype=like.dtype)


def centered(values: torch.Tensor, baseline: str, center: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``f(y + σε_s) − b_s`` for the given baseline.

    Args:
        values: (S, N, *p) sample values.
        baseline: ``"center"`` (needs ``center`` (N, *p) = f(y)), ``"loo"`` or ``"none"``.
    """
    check_choice("baseline", baseline, BASELINES)
    if baseline == "center":
        if center is None:
            raise ValueError("baseline='center' needs the values at the unperturbed point")
        return values - center.unsqueeze(0)
    if baseline == "loo":
        S = values.shape[0]
        if S < 2:
            raise ValueError(f"baseline='loo' needs at least 2 samples, got {S}")
        return values - (values.sum(0, keepdim=True) - values) / (S - 1)
    return values


def stein_gradient(c: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(1/(Sσ)) Σ_s c_s ε_s``: c (S, N) centered values, ε (S, N, *shape) -> (N, *shape)."""
    S = c.shape[0]
    return torch.einsum("sn,sn...->n...", c, eps) / (S * sigma)


def stein_jacobian(c: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(1/(Sσ)) Σ_s c_s ε_sᵀ``: c (S, N, p), ε (S, N, m) -> (N, p, m)."""
    S = c.shape[0]
    return torch.einsum("snp,snm->npm", c, eps) / (S * sigma)


def stein_hessian(c: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(1/(Sσ²)) Σ_s c_s (ε_s ε_sᵀ − I)``: c (S, N), ε (S, N, m) -> (N, m, m), dense."""
    S, _, m = eps.shape
    outer = torch.einsum("sn,sni,snj->nij", c, eps, eps)
    eye = torch.eye(m, dtype=eps.dtype, device=eps.device)
    return (outer - c.sum(0)[:, None, None] * eye) / (S * sigma**2)


def stein_hessian_curvature(c: torch.Tensor, eps: torch.Tensor, sigma: float) -> "LowRankCurvature":
    """``(1/(Sσ²)) Σ_s c_s (ε_s ε_sᵀ − I)`` per sample as a :class:`LowRankCurvature`.

    c: (S, N) centered values; ε: (S, N, m). U = [ε_s]_s (m × S) and M = diag(c)/(Sσ²) when
    S ≤ m; for S > m the m × m matrix itself (U = I), so that nothing S × S is ever formed.
    """
    S, N, m = eps.shape
    f64 = torch.float64
    if S * sigma**2 == 0.0:
        raise ValueError(f"sigma={sigma!r} is too small: σ² underflows to 0 (use sigma >= 1e-150)")
    scale = 1.0 / (S * sigma**2)
    c = c.to(f64)
    E = eps.to(f64)
    alpha = -scale * c.sum(0)
    if S <= m:
        return LowRankCurvature(alpha, E.permute(1, 2, 0), torch.diag_embed(scale * c.transpose(0, 1)))
    core = scale * torch.einsum("sni,snj->nij", c.unsqueeze(-1) * E, E)
    return LowRankCurvature(alpha, _identity(N, m, E), core)


def fenchel_young_curvature(a: torch.Tensor, eps: torch.Tensor, sigma: float) -> "LowRankCurvature":
    """``−½(M + Mᵀ)``, ``M = (1/(Sσ)) Σ_s a_s ε_sᵀ``; a (centered outputs), ε: (S, N, m).

    U = [a_s, ε_s]_s (m × 2S) with the core ``−1/(2Sσ) [[0, I], [I, 0]]`` when 2S ≤ m, else the
    m × m matrix itself.
    """
    S, N, m = eps.shape
    f64 = torch.float64
    A, E = a.to(f64), eps.to(f64)
    scale = -1.0 / (2 * S * sigma)
    alpha = torch.zeros(N, dtype=f64, device=E.device)
    if 2 * S <= m:
        eye = torch.eye(S, dtype=f64, device=E.device)
        zero = torch.zeros_like(eye)
        K = scale * torch.cat([torch.cat([zero, eye], 1), torch.cat([eye, zero], 1)], 0)
        U = torch.cat([A, E], dim=0).permute(1, 2, 0)  # (N, m, 2S)
        return LowRankCurvature(alpha, U, K.expand(N, 2 * S, 2 * S))
    cross = torch.einsum("sni,snj->nij", A, E)
    return LowRankCurvature(alpha, _identity(N, m, E), scale * (cross + cross.transpose(1, 2)))


def gauss_newton_curvature(
    a: torch.Tensor, eps: torch.Tensor, sigma: float, hess_diag: torch.Tensor,
    c: Optional[torch.Tensor] = None,
) -> "LowRankCurvature":
    """``Ĵᵀ diag(h) Ĵ`` with ``Ĵ = (1/(Sσ)) Σ_s a_s ε_sᵀ``, plus the Stein term of ``c`` if given.

    a: (S, N, p) centered outputs; ε: (S, N, m); h: (N, p) diagonal of the outer Hessian; c:
    optional (S, N) weights adding ``(1/(Sσ²)) Σ_s c_s (ε_s ε_sᵀ − I)``. U = [ε_s]_s and
    M = (1/(Sσ)²) AᵀDA (+ diag(c)/(Sσ²)) when S ≤ m, else the m × m matrix (U = I).
    """
    S, N, m = eps.shape
    f64 = torch.float64
    A, E, h = a.to(f64), eps.to(f64), hess_diag.to(f64)
    scale = 1.0 / (S * sigma)
    alpha = torch.zeros(N, dtype=f64, device=E.device)
    if S <= m:
        core = scale**2 * torch.einsum("snp,np,tnp->nst", A, h, A)
        U = E.permute(1, 2, 0)
    else:
        J = scale * torch.einsum("snp,snm->npm", A, E)
        core = J.transpose(1, 2) @ (h.unsqueeze(-1) * J)
        U = _identity(N, m, E)
    if c is not None:
        stein = stein_hessian_curvature(c, eps, sigma)
        core = core + stein.M
        alpha = stein.alpha
    return LowRankCurvature(alpha, U, core)


def _identity(N: int, m: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(m, dtype=like.dtype, device=like.device).expand(N, m, m)


class LowRankCurvature:
    """Per-sample curvature ``C_i = α_i I + U_i M_i U_iᵀ`` (identity plus low rank), matrix-free.

    Args:
        alpha: (N,) multiples of the identity.
        U: (N, m, r) factors.
        M: (N, r, r) symmetric cores.
        dtype: dtype of the internal algebra (float64 by default; products are returned in the
            dtype of the vector).

    Methods give the dense matrices (N, m, m), products ``V -> (C_i v_i)_i`` and products with
    ``|C_i|`` (the matrix with the same eigenvectors and absolute eigenvalues). ``|C_i|`` is exact:
    with the thin QR ``U_i = Q_i R_i`` and the eigendecomposition
    ``α_i I_r + R_i M_i R_iᵀ = V_i diag(μ_i) V_iᵀ`` (size r' = min(m, r)),

        C_i  = Q_i V_i diag(μ_i) V_iᵀ Q_iᵀ + α_i (I − Q_i Q_iᵀ),
        |C_i| = Q_i V_i diag(|μ_i|) V_iᵀ Q_iᵀ + |α_i| (I − Q_i Q_iᵀ).
    """

    def __init__(self, alpha: torch.Tensor, U: torch.Tensor, M: torch.Tensor, *, dtype=torch.float64) -> None:
        self.alpha = alpha.detach().to(dtype)
        self.U = U.detach().to(dtype)
        self.M = M.detach().to(dtype)
        self._spectral: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def m(self) -> int:
        return self.U.shape[1]

    def dense(self) -> torch.Tensor:
        """(N, m, m) matrices α_i I + U_i M_i U_iᵀ."""
        eye = torch.eye(self.m, dtype=self.U.dtype, device=self.U.device)
        return self.alpha[:, None, None] * eye + self.U @ self.M @ self.U.transpose(1, 2)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Rows ``C_i v_i``; v: (N, m)."""
        x = v.to(self.U.dtype)
        coef = torch.einsum("nmr,nm->nr", self.U, x)
        inner = (self.M @ coef.unsqueeze(-1)).squeeze(-1)
        out = self.alpha[:, None] * x + torch.einsum("nmr,nr->nm", self.U, inner)
        return out.to(v.dtype)

    def spectrum(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q V (N, m, r'), μ (N, r')): eigenvectors and eigenvalues of C_i in span(U_i)."""
        if self._spectral is None:
            Q, R = torch.linalg.qr(self.U, mode="reduced")
            core = R @ self.M @ R.transpose(1, 2)
            core = 0.5 * (core + core.transpose(1, 2))
            eye = torch.eye(core.shape[-1], dtype=core.dtype, device=core.device)
            mu, V = torch.linalg.eigh(core + self.alpha[:, None, None] * eye)
            self._spectral = (Q @ V, mu)
        return self._spectral

    def abs_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Rows ``|C_i| v_i``; v: (N, m)."""
        W, mu = self.spectrum()
        x = v.to(W.dtype)
        coef = torch.einsum("nmr,nm->nr", W, x)
        inside = torch.einsum("nmr,nr->nm", W, coef)
        out = torch.einsum("nmr,nr->nm", W, mu.abs() * coef) + self.alpha.abs()[:, None] * (x - inside)
        return out.to(v.dtype)

    def eigenvalue_range(self) -> tuple[float, float]:
        """Smallest and largest eigenvalue over all samples."""
        _, mu = self.spectrum()
        lo, hi = float(mu.min()), float(mu.max())
        if self.U.shape[2] < self.m:  # the complement of span(U) carries α
            lo, hi = min(lo, float(self.alpha.min())), max(hi, float(self.alpha.max()))
        return lo, hi

    def estimate(self, projection: str = "abs") -> CurvatureEstimate:
        """What ``NewtonLoss`` takes from a custom curvature.

        ``"abs"``: matrix-free ``|C_i|`` (PSD; the core's CG then solves ``(|C_i| + λI) d = g``
        exactly, in at most r' + 1 iterations). ``"none"``: matrix-free ``C_i`` as estimated (the
        core's CG truncates at negative curvature). ``"dense"``: the (N, m, m) matrices, for the
        core's own eigendecomposition and ``projection=`` choice.
        """
        check_choice("projection", projection, ("abs", "none", "dense"))
        if projection == "dense":
            return CurvatureEstimate(matrix=self.dense())
        if projection == "abs":
            return CurvatureEstimate(matvec=self.abs_matvec, psd=True)
        return CurvatureEstimate(matvec=self.matvec, psd=False)
