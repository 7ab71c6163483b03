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

from typing import Optional

import torch
from torch import Tensor, nn

from newton_lab.data import generate_terrain, load_terrain, maps_to_tensor
from newton_lab.config import RunConfig
from newton_lab.models import build_model

__all__ = ["ShortestPathTask", "path_metrics"]

_STOCHASTIC = ("smoothed_loss", "smoothed_algorithm", "perturbed_fy")


def path_metrics(pred_costs: Tensor, weights: Tensor, paths: Tensor) -> dict[str, Tensor]:
    """Per-map ``exact``, ``cost_optimal`` (0/1) and ``cost_ratio`` of the exact shortest path
    on ``pred_costs`` (B, H, W), given the true ``weights`` and label ``paths`` (B, H, W)."""
    from newton_losses.shortest_path import shortest_path

    pred = shortest_path(pred_costs.detach().to(torch.float64).clamp_min(0)).path
    w, true_path = weights.to(torch.float64), paths.to(torch.float64)
    exact = (pred == true_path).flatten(1).all(1).to(torch.float64)
    cost_pred = (pred * w).flatten(1).sum(1)
    cost_opt = (true_path * w).flatten(1).sum(1)
    optimal = ((cost_pred - cost_opt).abs() <= 1e-4 * cost_opt.abs().clamp_min(1.0)).to(torch.float64)
    return {"exact": exact, "cost_optimal": optimal, "cost_ratio": cost_pred / cost_opt}


class ShortestPathTask:
    """Data, network and loss of one shortest-path run (see the module docstring)."""

    primary = "exact"
    metric_names = ("exact", "cost_optimal", "cost_ratio")

    def __init__(self, cfg: RunConfig, *, device: torch.device, dtype: torch.dtype,
                 terrain: Optional[dict] = None, rank: int = 0) -> None:
        self.cfg, self.device, self.dtype = cfg, device, dtype
        splits = terrain if terrain is not None else _load(cfg)
        # Maps stay uint8 (10,000 float maps would take 1.1 GB); batches are converted on use.
        self.maps = {s: torch.from_numpy(d.maps.copy()) for s, d in splits.items()}
        self.weights = {s: torch.from_numpy(d.weights.copy()) for s, d in splits.items()}
        self.paths = {s: torch.from_numpy(d.paths.copy()) for s, d in splits.items()}
        grid = tuple(self.weights["train"].shape[1:])
        self.model = build_model(cfg.model, hidden=cfg.hidden, grid=grid)
        # Under data parallelism each process perturbs its own slice of the batch: its noise
        # stream must differ from the other ranks' (rank 0 keeps the single-process stream), or
        # the Monte-Carlo samples would repeat across the global batch. The global run is then
        # equal in distribution to one process, not bit-identical.
        self.noise = torch.Generator().manual_seed(cfg.seed * 7919 + 17 + rank * 1_000_003)
        self._buffer = torch.empty(0, dtype=torch.long)
        self.loss_fn, self._loss = _loss(cfg, self.noise)

    # Checkpointed state: the epoch permutation stream and the noise generator.
    def state_dict(self) -> dict:
        return {"buffer": self._buffer.clone(), "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._buffer = state["buffer"].clone()
        self.noise.set_state(state["noise"])

    def curvature(self, variant: str):
        """The ``NewtonLoss`` curvature argument for a Newton variant."""
        if self.cfg.method in _STOCHASTIC and variant == "hessian":
            return self._loss.hessian_estimator()
        return variant

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


def _load(cfg: RunConfig) -> dict:
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


def _loss(cfg: RunConfig, noise: torch.Generator):
    """(loss_fn for NewtonLoss, the underlying loss module)."""
    from newton_losses import shortest_path as sp

    a, method = cfg.method_args, cfg.method
    if method in ("bf_for", "bf_while"):
        loop = ({"mode": "for", "n_iter": a["iterations"] or None} if method == "bf_for"
                else {"mode": "while", "max_iter": a["max_iterations"] or None})
        loss = sp.RelaxedShortestPathLoss(a["beta"], a["loss"], **loop)
        return (loss.composite() if cfg.variant == "gauss_newton" else loss), loss
    common = dict(sigma=a["sigma"], n_samples=a["samples"], generator=noise)
    if method == "smoothed_loss":
        loss = sp.SmoothedLoss(a["loss"], **common)
    elif method == "smoothed_algorithm":
        loss = sp.SmoothedAlgorithmLoss(a["loss"], **common)
    else:
        loss = sp.FenchelYoungLoss(**common)
    return loss, loss
