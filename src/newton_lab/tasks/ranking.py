"""The ranking-supervision task (diffsort protocol, docs/PAPER.md §2): multi-digit MNIST sets, a
network scoring each image, a relaxed sort compared to the true permutation matrix by binary
cross-entropy, and the exact-match / element-wise accuracy of the predicted ranking.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from newton_losses.curvature import CompositeLoss
from newton_lab.data import MNIST, MultiDigitSets, load_mnist
from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix
from newton_lab.config import RunConfig
from newton_lab.models import build_model

__all__ = ["RankingTask", "synthetic_mnist", "ranking_metrics"]

# Seeds of the fixed evaluation collections: the same sets for every run of a protocol, so
# that runs (and seeds) are compared on identical data.
_VAL_SEED, _TEST_SEED = 1, 2


def synthetic_mnist(size: int = 1200, seed: int = 0) -> MNIST:
    """A small MNIST-shaped stand-in for offline tests: each class is a fixed random stroke
    pattern, each digit that pattern with random pixel noise and a random shift of ≤ 2 px.
    ``size`` training digits (11/12 train, 1/12 validation) and ``size // 6`` test digits."""
    rng = np.random.default_rng(seed)
    templates = (rng.random((10, 28, 28)) < 0.25).astype(np.float32) * 200.0

    def digits(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(count) % 10
        rng.shuffle(labels)
        images = templates[labels] + rng.normal(0, 30, (count, 28, 28))
        shifts = rng.integers(-2, 3, (count, 2))
        for i, (dy, dx) in enumerate(shifts):
            images[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)

    train_images, train_labels = digits(size)
    test_images, test_labels = digits(max(size // 6, 10))
    return MNIST(train_images, train_labels, test_images, test_labels)


def ranking_metrics(scores: Tensor, ranks: Tensor) -> tuple[Tensor, Tensor]:
    """Per-set exact match and element-wise accuracy of the ranking implied by ``scores``.

    scores, ranks: (B, n); ``ranks[b, i]`` is item i's position in ascending order. Returns two
    (B,) float tensors: 1 if the whole predicted ranking is right, and the fraction of items
    whose predicted rank is right.
    """
    predicted = scores.argsort(dim=1, stable=True).argsort(dim=1)
    correct = (predicted == ranks.to(predicted.device)).float()
    return correct.min(dim=1).values, correct.mean(dim=1)


class RankingTask:
    """Data, network and loss of one ranking run.

    Attributes:
        model: images (B, 1, h, w) → scores (B,).
        loss_fn: per-sample ranking BCE, ``loss_fn(scores (N, n), P_true (N, n, n)) → (N,)``;
            a :class:`CompositeLoss` (relaxation, BCE) so every Newton variant applies.
        primary: the metric that selects the best evaluation ("exact").
    """

    primary = "exact"
    metric_names = ("exact", "elementwise")

    def __init__(self, cfg: RunConfig, *, device: torch.device, dtype: torch.dtype,
                 mnist: Optional[MNIST] = None) -> None:
        self.cfg = cfg
        self.device, self.dtype = device, dtype
        if mnist is None:
            mnist = synthetic_mnist(cfg.synthetic_size) if cfg.data == "synthetic" else load_mnist()
        self.mnist = mnist
        common = dict(n=cfg.n, k=cfg.digits, downscale=cfg.downscale, mnist=mnist, device=device, dtype=dtype)
        self.train = MultiDigitSets("train", num_sets=0, seed=cfg.seed, **common)
        self.val = MultiDigitSets("val", num_sets=cfg.val_sets, seed=_VAL_SEED, **common)
        self.test = MultiDigitSets("test", num_sets=cfg.test_sets, seed=_TEST_SEED, **common)
        self.model = build_model(cfg.model, image_shape=self.train.image_shape, hidden=cfg.hidden)
        ranking = RankingLoss(_relaxation(cfg), loss=cfg.method_args["loss"])
        self.loss_fn = CompositeLoss(ranking.inner, ranking.outer)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A fresh training batch: images (B, n, 1, h, w) and true permutation matrices (B, n, n)."""
        batch = self.train.sample(batch_size, generator=generator)
        return batch.images, permutation_matrix(batch.ranks, dtype=self.dtype)

    def outputs(self, model: nn.Module, x: Tensor) -> Tensor:
        """Scores (B, n) for images (B, n, 1, h, w)."""
        b, n = x.shape[:2]
        return model(x.flatten(0, 1)).view(b, n)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, batch_size: int = 500) -> dict:
        """Exact-match and element-wise accuracy (fractions) on the fixed ``split`` collection."""
        data = self.val if split == "val" else self.test
        exact, elem = [], []
        for batch in data.batches(batch_size):
            e, a = ranking_metrics(self.outputs(model, batch.images), batch.ranks)
            exact.append(e)
            elem.append(a)
        return {"exact": float(torch.cat(exact).mean()), "elementwise": float(torch.cat(elem).mean())}


def _relaxation(cfg: RunConfig) -> nn.Module:
    a = cfg.method_args
    if cfg.method == "neuralsort":
        return NeuralSort(tau=a["tau"])
    if cfg.method == "softsort":
        return SoftSort(tau=a["tau"], power=a["power"])
    return DiffSortNet(cfg.method, cfg.n, steepness=a["steepness"], sigmoid=a["sigmoid"])
