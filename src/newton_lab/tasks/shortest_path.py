"""The shortest-path task (Warcraft protocol, docs/PAPER.md §2) on procedural terrain maps: a network
maps a 96×96 terrain image to 12×12 vertex costs, a shortest-path loss compares the (relaxed,
smoothed or perturbed) path with the true one, and the exact solver on the predicted costs is
scored against the truth.

Metrics (fractions): ``exact`` — the predicted path's mask equals the label's; ``cost_optimal``
— the predicted path's true cost equals the optimum (relative 1e-4; about 90% of procedural
maps have several optimal paths, so exact match under-counts correct predictions);
``cost_ratio`` — mean of (true cost of the predicted path) / (optimal cost), ≥ 1.

Training sets are visited in epochs: consecutive batches of one random permutation, continued
into the next permutation so every batch has ``batch_size`` maps. The permutation buffer and the
noise generator of stochastic losses are part of the checkpoint (:meth:`state_dict`).
"""
from __future__ import annotations

import math
import types
from typing import Optional

import torch
from torch import Tensor, nn

from newton_losses import shortest_path as sp

from newton_lab import registry
from newton_lab.data import generate_terrain, load_terrain, maps_to_tensor
from newton_lab.models import build_model
from newton_lab.tasks._stream import EpochNoiseState

__all__ = ["ShortestPathTask", "path_metrics", "build_loss", "random_batch"]


def path_metrics(pred_costs: Tensor, weights: Tensor, paths: Tensor) -> dict[str, Tensor]:
    """Per-map ``exact``, ``cost_optimal`` (0/1) and ``cost_ratio`` of the exact shortest path
    on ``pred_costs`` (B, H, W), given the true ``weights`` and label ``paths`` (B, H, W)."""
    pred = sp.shortest_path(pred_costs.detach().to(torch.float64).clamp_min(0)).path
    w, true_path = weights.to(torch.float64), paths.to(torch.float64)
    exact = (pred == true_path).flatten(1).all(1).to(torch.float64)
    cost_pred = (pred * w).flatten(1).sum(1)
    cost_opt = (true_path * w).flatten(1).sum(1)
    optimal = ((cost_pred - cost_opt).abs() <= 1e-4 * cost_opt.abs().clamp_min(1.0)).to(torch.float64)
    return {"exact": exact, "cost_optimal": optimal, "cost_ratio": cost_pred / cost_opt}


class ShortestPathTask(EpochNoiseState):
    """Data, network and loss of one shortest-path run (see the module docstring)."""

    primary = "exact"
    metric_names = ("exact", "cost_optimal", "cost_ratio")

    def __init__(self, cfg, *, device: torch.device, dtype: torch.dtype,
                 terrain: Optional[dict] = None, rank: int = 0) -> None:
        self.cfg, self.device, self.dtype = cfg, device, dtype
        splits = terrain if terrain is not None else _load(cfg)
        # Maps stay uint8 (10,000 float maps would take 1.1 GB); batches are converted on use.
        self.maps = {s: torch.from_numpy(d.maps.copy()) for s, d in splits.items()}
        self.weights = {s: torch.from_numpy(d.weights.copy()) for s, d in splits.items()}
        self.paths = {s: torch.from_numpy(d.paths.copy()) for s, d in splits.items()}
        grid = tuple(self.weights["train"].shape[1:])
        self.model = build_model(cfg.model, hidden=cfg.hidden, grid=grid)
        self._init_stream(cfg.seed, rank)  # per-rank noise stream and epoch buffer (checkpointed)
        self.method = registry.method("shortest_path", cfg.method)
        self.loss_fn, self._loss = build_loss(cfg, self.noise)

    def curvature(self, variant: str):
        """The ``NewtonLoss`` curvature argument for a Newton variant (a stochastic method's
        ``"hessian"`` is its own Stein estimator)."""
        return registry.curvature(self.method, self._loss, variant)

    def shared_data(self) -> dict:
        """Keyword arguments that build another task of this kind on the same maps (without
        regenerating them)."""
        return {"terrain": {s: types.SimpleNamespace(maps=self.maps[s].numpy(), weights=self.weights[s].numpy(),
                                                     paths=self.paths[s].numpy()) for s in self.maps}}

    def _images(self, split: str, index: Tensor) -> Tensor:
        return maps_to_tensor(self.maps[split][index], dtype=self.dtype, device=self.device)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The next training batch: images (B, 3, 96, 96) and true paths (B, 12, 12)."""
        n = self.maps["train"].shape[0]
        while self._buffer.numel() < batch_size:
            self._buffer = torch.cat([self._buffer, torch.randperm(n, generator=generator)])
        index, self._buffer = self._buffer[:batch_size], self._buffer[batch_size:]
        return self._images("train", index), self.paths["train"][index].to(self.device, self.dtype)

    def outputs(self, model: nn.Module, x: Tensor) -> Tensor:
        return model(x)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int = 100) -> dict:
        n = self.maps[split].shape[0]
        parts: dict[str, list] = {k: [] for k in self.metric_names}
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            m = path_metrics(model(self._images(split, index)).cpu(), self.weights[split][index],
                             self.paths[split][index])
            for k, v in m.items():
                parts[k].append(v)
        return {k: float(torch.cat(v).mean()) for k, v in parts.items()}


def _load(cfg) -> dict:
    if cfg.data == "synthetic":
        data = generate_terrain(cfg.synthetic_size, seed=1234)
        n_train, n_val, n_test = cfg.synthetic_splits()  # validate() checked they fit
        cuts = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n_train + n_val + n_test)]
        return {s: _slice(data, a, b) for s, (a, b) in zip(("train", "val", "test"), cuts)}
    sizes = {"train": cfg.train_size, "val": cfg.val_sets, "test": cfg.test_sets}
    return {s: load_terrain(s, num_maps=sizes[s] or None) for s in ("train", "val", "test")}


def _slice(data, a: int, b: int):
    import dataclasses

    return dataclasses.replace(data, **{f.name: (getattr(data, f.name)[a:b] if getattr(data, f.name) is not None else None)
                                        for f in dataclasses.fields(data)})


def build_loss(cfg, noise: torch.Generator):
    """(loss_fn for NewtonLoss, the underlying loss module) of a configuration's method; the
    Gauss-Newton variant gets the loss's ``composite()`` form where it has one."""
    m = registry.method("shortest_path", cfg.method)
    loss = m.build(m.resolve_args(cfg.method_args), registry.BuildContext(variant=cfg.variant, generator=noise))
    if registry.variant(cfg.variant).composite and hasattr(loss, "composite"):
        return loss.composite(), loss
    return loss, loss


def random_batch(cfg, N: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random positive costs (N, 12, 12) with β·min > log 8 (the relaxed Bellman-Ford converges)
    and the exact shortest paths of random weights (benchmarks and tests)."""
    y = torch.nn.functional.softplus(torch.randn(N, 12, 12, generator=generator)) + 0.3
    weights = torch.rand(N, 12, 12, generator=generator, dtype=torch.float64) * 9 + 1
    return y, sp.shortest_path(weights).path.to(y.dtype)


# ----------------------------------------------------------------------------------------------
# Registration: the task, its protocols and its losses (docs/PAPER.md §2, docs/SHORTEST_PATH.md).
_EPOCH = math.ceil(10_000 / 70)  # steps per epoch of the paper's 10,000 training maps at batch 70


def _check_task(cfg) -> None:
    if cfg.data == "synthetic":
        total = sum(cfg.synthetic_splits())
        if total > cfg.synthetic_size:
            raise ValueError(f"train_size + val_sets + test_sets ({total}) "
                             f"exceed synthetic_size ({cfg.synthetic_size})")


def _check_relaxed(cfg) -> None:
    if registry.variant(cfg.variant).matrix_free and cfg.damping != "absolute":
        raise ValueError(
            f"damping {cfg.damping!r} with variant {cfg.variant!r} on a 12×12 path: per-sample "
            "curvatures of this size are solved matrix-free (CG), without the eigenvalues that "
            "damping needs; dense ones would cost 144 backward passes and an eigendecomposition "
            "per map and step. Use damping 'absolute'"
        )
    if cfg.variant == "gauss_newton" and cfg.method_args["loss"] == "l1":
        raise ValueError(
            "variant 'gauss_newton' with method_args.loss='l1': the L1 loss has zero "
            "second derivative, so its Gauss-Newton matrix is zero; use loss 'l2' or "
            "'smooth_l1', or another variant"
        )


_PATH_LOSS = dict(choices=tuple(sp.PATH_LOSSES))
_BETA = registry.Arg(float, 10.0, positive=True, help="inverse temperature β of the soft minimum")
_SIGMA = registry.Arg(float, 0.5, positive=True, help="noise scale σ")
_SAMPLES = registry.Arg(int, 10, minimum=1, help="Monte-Carlo samples per map")
# The stochastic losses: the plain loss, the Fisher, and "hessian" = their Stein estimator.
_STOCHASTIC_VARIANTS = ("none", "fisher", "hessian")

registry.register_task(registry.Task(
    name="shortest_path",
    title="Shortest path (terrain)",
    factory=ShortestPathTask,
    protocols={
        "paper": dict(method="bf_for", model="resnet_stem", lr=5e-4, batch_size=70, steps=50 * _EPOCH,
                      lr_milestones=[30 * _EPOCH, 40 * _EPOCH], eval_every=_EPOCH, val_sets=0,
                      test_sets=0, train_size=0, data="terrain"),
        "quick": dict(method="bf_for", model="small_cnn", hidden=32, lr=1e-3, batch_size=70,
                      steps=10 * _EPOCH, lr_milestones=[6 * _EPOCH, 8 * _EPOCH], eval_every=_EPOCH,
                      val_sets=500, test_sets=500, train_size=0, data="terrain"),
        "tiny": dict(method="bf_for", model="small_cnn", hidden=8, lr=3e-3, batch_size=8, steps=6,
                     eval_every=3, val_sets=8, test_sets=8, train_size=24, data="synthetic",
                     synthetic_size=48),
    },
    models=("resnet_stem", "small_cnn"),
    data=("terrain", "synthetic"),
    metrics=("exact", "cost_optimal", "cost_ratio"),
    build_loss=build_loss,
    percent_metrics=("exact", "cost_optimal"),
    column_note="cost ratio: the true cost of the predicted path over the optimal path's, "
                "mean over the test maps (1 = optimal), at the best validation; ",
    min_eval_sets=0,
    epoch_size=lambda cfg: cfg.synthetic_splits()[0] if cfg.data == "synthetic" else cfg.train_size or 10_000,
    check=_check_task,
    random_batch=random_batch,
    output_size=lambda cfg: 144,
))
for _m in (
    registry.Method("bf_for", "shortest_path", "relaxed Bellman-Ford, a fixed number of iterations",
                    {"beta": _BETA, "loss": registry.Arg(str, "l2", **_PATH_LOSS),
                     "iterations": registry.Arg(int, 0, minimum=0, help="0 = H + W")},
                    lambda a, ctx: sp.RelaxedShortestPathLoss(a["beta"], a["loss"], mode="for",
                                                              n_iter=a["iterations"] or None),
                    check=_check_relaxed),
    registry.Method("bf_while", "shortest_path", "relaxed Bellman-Ford, iterated to convergence",
                    {"beta": _BETA, "loss": registry.Arg(str, "l2", **_PATH_LOSS),
                     "max_iterations": registry.Arg(int, 0, minimum=0, help="0 = no cap")},
                    lambda a, ctx: sp.RelaxedShortestPathLoss(a["beta"], a["loss"], mode="while",
                                                              max_iter=a["max_iterations"] or None),
                    check=_check_relaxed),
    registry.Method("smoothed_loss", "shortest_path", "Gaussian smoothing of the path loss",
                    {"sigma": _SIGMA, "samples": _SAMPLES, "loss": registry.Arg(str, "l1", **_PATH_LOSS)},
                    lambda a, ctx: sp.SmoothedLoss(a["loss"], sigma=a["sigma"], n_samples=a["samples"],
                                                   generator=ctx.generator),
                    variants=_STOCHASTIC_VARIANTS, stochastic=True),
    registry.Method("smoothed_algorithm", "shortest_path", "Gaussian smoothing of the solver",
                    {"sigma": _SIGMA, "samples": _SAMPLES, "loss": registry.Arg(str, "l1", **_PATH_LOSS)},
                    lambda a, ctx: sp.SmoothedAlgorithmLoss(a["loss"], sigma=a["sigma"],
                                                            n_samples=a["samples"], generator=ctx.generator),
                    variants=_STOCHASTIC_VARIANTS, stochastic=True),
    registry.Method("perturbed_fy", "shortest_path", "perturbed optimizer + Fenchel-Young loss",
                    {"sigma": _SIGMA, "samples": _SAMPLES},
                    lambda a, ctx: sp.FenchelYoungLoss(sigma=a["sigma"], n_samples=a["samples"],
                                                       generator=ctx.generator),
                    variants=_STOCHASTIC_VARIANTS, stochastic=True),
):
    registry.register_method(_m)
