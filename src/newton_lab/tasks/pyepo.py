"""The predict-then-optimize task (``pto``) on PyEPO's problems: a network maps features
``x ∈ R^p`` to the cost vector ``θ̂ ∈ R^d`` of a linear program ``min_w ⟨θ̂, w⟩`` (shortest path)
or ``max_w`` (knapsack) over a fixed feasible set, is trained through a predict-then-optimize
loss, and is scored by the decisions its predictions lead to (docs/PYEPO.md, "The harness task").

**Data** (PyEPO's generators, ``pyepo.data.shortestpath.genData`` / ``knapsack.genData``): with a
random 0/1 matrix ``B (d × p)``, features ``x ~ N(0, I_p)`` and multiplicative noise
``ε ~ U[1 − e, 1 + e]`` per coordinate (``e``: ``task_args.noise``, the noise half-width),

    shortest path:  c = [(Bx/√p + 3)^deg + 1] / 3.5^deg · ε           (d = 40 arcs on the 5 × 5 grid)
    knapsack:       c = ⌈5 [(Bx/√p + 3)^deg + 1] / 3.5^deg · ε⌉        (d = items; weights U{3.00..7.99})

One generator call of ``train_size + val_sets + test_sets`` instances (one ``B``, seed
``task_args.data_seed``, −1: the run's seed) is split in that order: rows ``[0, n_train)`` train,
the next ``val_sets`` validate (model selection, checkpoints' "best"), the last ``test_sets`` test
— PyEPO's tutorials split one call the same way (at random; the rows are i.i.d., so contiguous
splits have the same distribution). The true solutions ``w = w*(c)`` and objectives
``z = ⟨c, w⟩`` are solved once per data set and kept (in memory; on disk in the harness's cache,
``$NEWTON_LOSSES_CACHE/pyepo``, where an optModel solved them).

**Targets** are packed per instance as one row ``(2d + 1,)``: ``[c | w | z]`` — the true costs,
the true solution and the true objective (every loss takes what it needs; the runner moves and
slices one tensor).

**Losses** (per instance, ``θ̂ (N, d)``, target ``(N, 2d + 1)`` → ``(N,)``; ``s = +1`` for
minimization, ``−1`` for maximization; ``w*(·)`` the solver):

- ``two_stage``: ``(1/d) ‖θ̂ − c‖²`` (least squares on costs, PyEPO's two-stage baseline).
- ``spo_plus``: ``s (2⟨θ̂, w⟩ − z − ⟨2θ̂ − c, ŵ⟩)``, ``ŵ = w*(2θ̂ − c)``; gradient
  ``2s (w − ŵ)`` — ``pyepo.func.SPOPlus`` (Elmachtoub & Grigas 2022).
- ``dbb``: ``|⟨w*(θ̂), c⟩ − z|`` with DBB's interpolated gradient (Pogančić et al. 2020) —
  ``pyepo.func.blackboxOpt(lambd=λ)`` + ``nn.L1Loss`` on the objective, as PyEPO's docs train it.
- ``dpo``: ``h(ŷ_σ(θ̂), w)`` with the perturbed optimizer's mean solution ``ŷ_σ`` (S samples,
  σ) — ``pyepo.func.perturbedOpt`` + ``nn.MSELoss`` (``h = (1/d)‖·‖²``); our
  :class:`~newton_losses.integrations.pyepo.DPOLoss`.
- ``pfyl``: ``s (⟨θ̂, w⟩ − (1/S) Σ_s ⟨θ̂ + σZ_s, w*(θ̂ + σZ_s)⟩)`` — ``pyepo.func.perturbedFenchelYoung``;
  our :class:`~newton_losses.integrations.pyepo.PFYLoss`.

The Newton variants: ``fisher`` for all; ``hessian`` for ``dpo`` and ``pfyl`` (their Stein
estimators, ``loss.hessian_estimator()``), ``gauss_newton`` for ``dpo``
(``loss.gauss_newton_estimator()``).

**Metrics** (lower is better, ``registry.Task.lower_is_better``): ``regret``, PyEPO's normalized
regret ``Σ_i s(⟨c_i, w*(θ̂_i)⟩ − z_i) / (Σ_i |z_i| + 10⁻⁸)`` (``pyepo.metric.regret``), computed
with the cached ``w``, ``z`` and one batched solve of the predictions; ``mse``, the mean of
``(θ̂ − c)²`` (``pyepo.metric.MSE``).

**Solvers** (``task_args.solver``): ``"grid"`` — the exact batched dynamic program for the grid
shortest path (:class:`~newton_losses.integrations.pyepo_grid.GridShortestPath`); ``"pyepo"`` —
PyEPO's OR-Tools optModel, one call per instance
(:class:`~newton_losses.integrations.pyepo.OptModelSolver`; glop for the shortest path, SCIP for
the knapsack); ``"auto"`` (default) — ``"grid"`` for the shortest path, ``"pyepo"`` otherwise.

PyEPO (with OR-Tools) is imported when a task is built, not when this module is (``pip install pyepo
ortools``, or the library's ``[pyepo]`` extra); without it a configuration of this task is a ``ValueError`` saying so.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from newton_lab import registry
from newton_lab.models import LinearCosts, MLPCosts
from newton_lab.tasks._stream import EpochNoiseState

__all__ = ["PTOTask", "Problem", "problem_of", "load_data", "regret_metrics", "build_loss", "random_batch",
           "TwoStageLoss", "SPOPlusLoss", "DBBLoss", "PerturbedLoss", "DPOTaskLoss"]

PROBLEMS = ("shortest_path", "knapsack")
SOLVERS = ("auto", "grid", "pyepo")
_SHORT = {"shortest_path": "sp", "knapsack": "ks"}
#: PyEPO's regret denominator guard (pyepo.utils._EPS).
REGRET_EPS = 1e-8
INSTALL_HINT = "pip install pyepo ortools (or the extra: pip install \"/path/to/newton-losses[pyepo]\")"


# ----------------------------------------------------------------------------------------------
# The problem: PyEPO's optModel and a batched solver
@dataclass(frozen=True)
class Problem:
    """The linear program of a configuration and how it is solved.

    Attributes:
        name: ``"shortest_path"`` or ``"knapsack"``.
        optmodel: PyEPO's OR-Tools optModel (``pyepo.model.ort.shortestPathModel(grid)`` /
            ``knapsackModel(weights, capacity)``).
        solver: batched oracle ``(K, d) -> (K, d)`` solutions (the grid DP or an
            :class:`~newton_losses.integrations.pyepo.OptModelSolver` of ``optmodel``).
        solver_name: ``"grid"`` or ``"pyepo"``.
        sense: ``"min"`` or ``"max"``. num_cost: d. num_feat: p.
    """

    name: str
    optmodel: Any
    solver: Callable[[Tensor], Tensor]
    solver_name: str
    sense: str
    num_cost: int
    num_feat: int

    @property
    def sign(self) -> float:
        """s = +1 for a minimization, −1 for a maximization."""
        return 1.0 if self.sense == "min" else -1.0

    def solve(self, costs: Tensor) -> Tensor:
        """Optimal 0/1 solutions (K, d), float64, of costs (K, d) (solved in float64, rounded:
        both problems are binary)."""
        with torch.no_grad():
            sol = self.solver(costs.detach().to(torch.float64))
        return sol.to(torch.float64).round() + 0.0  # + 0.0: no −0.0


def _require_pyepo():
    from newton_losses.integrations.pyepo import require_pyepo

    return require_pyepo()


def _data_seed(cfg) -> int:
    seed = cfg.task_args["data_seed"]
    return cfg.seed if seed < 0 else seed


@functools.lru_cache(maxsize=32)
def _problem(problem: str, grid: int, items: int, dim: int, capacity: float, features: int, solver: str,
             weight_seed: int) -> Problem:
    pyepo = _require_pyepo()
    from pyepo.model import ort

    from newton_losses.integrations.pyepo import OptModelSolver
    from newton_losses.integrations.pyepo_grid import GridShortestPath

    if problem == "shortest_path":
        optmodel = ort.shortestPathModel((grid, grid))
        name = "pyepo" if solver == "pyepo" else "grid"
        oracle = OptModelSolver(optmodel) if name == "pyepo" else GridShortestPath((grid, grid))
        return Problem(problem, optmodel, oracle, name, "min", int(optmodel.num_cost), features)
    # the knapsack's weights are the generator's first draw: the same for any number of instances,
    # degree and noise (only the seed, items and dimensions matter)
    weights, _, _ = pyepo.data.knapsack.genData(1, features, items, dim=dim, deg=1, noise_width=0.0,
                                                seed=weight_seed)
    optmodel = ort.knapsackModel(weights, [capacity] * dim)
    return Problem(problem, optmodel, OptModelSolver(optmodel), "pyepo", "max", int(optmodel.num_cost), features)


def problem_of(cfg) -> Problem:
    """The :class:`Problem` of a validated ``pto`` configuration (cached per setting)."""
    a = cfg.task_args
    knapsack = a["problem"] == "knapsack"
    return _problem(a["problem"], a["grid"], a["items"], a["dim"], float(a["capacity"]), a["features"],
                    a["solver"], _data_seed(cfg) if knapsack else 0)


def num_cost(cfg) -> int:
    """d, the network's outputs per instance (without building the problem)."""
    a = cfg.task_args
    return 2 * a["grid"] * (a["grid"] - 1) if a["problem"] == "shortest_path" else a["items"]


# ----------------------------------------------------------------------------------------------
# Data: generated once, true solutions solved once
_DATA_CACHE: "OrderedDict[str, dict]" = OrderedDict()
_DATA_CACHE_SIZE = 8


def _sizes(cfg) -> tuple[int, int, int]:
    return cfg.train_size, cfg.val_sets, cfg.test_sets


def load_data(cfg) -> dict:
    """The splits of a ``pto`` configuration: ``{"train" | "val" | "test": {"x": (n, p) float32,
    "c": (n, d) float32, "w": (n, d) float64 0/1, "z": (n,) float64}}`` (numpy), generated by
    PyEPO's generator and solved once; kept in memory per setting and, where an optModel solved
    them, on disk (see the module docstring)."""
    a = cfg.task_args
    seed = _data_seed(cfg)
    n_train, n_val, n_test = _sizes(cfg)
    key = json.dumps({**a, "data_seed": seed, "sizes": [n_train, n_val, n_test]}, sort_keys=True)
    if key in _DATA_CACHE:
        _DATA_CACHE.move_to_end(key)
        return _DATA_CACHE[key]
    pyepo = _require_pyepo()
    n = n_train + n_val + n_test
    if a["problem"] == "shortest_path":
        x, c = pyepo.data.shortestpath.genData(n, a["features"], (a["grid"], a["grid"]), deg=a["deg"],
                                               noise_width=a["noise"], seed=seed)
    else:
        _, x, c = pyepo.data.knapsack.genData(n, a["features"], a["items"], dim=a["dim"], deg=a["deg"],
                                              noise_width=a["noise"], seed=seed)
    x, c = np.asarray(x, dtype=np.float32), np.asarray(c, dtype=np.float32)
    problem = problem_of(cfg)
    w = _true_solutions(problem, c, key)
    z = (c.astype(np.float64) * w).sum(1)
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    data = {s: {"x": x[i:j], "c": c[i:j], "w": w[i:j], "z": z[i:j]} for s, (i, j) in cuts.items()}
    _DATA_CACHE[key] = data
    while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
        _DATA_CACHE.popitem(last=False)
    return data


def _true_solutions(problem: Problem, c: np.ndarray, key: str) -> np.ndarray:
    """w*(c) for every row, (n, d) float64; through the disk cache when an optModel solves them
    (the dynamic program is faster than reading a file)."""
    if problem.solver_name == "grid":
        return problem.solve(torch.from_numpy(c)).numpy()
    import hashlib

    from newton_lab.data.cache import (DataIntegrityError, array_sha256, cache_dir, load_verified_npz,
                                       save_verified_npz)

    meta = {"costs_sha256": array_sha256(c), "problem": problem.name, "solver": problem.solver_name}
    path = cache_dir() / "pyepo" / f"{problem.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    try:
        arrays, _ = load_verified_npz(path, expect_meta=meta)
        if arrays["w"].shape == c.shape:
            return arrays["w"].astype(np.float64)
    except (FileNotFoundError, DataIntegrityError):
        pass
    w = problem.solve(torch.from_numpy(c)).numpy()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_verified_npz(path, {"w": w.astype(np.uint8)}, meta)
    except OSError as exc:  # an unwritable cache costs time, not correctness
        warnings.warn(f"could not cache the true solutions in {path} ({exc}); they are solved again "
                      "next time", stacklevel=3)
    return w


def pack_targets(c: Tensor, w: Tensor, z: Tensor) -> Tensor:
    """The per-instance target row ``[c | w | z]``: (N, d), (N, d), (N,) -> (N, 2d + 1)."""
    return torch.cat([c, w, z[:, None]], dim=1)


def unpack_targets(target: Tensor, d: int) -> tuple[Tensor, Tensor, Tensor]:
    """(c (N, d), w (N, d), z (N,)) of packed targets (N, 2d + 1)."""
    if target.dim() != 2 or target.shape[1] != 2 * d + 1:
        raise ValueError(f"targets must have shape (N, {2 * d + 1}) = [true costs c (d) | true solution "
                         f"w (d) | true objective z (1)] for d = {d}; got {tuple(target.shape)}")
    return target[:, :d], target[:, d:2 * d], target[:, 2 * d]


# ----------------------------------------------------------------------------------------------
# Metrics
@torch.no_grad()
def regret_metrics(problem: Problem, pred: Tensor, c: Tensor, z: Tensor) -> dict[str, float]:
    """PyEPO's metrics of predicted costs ``pred`` (N, d) given true costs ``c`` (N, d) and true
    objectives ``z`` (N,):

        regret = Σ_i s (⟨c_i, w*(pred_i)⟩ − z_i) / (Σ_i |z_i| + 10⁻⁸)    (pyepo.metric.regret)
        mse    = (1/(N d)) Σ_i ‖pred_i − c_i‖²                            (pyepo.metric.MSE)

    in float64, one batched solve of the predictions."""
    pred64, c64, z64 = pred.detach().double(), c.double(), z.double()
    w_hat = problem.solve(pred64)
    regret = problem.sign * ((c64 * w_hat).sum(1) - z64)
    return {"regret": float(regret.sum() / (z64.abs().sum() + REGRET_EPS)),
            "mse": float(((pred64 - c64) ** 2).mean())}


# ----------------------------------------------------------------------------------------------
# Networks
def build_network(cfg) -> nn.Module:
    """The network of a configuration (``model``: ``"linear"`` or ``"mlp"``). Built first in the
    task, so that after ``torch.manual_seed(seed)`` its initialization is PyEPO's
    ``nn.Linear(p, d)`` under the same seed."""
    p, d = cfg.task_args["features"], num_cost(cfg)
    return LinearCosts(p, d) if cfg.model == "linear" else MLPCosts(p, d, cfg.hidden)


# ----------------------------------------------------------------------------------------------
# The task
class PTOTask(EpochNoiseState):
    """Data, network and loss of one predict-then-optimize run (see the module docstring).

    Attributes:
        model: features (B, p) -> predicted costs (B, d).
        loss_fn: per-instance loss ``(θ̂ (N, d), target (N, 2d + 1)) -> (N,)``.
        problem: the :class:`Problem`. primary: ``"regret"`` (lower is better).
    """

    primary = "regret"
    metric_names = ("regret", "mse")

    def __init__(self, cfg, *, device: torch.device, dtype: torch.dtype, data: Optional[dict] = None,
                 rank: Optional[int] = None) -> None:
        self.cfg, self.device, self.dtype = cfg, device, dtype
        if rank is not None and cfg.task_args["last_batch"] == "partial" and cfg.train_size % cfg.batch_size:
            # the runner passes a rank under data parallelism only; it slices every batch into
            # equal parts of batch_size / processes, which an epoch's short last batch has not
            raise ValueError(
                f"task_args.last_batch='partial' with train_size {cfg.train_size} not divisible by "
                f"batch_size {cfg.batch_size}: each epoch's last batch is shorter, and data-parallel "
                "processes train on equal slices of a full batch; use task_args.last_batch='full' "
                "or a train_size divisible by batch_size")
        rank = rank or 0
        self.model = build_network(cfg)  # first: the seeded initialization (build_network)
        self.problem = problem_of(cfg)
        self.d = self.problem.num_cost
        self._data = data if data is not None else load_data(cfg)
        self.x = {s: torch.from_numpy(v["x"]) for s, v in self._data.items()}
        self.c = {s: torch.from_numpy(v["c"]).double() for s, v in self._data.items()}
        self.z = {s: torch.from_numpy(v["z"]) for s, v in self._data.items()}
        train = self._data["train"]
        self.target = pack_targets(torch.from_numpy(train["c"]).double(), torch.from_numpy(train["w"]),
                                   torch.from_numpy(train["z"]))
        self._init_stream(cfg.seed, rank)  # per-rank noise stream and epoch buffer (checkpointed)
        self.method = registry.method("pto", cfg.method)
        self.loss_fn, self._loss = build_loss(cfg, self.noise)

    def curvature(self, variant: str):
        """The ``NewtonLoss`` curvature argument of a variant (``dpo``/``pfyl``: their own
        estimators for ``"hessian"`` and ``"gauss_newton"``)."""
        return registry.curvature(self.method, self._loss, variant)

    def shared_data(self) -> dict:
        """Keyword arguments that build another task of this configuration on the same data."""
        return {"data": self._data}

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The next training batch: features (B, p) and packed targets (B, 2d + 1). Each epoch
        is a random permutation of the training set cut into batches of ``batch_size``; with
        ``task_args.last_batch="partial"`` (default) the epoch's last batch holds the remainder
        (B < batch_size when batch_size does not divide train_size), as PyEPO's shuffled
        ``DataLoader`` does; with ``"full"`` every batch has ``batch_size`` instances, the
        permutations continued across epoch boundaries (as the other tasks sample)."""
        n = self.x["train"].shape[0]
        if self.cfg.task_args["last_batch"] == "partial":
            if self._buffer.numel() == 0:
                self._buffer = torch.randperm(n, generator=generator)
        else:
            while self._buffer.numel() < batch_size:
                self._buffer = torch.cat([self._buffer, torch.randperm(n, generator=generator)])
        index, self._buffer = self._buffer[:batch_size], self._buffer[batch_size:]
        return (self.x["train"][index].to(self.device, self.dtype),
                self.target[index].to(self.device, self.dtype))

    def outputs(self, model: nn.Module, x: Tensor) -> Tensor:
        return model(x)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int = 4096) -> dict:
        """``regret`` (normalized, PyEPO's) and ``mse`` on the whole ``split``."""
        x = self.x[split]
        pred = torch.cat([model(x[i:i + batch_size].to(self.device, self.dtype)).cpu()
                          for i in range(0, x.shape[0], batch_size)])
        return regret_metrics(self.problem, pred, self.c[split], self.z[split])


# ----------------------------------------------------------------------------------------------
# Losses
class PTOLoss(nn.Module):
    """Base of the task's losses: ``forward(costs (N, d), target (N, 2d + 1)) -> (N,)`` with the
    packed target ``[c | w | z]`` (:func:`unpack_targets`)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__()
        self.problem = problem
        self.d = problem.num_cost

    def unpack(self, costs: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(costs, Tensor) or costs.dim() != 2 or costs.shape[1] != self.d:
            raise ValueError(f"costs must have shape (N, {self.d}) (one cost per decision variable); "
                             f"got {tuple(costs.shape) if isinstance(costs, Tensor) else type(costs).__name__}")
        c, w, z = unpack_targets(target, self.d)
        return c.to(costs.dtype), w.to(costs.dtype), z.to(costs.dtype)

    def extra_repr(self) -> str:
        return f"problem={self.problem.name!r}, solver={self.problem.solver_name!r}"


class TwoStageLoss(PTOLoss):
    """Two-stage least squares on the costs: ``ℓ_i = (1/d) ‖θ̂_i − c_i‖²`` (PyEPO's two-stage
    baseline, ``nn.MSELoss`` per instance)."""

    def forward(self, costs: Tensor, target: Tensor) -> Tensor:
        c, _, _ = self.unpack(costs, target)
        return ((costs - c) ** 2).mean(1)


class SPOPlusLoss(PTOLoss):
    """SPO+ (Elmachtoub & Grigas 2022), ``pyepo.func.SPOPlus(..., reduction="none")``:

        ℓ_i = s (2⟨θ̂_i, w_i⟩ − z_i − ⟨2θ̂_i − c_i, ŵ_i⟩),   ŵ_i = w*(2θ̂_i − c_i),   ∇ℓ_i = 2s (w_i − ŵ_i)

    (``ŵ`` is a constant of the autograd graph, so autograd gives exactly PyEPO's subgradient;
    one batched solve per call)."""

    def forward(self, costs: Tensor, target: Tensor) -> Tensor:
        c, w, z = self.unpack(costs, target)
        q = 2 * costs - c
        w_hat = self.problem.solve(q).to(costs.dtype)
        return self.problem.sign * (2 * (costs * w).sum(1) - z - (q * w_hat).sum(1))


class _DBBFunction(torch.autograd.Function):
    """Forward: ``|⟨w*(θ̂_i), c_i⟩ − z_i|``. Backward: DBB's interpolation (see :class:`DBBLoss`)."""

    @staticmethod
    def forward(ctx, costs, c, z, problem, lambd):
        w_hat = problem.solve(costs).to(costs.dtype)
        gap = (w_hat * c).sum(1) - z
        ctx.save_for_backward(costs.detach(), c, w_hat, gap)
        ctx.problem, ctx.lambd = problem, lambd
        return gap.abs()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        costs, c, w_hat, gap = ctx.saved_tensors
        problem, lambd = ctx.problem, ctx.lambd
        N, s = costs.shape[0], problem.sign
        u = torch.sign(gap)[:, None] * c  # ∂ℓ_i/∂ŵ_i
        w_q = problem.solve(costs + s * (lambd / N) * u).to(costs.dtype)
        grad = s * (w_q - w_hat) * (N / (lambd + REGRET_EPS))
        return grad_out[:, None] * grad, None, None, None, None


class DBBLoss(PTOLoss):
    """DBB (Pogančić et al. 2020) with an L1 loss on the objective, as PyEPO's docs train it
    (``blackboxOpt(optmodel, lambd=λ)``, ``nn.L1Loss()(⟨ŵ, c⟩, z)``):

        ℓ_i = |⟨ŵ_i, c_i⟩ − z_i|,   ŵ_i = w*(θ̂_i),
        ∇ℓ_i = N s (w*(θ̂_i + s (λ/N) u_i) − ŵ_i) / λ,   u_i = sign(⟨ŵ_i, c_i⟩ − z_i) c_i

    with N the instances of the call. DBB's interpolation step is λ times the *upstream*
    gradient, so PyEPO's loop — ``nn.L1Loss`` averaging over a batch of N — steps λ/N along
    ``u_i``; the per-instance gradient here is N times that loop's row, so that the batch mean of
    these losses (the baseline) has exactly PyEPO's gradient, and ``NewtonLoss`` (which
    differentiates their sum) sees the same direction per instance. (The 10⁻⁸ of PyEPO's
    denominator is kept.) One extra batched solve in the backward pass.
    """

    def __init__(self, problem: Problem, lambd: float = 10.0) -> None:
        super().__init__(problem)
        self.lambd = float(lambd)

    def forward(self, costs: Tensor, target: Tensor) -> Tensor:
        c, _, z = self.unpack(costs, target)
        return _DBBFunction.apply(costs, c, z, self.problem, self.lambd)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", lambd={self.lambd}"


class _OnSolutions:
    """A curvature estimator of a perturbed loss, called by ``NewtonLoss`` with the packed
    target: it hands the estimator the true solutions ``w`` (the target of DPO and PFYL)."""

    def __init__(self, estimator: Callable, d: int) -> None:
        self.estimator, self.d = estimator, d

    def __call__(self, y: Tensor, g: Optional[Tensor] = None, target: Optional[Tensor] = None,
                 *args: Any, **kwargs: Any):
        if target is None:
            raise ValueError("the curvature estimator needs the loss's packed target (N, 2d + 1); "
                             "NewtonLoss passes it on")
        return self.estimator(y, g, unpack_targets(target, self.d)[1])

    @property
    def last(self):
        """The estimator's last low-rank curvature (``SteinCurvature.last``)."""
        return self.estimator.last

    def __repr__(self) -> str:
        return f"{self.estimator!r} on the true solutions"


class PerturbedLoss(PTOLoss):
    """PFYL or DPO (``inner``: :class:`~newton_losses.integrations.pyepo.PFYLoss` /
    :class:`~newton_losses.integrations.pyepo.DPOLoss`) on the packed target: ``inner(θ̂, w)``.
    Its estimators reuse the forward pass's samples, as the inner loss's do."""

    stochastic = True

    def __init__(self, problem: Problem, inner: nn.Module) -> None:
        super().__init__(problem)
        self.inner = inner

    def forward(self, costs: Tensor, target: Tensor) -> Tensor:
        _, w, _ = self.unpack(costs, target)
        return self.inner(costs, w)

    def hessian_estimator(self, **kwargs: Any) -> _OnSolutions:
        """The inner loss's Stein Hessian estimator, called with the packed target."""
        return _OnSolutions(self.inner.hessian_estimator(**kwargs), self.d)


class DPOTaskLoss(PerturbedLoss):
    """DPO on the packed target, with its Gauss-Newton estimator as well."""

    def gauss_newton_estimator(self, **kwargs: Any) -> _OnSolutions:
        """The inner DPO loss's Gauss-Newton estimator ``ĴᵀDĴ``, called with the packed target."""
        return _OnSolutions(self.inner.gauss_newton_estimator(**kwargs), self.d)


def _perturbed(kind: str) -> Callable:
    def build(a: dict, ctx: registry.BuildContext) -> PerturbedLoss:
        from newton_losses.integrations.pyepo import DPOLoss, PFYLoss

        p = ctx.problem
        baseline = "loo" if a["samples"] > 1 else "none"  # PyEPO's variance reduction
        common = dict(sigma=a["sigma"], n_samples=a["samples"], baseline=baseline, generator=ctx.generator,
                      solver=p.solver)
        if kind == "dpo":
            return DPOTaskLoss(p, DPOLoss(p.optmodel, a["loss"], **common))
        return PerturbedLoss(p, PFYLoss(p.optmodel, **common))
    return build


def build_loss(cfg, noise: Optional[torch.Generator] = None):
    """(loss_fn for NewtonLoss, the loss module) of a ``pto`` configuration: the method built on
    its :class:`Problem`, drawing Monte-Carlo noise from ``noise``."""
    m = registry.method("pto", cfg.method)
    loss = m.build(m.resolve_args(cfg.method_args),
                   registry.BuildContext(variant=cfg.variant, generator=noise, problem=problem_of(cfg)))
    return loss, loss


def random_batch(cfg, N: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random predicted costs (N, d) and packed targets (N, 2d + 1) of random positive true
    costs, their solutions and objectives (benchmarks and tests)."""
    problem = problem_of(cfg)
    d = problem.num_cost
    y = torch.randn(N, d, generator=generator)
    c = torch.rand(N, d, generator=generator, dtype=torch.float64) * 2 + 0.5
    w = problem.solve(c)
    return y, pack_targets(c, w, (c * w).sum(1)).to(y.dtype)


# ----------------------------------------------------------------------------------------------
# Registration: the task, its protocols and its losses (docs/PYEPO.md, "The harness task").
def installed(name: str) -> bool:
    """Whether the package ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that fails, or a module set to None
        return False


def _check_task(cfg) -> None:
    missing = [m for m in ("pyepo", "ortools") if not installed(m)]
    if missing:
        raise ValueError(f"task 'pto' needs {' and '.join(missing)}: {INSTALL_HINT}")
    a = cfg.task_args
    if cfg.train_size < 1:
        raise ValueError(f"train_size must be >= 1 for task 'pto' (the training instances generated; "
                         f"PyEPO's benchmarks use 100, 1000 and 5000); got {cfg.train_size}")
    own = {"shortest_path": ("grid",), "knapsack": ("items", "dim", "capacity")}
    for problem, names in own.items():
        for name in names:
            if a["problem"] != problem and a[name] != _TASK_ARGS[name].default:
                raise ValueError(f"task_args.{name}={a[name]!r} applies to problem {problem!r}, not "
                                 f"{a['problem']!r}; leave it at its default ({_TASK_ARGS[name].default!r})")
    if a["solver"] == "grid" and a["problem"] != "shortest_path":
        raise ValueError(f"task_args.solver='grid' is the exact dynamic program for the grid shortest "
                         f"path; problem {a['problem']!r} is solved by PyEPO's optModel: use solver "
                         "'pyepo' or 'auto'")


def _check_dpo(cfg) -> None:
    if cfg.variant == "gauss_newton" and cfg.method_args["loss"] == "l1":
        raise ValueError("variant 'gauss_newton' with method_args.loss='l1': the L1 loss has zero "
                         "second derivative, so its Gauss-Newton matrix is zero; use loss 'l2' or "
                         "'smooth_l1', or another variant")


def _id_parts(cfg) -> list:
    a = cfg.task_args
    parts = [_SHORT[a["problem"]], f"deg{a['deg']}", f"e{a['noise']:g}", f"n{cfg.train_size}"]
    return parts + ([cfg.model] if cfg.model != "linear" else [])


_TASK_ARGS = {
    "problem": registry.Arg(str, "shortest_path", choices=PROBLEMS, help="PyEPO's problem"),
    "deg": registry.Arg(int, 4, minimum=1, help="polynomial degree of the feature-to-cost map"),
    "noise": registry.Arg(float, 0.5, minimum=0.0, below=1.0,
                          below_why="the noise multiplies each cost by U[1-e, 1+e]; from e = 1 on costs "
                                    "can reach zero or turn negative and the normalized regret loses its meaning",
                          help="half-width e of the multiplicative noise U[1-e, 1+e], 0 <= e < 1"),
    "features": registry.Arg(int, 5, minimum=1, help="features p"),
    "data_seed": registry.Arg(int, -1, minimum=-1, help="seed of PyEPO's generator; -1: the run's seed"),
    "solver": registry.Arg(str, "auto", choices=SOLVERS, help="grid (exact DP, shortest path), pyepo (optModel), auto"),
    "last_batch": registry.Arg(str, "partial", choices=("partial", "full"),
                               help="an epoch's last batch: partial (the remainder, as PyEPO's DataLoader) "
                                    "or full (permutations continued)"),
    "grid": registry.Arg(int, 5, minimum=2, help="shortest path: nodes per side of the grid"),
    "items": registry.Arg(int, 32, minimum=1, help="knapsack: items"),
    "dim": registry.Arg(int, 2, minimum=1, help="knapsack: resource dimensions"),
    "capacity": registry.Arg(float, 20.0, positive=True, help="knapsack: capacity per dimension"),
}
_EPOCH = math.ceil(1000 / 32)  # steps per epoch of 1,000 training instances at batch 32
_COMMON = dict(method="spo_plus", model="linear", hidden=64, data="pyepo", lr=1e-2, batch_size=32,
               train_size=1000, val_sets=200)
_FIRST_ORDER = ("none", "fisher")
_SIGMA = registry.Arg(float, 1.0, positive=True, help="noise scale σ (PyEPO's default 1)")
_SAMPLES = registry.Arg(int, 10, minimum=1, help="Monte-Carlo samples S (PyEPO's default 10)")

registry.register_task(registry.Task(
    name="pto",
    title="Predict-then-optimize (PyEPO)",
    factory=PTOTask,
    protocols={
        # PyEPO's tutorial (notebooks/03 Training and Testing): Adam 1e-2, batch 32, 20 epochs
        "pyepo": dict(_COMMON, steps=20 * _EPOCH, eval_every=_EPOCH, test_sets=1000),
        "quick": dict(_COMMON, steps=5 * _EPOCH, eval_every=_EPOCH, test_sets=500),
        "tiny": dict(_COMMON, batch_size=16, steps=8, eval_every=4, train_size=64, val_sets=32, test_sets=32),
    },
    models=("linear", "mlp"),
    data=("pyepo",),
    metrics=("regret", "mse"),
    build_loss=build_loss,
    random_batch=random_batch,
    output_size=num_cost,
    percent_metrics=("regret",),
    columns=("problem", "deg", "noise", "train_size"),
    column_note="mse: mean squared error of the predicted costs, at the best validation; ",
    min_eval_sets=1,
    epoch_size=lambda cfg: cfg.train_size,
    check=_check_task,
    args=_TASK_ARGS,
    lower_is_better=("regret", "mse"),
    id_parts=_id_parts,
    requires=("pyepo", "ortools"),
))
for _m in (
    registry.Method("two_stage", "pto", "two-stage: least squares on the costs", {},
                    lambda a, ctx: TwoStageLoss(ctx.problem), variants=_FIRST_ORDER),
    registry.Method("spo_plus", "pto", "SPO+ surrogate (pyepo.func.SPOPlus)", {},
                    lambda a, ctx: SPOPlusLoss(ctx.problem), variants=_FIRST_ORDER),
    registry.Method("dbb", "pto", "differentiable black box + L1 on the objective (pyepo.func.blackboxOpt)",
                    {"lambd": registry.Arg(float, 10.0, positive=True,
                                           help="interpolation λ (PyEPO's default 10; its docs: 10-20)")},
                    lambda a, ctx: DBBLoss(ctx.problem, a["lambd"]), variants=_FIRST_ORDER),
    registry.Method("dpo", "pto", "perturbed optimizer + MSE on its solution (pyepo.func.perturbedOpt)",
                    {"sigma": _SIGMA, "samples": _SAMPLES,
                     "loss": registry.Arg(str, "l2", choices=("l2", "l1", "smooth_l1"),
                                          help="loss on the expected solution (l2: PyEPO's nn.MSELoss)")},
                    _perturbed("dpo"), variants=("none", "fisher", "hessian", "gauss_newton"),
                    stochastic=True, check=_check_dpo),
    registry.Method("pfyl", "pto", "perturbed Fenchel-Young loss (pyepo.func.perturbedFenchelYoung)",
                    {"sigma": _SIGMA, "samples": _SAMPLES},
                    _perturbed("pfyl"), variants=("none", "fisher", "hessian"), stochastic=True),
):
    registry.register_method(_m)
