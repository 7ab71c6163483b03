"""Derivatives of the sorting relaxations and the ranking loss, in float64.

Oracles: finite differences (gradcheck, gradgradcheck, forward-mode gradcheck) and
torch.autograd.functional.hessian evaluated one sample at a time.
"""

import pytest
import torch
from torch.func import hessian, jacfwd, jacrev, vmap

from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix

NETWORKS = ("odd_even", "bitonic")
SIGMOIDS = ("logistic", "logistic_phi", "cauchy")


def relaxation_cases(n):
    cases = [
        ("neuralsort", NeuralSort(0.5)),
        ("softsort_p1", SoftSort(0.5)),
        ("softsort_p2", SoftSort(0.5, power=2.0)),
        ("softsort_p1.5", SoftSort(0.5, power=1.5)),
    ]
    cases += [(f"{net}_{sig}", DiffSortNet(net, n, 2.0, sig)) for net in NETWORKS for sig in SIGMOIDS]
    return cases


CASE_IDS = [case_id for case_id, _ in relaxation_cases(4)]

# From n = 12 on the sorting networks run their layers as custom autograd functions (the fused
# path); these sizes cover it, bitonic 13 also the output permutation left by the padding.
FUSED_CASES = [("odd_even", "logistic_phi", 12), ("bitonic", "cauchy", 13), ("bitonic", "logistic", 16)]


def make(case_id, n):
    return dict(relaxation_cases(n))[case_id]


def problem(n, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, n, generator=g, dtype=torch.float64)
    target = permutation_matrix(torch.randn(batch, n, generator=g, dtype=torch.float64))
    return scores, target


@pytest.mark.parametrize("case_id", CASE_IDS)
@pytest.mark.parametrize("n", [4, 5])
def test_relaxation_gradcheck_and_gradgradcheck(case_id, n):
    scores, _ = problem(n, batch=2)
    scores.requires_grad_()
    relax = make(case_id, n)
    assert torch.autograd.gradcheck(relax, (scores,))
    assert torch.autograd.gradgradcheck(relax, (scores,))


@pytest.mark.parametrize("network, sigmoid, n", FUSED_CASES)
def test_fused_sorting_network_gradcheck_and_gradgradcheck(network, sigmoid, n):
    scores, _ = problem(n, batch=1)
    scores.requires_grad_()
    relax = DiffSortNet(network, n, 1.0, sigmoid)
    assert torch.autograd.gradcheck(relax, (scores,))
    assert torch.autograd.gradgradcheck(relax, (scores,))
    assert torch.autograd.gradcheck(
        relax, (scores,), check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False
    )


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_relaxation_forward_mode(case_id):
    scores, _ = problem(5, batch=2)
    scores.requires_grad_()
    assert torch.autograd.gradcheck(
        make(case_id, 5), (scores,), check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False
    )


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_ranking_loss_gradcheck_and_gradgradcheck(case_id):
    scores, target = problem(5)
    scores.requires_grad_()
    loss = RankingLoss(make(case_id, 5))
    assert torch.autograd.gradcheck(lambda s: loss(s, target), (scores,))
    assert torch.autograd.gradgradcheck(lambda s: loss(s, target), (scores,))


def dense_hessians(loss, scores, target):
    """Per-sample Hessians (N, n, n), one torch.autograd.functional.hessian call per sample."""
    return torch.stack(
        [torch.autograd.functional.hessian(lambda s: loss(s, t), s0) for s0, t in zip(scores, target)]
    )


def batched_backward_hessians(loss, scores, target):
    """Per-sample Hessians by n batched backward passes over the summed gradient (the core's way)."""
    y = scores.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(y, target).sum(), y, create_graph=True)
    n = y.shape[-1]
    basis = torch.eye(n, dtype=y.dtype).unsqueeze(1).expand(n, *y.shape)
    (rows,) = torch.autograd.grad(grad, y, basis, is_grads_batched=True)
    return rows.transpose(0, 1)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_hessian_by_batched_backward_passes(case_id):
    scores, target = problem(5, batch=4)
    loss = RankingLoss(make(case_id, 5))
    torch.testing.assert_close(batched_backward_hessians(loss, scores, target), dense_hessians(loss, scores, target))


@pytest.mark.parametrize("network, sigmoid, n", FUSED_CASES)
def test_fused_hessians_by_batched_backward_and_torch_func(network, sigmoid, n):
    scores, target = problem(n, batch=3)
    loss = RankingLoss(DiffSortNet(network, n, 1.0, sigmoid))
    expected = dense_hessians(loss, scores, target)
    torch.testing.assert_close(batched_backward_hessians(loss, scores, target), expected)
    torch.testing.assert_close(vmap(hessian(loss))(scores, target), expected)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_torch_func_transforms(case_id):
    scores, target = problem(5, batch=4)
    relax = make(case_id, 5)
    loss = RankingLoss(relax)
    torch.testing.assert_close(vmap(hessian(loss))(scores, target), dense_hessians(loss, scores, target))
    jacobians = torch.stack([torch.autograd.functional.jacobian(relax, s) for s in scores])
    torch.testing.assert_close(vmap(jacrev(relax))(scores), jacobians)
    torch.testing.assert_close(vmap(jacfwd(relax))(scores), jacobians)
    torch.testing.assert_close(vmap(relax)(scores), relax(scores))


def test_hessian_is_singular_along_ones():
    # Sorting losses depend on score differences only (docs/PAPER.md): H 1 = 0.
    scores, target = problem(5, batch=4)
    for case_id in CASE_IDS:
        H = vmap(hessian(RankingLoss(make(case_id, 5))))(scores, target)
        torch.testing.assert_close(H.sum(-1), torch.zeros(4, 5, dtype=torch.float64), atol=1e-10, rtol=0)


def test_fused_layers_are_exact_under_torch_func_without_transform_detection(monkeypatch):
    """The fused path is normally skipped under torch.func (detected with a private torch API,
    for speed only); if that detection is unavailable it must still give exact Hessians."""
    from newton_losses.sorting import sorting_networks

    monkeypatch.setattr(sorting_networks, "_traced", lambda tensor: False)
    scores, target = problem(13, batch=2)
    loss = RankingLoss(DiffSortNet("bitonic", 13, 1.0, "cauchy"))
    torch.testing.assert_close(vmap(hessian(loss))(scores, target), dense_hessians(loss, scores, target))


def test_transform_detection():
    from newton_losses.sorting._validation import _inside_torch_func

    x = torch.randn(3)
    assert not _inside_torch_func(x)
    seen = []
    vmap(lambda row: seen.append(_inside_torch_func(row)) or row)(torch.randn(2, 3))
    torch.func.grad(lambda v: seen.append(_inside_torch_func(v)) or v.sum())(x)
    assert seen == [True, True]


# SoftSort with p ∉ {1, 2} at tied scores: |s_k − sort(s)_i|^p has infinite or NaN derivatives
# at 0 for p < 2, and ties put exact zeros off the diagonal of the difference matrix too.
TIED_SCORES = torch.tensor([[1.0, 1.0, 2.0, 0.5], [0.3, -1.0, 0.3, 0.3]], dtype=torch.float64)
POWERS = [0.5, 1.0, 1.5, 2.0, 3.0]


def _near_tie(scores, delta):
    """Ties broken by delta in the order argsort chose for them (the side autograd takes)."""
    position = torch.argsort(torch.argsort(scores, dim=-1), dim=-1).to(scores.dtype)
    return scores + delta * position


@pytest.mark.parametrize("power", POWERS)
def test_softsort_derivatives_are_finite_at_ties(power):
    loss = RankingLoss(SoftSort(0.7, power))
    target = permutation_matrix(torch.randn(2, 4, dtype=torch.float64))
    scores = TIED_SCORES.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(scores, target).sum(), scores)
    assert torch.isfinite(grad).all()
    assert torch.isfinite(batched_backward_hessians(loss, TIED_SCORES, target)).all()
    assert torch.isfinite(vmap(hessian(loss))(TIED_SCORES, target)).all()
    assert torch.isfinite(vmap(jacfwd(SoftSort(0.7, power)))(TIED_SCORES)).all()


@pytest.mark.parametrize("power", [0.5, 1.5, 3.0])
def test_softsort_derivatives_near_ties_match_finite_differences(power):
    scores = _near_tie(TIED_SCORES, 1e-3).requires_grad_()
    relax = SoftSort(0.7, power)
    assert torch.autograd.gradcheck(relax, (scores,))
    assert torch.autograd.gradgradcheck(relax, (scores,))


@pytest.mark.parametrize("power", [1.5, 3.0])
def test_softsort_derivatives_at_ties_are_the_one_sided_limits(power):
    """For p > 1 the first derivative (for p > 2 also the second) is continuous up to the tie
    from the side of argsort's order, where the previous test checks it against finite
    differences: the value at the tie must be that limit."""
    loss = RankingLoss(SoftSort(0.7, power))
    target = permutation_matrix(torch.randn(2, 4, dtype=torch.float64))

    def grad(scores):
        scores = scores.clone().requires_grad_()
        return torch.autograd.grad(loss(scores, target).sum(), scores)[0]

    delta = 1e-12
    near = _near_tie(TIED_SCORES, delta)
    assert not (near.unsqueeze(-1) == near.unsqueeze(-2)).sum(-1).gt(1).any()  # no ties left
    torch.testing.assert_close(grad(TIED_SCORES), grad(near), atol=1e-5, rtol=1e-5)
    if power > 2:
        torch.testing.assert_close(
            dense_hessians(loss, TIED_SCORES, target), dense_hessians(loss, near, target), atol=1e-6, rtol=1e-6
        )
