"""Stochastic smoothing of a shortest-path loss (a) and of the shortest-path algorithm (b).

Both replace the piecewise-constant solver y*(θ) (zero gradient almost everywhere) by a Gaussian
smoothing with noise scale σ and S samples, estimated from one solver call on S·N grids (docs/PAPER.md
§1–2; Petersen et al., NeurIPS 2024, §5.2 "stochastic smoothing of the loss / of the algorithm").

(a) Smoothing of the loss, :class:`SmoothedLoss` (the generic form: :class:`GaussianSmoothing`):

    f(θ) = ℓ(y*(θ), ȳ),    f_σ(θ) = E_ε f(θ + σε)
    value  ≈ (1/S) Σ_s f(θ + σε_s)
    ∇f_σ   ≈ (1/(Sσ))  Σ_s (f(θ + σε_s) − b) ε_s
    ∇²f_σ  ≈ (1/(Sσ²)) Σ_s (f(θ + σε_s) − b) (ε_s ε_sᵀ − I)          (hessian_estimator)

(b) Smoothing of the algorithm, :class:`SmoothedAlgorithmLoss`: the loss of the smoothed solver,

    ℓ(ŷ_σ(θ), ȳ),   ŷ_σ = E y*(θ + σε) ≈ (1/S) Σ_s y_s,   Ĵ = (1/(Sσ)) Σ_s (y_s − b) ε_sᵀ
    ∇    ≈ Ĵᵀ ∇ℓ(ŷ)
    GN   ≈ Ĵᵀ ∇²ℓ(ŷ) Ĵ                                                   (gauss_newton_estimator)
    ∇²   ≈ Ĵᵀ ∇²ℓ(ŷ) Ĵ + (1/(Sσ²)) Σ_s ⟨∇ℓ(ŷ), y_s − b⟩ (ε_s ε_sᵀ − I)   (hessian_estimator)

the second term of ∇² being the Stein Hessian of θ ↦ ⟨∇ℓ(ŷ), y*(θ)⟩ (∇ℓ held fixed), i.e.
Σ_k ∂ℓ/∂ŷ_k ∇²ŷ_k.

Baselines b (``"center"``: y*(θ) / f(θ), ``"loo"``, ``"none"``) and the low-rank form of the
estimates: :mod:`.stein`. As in :mod:`.perturbed`, the solver sees ``max(θ + σε, 0)`` (vertex
weights must be ≥ 0); the Stein identities hold for the clamped oracle as they are.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ._sampling import PerturbationSamples, PerturbedBase, SteinCurvature, stein_mean, with_gradient
from ._validation import check_choice, check_costs, check_target
from .path_loss import PATH_LOSSES, PathLoss
from .perturbed import _check_input, path_oracle
from .stein import (
    LowRankCurvature,
    gauss_newton_curvature,
    stein_gradient,
    stein_hessian_curvature,
)

__all__ = ["GaussianSmoothing", "SmoothedLoss", "SmoothedAlgorithmLoss"]


class GaussianSmoothing(PerturbedBase):
    """Gaussian smoothing of a black-box per-sample function, with Stein gradient and Hessian.

    ``GaussianSmoothing(fn, sigma=..., n_samples=...)(y, *args)`` returns the Monte-Carlo value
    ``(1/S) Σ_s fn(y + σε_s, *args)`` (N,) of ``f_σ(y) = E fn(y + σε)``; its backward returns the
    Stein gradient ``(1/(Sσ)) Σ_s (fn(y + σε_s) − b) ε_s`` and :meth:`hessian_estimator` the
    Stein Hessian ``(1/(Sσ²)) Σ_s (fn(y + σε_s) − b)(ε_s ε_sᵀ − I)`` (see :mod:`.stein`).

    Args:
        fn: ``fn(points, *args, **kwargs)`` with points (K, *shape) -> (K,) values, evaluated
            without gradients, once per forward on K = S·N (+ N for ``"center"``) points; tensor
            arguments with first dimension N are tiled to K rows (sample-major: row s·N + i).
        sigma: σ > 0. n_samples: S ≥ 1. baseline: ``"center"`` | ``"loo"`` | ``"none"``.
        generator: torch.Generator for reproducible noise.

    Forward: y (N, *shape) floating, finite -> (N,). Once differentiable.
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        *,
        sigma: float = 1.0,
        n_samples: int = 10,
        baseline: str = "center",
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(sigma, n_samples, baseline, generator)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def _evaluate(self, points, args, kwargs):
        out = self.fn(points, *args, **kwargs)
        if not isinstance(out, torch.Tensor) or out.shape != (points.shape[0],):
            raise ValueError(
                f"fn must return one value per point, shape ({points.shape[0]},), got "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
            )
        return out

    def _needs_grid(self) -> bool:
        return False

    def _check(self, y: torch.Tensor) -> torch.Tensor:
        return _check_input(y, False)

    def _check_point(self, y: torch.Tensor) -> torch.Tensor:
        return self._check(y)

    def forward(self, y: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = self._check(y)
        samples = self._forward_samples(y, args, kwargs)
        values = samples.outputs.to(y.dtype)
        c = samples.centered(self.baseline).to(y.dtype)
        return with_gradient(y, values.mean(0), stein_gradient(c, samples.eps, self.sigma))

    def _build_hessian(self, samples: PerturbationSamples) -> LowRankCurvature:
        return stein_hessian_curvature(samples.centered(self.baseline), samples.flat_eps(), samples.sigma)

    def hessian_estimator(
        self, *, projection: str = "abs", fresh: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> SteinCurvature:
        """The Stein Hessian ``(1/(Sσ²)) Σ_s (f_s − b)(ε_s ε_sᵀ − I)`` as a ``NewtonLoss`` curvature.

        See :class:`~newton_losses.shortest_path.SteinCurvature` for the arguments and for the
        bias/variance of reusing the forward pass's samples (the default).
        """
        return SteinCurvature(
            self, self._build_hessian, projection=projection, fresh=fresh, generator=generator,
            name="stein_hessian",
        )


class SmoothedLoss(GaussianSmoothing):
    """(a) Stochastic smoothing of the loss: ``E_ε ℓ(y*(θ + σε), ȳ)`` for shortest paths.

        ℓ_i ≈ (1/S) Σ_s path_loss(y*(θ_i + σε_s), ȳ_i, kind)

    with the exact solver y* (on ``max(θ + σε, 0)``) and :func:`~.path_loss.path_loss` (for 0/1
    masks, ``"l1"`` and ``"l2"`` are both the Hamming distance divided by H·W). Gradient: the
    Stein estimate; curvature: ``curvature="fisher"`` or :meth:`hessian_estimator`.

    Args:
        loss: ``"l1"`` (default), ``"l2"`` or ``"smooth_l1"``; delta: δ of ``"smooth_l1"``.
        sigma, n_samples, baseline, generator: as in :class:`GaussianSmoothing`.

    Forward: costs (N, H, W) ≥ 0, target (N, H, W) -> (N,).
    """

    def __init__(
        self,
        loss: str = "l1",
        *,
        sigma: float = 1.0,
        n_samples: int = 10,
        baseline: str = "center",
        generator: Optional[torch.Generator] = None,
        delta: float = 0.1,
    ) -> None:
        check_choice("loss", loss, PATH_LOSSES)
        super().__init__(self._solver_loss, sigma=sigma, n_samples=n_samples, baseline=baseline,
                         generator=generator)
        self.path_loss = PathLoss(loss, delta=delta)

    def _solver_loss(self, costs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.path_loss(path_oracle(costs), target)

    _has_target = True

    def _needs_grid(self) -> bool:
        return True

    def _check_point(self, y: torch.Tensor) -> torch.Tensor:
        return check_costs(y)

    def forward(self, costs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        costs = check_costs(costs)
        return super().forward(costs, check_target(target, costs))

    def extra_repr(self) -> str:
        return f"loss={self.path_loss!r}, " + super().extra_repr()


class SmoothedAlgorithmLoss(PerturbedBase):
    """(b) Stochastic smoothing of the algorithm: ``ℓ(E_ε y*(θ + σε), ȳ)`` for shortest paths.

        ℓ_i = path_loss(ŷ_i, ȳ_i, kind),   ŷ_i = (1/S) Σ_s y*(θ_i + σε_s)

    ŷ is the :class:`~.perturbed.PerturbedOptimizer` output (Stein-Jacobian backward), so the
    gradient is ``Ĵᵀ ∇ℓ(ŷ)``. Curvatures: ``"fisher"``, :meth:`gauss_newton_estimator`
    (``ĴᵀDĴ``, D = ∇²ℓ(ŷ) diagonal; PSD; zero for ``"l1"``, so refused there) or
    :meth:`hessian_estimator` (adds the Stein term of the solver's own curvature).

    Args:
        loss: ``"l2"`` (default), ``"l1"`` or ``"smooth_l1"``; delta: δ of ``"smooth_l1"``.
        sigma, n_samples, baseline, generator: as in :class:`~.perturbed.PerturbedOptimizer`.
        oracle: the algorithm, points (K, H, W) -> (K, H, W), evaluated without gradients;
            default :func:`~.perturbed.path_oracle` (then costs must be ≥ 0).

    Forward: costs (N, H, W), target (N, H, W) -> (N,).
    """

    def __init__(
        self,
        loss: str = "l2",
        *,
        oracle: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        sigma: float = 1.0,
        n_samples: int = 10,
        baseline: str = "center",
        generator: Optional[torch.Generator] = None,
        delta: float = 0.1,
    ) -> None:
        super().__init__(sigma, n_samples, baseline, generator)
        check_choice("loss", loss, PATH_LOSSES)
        self.path_loss = PathLoss(loss, delta=delta)
        if oracle is not None and not callable(oracle):
            raise TypeError(f"oracle must be callable or None, got {type(oracle).__name__}")
        self.oracle = path_oracle if oracle is None else oracle

    _has_target = True

    def _evaluate(self, points, args, kwargs):
        return self.oracle(points)

    def _check_point(self, y: torch.Tensor) -> torch.Tensor:
        return check_costs(y) if self.oracle is path_oracle else _check_input(y, False)

    def forward(self, costs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        costs = self._check_point(costs)
        if costs.dim() != 3:
            raise ValueError(f"costs must have shape (N, H, W), got {tuple(costs.shape)}")
        target = check_target(target, costs)
        samples = self._forward_samples(costs, (target,), {})
        return self.path_loss(stein_mean(costs, samples, self.baseline), target)

    def _build(self, samples: PerturbationSamples, with_stein_term: bool) -> LowRankCurvature:
        S, N = samples.eps.shape[:2]
        (target,) = samples.args
        a = samples.centered(self.baseline).reshape(S, N, -1).to(torch.float64)
        y_hat = samples.outputs.mean(0).to(torch.float64)
        grad_l, hess_l = self.path_loss.derivatives(y_hat, target.to(torch.float64))
        c = torch.einsum("snm,nm->sn", a, grad_l) if with_stein_term else None  # ⟨∇ℓ, y_s − b⟩
        return gauss_newton_curvature(a, samples.flat_eps(), samples.sigma, hess_l, c)

    def hessian_estimator(
        self, *, projection: str = "abs", fresh: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> SteinCurvature:
        """``ĴᵀDĴ + (1/(Sσ²)) Σ_s ⟨∇ℓ(ŷ), y_s − b⟩(ε_sε_sᵀ − I)`` as a ``NewtonLoss`` curvature.

        See :class:`~newton_losses.shortest_path.SteinCurvature` for the arguments.
        """
        return SteinCurvature(
            self, lambda s: self._build(s, True), projection=projection, fresh=fresh,
            generator=generator, name="hessian",
        )

    def gauss_newton_estimator(
        self, *, projection: str = "abs", fresh: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> SteinCurvature:
        """``Ĵᵀ ∇²ℓ(ŷ) Ĵ`` (PSD) as a ``NewtonLoss`` curvature; not for ``loss="l1"`` (zero).

        See :class:`~newton_losses.shortest_path.SteinCurvature` for the arguments.
        """
        if self.path_loss.kind == "l1":
            raise ValueError(
                "loss='l1' has zero second derivative, so its Gauss-Newton matrix ĴᵀDĴ is "
                "identically zero; use loss='smooth_l1' or 'l2', or hessian_estimator()/'fisher'"
            )
        return SteinCurvature(
            self, lambda s: self._build(s, False), projection=projection, fresh=fresh,
            generator=generator, name="gauss_newton",
        )

    def extra_repr(self) -> str:
        return f"loss={self.path_loss!r}, " + super().extra_repr()
