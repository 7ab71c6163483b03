"""Damped solves: dense projections, CG (with truncation) and Woodbury against numpy/scipy."""
import numpy as np
import pytest
import scipy.linalg
import torch

from newton_losses.linalg import conjugate_gradient, damped_solve, low_rank_damped_solve

from _losses import spd

F64 = torch.float64


def sym_indefinite(N, m, gen=None):
    B = torch.randn(N, m, m, dtype=F64, generator=gen)
    return 0.5 * (B + B.transpose(1, 2))


@pytest.mark.parametrize("projection", ["abs", "clamp", "tikhonov"])
def test_dense_solve_on_spd_equals_scipy_solve(projection):
    N, m, lam = 6, 5, 0.3
    C, g = spd(N, m, cond=1e3), torch.randn(N, m, dtype=F64)
    d, info = damped_solve(C, g, lam, projection=projection)
    for i in range(N):
        ref = scipy.linalg.solve(C[i].numpy() + lam * np.eye(m), g[i].numpy(), assume_a="pos")
        np.testing.assert_allclose(d[i].numpy(), ref, rtol=1e-10, atol=1e-12)
    assert info.n_indefinite == 0 and info.n_fallback == 0
    assert info.min_eig > 0


def test_dense_solve_shared_matrix():
    m, lam = 4, 0.1
    C, g = spd(1, m)[0], torch.randn(7, m, dtype=F64)
    d, info = damped_solve(C, g, lam)
    ref = np.linalg.solve(C.numpy() + lam * np.eye(m), g.numpy().T).T
    np.testing.assert_allclose(d.numpy(), ref, rtol=1e-10)
    assert info.n_matrices == 1


def test_indefinite_projections_are_descent_and_counted():
    torch.manual_seed(0)
    N, m = 50, 6
    C, g = sym_indefinite(N, m), torch.randn(N, m, dtype=F64)
    for projection in ("abs", "clamp", "tikhonov"):
        d, info = damped_solve(C, g, 0.01, projection=projection)
        assert (torch.einsum("ni,ni->n", d, g) > 0).all(), projection
        assert info.n_indefinite == N
        assert info.min_eig < 0
        if projection == "tikhonov":
            assert info.n_fallback == N  # μ + 0.01 ≤ 0 for every random indefinite matrix here
        else:
            assert info.n_fallback == 0
    # abs: |μ| + λ, checked against numpy.
    d, _ = damped_solve(C, g, 0.01, projection="abs")
    mu, Q = np.linalg.eigh(C.numpy())
    ref = np.einsum("nij,nj->ni", Q, np.einsum("nji,nj->ni", Q, g.numpy()) / (np.abs(mu) + 0.01))
    np.testing.assert_allclose(d.numpy(), ref, rtol=1e-9)


def test_tikhonov_keeps_plain_form_when_positive_definite():
    C = torch.diag(torch.tensor([-0.5, 2.0], dtype=F64)).unsqueeze(0)
    g = torch.tensor([[1.0, 1.0]], dtype=F64)
    d, info = damped_solve(C, g, 1.0, projection="tikhonov")
    torch.testing.assert_close(d, torch.tensor([[1 / 0.5, 1 / 3.0]], dtype=F64))
    assert info.n_indefinite == 1 and info.n_fallback == 0
    d, _ = damped_solve(C, g, 1.0, projection="clamp")
    torch.testing.assert_close(d, torch.tensor([[1 / 1.0, 1 / 3.0]], dtype=F64))


def test_singular_without_damping_is_pseudo_inverse():
    # Sorting losses are invariant to adding a constant: C has the all-ones null space.
    m = 4
    P = torch.eye(m, dtype=F64) - 1.0 / m
    C = (P @ spd(1, m)[0] @ P).unsqueeze(0)
    g = (P @ torch.randn(m, dtype=F64)).unsqueeze(0)
    d, _ = damped_solve(C, g, 0.0)
    ref = np.linalg.pinv(C[0].numpy()) @ g[0].numpy()
    np.testing.assert_allclose(d[0].numpy(), ref, atol=1e-8)
    assert torch.isfinite(d).all()


def test_relative_damping_scales_with_curvature():
    N, m = 3, 4
    C, g = spd(N, m), torch.randn(N, m, dtype=F64)
    d1, i1 = damped_solve(C, g, 0.1, damping="relative")
    d2, i2 = damped_solve(10 * C, 10 * g, 0.1, damping="relative")
    torch.testing.assert_close(d1, d2)  # invariant to the loss's scale
    assert abs(i2.lam_effective - 10 * i1.lam_effective) < 1e-9


def test_cg_matches_dense_on_spd():
    N, m, lam = 5, 12, 0.05
    C, g = spd(N, m, cond=1e2), torch.randn(N, m, dtype=F64)
    d, info = conjugate_gradient(lambda V: torch.einsum("nij,nj->ni", C, V), g, lam, max_iter=200)
    ref, _ = damped_solve(C, g, lam)
    torch.testing.assert_close(d, ref, rtol=1e-8, atol=1e-10)
    assert info.max_residual < 1e-9 and info.n_fallback == 0


def test_cg_truncates_at_negative_curvature_with_descent():
    torch.manual_seed(1)
    N, m = 40, 8
    C, g = sym_indefinite(N, m), torch.randn(N, m, dtype=F64)
    d, info = conjugate_gradient(lambda V: torch.einsum("nij,nj->ni", C, V), g, 0.01)
    assert (torch.einsum("ni,ni->n", d, g) > 0).all()
    assert info.n_fallback > 0 and info.n_indefinite >= info.n_fallback
    assert torch.isfinite(d).all()


def test_cg_zero_rhs_rows():
    C = spd(3, 4)
    g = torch.randn(3, 4, dtype=F64)
    g[1] = 0
    d, _ = conjugate_gradient(lambda V: torch.einsum("nij,nj->ni", C, V), g, 0.1)
    assert (d[1] == 0).all() and torch.isfinite(d).all()


def test_woodbury_fisher_equals_dense():
    K, m, lam = 6, 30, 0.2
    G = torch.randn(K, m, dtype=F64)
    g = torch.randn(4, m, dtype=F64)
    F = G.T @ G / K
    d, info = low_rank_damped_solve(G, K, g, lam)
    ref = np.linalg.solve(F.numpy() + lam * np.eye(m), g.numpy().T).T
    np.testing.assert_allclose(d.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert info.min_eig == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(projection="nope"), "projection"),
        (dict(fallback="tikhonov"), "fallback"),
        (dict(damping="x"), "damping"),
    ],
)
def test_solver_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        damped_solve(spd(1, 2), torch.ones(1, 2, dtype=F64), 0.1, **kwargs)


def test_solver_shape_errors():
    with pytest.raises(ValueError, match="curvature must have shape"):
        damped_solve(torch.eye(3, dtype=F64), torch.ones(2, 2, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="lam"):
        conjugate_gradient(lambda v: v, torch.ones(2, 2), -1.0)
    with pytest.raises(ValueError, match="lam"):
        low_rank_damped_solve(torch.ones(2, 3), 2, torch.ones(1, 3), 0.0)


def test_float32_roundoff_is_not_reported_as_indefinite():
    # A PSD matrix computed in float32 has rounding-level negative eigenvalues; they are not
    # indefiniteness and must not trigger the Tikhonov fallback.
    torch.manual_seed(3)
    J2 = torch.randn(20, 3, 6)
    G = (J2.transpose(1, 2) @ J2).float()  # rank 3 of 6: exact zeros in exact arithmetic
    g = torch.randn(20, 6)
    d, info = damped_solve(G, g, 0.0, projection="tikhonov")
    assert info.n_indefinite == 0 and info.n_fallback == 0
    assert torch.isfinite(d).all()


# ---------------------------------------------------------------- batch damping (unit-free λ)
def test_batch_damping_is_absolute_damping_at_the_batch_scale():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(6, 4, 4, generator=g, dtype=torch.float64)
    C = A @ A.transpose(-1, -2) * torch.logspace(-3, 2, 6, dtype=torch.float64).view(6, 1, 1)
    rhs = torch.randn(6, 4, generator=g, dtype=torch.float64)
    scale = float(torch.linalg.eigvalsh(C).abs().mean())
    d_batch, info = damped_solve(C, rhs, 0.3, damping="batch")
    d_abs, _ = damped_solve(C, rhs, 0.3 * scale)
    torch.testing.assert_close(d_batch, d_abs)
    assert info.lam_effective == pytest.approx(0.3 * scale)
    # Unit-free: scaling the curvature and the gradient together leaves the direction unchanged.
    d_scaled, _ = damped_solve(1e4 * C, 1e4 * rhs, 0.3, damping="batch")
    torch.testing.assert_close(d_scaled, d_batch)
    # Unlike per-matrix relative damping, samples keep their relative weighting.
    d_rel, _ = damped_solve(C, rhs, 0.3, damping="relative")
    assert not torch.allclose(d_rel, d_batch)
    # A reduce hook sees (Σ|μ|, count): doubling both leaves the scale unchanged.
    d_red, _ = damped_solve(C, rhs, 0.3, damping="batch", reduce=lambda t: 2 * t)
    torch.testing.assert_close(d_red, d_batch)


def _rank_deficient_float32(N, m, r, gen):
    """(N, m, m) float32 PSD matrices of rank r < m (as a sampled estimate is), and right-hand
    sides with a component outside their range."""
    U = torch.randn(N, m, r, generator=gen)
    C = U @ U.transpose(1, 2) / r
    return C, torch.randn(N, m, generator=gen)


def test_dense_solve_with_lam0_drops_rounding_level_eigenvalues_of_a_float32_matrix():
    """λ = 0 and a singular float32 C: the eigenvalues at float32 rounding are zeros, not curvature —
    the solve is the pseudo-inverse's (oracle: numpy's pinv of the float64 copy with the float32
    matrix's own cutoff), finite, and the matrices are counted as singular."""
    gen = torch.Generator().manual_seed(0)
    N, m, r = 5, 12, 4
    C, g = _rank_deficient_float32(N, m, r, gen)
    d, info = damped_solve(C, g, 0.0)
    assert torch.isfinite(d).all()
    assert info.n_singular == N
    for i in range(N):
        Ci = C[i].double().numpy()
        ref = np.linalg.pinv(0.5 * (Ci + Ci.T), rcond=1e-4, hermitian=True) @ g[i].double().numpy()
        np.testing.assert_allclose(d[i].double().numpy(), ref, rtol=1e-3, atol=1e-4)
    # with λ > 0 nothing is dropped (the damped matrix is regular) and nothing is counted
    d1, info1 = damped_solve(C, g, 1e-3)
    assert info1.n_singular == 0
    np.testing.assert_allclose(d1[0].double().numpy(),
                               np.linalg.solve(C[0].double().numpy() + 1e-3 * np.eye(m), g[0].double().numpy()),
                               rtol=1e-3)


def test_cg_with_lam0_stops_on_zero_curvature_instead_of_dividing_by_rounding():
    """Matrix-free λ = 0 on a singular float32 curvature with g outside its range (an
    inconsistent system, as a sampled estimate of rank < m gives): the search directions'
    curvature falls to the rounding level of the products; CG stops there (counted in
    n_singular) instead of dividing by it. Undamped Newton has no good answer here — the
    iterate grows with g's part outside the range, which NewtonLoss warns about — but it stays
    finite and far from the 1/eps blow-up."""
    gen = torch.Generator().manual_seed(1)
    N, m, r = 4, 40, 10
    C, g = _rank_deficient_float32(N, m, r, gen)
    x, info = conjugate_gradient(lambda V: torch.einsum("nij,nj->ni", C, V), g, 0.0)
    assert torch.isfinite(x).all() and info.n_singular == N
    assert float(x.norm(dim=-1).max()) < 1e7 * float(g.norm(dim=-1).max())
    # a regular system is untouched by the check
    A = C + 0.5 * torch.eye(m)
    x2, info2 = conjugate_gradient(lambda V: torch.einsum("nij,nj->ni", A, V), g, 0.0)
    assert info2.n_singular == 0
    np.testing.assert_allclose(x2.double().numpy(), np.linalg.solve(A.double().numpy(), g.double().numpy()[..., None])[..., 0],
                               rtol=1e-3, atol=1e-4)


def test_a_tiny_nonzero_damping_scale_is_not_taken_for_a_zero_curvature():
    """The fallback to absolute λ tests the scale itself: λ × scale may underflow for a tiny but
    nonzero curvature, which still gets its relative damping (oracle: C = sI, step g/(s(1+λ)))."""
    from newton_losses.linalg import damped_solve

    s, lam = 1e-200, 1e-200
    C = s * torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    g = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d, info = damped_solve(C, g, lam, damping="relative")
    assert info.n_unscaled == 0
    torch.testing.assert_close(d * s, g / (1 + lam))
    d0, info0 = damped_solve(torch.zeros(4, 3, 3, dtype=torch.float64), g, 0.5, damping="batch")
    assert info0.n_unscaled == 4 and info0.n_singular == 0
    torch.testing.assert_close(d0, g / 0.5)
