"""Property tests (hypothesis) over shapes, dtypes, λ and curvatures."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newton_losses import NewtonLoss

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.tuples(st.integers(1, 5), st.lists(st.integers(1, 3), min_size=1, max_size=2))
dtypes = st.sampled_from([torch.float32, torch.float64])
lams = st.floats(1e-3, 1e3)
curvatures = st.sampled_from(["hessian", "hessian_batch", "fisher"])
projections = st.sampled_from(["abs", "clamp", "tikhonov"])


def _loss(m, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(3, m, generator=gen, dtype=torch.float64).to(dtype)

    def loss(y):
        f = y.reshape(y.shape[0], -1)
        return torch.logsumexp(f @ W.T, -1) + 0.3 * torch.sin(f).sum(-1)

    return loss


@SETTINGS
@given(shape=shapes, dtype=dtypes, lam=lams, curvature=curvatures, projection=projections,
       seed=st.integers(0, 10_000), solver=st.sampled_from(["dense", "cg"]))
def test_value_gradient_target_and_descent(shape, dtype, lam, curvature, projection, seed, solver):
    N, tail = shape[0], tuple(shape[1])
    m = int(torch.tensor(tail).prod())
    loss = _loss(m, dtype, seed)
    y0 = torch.randn((N,) + tail, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    newton = NewtonLoss(loss, curvature=curvature, lam=lam, projection=projection, solver=solver)
    y = y0.clone().requires_grad_(True)
    value = newton(y)
    value.backward()
    # The value is the mean loss, in the input's dtype.
    assert value.dtype == dtype
    torch.testing.assert_close(value.detach(), loss(y0).mean())
    # The gradient has y's shape and dtype, is finite, and is a descent direction per sample.
    assert y.grad.shape == y0.shape and y.grad.dtype == dtype
    assert torch.isfinite(y.grad).all()
    yg = y0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(yg).sum(), yg)
    inner = (y.grad.reshape(N, -1).double() * g.reshape(N, -1).double()).sum(-1)
    tol = 1e-6 if dtype == torch.float64 else 1e-4
    assert (inner >= -tol * g.reshape(N, -1).double().norm(dim=-1) ** 2).all()
    # target() is y minus N times the injected gradient.
    z = newton.target(y0)
    atol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(z, y0 - N * y.grad, rtol=1e-4, atol=atol)
    d = newton.last_diagnostics
    assert d.n_samples == N and d.m == m and not d.skipped
    assert d.min_descent_cosine is None or d.min_descent_cosine > -1e-6


@SETTINGS
@given(N=st.integers(1, 6), m=st.integers(1, 6), lam=st.floats(0.0, 100.0), seed=st.integers(0, 10_000))
def test_quadratic_direction_solves_damped_system(N, m, lam, seed):
    gen = torch.Generator().manual_seed(seed)
    B = torch.randn(N, m, m, generator=gen, dtype=torch.float64)
    A = B @ B.transpose(1, 2) + 0.5 * torch.eye(m, dtype=torch.float64)
    a = torch.randn(N, m, generator=gen, dtype=torch.float64)
    loss = lambda y: 0.5 * torch.einsum("ni,nij,nj->n", y - a, A, y - a)
    y = torch.randn(N, m, generator=gen, dtype=torch.float64)
    d = y - NewtonLoss(loss, curvature="hessian", lam=lam).target(y)
    g = torch.einsum("nij,nj->ni", A, y - a)
    ref = torch.linalg.solve(A + lam * torch.eye(m, dtype=torch.float64), g.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(d, ref, rtol=1e-7, atol=1e-9)
