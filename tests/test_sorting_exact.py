"""The exact ranking BCE (RankingLoss's default): in float32 it equals the float64 loss on
confidently wrong sets — false entries within 10⁻⁸ of 1, where the naive BCE's float32 gradient
is thousands of times too large — for every relaxation and sigmoid; it is the naive loss in
exact arithmetic (float64), twice differentiable; DiffSortNet's precise soft swaps are its lerp
ones up to rounding."""
import warnings

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from newton_losses import NewtonLoss
from newton_losses.sorting import (
    DiffSortNet,
    NeuralSort,
    RankingLoss,
    SoftSort,
    permutation_matrix,
    ranking_bce,
    ranking_bce_exact,
)

RELAXATIONS = {
    "neuralsort": lambda n: NeuralSort(1.0),
    "softsort": lambda n: SoftSort(1.0),
    "softsort_p2": lambda n: SoftSort(1.0, power=2.0),
    **{f"{net}_{sig}": (lambda n, net=net, sig=sig: DiffSortNet(net, n, 10.0, sig))
       for net in ("odd_even", "bitonic") for sig in ("logistic", "logistic_phi", "cauchy")},
}


def confidently_wrong_sets(relaxation, n, log_scale, count=6000, seed=1):
    """float32 scores (as float64) and targets of sets with a false entry (target 0) whose float64
    P lies within [1e-12, 1e-8] of 1: a random pair of the true order swapped in the target."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.empty(count, 1, dtype=torch.float64).uniform_(*log_scale, generator=g))
    y = (torch.randn(count, n, generator=g, dtype=torch.float64) * scale).float().double()
    t = y.clone()
    i = torch.arange(count)
    a = torch.randint(0, n, (count,), generator=g)
    b = (a + 1 + torch.randint(0, n - 1, (count,), generator=g)) % n
    t[i, a], t[i, b] = y[i, b], y[i, a]
    T = permutation_matrix(t)
    P = RankingLoss(relaxation).inner(y)
    gap = torch.where(T == 0, 1 - P, torch.ones_like(P)).flatten(1).min(1).values
    keep = (gap <= 1e-8) & (gap >= 1e-12)
    return y[keep], T[keep]


def _per_set_errors(relaxation, y64, T, loss):
    ref_y = y64.clone().requires_grad_(True)
    ref = RankingLoss(relaxation)(ref_y, T)  # float64: the exact and the naive loss agree (below)
    (g_ref,) = torch.autograd.grad(ref.sum(), ref_y)
    y32 = y64.float().requires_grad_(True)
    out = RankingLoss(relaxation, loss=loss)(y32, T.float())
    (g32,) = torch.autograd.grad(out.sum(), y32)
    grad_err = (g32.double() - g_ref).norm(dim=-1) / g_ref.norm(dim=-1)
    value_err = (out.double() - ref).abs() / ref.abs()
    return grad_err, value_err


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
def test_float32_exact_loss_equals_the_float64_loss_on_confidently_wrong_sets(name):
    n = 6
    relaxation = RELAXATIONS[name](n)
    # The Cauchy swap's tail is polynomial: its entries come within 1e-8 of 1 only for score
    # gaps of about 10^7 / β.
    log_scale = (14.0, 18.0) if name.endswith("cauchy") else (0.0, 8.0)
    y64, T = confidently_wrong_sets(relaxation, n, log_scale)
    assert len(T) >= 100, len(T)
    grad_err, value_err = _per_set_errors(relaxation, y64, T, "bce_exact")
    # Measured: median 1e-7..1e-6, 99th percentile ≤ 3e-5. The rare larger errors are float32's
    # own conditioning of the relaxation (nearly tied large scores), which the naive loss has too.
    assert float(grad_err.median()) < 1e-5
    assert float(grad_err.quantile(0.99)) < 2e-4
    assert float(value_err.detach().max()) < 1e-4
    naive_grad_err, naive_value_err = _per_set_errors(relaxation, y64, T, "bce")
    assert float(naive_value_err.max()) > 0.01  # what the exact form repairs


@pytest.mark.parametrize("name", sorted(RELAXATIONS))
def test_exact_equals_naive_in_float64_and_is_twice_differentiable(name):
    g = torch.Generator().manual_seed(3)
    relaxation = RELAXATIONS[name](5)
    # Scores small enough that no entry comes within 1e-6 of 1, where the naive float64 loss is
    # itself exact to about 1e-10 (closer to 1, float64 fails like float32 does, later).
    y = torch.randn(4, 5, generator=g, dtype=torch.float64) * 0.3
    T = permutation_matrix(torch.randn(4, 5, generator=g, dtype=torch.float64))
    exact, naive = RankingLoss(relaxation), RankingLoss(relaxation, loss="bce")
    torch.testing.assert_close(exact(y, T), naive(y, T), rtol=1e-9, atol=0)
    assert gradcheck(lambda s: exact(s, T), (y.clone().requires_grad_(True),))
    assert gradgradcheck(lambda s: exact(s, T), (y.clone().requires_grad_(True),))
    # Same Hessian (with respect to the scores) as the naive loss: the two differ only in how
    # they depend on row sums, which the relaxation keeps at 1.
    H_exact = torch.autograd.functional.hessian(lambda s: exact(s, T).sum(), y)
    H_naive = torch.autograd.functional.hessian(lambda s: naive(s, T).sum(), y)
    torch.testing.assert_close(H_exact, H_naive, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
@pytest.mark.parametrize("sigmoid", ["logistic", "logistic_phi", "cauchy"])
@pytest.mark.parametrize("n", [5, 13])
def test_precise_soft_swaps_are_the_lerp_ones_up_to_rounding(network, sigmoid, n):
    """n = 13 takes the fused layers (custom autograd functions), n = 5 plain autograd; both
    forms agree in value, first and second derivatives, also under torch.func."""
    g = torch.Generator().manual_seed(4)
    precise, lerp = DiffSortNet(network, n, 3.0, sigmoid), DiffSortNet(network, n, 3.0, sigmoid, precise=False)
    y = torch.randn(3, n, generator=g, dtype=torch.float64) * 3
    torch.testing.assert_close(precise(y), lerp(y), rtol=1e-12, atol=1e-15)
    w = torch.randn(3, n, n, generator=g, dtype=torch.float64)
    H = [torch.autograd.functional.hessian(lambda s: (net(s) * w).sum(), y) for net in (precise, lerp)]
    torch.testing.assert_close(H[0], H[1], rtol=1e-9, atol=1e-11)
    J = torch.func.vmap(torch.func.jacrev(precise))(y)
    torch.testing.assert_close(J, torch.func.vmap(torch.func.jacrev(lerp))(y), rtol=1e-10, atol=1e-12)


def test_small_entries_keep_their_digits_in_float32():
    """The lerp form loses an entry 1e-9 from 0 (it takes 1 − α as a rounded difference); the
    precise soft swaps keep it to float32 precision."""
    y = torch.tensor([[0.0, 21.0]])  # α = σ(21) = 1 − 7.6e-10
    tiny = torch.sigmoid(torch.tensor(-21.0, dtype=torch.float64))
    assert float(DiffSortNet("odd_even", 2, 1.0, precise=False)(y)[0, 0, 1]) == 0.0
    assert abs(float(DiffSortNet("odd_even", 2, 1.0)(y)[0, 0, 1]) / float(tiny) - 1) < 1e-6


def test_ties_at_one_half_and_the_loss_at_the_target():
    """Two entries of ½ in a row (a tie at a comparator): float32 rounding may lift both above ½;
    the complement still comes from the row's other entries. ℓ(T, T) = 0."""
    P = torch.tensor([[[0.50000006, 0.50000006, 0.0], [0.49999997, 0.49999997, 0.00000006], [0.0, 0.0, 1.0]]])
    T = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    torch.testing.assert_close(ranking_bce_exact(P, T), ranking_bce(P.double(), T.double()).float(),
                               rtol=1e-5, atol=0)
    assert float(ranking_bce_exact(T, T).abs().max()) == 0.0


def test_column_stochastic_and_non_stochastic_relaxations():
    g = torch.Generator().manual_seed(5)
    y = torch.randn(4, 5, generator=g, dtype=torch.float64)
    T = permutation_matrix(torch.randn(4, 5, generator=g, dtype=torch.float64))

    def columns(s):  # NeuralSort transposed: columns sum to one
        return NeuralSort(0.5)(s).transpose(-1, -2)

    loss = RankingLoss(columns)
    torch.testing.assert_close(loss(y, T.transpose(-1, -2)), ranking_bce(columns(y), T.transpose(-1, -2)))

    def leaky(s):
        return 0.9 * NeuralSort(0.5)(s)

    loss = RankingLoss(leaky)
    with pytest.warns(RuntimeWarning, match="neither its rows nor its columns"):
        out = loss(y, T)
    torch.testing.assert_close(out, ranking_bce(leaky(y), T))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(y, T)  # warned once
    with pytest.raises(ValueError, match="needs P whose rows sum to 1"):
        ranking_bce_exact(leaky(y), T)
    with pytest.raises(ValueError, match="dim must be -1"):
        ranking_bce_exact(NeuralSort(0.5)(y), T, dim=0)


@pytest.mark.parametrize("curvature", ["hessian", "hessian_batch", "fisher", "gauss_newton"])
def test_newton_losses_on_the_exact_loss_match_a_float64_oracle(curvature):
    """Newton steps of the exact loss with float32 scores equal the float64 dense oracle of the
    same curvature on confidently wrong sets (where the naive float32 loss's steps do not)."""
    from newton_losses import CompositeLoss

    relaxation = DiffSortNet("odd_even", 5, 10.0, "logistic")
    y64, T = confidently_wrong_sets(relaxation, 5, (0.0, 6.0), count=3000)
    y64, T = y64[:8], T[:8]
    rl = RankingLoss(relaxation)
    loss = CompositeLoss(rl.inner, rl.outer)
    d32 = y64.float() - NewtonLoss(loss, curvature=curvature, lam=0.1).target(y64.float(), T.float())
    d64 = y64 - NewtonLoss(loss, curvature=curvature, lam=0.1).target(y64, T)
    err = (d32.double() - d64).norm(dim=-1) / d64.norm(dim=-1)
    assert float(err.max()) < 1e-3, err


def test_float16_is_refused_with_advice_and_bfloat16_works():
    """ε = 1e-12 is 0 in float16: the losses would be NaN for every set."""
    g = torch.Generator().manual_seed(6)
    y = torch.randn(4, 5, generator=g)
    T = permutation_matrix(torch.randn(4, 5, generator=g))
    for loss in ("bce_exact", "bce", "ce"):
        with pytest.raises(ValueError, match="below the smallest normal torch.float16"):
            RankingLoss(NeuralSort(1.0), loss=loss)(y.half(), T.half())
    assert torch.isfinite(RankingLoss(NeuralSort(1.0), dtype=torch.float32)(y.half(), T)).all()
    assert torch.isfinite(RankingLoss(NeuralSort(1.0))(y.bfloat16(), T.bfloat16())).all()


def test_one_sample_does_not_change_another_samples_loss():
    """The stochastic dimension is decided per matrix: a non-stochastic sample falls back to the
    naive form alone, the others stay exact (each sample's loss depends on its own P only)."""
    g = torch.Generator().manual_seed(7)
    y = torch.randn(3, 5, generator=g, dtype=torch.float64)
    T = permutation_matrix(torch.randn(3, 5, generator=g, dtype=torch.float64))

    def mixed(s):
        P = NeuralSort(0.5)(s)
        return torch.cat([P[:1] * 0.9, P[1:]])  # sample 0 leaks mass

    with pytest.warns(RuntimeWarning, match="for some samples"):
        out = RankingLoss(mixed)(y, T)
    alone = RankingLoss(NeuralSort(0.5))(y[1:], T[1:])
    torch.testing.assert_close(out[1:], alone, rtol=1e-12, atol=0)  # same formula, maybe another summation order
    torch.testing.assert_close(out[:1], ranking_bce(mixed(y)[:1], T[:1]))
