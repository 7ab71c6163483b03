"""The exact batched solver for PyEPO's grid shortest path (newton_losses.integrations.pyepo_grid)
against enumeration of every right/down path, its tie rule and argument errors; and that the
PyEPO integration imports without PyEPO and says how to install it. Needs no PyEPO (the
comparison with PyEPO's own OR-Tools solver is in tests/test_pyepo_integration.py)."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import torch

from newton_losses.integrations.pyepo_grid import GridShortestPath, grid_arcs, grid_shortest_path


def all_paths(grid) -> torch.Tensor:
    """(P, d) 0/1 arc vectors of every right/down path, built from move sequences (independent
    of the solver's indexing: arcs are looked up by their (u, v) pair)."""
    h, w = grid
    index = {arc: e for e, arc in enumerate(grid_arcs(grid))}
    paths = []
    for moves in sorted(set(itertools.permutations("R" * (w - 1) + "D" * (h - 1)))):
        y, v = torch.zeros(len(index), dtype=torch.float64), 0
        for move in moves:
            u = v + 1 if move == "R" else v + w
            y[index[(v, u)]] = 1.0
            v = u
        paths.append(y)
    return torch.stack(paths)


def test_arcs_follow_pyepos_construction():
    # For each row: the right arcs, then (except on the last row) the down arcs.
    assert grid_arcs((2, 3)) == [(0, 1), (1, 2), (0, 3), (1, 4), (2, 5), (3, 4), (4, 5)]
    assert len(grid_arcs()) == 40 and len(all_paths((5, 5))) == 70


@pytest.mark.parametrize("grid", [(5, 5), (2, 3), (1, 4), (3, 1), (4, 6)])
def test_dynamic_program_is_the_minimum_over_all_paths(grid):
    Y = all_paths(grid)
    g = torch.Generator().manual_seed(len(Y))
    costs = torch.randn(400, Y.shape[1], generator=g, dtype=torch.float64)  # any sign
    result = grid_shortest_path(costs, grid)
    values = costs @ Y.T
    best = values.min(1).values
    torch.testing.assert_close(result.objective, best, rtol=0, atol=1e-12)
    torch.testing.assert_close((result.solution * costs).sum(1), best, rtol=0, atol=1e-12)
    # every solution is a path, and the argmin path wherever the minimum is unique
    is_path = (result.solution[:, None, :] == Y[None]).all(-1)
    assert bool((is_path.sum(1) == 1).all())
    second = values.sort(1).values[:, 1] if len(Y) > 1 else best + 1.0
    unique = second - best > 1e-9
    assert int(unique.sum()) == len(costs)  # continuous costs: no ties
    assert torch.equal(result.solution[unique], Y[values.argmin(1)][unique])


def test_ties_take_the_arc_from_the_left():
    """All paths tie at zero cost: traced back from the sink, every step takes the left arc, so
    the path goes down the first column, then right along the last row."""
    h, w = 4, 3
    sol = grid_shortest_path(torch.zeros(2, len(grid_arcs((h, w)))), (h, w)).solution
    arcs = grid_arcs((h, w))
    chosen = [arcs[e] for e in sol[0].nonzero().flatten().tolist()]
    expected = [(i * w, (i + 1) * w) for i in range(h - 1)] + [((h - 1) * w + j, (h - 1) * w + j + 1) for j in range(w - 1)]
    assert sorted(chosen) == sorted(expected) and torch.equal(sol[0], sol[1])


def test_integer_valued_costs_with_many_ties_stay_optimal():
    Y = all_paths((5, 5))
    costs = torch.randint(0, 3, (500, 40), generator=torch.Generator().manual_seed(0)).float()
    result = grid_shortest_path(costs)
    assert torch.equal(result.objective, (costs.double() @ Y.T).min(1).values.float())
    assert result.solution.dtype == torch.float32 and torch.equal(result.solution.sum(1), torch.full((500,), 8.0))


def test_solver_object_and_empty_batch():
    solver = GridShortestPath((5, 5))
    c = torch.rand(3, 40)
    assert torch.equal(solver(c), grid_shortest_path(c).solution) and solver.num_cost == 40
    assert solver.solve(torch.zeros(0, 40)).solution.shape == (0, 40)


@pytest.mark.parametrize("costs, error, match", [
    (torch.rand(40), ValueError, r"costs\[None\]"),
    (torch.rand(3, 39), ValueError, r"\(K, 40\)"),
    (torch.ones(3, 40, dtype=torch.long), TypeError, "floating"),
    (torch.full((2, 40), float("nan")), ValueError, "finite"),
    ([[0.0] * 40], TypeError, "torch.as_tensor"),
])
def test_bad_costs(costs, error, match):
    with pytest.raises(error, match=match):
        grid_shortest_path(costs)


@pytest.mark.parametrize("grid, error", [((5,), TypeError), ((0, 5), ValueError), ((1, 1), ValueError),
                                         ((2.0, 3), TypeError), (5, TypeError)])
def test_bad_grid(grid, error):
    with pytest.raises(error, match="grid"):
        GridShortestPath(grid)


def test_missing_pyepo_is_a_clear_import_error(monkeypatch):
    from newton_losses.integrations import pyepo as integration

    monkeypatch.setitem(sys.modules, "pyepo", None)  # `import pyepo` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install pyepo ortools \(or the extra: pip install \"/path/to/newton-losses\[pyepo\]\"\)"):
        integration.require_pyepo()
    with pytest.raises(ImportError, match="newton-losses"):
        integration.PFYLoss(object())


def test_importing_the_integration_does_not_import_pyepo():
    code = ("import sys, json, newton_losses, newton_losses.integrations.pyepo, "
            "newton_losses.integrations.pyepo_grid; print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('pyepo', 'ortools', 'gurobipy', 'pyomo'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == []
