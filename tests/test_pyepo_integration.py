"""The PyEPO integration (newton_losses.integrations.pyepo) against independent oracles.

- PyEPO itself: with the same noise, DPOLoss and PFYLoss give the values and gradients of
  pyepo.func.perturbedOpt (+ a per-instance MSE) and perturbedFenchelYoung(reduction="none"), for a
  minimization (shortest path, OR-Tools) and a maximization (knapsack, OR-Tools SCIP).
- The exact batched grid solver against PyEPO's OR-Tools shortestPathModel on every instance of
  generated data sets (objectives; solutions wherever the optimum is unique, by enumeration).
- A dense float64 oracle on PyEPO's 2×3 grid, small enough to enumerate: its three paths make
  p_k = P(path k is the cheapest under θ + σZ) a bivariate normal orthant probability, computed by
  Gauss-Legendre quadrature in torch, so ŷ_σ(θ) = Σ_k p_k y_k, its Jacobian and the Hessians of
  both losses come from autograd, exactly up to quadrature error (checked: probabilities sum to
  1, the Jacobian ∇ŷ_σ = ∇²F_σ is symmetric, Monte Carlo agrees). The estimators' Hessians, with
  many samples, must match within 5 standard errors (measured across independent replicate rows
  of the batch), their spread must shrink like 1/√S, and NewtonLoss must produce the Newton step
  computed by hand from the same samples.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

pyepo = pytest.importorskip("pyepo")
pytest.importorskip("ortools")

from pyepo.model.ort import knapsackModel, shortestPathModel  # noqa: E402
from pyepo.model.opt import optModel  # noqa: E402

from newton_losses import NewtonLoss  # noqa: E402
from newton_losses.integrations.pyepo import (  # noqa: E402
    DPOLoss,
    OptModelSolver,
    PFYLoss,
    from_pyepo,
    make_solver,
)
from newton_losses.integrations.pyepo_grid import GridShortestPath, grid_arcs, grid_shortest_path  # noqa: E402

F64 = torch.float64

# --- the dense oracle on PyEPO's 2×3 grid -----------------------------------------------------

GRID = (2, 3)  # nodes; arcs (0,1) (1,2) (0,3) (1,4) (2,5) (3,4) (4,5)
PATHS = torch.tensor([[1, 1, 0, 0, 1, 0, 0],   # right, right, down
                      [1, 0, 0, 1, 0, 0, 1],   # right, down, right
                      [0, 0, 1, 0, 0, 1, 1]],  # down, right, right
                     dtype=F64)
THETA = torch.tensor([0.3, 0.5, 0.4, 0.6, 0.4, 0.3, 0.5], dtype=F64)  # path costs 1.2, 1.4, 1.2
SIGMA = 0.5
_NODES, _WEIGHTS = (torch.tensor(a, dtype=F64) for a in np.polynomial.legendre.leggauss(200))


def _Phi(z):
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


def _orthant(a, b, rho, lower=-12.0):
    """P(X₁ ≤ a, X₂ ≤ b) for a standard bivariate normal with correlation ρ:
    ∫_{-∞}^{a} φ(x) Φ((b − ρx)/√(1 − ρ²)) dx by 200-point Gauss-Legendre on [−12, a]."""
    half = (a - lower) / 2
    x = lower + half * (_NODES + 1)
    f = torch.exp(-x * x / 2) / math.sqrt(2 * math.pi) * _Phi((b - rho * x) / math.sqrt(1 - rho * rho))
    return half * (_WEIGHTS * f).sum()


def path_probabilities(theta, sigma=SIGMA, sense="min"):
    """p_k = P(path k is optimal for θ + σZ): V = Y(θ + σZ) ~ N(Yθ, σ²YYᵀ), and path k wins when
    the two differences V_k − V_j (j ≠ k) are < 0 (> 0 for a maximization)."""
    mu = PATHS @ theta * (1.0 if sense == "min" else -1.0)
    cov = sigma**2 * PATHS @ PATHS.T
    p = []
    for k in range(3):
        A = torch.zeros(2, 3, dtype=F64)
        for row, j in enumerate(j for j in range(3) if j != k):
            A[row, k], A[row, j] = 1.0, -1.0
        m, C = A @ mu, A @ cov @ A.T
        s = C.diagonal().sqrt()
        p.append(_orthant(-m[0] / s[0], -m[1] / s[1], float(C[0, 1] / (s[0] * s[1]))))
    return torch.stack(p)


def exact_yhat(theta, sigma=SIGMA, sense="min"):
    return path_probabilities(theta, sigma, sense) @ PATHS


def exact_jacobian(theta=THETA, sense="min"):
    return torch.autograd.functional.jacobian(lambda t: exact_yhat(t, SIGMA, sense), theta)


class EnumeratedModel(optModel):
    """A PyEPO optModel solved by enumerating PATHS (here: longest path, a maximization)."""

    def __init__(self, sense):
        self.modelSense = sense
        super().__init__()

    def _getModel(self):
        return None, {k: None for k in range(PATHS.shape[1])}

    def setObj(self, c):
        self._c = np.asarray(c, dtype=np.float64)

    def solve(self):
        values = PATHS.numpy() @ self._c
        k = int(np.argmin(values) if self.modelSense == pyepo.EPO.MINIMIZE else np.argmax(values))
        return PATHS[k].numpy().copy(), float(values[k])


def replicate_rows(R):
    """R identical rows of θ: every row draws its own noise, so rows are independent replicates."""
    return THETA.expand(R, -1).clone(), PATHS[1].expand(R, -1).clone()


def within_mc_error(estimates, exact, k=5.0):
    """Mean over replicate rows within k standard errors (entrywise); returns (max |z|, rel. error)."""
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(estimates.shape[0])
    z = (mean - exact) / se
    assert bool((se > 0).all())
    assert float(z.abs().max()) < k, f"max |z| = {float(z.abs().max()):.2f}"
    return float(z.abs().max()), float((mean - exact).norm() / exact.norm())


def test_the_oracle_is_exact():
    p = path_probabilities(THETA)
    assert abs(float(p.sum()) - 1.0) < 1e-12
    J = exact_jacobian()
    assert float((J - J.T).abs().max()) < 1e-12          # ∇ŷ_σ = ∇²F_σ is symmetric
    eig = torch.linalg.eigvalsh(J)
    assert float(eig.max()) < 1e-12 and float(eig.min()) < -0.5   # F_σ concave: J NSD, rank 2
    Z = torch.randn(400_000, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = grid_shortest_path(THETA + SIGMA * Z, GRID).solution
    z = (y.mean(0) - exact_yhat(THETA)) / (y.std(0) / math.sqrt(len(y)))
    assert float(z.abs().max()) < 5
    # a maximization is the minimization at −θ (Z and −Z have one law)
    torch.testing.assert_close(exact_yhat(THETA, sense="max"), exact_yhat(-THETA), rtol=0, atol=1e-14)


@pytest.mark.parametrize("baseline", ["loo", "center", "none"])
def test_pfy_hessian_estimator_converges_to_the_exact_hessian(baseline):
    """−½(Ĵ + Ĵᵀ) against −∇ŷ_σ: within 5 standard errors with S = 2000 (64 replicates), and
    the replicates' spread halves from S = 500 to S = 2000 (1/√S)."""
    exact = -exact_jacobian()
    spread = {}
    for S in (500, 2000):
        loss = PFYLoss(shortestPathModel(GRID), sigma=SIGMA, n_samples=S, baseline=baseline,
                       generator=torch.Generator().manual_seed(S), solver="torch")
        estimator = loss.hessian_estimator(projection="dense")
        theta, w = replicate_rows(64)
        loss(theta, w)
        C = estimator(theta, None, w).matrix
        spread[S] = float(C.std(0).mean())
        within_mc_error(C, exact)
    assert 0.4 < spread[2000] / spread[500] < 0.6


def test_pfy_maximization_with_an_enumerated_optmodel():
    """Longest path through the OptModelSolver path (one optModel call per perturbed instance):
    ℓ = F_σ − ⟨θ, w⟩ with F_σ = E max, ∇ℓ = ŷ − w and ∇²ℓ = +∇ŷ_σ (PSD)."""
    model = EnumeratedModel(pyepo.EPO.MAXIMIZE)
    loss = PFYLoss(model, sigma=SIGMA, n_samples=400, generator=torch.Generator().manual_seed(5))
    assert isinstance(loss.solver, OptModelSolver) and loss.sense == "max"
    estimator = loss.hessian_estimator(projection="dense")
    theta, w = replicate_rows(32)
    theta.requires_grad_(True)
    loss(theta, w).sum().backward()
    exact_grad = exact_yhat(THETA, sense="max") - PATHS[1]
    within_mc_error(theta.grad, exact_grad)
    J = exact_jacobian(sense="max")
    assert float(torch.linalg.eigvalsh((J + J.T) / 2).min()) > -1e-12
    within_mc_error(estimator(theta, None, w).matrix, (J + J.T) / 2)


def test_dpo_gauss_newton_and_hessian_estimators_converge():
    """ℓ = (1/d)‖ŷ_σ(θ) − w‖²: ĴᵀDĴ against JᵀDJ and the full estimate against autograd's
    Hessian of the exact ℓ (indefinite here), S = 20000, 16 replicates. (Both are biased by O(1/S)
    — ĴᵀDĴ reuses Ĵ, the Stein term uses ŷ's own samples — far below the standard error here.)"""
    J = exact_jacobian()
    w = PATHS[1]
    gn_exact = J.T @ ((2.0 / 7) * J)
    h_exact = torch.autograd.functional.hessian(lambda t: ((exact_yhat(t) - w) ** 2).mean(), THETA)
    assert float(torch.linalg.eigvalsh(h_exact).min()) < -0.1
    loss = DPOLoss(shortestPathModel(GRID), "l2", sigma=SIGMA, n_samples=20000,
                   generator=torch.Generator().manual_seed(2), solver="torch")
    theta, target = replicate_rows(16)
    theta.requires_grad_(True)
    loss(theta, target).sum().backward()
    exact_grad = torch.autograd.functional.jacobian(lambda t: ((exact_yhat(t) - w) ** 2).mean(), THETA)
    within_mc_error(theta.grad, exact_grad)
    within_mc_error(loss.gauss_newton_estimator(projection="dense")(theta, None, target).matrix, gn_exact)
    within_mc_error(loss.hessian_estimator(projection="dense")(theta, None, target).matrix, h_exact)


def _hand_newton_step(samples, sign, lam, baseline="loo"):
    """(|C_i| + λI)^{-1} g_i from the samples, in numpy: C_i = −(s/2)(M_i + M_iᵀ),
    M_i = (1/(Sσ)) Σ_s (y_s − b_s) Z_sᵀ with the leave-one-out b_s, g_i = s (w_i − ŷ_i)."""
    eps, ys = samples.eps.numpy(), samples.outputs.numpy()
    (w,) = samples.args
    S, N, d = eps.shape
    steps = []
    for i in range(N):
        y = ys[:, i]
        b = (y.sum(0, keepdims=True) - y) / (S - 1) if baseline == "loo" else 0.0
        M = sum(np.outer(y[s] - (b[s] if baseline == "loo" else 0.0), eps[s, i]) for s in range(S)) / (S * samples.sigma)
        C = -sign / 2 * (M + M.T)
        mu, V = np.linalg.eigh(C)
        g = sign * (w[i].numpy() - y.mean(0))
        steps.append(np.linalg.solve(V @ np.diag(np.abs(mu)) @ V.T + lam * np.eye(d), g))
    return torch.tensor(np.stack(steps))


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("projection", ["abs", "dense"])
def test_newton_loss_takes_the_hand_computed_step(sense, projection):
    model = shortestPathModel((3, 3)) if sense == "min" else EnumeratedModel(pyepo.EPO.MAXIMIZE)
    d = model.num_cost
    g = torch.Generator().manual_seed(11)
    theta = (torch.rand(5, d, generator=g, dtype=F64) + 0.5).requires_grad_(True)
    w = make_solver(model, "optmodel")(torch.rand(5, d, generator=g, dtype=F64))
    loss = PFYLoss(model, sigma=0.7, n_samples=6, generator=torch.Generator().manual_seed(3))
    lam = 0.3
    newton = NewtonLoss(loss, curvature=loss.hessian_estimator(projection=projection), lam=lam)
    newton(theta, w).backward()
    expected = _hand_newton_step(loss.last_samples, 1.0 if sense == "min" else -1.0, lam) / 5
    torch.testing.assert_close(theta.grad, expected, rtol=1e-7, atol=1e-10)


def test_newton_step_with_many_samples_approaches_the_exact_newton_step():
    """PFY, λ = 0.5: the mean step over replicates is within 3% of (H + λI)^{-1}∇ℓ of the exact
    oracle (a ratio of Monte-Carlo means through |·|: biased by O(1/S), not unbiased; measured
    1.1% at S = 2000)."""
    lam = 0.5
    H = -exact_jacobian()
    exact = torch.linalg.solve(H + lam * torch.eye(7, dtype=F64), PATHS[1] - exact_yhat(THETA))
    loss = PFYLoss(shortestPathModel(GRID), sigma=SIGMA, n_samples=2000,
                   generator=torch.Generator().manual_seed(3), solver="torch")
    theta, w = replicate_rows(64)
    step = NewtonLoss(loss, curvature=loss.hessian_estimator(), lam=lam).direction(theta, w)
    assert float((step.mean(0) - exact).norm() / exact.norm()) < 0.03


# --- PyEPO's own losses and solvers ------------------------------------------------------------

def _pyepo_data(n, seed, noise_width=0.5, deg=2):
    _, c = pyepo.data.shortestpath.genData(n, 5, (5, 5), deg=deg, noise_width=noise_width, seed=seed)
    return torch.as_tensor(c, dtype=F64)


@pytest.mark.parametrize("solver", ["optmodel", "torch"])
def test_same_values_and_gradients_as_pyepo(solver):
    model = shortestPathModel((5, 5))
    costs = _pyepo_data(12, seed=3)
    true_sol, _ = OptModelSolver(model).solve(costs)
    pfy = pyepo.func.perturbedFenchelYoung(model, n_samples=5, sigma=0.7, reduction="none", seed=7)
    dpo = pyepo.func.perturbedOpt(model, n_samples=5, sigma=0.7, seed=9)
    ours_pfy, ours_dpo = from_pyepo(pfy, solver=solver), from_pyepo(dpo, solver=solver)
    assert ours_dpo.baseline == "loo" and ours_pfy.sense == "min"
    for _ in range(2):  # the noise streams stay in step call after call
        a, b = costs.clone().requires_grad_(), costs.clone().requires_grad_()
        va, vb = pfy(a, true_sol), ours_pfy(b, true_sol)
        (va * torch.arange(1.0, 13.0, dtype=F64)).sum().backward()
        (vb * torch.arange(1.0, 13.0, dtype=F64)).sum().backward()
        torch.testing.assert_close(vb, va, rtol=0, atol=1e-12)
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-12)
        a, b = costs.clone().requires_grad_(), costs.clone().requires_grad_()
        va = ((dpo(a) - true_sol) ** 2).mean(1)  # PyEPO's recipe: a loss on DPO's solution
        vb = ours_dpo(b, true_sol)
        va.sum().backward()
        vb.sum().backward()
        torch.testing.assert_close(vb, va, rtol=0, atol=1e-12)
        # PyEPO divides by Sσ + 1e-8, we by Sσ
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-8, atol=1e-12)


def test_same_values_and_gradients_as_pyepo_on_a_maximization():
    weights, _, values = pyepo.data.knapsack.genData(10, 5, 6, dim=1, deg=1, noise_width=0.5, seed=1)
    model = knapsackModel(weights, [9.0])
    costs = torch.as_tensor(values, dtype=F64)
    true_sol, _ = OptModelSolver(model).solve(costs)
    pfy = pyepo.func.perturbedFenchelYoung(model, n_samples=4, sigma=1.0, reduction="none", seed=7)
    ours = from_pyepo(pfy)
    assert ours.sense == "max" and isinstance(ours.solver, OptModelSolver)
    a, b = costs.clone().requires_grad_(), costs.clone().requires_grad_()
    va, vb = pfy(a, true_sol), ours(b, true_sol)
    va.sum().backward()
    vb.sum().backward()
    torch.testing.assert_close(vb, va, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-12)
    d = NewtonLoss(ours, curvature=ours.hessian_estimator(), lam=0.1).direction(costs, true_sol)
    g = ours.last_samples.outputs.mean(0) - true_sol
    assert bool(((d * g).sum(1) >= -1e-12).all())  # a descent direction for every instance


@pytest.mark.parametrize("data", ["genData", "genData + σZ", "integer costs"])
def test_grid_solver_matches_pyepos_ortools_on_every_instance(data):
    """200 instances each: pyepo.data.shortestpath.genData (5×5 grid, noise_width 0.5); the same
    perturbed by σZ with σ = 1 (negative costs, as the perturbed losses see them); and integer
    costs in {1, 2, 3}, where most instances have tied cheapest paths. On every instance the
    objectives agree (ours against ⟨c, PyEPO's solution⟩ and OR-Tools' reported objective);
    solutions agree wherever the optimum is unique (enumerating all 70 paths), and where it is
    not, both are optimal."""
    from test_pyepo_grid import all_paths

    model = shortestPathModel((5, 5))
    assert [tuple(a) for a in model.arcs] == grid_arcs((5, 5))
    g = torch.Generator().manual_seed(1)
    if data == "integer costs":
        costs = torch.randint(1, 4, (200, 40), generator=g).to(F64)
    else:
        costs = _pyepo_data(200, seed=17)
        if data == "genData + σZ":
            costs = costs + torch.randn(costs.shape, generator=g, dtype=F64)
            assert float(costs.min()) < 0
    ref_sol, ref_obj = OptModelSolver(model).solve(costs)
    ours = grid_shortest_path(costs)
    assert bool(((ref_sol == 0) | (ref_sol == 1)).all())
    torch.testing.assert_close(ours.objective, (ref_sol * costs).sum(1), rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.objective, ref_obj, rtol=0, atol=1e-6)  # glop's own rounding
    values = costs @ all_paths((5, 5)).T
    top2 = values.sort(1).values[:, :2]
    unique = top2[:, 1] - top2[:, 0] > 1e-9
    assert torch.equal(ours.solution[unique], ref_sol[unique])
    if data == "integer costs":
        assert int((~unique).sum()) > 100  # ties are common here; both answers are optimal


def test_auto_solver_choice_and_refusals():
    sp, knap = shortestPathModel((5, 5)), knapsackModel(np.array([[3.0, 4.0, 5.0]]), [7.0])
    assert isinstance(make_solver(sp), GridShortestPath)
    assert isinstance(make_solver(sp, "optmodel"), OptModelSolver)
    assert isinstance(make_solver(pyepo.model.ort.shortestPathCpModel((3, 4))), GridShortestPath)
    assert isinstance(make_solver(knap), OptModelSolver)
    constrained = sp.addConstr(np.ones(40), 7.0)  # an extra constraint: the DP no longer applies
    assert isinstance(make_solver(constrained), OptModelSolver)
    for model in (knap, constrained):
        with pytest.raises(ValueError, match="solver='optmodel'"):
            make_solver(model, "torch")
    with pytest.raises(ValueError, match="solver must be one of"):
        make_solver(sp, "gurobi")


def test_true_solutions_are_cached():
    solver = OptModelSolver(shortestPathModel((5, 5)), cache_size=100)
    costs = _pyepo_data(30, seed=5).float()
    first = solver.solve(costs)
    assert solver.calls == 30 and solver.hits == 0
    second = solver.solve(costs)
    assert solver.calls == 30 and solver.hits == 30
    assert torch.equal(first[0], second[0]) and first[0].dtype == torch.float32
    solver(costs)  # perturbed costs bypass the cache
    assert solver.calls == 60


@pytest.mark.parametrize("make, error, match", [
    (lambda: PFYLoss("not a model"), TypeError, "PyEPO optModel"),
    (lambda: DPOLoss(shortestPathModel((2, 2)), "huber"), ValueError, "loss must be one of"),
    (lambda: PFYLoss(shortestPathModel((2, 2)), n_samples=1), ValueError, "baseline='loo'"),
    (lambda: PFYLoss(shortestPathModel((2, 2)), noise="numpy"), ValueError, "noise must be one of"),
    (lambda: from_pyepo(pyepo.func.perturbedOptMul(shortestPathModel((2, 2)))), TypeError, "additive"),
    (lambda: from_pyepo(torch.nn.MSELoss()), TypeError, "perturbedOpt"),
    (lambda: DPOLoss(shortestPathModel((2, 2)), "l1").gauss_newton_estimator(), ValueError, "l1"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs_name_the_shape():
    loss = PFYLoss(shortestPathModel((5, 5)))
    with pytest.raises(ValueError, match=r"\(N, 40\)"):
        loss(torch.rand(4, 39), torch.rand(4, 39))
    with pytest.raises(ValueError, match="target must have the shape"):
        loss(torch.rand(4, 40), torch.rand(4, 41))
    with pytest.raises(TypeError, match="floating-point"):
        loss(torch.ones(4, 40, dtype=torch.long), torch.rand(4, 40))
    with pytest.raises(ValueError, match="one solution per cost vector"):
        PFYLoss(shortestPathModel((5, 5)), solver=lambda c: c[:, :3])(torch.rand(2, 40), torch.rand(2, 40))


def test_training_with_the_newton_loss_lowers_regret():
    """A linear model on PyEPO's shortest-path data, PFYL with its Hessian estimator in NewtonLoss
    and the exact batched solver: the normalized regret on the training set falls."""
    x, c = pyepo.data.shortestpath.genData(64, 5, (5, 5), deg=2, noise_width=0.5, seed=0)
    x, c = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(c)
    w = grid_shortest_path(c).solution

    def regret(model):
        with torch.no_grad():
            chosen = grid_shortest_path(model(x)).solution
        return float(((chosen * c).sum() - (w * c).sum()) / (w * c).sum())

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 40)
    loss = PFYLoss(shortestPathModel((5, 5)), sigma=0.5, n_samples=8, generator=torch.Generator().manual_seed(0))
    newton = NewtonLoss(loss, curvature=loss.hessian_estimator(), lam=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    start, t0 = regret(model), time.perf_counter()
    for _ in range(40):
        opt.zero_grad()
        newton(model(x), w).backward()
        opt.step()
    assert regret(model) < 0.5 * start, (start, regret(model))
    assert time.perf_counter() - t0 < 30
