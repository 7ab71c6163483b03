"""Issue 24: what a newcomer tripped over gets a clear error or warning, and the missing pieces
(pytree outputs, the functional form, RankingLoss.composite, public totals) work — each checked
against an independent computation."""
from __future__ import annotations

import warnings

import pytest
import torch

from newton_losses import (
    NewtonLoss,
    NewtonTotals,
    NonFiniteLossError,
    NotTwiceDifferentiableError,
    newton_direction,
)
from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix


def _quartic(y, t):
    return ((y - t) ** 4).sum(-1) + (y[:, 0] * y[:, 1]) ** 2


def _hand_newton(y, t, lam):
    """Per-sample (H_i + λI)^{-1} g_i with H from torch.autograd.functional.hessian, float64."""
    out = []
    for yi, ti in zip(y.double(), t.double()):
        f = lambda z: _quartic(z[None], ti[None]).sum()  # noqa: E731
        g = torch.autograd.functional.jacobian(f, yi)
        H = torch.autograd.functional.hessian(f, yi)
        w, V = torch.linalg.eigh(H)
        out.append(V @ ((V.T @ g) / (w.abs() + lam)))
    return torch.stack(out)


# --- clear errors for losses that cannot be trained through --------------------------------------
@pytest.mark.parametrize("loss, kind, words", [
    (lambda y: torch.zeros(y.shape[0]), ValueError, "does not depend on y"),
    (lambda y: y.detach().sum(-1), ValueError, "does not depend on y"),
    (lambda y: (y > 0).sum(-1), TypeError, "floating-point"),
    (lambda y: (y > 0).sum(-1).float(), ValueError, "does not depend on y"),
])
def test_a_loss_without_gradient_is_named(loss, kind, words):
    y = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(kind, match=words):
        NewtonLoss(loss, curvature="fisher")(y)


def test_a_composite_whose_inner_ignores_y_is_named():
    from newton_losses import CompositeLoss

    loss = CompositeLoss(lambda y: torch.ones(y.shape[0], 2), lambda a: (a ** 2).sum(-1))
    with pytest.raises(ValueError, match="inner's output does not depend on y"):
        NewtonLoss(loss, curvature="gauss_newton")(torch.randn(3, 2, requires_grad=True))


def test_float16_gradient_overflow_says_so():
    # sample 1: value 1200·2.5⁴ = 46875 is finite in float16, its gradient 4800·2.5³ = 75000 is not
    y = torch.tensor([[0.5, 0.1], [2.5, 0.2], [0.1, 0.1]], dtype=torch.float16, requires_grad=True)
    loss = lambda y: (y.float() ** 4 * 1200).sum(-1).to(torch.float16)  # noqa: E731
    with pytest.raises(NonFiniteLossError) as exc:
        NewtonLoss(loss, curvature="fisher", lam=0.1)(y).backward()
    msg = str(exc.value)
    assert "is finite" in msg and "1 of 3 samples (1)" in msg
    assert "float16" in msg and "bfloat16" in msg and "65504" in msg


def test_float16_nonfinite_value_also_points_to_float16():
    y = (torch.ones(2, 3) * 200).half().requires_grad_()
    with pytest.raises(NonFiniteLossError, match="loss value is inf.*float16"):
        NewtonLoss(lambda y: (y ** 4).sum(-1), curvature="fisher")(y)


def test_float32_nonfinite_message_keeps_the_skip_advice():
    y = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    with pytest.raises(NonFiniteLossError, match=r"1 of 2 samples \(1\).*on_nonfinite='skip'"):
        NewtonLoss(lambda y: y.sqrt().sum(-1) * 0 + y[:, 0].abs().sqrt(), curvature="fisher")(y)


# --- lam = 0 on a shift-invariant loss -----------------------------------------------------------
@pytest.mark.parametrize("relaxation", [NeuralSort(), SoftSort(), DiffSortNet("odd_even", 4)])
def test_lam_zero_on_a_shift_invariant_ranking_loss_warns(relaxation):
    loss = RankingLoss(relaxation)
    scores = torch.randn(3, 4, dtype=torch.float64)
    assert torch.allclose(loss(scores + 7.0, permutation_matrix(scores)), loss(scores, permutation_matrix(scores)))
    with pytest.warns(RuntimeWarning, match="lam=0.*all-ones") as record:
        NewtonLoss(loss, curvature="hessian", lam=0.0)
    assert record[0].filename == __file__  # points at the user's line
    newton = NewtonLoss(loss, curvature="hessian", lam=0.1)
    with pytest.warns(RuntimeWarning, match="lam=0") as record:
        newton.lam = 0.0  # a schedule reaching 0
    assert record[0].filename == __file__
    with pytest.warns(RuntimeWarning, match="lam=0"):  # the composite form knows too
        NewtonLoss(loss.composite(), curvature="gauss_newton", lam=0.0)


def test_lam_zero_is_quiet_for_other_losses():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NewtonLoss(_quartic, curvature="hessian", lam=0.0)
        NewtonLoss(RankingLoss(lambda s: torch.softmax(s[..., None] * s[..., None, :], -1)), "hessian", lam=0.0)


# --- a perturbed loss's Hessian: the error names its own estimator --------------------------------
def test_fenchel_young_hessian_error_suggests_its_estimator():
    from newton_losses.shortest_path import FenchelYoungLoss

    torch.manual_seed(0)
    theta = torch.rand(2, 3, 3).add(0.1).requires_grad_()
    true = (torch.rand(2, 3, 3) > 0.5).float()
    with pytest.raises(NotTwiceDifferentiableError, match=r"loss\.hessian_estimator\(\)"):
        NewtonLoss(FenchelYoungLoss(n_samples=4), curvature="hessian", lam=0.1)(theta, true)


# --- ranking targets: values or ranks, the convention cannot go wrong -----------------------------
def test_ranking_loss_takes_values_or_ranks_as_target():
    torch.manual_seed(1)
    scores = torch.randn(5, 4, dtype=torch.float64)
    values = torch.randn(5, 4, dtype=torch.float64)
    ranks = values.argsort(-1).argsort(-1)  # integer ranks sort the same way
    loss = RankingLoss(NeuralSort())
    ref = loss(scores, permutation_matrix(values))
    assert torch.equal(loss(scores, values), ref)
    assert torch.equal(loss(scores, ranks), ref)
    assert torch.equal(loss.composite()(scores, values), ref)
    with pytest.raises(ValueError, match=r"true values or ranks, shape \(5, 4\)"):
        loss(scores, values[:, :3])


def test_diffsort_transposed_convention_is_documented_not_silently_equal():
    # The transposed target (diffsort's training code) is a different loss: the docs say so.
    values = torch.tensor([2.0, 0.0, 3.0, 1.0])  # its sorting permutation is not an involution
    P = permutation_matrix(values)
    assert torch.equal(P @ values, values.sort().values)
    assert not torch.equal(P.transpose(-2, -1) @ values, values.sort().values)
    assert "transpose" in RankingLoss.__doc__ and "values or ranks" in RankingLoss.__doc__


def test_ranking_composite_matches_the_loss_and_trains_gauss_newton():
    torch.manual_seed(2)
    loss = RankingLoss(DiffSortNet("odd_even", 4, steepness=5.0), loss="bce")
    scores = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    P_true = permutation_matrix(torch.randn(6, 4, dtype=torch.float64))
    composite = loss.composite()
    assert torch.equal(composite(scores, P_true), loss(scores, P_true))
    NewtonLoss(composite, curvature="gauss_newton", lam=0.1)(scores, P_true).backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


# --- pytree outputs ------------------------------------------------------------------------------
def _two_heads(d, t):
    return ((d["a"] - t) ** 4).sum(-1) + (d["a"].sum(-1) * d["b"][0].sum((-1, -2))) ** 2 + d["b"][1].pow(2).sum(-1)


@pytest.mark.parametrize("curvature", ["hessian", "hessian_batch", "fisher"])
def test_pytree_outputs_equal_the_concatenated_tensor(curvature):
    torch.manual_seed(3)
    a = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    b0 = torch.randn(4, 3, 1, dtype=torch.float64, requires_grad=True)
    b1 = torch.randn(4, dtype=torch.float64, requires_grad=True)  # one output per sample: a (N,) leaf
    t = torch.randn(4, 2, dtype=torch.float64)
    value = NewtonLoss(_two_heads, curvature=curvature, lam=0.1)({"a": a, "b": (b0, b1)}, t)
    value.backward()
    y = torch.cat([a.detach(), b0.detach().reshape(4, 3), b1.detach()[:, None]], 1).requires_grad_()
    on_cat = lambda y, t: _two_heads({"a": y[:, :2], "b": (y[:, 2:5].reshape(4, 3, 1), y[:, 5])}, t)  # noqa: E731
    ref = NewtonLoss(on_cat, curvature=curvature, lam=0.1)(y, t)
    ref.backward()
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(a.grad, y.grad[:, :2])
    torch.testing.assert_close(b0.grad.reshape(4, 3), y.grad[:, 2:5])
    torch.testing.assert_close(b1.grad, y.grad[:, 5])


def test_pytree_target_and_direction_keep_the_structure():
    a = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    loss = lambda ab, t: _quartic(torch.cat(ab, 1), t)  # noqa: E731
    t = torch.randn(3, 4, dtype=torch.float64)
    newton = NewtonLoss(loss, curvature="hessian", lam=0.5)
    d = newton.direction((a, b), t)
    z = newton.target((a, b), t)
    assert isinstance(d, tuple) and d[0].shape == (3, 2) and not d[0].requires_grad
    hand = _hand_newton(torch.cat([a, b], 1).detach(), t, 0.5)
    torch.testing.assert_close(torch.cat(d, 1), hand)
    torch.testing.assert_close(torch.cat(z, 1), torch.cat([a, b], 1).detach() - hand)


def test_pytree_gauss_newton_wraps_the_inner_map():
    from newton_losses import CompositeLoss

    a = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    loss = CompositeLoss(lambda ab: torch.tanh(torch.cat(ab, 1)), lambda p: (p ** 2).sum(-1))
    NewtonLoss(loss, curvature="gauss_newton", lam=0.1)((a, b)).backward()
    y = torch.cat([a, b], 1).detach().requires_grad_()
    NewtonLoss(CompositeLoss(torch.tanh, lambda p: (p ** 2).sum(-1)), curvature="gauss_newton", lam=0.1)(y).backward()
    torch.testing.assert_close(torch.cat([a.grad, b.grad], 1), y.grad)


@pytest.mark.parametrize("y, kind, words", [
    ((), ValueError, "empty"),
    ((torch.zeros(3, 2), 1.0), TypeError, "leaf 1 is a float"),
    ((torch.zeros(3, 2), torch.zeros(4, 2)), ValueError, "same batch size"),
    ((torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.float64)), TypeError, "same dtype"),
    ((torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)), TypeError, "floating"),
    ({"a": torch.tensor(1.0)}, ValueError, "0-d"),
    ("abc", TypeError, "tuple/list/dict"),
])
def test_bad_pytrees_are_named(y, kind, words):
    with pytest.raises(kind, match=words):
        NewtonLoss(lambda y: torch.zeros(3), curvature="fisher")(y)


# --- the functional form -------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_newton_direction_is_the_hand_computed_step(lam):
    torch.manual_seed(4)
    y = torch.randn(5, 3, dtype=torch.float64)
    t = torch.randn(5, 3, dtype=torch.float64)
    d = newton_direction(_quartic, y, t, curvature="hessian", lam=lam)
    torch.testing.assert_close(d, _hand_newton(y, t, lam))
    d_kw = newton_direction(lambda y, t=None: _quartic(y, t), y, curvature="hessian", lam=lam, loss_kwargs={"t": t})
    torch.testing.assert_close(d_kw, d)


def test_newton_direction_in_a_custom_loop_gives_newton_loss_gradient():
    torch.manual_seed(5)
    net = torch.nn.Linear(3, 3).double()
    x, t = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    y = net(x)
    y.backward(newton_direction(_quartic, y, t, curvature="fisher", lam=0.2) / len(y))
    custom = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    NewtonLoss(_quartic, curvature="fisher", lam=0.2)(net(x), t).backward()
    for c, p in zip(custom, net.parameters()):
        torch.testing.assert_close(c, p.grad)


def test_newton_direction_rejects_bad_options_like_newton_loss():
    with pytest.raises(ValueError, match="projection"):
        newton_direction(_quartic, torch.zeros(2, 3), torch.zeros(2, 3), curvature="hessian", projection="nope")


# --- public totals -------------------------------------------------------------------------------
def test_totals_is_a_public_type():
    newton = NewtonLoss(_quartic, curvature="fisher", lam=0.1)
    assert isinstance(newton.totals, NewtonTotals)
    newton(torch.randn(3, 3, requires_grad=True), torch.zeros(3, 3)).backward()
    assert newton.totals.calls == 1 and newton.totals.matrices == 1


# --- samples coupled by the loss -----------------------------------------------------------------
@pytest.mark.parametrize("coupled", [
    lambda y, t: ((torch.softmax(y, dim=0) - t) ** 2).sum(-1),                     # softmax over the batch
    lambda y, t: (((y - y.mean(0)) / (y.std(0) + 1e-5) - t) ** 2).sum(-1),          # batch normalization
])
def test_per_sample_losses_that_couple_samples_warn(coupled):
    torch.manual_seed(6)
    y = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="depend on the other samples"):
        NewtonLoss(coupled, curvature="fisher", lam=0.1, check_samples=True)(y, t)
    with warnings.catch_warnings():  # opt-in: the probe calls the loss on two samples
        warnings.simplefilter("error")
        NewtonLoss(coupled, curvature="fisher", lam=0.1)(y, t)


def test_independent_per_sample_losses_do_not_warn_and_are_probed_once():
    calls = []

    def loss(y, t):
        calls.append(y.shape[0])
        return _quartic(y, t)

    y = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 3)
    newton = NewtonLoss(loss, curvature="hessian", lam=0.1, check_samples=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        newton(y, t)
        newton(y, t)
    assert calls.count(2) == 1  # one probe, on two samples, on the first call only
    calls.clear()
    NewtonLoss(loss, curvature="fisher", lam=0.1, reduction="mean", check_samples=True)(y, t)
    assert calls.count(2) == 1  # per-sample losses: probed whatever the reduction
    calls.clear()
    NewtonLoss(loss, curvature="fisher", lam=0.1)(y, t)
    assert 2 not in calls  # not asked for: not probed


# --- review of issue 24: the probe that cannot run, fixed leaves, loss state, targets with grad ---
def test_a_summed_loss_over_closure_targets_is_not_read_silently():
    torch.manual_seed(7)
    y, t = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    per = lambda y, t: torch.nn.functional.softplus(5 * (t - y)).sum(-1)  # noqa: E731
    with pytest.warns(RuntimeWarning, match="could not check.*reduction='mean'") as record:
        newton_direction(lambda y: per(y, t).sum(), y, curvature="hessian", lam=0.1)
    assert record[0].filename == __file__
    with pytest.warns(RuntimeWarning, match="could not check"):  # targets nested in a tuple
        newton_direction(lambda y, tt: per(y, tt[0]).sum(), y, (t,), curvature="hessian", lam=0.1)
    with warnings.catch_warnings():  # stated: no probe, no warning, and the sum read as a sum
        warnings.simplefilter("error")
        d_sum = newton_direction(lambda y: per(y, t).sum(), y, curvature="hessian", lam=0.1, reduction="sum")
    torch.testing.assert_close(d_sum, newton_direction(per, y, t, curvature="hessian", lam=0.1))


def test_check_samples_that_cannot_run_says_so():
    y, t = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    coupled = lambda y: ((torch.softmax(y, dim=0) - t) ** 2).sum(-1)  # noqa: E731
    with pytest.warns(RuntimeWarning, match="could not check.*per-sample losses do not depend"):
        NewtonLoss(coupled, curvature="fisher", lam=0.1, check_samples=True).target(y)


def test_a_pytree_leaf_without_grad_is_held_fixed():
    torch.manual_seed(8)
    A = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 2, dtype=torch.float64)  # a fixed input of the loss
    loss = lambda ab: _quartic(torch.cat(ab, 1), torch.zeros(4, 4, dtype=torch.float64))  # noqa: E731
    NewtonLoss(loss, curvature="hessian", lam=0.1)((A, b)).backward()
    alone = A.detach().clone().requires_grad_()
    NewtonLoss(lambda a: loss((a, b)), curvature="hessian", lam=0.1)(alone).backward()
    torch.testing.assert_close(A.grad, alone.grad)
    newton = NewtonLoss(loss, curvature="hessian", lam=0.1)
    dA, db = newton.direction((A, b))
    assert torch.equal(db, torch.zeros_like(b)) and torch.allclose(dA, 4 * alone.grad)
    zA, zb = newton.target((A, b))
    assert torch.equal(zb, b)


def test_the_reduction_probe_leaves_a_stateful_loss_as_it_was():
    class BatchNormed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(3, affine=False)
            self.last = None

        def forward(self, y):
            self.last = y.shape[0]
            return (self.bn(y) ** 2).sum(-1).mean()

    loss = BatchNormed()
    y = torch.randn(8, 3, dtype=torch.float32) * 3 + 2
    ref = BatchNormed()
    ref(y.detach())  # what one call on the batch leaves behind
    with pytest.warns(RuntimeWarning, match="couple samples"):
        NewtonLoss(loss, curvature="fisher", lam=0.1)(y.requires_grad_())
    torch.testing.assert_close(loss.bn.running_mean, ref.bn.running_mean)
    assert loss.bn.num_batches_tracked.item() == 1 and loss.last == 8


def test_trainable_loss_parameters_and_targets_with_grad_warn():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, y, t):
            return self.scale * ((y - t) ** 2).sum(-1)

    with pytest.warns(RuntimeWarning, match="trainable parameters \\(scale\\)"):
        NewtonLoss(Scaled(), curvature="fisher")
    t = torch.randn(3, 2, requires_grad=True)
    newton = NewtonLoss(lambda y, t: ((y - t) ** 2).sum(-1), curvature="fisher")
    with pytest.warns(RuntimeWarning, match="requires grad.*targets"):
        newton(torch.randn(3, 2, requires_grad=True), t)


def test_newton_direction_points_to_loss_kwargs():
    with pytest.raises(TypeError, match="loss_kwargs"):
        newton_direction(_quartic, torch.zeros(2, 3), target=torch.zeros(2, 3), curvature="fisher")


def test_lam_zero_is_seen_through_wrappers():
    import functools

    loss = RankingLoss(NeuralSort())
    from newton_losses import CompositeLoss

    for wrapped in (CompositeLoss(loss.inner, loss.outer), functools.partial(loss)):
        with pytest.warns(RuntimeWarning, match="lam=0") as record:
            NewtonLoss(wrapped, curvature="fisher", lam=0.0)
        assert record[0].filename == __file__
    scores = torch.randn(3, 4, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="lam=0") as record:
        newton_direction(loss, scores, scores, curvature="fisher", lam=0.0)
    assert record[0].filename == __file__


def test_fenchel_young_advice_leads_with_its_estimator_only():
    from newton_losses.shortest_path import FenchelYoungLoss

    theta = torch.rand(2, 3, 3).add(0.1).requires_grad_()
    with pytest.raises(NotTwiceDifferentiableError) as exc:
        NewtonLoss(FenchelYoungLoss(n_samples=4), curvature="hessian", lam=0.1)(theta, torch.zeros(2, 3, 3))
    assert str(exc.value).index("hessian_estimator") < str(exc.value).index("'fisher'")
    assert "check_hessian='never'" not in str(exc.value)


def test_values_targets_work_under_vmap_hessians():
    torch.manual_seed(9)
    scores = torch.randn(5, 4, dtype=torch.float64)
    values = torch.randn(5, 4, dtype=torch.float64)
    loss = RankingLoss(NeuralSort())
    by_rows = NewtonLoss(loss, curvature="hessian", lam=0.1).direction(scores, values)
    by_vmap = NewtonLoss(loss, curvature="hessian", lam=0.1, hessian_method="vmap").direction(scores, values)
    torch.testing.assert_close(by_vmap, by_rows)
