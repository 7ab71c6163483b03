"""Multi-digit MNIST sets for ranking supervision (the diffsort protocol).

An *item* is k MNIST digits side by side, a ``1 × 28 × 28k`` image whose value is the k-digit
number they spell (leading zeros allowed: values lie in ``0 .. 10^k − 1``). A *set* holds n
items; its label is only their order. Following Petersen et al. (diffsort, ICLR 2022) and the
Newton-losses paper, k = 4 and n ∈ {5, 10}.

Ranking convention (shared with :mod:`newton_losses.sorting`): ``ranks[b, i]`` is the position
of item i in the ascending order of the set's values, so the permutation matrix ``P`` with
``P[ranks[b, i], i] = 1`` sorts ascending: ``sorted = P @ values``.

Ties. Items of one set never share a value: a set whose draw repeats a value has the later
items of each tie redrawn (all k digits) until the values are distinct — rejection sampling,
i.e. items are uniform over digit tuples conditioned on distinct values. Hence ``n ≤ L^k`` for
the L distinct digit labels of the split (L = 10 for MNIST), checked up front; and ``k ≤ 18`` so
that values fit in int64.

Disjoint splits: a ``"train"`` set only uses MNIST training digits [:55000], ``"val"`` only
[55000:], ``"test"`` only test digits (:meth:`newton_lab.data.mnist.MNIST.split`).

Batches are assembled by one gather into the uint8 digit array (no per-item Python loop):
``images[b, i, 0, :, j·w:(j+1)·w] = digits[index[b, i, j]] / 255``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from newton_lab.data._util import check_int, derived_seed
from newton_lab.data.mnist import MNIST, SPLITS, load_mnist

__all__ = ["MultiDigitSets", "RankingBatch"]

_MAX_DIGITS = 18  # largest k: values up to 10^18 − 1 fit in int64, 10^19 − 1 does not

# Rejection sampling needs few rounds unless some value is very unlikely: with n = 10 and k = 1
# on balanced labels, a set is still incomplete after r rounds with probability about 0.9^r.
_MAX_REDRAW_ROUNDS = 10_000


class RankingBatch(NamedTuple):
    """A batch of B sets of n multi-digit items.

    Attributes:
        images: ``(B, n, 1, 28/d, 28k/d)`` floating, values in [0, 1] (d = downscale).
        values: ``(B, n)`` int64, the k-digit numbers (distinct within a set).
        ranks: ``(B, n)`` int64, position of each item in ascending order of value (0 = smallest).
    """

    images: torch.Tensor
    values: torch.Tensor
    ranks: torch.Tensor


class MultiDigitSets:
    """Sets of n multi-digit MNIST items with their values and ranks, from one split.

    Two ways to get data:

    - :meth:`sample` draws fresh random sets (training; a new combination of digits each call).
    - A fixed, seeded collection of ``num_sets`` sets (evaluation): ``len(ds)``, ``ds[i]``,
      ``ds[a:b]``, ``ds[index_tensor]`` and :meth:`batches`. It is the same for a given
      (split, n, k, num_sets, seed) on every machine and device.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        n: items per set.
        k: digits per item (values in ``0 .. 10^k − 1``), 1 ≤ k ≤ 18.
        num_sets: size of the fixed collection.
        seed: seeds the fixed collection and the default generator of :meth:`sample`.
        downscale: integer factor d dividing 28; each digit is average-pooled d×d once, up front
            (e.g. d = 2 gives 14×56 items for CPU-sized protocols).
        mnist: an already loaded :class:`~newton_lab.data.mnist.MNIST` (else
            :func:`~newton_lab.data.mnist.load_mnist` is called with the arguments below).
        cache_dir, source, download, trust_source: passed to
            :func:`~newton_lab.data.mnist.load_mnist`.
        device: where the digits live and batches are assembled.
        dtype: floating dtype of the images.

    Example:
        >>> ds = MultiDigitSets("train", n=5, mnist=mnist)  # doctest: +SKIP
        >>> batch = ds.sample(100)                          # doctest: +SKIP
        >>> batch.images.shape, batch.values.shape          # doctest: +SKIP
        (torch.Size([100, 5, 1, 28, 112]), torch.Size([100, 5]))
    """

    def __init__(
        self,
        split: str = "train",
        n: int = 5,
        *,
        k: int = 4,
        num_sets: int = 1000,
        seed: int = 0,
        downscale: int = 1,
        mnist: MNIST | None = None,
        cache_dir: str | os.PathLike | None = None,
        source: str | os.PathLike | None = None,
        download: bool = True,
        trust_source: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.n = check_int("n", n, 1)
        self.k = check_int("k", k, 1)
        if self.k > _MAX_DIGITS:
            raise ValueError(
                f"k must be <= {_MAX_DIGITS} (values up to 10**k - 1 must fit in int64), got {k}"
            )
        if self.n > 10**self.k:
            raise ValueError(
                f"n={n} items cannot have distinct {k}-digit values (at most 10**k = {10**k})"
            )
        num_sets = check_int("num_sets", num_sets, 0)
        self.seed = check_int("seed", seed, 0)
        self.downscale = check_int("downscale", downscale, 1)
        if 28 % self.downscale:
            raise ValueError(f"downscale must divide 28 (1, 2, 4, 7, 14, 28), got {downscale}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if mnist is None:
            mnist = load_mnist(
                cache_dir, source=source, download=download, trust_source=trust_source
            )
        elif not isinstance(mnist, MNIST):
            raise TypeError(f"mnist must be a newton_lab.data.MNIST, got {type(mnist).__name__}")
        self.split = split
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")

        images, labels = mnist.split(split)
        if len(labels) == 0:
            raise ValueError(f"the {split!r} split of the given MNIST is empty")
        distinct = len(np.unique(labels))
        if distinct**self.k < self.n:
            raise ValueError(
                f"n={n} items cannot have distinct values: the {split!r} split has only "
                f"{distinct} distinct digit labels, hence {distinct}**k = {distinct**self.k} "
                f"possible {k}-digit values"
            )
        digits = torch.from_numpy(np.ascontiguousarray(images))
        if self.downscale > 1:
            pooled = F.avg_pool2d(digits.unsqueeze(1).float(), self.downscale).squeeze(1)
            digits = pooled.round().to(torch.uint8)
        self.digits = digits.to(self.device)  # (M, h, w) uint8
        self.labels = torch.from_numpy(labels).to(self.device)  # (M,) int64
        self._labels_cpu = torch.from_numpy(labels)
        self._place = 10 ** torch.arange(self.k - 1, -1, -1)  # (k,): 10^(k-1), ..., 1
        self.indices = self._draw(num_sets, torch.Generator().manual_seed(self.seed))
        self._generator = torch.Generator().manual_seed(derived_seed(self.seed, 1))

    @property
    def num_digits(self) -> int:
        """Number of MNIST digits this split draws from."""
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(1, 28/d, 28k/d)``: the shape of one item's image."""
        h, w = self.digits.shape[1:]
        return (1, int(h), int(w) * self.k)

    def _draw(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """Digit indices ``(num, n, k)`` (CPU, int64) with distinct item values within each set.

        Each round redraws the later items of every tie, in row-major order; only sets that had
        a tie in the previous round are checked again (the others cannot have one).
        """
        idx = torch.randint(self.num_digits, (num, self.n, self.k), generator=generator)
        pending = torch.arange(num)
        for _ in range(_MAX_REDRAW_ROUNDS):
            sub = idx[pending]  # (m, n, k)
            values = (self._labels_cpu[sub] * self._place).sum(-1)  # (m, n)
            sorted_values, order = values.sort(dim=1, stable=True)
            later_tied = torch.zeros_like(values, dtype=torch.bool)
            later_tied.scatter_(1, order[:, 1:], sorted_values[:, 1:] == sorted_values[:, :-1])
            count = int(later_tied.sum())
            if count == 0:
                return idx
            sub[later_tied] = torch.randint(self.num_digits, (count, self.k), generator=generator)
            idx[pending] = sub
            pending = pending[later_tied.any(dim=1)]
        raise RuntimeError(
            f"could not draw sets of n={self.n} distinct {self.k}-digit values from the "
            f"{self.split!r} split in {_MAX_REDRAW_ROUNDS} redraw rounds: its digit labels are too "
            f"unevenly distributed for distinct values to be likely (use a smaller n or larger k)"
        )

    def assemble(self, index: torch.Tensor) -> RankingBatch:
        """Build the batch for digit indices ``index`` ``(B, n, k)`` into this split's digits."""
        index = index.to(self.device)
        b = index.shape[0]
        h, w = self.digits.shape[1:]
        # Gathered straight into the output layout (B, n, h, k, w): pixel row r of digit d is
        # row d·h + r of the (M·h, w) table — one gather of the same bytes, instead of gathering
        # (B, n, k, h, w) and copying it again to move k next to w.
        pixel_rows = torch.arange(h, device=index.device).view(1, 1, h, 1)
        rows = index.unsqueeze(2) * h + pixel_rows  # (B, n, h, k)
        images = self.digits.reshape(-1, w).index_select(0, rows.reshape(-1))
        images = images.view(b, self.n, 1, h, self.k * w).to(self.dtype).div_(255)
        values = (self.labels[index] * self._place.to(self.device)).sum(-1)
        ranks = values.argsort(dim=1).argsort(dim=1)
        return RankingBatch(images, values, ranks)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> RankingBatch:
        """``batch_size`` fresh random sets.

        Args:
            batch_size: B.
            generator: a CPU ``torch.Generator``; default: this object's own, seeded from
                ``seed`` (so a run is reproducible from its seed).
        """
        batch_size = check_int("batch_size", batch_size, 1)
        if generator is None:
            generator = self._generator
        elif not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise TypeError(f"generator must be a CPU torch.Generator, got {generator!r}")
        return self.assemble(self._draw(batch_size, generator))

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, key: int | slice | torch.Tensor) -> RankingBatch:
        """Fixed set(s): an int gives one set (no batch dimension), a slice or an index tensor a
        batch."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not -len(self) <= key < len(self):
                raise IndexError(f"set index {key} out of range for {len(self)} sets")
            batch = self.assemble(self.indices[key].unsqueeze(0))
            return RankingBatch(*(t[0] for t in batch))
        if isinstance(key, (slice, torch.Tensor, np.ndarray, list)):
            return self.assemble(self.indices[key])
        raise TypeError(f"index must be an int, slice or index tensor, got {type(key).__name__}")

    def batches(self, batch_size: int) -> Iterator[RankingBatch]:
        """The fixed sets in order, ``batch_size`` at a time (the last batch may be smaller)."""
        batch_size = check_int("batch_size", batch_size, 1)
        for start in range(0, len(self), batch_size):
            yield self.assemble(self.indices[start : start + batch_size])

    def __repr__(self) -> str:
        return (
            f"MultiDigitSets(split={self.split!r}, n={self.n}, k={self.k}, num_sets={len(self)}, "
            f"seed={self.seed}, downscale={self.downscale}, digits={self.num_digits}, "
            f"device={self.device})"
        )
