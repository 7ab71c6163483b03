"""Every bad input named in the core's contract gets a clear error, never a silent wrong step."""
import math

import pytest
import torch

from newton_losses import CompositeLoss, NewtonLoss, NonFiniteLossError, NotTwiceDifferentiableError
from newton_losses.curvature import CurvatureEstimate

F64 = torch.float64


def sq(y):
    return (y**2).sum(-1)


def test_y_without_batch_dimension():
    with pytest.raises(ValueError, match=r"batch dimension.*unsqueeze"):
        NewtonLoss(sq)(torch.ones(3, requires_grad=True))
    with pytest.raises(ValueError, match="batch dimension"):
        NewtonLoss(sq)(torch.tensor(1.0, requires_grad=True))


def test_y_not_floating_point():
    with pytest.raises(TypeError, match="floating-point"):
        NewtonLoss(sq)(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        NewtonLoss(sq)([[1.0, 2.0]])


def test_empty_y():
    with pytest.raises(ValueError, match="non-empty"):
        NewtonLoss(sq)(torch.ones(2, 0, requires_grad=True))


@pytest.mark.parametrize("bad", [lambda y: y, lambda y: y.sum(-1)[:-1], lambda y: y.sum(-1, keepdim=True)])
def test_loss_returning_wrong_shape(bad):
    with pytest.raises(ValueError, match=r"N=4 per-sample losses of shape \(4,\) or a scalar"):
        NewtonLoss(bad, curvature="fisher")(torch.ones(4, 3, requires_grad=True))


def test_loss_returning_non_tensor():
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        NewtonLoss(lambda y: 1.0)(torch.ones(4, 3, requires_grad=True))


@pytest.mark.parametrize("lam", [-0.1, math.nan, math.inf, -math.inf])
def test_bad_lambda(lam):
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        NewtonLoss(sq, lam=lam)


def test_lambda_wrong_type():
    with pytest.raises(TypeError, match="lam must be a real number"):
        NewtonLoss(sq, lam="0.1")


def test_unknown_curvature():
    with pytest.raises(ValueError, match=r"curvature must be one of .*'hesian'"):
        NewtonLoss(sq, curvature="hesian")
    with pytest.raises(TypeError, match="curvature must be a string or a callable"):
        NewtonLoss(sq, curvature=3)


def test_loss_not_callable():
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        NewtonLoss(None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(projection="eig"), "projection must be one of"),
        (dict(solver="lu"), "solver must be one of"),
        (dict(hessian_method="jac"), "hessian_method must be one of"),
        (dict(on_nonfinite="ignore"), "on_nonfinite must be one of"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(cg_max_iter=0), "cg_max_iter"),
        (dict(cg_rtol=2.0), "cg_rtol"),
        (dict(damping="relative", solver="cg"), "relative"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NewtonLoss(sq, curvature="hessian", **kwargs)


def test_gauss_newton_needs_composite_loss():
    with pytest.raises(TypeError, match="CompositeLoss"):
        NewtonLoss(sq, curvature="gauss_newton")
    with pytest.raises(TypeError, match="inner must be callable"):
        CompositeLoss(1, sq)


def test_gauss_newton_inner_wrong_batch():
    loss = CompositeLoss(lambda y: y.sum(0, keepdim=True), sq)
    with pytest.raises(ValueError, match="inner must return"):
        NewtonLoss(loss, curvature="gauss_newton")(torch.ones(3, 2, requires_grad=True))


class OnceDifferentiableSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class DetachedBackwardCube(torch.autograd.Function):
    """A custom Function whose backward is computed outside autograd (as with numpy code):
    first derivatives are right, second derivatives through it are silently missing."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (3 * x.detach() ** 2)


@pytest.mark.parametrize("curvature", ["hessian", "hessian_batch"])
def test_once_differentiable_function_is_rejected_with_fisher_hint(curvature):
    loss = lambda y: OnceDifferentiableSquare.apply(y).sum(-1)
    with pytest.raises(NotTwiceDifferentiableError, match="fisher"):
        NewtonLoss(loss, curvature=curvature, solver="dense")(torch.randn(3, 2, requires_grad=True))
    # The Fisher works on it.
    y = torch.randn(3, 2, requires_grad=True)
    NewtonLoss(loss, curvature="fisher")(y).backward()
    assert torch.isfinite(y.grad).all()


def test_non_differentiable_backward_is_detected_not_silently_wrong():
    # Fully detached: the gradient has no graph at all.
    loss = lambda y: DetachedBackwardCube.apply(y).sum(-1)
    with pytest.raises(NotTwiceDifferentiableError, match="fisher"):
        NewtonLoss(loss, curvature="hessian")(torch.randn(3, 2, dtype=F64, requires_grad=True))
    # Partly detached: the gradient has a graph (via the quadratic term), but the cubic's
    # second derivative is missing. Only a finite-difference check can tell; it does.
    loss2 = lambda y: DetachedBackwardCube.apply(y).sum(-1) + 0.1 * (y**2).sum(-1)
    y = torch.full((3, 2), 2.0, dtype=F64, requires_grad=True)
    with pytest.raises(NotTwiceDifferentiableError, match="finite differences"):
        NewtonLoss(loss2, curvature="hessian")(y)
    # With the check disabled, the wrong Hessian would be used — documented behaviour.
    NewtonLoss(loss2, curvature="hessian", check_hessian="never")(y)


def test_nan_loss_raises_dedicated_error():
    loss = lambda y: torch.log(y).sum(-1)  # NaN for negative outputs
    y = torch.tensor([[1.0, -1.0], [2.0, 3.0]], requires_grad=True)
    for curvature in ("fisher", "hessian"):
        with pytest.raises(NonFiniteLossError, match="loss value is nan"):
            NewtonLoss(loss, curvature=curvature)(y)


def test_inf_gradient_raises():
    loss = lambda y: torch.sqrt(y.abs()).sum(-1)  # infinite gradient at 0
    y = torch.tensor([[0.0, 1.0]], requires_grad=True)
    with pytest.raises(NonFiniteLossError):
        NewtonLoss(loss, curvature="fisher")(y)


def test_nan_skip_mode_gives_zero_gradient_and_records_it():
    loss = lambda y: torch.log(y).sum(-1)
    y = torch.tensor([[1.0, -1.0], [2.0, 3.0]], requires_grad=True)
    newton = NewtonLoss(loss, curvature="fisher", on_nonfinite="skip")
    out = newton(y)
    out.backward()
    assert torch.isnan(out)
    assert (y.grad == 0).all()
    assert newton.last_diagnostics.skipped and newton.totals.skipped == 1


def test_nan_curvature_from_custom_estimator():
    def bad(y, g):
        return torch.full((y.shape[1], y.shape[1]), float("nan"))

    with pytest.raises(NonFiniteLossError, match="curvature"):
        NewtonLoss(sq, curvature=bad)(torch.ones(2, 2, requires_grad=True))


def test_custom_curvature_wrong_shape_or_type():
    with pytest.raises(ValueError, match=r"shape \(N, m, m\)"):
        NewtonLoss(sq, curvature=lambda y, g: torch.eye(3))(torch.ones(2, 2, requires_grad=True))
    with pytest.raises(TypeError, match="CurvatureEstimate"):
        NewtonLoss(sq, curvature=lambda y, g: 1.0)(torch.ones(2, 2, requires_grad=True))
    with pytest.raises(ValueError, match="exactly one"):
        CurvatureEstimate()


def test_finite_difference_check_runs_only_for_custom_functions_by_default():
    from newton_losses.curvature.second_order import has_custom_function as _has_custom_function

    y = torch.randn(3, 2, dtype=F64, requires_grad=True)
    assert _has_custom_function(DetachedBackwardCube.apply(y).sum())
    assert not _has_custom_function((y**3).sum())
    # A stiff but correct loss (log of tiny probabilities) is not checked, so not rejected.
    stiff = lambda yy: -torch.log(torch.sigmoid(40 * yy) + 1e-12).sum(-1)
    NewtonLoss(stiff, curvature="hessian", lam=0.1)(torch.full((4, 3), -2.0, dtype=F64, requires_grad=True))


def _quartic(y):
    return (y ** 4).sum(-1) / 4  # per-sample: Hessian 3 y²


def test_a_summed_loss_is_not_read_as_the_mean():
    """A scalar batch *sum* read as the mean gives another (wrong) Newton step: the default
    reduction='auto' finds out on the first call; reduction='sum' takes it as meant."""
    y = torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0], [2.0, 0.2, 0.7], [-0.4, 0.9, 1.1]], dtype=torch.float64)
    expected = y - NewtonLoss(_quartic, curvature="hessian", lam=0.2).target(y)
    with pytest.raises(ValueError, match="grows with the batch like the sum .* pass reduction='sum'"):
        NewtonLoss(lambda v: _quartic(v).sum(), curvature="hessian", lam=0.2).target(y)
    summed = NewtonLoss(lambda v: _quartic(v).sum(), curvature="hessian", lam=0.2, reduction="sum")
    torch.testing.assert_close(y - summed.target(y), expected)
    mean = NewtonLoss(lambda v: _quartic(v).mean(), curvature="hessian", lam=0.2)
    torch.testing.assert_close(y - mean.target(y), expected)  # the mean: no complaint
    with pytest.raises(ValueError, match="reduction must be one of"):
        NewtonLoss(_quartic, reduction="total")


def test_the_reduction_probe_waits_for_a_batch_it_can_read():
    """A first batch of one sample, or of zero gradients, cannot tell a sum from a mean: the
    probe runs on the next batch that can, instead of never (a sum read as the mean would give
    a step about 1/N of the right one, silently)."""
    y = torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0], [2.0, 0.2, 0.7], [-0.4, 0.9, 1.1]], dtype=torch.float64)
    summed = NewtonLoss(lambda v: _quartic(v).sum(), curvature="hessian", lam=0.2)
    summed.target(y[:1])  # N = 1: nothing to compare
    summed.target(torch.zeros_like(y))  # all gradients zero: nothing to compare
    with pytest.raises(ValueError, match="grows with the batch like the sum"):
        summed.target(y)


def test_a_loss_that_couples_samples_is_warned_about():
    y = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def batch_normalized(v):  # batch statistics: sample i's loss depends on the others
        return (((v - v.mean(0)) / v.std(0)) ** 4).mean()

    with pytest.warns(RuntimeWarning, match="neither the mean nor the sum .* couple samples"):
        NewtonLoss(batch_normalized, curvature="fisher", lam=0.1).target(y)


def test_per_sample_losses_are_not_probed_and_keep_their_state():
    """The reduction probe evaluates the loss on two samples: only for a scalar loss, so a loss
    that records its last batch (or a BatchNorm in train mode) sees the batch alone."""
    calls = []

    def per_sample(v):
        calls.append(v.shape[0])
        return (v ** 4).sum(-1)

    y = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    NewtonLoss(per_sample, curvature="hessian", lam=0.1).target(y)
    assert set(calls) == {8}
    calls.clear()
    NewtonLoss(lambda v: per_sample(v).mean(), curvature="hessian", lam=0.1).target(y)
    assert calls[-1] == 2  # the probe, once


def test_a_sum_divided_by_a_fixed_batch_size_is_explained():
    y = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="divides a sum by a fixed batch size"):
        NewtonLoss(lambda v: (v ** 4).sum() / 8, curvature="hessian", lam=0.1).target(y)


def test_nonfinite_outputs_are_caught_before_the_loss_validates_them():
    """A network emitting NaN: the library's own losses refuse non-finite scores with a
    ValueError; NewtonLoss checks y first, so on_nonfinite='skip' skips the batch (zero gradient)
    and 'raise' names the bad samples."""
    from newton_losses import NeuralSort, NonFiniteLossError, RankingLoss

    y = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y[2, 1] = float("nan")
    target = torch.argsort(torch.randn(4, 5, generator=torch.Generator().manual_seed(1)), dim=-1)
    loss = RankingLoss(NeuralSort(tau=1.0))
    with pytest.raises(ValueError, match="finite"):  # the loss alone
        loss(y, target)
    with pytest.raises(NonFiniteLossError, match=r"outputs y contain NaN in 1 of 4 samples \(2\)"):
        NewtonLoss(loss, lam=0.1)(y.clone().requires_grad_(), target)
    skip = NewtonLoss(loss, lam=0.1, on_nonfinite="skip")
    yy = y.clone().requires_grad_()
    out = skip(yy, target)
    out.backward()
    assert torch.isnan(out) and torch.equal(yy.grad, torch.zeros_like(y))
    assert skip.last_diagnostics.skipped and skip.totals.skipped == 1


def test_inference_mode_is_refused_with_what_to_do():
    y = torch.randn(3, 2, dtype=torch.float64)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="outside inference_mode .*no_grad"):
            NewtonLoss(lambda v: (v ** 2).sum(-1), lam=0.1).direction(y)
    with torch.no_grad():  # the documented alternative works
        d = NewtonLoss(lambda v: (v ** 2).sum(-1), curvature="hessian", lam=0.0).direction(y)
    torch.testing.assert_close(d, y)  # H = 2I, g = 2y: d = y


def test_a_nonfinite_per_sample_loss_names_its_samples():
    """Finite outputs, a loss that is NaN for some samples: the error says which."""
    from newton_losses import NonFiniteLossError

    y = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [3.0, -2.0]], dtype=torch.float64)

    def sqrt_loss(v):  # NaN where the first output is negative
        return torch.sqrt(v[:, 0]) + v[:, 1] ** 2

    with pytest.raises(NonFiniteLossError, match=r"the loss value is nan — the per-sample loss is not finite "
                                                 r"in 1 of 3 samples \(1\)"):
        NewtonLoss(sqrt_loss, lam=0.1)(y.clone().requires_grad_())


def test_masked_logits_with_minus_inf_still_train():
    """-inf outputs (masked logits) give a finite cross-entropy and gradient: not a NaN batch."""
    y = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y[:, 0] = float("-inf")  # class 0 masked out everywhere
    labels = torch.tensor([1, 2, 3, 4])

    def ce(v, t):
        return torch.nn.functional.cross_entropy(v, t, reduction="none")

    yy = y.clone().requires_grad_()
    NewtonLoss(ce, curvature="fisher", lam=0.1)(yy, labels).backward()
    assert torch.isfinite(yy.grad[:, 1:]).all() and torch.equal(yy.grad[:, 0], torch.zeros(4, dtype=torch.float64))


def test_an_overflowing_sum_of_finite_per_sample_losses_says_so():
    from newton_losses import NonFiniteLossError

    y = torch.full((2, 1), 1.5e19)  # float32: each sample's loss 2.25e38 is finite, their sum is not
    with pytest.raises(NonFiniteLossError, match="every per-sample loss is finite: their sum or mean overflowed"):
        NewtonLoss(lambda v: (v ** 2).sum(-1), lam=0.1, reduction="sum")(y.clone().requires_grad_())
