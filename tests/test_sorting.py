"""Sorting relaxations: convention, hard limit, stochasticity, shapes, the ranking loss, bad input.

Oracles: torch.sort / a Python sort for the true permutation, torch's binary_cross_entropy for the
loss, per-sample evaluation for batching. Agreement with the reference packages is in
test_sorting_reference.py, derivatives in test_sorting_autodiff.py.
"""

import math

import pytest
import torch

from newton_losses.sorting import (
    DiffSortNet,
    NeuralSort,
    RankingLoss,
    SoftSort,
    neural_sort,
    permutation_matrix,
    ranking_bce,
    soft_sort,
)

NETWORKS = ("odd_even", "bitonic")
SIGMOIDS = ("logistic", "logistic_phi", "cauchy")


def relaxation_cases(n, sharp=False):
    """(id, relaxation) for every relaxation; ``sharp`` picks parameters near the hard limit."""
    tau = 1e-3 if sharp else 0.5
    cases = [
        ("neuralsort", NeuralSort(tau)),
        ("softsort_p1", SoftSort(tau)),
        ("softsort_p2", SoftSort(tau, power=2.0)),
        ("softsort_p1.5", SoftSort(tau, power=1.5)),
    ]
    for network in NETWORKS:
        for sigmoid in SIGMOIDS:
            steepness = (1e10 if sigmoid == "cauchy" else 1e4) if sharp else 2.0
            cases.append((f"{network}_{sigmoid}", DiffSortNet(network, n, steepness, sigmoid)))
    return cases


CASE_IDS = [case_id for case_id, _ in relaxation_cases(4)]


def make(case_id, n, sharp=False):
    return dict(relaxation_cases(n, sharp))[case_id]


def separated_scores(*shape, generator, dtype=torch.float64):
    """Scores whose sorted gaps are at least 0.8, in random order."""
    n = shape[-1]
    base = torch.stack([torch.randperm(n, generator=generator) for _ in range(math.prod(shape[:-1]))])
    jitter = 0.2 * torch.rand(base.shape, generator=generator, dtype=dtype)
    return (base.to(dtype) + jitter).reshape(shape)


# --- ground truth -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_permutation_matrix_sorts_ascending(dtype):
    g = torch.Generator().manual_seed(0)
    values = (100 * torch.randn(3, 4, 7, generator=g)).to(dtype)
    P = permutation_matrix(values)
    assert P.shape == (3, 4, 7, 7)
    assert P.dtype == (torch.float64 if dtype == torch.float64 else torch.get_default_dtype())
    assert not P.requires_grad
    sorted_values = torch.sort(values, dim=-1).values.to(P.dtype)
    torch.testing.assert_close((P @ values.to(P.dtype).unsqueeze(-1)).squeeze(-1), sorted_values)


def test_permutation_matrix_breaks_ties_by_index():
    values = torch.tensor([2.0, 1.0, 2.0, 1.0, 0.5])
    order = sorted(range(5), key=lambda k: (values[k].item(), k))  # [4, 1, 3, 0, 2]
    expected = torch.zeros(5, 5)
    for position, item in enumerate(order):
        expected[position, item] = 1.0
    assert torch.equal(permutation_matrix(values), expected)


def test_permutation_matrix_from_ranks():
    ranks = torch.tensor([2, 0, 3, 1])  # item k is at position ranks[k]
    P = permutation_matrix(ranks, dtype=torch.float64)
    for item, position in enumerate(ranks.tolist()):
        assert P[position, item] == 1.0
    assert P.sum() == 4


# --- convention and hard limit ------------------------------------------------------------------


@pytest.mark.parametrize("case_id", CASE_IDS)
@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_hard_limit_gives_the_true_permutation(case_id, n):
    g = torch.Generator().manual_seed(n)
    scores = separated_scores(6, n, generator=g)
    P = make(case_id, n, sharp=True)(scores)
    torch.testing.assert_close(P, permutation_matrix(scores), atol=1e-8, rtol=0)


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("n", [*range(2, 20), 31, 32, 33, 64, 100])
def test_sorting_networks_sort_exactly_for_every_n(network, n):
    g = torch.Generator().manual_seed(n)
    scores = separated_scores(3, n, generator=g)
    P = DiffSortNet(network, n, steepness=1e4)(scores)
    assert torch.equal(P, permutation_matrix(scores))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_sorted_values_are_approximated(case_id):
    g = torch.Generator().manual_seed(1)
    scores = separated_scores(4, 6, generator=g)
    P = make(case_id, 6, sharp=True)(scores)
    torch.testing.assert_close((P @ scores.unsqueeze(-1)).squeeze(-1), scores.sort(-1).values, atol=1e-7, rtol=0)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_entries_in_unit_interval_and_rows_stochastic(case_id):
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(5, 6, generator=g, dtype=torch.float64)
    P = make(case_id, 6)(scores)
    assert P.min() >= 0 and P.max() <= 1
    torch.testing.assert_close(P.sum(-1), torch.ones(5, 6, dtype=torch.float64))


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("sigmoid", SIGMOIDS)
@pytest.mark.parametrize("n", [5, 8])
def test_sorting_networks_are_doubly_stochastic(network, sigmoid, n):
    g = torch.Generator().manual_seed(3)
    P = DiffSortNet(network, n, 1.0, sigmoid)(torch.randn(4, n, generator=g, dtype=torch.float64))
    ones = torch.ones(4, n, dtype=torch.float64)
    torch.testing.assert_close(P.sum(-1), ones)
    torch.testing.assert_close(P.sum(-2), ones)


def test_ties_give_the_symmetric_mix():
    # Equal scores are indistinguishable: a logistic comparator mixes them half and half.
    P = DiffSortNet("odd_even", 2, steepness=10.0)(torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(P, torch.full((2, 2), 0.5))


def test_functional_forms_match_modules():
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 5, generator=g)
    torch.testing.assert_close(neural_sort(scores, 0.3), NeuralSort(0.3)(scores))
    torch.testing.assert_close(soft_sort(scores, 0.3, 1.5), SoftSort(0.3, 1.5)(scores))


# --- shapes, dtypes -----------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_any_batch_shape_matches_per_sample(case_id):
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    relax = make(case_id, 5)
    P = relax(scores)
    assert P.shape == (2, 3, 5, 5)
    per_sample = torch.stack([relax(s) for s in scores.reshape(6, 5)]).reshape(2, 3, 5, 5)
    torch.testing.assert_close(P, per_sample)
    assert relax(scores[:0]).shape == (0, 3, 5, 5)


@pytest.mark.parametrize("case_id", CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(case_id, dtype):
    g = torch.Generator().manual_seed(6)
    scores = torch.randn(4, 5, generator=g, dtype=torch.float64)
    relax = make(case_id, 5)
    P = relax(scores.to(dtype))
    assert P.dtype == dtype
    torch.testing.assert_close(P.double(), relax(scores), atol=1e-5, rtol=0)


# --- ranking loss -------------------------------------------------------------------------------


def test_ranking_bce_matches_torch_bce_per_sample():
    g = torch.Generator().manual_seed(7)
    P = 0.01 + 0.98 * torch.rand(4, 5, 5, generator=g, dtype=torch.float64)
    T = permutation_matrix(torch.randn(4, 5, generator=g, dtype=torch.float64))
    expected = torch.stack([torch.nn.functional.binary_cross_entropy(p, t) for p, t in zip(P, T)])
    torch.testing.assert_close(ranking_bce(P, T), expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(ranking_bce(P, T).mean(), torch.nn.BCELoss()(P, T), rtol=1e-9, atol=0)


def test_ranking_bce_zero_at_target_and_finite_at_saturation():
    T = permutation_matrix(torch.tensor([[3.0, 1.0, 2.0]], dtype=torch.float64))
    assert ranking_bce(T, T).item() == 0.0
    wrong = (1 - T).requires_grad_()  # every entry at the wrong end: log(0) without the shift
    loss = ranking_bce(wrong, T)
    (grad,) = torch.autograd.grad(loss.sum(), wrong, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), wrong)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all() and torch.isfinite(second).all()
    assert loss.item() == pytest.approx(-math.log(1e-12 / (1 + 1e-12)), rel=1e-9)


def test_ranking_bce_tolerates_rounding_overshoot():
    T = torch.eye(3)
    P = (T * (1 + 1e-6) - (1 - T) * 1e-7).requires_grad_()  # slightly outside [0, 1] in float32
    loss = ranking_bce(P, T)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(P.grad).all()


@pytest.mark.parametrize("case_id", ["neuralsort", "odd_even_logistic"])
def test_ranking_loss_is_outer_of_inner(case_id):
    g = torch.Generator().manual_seed(8)
    scores = torch.randn(6, 5, generator=g, dtype=torch.float64)
    T = permutation_matrix(torch.randn(6, 5, generator=g, dtype=torch.float64))
    relax = make(case_id, 5)
    loss = RankingLoss(relax)
    assert loss.inner is relax and RankingLoss(relax, loss="bce").inner is relax
    out = loss(scores, T)
    assert out.shape == (6,)
    torch.testing.assert_close(out, loss.outer(relax(scores), T))
    torch.testing.assert_close(out, ranking_bce(relax(scores), T))  # float64: the same loss


def test_ranking_loss_prefers_the_true_order():
    g = torch.Generator().manual_seed(9)
    values = separated_scores(8, 5, generator=g)
    T = permutation_matrix(values)
    loss = RankingLoss(NeuralSort(0.5))
    assert (loss(values, T) < loss(-values, T)).all()


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", CASE_IDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_are_rejected(case_id, bad):
    scores = torch.randn(3, 4, dtype=torch.float64)
    scores[1, 2] = bad
    with pytest.raises(ValueError, match="scores must be finite"):
        make(case_id, 4)(scores)


@pytest.mark.parametrize("case_id", ["neuralsort", "softsort_p1"])
def test_too_short_or_wrong_type_scores_are_rejected(case_id):
    relax = make(case_id, 4)
    with pytest.raises(ValueError, match="n >= 2"):
        relax(torch.randn(3, 1))
    with pytest.raises(ValueError, match="0-d"):
        relax(torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating-point"):
        relax(torch.arange(4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        relax([1.0, 2.0])


def test_sorting_network_checks_its_size():
    with pytest.raises(ValueError, match=r"n must be >= 2.*got 1"):
        DiffSortNet("odd_even", 1)
    with pytest.raises(TypeError, match="n must be an int"):
        DiffSortNet("odd_even", 4.0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\).*got shape \(2, 5\)"):
        DiffSortNet("odd_even", 4)(torch.randn(2, 5))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda v: NeuralSort(tau=v), "tau"),
        (lambda v: SoftSort(tau=v), "tau"),
        (lambda v: SoftSort(tau=1.0, power=v), "power"),
        (lambda v: DiffSortNet("bitonic", 4, steepness=v), "steepness"),
        (lambda v: ranking_bce(torch.eye(2), torch.eye(2), eps=v), "eps"),
    ],
)
@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_non_positive_parameters_are_rejected(build, match, value):
    with pytest.raises(ValueError, match=f"{match} must be a finite number > 0, got {value!r}"):
        build(value)


def test_parameter_types_and_choices_are_checked():
    with pytest.raises(TypeError, match="tau must be a real number"):
        NeuralSort(tau="1")
    with pytest.raises(TypeError, match="steepness must be a real number"):
        DiffSortNet("odd_even", 4, steepness=True)
    with pytest.raises(ValueError, match="network must be one of"):
        DiffSortNet("bubble", 4)
    with pytest.raises(ValueError, match="sigmoid must be one of"):
        DiffSortNet("odd_even", 4, sigmoid="gaussian")
    with pytest.raises(ValueError, match=r"art_lambda must lie in \[0, 1\]"):
        DiffSortNet("odd_even", 4, sigmoid="logistic_phi", art_lambda=1.5)
    with pytest.raises(TypeError, match="relaxation must be callable"):
        RankingLoss("neuralsort")


def test_mismatched_targets_are_rejected():
    scores = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"true permutation matrices, shape \(\*scores.shape, n\) = \(3, 4, 4\)"):
        RankingLoss(NeuralSort())(scores, torch.eye(4))
    with pytest.raises(ValueError, match=r"P_true must have the shape of P \(3, 4, 4\), got \(3, 5, 5\)"):
        ranking_bce(torch.rand(3, 4, 4), torch.rand(3, 5, 5))
    with pytest.raises(ValueError, match=r"P must have shape \(\.\.\., n, n\)"):
        ranking_bce(torch.rand(3, 4), torch.rand(3, 4))
    with pytest.raises(ValueError, match="P must be finite"):
        ranking_bce(torch.full((2, 2), math.nan), torch.eye(2))


def test_ground_truth_input_is_checked():
    with pytest.raises(ValueError, match="NaN"):
        permutation_matrix(torch.tensor([1.0, math.nan]))
    with pytest.raises(TypeError, match="values must be a real"):
        permutation_matrix(torch.tensor([True, False]))
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        permutation_matrix(torch.tensor([1, 2]), dtype=torch.int64)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 5.0, -0.5, 1.0 + 1e-9])
def test_targets_outside_the_unit_interval_are_rejected(bad):
    scores = torch.randn(2, 4, dtype=torch.float64)
    target = permutation_matrix(torch.randn(2, 4, dtype=torch.float64))
    target[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"P_true must have finite entries in \[0, 1\]"):
        ranking_bce(NeuralSort()(scores), target)
    with pytest.raises(ValueError, match=r"P_true must have finite entries in \[0, 1\]"):
        RankingLoss(NeuralSort())(scores, target)
    with pytest.raises(ValueError, match=r"P_true must have finite entries in \[0, 1\]"):
        ranking_bce(NeuralSort()(scores), torch.full((2, 4, 4), 2, dtype=torch.int64))


def test_targets_in_the_unit_interval_are_accepted():
    P = NeuralSort()(torch.randn(3, 4, dtype=torch.float64))
    soft = torch.rand(3, 4, 4, dtype=torch.float64)
    expected = torch.stack([torch.nn.functional.binary_cross_entropy(p, t) for p, t in zip(P, soft)])
    torch.testing.assert_close(ranking_bce(P, soft), expected)
    hard = permutation_matrix(torch.randn(3, 4))
    for same in (hard.long(), hard.bool(), hard.float()):
        torch.testing.assert_close(ranking_bce(P, same), ranking_bce(P, hard.double()))
    with pytest.raises(TypeError, match="P_true must be a real tensor"):
        ranking_bce(P, hard.to(torch.complex128))


# ---------------------------------------------------------------- loss definitions (bce_clamp, ce)
from newton_losses.sorting import RANKING_LOSSES, ranking_bce_clamped, ranking_ce  # noqa: E402


def test_bce_clamped_matches_torch_bce_inside_the_clamp():
    g = torch.Generator().manual_seed(0)
    P = NeuralSort(1.0)(torch.randn(6, 5, generator=g, dtype=torch.float64))
    T = permutation_matrix(torch.randn(6, 5, generator=g, dtype=torch.float64))
    ref = torch.nn.functional.binary_cross_entropy(P.clamp(1e-6, 1 - 1e-6), T, reduction="none").mean((-2, -1))
    torch.testing.assert_close(ranking_bce_clamped(P, T), ref)


def test_bce_clamped_zeroes_the_gradient_of_confidently_wrong_entries():
    # A sharp relaxation, scores in the wrong order: the true entries round below ε.
    scores = torch.tensor([[3.0, 2.0, 1.0]], dtype=torch.float64, requires_grad=True)
    T = permutation_matrix(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))
    (g_clamp,) = torch.autograd.grad(RankingLoss(NeuralSort(0.06), loss="bce_clamp")(scores, T).sum(), scores)
    (g_bce,) = torch.autograd.grad(RankingLoss(NeuralSort(0.06), loss="bce")(scores, T).sum(), scores)
    assert torch.count_nonzero(g_clamp) == 0
    assert g_bce.abs().max() > 0.1  # the shifted log keeps a gradient there


def test_row_cross_entropy_against_a_float64_loop():
    g = torch.Generator().manual_seed(1)
    P = NeuralSort(0.7)(torch.randn(4, 6, generator=g, dtype=torch.float64))
    ranks = torch.randn(4, 6, generator=g, dtype=torch.float64)
    T = permutation_matrix(ranks)
    order = ranks.argsort(-1)
    ref = torch.tensor([
        -sum(math.log((P[b, i, order[b, i]].item() + 1e-12) / (1 + 1e-12)) for i in range(6)) / 6
        for b in range(4)
    ], dtype=torch.float64)
    torch.testing.assert_close(ranking_ce(P, T), ref)
    assert float(ranking_ce(T, T).abs().max()) == 0.0


@pytest.mark.parametrize("loss", RANKING_LOSSES)
def test_ranking_loss_kinds_have_finite_difference_gradients(loss):
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    T = permutation_matrix(torch.randn(3, 4, generator=g, dtype=torch.float64))
    rl = RankingLoss(NeuralSort(1.0), loss=loss)
    assert torch.autograd.gradcheck(lambda s: rl(s, T), (scores,))
    assert torch.autograd.gradgradcheck(lambda s: rl(s, T), (scores,))


def test_ranking_loss_kind_errors():
    with pytest.raises(ValueError, match="loss must be one of"):
        RankingLoss(NeuralSort(), loss="mse")
    with pytest.raises(ValueError, match="eps"):
        RankingLoss(NeuralSort(), loss="bce_clamp", eps=0.7)
    with pytest.raises(ValueError, match="eps"):
        ranking_bce_clamped(torch.eye(3), torch.eye(3), eps=0.5)
    assert RankingLoss(NeuralSort(), loss="bce_clamp").eps == 1e-6


@pytest.mark.parametrize("variant", ["fisher", "hessian", "gauss_newton"])
def test_ranking_loss_dtype_computes_in_float64_and_returns_float32_gradients(variant):
    """RankingLoss(dtype=float64) on float32 scores equals the loss of the float64 scores, its
    gradient reaches the scores in float32, and it plugs into NewtonLoss."""
    from newton_losses import CompositeLoss, NewtonLoss

    torch.manual_seed(0)
    net = DiffSortNet("odd_even", 5, steepness=10.0, sigmoid="logistic")
    scores = (3 * torch.randn(8, 5)).requires_grad_(True)
    target = permutation_matrix(torch.randn(8, 5))
    wide = RankingLoss(net, dtype=torch.float64)
    values = wide(scores, target)
    assert values.dtype == torch.float64
    expected = RankingLoss(net)(scores.detach().double(), target.double())
    assert torch.equal(values.detach(), expected)
    (grad,) = torch.autograd.grad(values.sum(), scores)
    assert grad.dtype == torch.float32
    s64 = scores.detach().double().requires_grad_(True)
    (grad64,) = torch.autograd.grad(RankingLoss(net)(s64, target.double()).sum(), s64)
    assert torch.allclose(grad.double(), grad64, rtol=1e-6, atol=1e-7)
    fn = CompositeLoss(wide.inner, wide.outer) if variant == "gauss_newton" else wide
    newton = NewtonLoss(fn, curvature=variant, lam=1.0, damping="batch")
    (g,) = torch.autograd.grad(newton(scores, target), scores)
    assert g.dtype == torch.float32 and torch.isfinite(g).all()
    with pytest.raises(TypeError, match="dtype"):
        RankingLoss(net, dtype=torch.int64)
    assert "dtype=torch.float64" in repr(wide)


def test_float32_rounding_of_the_bce_and_both_remedies():
    """One set from a gradient spike of a replayed training run (logistic network, β = 10, n = 5;
    RESULTS.md §2): a false entry of P (target 0) lies within 3e-8 of 1, float32 rounds it to
    exactly 1, and the naive BCE's float32 gradient comes out thousands of times too large.
    RankingLoss(dtype=float64) on the same float32 scores gives the true gradient, which central
    differences of the float64 loss confirm, and so does the default exact BCE in float32."""
    scores = torch.tensor([[0.11536180973052979, 0.20101846754550934, 0.5387735962867737,
                            -1.751017451286316, 0.29288342595100403]])
    target = permutation_matrix(torch.tensor([[0.0, 4.0, 3.0, 1.0, 2.0]]))
    # The study's arithmetic (lerp soft swaps), with which the naive BCE's failure was measured.
    net = DiffSortNet("odd_even", 5, steepness=10.0, sigmoid="logistic", precise=False)
    false = target[0] == 0
    assert float(net(scores)[0][false].max()) == 1.0  # rounded
    gap = float((1 - net(scores.double())[0][false]).min())
    assert 0 < gap < 3e-8

    def grad(loss, s):
        s = s.clone().requires_grad_(True)
        return torch.autograd.grad(loss(s, target).sum(), s)[0]

    g32 = grad(RankingLoss(net, loss="bce"), scores)
    g64 = grad(RankingLoss(net, loss="bce", dtype=torch.float64), scores)
    exact32 = grad(RankingLoss(DiffSortNet("odd_even", 5, steepness=10.0, sigmoid="logistic")), scores)
    assert exact32.dtype == torch.float32
    assert g64.dtype == torch.float32
    s64 = scores.double()
    f = RankingLoss(net, loss="bce")
    h = 1e-6
    fd = torch.stack([(f(s64 + h * e, target) - f(s64 - h * e, target)).sum() / (2 * h)
                      for e in torch.eye(5, dtype=torch.float64)])
    assert torch.allclose(g64[0].double(), fd, rtol=1e-3, atol=1e-5)
    assert g32.norm() > 1000 * g64.norm()
    # float32 arithmetic of a 5-layer network on these scores: a few ulps relative to the norm.
    assert float((exact32 - g64).norm() / g64.norm()) < 1e-5
