"""Every shortest-path loss family wrapped in NewtonLoss trains a tiny linear model.

A fixed problem: features x (N, 6) of N = 24 grids of 5×5, true costs softplus(x W*) + 0.3, the
true paths from the exact solver. The model is one linear layer with a softplus (costs must be
≥ 0). Each family × curvature runs a few Adam steps; the family's own loss, evaluated before and
after with the same noise (a fixed evaluation generator), must have decreased. Also checked: the
Hessian-free estimators return a descent direction for every sample.
"""

from __future__ import annotations

import pytest
import torch

from newton_losses import NewtonLoss
from newton_losses.shortest_path import (
    FenchelYoungLoss,
    RelaxedShortestPathLoss,
    SmoothedAlgorithmLoss,
    SmoothedLoss,
    shortest_path,
)

N, D, SIDE = 24, 6, 5


def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    w_true = torch.randn(D, SIDE * SIDE, generator=g, dtype=torch.float64)
    costs = torch.nn.functional.softplus(2 * x @ w_true).view(N, SIDE, SIDE) + 0.3
    return x, shortest_path(costs).path


def model():
    torch.manual_seed(1)
    lin = torch.nn.Linear(D, SIDE * SIDE, dtype=torch.float64)

    def costs(x):
        return torch.nn.functional.softplus(lin(x)).view(-1, SIDE, SIDE) + 0.3

    return lin, costs


def stochastic(cls, **kw):
    return lambda seed: cls(sigma=0.5, n_samples=10, generator=torch.Generator().manual_seed(seed), **kw)


# (name, factory(seed) -> loss, curvature name or method of the loss, λ)
CASES = [
    ("relaxed_for_l2", lambda s: RelaxedShortestPathLoss(5.0, "l2"), "fisher", 0.1),
    ("relaxed_for_l2", lambda s: RelaxedShortestPathLoss(5.0, "l2"), "hessian", 0.1),
    ("relaxed_for_l2", lambda s: RelaxedShortestPathLoss(5.0, "l2"), "gauss_newton", 0.1),
    ("relaxed_while_l1", lambda s: RelaxedShortestPathLoss(5.0, "l1", mode="while"), "fisher", 0.1),
    ("relaxed_while_l1", lambda s: RelaxedShortestPathLoss(5.0, "l1", mode="while"), "hessian", 0.1),
    ("smoothed_loss", stochastic(SmoothedLoss), "fisher", 0.1),
    ("smoothed_loss", stochastic(SmoothedLoss), "hessian_estimator", 1.0),
    ("smoothed_algorithm", stochastic(SmoothedAlgorithmLoss), "fisher", 0.1),
    ("smoothed_algorithm", stochastic(SmoothedAlgorithmLoss), "hessian_estimator", 1.0),
    ("smoothed_algorithm", stochastic(SmoothedAlgorithmLoss), "gauss_newton_estimator", 0.1),
    ("fenchel_young", stochastic(FenchelYoungLoss), "fisher", 1.0),
    ("fenchel_young", stochastic(FenchelYoungLoss), "hessian_estimator", 1.0),
]


def newton_for(loss, curvature, lam):
    if curvature == "gauss_newton":
        return NewtonLoss(loss.composite(), curvature="gauss_newton", lam=lam)
    if curvature.endswith("_estimator"):
        return NewtonLoss(loss, curvature=getattr(loss, curvature)(), lam=lam)
    return NewtonLoss(loss, curvature=curvature, lam=lam)


@pytest.mark.parametrize("name,factory,curvature,lam", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_newton_loss_trains_a_linear_model(name, factory, curvature, lam):
    x, target = problem()
    lin, costs = model()
    loss = factory(0)
    newton = newton_for(loss, curvature, lam)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)

    def evaluate():
        with torch.no_grad():
            return float(factory(123)(costs(x), target).mean())

    before = evaluate()
    for _ in range(25):
        opt.zero_grad()
        newton(costs(x), target).backward()
        opt.step()
        diag = newton.last_diagnostics
        assert not diag.skipped
        assert diag.min_descent_cosine is None or diag.min_descent_cosine > 0
    after = evaluate()
    assert after < 0.7 * before, (name, curvature, before, after)
