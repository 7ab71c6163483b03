"""Second order for PyEPO's perturbed losses: DPO and PFYL with a PyEPO ``optModel`` as the solver.

PyEPO (Tang & Khalil, "PyEPO: A PyTorch-based End-to-End Predict-then-Optimize Library") trains a
network that predicts the cost vector ``θ ∈ R^d`` of a linear program ``min_y ⟨θ, y⟩`` (or
``max``: ``optModel.modelSense``) over a feasible set ``Y`` — ``d = optModel.num_cost`` decision
variables, e.g. the 40 arcs of its 5 × 5 shortest-path grid or the items of a knapsack. Its
perturbed losses (Berthet et al., NeurIPS 2020), ``pyepo.func.perturbedOpt`` (DPO) and
``pyepo.func.perturbedFenchelYoung`` (PFYL), smooth the solver ``y*(θ) = argmin_{y ∈ Y} ⟨θ, y⟩``
(argmax for maximization) with Gaussian noise:

    ŷ_σ(θ) = E_Z[ y*(θ + σZ) ],   Z ~ N(0, I_d),   estimated by (1/S) Σ_s y_s,  y_s = y*(θ + σZ_s)

This module gives both losses per sample (for :class:`~newton_losses.NewtonLoss`; PyEPO's
``reduction="none"``), keeps the perturbations of the forward pass, and hands out their Hessian
(and, for DPO, Gauss-Newton) estimators, which reuse those samples — no extra solver call. The
estimators are the package's own, for its perturbed optimizer and Fenchel-Young loss
(:mod:`newton_losses.shortest_path.stein`, docs/SHORTEST_PATH.md §2–3): with a baseline
``b_s`` (``"loo"``: the mean of the other S − 1 samples, PyEPO's ``variance_reduction``),

    Ĵ = (1/(Sσ)) Σ_s (y_s − b_s) Z_sᵀ            unbiased for ∇ŷ_σ = E[y*(θ + σZ) Zᵀ]/σ  (d × d)

**PFYL** (:class:`PFYLoss`, PyEPO's ``perturbedFenchelYoung``), with true solutions ``w``, s = +1
for minimization and −1 for maximization, ``F_σ(θ) = E[min_y ⟨θ + σZ, y⟩]`` (``max`` for
maximization):

    ℓ(θ; w) = s (⟨θ, w⟩ − F_σ(θ))              estimated by s (⟨θ, w⟩ − (1/S) Σ_s ⟨θ + σZ_s, y_s⟩)
    ∇ℓ      = s (w − ŷ_σ(θ))
    ∇²ℓ     = −s ∇ŷ_σ(θ)  ≈  −(s/2)(Ĵ + Ĵᵀ)        loss.hessian_estimator()   (rank ≤ 2S)

The loss is convex (its Hessian is PSD: ∇ŷ_σ = ∇²F_σ, F_σ concave for min, convex for max); the
estimate is PSD in expectation, and by default its absolute value is used (saddle-free).
Gauss-Newton is not defined for it (it is not a loss composed with a map); its Hessian needs none.

**DPO** (:class:`DPOLoss`: PyEPO's ``perturbedOpt`` followed by a loss ``h`` on the expected
solution — PyEPO's examples use ``nn.MSELoss``, our ``"l2"``):

    ℓ(θ; w) = h(ŷ_σ(θ), w),   h ∈ { (1/d)‖·‖² ("l2"), (1/d)‖·‖₁ ("l1"), pseudo-Huber ("smooth_l1") }
    ∇ℓ  ≈ Ĵᵀ ∇h(ŷ)                                 (PyEPO's backward)
    GN  ≈ Ĵᵀ ∇²h(ŷ) Ĵ                              loss.gauss_newton_estimator()   (PSD)
    ∇²ℓ ≈ Ĵᵀ ∇²h(ŷ) Ĵ + (1/(Sσ²)) Σ_s ⟨∇h(ŷ), y_s − b_s⟩ (Z_s Z_sᵀ − I)     loss.hessian_estimator()

(the last term is the Stein Hessian of θ ↦ ⟨∇h, y*(θ)⟩, i.e. Σ_k ∂h/∂ŷ_k ∇²ŷ_k). These are the
package's :class:`~newton_losses.shortest_path.SmoothedAlgorithmLoss` estimators with a PyEPO
solver. Bias and variance of reusing the forward pass's samples:
:class:`~newton_losses.shortest_path.SteinCurvature`.

Solvers (``solver=``): ``"optmodel"`` calls the ``optModel`` once per perturbed instance, as PyEPO
does (:class:`OptModelSolver`); ``"torch"`` is the exact batched dynamic program for PyEPO's grid
shortest path (:mod:`.pyepo_grid`; all S·N instances in one call — about 50× faster per instance
than OR-Tools' glop on this project's CPU machine, docs/PYEPO.md); ``"auto"`` (default) takes ``"torch"`` for PyEPO's own grid shortest-path models
(without added constraints) and ``"optmodel"`` otherwise; or any callable ``(K, d) -> (K, d)``.
True solutions, which PyEPO's ``optDataset`` computes once, can be cached with
``OptModelSolver(optmodel, cache_size=...).solve(costs)``.

Shapes: costs θ (predicted by the network) and true solutions w are (N, d); every loss returns
(N,). PyEPO itself is imported lazily (``pip install pyepo ortools``, or the ``[pyepo]`` extra); importing this
module does not need it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from ..shortest_path._sampling import PerturbationSamples, stein_mean, with_gradient
from ..shortest_path._validation import all_finite, check_choice, check_int, check_target
from ..shortest_path.perturbed import FenchelYoungLoss
from ..shortest_path.smoothing import SmoothedAlgorithmLoss
from ..shortest_path.stein import LowRankCurvature, fenchel_young_curvature
from .pyepo_grid import GridShortestPath, grid_arcs

__all__ = ["require_pyepo", "OptModelSolver", "make_solver", "DPOLoss", "PFYLoss", "from_pyepo"]

INSTALL_HINT = "pip install pyepo ortools (or the extra: pip install \"/path/to/newton-losses[pyepo]\")"
SOLVERS = ("auto", "optmodel", "torch")
NOISES = ("float64", "pyepo")

Solver = Union[str, Callable[[torch.Tensor], torch.Tensor]]


def require_pyepo():
    """Import and return the ``pyepo`` package, or raise an ImportError saying how to install it."""
    try:
        import pyepo
    except ImportError as err:
        raise ImportError(
            "newton_losses.integrations.pyepo needs PyEPO (and OR-Tools, its open-source solver "
            f"back-end, or another back-end's solver): {INSTALL_HINT}  ({err})"
        ) from err
    return pyepo


def _sense(optmodel: Any) -> str:
    """``"min"`` or ``"max"`` from an optModel's ``modelSense`` (PyEPO's EPO.MINIMIZE/MAXIMIZE)."""
    pyepo = require_pyepo()
    if not isinstance(optmodel, pyepo.model.opt.optModel):
        raise TypeError(
            "optmodel must be a PyEPO optModel (e.g. pyepo.model.ort.shortestPathModel((5, 5)) or "
            f"pyepo.model.shortestPathModel((5, 5), backend='ortools')), got {type(optmodel).__name__}"
        )
    sense = optmodel.modelSense
    if sense == pyepo.EPO.MINIMIZE:
        return "min"
    if sense == pyepo.EPO.MAXIMIZE:
        return "max"
    raise ValueError(f"optmodel.modelSense must be EPO.MINIMIZE or EPO.MAXIMIZE, got {sense!r}")


def _check_full_prediction(optmodel: Any) -> None:
    if getattr(optmodel, "c_pred_index", None) is not None:
        raise ValueError(
            f"{type(optmodel).__name__} predicts only part of its objective (c_pred_index is set); "
            "the perturbed losses here need a cost for every decision variable "
            f"(num_cost = {optmodel.num_cost}); use a model without partial prediction"
        )


class OptModelSolver:
    """A PyEPO ``optModel`` as a batched solver: costs (K, d) -> solutions (K, d).

    Each row is solved by ``optmodel.setObj(c); optmodel.solve()`` (as PyEPO's own losses do),
    sequentially, in float64 numpy; solutions come back in the costs' dtype and device, as the
    solver returned them (not rounded).

    Args:
        optmodel: a PyEPO optModel with a cost for every variable (no partial prediction).
        cache_size: how many instances :meth:`solve` remembers (least recently used first out);
            0 (default) disables the cache. Meant for true costs, which recur every epoch;
            ``__call__`` (perturbed costs, never repeated) bypasses it.

    Attributes:
        sense: ``"min"`` or ``"max"``. num_cost: d. calls: instances handed to the optModel.
    """

    def __init__(self, optmodel: Any, *, cache_size: int = 0) -> None:
        self.sense = _sense(optmodel)
        _check_full_prediction(optmodel)
        self.optmodel = optmodel
        self.num_cost = int(optmodel.num_cost)
        self.cache_size = check_int("cache_size", cache_size, 0)
        self._cache: OrderedDict[bytes, tuple[np.ndarray, float]] = OrderedDict()
        self.calls = 0
        self.hits = 0

    def _check(self, costs: object) -> torch.Tensor:
        d = self.num_cost
        if not isinstance(costs, torch.Tensor) or not costs.is_floating_point():
            raise TypeError(
                f"costs must be a floating-point torch.Tensor of shape (K, {d}), got "
                f"{costs.dtype if isinstance(costs, torch.Tensor) else type(costs).__name__}"
            )
        if costs.dim() != 2 or costs.shape[1] != d:
            raise ValueError(
                f"costs must have shape (K, {d}) (num_cost of {type(self.optmodel).__name__}), "
                f"got {tuple(costs.shape)}"
            )
        if costs.numel() and not all_finite(costs):
            raise ValueError("costs must be finite, found NaN or ±Inf")
        return costs

    def _solve_row(self, c: np.ndarray) -> tuple[np.ndarray, float]:
        self.optmodel.setObj(c)
        sol, obj = self.optmodel.solve()
        self.calls += 1
        return np.asarray(sol, dtype=np.float64).reshape(-1), float(obj)

    def __call__(self, costs: torch.Tensor) -> torch.Tensor:
        """(K, d) solutions of (K, d) costs; one optModel call per row, no cache."""
        costs = self._check(costs)
        rows = costs.detach().cpu().numpy()
        sols = [self._solve_row(c)[0] for c in rows]
        out = np.stack(sols) if sols else np.zeros((0, self.num_cost))
        return torch.as_tensor(out).to(device=costs.device, dtype=costs.dtype)

    def solve(self, costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(solutions (K, d), objectives (K,))``, through the cache when ``cache_size > 0``."""
        costs = self._check(costs)
        rows = costs.detach().cpu().numpy()
        sols, objs = [], []
        for c in rows:
            key = np.ascontiguousarray(c, dtype=np.float64).tobytes()
            hit = self._cache.get(key) if self.cache_size else None
            if hit is None:
                hit = self._solve_row(c)
                if self.cache_size:
                    self._cache[key] = hit
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            else:
                self.hits += 1
                self._cache.move_to_end(key)
            sols.append(hit[0])
            objs.append(hit[1])
        sol = np.stack(sols) if sols else np.zeros((0, self.num_cost))
        return (torch.as_tensor(sol).to(device=costs.device, dtype=costs.dtype),
                torch.as_tensor(np.asarray(objs, dtype=np.float64)).to(device=costs.device, dtype=costs.dtype))

    def __repr__(self) -> str:
        return f"OptModelSolver({type(self.optmodel).__name__}, sense={self.sense!r}, cache_size={self.cache_size})"


def _pyepo_grid(optmodel: Any) -> Optional[tuple[int, int]]:
    """The grid of a PyEPO grid shortest-path model in PyEPO's arc order, else None."""
    grid = getattr(optmodel, "grid", None)
    arcs = getattr(optmodel, "arcs", None)
    try:
        if grid is None or arcs is None or [tuple(a) for a in arcs] != grid_arcs(tuple(grid)):
            return None
    except (TypeError, ValueError):
        return None
    return tuple(grid)


def make_solver(optmodel: Any, solver: Solver = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    """The batched oracle ``(K, d) -> (K, d)`` that the losses call on perturbed costs.

    ``"optmodel"``: :class:`OptModelSolver`. ``"torch"``: :class:`~.pyepo_grid.GridShortestPath`
    (only for a minimization over PyEPO's grid arcs without added constraints). ``"auto"``:
    ``"torch"`` for PyEPO's own ``shortestPathModel`` / ``shortestPathCpModel`` (any back-end)
    without added constraints, else ``"optmodel"``. A callable is returned as it is (it must
    solve the optModel's problem; its output shape is checked on every call).
    """
    if callable(solver) and not isinstance(solver, str):
        return solver
    check_choice("solver", solver, SOLVERS)
    sense = _sense(optmodel)
    _check_full_prediction(optmodel)
    if solver == "optmodel":
        return OptModelSolver(optmodel)
    grid = _pyepo_grid(optmodel)
    extra = bool(getattr(optmodel, "_extra_constrs", None))
    if solver == "torch":
        if grid is None or sense != "min" or extra:
            why = ("it has no grid of PyEPO's arcs" if grid is None else
                   "it maximizes" if sense != "min" else "constraints were added to it (addConstr)")
            raise ValueError(
                "solver='torch' is the exact dynamic program for PyEPO's grid shortest path (a "
                f"minimization over .arcs in PyEPO's order, no added constraints), but "
                f"{type(optmodel).__name__} does not qualify: {why}; use solver='optmodel'"
            )
        return GridShortestPath(grid)
    own = type(optmodel).__module__.startswith("pyepo.model.") and type(optmodel).__name__ in (
        "shortestPathModel", "shortestPathCpModel")
    if own and grid is not None and sense == "min" and not extra:
        return GridShortestPath(grid)
    return OptModelSolver(optmodel)


def _check_costs(costs: object, d: int, name: str = "costs") -> torch.Tensor:
    if not isinstance(costs, torch.Tensor) or not costs.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point torch.Tensor of shape (N, {d}) (predicted costs), got "
            f"{costs.dtype if isinstance(costs, torch.Tensor) else type(costs).__name__}"
        )
    if costs.dim() != 2 or costs.shape[1] != d or costs.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (N, {d}) with N >= 1 (d = optmodel.num_cost), got {tuple(costs.shape)}"
        )
    if not all_finite(costs):
        raise ValueError(f"{name} must be finite, found NaN or ±Inf")
    return costs


class _PyEPOLoss:
    """Mixin: the optModel, its sense, the solver, the (N, d) checks and PyEPO-compatible noise."""

    def _setup(self, optmodel: Any, solver: Solver, noise: str) -> None:
        self.sense = _sense(optmodel)
        _check_full_prediction(optmodel)
        self.optmodel = optmodel
        self.num_cost = int(optmodel.num_cost)
        self.solver = make_solver(optmodel, solver)
        self.noise = check_choice("noise", noise, NOISES)

    def _check_point(self, y: torch.Tensor) -> torch.Tensor:
        return _check_costs(y, self.num_cost)

    def _needs_grid(self) -> bool:
        return False

    def _evaluate(self, points, args, kwargs):
        out = self.solver(points)
        if not isinstance(out, torch.Tensor) or out.shape != points.shape:
            raise ValueError(
                f"the solver {self.solver!r} must return one solution per cost vector, shape "
                f"{tuple(points.shape)}, got "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
            )
        return out.to(points.dtype)

    def _noise(self, n_samples: int, y: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        if self.noise == "float64":
            # A mixin: _noise is the sampler's, the class after this one in the MRO.
            return super()._noise(n_samples, y, generator)  # type: ignore[misc]
        # PyEPO: torch.randn((N, S, d), generator, dtype of the costs), on the generator's device
        shape = (y.shape[0], n_samples) + tuple(y.shape[1:])
        if generator is None:
            eps = torch.randn(shape, dtype=y.dtype, device=y.device)
        else:
            eps = torch.randn(shape, generator=generator, dtype=y.dtype, device=generator.device)
        return eps.to(y.device).transpose(0, 1)

    def _pyepo_repr(self) -> str:
        return f"optmodel={type(self.optmodel).__name__}, sense={self.sense!r}, solver={self.solver!r}, "


class DPOLoss(_PyEPOLoss, SmoothedAlgorithmLoss):
    """DPO: a loss on PyEPO's perturbed optimizer's expected solution, per sample, with estimators.

        ℓ_i = h(ŷ_i, w_i),   ŷ_i = (1/S) Σ_s y*(θ_i + σZ_s)

    — ``criterion(perturbedOpt(optmodel, ...)(θ), w)`` of PyEPO per instance (``"l2"``: the
    per-instance ``nn.MSELoss``), with PyEPO's backward ``Ĵᵀ∇h`` (baseline ``"loo"`` =
    PyEPO's ``variance_reduction=True``, ``"none"`` = False). Formulas of the estimators: the
    module docstring.

    Args:
        optmodel: a PyEPO optModel (its ``modelSense`` says argmin or argmax; ``num_cost`` = d).
        loss: ``"l2"`` (default, (1/d)Σ r²), ``"l1"`` ((1/d)Σ|r|; no Gauss-Newton: zero) or
            ``"smooth_l1"`` ((1/d)Σ(√(r²+δ²) − δ)); delta: δ.
        sigma: σ > 0. n_samples: S ≥ 1 (≥ 2 for ``"loo"``).
        baseline: ``"loo"`` (default; no extra solves), ``"center"`` (b = y*(θ), N extra solves)
            or ``"none"``.
        generator: torch.Generator for reproducible noise (default: the global RNG).
        solver: ``"auto"`` (default), ``"optmodel"``, ``"torch"`` or a callable (K, d) -> (K, d);
            see :func:`make_solver`.
        noise: ``"float64"`` (the package's: drawn in float64, (S, N, d), then cast — the same
            noise for float32 and float64 costs) or ``"pyepo"`` (PyEPO's: ``torch.randn((N, S, d))``
            in the costs' dtype — with a generator seeded like PyEPO's module, the same samples
            as PyEPO on CPU).

    Forward: costs (N, d) floating, finite (any sign); target (N, d) true solutions -> (N,).
    Curvatures for NewtonLoss: ``"fisher"``, :meth:`gauss_newton_estimator`,
    :meth:`hessian_estimator`.
    """

    def __init__(
        self,
        optmodel: Any,
        loss: str = "l2",
        *,
        sigma: float = 1.0,
        n_samples: int = 10,
        baseline: str = "loo",
        generator: Optional[torch.Generator] = None,
        solver: Solver = "auto",
        noise: str = "float64",
        delta: float = 0.1,
    ) -> None:
        SmoothedAlgorithmLoss.__init__(
            self, loss, oracle=None, sigma=sigma, n_samples=n_samples, baseline=baseline,
            generator=generator, delta=delta,
        )
        self._setup(optmodel, solver, noise)
        self.oracle = self.solver

    def forward(self, costs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        costs = self._check_point(costs)
        target = check_target(target, costs)
        samples = self._forward_samples(costs, (target,), {})
        y_hat = stein_mean(costs, samples, self.baseline)
        return self.path_loss(y_hat.unsqueeze(1), target.unsqueeze(1))

    def extra_repr(self) -> str:
        return self._pyepo_repr() + super().extra_repr()


class PFYLoss(_PyEPOLoss, FenchelYoungLoss):
    """PFYL: PyEPO's perturbed Fenchel-Young loss, per sample, with its Hessian estimator.

        ℓ_i = s (⟨θ_i, w_i⟩ − (1/S) Σ_s ⟨θ_i + σZ_s, y*(θ_i + σZ_s)⟩),   ∇ℓ_i = s (w_i − ŷ_i)

    with s = +1 for minimization, −1 for maximization: the value and gradient of
    ``perturbedFenchelYoung(optmodel, ..., reduction="none")``. :meth:`hessian_estimator` gives
    ``−(s/2)(Ĵ + Ĵᵀ)`` from the forward pass's samples (module docstring).

    Args:
        optmodel, sigma, n_samples, generator, solver, noise: as in :class:`DPOLoss`.
        baseline: used by the Hessian estimator only (the value and gradient are plain means):
            ``"loo"`` (default), ``"center"`` (then the forward pass also solves y*(θ), once an
            estimator exists) or ``"none"``.

    Forward: costs (N, d) floating, finite; target (N, d) true solutions -> (N,).
    Curvatures for NewtonLoss: ``"fisher"``, :meth:`hessian_estimator`.
    """

    def __init__(
        self,
        optmodel: Any,
        *,
        sigma: float = 1.0,
        n_samples: int = 10,
        baseline: str = "loo",
        generator: Optional[torch.Generator] = None,
        solver: Solver = "auto",
        noise: str = "float64",
    ) -> None:
        FenchelYoungLoss.__init__(
            self, oracle=lambda p: p, sigma=sigma, n_samples=n_samples, baseline=baseline,
            generator=generator,
        )
        self._setup(optmodel, solver, noise)
        self.oracle = self.solver
        self._sign = 1.0 if self.sense == "min" else -1.0

    def forward(self, costs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        costs = self._check_point(costs)
        target = check_target(target, costs)
        samples = self._forward_samples(costs, (target,), {})
        ys = samples.outputs.to(costs.dtype)
        th = costs.detach()
        perturbed = th.unsqueeze(0) + samples.sigma * samples.eps.to(costs.dtype)
        value = self._sign * ((th * target).sum(1) - (perturbed * ys).sum(2).mean(0))
        grad = self._sign * (target - ys.mean(0))
        return with_gradient(costs, value, grad)

    def _build_hessian(self, samples: PerturbationSamples) -> LowRankCurvature:
        S, N = samples.eps.shape[:2]
        a = self._sign * samples.centered(self.baseline).reshape(S, N, -1)
        return fenchel_young_curvature(a, samples.flat_eps(), samples.sigma)

    def extra_repr(self) -> str:
        return self._pyepo_repr() + super().extra_repr()


def from_pyepo(
    module: Any, *, loss: str = "l2", delta: float = 0.1, solver: Solver = "auto",
    generator: Optional[torch.Generator] = None,
) -> Union[DPOLoss, PFYLoss]:
    """The Newton-ready loss for a PyEPO ``perturbedOpt`` (DPO) or ``perturbedFenchelYoung`` (PFYL).

    Takes the module's optModel, ``n_samples``, ``sigma`` and (DPO) ``variance_reduction``
    (``"loo"`` baseline, else ``"none"``), and draws noise as PyEPO does (``noise="pyepo"``) from
    ``generator`` — by default a new CPU generator seeded with the module's ``seed``, so that a
    fresh module and the returned loss see the same perturbations call after call (on CPU).

    Args:
        module: ``pyepo.func.perturbedOpt`` / ``DPO`` or ``perturbedFenchelYoung`` / ``PFY``
            (additive Gaussian; not the multiplicative ``*Mul`` variants, and ``solve_ratio`` 1).
        loss, delta: the loss h on DPO's expected solution (see :class:`DPOLoss`); ignored for PFYL.
        solver: as in :class:`DPOLoss` (default ``"auto"``).
        generator: overrides the seeded CPU generator.
    """
    pyepo = require_pyepo()
    func = pyepo.func
    mul = (func.perturbedOptMul, func.perturbedFenchelYoungMul)
    if isinstance(module, mul) or not isinstance(module, (func.perturbedOpt, func.perturbedFenchelYoung)):
        raise TypeError(
            "from_pyepo takes pyepo.func.perturbedOpt (DPO) or perturbedFenchelYoung (PFY), with "
            f"additive Gaussian noise, got {type(module).__name__}"
        )
    if module.solve_ratio < 1:
        raise ValueError(
            f"{type(module).__name__} has solve_ratio={module.solve_ratio}: it answers some calls "
            "from a solution pool instead of the solver, which the Stein estimators here do not "
            "model; build it with solve_ratio=1"
        )
    if generator is None:
        generator = torch.Generator().manual_seed(int(module.seed))
    S = int(module.n_samples)
    sigma = float(module.sigma)
    if isinstance(module, func.perturbedOpt):
        baseline = "loo" if module.variance_reduction and S > 1 else "none"
        return DPOLoss(
            module.optmodel, loss, baseline=baseline, delta=delta, sigma=sigma, n_samples=S,
            generator=generator, solver=solver, noise="pyepo",
        )
    return PFYLoss(
        module.optmodel, baseline="loo" if S > 1 else "none", sigma=sigma, n_samples=S,
        generator=generator, solver=solver, noise="pyepo",
    )
