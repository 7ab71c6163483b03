"""The benchmark's dense reference is itself an independent oracle for the Hessian path."""
import torch

from newton_losses import NewtonLoss, RankingLoss, DiffSortNet, permutation_matrix
from newton_lab.bench import dense_reference


def test_dense_full_hessian_reference_equals_block_path():
    gen = torch.Generator().manual_seed(0)
    N, n = 6, 5
    loss = RankingLoss(DiffSortNet("odd_even", n, 10.0))
    y = torch.randn(N, n, generator=gen, dtype=torch.float64)
    T = permutation_matrix(torch.randn(N, n, generator=gen, dtype=torch.float64))
    ref = dense_reference(loss, y, (T,), 0.1)
    ours = y - NewtonLoss(loss, curvature="hessian", lam=0.1, solver="dense").target(y, T)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
