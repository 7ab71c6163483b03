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
from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix
from newton_losses.sorting import RANKING_LOSSES

from newton_lab import registry
from newton_lab.data import MNIST, MultiDigitSets, load_mnist
from newton_lab.models import build_model

__all__ = ["RankingTask", "synthetic_mnist", "ranking_metrics", "relaxation", "build_loss", "random_batch"]

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

    def __init__(self, cfg, *, device: torch.device, dtype: torch.dtype,
                 mnist: Optional[MNIST] = None, rank: int = 0) -> None:
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
        self.method = registry.method("ranking", cfg.method)
        self.loss_fn, self._loss = build_loss(cfg)

    def curvature(self, variant: str):
        """The ``NewtonLoss`` curvature argument of a registered variant."""
        return registry.curvature(self.method, self._loss, variant)

    def shared_data(self) -> dict:
        """Keyword arguments that build another task of this kind on the same data."""
        return {"mnist": self.mnist}

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


def relaxation(cfg) -> nn.Module:
    """The relaxed sort of a ranking configuration (its registered method, built at ``cfg.n``)."""
    m = registry.method("ranking", cfg.method)
    return m.build(m.resolve_args(cfg.method_args), registry.BuildContext(n=cfg.n, variant=cfg.variant))


def build_loss(cfg, generator: Optional[torch.Generator] = None) -> tuple[CompositeLoss, RankingLoss]:
    """(loss_fn, RankingLoss) of a configuration: the per-sample ranking loss as
    ``CompositeLoss(relaxation, loss on P)``, so that every Newton variant (Gauss-Newton
    included) applies. ``generator`` is unused (the relaxations are deterministic)."""
    ranking = RankingLoss(relaxation(cfg), loss=cfg.method_args.get("loss", _LOSS.default))
    return ranking.composite(), ranking


def random_batch(cfg, N: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random scores (N, n) and true permutation matrices (N, n, n) (benchmarks and tests)."""
    y = torch.randn(N, cfg.n, generator=generator)
    return y, permutation_matrix(torch.randn(N, cfg.n, generator=generator))


# ----------------------------------------------------------------------------------------------
# Registration: the task, its protocols and its relaxations. Every ranking method also takes
# ``loss``, the ranking loss on the relaxed permutation matrix (newton_losses.sorting.RankingLoss).
# Runs before the exact BCE became the default used "bce" (the same loss, computed naively); their
# labels and ids leave it out, and name every other loss.
_LOSS = registry.Arg(str, "bce_exact", choices=tuple(RANKING_LOSSES), legacy="bce", same_as={"bce_exact": "bce"},
                     help="ranking loss on P: " + ", ".join(RANKING_LOSSES))
_SIGMOID = registry.Arg(str, "logistic", choices=("logistic", "logistic_phi", "cauchy"),
                        help="the sorting network's soft swap")
_POSITIVE = dict(positive=True)


def _network(kind: str):
    # The exact BCE gets the precise soft swaps it needs; the other losses keep the lerp
    # arithmetic the study's runs were trained with, so that their configurations reproduce them.
    return lambda a, ctx: DiffSortNet(kind, ctx.n, steepness=a["steepness"], sigmoid=a["sigmoid"],
                                      precise=a.get("loss", _LOSS.default) == "bce_exact")


registry.register_task(registry.Task(
    name="ranking",
    title="Ranking (multi-digit MNIST)",
    factory=RankingTask,
    protocols={
        # docs/PAPER.md §2: the diffsort protocol.
        "paper": dict(model="cnn", downscale=1, lr=10 ** -3.5, batch_size=100, steps=100_000,
                      eval_every=1000, val_sets=1000, test_sets=1000),
        "quick": dict(model="mlp", hidden=256, downscale=2, lr=10 ** -3.5, batch_size=100,
                      steps=30_000, eval_every=1000, val_sets=1000, test_sets=1000),
        "tiny": dict(model="mlp", hidden=32, downscale=4, lr=3e-3, batch_size=16, steps=20,
                     eval_every=10, val_sets=32, test_sets=32, data="synthetic",
                     synthetic_size=240),
    },
    models=("cnn", "mlp"),
    data=("mnist", "synthetic"),
    metrics=("exact", "elementwise"),
    build_loss=build_loss,
    percent_metrics=("exact", "elementwise"),
    columns=("n",),
    random_batch=random_batch,
    output_size=lambda cfg: cfg.n,
))
for _m in (
    registry.Method("neuralsort", "ranking", "NeuralSort (Grover et al. 2019): softmax of pairwise score gaps",
                    {"tau": registry.Arg(float, 1.0, help="temperature τ", **_POSITIVE), "loss": _LOSS},
                    lambda a, ctx: NeuralSort(tau=a["tau"])),
    registry.Method("softsort", "ranking", "SoftSort (Prillo & Eisenschlos 2020)",
                    {"tau": registry.Arg(float, 1.0, help="temperature τ", **_POSITIVE),
                     "power": registry.Arg(float, 1.0, help="distance exponent", **_POSITIVE),
                     "loss": _LOSS},
                    lambda a, ctx: SoftSort(tau=a["tau"], power=a["power"])),
    registry.Method("odd_even", "ranking", "odd-even differentiable sorting network (Petersen et al. 2021)",
                    {"steepness": registry.Arg(float, 10.0, help="steepness β", **_POSITIVE),
                     "sigmoid": _SIGMOID, "loss": _LOSS},
                    _network("odd_even")),
    registry.Method("bitonic", "ranking", "bitonic differentiable sorting network (Petersen et al. 2022)",
                    {"steepness": registry.Arg(float, 10.0, help="steepness β", **_POSITIVE),
                     "sigmoid": _SIGMOID, "loss": _LOSS},
                    _network("bitonic")),
):
    registry.register_method(_m)
# Names the demo and `plot gradients` used before the registry.
for _old, _new in (("logistic_dsn", "odd_even"), ("cauchy_dsn", "odd_even:sigmoid=cauchy"),
                   ("logistic-sorting-network", "odd_even"),
                   ("cauchy-sorting-network", "odd_even:sigmoid=cauchy")):
    registry.register_alias(_old, _new)
