"""Shortest paths on vertex-weighted grids (the Warcraft benchmark's combinatorial problem).

- :mod:`.solver`: the exact, batched, non-differentiable solver (labels, black-box oracle).
"""

from .solver import NEIGHBOUR_OFFSETS, ShortestPathResult, shortest_path

__all__ = ["NEIGHBOUR_OFFSETS", "ShortestPathResult", "shortest_path"]
