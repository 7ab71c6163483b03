"""A procedural Warcraft-style terrain data set for learning shortest paths from images.

Structure of the Warcraft benchmark (Vlastelica, Paulus et al., "Differentiation of Blackbox
Combinatorial Solvers", ICLR 2020; used by PyEPO and the Newton-losses paper), whose original
files cannot be fetched here:

- an RGB image of H×W terrain tiles of 8×8 pixels (H = W = 12 by default; 18, 24, 30 and other
  sizes ≥ 2 work), channel-last ``(N, 8H, 8W, 3)`` uint8 like the original ``maps.npy``;
- hidden per-tile costs (vertex weights) determined by the terrain class, ``(N, H, W)``;
- the label: the cheapest top-left → bottom-right path, 8-neighbourhood, as a 0/1 mask
  ``(N, H, W)`` (:func:`newton_losses.shortest_path.shortest_path`).

Generation (vectorized over maps, deterministic from a seed):

1. Two smooth random fields per map, elevation e and moisture m: Gaussian noise on coarse grids
   of about H/4 and H/3 cells, bicubically upsampled to H×W and summed (weights 1 and 0.4), then
   standardized per map; e gets a random per-map offset so some maps are wetter than others.
2. Classes from the fields: water where e < −0.9, sand (shore) where −0.9 ≤ e < −0.55,
   mountain where e > 1.0, forest where m > 0.45 elsewhere, grass otherwise; with probability
   0.6 a road (cost 0.8) crosses the map from one edge to the opposite one, overwriting all
   classes (a bridge over water).
3. Pixels: each tile takes one of 16 random variants of its class's 8×8 texture (base colour
   plus a pattern: cobbles, grass blades, sand ripples, tree crowns, rock shading, waves), a
   random brightness factor in [0.9, 1.1] and Gaussian pixel noise. Classes are told apart by
   colour, pattern and noise statistics together, never by a single flat colour.
4. Labels: the shortest path on the costs scaled to integers (tenths), so that equal-cost paths
   tie exactly and the solver's documented tie-breaking rule decides.

The costs lie in the original benchmark's range [0.8, 9.2] (:data:`TERRAIN_CLASSES`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from newton_losses.shortest_path.solver import shortest_path
from newton_lab.data import cache as _cache
from newton_lab.data._util import check_int, derived_seed
from newton_lab.data.cache import DataIntegrityError, DataUnavailableError, load_verified_npz, save_verified_npz

__all__ = [
    "DEFAULT_SPLIT_SIZES",
    "TERRAIN_CLASSES",
    "TILE",
    "TerrainClass",
    "TerrainData",
    "generate_terrain",
    "load_terrain",
    "load_warcraft",
    "maps_to_tensor",
]

TILE = 8
"""Pixels per tile side."""

DEFAULT_SPLIT_SIZES = {"train": 10_000, "val": 1_000, "test": 1_000}
GENERATOR_VERSION = 1  # bump when the generator's output changes: invalidates caches
_CHUNK = 256  # maps per independently seeded chunk (fixed: outputs do not depend on num_maps)
_VARIANTS = 16


class TerrainClass(NamedTuple):
    """One terrain type: its name, hidden cost per tile, and base RGB colour of its texture."""

    name: str
    cost: float
    colour: tuple[int, int, int]


TERRAIN_CLASSES: tuple[TerrainClass, ...] = (
    TerrainClass("road", 0.8, (150, 122, 92)),
    TerrainClass("grass", 1.2, (78, 146, 58)),
    TerrainClass("sand", 2.6, (214, 192, 128)),
    TerrainClass("forest", 5.3, (34, 92, 42)),
    TerrainClass("mountain", 7.7, (128, 120, 112)),
    TerrainClass("water", 9.2, (44, 86, 178)),
)
"""Terrain classes, indexed by class id (the values of :attr:`TerrainData.classes`)."""

ROAD, GRASS, SAND, FOREST, MOUNTAIN, WATER = range(6)
_COSTS_TENTHS = torch.tensor([round(c.cost * 10) for c in TERRAIN_CLASSES])
_NOISE_STD = torch.tensor([9.0, 11.0, 6.0, 9.0, 13.0, 6.0])


@dataclass(frozen=True)
class TerrainData:
    """Terrain maps with their hidden costs and shortest-path labels (numpy, like the originals).

    Attributes:
        maps: ``(N, 8H, 8W, 3)`` uint8 RGB images, channel-last.
        weights: ``(N, H, W)`` float32 vertex weights (costs per tile).
        paths: ``(N, H, W)`` uint8 0/1 masks of the shortest top-left → bottom-right path.
        classes: ``(N, H, W)`` uint8 class ids into :data:`TERRAIN_CLASSES`, or None for data
            read from the original files.
    """

    maps: np.ndarray
    weights: np.ndarray
    paths: np.ndarray
    classes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    @property
    def grid_shape(self) -> tuple[int, int]:
        return (int(self.weights.shape[1]), int(self.weights.shape[2]))

    def tensors(
        self,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images (N, 3, 8H, 8W) in [0, 1], weights (N, H, W), paths (N, H, W))`` as tensors
        of ``dtype`` on ``device``."""
        return (
            maps_to_tensor(self.maps, dtype=dtype, device=device),
            torch.from_numpy(np.ascontiguousarray(self.weights)).to(device=device, dtype=dtype),
            torch.from_numpy(np.ascontiguousarray(self.paths)).to(device=device, dtype=dtype),
        )


def maps_to_tensor(
    maps: np.ndarray | torch.Tensor,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Channel-last uint8 images ``(N, h, w, 3)`` → channel-first ``(N, 3, h, w)`` in [0, 1]."""
    if isinstance(maps, np.ndarray):
        # read-only (memory-mapped) arrays are copied: torch tensors must be writable
        maps = torch.from_numpy(
            np.array(maps) if not maps.flags.writeable else np.ascontiguousarray(maps)
        )
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a numpy array or tensor, got {type(maps).__name__}")
    if maps.dim() != 4 or maps.shape[-1] != 3:
        raise ValueError(f"maps must have shape (N, h, w, 3), got {tuple(maps.shape)}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    out = maps.to(device=device).permute(0, 3, 1, 2).to(dtype)
    return out.div_(255) if maps.dtype == torch.uint8 else out


# --------------------------------------------------------------------------------------------
# Generator


def _smooth_field(n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """(n, H, W) smooth random field, standardized per map."""
    field = torch.zeros(n, 1, height, width)
    side = max(height, width)
    for cells, weight in ((max(2, round(side / 4)), 1.0), (max(3, round(side / 3)), 0.4)):
        coarse = torch.randn(n, 1, cells + 1, cells + 1, generator=gen)
        field += weight * F.interpolate(
            coarse, size=(height, width), mode="bicubic", align_corners=True
        )
    field = field.squeeze(1)
    mean = field.mean(dim=(1, 2), keepdim=True)
    std = field.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    return (field - mean) / std


def _roads(n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """(n, H, W) bool: an 8-connected road from the left to the right edge (rows as a smooth
    function of the column)."""
    ends = torch.rand(n, 2, generator=gen) * (height - 1)
    t = torch.linspace(0, 1, width)
    wiggle = torch.randn(n, 1, 3, generator=gen) * (height / 8)
    wiggle = F.interpolate(wiggle, size=width, mode="linear", align_corners=True).squeeze(1)
    rows = ends[:, :1] + (ends[:, 1:] - ends[:, :1]) * t + wiggle * torch.sin(torch.pi * t)
    rows = rows.round().clamp(0, height - 1).long()  # (n, W)
    nxt = torch.cat([rows[:, 1:], rows[:, -1:]], dim=1)
    toward = nxt - torch.sign(nxt - rows)  # fill the column up to one cell before the next row
    lo, hi = torch.minimum(rows, toward), torch.maximum(rows, toward)
    y = torch.arange(height).view(1, height, 1)
    return (y >= lo.unsqueeze(1)) & (y <= hi.unsqueeze(1))


def _classes(n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """(n, H, W) uint8 class ids from elevation/moisture fields and roads."""
    elevation = _smooth_field(n, height, width, gen) + 0.3 * torch.randn(n, 1, 1, generator=gen)
    moisture = _smooth_field(n, height, width, gen)
    cls = torch.full((n, height, width), GRASS, dtype=torch.uint8)
    cls[moisture > 0.45] = FOREST
    cls[elevation > 1.0] = MOUNTAIN
    cls[elevation < -0.55] = SAND
    cls[elevation < -0.9] = WATER
    has_road = torch.rand(n, generator=gen) < 0.6
    vertical = torch.rand(n, generator=gen) < 0.5
    horizontal_road = _roads(n, height, width, gen)
    vertical_road = _roads(n, width, height, gen).transpose(1, 2)
    road = torch.where(vertical.view(n, 1, 1), vertical_road, horizontal_road)
    cls[road & has_road.view(n, 1, 1)] = ROAD
    return cls


def _texture_bank(gen: torch.Generator) -> torch.Tensor:
    """(classes, variants, 8, 8, 3) float RGB textures, before noise and brightness jitter."""
    v, s = _VARIANTS, TILE
    i = torch.arange(s, dtype=torch.float32).view(1, s, 1)  # row
    j = torch.arange(s, dtype=torch.float32).view(1, 1, s)  # column
    phase = torch.rand(v, 1, 1, generator=gen)
    base = torch.tensor([c.colour for c in TERRAIN_CLASSES], dtype=torch.float32)
    bank = base.view(-1, 1, 1, 1, 3).repeat(1, v, s, s, 1)

    # road: cobblestones, dark mortar lines every 4 px (offset per variant)
    oi, oj = (phase * 4).long(), (torch.rand(v, 1, 1, generator=gen) * 4).long()
    mortar = (
        ((i.long() + oi) % 4 == 0) | ((j.long() + oj + 2 * ((i.long() + oi) // 4)) % 4 == 0)
    ).float()
    bank[ROAD] += -38 * mortar.unsqueeze(-1)

    # grass: scattered dark and light blades
    blades = torch.rand(v, s, s, generator=gen)
    bank[GRASS] += torch.tensor([-25.0, -45.0, -20.0]) * (blades < 0.18).float().unsqueeze(-1)
    bank[GRASS] += torch.tensor([25.0, 35.0, 10.0]) * (blades > 0.9).float().unsqueeze(-1)

    # sand: diagonal ripples
    ripple = torch.sin(2 * torch.pi * (i + 0.5 * j + 4 * phase) / 4)
    bank[SAND] += 16 * ripple.unsqueeze(-1)

    # forest: two round tree crowns with a dark shadow below-right
    centres = torch.rand(v, 2, 2, generator=gen) * 5 + 1.5
    crowns = torch.zeros(v, s, s)
    shadow = torch.zeros(v, s, s)
    for t in range(2):
        cy, cx = centres[:, t, 0].view(v, 1, 1), centres[:, t, 1].view(v, 1, 1)
        crowns = torch.maximum(crowns, ((i - cy) ** 2 + (j - cx) ** 2 < 5.0).float())
        shadow = torch.maximum(shadow, ((i - cy - 1.5) ** 2 + (j - cx - 1.5) ** 2 < 4.0).float())
    bank[FOREST] += torch.tensor([-22.0, -40.0, -25.0]) * (shadow * (1 - crowns)).unsqueeze(-1)
    bank[FOREST] += torch.tensor([18.0, 42.0, 12.0]) * crowns.unsqueeze(-1)

    # mountain: a lit north-west face, a dark south-east face, a light peak
    ridge = (i + j - (6 + 4 * (phase - 0.5))) / 3
    bank[MOUNTAIN] += (-34 * ridge.clamp(-1, 1)).unsqueeze(-1)
    peak = ((i - 2 - 2 * phase) ** 2 + (j - 2 - 2 * phase) ** 2 < 2.5).float()
    bank[MOUNTAIN] += 55 * peak.unsqueeze(-1)

    # water: light wavy lines
    wave = torch.cos(
        2 * torch.pi * (i + 0.8 * torch.sin(2 * torch.pi * (j / 8 + phase)) + 4 * phase) / 4
    )
    bank[WATER] += torch.tensor([22.0, 30.0, 34.0]) * (wave > 0.6).float().unsqueeze(-1)
    return bank


def _render(cls: torch.Tensor, bank: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(n, H, W) classes → (n, 8H, 8W, 3) uint8 images."""
    n, height, width = cls.shape
    c = cls.long()
    variant = torch.randint(_VARIANTS, (n, height, width), generator=gen)
    tiles = bank[c, variant]  # (n, H, W, 8, 8, 3)
    brightness = 0.9 + 0.2 * torch.rand(n, height, width, 1, 1, 1, generator=gen)
    noise = torch.randn(tiles.shape, generator=gen) * _NOISE_STD[c].view(n, height, width, 1, 1, 1)
    pixels = (tiles * brightness + noise).round_().clamp_(0, 255).to(torch.uint8)
    return pixels.permute(0, 1, 3, 2, 4, 5).reshape(n, height * TILE, width * TILE, 3)


def _generate_chunk(n: int, height: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    cls = _classes(n, height, width, gen)
    # a fresh bank per chunk: textures vary across the data set, not only across 16 variants
    maps = _render(cls, _texture_bank(gen), gen)
    tenths = _COSTS_TENTHS[cls.long()]
    paths = shortest_path(tenths).path.to(torch.uint8)
    weights = (tenths.to(torch.float64) / 10).to(torch.float32)
    return {"maps": maps, "classes": cls, "weights": weights, "paths": paths}


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` (H = W) or ``(H, W)``, each an int >= 2."""
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return check_int("size[0]", size[0], 2), check_int("size[1]", size[1], 2)
    if isinstance(size, (tuple, list)):
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    side = check_int("size", size, 2)
    return side, side


def generate_terrain(
    num_maps: int,
    size: int | tuple[int, int] = 12,
    seed: int = 0,
    *,
    progress: bool = False,
) -> TerrainData:
    """Generate ``num_maps`` terrain maps of ``size`` tiles (see the module docstring).

    Deterministic: map i depends only on (seed, size, i) — the first maps of a larger call equal
    a smaller call's. About 10,000 12×12 maps per few seconds on one CPU core.

    Args:
        num_maps: N ≥ 0.
        size: H = W, or (H, W); each ≥ 2 (12, 18, 24, 30 are the benchmark's sizes).
        seed: a non-negative int.
        progress: show a tqdm progress bar (if tqdm is installed).

    Returns:
        :class:`TerrainData` with ``maps (N, 8H, 8W, 3)`` uint8, ``weights (N, H, W)`` float32,
        ``paths (N, H, W)`` uint8 and ``classes (N, H, W)`` uint8.
    """
    num_maps = check_int("num_maps", num_maps, 0)
    seed = check_int("seed", seed, 0)
    height, width = _check_size(size)
    starts = range(0, int(num_maps), _CHUNK)
    if progress:
        try:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"terrain {height}x{width}", unit="chunk")
        except ImportError:
            pass
    # Whole chunks only (the last one truncated): map i then depends on (seed, size, i) alone.
    chunks = [
        {
            key: value[: num_maps - start]
            for key, value in _generate_chunk(
                _CHUNK, height, width, derived_seed(seed, height, width, start // _CHUNK)
            ).items()
        }
        for start in starts
    ]
    if not chunks:
        chunks = [{k: v[:0] for k, v in _generate_chunk(1, height, width, 0).items()}]
    out = {k: torch.cat([c[k] for c in chunks]).numpy() for k in chunks[0]}
    return TerrainData(out["maps"], out["weights"], out["paths"], out["classes"])


# --------------------------------------------------------------------------------------------
# Cached splits and the original files


_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def _check_terrain(arrays: dict[str, np.ndarray]) -> None:
    maps, weights, paths = arrays["maps"], arrays["weights"], arrays["paths"]
    n, height, width = weights.shape
    if maps.shape != (n, height * TILE, width * TILE, 3) or maps.dtype != np.uint8:
        raise ValueError(
            f"maps must be uint8 {(n, height * TILE, width * TILE, 3)}, "
            f"got {maps.dtype} {maps.shape}"
        )
    if paths.shape != weights.shape:
        raise ValueError(f"paths shape {paths.shape} != weights shape {weights.shape}")
    if "classes" in arrays:
        costs = np.array([c.cost for c in TERRAIN_CLASSES], dtype=np.float32)
        if not np.array_equal(costs[arrays["classes"]], weights):
            raise ValueError("weights do not match the classes' costs")


def load_terrain(
    split: str = "train",
    size: int | tuple[int, int] = 12,
    *,
    seed: int = 0,
    num_maps: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> TerrainData:
    """One split of the procedural terrain data set, generated once and then read from the cache.

    Splits are generated from independent seed streams of ``seed`` (train 10,000, val 1,000,
    test 1,000 maps by default). The cache file
    ``<cache_dir>/terrain/terrain-v{version}-{H}x{W}-seed{seed}-{split}-{N}.npz`` is verified
    on load; a corrupt or stale one is regenerated.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: H = W, or (H, W).
        seed: data set seed.
        num_maps: number of maps (default :data:`DEFAULT_SPLIT_SIZES`).
        cache_dir: cache directory (default ``$NEWTON_LOSSES_CACHE`` or ``~/.cache/newton_losses``).
        progress: tqdm progress bar while generating.
    """
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split must be one of {tuple(_SPLIT_STREAM)}, got {split!r}")
    height, width = _check_size(size)
    num_maps = check_int(
        "num_maps", DEFAULT_SPLIT_SIZES[split] if num_maps is None else num_maps, 0
    )
    seed = check_int("seed", seed, 0)
    meta = {
        "dataset": "terrain", "version": GENERATOR_VERSION, "size": [height, width],
        "seed": int(seed), "split": split, "num_maps": int(num_maps),
    }  # fmt: skip
    name = f"terrain-v{GENERATOR_VERSION}-{height}x{width}-seed{seed}-{split}-{num_maps}.npz"
    path = _cache.cache_dir(cache_dir) / "terrain" / name
    try:
        arrays, _ = load_verified_npz(path, meta, check=_check_terrain)
        return TerrainData(arrays["maps"], arrays["weights"], arrays["paths"], arrays["classes"])
    except FileNotFoundError:
        pass
    except DataIntegrityError as exc:
        warnings.warn(f"terrain cache not used ({exc}); regenerating it", stacklevel=2)
    split_seed = derived_seed(int(seed), _SPLIT_STREAM[split])
    data = generate_terrain(num_maps, (height, width), split_seed, progress=progress)
    arrays = {
        "maps": data.maps,
        "weights": data.weights,
        "paths": data.paths,
        "classes": data.classes,
    }
    try:
        save_verified_npz(path, arrays, meta)
    except OSError as exc:
        warnings.warn(f"could not write the terrain cache {path}: {exc}", stacklevel=2)
    return data


def load_warcraft(
    root: str | os.PathLike, split: str = "train", *, mmap: bool = False
) -> TerrainData:
    """Read the original Warcraft shortest-path files of one split.

    Expects ``{split}_maps.npy`` ``(N, 8H, 8W, 3)`` uint8, ``{split}_vertex_weights.npy``
    ``(N, H, W)`` and ``{split}_shortest_paths.npy`` ``(N, H, W)`` 0/1 in ``root`` (e.g. the
    data set's ``12x12/`` folder). Weights are returned as float32, paths as uint8; the class
    ids are unknown (``classes=None``). Arrays are read with ``allow_pickle=False``.

    Args:
        root: folder holding the files.
        split: ``"train"``, ``"val"`` or ``"test"``.
        mmap: memory-map the maps instead of reading them (large train sets).

    Raises:
        DataUnavailableError: a file is missing.
        DataIntegrityError: shapes, dtypes or values do not fit the format above.
    """
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split must be one of {tuple(_SPLIT_STREAM)}, got {split!r}")
    root = Path(root)
    files = {
        key: root / f"{split}_{key}.npy" for key in ("maps", "vertex_weights", "shortest_paths")
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataUnavailableError(f"missing Warcraft files: {', '.join(missing)}")
    try:
        maps = np.load(files["maps"], allow_pickle=False, mmap_mode="r" if mmap else None)
        weights = np.load(files["vertex_weights"], allow_pickle=False)
        paths = np.load(files["shortest_paths"], allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataIntegrityError(f"{root}: unreadable .npy file ({exc})") from exc
    if weights.ndim != 3 or paths.shape != weights.shape:
        raise DataIntegrityError(
            f"{root}: vertex_weights {weights.shape} and shortest_paths {paths.shape} "
            "must both be (N, H, W)"
        )
    if maps.dtype != np.uint8:
        raise DataIntegrityError(f"{root}: maps must be uint8, got {maps.dtype}")
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise DataIntegrityError(f"{root}: vertex weights must be finite and non-negative")
    if not np.isin(paths, (0, 1)).all():
        raise DataIntegrityError(f"{root}: shortest paths must be 0/1 masks")
    arrays = {"maps": maps, "weights": weights.astype(np.float32), "paths": paths.astype(np.uint8)}
    try:
        _check_terrain(arrays)
    except ValueError as exc:
        raise DataIntegrityError(f"{root}: {exc}") from exc
    return TerrainData(arrays["maps"], arrays["weights"], arrays["paths"], None)
