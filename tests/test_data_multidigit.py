"""Multi-digit ranking sets on a synthetic MNIST whose every digit image encodes its own index,
so that each item of a batch can be traced back to the digits it was built from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from newton_lab.data import MNIST, MultiDigitSets

N_TRAIN, N_TEST = 1200, 300  # → train 1100, val 100, test 300 digits


def _encoded_mnist() -> MNIST:
    """Digit g (train: g, test: N_TRAIN + g) has pixel (0, 0..1) = g in base 250 and a label."""
    rng = np.random.default_rng(1)

    def images(start, count):
        x = np.zeros((count, 28, 28), np.uint8)
        g = np.arange(start, start + count)
        x[:, 0, 0], x[:, 0, 1] = g // 250, g % 250
        x[:, 5:20, 10:14] = rng.integers(0, 256, (count, 15, 4))  # some stroke-like content
        return x

    return MNIST(
        train_images=images(0, N_TRAIN),
        train_labels=rng.integers(0, 10, N_TRAIN).astype(np.uint8),
        test_images=images(N_TRAIN, N_TEST),
        test_labels=rng.integers(0, 10, N_TEST).astype(np.uint8),
    )


MNIST_DATA = _encoded_mnist()
ALL_LABELS = np.concatenate([MNIST_DATA.train_labels, MNIST_DATA.test_labels]).astype(np.int64)


def _decode(images: torch.Tensor, k: int) -> np.ndarray:
    """Global digit ids (B, n, k) read from the item images (B, n, 1, 28, 28k)."""
    px = (images[..., 0, 0, :] * 255).round().long().numpy()  # (B, n, 28k): top rows
    ids = [px[..., 28 * j] * 250 + px[..., 28 * j + 1] for j in range(k)]
    return np.stack(ids, axis=-1)


def _check_batch(batch, k, allowed: range):
    ids = _decode(batch.images, k)
    assert ids.min() >= allowed.start and ids.max() < allowed.stop, "digit from another split"
    # value = the k-digit number spelled by the digits' labels (independent recomputation)
    expected = (ALL_LABELS[ids] * 10 ** np.arange(k - 1, -1, -1)).sum(-1)
    np.testing.assert_array_equal(batch.values.numpy(), expected)
    values = batch.values.numpy()
    for v, r in zip(values, batch.ranks.numpy()):
        assert len(set(v)) == len(v), "tied values in a set"
        assert sorted(r) == list(range(len(v)))
        np.testing.assert_array_equal(np.sort(v)[r], v)  # rank = position in ascending order
        perm = np.zeros((len(v), len(v)))
        perm[r, np.arange(len(v))] = 1
        assert np.all(np.diff(perm @ v) > 0)  # P[rank_i, i] = 1 sorts ascending


@pytest.mark.parametrize(
    "split, allowed",
    [("train", range(0, 1100)), ("val", range(1100, 1200)), ("test", range(1200, 1500))],
)
@pytest.mark.parametrize("n, k", [(5, 4), (10, 4), (3, 2)])
def test_values_ranks_and_disjoint_splits(split, allowed, n, k):
    ds = MultiDigitSets(split, n=n, k=k, num_sets=64, seed=3, mnist=MNIST_DATA)
    assert ds.num_digits == len(allowed)
    batch = ds.sample(50)
    assert batch.images.shape == (50, n, 1, 28, 28 * k) and batch.images.dtype == torch.float32
    assert batch.values.shape == batch.ranks.shape == (50, n)
    assert batch.values.dtype == batch.ranks.dtype == torch.int64
    assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    _check_batch(batch, k, allowed)
    _check_batch(ds[:], k, allowed)


def test_items_are_the_digits_side_by_side():
    ds = MultiDigitSets("test", n=4, k=3, num_sets=5, mnist=MNIST_DATA)
    batch = ds[0:2]
    for b in range(2):
        for i in range(4):
            for j in range(3):
                digit = MNIST_DATA.test_images[int(ds.indices[b, i, j])]
                got = batch.images[b, i, 0, :, 28 * j : 28 * (j + 1)]
                torch.testing.assert_close(got, torch.from_numpy(digit).float() / 255)


@pytest.mark.parametrize("downscale, k, dtype", [(1, 3, torch.float32), (2, 4, torch.float32),
                                                (2, 1, torch.float64), (4, 2, torch.float32)])
def test_batches_are_bit_identical_to_gathering_whole_digits_and_permuting(downscale, k, dtype):
    # assemble() gathers pixel rows straight into the output layout; the plain formulation —
    # gather (B, n, k, h, w), move k next to w, convert — must give the same bits, so runs
    # made before and after the change train on identical inputs.
    ds = MultiDigitSets("train", n=6, k=k, num_sets=9, seed=3, downscale=downscale,
                        mnist=MNIST_DATA, dtype=dtype)
    h, w = ds.digits.shape[1:]
    for index in (ds.indices, ds._draw(7, torch.Generator().manual_seed(5))):
        plain = ds.digits[index].permute(0, 1, 3, 2, 4).reshape(len(index), 6, 1, h, k * w)
        assert torch.equal(ds.assemble(index).images, plain.to(dtype).div_(255))


def test_ties_are_impossible_even_when_likely():
    ds = MultiDigitSets("train", n=10, k=1, num_sets=200, mnist=MNIST_DATA)
    for batch in (ds[:], ds.sample(300)):
        assert (batch.values.sort(dim=1).values == torch.arange(10)).all()
        _check_batch(batch, 1, range(0, 1100))
    with pytest.raises(ValueError, match="distinct"):
        MultiDigitSets("train", n=11, k=1, mnist=MNIST_DATA)


def test_determinism():
    a = MultiDigitSets("val", n=5, num_sets=20, seed=11, mnist=MNIST_DATA)
    b = MultiDigitSets("val", n=5, num_sets=20, seed=11, mnist=MNIST_DATA)
    c = MultiDigitSets("val", n=5, num_sets=20, seed=12, mnist=MNIST_DATA)
    torch.testing.assert_close(a[:].images, b[:].images)
    torch.testing.assert_close(a.sample(8).values, b.sample(8).values)
    torch.testing.assert_close(a.sample(8).values, b.sample(8).values)  # same sequence
    assert not torch.equal(a[:].values, c[:].values)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(a.sample(4, g1).images, c.sample(4, g2).images)
    # the fixed collection is a prefix-independent function of the seed, not of the global RNG
    torch.manual_seed(123)
    d = MultiDigitSets("val", n=5, num_sets=20, seed=11, mnist=MNIST_DATA)
    torch.testing.assert_close(d[:].values, a[:].values)


def test_indexing_and_batches():
    ds = MultiDigitSets("test", n=5, num_sets=10, mnist=MNIST_DATA)
    single = ds[3]
    assert single.images.shape == (5, 1, 28, 112) and single.values.shape == (5,)
    torch.testing.assert_close(single.values, ds[3:4].values[0])
    torch.testing.assert_close(ds[-1].values, ds[9].values)
    torch.testing.assert_close(ds[torch.tensor([1, 3])].values, ds[:].values[[1, 3]])
    chunks = list(ds.batches(4))
    assert [len(c.values) for c in chunks] == [4, 4, 2]
    torch.testing.assert_close(torch.cat([c.values for c in chunks]), ds[:].values)
    assert len(ds) == 10
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(TypeError, match="index"):
        ds["a"]


def test_downscale_and_dtype():
    full = MultiDigitSets("test", n=5, k=4, num_sets=6, seed=2, mnist=MNIST_DATA)
    small = MultiDigitSets(
        "test", n=5, k=4, num_sets=6, seed=2, downscale=2, mnist=MNIST_DATA, dtype=torch.float64
    )
    assert small.image_shape == (1, 14, 56)
    b_full, b_small = full[:], small[:]
    assert b_small.images.shape == (6, 5, 1, 14, 56) and b_small.images.dtype == torch.float64
    torch.testing.assert_close(b_small.values, b_full.values)
    pooled = F.avg_pool2d(b_full.images.double().flatten(0, 1), 2).view_as(b_small.images)
    torch.testing.assert_close(b_small.images, pooled, atol=0.501 / 255, rtol=0)  # uint8 rounding


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"split": "validation"}, ValueError, "split must be one of"),
        ({"n": 0}, ValueError, "n must be >= 1"),
        ({"n": 2.5}, TypeError, "n must be an int"),
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"downscale": 3}, ValueError, "downscale must divide 28"),
        ({"num_sets": -1}, ValueError, "num_sets"),
        ({"dtype": torch.int64}, TypeError, "dtype"),
        ({"mnist": "mnist"}, TypeError, "mnist must be"),
    ],
)
def test_argument_validation(kwargs, error, match):
    args = {"split": "train", "mnist": MNIST_DATA} | kwargs
    with pytest.raises(error, match=match):
        MultiDigitSets(**args)


def test_sample_argument_validation():
    ds = MultiDigitSets("train", n=3, num_sets=1, mnist=MNIST_DATA)
    with pytest.raises(ValueError, match="batch_size"):
        ds.sample(0)
    with pytest.raises(TypeError, match="generator"):
        ds.sample(2, generator=np.random.default_rng(0))


def _mnist_with_labels(train_labels, test_labels=(0, 1, 2)) -> MNIST:
    train_labels = np.asarray(train_labels, np.uint8)
    test_labels = np.asarray(test_labels, np.uint8)
    return MNIST(
        train_images=np.zeros((len(train_labels), 28, 28), np.uint8),
        train_labels=train_labels,
        test_images=np.zeros((len(test_labels), 28, 28), np.uint8),
        test_labels=test_labels,
    )


def test_eighteen_digits_are_exact_and_nineteen_are_rejected():
    ds = MultiDigitSets("train", n=4, k=18, num_sets=5, seed=1, mnist=MNIST_DATA)
    batch = ds[:]
    ids = _decode(batch.images, 18)
    # oracle: Python's arbitrary-precision integers, no int64 arithmetic
    expected = [[int("".join(str(ALL_LABELS[g]) for g in item)) for item in s] for s in ids]
    assert batch.values.tolist() == expected
    assert max(max(s) for s in expected) >= 10**17  # all 18 digits count
    with pytest.raises(ValueError, match="k must be <= 18"):
        MultiDigitSets("train", n=2, k=19, num_sets=1, mnist=MNIST_DATA)


@pytest.mark.timeout(30)  # the unchecked rejection sampling never ended here
def test_impossible_distinct_draw_is_rejected_up_front():
    two_labels = _mnist_with_labels([0, 1] * 60)
    with pytest.raises(ValueError, match="only 2 distinct digit labels"):
        MultiDigitSets("train", n=3, k=1, num_sets=2, mnist=two_labels)
    # the boundary n = L**k is possible: every set holds all four values 00, 01, 10, 11
    ds = MultiDigitSets("train", n=4, k=2, num_sets=20, mnist=two_labels)
    assert all(sorted(v) == [0, 1, 10, 11] for v in ds[:].values.tolist())


@pytest.mark.timeout(30)
def test_redraws_are_capped(monkeypatch):
    from newton_lab.data import multidigit

    # one digit 9 among 1,100: a set of ten distinct 1-digit values needs it in every set
    labels = np.arange(1200) % 9
    labels[5] = 9
    skewed = _mnist_with_labels(labels)
    monkeypatch.setattr(multidigit, "_MAX_REDRAW_ROUNDS", 5)
    with pytest.raises(RuntimeError, match="5 redraw rounds"):
        MultiDigitSets("train", n=10, k=1, num_sets=50, mnist=skewed)
