"""The exact grid solver against scipy's Dijkstra (an independent oracle), grid by grid.

Reference graph: one node per cell plus a virtual source node ``S``; ``S → (0, 0)`` and every
8-neighbour move ``u → v`` weigh ``w(v)``, so Dijkstra's distance from ``S`` is the vertex-weighted
path cost with both ends included, summed in the same left-to-right order as the solver.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from newton_losses.shortest_path import shortest_path

scipy_sparse = pytest.importorskip("scipy.sparse")
csgraph = pytest.importorskip("scipy.sparse.csgraph")

_EDGES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid_edges(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) of all directed 8-neighbour moves, plus the virtual node's two edges."""
    if (height, width) not in _EDGES:
        idx = np.arange(height * width).reshape(height, width)
        src, dst = [], []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == dx == 0:
                    continue
                ys = slice(max(0, -dy), height - max(0, dy))
                xs = slice(max(0, -dx), width - max(0, dx))
                src.append(idx[ys, xs].ravel())
                dst.append(idx[ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx].ravel())
        n = height * width
        # virtual sources: node n → (0, 0), node n + 1 → (H-1, W-1)
        src += [np.array([n, n + 1])]
        dst += [np.array([0, n - 1])]
        _EDGES[(height, width)] = (np.concatenate(src), np.concatenate(dst))
    return _EDGES[(height, width)]


def _dijkstra(w: np.ndarray, extra: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Vertex-weighted distances (both ends included) from the top-left and from the bottom-right
    cell to every cell; the weight of entering v is ``w(v) + extra``."""
    height, width = w.shape
    src, dst = _grid_edges(height, width)
    n = height * width
    weights = w.ravel().astype(np.float64)[dst] + extra
    graph = scipy_sparse.csr_array((weights, (src, dst)), shape=(n + 2, n + 2))
    dist = csgraph.dijkstra(graph, indices=[n, n + 1])
    return dist[0, :n].reshape(height, width), dist[1, :n].reshape(height, width)


def _is_path(mask: np.ndarray) -> bool:
    """mask is one chain of 8-adjacent cells from the top-left to the bottom-right corner."""
    cells = set(zip(*np.nonzero(mask)))
    height, width = mask.shape
    if (0, 0) not in cells or (height - 1, width - 1) not in cells:
        return False
    # BFS inside the mask: a simple chain of n cells has the corners exactly n - 1 hops apart.
    hops, frontier = {(0, 0): 0}, [(0, 0)]
    while frontier:
        nxt = []
        for y, x in frontier:
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    c = (y + dy, x + dx)
                    if c in cells and c not in hops:
                        hops[c] = hops[(y, x)] + 1
                        nxt.append(c)
        frontier = nxt
    return hops.get((height - 1, width - 1)) == len(cells) - 1


def _unique_optimal_cells(w: np.ndarray, d_s: np.ndarray, d_t: np.ndarray, tol: float):
    """The cells of the optimal path if it is unique and all its weights exceed tol, else None.

    Counts optimal paths by dynamic programming over tight edges (|d(u) + w(v) − d(v)| ≤ tol)
    in increasing order of d, restricted to cells on some optimal path.
    """
    best = d_s[-1, -1]
    on_opt = d_s + d_t - w <= best + tol
    if (w[on_opt] <= tol).any():
        return None
    ys, xs = np.nonzero(on_opt)
    order = np.argsort(d_s[ys, xs], kind="stable")
    count: dict[tuple[int, int], int] = {}
    for y, x in zip(ys[order], xs[order]):
        if (y, x) == (0, 0):
            count[(0, 0)] = 1
            continue
        total = 0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                u = (y + dy, x + dx)
                if u in count and abs(d_s[u] + w[y, x] - d_s[y, x]) <= tol:
                    total += count[u]
        count[(y, x)] = total
    height, width = w.shape
    return on_opt if count.get((height - 1, width - 1), 0) == 1 else None


def _check_against_dijkstra(costs: torch.Tensor, exact: bool) -> dict[str, int]:
    result = shortest_path(costs)
    assert result.path.shape == costs.shape and result.cost.shape == costs.shape[:1]
    stats = {"grids": 0, "unique": 0}
    w_all = costs.to(torch.float64).numpy()
    for i, w in enumerate(w_all):
        d_s, d_t = _dijkstra(w)
        best = d_s[-1, -1]
        mask = result.path[i].numpy()
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert _is_path(mask), f"grid {i}: not a chain from corner to corner\n{mask}"
        tol = 0.0 if exact else 1e-5 * max(1.0, best)
        got = float(result.cost[i])
        assert abs(got - best) <= tol, f"grid {i}: cost {got} != Dijkstra {best}"
        assert abs(float((mask * w).sum()) - best) <= max(tol, 1e-9 * max(1.0, best))
        unique = _unique_optimal_cells(w, d_s, d_t, tol=max(tol, 1e-9 * max(1.0, best)))
        stats["grids"] += 1
        if unique is not None:
            stats["unique"] += 1
            np.testing.assert_array_equal(mask.astype(bool), unique, err_msg=f"grid {i}")
    return stats


SIZES = [(1, 1), (1, 6), (6, 1), (2, 2), (3, 7), (12, 12), (18, 18), (30, 30)]


@pytest.mark.parametrize("size", SIZES)
def test_random_float64_costs_match_dijkstra_exactly(size):
    gen = torch.Generator().manual_seed(hash(size) % 2**31)
    n = 400 if size[0] * size[1] <= 144 else 100
    costs = torch.rand((n,) + size, generator=gen, dtype=torch.float64) * 9.0 + 0.2
    stats = _check_against_dijkstra(costs, exact=True)
    # continuous random costs: the optimum is almost surely unique, so the masks are checked
    assert stats["unique"] >= 0.95 * stats["grids"]


@pytest.mark.parametrize("size", [(5, 5), (12, 12), (24, 24)])
def test_float32_costs_match_dijkstra(size):
    gen = torch.Generator().manual_seed(7)
    costs = torch.rand((200,) + size, generator=gen) * 9.0 + 0.8
    _check_against_dijkstra(costs, exact=False)


@pytest.mark.parametrize("size", [(4, 4), (12, 12), (18, 18)])
@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_integer_costs_with_ties_and_zeros(size, dtype):
    """Small integers make many ties and zero-weight plateaus; the cheapest path with the fewest
    cells is returned (checked with a lexicographic Dijkstra: weight w·M + 1, M > #cells)."""
    gen = torch.Generator().manual_seed(size[0])
    costs = torch.randint(0, 4, (300,) + size, generator=gen).to(dtype)
    _check_against_dijkstra(costs, exact=True)
    result = shortest_path(costs)
    big_m = size[0] * size[1] + 1
    for i, w in enumerate(costs.to(torch.float64).numpy()):
        d_lex, _ = _dijkstra(w * big_m, extra=1.0)
        fewest_cells = int(d_lex[-1, -1]) % big_m
        assert int(result.path[i].sum()) == fewest_cells


def test_terrain_like_discrete_costs():
    values = torch.tensor([0.8, 1.2, 5.3, 7.7, 9.2], dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    costs = values[torch.randint(0, 5, (500, 12, 12), generator=gen)]
    stats = _check_against_dijkstra(costs, exact=True)
    assert stats["unique"] >= 0.2 * stats["grids"]  # discrete costs: ties are common


def test_all_zero_costs_give_the_diagonal():
    result = shortest_path(torch.zeros(2, 5, 5))
    torch.testing.assert_close(result.path, torch.eye(5).expand(2, 5, 5))
    torch.testing.assert_close(result.cost, torch.zeros(2))


def test_documented_tie_breaking_rule():
    # 2×3 grid of ones: two 3-cell optima; tracing back from (1, 2), neighbour (−1, −1) = (0, 1)
    # comes first in NEIGHBOUR_OFFSETS order.
    result = shortest_path(torch.ones(1, 2, 3))
    torch.testing.assert_close(result.path[0], torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(result.cost, torch.tensor([3.0]))


def test_absorbed_weights_terminate_with_a_valid_path():
    """Weights below half an ulp of the distance act as zeros in float32 (possible cycles of
    tight edges); the hop counts keep the traceback acyclic."""
    gen = torch.Generator().manual_seed(0)
    costs = torch.where(torch.rand(50, 10, 10, generator=gen) < 0.5, 1e9, 1.0)
    result = shortest_path(costs)
    for i in range(50):
        assert _is_path(result.path[i].numpy())
        d_s, _ = _dijkstra(costs[i].double().numpy())
        assert abs(float(result.cost[i]) - d_s[-1, -1]) <= 1e-6 * d_s[-1, -1]


def test_result_independent_of_batch_composition():
    gen = torch.Generator().manual_seed(1)
    costs = torch.randint(0, 3, (64, 9, 9), generator=gen).float()
    full = shortest_path(costs)
    perm = torch.randperm(64, generator=gen)
    permuted = shortest_path(costs[perm])
    torch.testing.assert_close(permuted.path, full.path[perm], rtol=0, atol=0)
    single = shortest_path(costs[5:6])
    torch.testing.assert_close(single.path[0], full.path[5], rtol=0, atol=0)


def test_does_not_track_gradients_and_keeps_dtype():
    costs = (torch.rand(3, 4, 4, dtype=torch.float64) + 0.1).requires_grad_()
    result = shortest_path(costs)
    assert not result.path.requires_grad and not result.cost.requires_grad
    assert result.path.dtype == torch.float64 and result.cost.dtype == torch.float64


@pytest.mark.parametrize(
    "costs, error, match",
    [
        (np.ones((1, 3, 3)), TypeError, "costs must be a torch.Tensor"),
        (torch.ones(1, 3, 3, dtype=torch.bool), TypeError, "dtype"),
        (torch.ones(3, 3), ValueError, r"shape \(B, H, W\)"),
        (torch.ones(2, 1, 3, 3), ValueError, r"shape \(B, H, W\)"),
        (torch.ones(2, 0, 3), ValueError, "non-empty grid"),
        (torch.ones(0, 3, 0), ValueError, "non-empty grid"),
        (torch.ones(1, 3, 3, device="meta"), ValueError, "meta tensor"),
        (torch.tensor([[[1.0, -1.0], [1.0, 1.0]]]), ValueError, "non-negative"),
        (torch.tensor([[[1.0, float("nan")], [1.0, 1.0]]]), ValueError, "finite"),
        (torch.tensor([[[1.0, float("inf")], [1.0, 1.0]]]), ValueError, "finite"),
    ],
)
def test_input_validation(costs, error, match):
    with pytest.raises(error, match=match):
        shortest_path(costs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.int64])
def test_empty_batch_gives_empty_results(dtype):
    result = shortest_path(torch.ones(0, 4, 5, dtype=dtype))
    computed = dtype if dtype.is_floating_point else torch.float64
    assert result.path.shape == (0, 4, 5) and result.cost.shape == (0,)
    assert result.path.dtype == result.cost.dtype == computed


@pytest.mark.parametrize(
    "dtype, weight",
    [(torch.float16, 30000.0), (torch.float32, 2e38), (torch.float64, 1e308)],
)
def test_path_cost_overflow_is_an_error(dtype, weight):
    """Every cell is finite but the cheapest path (at least 3 cells of a 3×3 grid) is not."""
    costs = torch.full((2, 3, 3), weight, dtype=dtype)
    costs[0] = 1.0  # the first grid is harmless: the error must name grid 1
    # oracle: in exact arithmetic the cheapest cost is 3 × weight, beyond the dtype's maximum
    assert 3 * weight > torch.finfo(dtype).max
    with pytest.raises(ValueError, match=r"overflows .* grid 1 "):
        shortest_path(costs)


def test_costs_just_below_overflow_are_solved_exactly():
    costs = torch.full((1, 3, 3), 20000.0, dtype=torch.float16)
    costs[0, 1, 1] = 1.0  # 20000 + 1 + 20000 rounds in float16, but stays finite
    result = shortest_path(costs)
    d_s, _ = _dijkstra(costs[0].to(torch.float64).numpy())
    assert torch.isfinite(result.cost).all()
    assert abs(float(result.cost[0]) - d_s[-1, -1]) <= 64  # float16 spacing at 40,000 is 32
