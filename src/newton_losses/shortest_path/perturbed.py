"""Perturbed optimizers and the Fenchel-Young loss (Berthet et al., "Learning with Differentiable
Perturbed Optimizers", NeurIPS 2020), for shortest paths — a minimization.

Sign convention (minimization; Berthet et al. write maximization, ``θ ↦ −θ`` maps one to the
other). For costs θ (vertex weights, N × H × W) and path masks y:

    y*(θ)  = argmin_y ⟨θ, y⟩                                  (the exact solver, :mod:`.solver`)
    ŷ_σ(θ) = E_Z[ y*(θ + σZ) ],   Z ~ N(0, I)                (the perturbed optimizer)
    F_σ(θ) = E_Z[ min_y ⟨θ + σZ, y⟩ ]                        (concave; ∇F_σ = ŷ_σ)
    ℓ_FY(θ; ȳ) = ⟨θ, ȳ⟩ − F_σ(θ)                             (convex in θ; ≥ 0 by Jensen)
    ∇_θ ℓ_FY = ȳ − ŷ_σ(θ)
    ∇²_θ ℓ_FY = −∇ŷ_σ(θ) = −E[ y*(θ + σZ) Zᵀ ] / σ          (PSD in expectation)

so gradient descent on θ lowers the costs of the true path ȳ's cells that the perturbed solutions
miss and raises those of cells they take in excess. ℓ_FY here omits Berthet et al.'s constant
Ω(ȳ) (it does not depend on θ): the value ⟨θ, ȳ⟩ − F_σ(θ) is what is estimated, by
``⟨θ, ȳ⟩ − (1/S) Σ_s ⟨θ + σZ_s, y_s⟩``, a sum over cells (not a mean, unlike the path losses).

The Hessian estimate, symmetrized and with a baseline b (see :mod:`.stein`):

    Ĥ = −½ (M + Mᵀ),   M = (1/(Sσ)) Σ_s (y_s − b) Z_sᵀ,   y_s = y*(θ + σZ_s),

is unbiased for −∇ŷ_σ (which is symmetric: ŷ_σ is the gradient of F_σ) and has rank ≤ 2S.

Negative perturbed costs. The exact solver needs w ≥ 0 (with negative vertex weights the
8-neighbour grid has negative cycles), so the oracle solves ``max(θ + σZ, 0)``:
``y_s = y*((θ + σZ_s)⁺)``. The Stein identities hold for any bounded function of θ + σZ, so the
Jacobian and Hessian estimates stay unbiased for this oracle; the Fenchel-Young relations above
are exact while the perturbed costs stay ≥ 0 (costs well above σ, as on Warcraft maps, whose
costs are ≥ 0.8), and otherwise ``ȳ − ŷ_σ`` is the usual perturbed-FY update with the clamped
oracle. Inputs θ themselves must be ≥ 0.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ._sampling import PerturbationSamples, PerturbedBase, SteinCurvature, stein_mean, with_gradient
from ._validation import all_finite, check_costs, check_target
from .solver import shortest_path
from .stein import LowRankCurvature, fenchel_young_curvature

__all__ = ["path_oracle", "PerturbedOptimizer", "FenchelYoungLoss"]


def path_oracle(costs: torch.Tensor) -> torch.Tensor:
    """The exact solver's path mask of ``max(costs, 0)``: (K, H, W) -> (K, H, W) 0/1."""
    return shortest_path(costs.clamp_min(0)).path


def _check_input(y: object, oracle_is_default: bool) -> torch.Tensor:
    if oracle_is_default:
        return check_costs(y)
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(
            "the input must be a floating-point torch.Tensor (N, *shape), got "
            f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__}"
        )
    if y.dim() < 2 or 0 in y.shape:
        raise ValueError(f"the input must have shape (N, *shape), non-empty, got {tuple(y.shape)}")
    if not all_finite(y):
        raise ValueError("the input must be finite, found NaN or ±Inf")
    return y


class _OracleLoss(PerturbedBase):
    """Shared part of the perturbed-optimizer losses: a black-box oracle (the exact shortest-path
    solver by default) evaluated on perturbed inputs."""

    def __init__(
        self,
        oracle: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        *,
        sigma: float = 1.0,
        n_samples: int = 10,
        baseline: str = "center",
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(sigma, n_samples, baseline, generator)
        if oracle is not None and not callable(oracle):
            raise TypeError(f"oracle must be callable or None, got {type(oracle).__name__}")
        self.oracle = path_oracle if oracle is None else oracle

    def _evaluate(self, points, args, kwargs):
        return self.oracle(points)

    def _needs_grid(self) -> bool:
        return self.oracle is path_oracle

    def _check_point(self, y: torch.Tensor) -> torch.Tensor:
        return _check_input(y, self.oracle is path_oracle)


class PerturbedOptimizer(_OracleLoss):
    """The perturbed optimizer ŷ_σ(θ) = E[y*(θ + σZ)] with a Stein-Jacobian backward.

    Forward: θ (N, H, W) ≥ 0 -> ŷ (N, H, W), the mean of the oracle's outputs over S samples,
    from one oracle call on S·N grids (S·N + N with the ``"center"`` baseline). Backward (Berthet
    et al. 2020, Prop. 3.1, with a baseline b):

        v ↦ Ĵᵀ v = (1/(Sσ)) Σ_s ⟨v, y_s − b⟩ Z_s        (Ĵ estimates ∇ŷ_σ = E[y* Zᵀ]/σ)

    This is also "stochastic smoothing of the algorithm": :class:`~.smoothing.SmoothedAlgorithmLoss`
    puts a path loss on ŷ. Not twice differentiable by autograd (use the estimators).

    Args:
        oracle: points (K, *shape) -> outputs (K, *p), evaluated without gradients; default
            :func:`path_oracle` (then inputs must be (N, H, W) non-negative costs).
        sigma: noise scale σ > 0.
        n_samples: S ≥ 1.
        baseline: ``"center"`` (b = y*(θ)), ``"loo"`` or ``"none"`` (see :mod:`.stein`).
        generator: torch.Generator for reproducible noise (default: the global RNG).
    """

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        theta = _check_input(theta, self.oracle is path_oracle)
        samples = self._forward_samples(theta, (), {})
        return stein_mean(theta, samples, self.baseline)


class FenchelYoungLoss(_OracleLoss):
    """Perturbed Fenchel-Young loss for shortest paths (minimization; see the module docstring).

        ℓ_i = ⟨θ_i, ȳ_i⟩ − (1/S) Σ_s ⟨θ_i + σZ_s, y*(θ_i + σZ_s)⟩,     ∇ℓ_i = ȳ_i − ŷ_i

    Forward: θ (N, H, W) ≥ 0, ȳ (N, H, W) true paths -> (N,); the backward returns ȳ − ŷ (the
    Fenchel-Young gradient; not differentiable again — use :meth:`hessian_estimator`).

    With ``NewtonLoss``: ``curvature="fisher"``, or ``curvature=loss.hessian_estimator()`` for
    ``−½(M + Mᵀ)``, ``M = (1/(Sσ)) Σ_s (y_s − b) Z_sᵀ`` (reusing the forward pass's samples).

    Args:
        oracle: as in :class:`PerturbedOptimizer` (must return outputs of the input's shape).
        sigma, n_samples, baseline, generator: as in :class:`PerturbedOptimizer`; the baseline
            is used by the Hessian estimator only (the gradient is a plain mean), so the centre
            y*(θ) of ``"center"`` is solved only once :meth:`hessian_estimator` has been created
            (then in the forward pass's batched call; before that, lazily when the estimator is
            called): Fisher or plain-gradient use costs S·N solves per forward, not (S + 1)·N.

    Example:
        >>> loss = FenchelYoungLoss(sigma=0.5, n_samples=10, generator=torch.Generator().manual_seed(0))
        >>> theta = torch.full((1, 3, 3), 1.0, requires_grad=True)
        >>> target = torch.eye(3).unsqueeze(0)          # the diagonal: the cheapest path here
        >>> value = loss(theta, target)
        >>> value.sum().backward()                      # theta.grad = target − ŷ
    """

    def __init__(
        self,
        oracle: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        *,
        sigma: float = 1.0,
        n_samples: int = 10,
        baseline: str = "center",
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(oracle, sigma=sigma, n_samples=n_samples, baseline=baseline, generator=generator)
        self._center_wanted = False  # set by hessian_estimator(): only it uses the centre

    def _center_in_forward(self) -> bool:
        return self.baseline == "center" and self._center_wanted

    _has_target = True

    def forward(self, theta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        theta = _check_input(theta, self.oracle is path_oracle)
        target = check_target(target, theta)
        samples = self._forward_samples(theta, (target,), {})
        ys = samples.outputs.to(theta.dtype)
        if ys.shape[1:] != theta.shape:
            raise ValueError(
                f"the oracle must return outputs of the input's shape {tuple(theta.shape[1:])} "
                f"per sample for the Fenchel-Young loss, got {tuple(ys.shape[2:])}"
            )
        th = theta.detach()
        perturbed = th.unsqueeze(0) + samples.sigma * samples.eps
        value = (th * target).flatten(1).sum(1) - (perturbed * ys).flatten(2).sum(2).mean(0)
        grad = target - ys.mean(0)
        return with_gradient(theta, value, grad)

    def _build_hessian(self, samples: PerturbationSamples) -> LowRankCurvature:
        S, N = samples.eps.shape[:2]
        a = samples.centered(self.baseline).reshape(S, N, -1)
        return fenchel_young_curvature(a, samples.flat_eps(), samples.sigma)

    def __getattr__(self, name: str):
        if name == "gauss_newton_estimator":  # asked for by analogy with the smoothed losses
            raise AttributeError(
                f"{type(self).__name__} has no gauss_newton_estimator: the Fenchel-Young loss is not "
                "a loss composed with a smoothed solver (ℓ = h(ŷ)), so there is no Gauss-Newton "
                "split; its Hessian is the perturbed solver's Jacobian itself. Use "
                "curvature=loss.hessian_estimator() or curvature='fisher'."
            )
        return super().__getattr__(name)

    def hessian_estimator(
        self, *, projection: str = "abs", fresh: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> SteinCurvature:
        """``−½(M + Mᵀ)``, ``M = (1/(Sσ)) Σ_s (y_s − b) Z_sᵀ``, as a curvature for ``NewtonLoss``.

        See :class:`~newton_losses.shortest_path.SteinCurvature` for ``projection``, ``fresh``
        and ``generator`` and for the bias/variance of reusing the forward pass's samples.
        From then on the forward pass also solves the centre y*(θ) (baseline ``"center"``) in
        its one batched call.
        """
        est = SteinCurvature(
            self, self._build_hessian, projection=projection, fresh=fresh, generator=generator,
            name="fenchel_young_hessian",
        )
        self._center_wanted = True
        return est
