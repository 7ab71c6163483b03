"""The stochastic shortest-path losses with the real solver, against closed forms and brute force.

Oracles:
- brute force over all simple paths of small grids (the argmin convention y* = argmin ⟨θ, y⟩);
- finite differences of the Fenchel-Young value with common random numbers (fixed noise), whose
  exact derivative is ȳ − ŷ (the min of linear functions is piecewise linear in θ);
- a 2×3 grid on which every cheapest path is s → (0,1) → t or s → (1,1) → t, so with Gaussian
  noise ŷ(θ) = Φ(u) at (0,1) and 1 − Φ(u) at (1,1), u = (θ₁₁ − θ₀₁)/(σ√2), and
  E min = θ_s + θ_t + E min(θ₀₁ + σZ₁, θ₁₁ + σZ₂) in closed form. Value, gradient and Hessian
  of each family are taken from these closed forms by autograd (torch.autograd.functional).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import hessian, jacobian

from newton_losses import NewtonLoss
from newton_losses.shortest_path import (
    FenchelYoungLoss,
    PerturbedOptimizer,
    SmoothedAlgorithmLoss,
    SmoothedLoss,
    path_oracle,
    shortest_path,
)

SIGMA = 0.3


def simple_paths(height, width):
    """Every simple 8-neighbour path from the top-left to the bottom-right cell, as 0/1 masks."""
    target = (height - 1, width - 1)
    masks = []

    def walk(cell, visited):
        if cell == target:
            m = torch.zeros(height, width, dtype=torch.float64)
            for y, x in visited:
                m[y, x] = 1
            masks.append(m)
            return
        y, x = cell
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nxt = (y + dy, x + dx)
                if (dy or dx) and 0 <= nxt[0] < height and 0 <= nxt[1] < width and nxt not in visited:
                    walk(nxt, visited + [nxt])

    walk((0, 0), [(0, 0)])
    return torch.stack(masks)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4)])
def test_oracle_is_argmin_over_all_simple_paths(shape):
    paths = simple_paths(*shape)  # (P, H, W)
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(50, *shape, generator=g, dtype=torch.float64) * 5
    y = path_oracle(theta)
    best = torch.einsum("nhw,phw->np", theta, paths).min(1).values
    torch.testing.assert_close((theta * y).sum((1, 2)), best)
    # each returned mask is one of the simple paths
    assert bool((y.flatten(1) @ paths.flatten(1).T == paths.flatten(1).sum(1)).any(1).all())


def test_fenchel_young_gradient_is_finite_difference_of_its_value():
    g = torch.Generator().manual_seed(1)
    theta = torch.rand(3, 4, 4, generator=g, dtype=torch.float64) * 8 + 1
    target = shortest_path(torch.rand(3, 4, 4, generator=g, dtype=torch.float64)).path

    def value(t):  # the same noise at every call: common random numbers
        return FenchelYoungLoss(sigma=0.5, n_samples=5, generator=torch.Generator().manual_seed(7))(t, target)

    th = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(value(th).sum(), th)
    h = 1e-6
    fd = torch.zeros_like(theta)
    for idx in range(theta[0].numel()):
        e = torch.zeros(theta[0].numel(), dtype=theta.dtype)
        e[idx] = h
        e = e.view(4, 4)
        fd.view(3, -1)[:, idx] = (value(theta + e) - value(theta - e)) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=0, atol=1e-6)
    # sign: descent lowers the costs of the true path's cells
    assert bool((grad[target.bool()] >= 0).all())


# ---- the 2×3 grid with a closed form ------------------------------------------------------------
S_CLOSED = 40000


def two_by_three():
    theta = torch.tensor([[[1.0, 2.0, 5.0], [5.0, 2.3, 1.0]]], dtype=torch.float64)
    target = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]], dtype=torch.float64)
    return theta, target


def closed_y_hat(th):
    """ŷ(θ) for θ (6,) flattened, valid while both middle costs stay far above 0."""
    u = (th[4] - th[1]) / (SIGMA * math.sqrt(2))
    p = torch.special.ndtr(u)
    z = torch.zeros_like(th)
    return torch.stack([z[0] + 1, p, z[2], z[3], 1 - p, z[5] + 1])


def closed_fy(th, target):
    s = SIGMA * math.sqrt(2)
    m1, m2 = th[1], th[4]
    d = (m2 - m1) / s
    phi = torch.exp(-0.5 * d * d) / math.sqrt(2 * math.pi)
    e_min = m1 * torch.special.ndtr(d) + m2 * torch.special.ndtr(-d) - s * phi
    return (th * target).sum() - (th[0] + th[5] + e_min)


def z_ok(est, truth, terms, k=5.0):
    se = terms.std(0) / math.sqrt(terms.shape[0])
    return bool(((est - truth).abs() <= k * se + 1e-12).all())


def test_fenchel_young_closed_form():
    theta, target = two_by_three()
    tf = target.flatten()
    th0 = theta.flatten()
    v_true = closed_fy(th0, tf)
    g_true = jacobian(lambda t: closed_fy(t, tf), th0)
    h_true = hessian(lambda t: closed_fy(t, tf), th0)
    torch.testing.assert_close(g_true, tf - closed_y_hat(th0))  # the FY gradient identity
    torch.testing.assert_close(h_true, -jacobian(closed_y_hat, th0))  # and the Hessian one

    fy = FenchelYoungLoss(sigma=SIGMA, n_samples=S_CLOSED, generator=torch.Generator().manual_seed(0))
    th = theta.clone().requires_grad_(True)
    value = fy(th, target)
    (grad,) = torch.autograd.grad(value.sum(), th)
    H = fy.hessian_estimator(projection="dense")(th0[None], grad.flatten(1), target).matrix[0]
    s = fy.last_samples
    ys = s.outputs.flatten(1)  # (S, 6)
    z = s.flat_eps()[:, 0]
    a = ys - s.center.flatten()
    value_terms = (th0 * tf).sum() - ((th0 + SIGMA * z) * ys).sum(1)
    h_terms = -(a[:, :, None] * z[:, None, :] + z[:, :, None] * a[:, None, :]) / (2 * SIGMA)
    assert z_ok(value[0], v_true, value_terms)
    assert z_ok(grad.flatten(), g_true, -ys)
    assert z_ok(H, h_true, h_terms)
    assert float(torch.linalg.eigvalsh(h_true).min()) > -1e-12  # convex: PSD Hessian


def test_smoothed_loss_closed_form():
    """(a) with L1: f(θ) = (2/6)·[the path takes (0,1)], so f_σ = Φ(u)/3."""
    theta, target = two_by_three()
    th0 = theta.flatten()

    def f_sigma(t):
        return closed_y_hat(t)[1] / 3

    loss = SmoothedLoss("l1", sigma=SIGMA, n_samples=S_CLOSED, generator=torch.Generator().manual_seed(1))
    th = theta.clone().requires_grad_(True)
    value = loss(th, target)
    (grad,) = torch.autograd.grad(value.sum(), th)
    H = loss.hessian_estimator(projection="dense")(th0[None], grad.flatten(1), target).matrix[0]
    s = loss.last_samples
    c = s.centered("center")[:, 0]
    z = s.flat_eps()[:, 0]
    eye = torch.eye(6, dtype=torch.float64)
    assert z_ok(value[0], f_sigma(th0), s.outputs[:, 0])
    assert z_ok(grad.flatten(), jacobian(f_sigma, th0), c[:, None] * z / SIGMA)
    h_terms = c[:, None, None] * (z[:, :, None] * z[:, None, :] - eye) / SIGMA**2
    assert z_ok(H, hessian(f_sigma, th0), h_terms)


@pytest.mark.parametrize("which", ["gauss_newton", "hessian"])
def test_smoothed_algorithm_closed_form(which):
    """(b) with L2: ℓ(θ) = mean((ŷ(θ) − ȳ)²); ŷ and its Jacobian J from the closed form, the
    second-order term Σ_k ∂ℓ/∂ŷ_k ∇²ŷ_k by autograd of the closed form."""
    theta, target = two_by_three()
    th0, tf = theta.flatten(), target.flatten()
    loss = SmoothedAlgorithmLoss("l2", sigma=SIGMA, n_samples=S_CLOSED,
                                 generator=torch.Generator().manual_seed(2))
    th = theta.clone().requires_grad_(True)
    value = loss(th, target)
    (grad,) = torch.autograd.grad(value.sum(), th)
    value = value.detach()
    C = getattr(loss, f"{which}_estimator")(projection="dense")(th0[None], grad.flatten(1), target).matrix[0]
    # Each Monte-Carlo mean (ŷ, Ĵ, the Stein term) within 5 standard errors of its closed form,
    # the per-sample spread estimated from the samples; value, gradient and ĴᵀDĴ are then exact
    # functions of those means (checked to rounding), so no ad-hoc relative tolerance is needed.
    s = loss.last_samples
    ys = s.outputs.flatten(1)  # (S, 6)
    y_hat = ys.mean(0)
    a = (s.outputs - s.center).flatten(1)  # (S, 6)
    z = s.flat_eps()[:, 0]
    J_terms = a[:, :, None] * z[:, None, :] / SIGMA  # (S, 6, 6)
    J_hat = J_terms.mean(0)
    assert z_ok(y_hat, closed_y_hat(th0), ys)
    assert z_ok(J_hat, jacobian(closed_y_hat, th0), J_terms)
    grad_l = 2 * (y_hat - tf) / 6
    torch.testing.assert_close(value[0], ((y_hat - tf) ** 2).mean())
    torch.testing.assert_close(grad.flatten(), J_hat.T @ grad_l)
    gn_hat = (2 / 6) * J_hat.T @ J_hat
    if which == "gauss_newton":
        torch.testing.assert_close(C, gn_hat)
    else:  # C − ĴᵀDĴ estimates Σ_k ∂ℓ/∂ŷ_k ∇²ŷ_k at the estimated ŷ (∇ℓ held fixed)
        c = a @ grad_l
        terms = c[:, None, None] * (z[:, :, None] * z[:, None, :] - torch.eye(6, dtype=z.dtype)) / SIGMA**2
        stein_true = hessian(lambda t: closed_y_hat(t) @ grad_l, th0)
        assert z_ok(C - gn_hat, stein_true, terms)


def test_perturbed_optimizer_is_the_smoothed_algorithm():
    theta, _ = two_by_three()
    po = PerturbedOptimizer(sigma=SIGMA, n_samples=S_CLOSED, generator=torch.Generator().manual_seed(3))
    y_hat = po(theta)
    s = po.last_samples
    assert z_ok(y_hat.flatten(), closed_y_hat(theta.flatten()), s.outputs.flatten(1))


def test_one_solver_call_per_forward(monkeypatch):
    """All S·N (+ N) perturbed problems go to the solver in one batched call."""
    import newton_losses.shortest_path.perturbed as perturbed

    calls = []
    real = perturbed.shortest_path

    def counting(costs):
        calls.append(costs.shape[0])
        return real(costs)

    monkeypatch.setattr(perturbed, "shortest_path", counting)
    theta = torch.rand(4, 5, 5, dtype=torch.float64) + 0.5
    target = real(theta).path
    for loss, n in (
        (SmoothedLoss(n_samples=7), 4 * 8),
        (SmoothedAlgorithmLoss(n_samples=7, baseline="loo"), 4 * 7),
        (FenchelYoungLoss(n_samples=7), 4 * 7),  # the centre only once an estimator wants it
    ):
        calls.clear()
        loss(theta, target)
        assert calls == [n]


def test_fenchel_young_solves_the_centre_only_for_its_hessian_estimator(monkeypatch):
    import newton_losses.shortest_path.perturbed as perturbed

    calls = []
    real = perturbed.shortest_path

    def counting(costs):
        calls.append(costs.shape[0])
        return real(costs)

    monkeypatch.setattr(perturbed, "shortest_path", counting)
    theta = torch.rand(4, 5, 5, dtype=torch.float64) + 0.5
    target = real(theta).path
    # estimator created first: the centre goes into the forward pass's one batched call
    eager = FenchelYoungLoss(n_samples=7, generator=torch.Generator().manual_seed(4))
    est_eager = eager.hessian_estimator(projection="dense")
    calls.clear()
    v_eager = eager(theta, target)
    C_eager = est_eager(theta.flatten(1), None, target=target).matrix
    assert calls == [4 * 8]
    # estimator created after the forward pass: the centre is solved lazily (N grids), once
    lazy = FenchelYoungLoss(n_samples=7, generator=torch.Generator().manual_seed(4))
    calls.clear()
    v_lazy = lazy(theta, target)
    assert calls == [4 * 7] and lazy.last_samples.center is None
    C_lazy = lazy.hessian_estimator(projection="dense")(theta.flatten(1), None, target).matrix
    assert calls == [4 * 7, 4]
    torch.testing.assert_close(lazy.last_samples.center, real(theta).path)  # oracle: y*(θ)
    torch.testing.assert_close(v_lazy, v_eager, rtol=0, atol=0)
    torch.testing.assert_close(C_lazy, C_eager, rtol=0, atol=0)


def test_generator_makes_runs_reproducible_and_estimators_reuse_samples():
    theta = torch.rand(3, 5, 5, dtype=torch.float64) + 0.5
    target = shortest_path(theta).path
    a = FenchelYoungLoss(generator=torch.Generator().manual_seed(5))(theta, target)
    b = FenchelYoungLoss(generator=torch.Generator().manual_seed(5))(theta, target)
    c = FenchelYoungLoss(generator=torch.Generator().manual_seed(6))(theta, target)
    assert torch.equal(a, b) and not torch.equal(a, c)

    loss = SmoothedLoss(generator=torch.Generator().manual_seed(5))
    loss(theta, target)
    first = loss.last_samples
    est = loss.hessian_estimator(projection="dense")
    C1 = est(theta.flatten(1), None, target).matrix
    assert loss.last_samples is first  # reused: no new draw
    fresh = loss.hessian_estimator(projection="dense", fresh=True, generator=torch.Generator().manual_seed(9))
    C2 = fresh(theta.flatten(1), None, target).matrix
    assert not torch.equal(C1, C2)
    C3 = est(theta.flatten(1) + 1.0, None, target).matrix  # other point: fresh samples
    assert not torch.equal(C1, C3)


@pytest.mark.parametrize(
    "make, estimator",
    [
        (lambda: SmoothedAlgorithmLoss(n_samples=3), "gauss_newton_estimator"),
        (lambda: SmoothedAlgorithmLoss(n_samples=3), "hessian_estimator"),
        (lambda: SmoothedLoss(n_samples=3), "hessian_estimator"),
        (lambda: FenchelYoungLoss(n_samples=3), "hessian_estimator"),
    ],
)
def test_target_by_keyword_one_solver_call_per_newton_step(monkeypatch, make, estimator):
    """NewtonLoss passes the loss's own (keyword) target to the curvature: the estimator must
    reuse the forward pass's samples, so one step is one batched solver call (counted)."""
    import newton_losses.shortest_path.perturbed as perturbed
    from newton_losses import NewtonLoss

    calls = []
    real = perturbed.shortest_path

    def counting(costs):
        calls.append(costs.shape[0])
        return real(costs)

    monkeypatch.setattr(perturbed, "shortest_path", counting)
    gen = torch.Generator().manual_seed(0)
    theta = torch.rand(2, 4, 4, dtype=torch.float64, generator=gen) + 0.5
    target = real(torch.rand(2, 4, 4, dtype=torch.float64, generator=gen) + 0.5).path
    results = []
    for kw in (False, True):
        loss = make()
        loss.generator = torch.Generator().manual_seed(1)
        newton = NewtonLoss(loss, curvature=getattr(loss, estimator)(), lam=0.1)
        c = theta.clone().requires_grad_(True)
        calls.clear()
        out = newton(c, target=target) if kw else newton(c, target)
        out.sum().backward()
        assert len(calls) == 1, calls
        results.append(c.grad)
    # keyword and positional targets give the same step (same seed, same samples)
    assert torch.allclose(results[0], results[1], rtol=0, atol=1e-12)


def test_same_seed_same_noise_in_float32_and_float64():
    """torch.randn's streams differ by dtype; the noise is drawn in float64 and then cast."""
    from newton_losses.shortest_path.stein import gaussian_noise

    like64 = torch.zeros(3, 4, 4, dtype=torch.float64)
    e64 = gaussian_noise(5, like64, torch.Generator().manual_seed(11))
    e32 = gaussian_noise(5, like64.float(), torch.Generator().manual_seed(11))
    assert e32.dtype == torch.float32 and e64.dtype == torch.float64
    assert torch.equal(e32, e64.float())
    # and through a loss: the recorded noise agrees to float32 precision
    theta = torch.rand(3, 4, 4, dtype=torch.float64) + 0.5
    target = shortest_path(theta).path
    losses = []
    for dtype in (torch.float32, torch.float64):
        loss = FenchelYoungLoss(n_samples=4, generator=torch.Generator().manual_seed(3))
        loss(theta.to(dtype), target.to(dtype))
        losses.append(loss.last_samples)
    assert torch.allclose(losses[0].eps.double(), losses[1].eps, rtol=1e-6, atol=1e-6)


def test_fenchel_young_says_why_it_has_no_gauss_newton_estimator():
    """Asked by analogy with the smoothed losses, the Fenchel-Young loss explains itself (and
    getattr with a default, as NewtonLoss's advice uses, still sees no such estimator)."""
    loss = FenchelYoungLoss(n_samples=3)
    assert getattr(loss, "gauss_newton_estimator", None) is None
    with pytest.raises(AttributeError, match="no gauss_newton_estimator.*hessian_estimator"):
        loss.gauss_newton_estimator()
    with pytest.raises(AttributeError, match="has no attribute 'spam'"):
        loss.spam  # noqa: B018  other names fail as usual


def test_matrix_free_estimator_with_a_matrix_damping_says_what_to_use():
    """``damping="batch"``/``"relative"`` scale λ by the curvature matrix; a matrix-free Stein
    estimate has none: the error names the fix (absolute damping or projection="dense"), and the
    dense form trains."""
    theta = torch.rand(2, 5, 5, dtype=torch.float64) + 0.5
    target = shortest_path(theta).path
    for damping in ("batch", "relative"):
        loss = FenchelYoungLoss(n_samples=3, generator=torch.Generator().manual_seed(1))
        nl = NewtonLoss(loss, loss.hessian_estimator(), lam=1.0, damping=damping)
        with pytest.raises(ValueError, match=r"matrix-free estimate .* use damping='absolute', or .*projection='dense'"):
            nl(theta.clone().requires_grad_(), target).backward()
        loss = FenchelYoungLoss(n_samples=3, generator=torch.Generator().manual_seed(1))
        y = theta.clone().requires_grad_()
        NewtonLoss(loss, loss.hessian_estimator(projection="dense"), lam=1.0, damping=damping)(y, target).backward()
        assert torch.isfinite(y.grad).all()
