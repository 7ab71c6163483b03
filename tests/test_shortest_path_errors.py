"""Bad input to the shortest-path losses: clear TypeError/ValueError naming the argument."""

from __future__ import annotations

import math

import pytest
import torch

from newton_losses.shortest_path import (
    FenchelYoungLoss,
    GaussianSmoothing,
    PathLoss,
    PerturbedOptimizer,
    RelaxedBellmanFord,
    RelaxedShortestPathLoss,
    SmoothedAlgorithmLoss,
    SmoothedLoss,
    relaxed_shortest_path,
)

STOCHASTIC = [SmoothedLoss, SmoothedAlgorithmLoss, FenchelYoungLoss]
GOOD = torch.rand(2, 4, 4, dtype=torch.float64) + 0.5
TARGET = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)


def all_losses():
    return [
        RelaxedShortestPathLoss(5.0, "l1"),
        RelaxedShortestPathLoss(5.0, "l2", mode="while"),
        SmoothedLoss(n_samples=2),
        SmoothedAlgorithmLoss(n_samples=2),
        FenchelYoungLoss(n_samples=2),
    ]


def bad_costs():
    neg = GOOD.clone()
    neg[0, 1, 1] = -0.5
    nan = GOOD.clone()
    nan[1, 2, 3] = float("nan")
    inf = GOOD.clone()
    inf[0, 0, 0] = float("inf")
    return [
        (neg, ValueError, "non-negative"),
        (nan, ValueError, "finite"),
        (inf, ValueError, "finite"),
        (GOOD.flatten(1), ValueError, r"\(B, H, W\).*reshape"),
        (GOOD[None], ValueError, r"\(B, H, W\)"),
        (GOOD[:, :0], ValueError, "non-empty"),
        (GOOD.long(), TypeError, "floating"),
        (GOOD.numpy(), TypeError, "torch.Tensor"),
    ]


@pytest.mark.parametrize("case", range(len(bad_costs())))
def test_bad_costs(case):
    costs, exc, match = bad_costs()[case]
    for loss in all_losses():
        with pytest.raises(exc, match=match):
            loss(costs, TARGET)


def test_bad_target():
    for loss in all_losses():
        with pytest.raises(ValueError, match="target"):
            loss(GOOD, TARGET[:, :3])
    for loss in all_losses()[2:]:
        with pytest.raises(TypeError, match="target"):
            loss(GOOD, "path")
        with pytest.raises(ValueError, match="target must be finite"):
            loss(GOOD, TARGET * float("nan"))


@pytest.mark.parametrize("cls", STOCHASTIC + [PerturbedOptimizer])
def test_bad_sampling_arguments(cls):
    for sigma in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="sigma"):
            cls(sigma=sigma)
    with pytest.raises(TypeError, match="sigma"):
        cls(sigma="1")
    for n in (0, -3):
        with pytest.raises(ValueError, match="n_samples"):
            cls(n_samples=n)
    with pytest.raises(TypeError, match="n_samples"):
        cls(n_samples=2.5)
    with pytest.raises(ValueError, match="baseline"):
        cls(baseline="mean")
    with pytest.raises(ValueError, match="loo.*n_samples >= 2"):
        cls(n_samples=1, baseline="loo")
    with pytest.raises(TypeError, match="generator"):
        cls(generator=0)
    cls(n_samples=1, baseline="center")  # S = 1 is allowed


def test_bad_relaxation_arguments():
    for beta in (0.0, -2.0, math.inf):
        with pytest.raises(ValueError, match="beta"):
            relaxed_shortest_path(GOOD, beta)
    with pytest.raises(ValueError, match="mode"):
        relaxed_shortest_path(GOOD, 1.0, mode="until")
    with pytest.raises(ValueError, match=r"n_iter must be >= max\(H, W\) - 1 = 3"):
        relaxed_shortest_path(GOOD, 1.0, n_iter=2)
    with pytest.raises(ValueError, match="max_iter"):
        relaxed_shortest_path(GOOD, 1.0, mode="while", max_iter=2)
    with pytest.raises(ValueError, match="mode='while' takes max_iter"):
        relaxed_shortest_path(GOOD, 1.0, mode="while", n_iter=10)
    with pytest.raises(ValueError, match="mode='for' takes n_iter"):
        RelaxedBellmanFord(1.0, max_iter=10)
    with pytest.raises(ValueError, match="tol"):
        relaxed_shortest_path(GOOD, 1.0, tol=0.0)
    with pytest.raises(TypeError, match="n_iter"):
        relaxed_shortest_path(GOOD, 1.0, n_iter=5.0)
    with pytest.raises(ValueError, match="loss"):
        RelaxedShortestPathLoss(1.0, "huber")
    with pytest.raises(ValueError, match="kind"):
        PathLoss("l3")
    with pytest.raises(ValueError, match="delta"):
        PathLoss("smooth_l1", delta=0.0)


def test_bad_estimator_arguments():
    loss = SmoothedLoss(n_samples=2)
    with pytest.raises(ValueError, match="projection"):
        loss.hessian_estimator(projection="clamp")
    with pytest.raises(TypeError, match="fresh"):
        loss.hessian_estimator(fresh=1)
    with pytest.raises(ValueError, match="before a forward pass"):
        loss.hessian_estimator()(GOOD.flatten(1), None, TARGET)
    with pytest.raises(ValueError, match="Gauss-Newton.*zero"):
        SmoothedAlgorithmLoss("l1").gauss_newton_estimator()
    with pytest.raises(ValueError, match="one value per point"):
        GaussianSmoothing(lambda p: p, n_samples=2)(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="fn must be callable"):
        GaussianSmoothing(3)


def test_estimator_validates_y_and_target_before_drawing():
    loss = SmoothedAlgorithmLoss("l2", n_samples=2, generator=torch.Generator().manual_seed(0))
    loss(GOOD, TARGET)
    est = loss.hessian_estimator()
    # the user's shapes, not flattened ones or an unpacking error
    with pytest.raises(ValueError, match=r"target must have the shape of the costs \(2, 4, 4\), got \(2, 3, 3\)"):
        est(GOOD.flatten(1), None, TARGET[:, :3, :3])
    with pytest.raises(ValueError, match=r"y of shape \(2, 9\).*\(2, 4, 4\)"):
        est(GOOD[:, :3, :3].flatten(1), None, TARGET[:, :3, :3])
    with pytest.raises(TypeError, match="target"):
        est(GOOD.flatten(1), None)
    with pytest.raises(TypeError, match="target"):
        est(GOOD.flatten(1), None, TARGET, TARGET)
    # fresh samples at negative costs are rejected like in the forward pass
    fresh = loss.hessian_estimator(fresh=True)
    with pytest.raises(ValueError, match="non-negative"):
        fresh(GOOD.flatten(1) - 10.0, None, TARGET)
    fy = FenchelYoungLoss(n_samples=2)
    fy(GOOD, TARGET)
    with pytest.raises(ValueError, match="non-negative"):
        fy.hessian_estimator(fresh=True)(GOOD.flatten(1) - 10.0, None, target=TARGET)


@pytest.mark.parametrize("cls", STOCHASTIC)
def test_tiny_sigma_is_a_value_error(cls):
    with pytest.raises(ValueError, match="sigma"):
        cls(sigma=1e-300, n_samples=2)


def test_path_loss_rejects_non_finite_pred():
    pred = torch.full((1, 2, 2), float("nan"), dtype=torch.float64)
    with pytest.raises(ValueError, match="pred must be finite"):
        PathLoss("l2")(pred, torch.zeros(1, 2, 2))
