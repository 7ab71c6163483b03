"""The procedural Warcraft-style terrain: determinism, costs, optimal paths (scipy's Dijkstra as
the oracle), pixels that identify the classes, the cache, and the original-format loader."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

from newton_lab.data import terrain as terrain_mod
from newton_lab.data.cache import DataIntegrityError, DataUnavailableError
from newton_lab.data.terrain import (
    TERRAIN_CLASSES,
    TILE,
    generate_terrain,
    load_terrain,
    load_warcraft,
    maps_to_tensor,
)

scipy_sparse = pytest.importorskip("scipy.sparse")
csgraph = pytest.importorskip("scipy.sparse.csgraph")

COSTS = np.array([c.cost for c in TERRAIN_CLASSES], dtype=np.float32)


@pytest.fixture(scope="module")
def maps12():
    return generate_terrain(300, 12, seed=0)


def _dijkstra_cost(w: np.ndarray) -> float:
    """Cheapest top-left → bottom-right vertex-weighted cost (both ends), 8-neighbourhood."""
    height, width = w.shape
    idx = np.arange(height * width).reshape(height, width)
    src, dst = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                ys = slice(max(0, -dy), height - max(0, dy))
                xs = slice(max(0, -dx), width - max(0, dx))
                src.append(idx[ys, xs].ravel())
                dst.append(idx[ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx].ravel())
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = scipy_sparse.csr_array(
        (w.ravel()[dst].astype(np.float64), (src, dst)), shape=(w.size, w.size)
    )
    return float(w[0, 0]) + float(csgraph.dijkstra(graph, indices=0)[-1])


def _is_path(mask: np.ndarray) -> bool:
    """A single 8-connected chain from the top-left to the bottom-right corner."""
    cells = {tuple(c) for c in np.argwhere(mask)}
    end = (mask.shape[0] - 1, mask.shape[1] - 1)
    hops, frontier = {(0, 0): 0}, [(0, 0)] if (0, 0) in cells else []
    while frontier:
        nxt = []
        for y, x in frontier:
            for c in ((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
                if c in cells and c not in hops:
                    hops[c] = hops[(y, x)] + 1
                    nxt.append(c)
        frontier = nxt
    return hops.get(end) == len(cells) - 1


def _check_paths_optimal(data):
    for i in range(len(data)):
        mask = data.paths[i]
        assert _is_path(mask), f"map {i}: not a corner-to-corner chain"
        tenths = np.round(data.weights[i].astype(np.float64) * 10)
        # exact in integers (tenths), and in the stored float32 weights up to rounding
        assert (tenths * mask).sum() == _dijkstra_cost(tenths), f"map {i}: path not optimal"
        assert abs((data.weights[i] * mask).sum() - _dijkstra_cost(data.weights[i])) < 1e-4


def test_shapes_and_dtypes(maps12):
    assert maps12.maps.shape == (300, 96, 96, 3) and maps12.maps.dtype == np.uint8
    assert maps12.weights.shape == (300, 12, 12) and maps12.weights.dtype == np.float32
    assert maps12.paths.shape == (300, 12, 12) and maps12.paths.dtype == np.uint8
    assert maps12.classes.shape == (300, 12, 12) and maps12.classes.dtype == np.uint8
    assert set(np.unique(maps12.paths)) == {0, 1}
    assert len(maps12) == 300 and maps12.grid_shape == (12, 12)


@pytest.mark.parametrize("size", [18, 24, 30, (6, 9)])
def test_other_sizes(size):
    data = generate_terrain(6, size, seed=1)
    h, w = (size, size) if isinstance(size, int) else size
    assert data.maps.shape == (6, h * TILE, w * TILE, 3) and data.paths.shape == (6, h, w)
    _check_paths_optimal(data)


def test_determinism(maps12):
    again = generate_terrain(300, 12, seed=0)
    prefix = generate_terrain(10, 12, seed=0)
    other = generate_terrain(10, 12, seed=1)
    for key in ("maps", "weights", "paths", "classes"):
        np.testing.assert_array_equal(getattr(again, key), getattr(maps12, key))
        np.testing.assert_array_equal(getattr(prefix, key), getattr(maps12, key)[:10])
    assert not np.array_equal(other.classes, maps12.classes[:10])


def test_costs_are_the_classes_costs(maps12):
    np.testing.assert_array_equal(maps12.weights, COSTS[maps12.classes])
    costs = sorted(c.cost for c in TERRAIN_CLASSES)
    assert len(set(costs)) >= 5 and costs[0] >= 0.8 and costs[-1] <= 9.2
    fractions = np.bincount(maps12.classes.ravel(), minlength=len(COSTS)) / maps12.classes.size
    assert (fractions > 0.02).all(), f"every class should occur, got {fractions}"


def test_every_path_is_optimal(maps12):
    _check_paths_optimal(maps12)


def test_regions_are_coherent(maps12):
    c = maps12.classes
    same = np.concatenate([(c[:, 1:] == c[:, :-1]).ravel(), (c[:, :, 1:] == c[:, :, :-1]).ravel()])
    fractions = np.bincount(c.ravel()) / c.size
    chance = (fractions**2).sum()  # for independently drawn tiles
    assert same.mean() > 0.6 > chance + 0.2


def _tile_features(data):
    n, h, w = data.classes.shape
    tiles = (
        data.maps.reshape(n, h, TILE, w, TILE, 3)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(-1, TILE * TILE, 3)
    )
    tiles = tiles.astype(np.float64)
    return np.concatenate([tiles.mean(1), tiles.std(1)], axis=1), data.classes.ravel()


def test_pixels_identify_the_classes_and_tiles_are_not_flat(maps12):
    """A nearest-centroid classifier on per-tile colour mean and spread, fitted on other maps,
    recovers the class of almost every tile; no tile is a flat colour."""
    x_fit, y_fit = _tile_features(generate_terrain(100, 12, seed=9))
    x, y = _tile_features(maps12)
    centroids = np.stack([x_fit[y_fit == c].mean(0) for c in range(len(COSTS))])
    scale = x_fit.std(0)
    pred = np.argmin((((x[:, None] - centroids[None]) / scale) ** 2).sum(-1), axis=1)
    assert (pred == y).mean() > 0.97
    assert x[:, 3:].min() > 3.0, "some tile is (nearly) a flat colour"


def test_maps_to_tensor(maps12):
    t = maps_to_tensor(maps12.maps[:4])
    assert t.shape == (4, 3, 96, 96) and t.dtype == torch.float32
    torch.testing.assert_close(
        t[1, 2, 5, 7], torch.tensor(maps12.maps[1, 5, 7, 2] / 255, dtype=torch.float32)
    )
    images, weights, paths = maps12.tensors(dtype=torch.float64)
    assert images.shape == (300, 3, 96, 96) and weights.dtype == paths.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(N, h, w, 3\)"):
        maps_to_tensor(maps12.maps[0])
    with pytest.raises(TypeError, match="dtype"):
        maps_to_tensor(maps12.maps[:1], dtype=torch.int32)


def test_argument_validation():
    with pytest.raises(ValueError, match="num_maps must be >= 0"):
        generate_terrain(-1)
    with pytest.raises(TypeError, match="num_maps must be an int"):
        generate_terrain(2.0)
    with pytest.raises(ValueError, match="size must be >= 2"):
        generate_terrain(1, 1)
    with pytest.raises(ValueError, match=r"size\[1\] must be >= 2"):
        generate_terrain(1, (5, 1))
    with pytest.raises(ValueError, match=r"\(height, width\)"):
        generate_terrain(1, (5, 5, 5))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        generate_terrain(1, 12, seed=-3)
    with pytest.raises(ValueError, match="split"):
        load_terrain("training")
    assert len(generate_terrain(0, 12)) == 0


# --------------------------------------------------------------------------------------------
# Cached splits


def test_load_terrain_caches_and_splits_differ(tmp_path, monkeypatch):
    val = load_terrain("val", 12, num_maps=40, cache_dir=tmp_path, progress=False)
    test = load_terrain("test", 12, num_maps=40, cache_dir=tmp_path, progress=False)
    assert len(val) == len(test) == 40
    hashes = {m.tobytes() for m in val.maps}
    assert not hashes & {m.tobytes() for m in test.maps}, "a map occurs in two splits"
    _check_paths_optimal(val)

    def no_generation(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(terrain_mod, "generate_terrain", no_generation)
    again = load_terrain("val", 12, num_maps=40, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.maps, val.maps)
    np.testing.assert_array_equal(again.paths, val.paths)


def test_corrupt_terrain_cache_is_regenerated(tmp_path):
    data = load_terrain("test", 12, num_maps=20, cache_dir=tmp_path, progress=False)
    (path,) = (tmp_path / "terrain").iterdir()
    blob = bytearray(path.read_bytes())
    offset = bytes(blob).find(data.maps[3].tobytes()[:64])
    blob[offset + 10] ^= 0x40
    path.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="regenerating"):
        again = load_terrain("test", 12, num_maps=20, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.maps, data.maps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_terrain("test", 12, num_maps=20, cache_dir=tmp_path)  # repaired: no warning


def test_byte_flips_in_the_zip_structure_are_regenerated(tmp_path):
    """Flips in the zip's headers and directory (the end of the file) make zipfile, zlib or
    numpy raise all sorts of exceptions; each must end in a regenerated, correct split."""
    oracle = load_terrain("val", 6, num_maps=3, cache_dir=tmp_path / "fresh", progress=False)
    load_terrain("val", 6, num_maps=3, cache_dir=tmp_path, progress=False)
    (path,) = (tmp_path / "terrain").iterdir()
    good = path.read_bytes()
    for position in [*range(len(good) - 400, len(good), 3), *range(0, 120, 3)]:
        corrupted = bytearray(good)
        corrupted[position] ^= 0xA5
        path.write_bytes(bytes(corrupted))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = load_terrain("val", 6, num_maps=3, cache_dir=tmp_path, progress=False)
        for key in ("maps", "weights", "paths", "classes"):
            np.testing.assert_array_equal(getattr(again, key), getattr(oracle, key), key)


def test_unusable_cache_dir_only_warns(tmp_path, monkeypatch):
    from newton_lab.data.cache import CACHE_ENV_VAR

    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "a_file" / "sub"))
    with pytest.warns(UserWarning, match="could not write the terrain cache"):
        data = load_terrain("val", 6, num_maps=3, progress=False)
    oracle = load_terrain("val", 6, num_maps=3, cache_dir=tmp_path / "fresh", progress=False)
    np.testing.assert_array_equal(data.maps, oracle.maps)
    with warnings.catch_warnings(record=True) as caught:  # a directory name too long to use
        warnings.simplefilter("always")
        data = load_terrain("val", 6, num_maps=3, cache_dir=tmp_path / ("x" * 300))
    messages = " ".join(str(w.message) for w in caught)
    assert "cannot access" in messages and "could not write the terrain cache" in messages
    np.testing.assert_array_equal(data.maps, oracle.maps)


# --------------------------------------------------------------------------------------------
# The original Warcraft files


def _write_original(root, split, data, *, weights_dtype=np.float64, paths_dtype=np.float32):
    np.save(root / f"{split}_maps.npy", data.maps)
    np.save(root / f"{split}_vertex_weights.npy", data.weights.astype(weights_dtype))
    np.save(root / f"{split}_shortest_paths.npy", data.paths.astype(paths_dtype))


@pytest.mark.parametrize("mmap", [False, True])
def test_load_warcraft_original_format(tmp_path, maps12, mmap):
    small = generate_terrain(5, 12, seed=4)
    _write_original(tmp_path, "val", small)
    data = load_warcraft(tmp_path, "val", mmap=mmap)
    np.testing.assert_array_equal(data.maps, small.maps)
    np.testing.assert_array_equal(data.weights, small.weights)
    np.testing.assert_array_equal(data.paths, small.paths)
    assert (
        data.weights.dtype == np.float32 and data.paths.dtype == np.uint8 and data.classes is None
    )
    images, weights, paths = data.tensors()
    assert images.shape == (5, 3, 96, 96)


def test_load_warcraft_errors(tmp_path):
    small = generate_terrain(3, 12, seed=4)
    with pytest.raises(DataUnavailableError, match="train_maps.npy"):
        load_warcraft(tmp_path, "train")
    _write_original(tmp_path, "train", small)
    np.save(tmp_path / "train_shortest_paths.npy", small.paths[:, :11].astype(np.float32))
    with pytest.raises(DataIntegrityError, match="both be"):
        load_warcraft(tmp_path, "train")
    np.save(tmp_path / "train_shortest_paths.npy", small.paths * 2.0)
    with pytest.raises(DataIntegrityError, match="0/1"):
        load_warcraft(tmp_path, "train")
    np.save(tmp_path / "train_shortest_paths.npy", small.paths)
    np.save(tmp_path / "train_maps.npy", small.maps[:, :80])
    with pytest.raises(DataIntegrityError, match="maps must be uint8"):
        load_warcraft(tmp_path, "train")
    np.save(tmp_path / "train_maps.npy", np.array([None, 1], dtype=object))
    with pytest.raises(DataIntegrityError, match="unreadable"):
        load_warcraft(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_warcraft(tmp_path, "dev")


@pytest.mark.slow
def test_default_splits_generate_fast_and_all_test_paths_are_optimal(tmp_path):
    start = time.perf_counter()
    splits = {
        s: load_terrain(s, cache_dir=tmp_path, progress=False) for s in ("train", "val", "test")
    }
    elapsed = time.perf_counter() - start
    assert [len(d) for d in splits.values()] == [10_000, 1_000, 1_000]
    assert elapsed < 60, f"generating and caching took {elapsed:.1f} s"
    _check_paths_optimal(splits["test"])
