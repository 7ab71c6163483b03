"""Exact batched shortest paths on PyEPO's grid network, in torch (no PyEPO needed).

PyEPO's shortest-path problem (``pyepo.data.shortestpath.genData``, ``pyepo.model.*.
shortestPathModel``) is a minimum-cost path on an ``(h, w)`` grid of *nodes* (5 × 5 in PyEPO's
experiments), from the top-left node ``0`` to the bottom-right node ``h·w − 1``, moving only right
or down; node ``(i, j)`` is ``v = i·w + j``. The decision variables are the arcs, in PyEPO's
order (:func:`grid_arcs`, the same list as ``optModel.arcs``): for each row ``i``, first the
``w − 1`` right arcs ``(v, v + 1)``, then — except on the last row — the ``w`` down arcs
``(v, v + w)``. A 5 × 5 grid has ``d = 2·h·w − h − w = 40`` arcs, and every path has
``h + w − 2 = 8`` of them (``C(8, 4) = 70`` paths). A solution is the 0/1 arc vector ``y ∈ {0,1}^d``
of one path, and the objective is ``⟨c, y⟩``.

PyEPO solves this as a flow LP per instance (one solver call each). The graph is a DAG, so the
optimum is a dynamic program over its anti-diagonals, for the whole batch at once:

    D(0) = 0,   D(v) = min( D(v − 1) + c[right arc into v],  D(v − w) + c[down arc into v] ),

where a term is absent on the first row / column; nodes on one anti-diagonal ``i + j = t`` depend
only on the previous one, so the loop has ``h + w − 2`` steps, each vectorized over the batch
and the diagonal. The path is traced back from the sink in ``h + w − 2`` lockstep steps. The
costs may be negative (perturbed costs ``c + σZ`` are): a DAG has no cycles, so the program is
exact for any finite costs — as is PyEPO's LP, whose constraint matrix is totally unimodular.

Ties: the recursion compares the two candidate distances in the costs' dtype and takes the arc
from the left when they are equal (``≤``), so among equally cheap paths the one returned is,
traced back from the sink, the one that takes the left arc at every tie. PyEPO's solvers break
ties their own way; objective values agree, solutions agree wherever the optimum is unique
(tests/test_pyepo_integration.py checks both against PyEPO's OR-Tools model on every instance
of generated data sets, tests/test_pyepo_grid.py against enumeration of all paths).
"""

from __future__ import annotations

import functools
from typing import Iterable, NamedTuple, cast

import torch

__all__ = ["GridPathResult", "GridShortestPath", "grid_arcs", "grid_shortest_path", "PYEPO_GRID"]

PYEPO_GRID: tuple[int, int] = (5, 5)
"""The grid of PyEPO's shortest-path experiments (nodes per side); 40 arcs."""


class GridPathResult(NamedTuple):
    """Output of :func:`grid_shortest_path`.

    Attributes:
        solution: (K, d) 0/1 arc vector of the returned cheapest path, in PyEPO's arc order and
            the costs' dtype.
        objective: (K,) its cost ``⟨c, y⟩`` (the dynamic program's distance to the sink).
    """

    solution: torch.Tensor
    objective: torch.Tensor


def _check_grid(grid: object) -> tuple[int, int]:
    try:
        dims = tuple(cast(Iterable[object], grid))  # a non-iterable raises TypeError here
    except TypeError:
        raise TypeError(f"grid must be a pair (h, w) of ints, got {grid!r}") from None
    ints = [v for v in dims if isinstance(v, int) and not isinstance(v, bool)]
    if len(dims) != 2 or len(ints) != 2:
        raise TypeError(f"grid must be a pair (h, w) of ints, got {grid!r}")
    h, w = ints
    if h < 1 or w < 1 or h * w < 2:
        raise ValueError(f"grid must have h, w >= 1 and at least 2 nodes, got {grid!r}")
    return int(h), int(w)


@functools.lru_cache(maxsize=None)
def _arcs(h: int, w: int) -> tuple[tuple[int, int], ...]:
    arcs = []
    for i in range(h):
        for j in range(w - 1):
            arcs.append((i * w + j, i * w + j + 1))
        if i == h - 1:
            continue
        for j in range(w):
            arcs.append((i * w + j, (i + 1) * w + j))
    return tuple(arcs)


def grid_arcs(grid: tuple[int, int] = PYEPO_GRID) -> list[tuple[int, int]]:
    """PyEPO's arcs ``(u, v)`` of an ``(h, w)`` grid, in the order of its cost vectors."""
    return list(_arcs(*_check_grid(grid)))


@functools.lru_cache(maxsize=None)
def _plan(h: int, w: int, device: torch.device):
    """Index tensors on ``device``: per node the arc into it from the left and from above and the
    node it comes from (``d`` resp. ``h·w`` — padding columns — where there is none), and the
    nodes of each anti-diagonal."""
    arcs = _arcs(h, w)
    d, n = len(arcs), h * w
    left, up = [d] * n, [d] * n  # d: the padding column (+inf cost)
    for e, (u, v) in enumerate(arcs):
        if v == u + 1:
            left[v] = e
        else:
            up[v] = e
    pred_left = [v - 1 if left[v] < d else n for v in range(n)]
    pred_up = [v - w if up[v] < d else n for v in range(n)]
    diagonals = [[i * w + (t - i) for i in range(h) if 0 <= t - i < w] for t in range(1, h + w - 1)]

    def as_tensor(x):
        return torch.tensor(x, dtype=torch.long, device=device)

    return (as_tensor(left), as_tensor(up), as_tensor(pred_left), as_tensor(pred_up),
            [as_tensor(nodes) for nodes in diagonals])


def _check_costs(costs: object, d: int, grid: tuple[int, int]) -> torch.Tensor:
    if not isinstance(costs, torch.Tensor):
        raise TypeError(
            f"costs must be a torch.Tensor of shape (K, {d}), got {type(costs).__name__} "
            "(numpy costs: torch.as_tensor(costs))"
        )
    if not costs.is_floating_point():
        raise TypeError(f"costs must be a floating-point tensor, got dtype {costs.dtype}")
    if costs.dim() != 2 or costs.shape[1] != d:
        hint = " (one instance: costs[None])" if costs.dim() == 1 and costs.shape[0] == d else ""
        raise ValueError(
            f"costs must have shape (K, {d}) — one cost per arc of the {grid[0]}x{grid[1]} grid, "
            f"in PyEPO's order — got {tuple(costs.shape)}{hint}"
        )
    if costs.numel() and not bool(torch.isfinite(costs).all()):
        raise ValueError("costs must be finite, found NaN or ±Inf")
    return costs


def grid_shortest_path(costs: torch.Tensor, grid: tuple[int, int] = PYEPO_GRID) -> GridPathResult:
    """Exact cheapest right/down paths for a batch of arc costs (see the module docstring).

    Args:
        costs: (K, d) finite floating arc costs in PyEPO's order (any sign; d = 40 for 5 × 5).
        grid: (h, w) nodes per column and row, as PyEPO's ``shortestPathModel(grid)``.

    Returns:
        :class:`GridPathResult`: ``solution`` (K, d) 0/1 in the costs' dtype and ``objective``
        (K,). Not differentiable (use it as the oracle of a perturbed loss).
    """
    h, w = _check_grid(grid)
    d, n = len(_arcs(h, w)), h * w
    c = _check_costs(costs, d, (h, w)).detach()
    K, dev, dt = c.shape[0], c.device, c.dtype
    left_t, up_t, pred_left, pred_up, diagonals = _plan(h, w, dev)
    inf = torch.full((K, 1), float("inf"), dtype=dt, device=dev)
    c_pad = torch.cat([c, inf], dim=1)  # column d: a missing arc
    dist = torch.full((K, n + 1), float("inf"), dtype=dt, device=dev)  # column n: no node
    dist[:, 0] = 0.0
    from_left = torch.zeros((K, n), dtype=torch.bool, device=dev)
    for idx in diagonals:
        via_left = dist[:, pred_left[idx]] + c_pad[:, left_t[idx]]
        via_up = dist[:, pred_up[idx]] + c_pad[:, up_t[idx]]
        take = via_left <= via_up
        dist[:, idx] = torch.where(take, via_left, via_up)
        from_left[:, idx] = take
    solution = torch.zeros((K, d), dtype=dt, device=dev)
    node = torch.full((K,), n - 1, dtype=torch.long, device=dev)
    one = torch.ones((K, 1), dtype=dt, device=dev)
    for _ in range(h + w - 2):
        take = from_left.gather(1, node[:, None]).squeeze(1)
        arc = torch.where(take, left_t[node], up_t[node])
        solution.scatter_(1, arc[:, None], one)
        node = torch.where(take, pred_left[node], pred_up[node])
    return GridPathResult(solution, dist[:, n - 1].clone())


class GridShortestPath:
    """:func:`grid_shortest_path` as a batched solver object for one grid.

    ``solver(costs)`` returns the (K, d) solutions (the oracle a perturbed loss calls on all its
    perturbed costs at once); ``solver.solve(costs)`` the :class:`GridPathResult`.

    Args:
        grid: (h, w), default (5, 5) — PyEPO's experiments.

    Attributes:
        grid: (h, w).
        arcs: the d arcs ``(u, v)`` in PyEPO's order.
        num_cost: d, the number of arcs.
        sense: ``"min"``.
    """

    sense = "min"

    def __init__(self, grid: tuple[int, int] = PYEPO_GRID) -> None:
        self.grid = _check_grid(grid)
        self.arcs = list(_arcs(*self.grid))
        self.num_cost = len(self.arcs)

    def solve(self, costs: torch.Tensor) -> GridPathResult:
        return grid_shortest_path(costs, self.grid)

    def __call__(self, costs: torch.Tensor) -> torch.Tensor:
        return grid_shortest_path(costs, self.grid).solution

    def __repr__(self) -> str:
        return f"GridShortestPath(grid={self.grid})"
