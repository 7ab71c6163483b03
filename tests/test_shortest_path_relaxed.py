"""Relaxed Bellman-Ford against the exact solver, autograd and finite differences.

Oracles: the exact solver (itself checked against scipy's Dijkstra), the bound
``d_exact − (hops)·log(8)/β ≤ d_β ≤ d_exact`` that the softmin satisfies, autograd's gradient of
the relaxed distance (the soft path is ∂d(t)/∂w at a fixed point), and torch's gradcheck /
gradgradcheck (finite differences) in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from newton_losses.shortest_path import (
    RelaxedBellmanFord,
    RelaxedShortestPathLoss,
    path_loss,
    relaxed_shortest_path,
    shortest_path,
)


def uniform_costs(batch, height, width, seed=0, low=0.8, high=9.2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, generator=g, dtype=dtype) * (high - low) + low


@pytest.mark.parametrize("mode", ["for", "while"])
def test_tends_to_exact_distances_and_path(mode):
    costs = uniform_costs(12, 8, 9)
    exact = shortest_path(costs)
    hops = exact.path.flatten(1).sum(1) - 1
    errors = []
    for beta in (3.0, 30.0, 300.0, 3000.0):
        res = relaxed_shortest_path(costs, beta, mode=mode)
        assert bool(res.converged.all())
        d_t = res.distances[:, -1, -1]
        # softmin ≤ min, softmin ≥ min − log(8)/β  ⇒  the sandwich, up to rounding
        assert bool((d_t <= exact.cost + 1e-9).all())
        assert bool((d_t >= exact.cost - hops * math.log(8) / beta - 1e-9).all())
        errors.append(float((res.path - exact.path).abs().max()))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-6


def test_for_and_while_agree_once_converged():
    costs = uniform_costs(6, 7, 7, seed=1)
    a = relaxed_shortest_path(costs, 5.0, mode="for", n_iter=120)
    b = relaxed_shortest_path(costs, 5.0, mode="while", tol=1e-13)
    assert bool(b.converged.all()) and b.n_iter < 120
    torch.testing.assert_close(a.distances, b.distances, rtol=0, atol=1e-10)
    torch.testing.assert_close(a.path, b.path, rtol=0, atol=1e-9)


def test_soft_path_is_gradient_of_relaxed_distance():
    """At a fixed point the traceback's visit counts equal ∂d(t)/∂w (implicit function theorem)."""
    w = uniform_costs(3, 6, 7, seed=2).requires_grad_(True)
    res = relaxed_shortest_path(w, 2.0, mode="while", tol=1e-14, max_iter=2000)
    assert bool(res.converged.all())
    (grad,) = torch.autograd.grad(res.distances[:, -1, -1].sum(), w)
    torch.testing.assert_close(res.path.detach(), grad, rtol=0, atol=1e-10)


def test_predecessors_are_distributions():
    res = relaxed_shortest_path(uniform_costs(2, 4, 5, seed=3), 1.5)
    sums = res.predecessors.sum(1)
    assert sums[:, 0, 0].abs().max() == 0  # the source has no predecessor
    rest = sums.flatten(1)[:, 1:]
    torch.testing.assert_close(rest, torch.ones_like(rest))
    assert float(res.predecessors[:, :3, 0, :].abs().max()) == 0  # no row −1 at the top
    assert bool((res.path >= 0).all())


@pytest.mark.parametrize("mode", ["for", "while"])
def test_gradcheck_and_gradgradcheck_float64(mode):
    costs = uniform_costs(2, 3, 4, seed=4, low=0.5, high=3.0).requires_grad_(True)
    kw = {"n_iter": 5} if mode == "for" else {"tol": 1e-13}

    def f(w):
        return relaxed_shortest_path(w, 1.5, mode=mode, **kw).path

    assert torch.autograd.gradcheck(f, (costs,))
    assert torch.autograd.gradgradcheck(f, (costs,))


@pytest.mark.parametrize("kind", ["l1", "l2", "smooth_l1"])
def test_loss_gradgradcheck_float64(kind):
    costs = uniform_costs(2, 3, 3, seed=5, low=0.5, high=3.0).requires_grad_(True)
    target = shortest_path(uniform_costs(2, 3, 3, seed=6)).path
    loss = RelaxedShortestPathLoss(2.0, kind, n_iter=4)
    assert torch.autograd.gradgradcheck(lambda w: loss(w, target), (costs,))


def test_while_is_batch_independent():
    costs = uniform_costs(5, 6, 6, seed=7)
    costs[2] *= 0.3  # a sample that needs more iterations than the others
    together = relaxed_shortest_path(costs, 3.0, mode="while")
    for i in range(5):
        alone = relaxed_shortest_path(costs[i : i + 1], 3.0, mode="while")
        assert torch.equal(alone.path[0], together.path[i])
        assert torch.equal(alone.distances[0], together.distances[i])


def test_while_reports_non_convergence_at_the_cap():
    # β · min w < log 8: the softmin mass circulates and the distances keep decreasing.
    costs = torch.full((1, 4, 4), 0.01, dtype=torch.float64)
    res = relaxed_shortest_path(costs, 1.0, mode="while", max_iter=50)
    assert res.n_iter == 50 and not bool(res.converged.any())
    assert bool(torch.isfinite(res.path).all())


def test_float32_and_module_forms():
    costs = uniform_costs(3, 5, 5, seed=8, dtype=torch.float32)
    module = RelaxedBellmanFord(20.0, mode="while")
    path = module(costs)
    assert path.dtype == torch.float32 and path.shape == costs.shape
    assert module.last_result is not None and bool(module.last_result.converged.all())
    ref = relaxed_shortest_path(costs.double(), 20.0, mode="while").path
    torch.testing.assert_close(path.double(), ref, rtol=0, atol=1e-4)
    loss = RelaxedShortestPathLoss(20.0, "l1")
    target = shortest_path(costs).path
    torch.testing.assert_close(loss(costs, target), path_loss(loss.inner(costs), target, "l1"))


def test_path_loss_derivatives_match_autograd():
    g = torch.Generator().manual_seed(9)
    pred = torch.rand(3, 4, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    target = (torch.rand(3, 4, 4, generator=g, dtype=torch.float64) > 0.5).double()
    from newton_losses.shortest_path import PathLoss

    for kind in ("l1", "l2", "smooth_l1"):
        pl = PathLoss(kind, delta=0.2)
        (grad,) = torch.autograd.grad(pl(pred, target).sum(), pred, create_graph=True)
        (diag,) = torch.autograd.grad(grad.sum(), pred)  # separable: the Hessian's diagonal
        g_ref, h_ref = pl.derivatives(pred.detach(), target)
        torch.testing.assert_close(grad.detach().flatten(1), g_ref)
        torch.testing.assert_close(diag.flatten(1), h_ref)


def test_composite_refuses_l1():
    with pytest.raises(ValueError, match="smooth_l1"):
        RelaxedShortestPathLoss(5.0, "l1").composite()
    comp = RelaxedShortestPathLoss(5.0, "l2").composite()
    costs = uniform_costs(2, 4, 4)
    target = shortest_path(costs).path
    torch.testing.assert_close(comp(costs, target), RelaxedShortestPathLoss(5.0, "l2")(costs, target))


def snake_costs(n=7, wall=1000.0):
    """Free cells cost 1; rows 1, 3, 5 are walls with a gap alternately at the right and left end,
    so the cheapest path snakes through the grid (many more cells than H + W + 1)."""
    w = torch.ones(n, n, dtype=torch.float64)
    for k, r in enumerate(range(1, n - 1, 2)):
        w[r] = wall
        w[r, n - 1 if k % 2 == 0 else 0] = 1.0
    return w.unsqueeze(0)


def test_for_loop_warns_when_not_converged_and_exposes_converged():
    import warnings

    from newton_losses.shortest_path import RelaxedShortestPathLoss, relaxed_shortest_path, shortest_path

    w = snake_costs()
    exact = shortest_path(w).path
    assert int(exact.sum()) > 7 + 7 + 1  # oracle: the exact path is longer than n_iter + 1 cells
    with pytest.warns(RuntimeWarning, match=r"did not converge.*n_iter.*mode='while'"):
        res = relaxed_shortest_path(w, 10.0)
    assert not bool(res.converged.all())
    # the While loop (or a long enough For loop) recovers the exact path, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res_w = relaxed_shortest_path(w, 10.0, mode="while")
        res_f = relaxed_shortest_path(w, 10.0, n_iter=49)
    assert bool(res_w.converged.all()) and bool(res_f.converged.all())
    assert torch.allclose(res_w.path, exact, atol=1e-2)
    # modules expose converged and warn once
    loss = RelaxedShortestPathLoss(10.0, "l2")
    with pytest.warns(RuntimeWarning, match="did not converge"):
        loss(w, exact)
    assert loss.converged is not None and not bool(loss.converged.all())
    assert loss.last_result is loss.inner.last_result
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(w, exact)  # second call: no second warning


def test_for_loop_warns_for_small_beta_times_min_cost():
    import warnings

    from newton_losses.shortest_path import relaxed_shortest_path

    w = torch.full((1, 3, 3), 0.5, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"log 8.*larger beta"):
        relaxed_shortest_path(w, 4.0)  # 4 · 0.5 = 2 ≤ log 8 ≈ 2.079
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relaxed_shortest_path(2 * w, 8.0)  # 8 > log 8, and the 3×3 grid converges
