"""NewtonLoss against independent float64 oracles.

The reference in this file never calls the package's curvature or solver code: per-sample
Hessians come from ``torch.autograd.functional.hessian`` one sample at a time, Fisher matrices
from an explicit loop of outer products, Gauss-Newton from explicit Jacobians, projections from
numpy's ``eigh``, and the parameter gradient from an explicit Jacobian of the network.
"""
import warnings
import math

import numpy as np
import pytest
import torch
from torch import nn

from newton_losses import CompositeLoss, CurvatureEstimate, NewtonLoss

from _losses import quadratic, spd, wavy

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# Independent references
def ref_hessians(loss, y, *args):
    out = []
    for i in range(y.shape[0]):
        f = lambda yi: loss(yi.unsqueeze(0), *[a[i : i + 1] for a in args]).sum()
        out.append(torch.autograd.functional.hessian(f, y[i].detach()))
    return torch.stack(out)


def ref_grads(loss, y, *args):
    out = []
    for i in range(y.shape[0]):
        yi = y[i].detach().clone().requires_grad_(True)
        li = loss(yi.unsqueeze(0), *[a[i : i + 1] for a in args]).sum()
        out.append(torch.autograd.grad(li, yi)[0])
    return torch.stack(out)


def ref_fisher(g):
    F = torch.zeros(g.shape[1], g.shape[1], dtype=F64)
    for gi in g:
        F += torch.outer(gi, gi)
    return F / g.shape[0]


def ref_gauss_newton(inner, outer, y, *args):
    out = []
    for i in range(y.shape[0]):
        J = torch.autograd.functional.jacobian(lambda yi: inner(yi.unsqueeze(0))[0].reshape(-1), y[i].detach())
        a = inner(y[i : i + 1].detach())[0].reshape(-1)
        Hh = torch.autograd.functional.hessian(
            lambda ai: outer(ai.reshape((1,) + inner(y[i : i + 1])[0].shape), *[t[i : i + 1] for t in args]).sum(), a
        )
        out.append(J.T @ Hh @ J)
    return torch.stack(out)


def ref_direction(C, g, lam, projection="abs"):
    """(proj(C) + λI)^{-1} g with numpy; C (N, m, m) or (m, m)."""
    C = C.detach().numpy()
    g = g.detach().numpy()
    d = np.zeros_like(g)
    for i in range(g.shape[0]):
        Ci = C if C.ndim == 2 else C[i]
        mu, Q = np.linalg.eigh(0.5 * (Ci + Ci.T))
        if projection == "abs":
            den = np.abs(mu) + lam
        elif projection == "clamp":
            den = np.maximum(mu, 0) + lam
        else:
            den = mu + lam
            if np.any(den <= 0):
                den = np.abs(mu) + lam
        d[i] = Q @ ((Q.T @ g[i]) / den)
    return torch.from_numpy(d)


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver, method", [("dense", "rows"), ("dense", "vmap"), ("cg", "auto")])
def test_quadratic_hessian_target_is_exact_minimum(solver, method):
    N, m = 7, 5
    A, a = spd(N, m, cond=100.0), torch.randn(N, m, dtype=F64)

    def loss(y, A, a):  # per-sample data as arguments, so the vmap method can slice it
        return quadratic(A, a)(y)

    newton = NewtonLoss(loss, curvature="hessian", lam=0.0, solver=solver, hessian_method=method)
    z = newton.target(torch.randn(N, m, dtype=F64), A, a)
    torch.testing.assert_close(z, a, rtol=0, atol=1e-9)


def test_quadratic_multidimensional_outputs():
    N, shape = 4, (2, 3)
    m = 6
    A, a = spd(N, m), torch.randn(N, m, dtype=F64)
    base = quadratic(A, a)
    newton = NewtonLoss(lambda y: base(y.reshape(N, m)), curvature="hessian", lam=0.0)
    z = newton.target(torch.randn(N, *shape, dtype=F64))
    assert z.shape == (N, *shape)
    torch.testing.assert_close(z.reshape(N, m), a, atol=1e-9, rtol=0)


class _Net(nn.Module):
    def __init__(self, d_in, m):
        super().__init__()
        self.l1 = nn.Linear(d_in, 8)
        self.l2 = nn.Linear(8, m)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


def _param_grad_reference(net, x, C_of_y, g_of_y, lam, projection):
    """Jᵀ d / N with J the explicit Jacobian of the network outputs w.r.t. all parameters."""
    params = dict(net.named_parameters())
    names = list(params)
    flat0 = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def f(flat):
        chunks, i = {}, 0
        for n in names:
            k = params[n].numel()
            chunks[n] = flat[i : i + k].reshape(params[n].shape)
            i += k
        return torch.func.functional_call(net, chunks, (x,))

    y = f(flat0).detach()
    N, m = y.shape
    J = torch.autograd.functional.jacobian(lambda p: f(p).reshape(-1), flat0)  # (N*m, P)
    d = ref_direction(C_of_y(y), g_of_y(y), lam, projection)
    return (J.T @ d.reshape(-1)) / N


@pytest.mark.parametrize("curvature", ["hessian", "hessian_batch", "fisher", "gauss_newton", "custom"])
@pytest.mark.parametrize("projection", ["abs", "clamp", "tikhonov"])
def test_parameter_gradient_matches_dense_reference(curvature, projection):
    torch.manual_seed(1)
    N, d_in, m = 6, 3, 4
    net = _Net(d_in, m).double()
    x = torch.randn(N, d_in, dtype=F64)
    W, t = torch.randn(5, m, dtype=F64), torch.randn(N, m, dtype=F64)
    lam = 0.3
    if curvature == "gauss_newton":
        inner = lambda y: torch.softmax(y @ W.T, dim=-1)
        outer = lambda a, tt: ((a - torch.softmax(tt @ W.T, -1)) ** 2).sum(-1) + (a**4).sum(-1)
        loss = CompositeLoss(inner, outer)
        C_of_y = lambda y: ref_gauss_newton(inner, outer, y, t)
        newton = NewtonLoss(loss, curvature="gauss_newton", lam=lam, projection=projection)
    else:
        loss = wavy(W, t)
        if curvature == "hessian":
            C_of_y = lambda y: ref_hessians(lambda yy, tt: wavy(W, tt)(yy), y, t)
        elif curvature == "hessian_batch":
            C_of_y = lambda y: ref_hessians(lambda yy, tt: wavy(W, tt)(yy), y, t).mean(0)
        else:
            C_of_y = lambda y: ref_fisher(ref_grads(lambda yy, tt: wavy(W, tt)(yy), y, t))
        if curvature == "custom":
            # A user-supplied estimator: here, the per-sample Hessians via the reference.
            def custom(y, g):
                return ref_hessians(lambda yy, tt: wavy(W, tt)(yy), y, t)

            C_of_y = lambda y: ref_hessians(lambda yy, tt: wavy(W, tt)(yy), y, t)
            newton = NewtonLoss(loss, curvature=custom, lam=lam, projection=projection)
        else:
            newton = NewtonLoss(loss, curvature=curvature, lam=lam, projection=projection)

    if curvature == "gauss_newton":
        g_of_y = lambda y: ref_grads(lambda yy, tt: loss(yy, tt), y, t)
        call_args = (t,)
    else:
        g_of_y = lambda y: ref_grads(lambda yy, tt: wavy(W, tt)(yy), y, t)
        call_args = ()

    expected = _param_grad_reference(net, x, C_of_y, g_of_y, lam, projection)
    net.zero_grad()
    value = newton(net(x), *call_args)
    value.backward()
    got = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)
    # The value is the plain mean loss.
    with torch.no_grad():
        plain = loss(net(x), *call_args).mean()
    torch.testing.assert_close(value.detach(), plain)


def test_hessian_blocks_match_finite_differences_of_loss_values():
    torch.manual_seed(2)
    N, m = 5, 4
    W, t = torch.randn(3, m, dtype=F64), torch.randn(N, m, dtype=F64)
    loss = wavy(W, t)
    y = torch.randn(N, m, dtype=F64)
    from newton_losses.curvature import hessian_blocks

    yl = y.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(yl).sum(), yl, create_graph=True)
    H = hessian_blocks(g, yl)
    h = 1e-4
    fd = torch.zeros(N, m, m, dtype=F64)
    eye = torch.eye(m, dtype=F64)
    with torch.no_grad():
        for k in range(m):
            for l in range(m):
                ek, el = h * eye[k], h * eye[l]
                fd[:, k, l] = (
                    loss(y + ek + el) - loss(y + ek - el) - loss(y - ek + el) + loss(y - ek - el)
                ) / (4 * h * h)
    torch.testing.assert_close(H, fd, rtol=1e-5, atol=1e-6)


def test_fisher_matches_per_sample_loop():
    torch.manual_seed(3)
    N, m = 9, 5
    W, t = torch.randn(4, m, dtype=F64), torch.randn(N, m, dtype=F64)
    y = torch.randn(N, m, dtype=F64)
    from newton_losses.curvature import empirical_fisher

    g = ref_grads(lambda yy, tt: wavy(W, tt)(yy), y, t)
    F, n = empirical_fisher(g)
    assert n == N
    torch.testing.assert_close(F, ref_fisher(g))
    # And through NewtonLoss: the direction solves (F + λI) d = g.
    newton = NewtonLoss(wavy(W, t), curvature="fisher", lam=0.05)
    z = newton.target(y)
    d = y - z
    torch.testing.assert_close(d @ (ref_fisher(g) + 0.05 * torch.eye(m, dtype=F64)), g, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("curvature", ["hessian", "hessian_batch", "fisher"])
def test_large_lambda_recovers_gradient_direction(curvature):
    torch.manual_seed(4)
    N, m = 6, 4
    W, t = torch.randn(3, m, dtype=F64), torch.randn(N, m, dtype=F64)
    y = torch.randn(N, m, dtype=F64)
    g = ref_grads(lambda yy, tt: wavy(W, tt)(yy), y, t)
    for lam in (1e2, 1e4, 1e6):
        d = y - NewtonLoss(wavy(W, t), curvature=curvature, lam=lam).target(y)
        err = (lam * d - g).norm() / g.norm()
        assert err < 50.0 / lam  # O(‖C‖/λ)


def test_target_two_step_form_gives_same_gradient_as_injection():
    torch.manual_seed(5)
    N, m = 5, 3
    W, t = torch.randn(4, m, dtype=F64), torch.randn(N, m, dtype=F64)
    y0 = torch.randn(N, m, dtype=F64)
    newton = NewtonLoss(wavy(W, t), curvature="hessian", lam=0.2)
    y1 = y0.clone().requires_grad_(True)
    newton(y1).backward()
    y2 = y0.clone().requires_grad_(True)
    z = newton.target(y2)
    assert not z.requires_grad
    (0.5 * ((z - y2) ** 2).sum() / N).backward()
    torch.testing.assert_close(y1.grad, y2.grad)


def test_scalar_mean_and_per_sample_losses_agree():
    torch.manual_seed(6)
    N, m = 5, 3
    W, t = torch.randn(4, m, dtype=F64), torch.randn(N, m, dtype=F64)
    per = wavy(W, t)
    y = torch.randn(N, m, dtype=F64)
    for curvature in ("hessian", "fisher", "hessian_batch"):
        z1 = NewtonLoss(per, curvature=curvature, lam=0.1).target(y)
        z2 = NewtonLoss(lambda yy: per(yy).mean(), curvature=curvature, lam=0.1, reduction="mean").target(y)
        torch.testing.assert_close(z1, z2)


def test_extra_args_and_kwargs_are_passed():
    N, m = 4, 3
    A, a = spd(N, m), torch.randn(N, m, dtype=F64)

    def loss(y, target, *, scale=1.0):
        d = y - target
        return scale * 0.5 * torch.einsum("ni,nij,nj->n", d, A, d)

    z = NewtonLoss(loss, curvature="hessian", lam=0.0).target(torch.zeros(N, m, dtype=F64), a, scale=3.0)
    torch.testing.assert_close(z, a, atol=1e-9, rtol=0)


def test_vmap_method_matches_rows():
    torch.manual_seed(7)
    N, m = 6, 5
    W, t = torch.randn(4, m, dtype=F64), torch.randn(N, m, dtype=F64)

    def loss(y, tt):
        return wavy(W, tt)(y)

    y = torch.randn(N, m, dtype=F64)
    z_rows = NewtonLoss(loss, curvature="hessian", lam=0.1, hessian_method="rows").target(y, t)
    z_vmap = NewtonLoss(loss, curvature="hessian", lam=0.1, hessian_method="vmap").target(y, t)
    torch.testing.assert_close(z_rows, z_vmap)


def test_no_grad_returns_value_only():
    N, m = 3, 2
    A, a = spd(N, m), torch.randn(N, m, dtype=F64)
    newton = NewtonLoss(quadratic(A, a), curvature="hessian", lam=0.1)
    y = torch.randn(N, m, dtype=F64)
    with torch.no_grad():
        v = newton(y.clone().requires_grad_(True))
    torch.testing.assert_close(v, quadratic(A, a)(y).mean())
    assert newton.last_diagnostics is None
    v2 = newton(y)  # y without requires_grad: evaluation only
    torch.testing.assert_close(v2, v)


def test_float32_inputs_give_float32_gradients_close_to_float64():
    torch.manual_seed(8)
    N, m = 8, 6
    W, t = torch.randn(4, m, dtype=F64), torch.randn(N, m, dtype=F64)
    y = torch.randn(N, m, dtype=F64)
    ref = NewtonLoss(wavy(W, t), curvature="hessian", lam=0.5).target(y)
    y32 = y.float().requires_grad_(True)
    newton = NewtonLoss(wavy(W.float(), t.float()), curvature="hessian", lam=0.5)
    newton(y32).backward()
    assert y32.grad.dtype == torch.float32
    torch.testing.assert_close((y32.detach() - N * y32.grad).double(), ref, rtol=1e-4, atol=1e-4)


def test_custom_curvature_estimate_matrix_free():
    N, m = 5, 4
    A, a = spd(N, m), torch.randn(N, m, dtype=F64)

    def custom(y, g):
        return CurvatureEstimate(matvec=lambda V: torch.einsum("nij,nj->ni", A, V))

    z = NewtonLoss(quadratic(A, a), curvature=custom, lam=0.0).target(torch.randn(N, m, dtype=F64))
    torch.testing.assert_close(z, a, atol=1e-8, rtol=0)


def test_module_repr_and_lambda_setter():
    newton = NewtonLoss(lambda y: y.sum(-1), curvature="fisher", lam=0.1)
    assert "fisher" in repr(newton)
    newton.lam = 2
    assert newton.lam == 2.0
    with pytest.raises(ValueError, match="lam"):
        newton.lam = -1.0
    with pytest.raises(ValueError, match="lam"):
        newton.lam = math.inf


def test_indefinite_hessian_diagnostics_and_descent():
    torch.manual_seed(9)
    N, m = 20, 4
    W, t = torch.randn(3, m, dtype=F64), torch.randn(N, m, dtype=F64)
    y0 = 3 * torch.randn(N, m, dtype=F64)
    for projection in ("abs", "clamp", "tikhonov"):
        newton = NewtonLoss(wavy(W, t), curvature="hessian", lam=1e-3, projection=projection)
        y = y0.clone().requires_grad_(True)
        newton(y).backward()
        d = newton.last_diagnostics
        assert d.min_eig < 0 and d.n_indefinite > 0
        assert d.min_descent_cosine > 0
        assert (d.n_fallback > 0) == (projection == "tikhonov")
        assert newton.totals.calls == 1 and newton.totals.indefinite_matrices == d.n_indefinite
        assert d.time_curvature_s >= 0 and d.time_solve_s >= 0 and d.time_gradient_s > 0


def test_auto_solver_uses_cg_for_large_outputs_and_agrees_with_dense():
    torch.manual_seed(10)
    N, m = 3, 80
    A, a = spd(N, m, cond=20.0), torch.randn(N, m, dtype=F64)
    y = torch.randn(N, m, dtype=F64)
    auto = NewtonLoss(quadratic(A, a), curvature="hessian", lam=0.1)
    dense = NewtonLoss(quadratic(A, a), curvature="hessian", lam=0.1, solver="dense")
    z_auto, z_dense = auto.target(y), dense.target(y)
    assert auto.last_diagnostics.method == "cg" and dense.last_diagnostics.method == "rows"
    torch.testing.assert_close(z_auto, z_dense, rtol=1e-8, atol=1e-9)


def test_fisher_woodbury_for_large_outputs():
    torch.manual_seed(11)
    N, m = 4, 600
    W, t = torch.randn(3, m, dtype=F64) / 10, torch.randn(N, m, dtype=F64)
    y = torch.randn(N, m, dtype=F64)
    newton = NewtonLoss(wavy(W, t), curvature="fisher", lam=0.5)
    z = newton.target(y)
    assert newton.last_diagnostics.method == "woodbury"
    g = ref_grads(lambda yy, tt: wavy(W, tt)(yy), y, t)
    ref = ref_direction(ref_fisher(g), g, 0.5)
    torch.testing.assert_close(y - z, ref, rtol=1e-8, atol=1e-10)


def test_fisher_woodbury_never_forms_the_m_by_m_matrix(monkeypatch):
    """The Woodbury path works on the (N, m) factor alone: the m×m Fisher (O(N m²) work, m²
    memory) is not built — and with batch damping its scale comes from the factor's trace."""
    import newton_losses.curvature.fisher as fisher_module

    def refuse(*a, **k):
        raise AssertionError("the m×m Fisher was formed on the Woodbury path")

    monkeypatch.setattr(fisher_module, "empirical_fisher", refuse)
    torch.manual_seed(12)
    N, m = 3, 700
    W, t = torch.randn(3, m, dtype=F64) / 10, torch.randn(N, m, dtype=F64)
    y = torch.randn(N, m, dtype=F64)
    newton = NewtonLoss(wavy(W, t), curvature="fisher", lam=0.5, damping="batch")
    z = newton.target(y)
    assert newton.last_diagnostics.method == "woodbury"
    g = ref_grads(lambda yy, tt: wavy(W, tt)(yy), y, t)
    F = ref_fisher(g)
    scale = float(torch.linalg.eigvalsh(F).abs().mean())  # batch damping: λ · mean |eigenvalue|
    torch.testing.assert_close(y - z, ref_direction(F, g, 0.5 * scale), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("curvature", ["hessian", "gauss_newton"])
def test_chunk_sizes_give_identical_blocks(curvature):
    torch.manual_seed(12)
    N, m = 5, 7
    W, t = torch.randn(4, m, dtype=F64), torch.randn(N, m, dtype=F64)
    if curvature == "hessian":
        loss = wavy(W, t)
    else:
        loss = CompositeLoss(lambda y: torch.tanh(y @ W.T), lambda a: (a**2).sum(-1) + a.exp().sum(-1))
    y = torch.randn(N, m, dtype=F64)
    zs = [NewtonLoss(loss, curvature=curvature, lam=0.1, chunk_size=c, solver="dense").target(y) for c in (1, 3, 7)]
    auto = NewtonLoss(loss, curvature=curvature, lam=0.1, solver="dense")
    zs.append(auto.target(y))
    for z in zs[1:]:
        torch.testing.assert_close(z, zs[0], rtol=1e-12, atol=1e-12)
    assert list(auto._chunk_cache.values())[0] in (1, 4, 7)


@pytest.mark.parametrize("costs,expected", [
    ({1: 1.0, 4: 0.95, 16: 0.5, 64: 0.48}, 16),  # 64 is not 10% faster than 16: keep the smaller
    ({1: 1.0, 4: 0.95, 16: 0.92, 64: 0.93}, 1),  # nothing clearly faster than a loop
    ({1: 1.0, 4: 0.2, 16: 0.3, 64: 5.0}, 4),
])
def test_chunk_chooser_keeps_the_smaller_chunk_unless_a_larger_one_is_clearly_faster(monkeypatch, costs, expected):
    import newton_losses.curvature.chunking as curv

    clock = {"t": 0.0, "c": None}

    def fake_batched_grad(output, inputs, grad_outputs, chunk_size=None):
        assert grad_outputs.shape[0] == chunk_size  # one chunk of the candidate's size
        clock["t"] += costs[chunk_size] * chunk_size  # costs are per row

    monkeypatch.setattr(curv, "batched_grad", fake_batched_grad)
    import time

    monkeypatch.setattr(time, "perf_counter", lambda: clock["t"])
    K = 100
    assert curv.choose_chunk_size(None, None, torch.zeros(K, 3)) == expected


@pytest.mark.parametrize("row_cost,K,rounds", [
    (1e-6, 144, 5),   # cheap rows: every round fits the budget
    (0.015, 144, 2),  # relaxed Bellman-Ford-like rows: 85 rows per round against K = 144
    (0.015, 64, 1),   # a round already costs more than the K rows it tunes: one round
])
def test_chunk_chooser_stops_timing_once_it_has_spent_the_real_works_cost(monkeypatch, row_cost, K, rounds):
    import time

    import newton_losses.curvature.chunking as curv

    clock = {"t": 0.0, "calls": 0}

    def fake_batched_grad(output, inputs, grad_outputs, chunk_size=None):
        clock["calls"] += 1
        clock["t"] += row_cost * grad_outputs.shape[0]

    monkeypatch.setattr(curv, "batched_grad", fake_batched_grad)
    monkeypatch.setattr(time, "perf_counter", lambda: clock["t"])
    curv.choose_chunk_size(None, None, torch.zeros(K, 3))
    assert clock["calls"] == 4 * (1 + rounds)  # warm-up + timed rounds, 4 candidates each


@pytest.mark.parametrize("curvature", ["hessian", "gauss_newton"])
def test_auto_solver_is_dense_for_eigenvalue_damping_at_any_size(curvature):
    # m > 64 would pick CG, which has no eigenvalues for batch/relative damping.
    torch.manual_seed(13)
    N, m = 3, 70
    W, t = torch.randn(4, m, dtype=F64), torch.randn(N, m, dtype=F64)
    loss = wavy(W, t) if curvature == "hessian" else CompositeLoss(
        lambda y: torch.tanh(y), lambda a: (a**2).sum(-1) + a.exp().sum(-1))
    y = torch.randn(N, m, dtype=F64)
    for damping in ("batch", "relative"):
        auto = NewtonLoss(loss, curvature=curvature, lam=0.1, damping=damping)
        dense = NewtonLoss(loss, curvature=curvature, lam=0.1, damping=damping, solver="dense")
        torch.testing.assert_close(auto.target(y), dense.target(y), rtol=1e-12, atol=1e-12)
        assert auto.last_diagnostics.method != "cg"


def test_non_absolute_damping_of_a_low_rank_fisher_uses_its_trace():
    # m > 512 with N < m: the Woodbury path. Relative/batch damping must not be ignored there.
    from newton_losses.linalg import damped_solve

    g = torch.Generator().manual_seed(4)
    N, m = 8, 600
    y = torch.randn(N, m, generator=g, dtype=torch.float64)
    t = torch.randn(N, m, generator=g, dtype=torch.float64)

    def loss(y, t):
        return ((y - t) ** 2 * torch.linspace(0.5, 2.0, m, dtype=y.dtype)).sum(-1)

    grads = 2 * (y - t) * torch.linspace(0.5, 2.0, m, dtype=torch.float64)
    F = grads.T @ grads / N
    for damping in ("relative", "batch"):
        nl = NewtonLoss(loss, curvature="fisher", lam=0.5, damping=damping)
        d = y - nl.target(y, t)
        assert nl.last_diagnostics.method == "woodbury"
        ref, _ = damped_solve(F, grads, 0.5, damping="relative")
        torch.testing.assert_close(d, ref, rtol=1e-7, atol=1e-9)


def test_non_absolute_damping_needs_a_dense_solver():
    with pytest.raises(ValueError, match="damping='batch' needs the curvature's eigenvalues"):
        NewtonLoss(lambda y: (y ** 2).sum(-1), curvature="hessian", lam=0.1, damping="batch", solver="cg")


@pytest.mark.parametrize("form", ["matrix", "matvec"])
def test_lam0_with_a_singular_curvature_warns_once_and_stays_finite(form):
    """λ = 0 with a curvature of rank below m (as the perturbed losses' sampled estimates are):
    a warning says that directions were left out and what to do; the gradient is finite."""
    N, m = 4, 10
    gen = torch.Generator().manual_seed(0)
    U = torch.randn(N, m, 2, generator=gen)
    C = U @ U.transpose(1, 2)  # float32, rank 2

    def custom(y, g, *args):
        if form == "matrix":
            return CurvatureEstimate(matrix=C, psd=True)
        return CurvatureEstimate(matvec=lambda V: torch.einsum("nij,nj->ni", C, V), psd=True)

    loss = lambda y, t: ((y - t) ** 4).sum(-1)  # noqa: E731
    newton = NewtonLoss(loss, curvature=custom, lam=0.0)
    y = torch.randn(N, m, requires_grad=True, generator=gen)
    t = torch.randn(N, m, generator=gen)
    with pytest.warns(RuntimeWarning, match="lam=0 and the curvature .* singular"):
        newton(y, t).backward()
    assert torch.isfinite(y.grad).all()
    # dense: every matrix is singular; CG: the rows whose search met a vanishing curvature
    assert newton.last_diagnostics.n_singular == N if form == "matrix" else newton.last_diagnostics.n_singular >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per instance
        newton(y, t)


def test_no_lam0_warning_when_lam_is_positive_and_a_sample_is_flat():
    """Relative damping of an all-zero curvature adds nothing (λ times zero): that sample's step
    is left out, but λ > 0 and this is not the λ = 0 warning's case."""
    N, m = 4, 3

    def loss(y, t):
        w = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=y.dtype).unsqueeze(-1)  # the last sample is flat
        return (w * (y - t) ** 2).sum(-1)

    newton = NewtonLoss(loss, curvature="hessian", lam=1.0, damping="relative")
    y = torch.randn(N, m, dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        newton(y, torch.zeros(N, m, dtype=F64)).backward()
    assert torch.isfinite(y.grad).all()


@pytest.mark.parametrize("curvature", ["hessian", "hessian_batch"])
@pytest.mark.parametrize("damping", ["batch", "relative"])
def test_scaled_damping_of_a_zero_curvature_falls_back_to_absolute_lam(curvature, damping):
    """An L1 loss has zero second derivative: relative/batch damping would add λ × 0 and leave
    nothing to solve with (the network got a zero gradient). Such matrices are damped with the
    absolute λ — the step of absolute damping, g/λ —, counted, and warned about once."""
    N, m, lam = 5, 4, 0.5

    def l1(y, t):
        return (y - t).abs().sum(-1)

    g0 = torch.Generator().manual_seed(3)
    y0, t = torch.randn(N, m, generator=g0, dtype=F64), torch.randn(N, m, generator=g0, dtype=F64)
    ref = y0.clone().requires_grad_(True)
    NewtonLoss(l1, curvature=curvature, lam=lam, damping="absolute")(ref, t).backward()
    # independent oracle: per-sample gradient sign(y − t), Hessian 0, step g/λ, summed loss → /N
    torch.testing.assert_close(ref.grad, torch.sign(y0 - t) / lam / N)
    y = y0.clone().requires_grad_(True)
    newton = NewtonLoss(l1, curvature=curvature, lam=lam, damping=damping)
    with pytest.warns(RuntimeWarning, match=r"curvature of \d+ of \d+ matrices is zero .*curvature='fisher'"):
        newton(y, t).backward()
    torch.testing.assert_close(y.grad, ref.grad)
    d = newton.last_diagnostics
    assert d.n_unscaled == (1 if curvature == "hessian_batch" else N) and d.n_singular == 0
    with warnings.catch_warnings():  # once per NewtonLoss
        warnings.simplefilter("error", RuntimeWarning)
        newton(y0.clone().requires_grad_(True), t).backward()


def test_relative_damping_mixes_scaled_and_unscaled_matrices_per_sample():
    """Relative damping per matrix: the samples with curvature keep λ·mean|μ|, a sample with
    none (its loss linear there) gets the absolute λ; the others' steps are unchanged."""
    N, m, lam = 4, 3, 0.5
    w = torch.tensor([1.0, 2.0, 0.5, 0.0], dtype=F64)

    def loss(y, t):  # quadratic in samples 0-2, linear in sample 3
        return w * ((y - t) ** 2).sum(-1) + (w == 0).to(y.dtype) * (y - t).sum(-1)

    y0 = torch.randn(N, m, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.zeros(N, m, dtype=F64)
    y = y0.clone().requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="1 of 4 matrices is zero"):
        NewtonLoss(loss, curvature="hessian", lam=lam, damping="relative")(y, t).backward()
    # oracle: H_i = 2 w_i I, relative λ_i = λ · 2 w_i, step g_i / (2 w_i (1 + λ)); sample 3: g/λ
    g = torch.where(w[:, None] > 0, 2 * w[:, None] * (y0 - t), torch.ones(N, m, dtype=F64))
    step = torch.where(w[:, None] > 0, g / (2 * w[:, None].clamp(min=1e-30) * (1 + lam)), g / lam)
    torch.testing.assert_close(y.grad, step / N)
