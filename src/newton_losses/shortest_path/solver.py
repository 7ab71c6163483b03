"""Exact shortest paths on vertex-weighted grids, batched and vectorized in torch.

The Warcraft shortest-path benchmark (Vlastelica et al., "Differentiation of Blackbox
Combinatorial Solvers", ICLR 2020; Pogančić et al.; PyEPO) asks for the cheapest path from the
top-left to the bottom-right cell of an H×W grid whose cells carry non-negative costs, moving to
any of the 8 neighbours; a path's cost is the sum of the costs of the cells it visits, both ends
included. This module computes that path exactly for a whole batch at once. It is the oracle
behind the labels of the terrain data set and the black-box solver the relaxations are compared
against; it is not differentiable.

Algorithm (parallel Bellman-Ford in the min-plus semiring, then a vectorized traceback):

1. Distances. With ``d(v)`` the cost of the cheapest path from the source ``s`` to ``v``
   (both ends included), ``d`` is the fixed point of

       d(s) = w(s),   d(v) = min( d(v), w(v) + min_{u ∈ N₈(v)} d(u) ),

   iterated from ``d = +inf`` (except ``d(s)``) for all cells and all batch elements at once.
   The 8-neighbour minimum is a 3×3 min-pool (the centre term ``w(v) + d(v) ≥ d(v)`` never wins).
   Every iteration is exact floating-point arithmetic of the form ``d(u) + w(v)``, so the fixed
   point equals the minimum over paths of the left-to-right sums, i.e. exactly what Dijkstra
   computes in the same dtype. It is reached after at most (number of cells on the longest
   shortest path) iterations; the loop stops at the first iteration that changes nothing.
2. Hop counts. An edge ``u → v`` is *tight* when ``d(u) + w(v) == d(v)`` (exact equality: it is
   the same floating-point operation as in step 1). ``h(v)`` is the smallest number of moves of a
   cheapest path to ``v``: ``h(s) = 0``, ``h(v) = 1 + min_{u tight} h(u)``, iterated the same way.
   With zero weights (or weights absorbed by rounding) tight edges can form cycles; following
   tight edges whose hop count decreases cannot.
3. Traceback. ``pred(v)`` is the first neighbour, in the order of :data:`NEIGHBOUR_OFFSETS`, with
   a tight edge into ``v`` and ``h(pred(v)) = h(v) − 1``. The path is followed backward from the
   target for ``h(target)`` steps, all batch elements in lockstep.

Tie breaking (deterministic, independent of device and batch composition): among all cheapest
paths the returned one has the fewest cells; remaining ties are broken backward from the
target, each step taking the first admissible neighbour in :data:`NEIGHBOUR_OFFSETS` order
(row offset, column offset) = (−1,−1), (−1,0), (−1,+1), (0,−1), (0,+1), (+1,−1), (+1,0), (+1,+1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["NEIGHBOUR_OFFSETS", "ShortestPathResult", "shortest_path"]

NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
)
"""Offsets (row, column) from a cell to its predecessor candidates, in tie-breaking order."""


class ShortestPathResult(NamedTuple):
    """Output of :func:`shortest_path`.

    Attributes:
        path: ``(B, H, W)`` 0/1 mask of the cells on the returned cheapest path, in the dtype of
            the costs.
        cost: ``(B,)`` cost of that path, ``Σ_{v on path} w(v)`` (both ends included).
    """

    path: torch.Tensor
    cost: torch.Tensor


def _check_costs(costs: object) -> torch.Tensor:
    if not isinstance(costs, torch.Tensor):
        raise TypeError(
            f"costs must be a torch.Tensor of shape (B, H, W), got {type(costs).__name__}"
        )
    if costs.dtype == torch.bool or costs.is_complex():
        raise TypeError(f"costs must be a real floating or integer tensor, got dtype {costs.dtype}")
    if costs.dim() != 3:
        raise ValueError(
            f"costs must have shape (B, H, W) (a batch of grids), got shape {tuple(costs.shape)}"
        )
    if costs.shape[1] == 0 or costs.shape[2] == 0:
        raise ValueError(
            f"costs must have a non-empty grid (H, W >= 1), got shape {tuple(costs.shape)}"
        )
    if costs.device.type == "meta":
        raise ValueError(
            "costs is a meta tensor (a shape without values); the solver needs actual costs"
        )
    if not costs.is_floating_point():
        # Sums of integers are exact in float64 up to 2**53.
        costs = costs.to(torch.float64)
    if not bool(torch.isfinite(costs).all()):
        raise ValueError("costs must be finite (found NaN or ±Inf)")
    if bool((costs < 0).any()):
        raise ValueError(
            f"costs must be non-negative (shortest paths with negative vertex weights are not "
            f"defined by this solver), got minimum {costs.min().item()}"
        )
    return costs


def _distances(w: torch.Tensor, dp: torch.Tensor) -> None:
    """Fixed point of d(v) = min(d(v), w(v) + min_{N₈(v)} d), written into ``dp``.

    w: (H, W, B); dp: (H+2, W+2, B), +inf on the border, d(s) = w(s) set, +inf elsewhere. The
    batch is the last (contiguous) dimension so that every shifted view is a run of B elements.
    """
    height, width = w.shape[:2]
    d = dp[1:-1, 1:-1]
    row_min = torch.empty((height + 2, width) + w.shape[2:], dtype=w.dtype, device=w.device)
    cand = torch.empty_like(w)
    while True:
        # 3×3 min-pool, separable: along columns, then along rows.
        torch.minimum(dp[:, :-2], dp[:, 1:-1], out=row_min)
        torch.minimum(row_min, dp[:, 2:], out=row_min)
        torch.minimum(row_min[:-2], row_min[1:-1], out=cand)
        torch.minimum(cand, row_min[2:], out=cand)
        cand.add_(w)
        torch.minimum(cand, d, out=cand)
        if torch.equal(cand, d):
            return
        d.copy_(cand)


def _hops(dp: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimal hop counts of cheapest paths, and which neighbours are tight predecessors.

    Returns ``hp`` (H+2, W+2, B) with h in the interior and a large value on the border, and
    ``penalty`` (8, H, W, B): 0 where the edge from neighbour k into the cell is tight, else large.
    """
    height, width = w.shape[:2]
    d = dp[1:-1, 1:-1]
    big = 2 * height * width + 2
    hop_dtype = torch.int16 if 2 * big < torch.iinfo(torch.int16).max else torch.int32
    penalty = torch.empty((len(NEIGHBOUR_OFFSETS),) + w.shape, dtype=hop_dtype, device=w.device)
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        neighbour_d = dp[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        torch.mul(neighbour_d + w != d, big, out=penalty[k])
    penalty[:, 0, 0] = big  # the source starts every path; nothing precedes it
    hp = torch.full(dp.shape, big, dtype=hop_dtype, device=w.device)
    h = hp[1:-1, 1:-1]
    h[0, 0] = 0
    cand = torch.empty(w.shape, dtype=hop_dtype, device=w.device)
    tmp = torch.empty_like(cand)
    while True:
        cand.fill_(big)
        for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
            torch.add(hp[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width], penalty[k], out=tmp)
            torch.minimum(cand, tmp, out=cand)
        cand.add_(1)
        torch.minimum(cand, h, out=cand)
        if torch.equal(cand, h):
            return hp, penalty
        h.copy_(cand)


def shortest_path(costs: torch.Tensor) -> ShortestPathResult:
    """Cheapest top-left → bottom-right path on each grid of a batch, 8-neighbourhood.

    Minimizes ``Σ_{v ∈ path} w(v)`` over paths ``(0, 0) = v₀, v₁, …, v_L = (H−1, W−1)`` with
    ``v_{t+1} ∈ N₈(v_t)``; both end cells' weights count. See the module docstring for the
    algorithm and the tie-breaking rule (fewest cells, then a fixed neighbour order).

    Args:
        costs: ``(B, H, W)`` non-negative finite vertex weights, any device. Floating dtypes are
            computed in their own precision (the optimal cost then equals Dijkstra's in that
            dtype exactly); integer dtypes are computed in float64.

    Returns:
        :class:`ShortestPathResult` with ``path`` ``(B, H, W)`` 0/1 (dtype of the computation)
        and ``cost`` ``(B,)``.

    An empty batch (B = 0) gives empty results, ``path`` ``(0, H, W)`` and ``cost`` ``(0,)``.

    Raises:
        TypeError: ``costs`` is not a real tensor.
        ValueError: wrong number of dimensions, an empty grid (H or W = 0), negative, NaN or
            infinite costs, a meta tensor, or costs so large that a cheapest path's cost
            overflows the dtype (e.g. float16 beyond 65504).

    Example:
        >>> w = torch.tensor([[[1., 9., 1.], [1., 9., 1.], [1., 1., 1.]]])
        >>> res = shortest_path(w)
        >>> res.cost
        tensor([4.])
        >>> res.path[0]
        tensor([[1., 0., 0.],
                [1., 0., 0.],
                [0., 1., 1.]])
    """
    w = _check_costs(costs)
    with torch.no_grad():
        batch, height, width = w.shape
        if batch == 0:
            empty = w.detach().new_zeros
            return ShortestPathResult(empty((0, height, width)), empty((0,)))
        w = w.detach().permute(1, 2, 0).contiguous()  # (H, W, B)
        dp = torch.full(
            (height + 2, width + 2, batch), float("inf"), dtype=w.dtype, device=w.device
        )
        dp[1, 1] = w[0, 0]
        _distances(w, dp)
        cost = dp[-2, -2].clone()
        if not bool(torch.isfinite(cost).all()):
            worst = int(torch.nonzero(~torch.isfinite(cost))[0])
            raise ValueError(
                f"the cheapest path's cost overflows {w.dtype} (maximum "
                f"{torch.finfo(w.dtype).max:.4g}) for grid {worst} of the batch (largest cost "
                f"{w[..., worst].max().item():.4g}); rescale the costs or use a wider dtype"
            )
        hp, penalty = _hops(dp, w)
        h = hp[1:-1, 1:-1]

        # pred_dir: index into NEIGHBOUR_OFFSETS of the first tight neighbour one hop closer;
        # filled from the last direction to the first so that the first admissible one wins.
        h_prev = h - 1
        pred_dir = torch.zeros(w.shape, dtype=torch.uint8, device=w.device)
        for k in reversed(range(len(NEIGHBOUR_OFFSETS))):
            dy, dx = NEIGHBOUR_OFFSETS[k]
            neighbour_h = hp[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            pred_dir = torch.where((penalty[k] == 0) & (neighbour_h == h_prev), k, pred_dir)
        pred_dir = pred_dir.permute(2, 0, 1).reshape(batch, height * width).to(torch.int64)
        offsets = torch.tensor(NEIGHBOUR_OFFSETS, dtype=torch.int64, device=w.device)
        flat_step = offsets[:, 0] * width + offsets[:, 1]

        mask = torch.zeros(batch, height * width, dtype=w.dtype, device=w.device)
        rows = torch.arange(batch, device=w.device)
        cur = torch.full((batch,), height * width - 1, dtype=torch.int64, device=w.device)
        steps = h[-1, -1].to(torch.int64)
        mask[rows, cur] = 1
        for t in range(int(steps.max())):
            prev = cur + flat_step[pred_dir[rows, cur]]
            cur = torch.where(steps > t, prev, cur)
            mask[rows, cur] = 1
        return ShortestPathResult(mask.view(batch, height, width), cost)
