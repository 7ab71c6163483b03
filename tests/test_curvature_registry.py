"""Extension point: a curvature registered from outside the package, checked by hand."""
import pytest
import torch

import newton_losses
from newton_losses import CurvatureEstimate, CurvatureProvider, NewtonLoss, available_curvatures, register_curvature

F64 = torch.float64


class DiagonalHessian(CurvatureProvider):
    """C_i = diag(∇²ℓ_i(y_i)): one backward pass per output coordinate, diagonal kept."""

    second_order = True

    def estimate(self, ctx):
        N, m = ctx.y.shape
        diag = torch.stack([
            torch.autograd.grad(ctx.g[:, k].sum(), ctx.y, retain_graph=True)[0][:, k] for k in range(m)
        ], dim=1)
        return CurvatureEstimate(matrix=torch.diag_embed(diag.detach()), method="diagonal")


@pytest.fixture(scope="module")
def diagonal():
    provider = register_curvature("test_diagonal_hessian", DiagonalHessian(), override=True)
    yield provider
    # Registrations are global: leave the registry (and the harness's variants) as found.
    from newton_losses.curvature import registry

    for name in ("test_diagonal_hessian", "test_scaled_identity"):
        registry._REGISTRY.pop(name, None)


def test_registered_curvature_gives_the_hand_computed_newton_step(diagonal):
    # ℓ_i(y) = Σ_k a_ik y_k⁴/4 + b_k y_k y_{k+1}: ∂²ℓ/∂y_k² = 3 a_ik y_k², off-diagonal b_k.
    N, m = 3, 4
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(N, m, generator=gen, dtype=F64) + 0.5
    b = torch.randn(m - 1, generator=gen, dtype=F64)
    y = torch.randn(N, m, generator=gen, dtype=F64)

    def loss(yy):
        return (a * yy**4 / 4).sum(-1) + (b * yy[:, :-1] * yy[:, 1:]).sum(-1)

    g = a * y**3
    g[:, :-1] += b * y[:, 1:]
    g[:, 1:] += b * y[:, :-1]
    lam = 0.3
    expected = g / (3 * a * y**2 + lam)  # (diag(C_i) + λ)^{-1} g_i by hand
    newton = NewtonLoss(loss, curvature="test_diagonal_hessian", lam=lam)
    d = y - newton.target(y)
    torch.testing.assert_close(d, expected, rtol=1e-10, atol=1e-12)
    assert newton.last_diagnostics.curvature == "test_diagonal_hessian"
    assert newton.last_diagnostics.method == "diagonal"
    assert "test_diagonal_hessian" in available_curvatures()


def test_a_function_can_be_registered_as_a_first_order_provider():
    # C = 2·I for every sample: the step is g / (2 + λ).
    register_curvature("test_scaled_identity",
                       lambda ctx: CurvatureEstimate(matrix=2.0 * torch.eye(ctx.y.shape[1], dtype=F64)),
                       override=True)
    y = torch.randn(4, 3, dtype=F64)
    d = y - NewtonLoss(lambda yy: (yy**3).sum(-1), curvature="test_scaled_identity", lam=1.0).target(y)
    torch.testing.assert_close(d, 3 * y**2 / 3.0, rtol=1e-12, atol=1e-14)


def test_unknown_name_lists_the_known_ones(diagonal):
    with pytest.raises(ValueError) as exc:
        NewtonLoss(lambda y: y.sum(-1), curvature="hesian")
    msg = str(exc.value)
    assert "'hesian'" in msg
    for name in newton_losses.CURVATURES + ("test_diagonal_hessian",):
        assert repr(name) in msg


def test_duplicate_registration_is_an_error_unless_overridden(diagonal):
    with pytest.raises(ValueError, match="already registered.*override=True"):
        register_curvature("test_diagonal_hessian", DiagonalHessian())
    with pytest.raises(ValueError, match="already registered"):
        register_curvature("fisher", DiagonalHessian())
    assert register_curvature("test_diagonal_hessian", diagonal, override=True) is diagonal


@pytest.mark.parametrize("name, provider, error", [
    ("", DiagonalHessian(), TypeError),
    (3, DiagonalHessian(), TypeError),
    ("test_bad", DiagonalHessian, TypeError),  # the class, not an instance
    ("test_bad", 42, TypeError),
    ("Test_Bad", DiagonalHessian(), ValueError),  # names become run ids and command-line values
    ("test bad/1", DiagonalHessian(), ValueError),
    ("../test_bad", DiagonalHessian(), ValueError),
    ("none", DiagonalHessian(), ValueError),  # the harness's plain loss
    ("custom", DiagonalHessian(), ValueError),  # the diagnostics' label of a callable curvature
])
def test_bad_registrations(name, provider, error):
    with pytest.raises(error):
        register_curvature(name, provider)
    assert "test_bad" not in available_curvatures()


def test_builtin_names_are_the_registered_builtins():
    assert newton_losses.CURVATURES == ("hessian", "hessian_batch", "fisher", "gauss_newton")
    assert available_curvatures()[:4] == newton_losses.CURVATURES


def test_assigning_a_curvature_takes_effect_on_the_next_call():
    y = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    newton = NewtonLoss(lambda yy: (yy ** 4).sum(-1) / 4, curvature="hessian", lam=1.0)
    newton.target(y)
    assert newton.last_diagnostics.curvature == "hessian"
    newton.curvature = "fisher"
    d = y - newton.target(y)
    g = y ** 3
    F = g.T @ g / 2
    torch.testing.assert_close(d, torch.linalg.solve(F + torch.eye(2, dtype=F64), g.T).T)
    assert newton.last_diagnostics.curvature == "fisher" and newton.curvature == "fisher"
    with pytest.raises(ValueError, match="curvature must be one of"):
        newton.curvature = "hesian"


def test_solver_requests_a_curvature_cannot_honour():
    quad = lambda yy: (yy ** 2).sum(-1)  # noqa: E731
    with pytest.raises(ValueError, match="pass one of them"):
        NewtonLoss(quad, curvature="hessian", hessian_method="cg", solver="dense")
    with pytest.raises(ValueError, match="needs the curvature's eigenvalues"):
        NewtonLoss(quad, curvature="hessian", solver="cg", damping="relative")
    # The Fisher is always solved densely: no CG to refuse relative damping to, but a warning.
    with pytest.warns(UserWarning, match="no matrix-free form"):
        NewtonLoss(quad, curvature="fisher", solver="cg", damping="relative")
