"""The first call does not time chunk sizes for work too small to pay for the timing."""
import pytest
import torch

import newton_losses.curvature as curv
import newton_losses.curvature.chunking as chunking
from newton_losses import NeuralSort, NewtonLoss, RankingLoss, permutation_matrix


def _ranking_batch(N=8, n=5):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(N, n, generator=gen)
    return y, permutation_matrix(torch.randn(N, n, generator=gen))


@pytest.fixture
def tuner_calls(monkeypatch):
    calls = []

    def counting(output, inputs, grad_outputs, *a, **k):
        calls.append(grad_outputs.shape[0])
        return 1

    monkeypatch.setattr(curv, "choose_chunk_size", counting)
    return calls


def test_a_small_batch_is_not_tuned(tuner_calls):
    y, target = _ranking_batch()  # 8 sets of 5: the case
    newton = NewtonLoss(RankingLoss(NeuralSort(1.0)), curvature="hessian", lam=0.1)
    for _ in range(3):
        newton(y.clone().requires_grad_(True), target).backward()
    assert tuner_calls == []
    assert list(newton._chunk_cache.values()) == [5]  # all rows at once


def test_work_predicted_above_the_threshold_is_tuned_once(tuner_calls, monkeypatch):
    monkeypatch.setattr(chunking, "MIN_TUNED_WORK_S", 0.0)
    y, target = _ranking_batch()
    newton = NewtonLoss(RankingLoss(NeuralSort(1.0)), curvature="hessian", lam=0.1)
    for _ in range(3):
        newton(y.clone().requires_grad_(True), target).backward()
    assert tuner_calls == [5]
    assert list(newton._chunk_cache.values()) == [1]


def test_the_choice_does_not_change_the_step(monkeypatch):
    y, target = _ranking_batch()
    y = y.double()
    target = target.double()
    loss = RankingLoss(NeuralSort(1.0))
    untuned = NewtonLoss(loss, curvature="hessian", lam=0.1).target(y, target)
    monkeypatch.setattr(chunking, "MIN_TUNED_WORK_S", 0.0)
    tuned = NewtonLoss(loss, curvature="hessian", lam=0.1).target(y, target)
    looped = NewtonLoss(loss, curvature="hessian", lam=0.1, chunk_size=1).target(y, target)
    torch.testing.assert_close(untuned, looped, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tuned, looped, rtol=1e-12, atol=1e-12)
