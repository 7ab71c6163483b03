"""Agreement with the reference packages in float32 (their only dtype).

diffsort (sorting networks) and difftopk (NeuralSort, SoftSort) are test-only dependencies (the
`dev` extra). Their conventions differ from ours and are mapped here:
- diffsort returns X with x @ X = ascending sort, i.e. X = Pᵀ; its README's ground truth is
  one_hot(argsort(labels)).transpose(-2, -1), also Pᵀ.
- difftopk.NeuralSort returns Pᵀ (it negates the scores internally to sort ascending).
- difftopk.SoftSort sorts descending and returns P @ x = descending sort; ours equals it on -x.
"""

import pytest
import torch

from newton_losses.sorting import DiffSortNet, NeuralSort, SoftSort, permutation_matrix, ranking_bce

diffsort = pytest.importorskip("diffsort")
difftopk = pytest.importorskip("difftopk")

ATOL = 1e-5


@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
@pytest.mark.parametrize("sigmoid", ["logistic", "logistic_phi", "cauchy"])
@pytest.mark.parametrize("n", [2, 3, 5, 8, 10, 16, 32])
@pytest.mark.parametrize("steepness", [1.0, 10.0])
def test_sorting_networks_match_diffsort(network, sigmoid, n, steepness):
    g = torch.Generator().manual_seed(n)
    scores = torch.randn(16, n, generator=g)
    sorted_ref, X = diffsort.DiffSortNet(network, n, steepness=steepness, distribution=sigmoid)(scores)
    P = DiffSortNet(network, n, steepness=steepness, sigmoid=sigmoid)(scores)
    torch.testing.assert_close(P, X.transpose(-2, -1), atol=ATOL, rtol=0)
    torch.testing.assert_close((P @ scores.unsqueeze(-1)).squeeze(-1), sorted_ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("art_lambda", [0.0, 0.25, 0.5])
def test_art_lambda_matches_diffsort(art_lambda):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 6, generator=g)
    reference = diffsort.DiffSortNet("odd_even", 6, steepness=5.0, art_lambda=art_lambda, distribution="logistic_phi")
    _, X = reference(scores)
    P = DiffSortNet("odd_even", 6, steepness=5.0, sigmoid="logistic_phi", art_lambda=art_lambda)(scores)
    torch.testing.assert_close(P, X.transpose(-2, -1), atol=ATOL, rtol=0)


@pytest.mark.parametrize("tau", [0.1, 1.0, 4.0])
@pytest.mark.parametrize("n", [2, 5, 10, 32])
def test_neuralsort_matches_difftopk(tau, n):
    g = torch.Generator().manual_seed(n)
    scores = torch.randn(16, n, generator=g)
    X = difftopk.NeuralSort(tau=tau)(scores)
    # Logits grow like n |s| / τ, so both float32 implementations round at about 1e-5 / τ.
    torch.testing.assert_close(NeuralSort(tau)(scores), X.transpose(-2, -1), atol=ATOL / min(tau, 1.0), rtol=0)


@pytest.mark.parametrize("tau", [0.1, 1.0, 4.0])
@pytest.mark.parametrize("power", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("n", [2, 5, 10, 32])
def test_softsort_matches_difftopk(tau, power, n):
    g = torch.Generator().manual_seed(n)
    scores = torch.randn(16, n, generator=g)
    P_desc = difftopk.SoftSort(tau=tau, pow=power)(-scores)
    torch.testing.assert_close(SoftSort(tau, power)(scores), P_desc, atol=ATOL / min(tau, 1.0), rtol=0)


def test_ground_truth_and_loss_follow_the_diffsort_protocol():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10000, (100, 5), generator=g).float()
    scores = torch.randn(100, 5, generator=g)
    _, X = diffsort.DiffSortNet("odd_even", 5, steepness=10.0, distribution="logistic")(scores)
    # The README's protocol: perm_ground_truth = one_hot(argsort(labels)).transpose(-2, -1).float()
    truth_ref = torch.nn.functional.one_hot(torch.argsort(labels, dim=-1)).transpose(-2, -1).float()
    truth = permutation_matrix(labels)
    assert torch.equal(truth, truth_ref.transpose(-2, -1))
    # BCELoss clamps log at -100; ours shifts by 1e-12: equal wherever P is away from 0 and 1.
    X = X.clamp(1e-4, 1 - 1e-4)
    expected = torch.nn.BCELoss()(X, truth_ref)
    torch.testing.assert_close(ranking_bce(X.transpose(-2, -1), truth).mean(), expected, rtol=1e-5, atol=0)
