"""A second-order term missing from autograd's Hessian is detected; the package's own stiff
losses are not flagged."""
import warnings

import pytest
import torch
from torch.autograd.function import once_differentiable

from newton_losses import DiffSortNet, NewtonLoss, NotTwiceDifferentiableError, RankingLoss, permutation_matrix
from newton_losses.curvature.second_order import find_once_differentiable, hvp_mismatch

F64 = torch.float64


class BlackBox(torch.autograd.Function):
    """softplus with a backward that autograd cannot differentiate (@once_differentiable)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class DetachedSoftplus(torch.autograd.Function):
    """softplus whose backward is computed outside autograd, without any marker."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x.detach())


def _data(spread, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(6, 3, 4, generator=gen, dtype=F64)
    y = t + spread * (2 * torch.rand(6, 3, 4, generator=gen, dtype=F64) - 1)
    return y.requires_grad_(True), t


def test_the_issue_case_is_rejected_not_solved_with_lambda_times_identity():
    def loss(y, t):
        return (BlackBox.apply(y - t) + 0.1 * (y - t) ** 2).sum((1, 2)).mean()

    y, t = _data(3.0)
    # Why torch's own guard is silent: the cotangent reaching BlackBox's backward is the
    # constant from .sum(), so no error node is attached; g still has a graph (quadratic part).
    yl = y.detach().requires_grad_(True)
    total = loss(yl, t)
    (g,) = torch.autograd.grad(total, yl, create_graph=True)
    assert g.requires_grad
    assert find_once_differentiable(total) == "BlackBox"
    with pytest.raises(NotTwiceDifferentiableError, match=r"BlackBox.*once_differentiable.*curvature='fisher'"):
        NewtonLoss(loss, curvature="hessian", lam=0.2)(y, t)
    for curvature in ("hessian_batch",):
        with pytest.raises(NotTwiceDifferentiableError, match="BlackBox"):
            NewtonLoss(loss, curvature=curvature, lam=0.2)(y, t)
    NewtonLoss(loss, curvature="fisher", lam=0.2)(y, t).backward()  # first order is fine
    assert torch.isfinite(y.grad).all()


@pytest.mark.parametrize("c, spread", [(0.5, 1.0), (1.0, 0.5)])  # softplus'' is 16–20% / 10–11% of C
def test_a_dropped_term_of_ten_to_twenty_percent_is_caught(c, spread):
    y, t = _data(spread)
    x = (y - t).detach()
    s = torch.sigmoid(x) * (1 - torch.sigmoid(x))
    share = s / (s + 2 * c)
    assert 0.10 <= float(share.min()) and float(share.max()) <= 0.21

    def marked(y, t):
        return (BlackBox.apply(y - t) + c * (y - t) ** 2).sum((1, 2))

    def unmarked(y, t):
        return (DetachedSoftplus.apply(y - t) + c * (y - t) ** 2).sum((1, 2))

    with pytest.raises(NotTwiceDifferentiableError, match="once_differentiable"):
        NewtonLoss(marked, curvature="hessian", lam=0.2)(y, t)
    # No marker: only the finite-difference check can see it.
    with pytest.raises(NotTwiceDifferentiableError, match="finite differences"):
        NewtonLoss(unmarked, curvature="hessian", lam=0.2)(y, t)
    # The check's statistic is about the dropped share.
    yl = y.detach().reshape(6, 12).requires_grad_(True)
    (g,) = torch.autograd.grad(unmarked(yl.reshape(6, 3, 4), t).sum(), yl, create_graph=True)
    grad_at = lambda z: torch.autograd.grad(unmarked(z.reshape(6, 3, 4), t).sum(), z)[0]
    err = hvp_mismatch(yl, g, grad_at)
    assert 0.5 * float(share.min()) < err < 1.5 * float(share.max())


def test_a_complete_hessian_passes_the_check():
    def smooth(y, t):
        return (torch.nn.functional.softplus(y - t) + 0.1 * (y - t) ** 2).sum((1, 2))

    y, t = _data(3.0)
    NewtonLoss(smooth, curvature="hessian", lam=0.2, check_hessian="always")(y, t)


def test_diffsort_custom_functions_near_one_are_not_flagged_in_float32():
    # n ≥ 12 runs the fused layers (custom autograd.Functions), so "auto" runs the check.
    gen = torch.Generator().manual_seed(0)
    for scale in (1.0, 30.0, 100.0):
        s = (scale * torch.randn(8, 12, generator=gen, dtype=F64)).float().requires_grad_(True)
        target = permutation_matrix(torch.randn(8, 12, generator=gen, dtype=F64)).float()
        loss = RankingLoss(DiffSortNet("bitonic", 12, 2.0, "logistic"))
        NewtonLoss(loss, curvature="hessian", lam=0.1)(s, target).backward()


def test_relaxed_bellman_ford_is_not_flagged_when_checked_on_every_call():
    from newton_losses.shortest_path import RelaxedShortestPathLoss, shortest_path

    gen = torch.Generator().manual_seed(1)
    for dtype in (F64, torch.float32):
        costs = torch.nn.functional.softplus(2 * torch.randn(6, 5, 5, generator=gen, dtype=F64)) + 0.3
        target = shortest_path(costs + 0.5 * torch.rand(6, 5, 5, generator=gen, dtype=F64)).path
        for beta in (1.0, 10.0):
            loss = RelaxedShortestPathLoss(beta, "l2")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                NewtonLoss(loss, curvature="hessian", lam=0.1, check_hessian="always")(
                    costs.to(dtype).requires_grad_(True), target.to(dtype))
                NewtonLoss(loss.composite(), curvature="gauss_newton", lam=0.1, check_hessian="always")(
                    costs.to(dtype).requires_grad_(True), target.to(dtype))


def test_a_term_dropped_in_a_fifth_of_the_samples_is_caught():
    """A loss whose curvature is incomplete in only some samples (here 2 of 10) is flagged:
    the check looks at the worst tenth of the samples, not at their median."""
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(10, 12, generator=gen, dtype=F64).requires_grad_(True)
    sick = torch.zeros(10, 1, dtype=torch.bool)
    sick[:2] = True

    def loss(y):
        part = torch.where(sick, DetachedSoftplus.apply(y), torch.nn.functional.softplus(y))
        return (part + 0.1 * y ** 2).sum(-1)

    with pytest.raises(NotTwiceDifferentiableError, match="worst tenth"):
        NewtonLoss(loss, curvature="hessian", lam=0.1, check_hessian="first").target(y)


def test_a_target_computed_by_a_once_differentiable_function_is_no_false_alarm():
    """The target's own graph (a teacher's output, say) is not differentiated with respect to y:
    only Functions on the path from the loss to y matter."""
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(6, 4, generator=gen, dtype=F64).requires_grad_(True)
    w = torch.randn(6, 4, generator=gen, dtype=F64).requires_grad_(True)
    target = BlackBox.apply(w)
    for curvature in ("hessian", "hessian_batch"):
        d = y.detach() - NewtonLoss(lambda y, t: 0.5 * ((y - t) ** 2).sum(-1), curvature=curvature,
                                    lam=0.1).target(y, target)
        torch.testing.assert_close(d, (y - target).detach() / 1.1)  # H = I: (1 + λ)^-1 g


@pytest.mark.parametrize("check", ["auto", "never"])
def test_gauss_newton_with_a_once_differentiable_inner_map_is_rejected(check):
    """Gauss-Newton needs the inner map's Jacobian-vector products, which a once_differentiable
    backward cannot give: without the check the Jacobian came out as zero and the step as g/λ."""
    from newton_losses import CompositeLoss

    gen = torch.Generator().manual_seed(3)
    y = torch.randn(6, 4, generator=gen, dtype=F64)
    t = torch.randn(6, 4, generator=gen, dtype=F64)
    loss = CompositeLoss(BlackBox.apply, lambda a, t: 0.5 * ((a - t) ** 2).sum(-1))
    for solver in ("dense", "cg"):
        newton = NewtonLoss(loss, curvature="gauss_newton", lam=0.1, solver=solver, check_hessian=check)
        with pytest.raises(NotTwiceDifferentiableError, match="BlackBox|Jacobian-vector products"):
            newton.target(y, t)
