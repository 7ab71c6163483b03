"""Every sorting relaxation wrapped in NewtonLoss, against a dense float64 reference.

For each relaxation and curvature the gradient arriving at y, (1/N)(C_i + λI)^{-1} g_i, is
rebuilt here independently of the core, one sample at a time with torch.autograd.functional:
per-sample Hessians, their batch mean, the empirical Fisher (1/N) Σ g_i g_iᵀ, and the
Gauss-Newton matrix J_iᵀ ∇²h_i J_i of ranking_bce ∘ relaxation. λ is chosen so that C + λI is
positive definite for every sample, and projection="tikhonov" then solves C + λI as it is.
"""

import pytest
import torch
from torch.autograd.functional import hessian, jacobian

import newton_losses
from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix

if not hasattr(newton_losses, "NewtonLoss"):
    pytest.skip("the core (newton_losses.NewtonLoss) is not there yet", allow_module_level=True)

from newton_losses import CompositeLoss, NewtonLoss  # noqa: E402


def relaxation_cases():
    cases = [
        ("neuralsort", 5, NeuralSort(0.5)),
        ("softsort_p1", 5, SoftSort(0.5)),
        ("softsort_p2", 5, SoftSort(0.5, power=2.0)),
        ("softsort_p1.5", 5, SoftSort(0.5, power=1.5)),
    ]
    for network in ("odd_even", "bitonic"):
        for sigmoid in ("logistic", "logistic_phi", "cauchy"):
            cases.append((f"{network}_{sigmoid}", 5, DiffSortNet(network, 5, 2.0, sigmoid)))
    # n >= 12 runs the sorting network's fused layers (custom autograd functions).
    cases.append(("bitonic_logistic_fused", 12, DiffSortNet("bitonic", 12, 2.0, "logistic")))
    return cases


CASES = {case_id: (n, relax) for case_id, n, relax in relaxation_cases()}
CURVATURES = [
    ("hessian", {"hessian_method": "rows"}),
    ("hessian", {"hessian_method": "vmap"}),
    ("hessian_batch", {}),
    ("fisher", {}),
    ("gauss_newton", {}),
]


def problem(n, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, n, generator=g, dtype=torch.float64)
    target = permutation_matrix(torch.randn(batch, n, generator=g, dtype=torch.float64))
    return scores, target


def dense_reference(curvature, relax, scores, target):
    """Per-sample curvature (N, n, n) and per-sample gradients (N, n), one sample at a time."""
    loss = RankingLoss(relax)
    one = [lambda s, t=t: loss(s.unsqueeze(0), t.unsqueeze(0)).squeeze(0) for t in target]
    grads = torch.stack([jacobian(f, s) for f, s in zip(one, scores)])
    N, n = scores.shape
    if curvature == "hessian":
        C = torch.stack([hessian(f, s) for f, s in zip(one, scores)])
    elif curvature == "hessian_batch":
        C = torch.stack([hessian(f, s) for f, s in zip(one, scores)]).mean(0).expand(N, n, n)
    elif curvature == "fisher":
        C = (grads.unsqueeze(-1) * grads.unsqueeze(-2)).mean(0).expand(N, n, n)
    else:
        blocks = []
        for s, t in zip(scores, target):
            J = jacobian(lambda v: relax(v.unsqueeze(0)).reshape(n * n), s)  # (n², n)
            P = relax(s.unsqueeze(0)).reshape(n * n)
            H_outer = hessian(lambda p: loss.outer(p.reshape(1, n, n), t.unsqueeze(0)).squeeze(0), P)
            blocks.append(J.T @ H_outer @ J)
        C = torch.stack(blocks)
    return C, grads


CURVATURE_IDS = [f"{c}-{o['hessian_method']}" if o else c for c, o in CURVATURES]


@pytest.mark.parametrize("curvature, options", CURVATURES, ids=CURVATURE_IDS)
@pytest.mark.parametrize("case_id", list(CASES))
def test_newton_gradient_matches_dense_reference(case_id, curvature, options):
    n, relax = CASES[case_id]
    scores, target = problem(n)
    N = scores.shape[0]
    C, grads = dense_reference(curvature, relax, scores, target)
    lam = 0.1 + max(0.0, -torch.linalg.eigvalsh(C).min().item())
    expected = torch.linalg.solve(C + lam * torch.eye(n, dtype=C.dtype), grads.unsqueeze(-1)).squeeze(-1) / N

    loss = RankingLoss(relax)
    loss_fn = CompositeLoss(loss.inner, loss.outer) if curvature == "gauss_newton" else loss
    newton = NewtonLoss(loss_fn, curvature=curvature, lam=lam, projection="tikhonov", **options)
    y = scores.clone().requires_grad_()
    value = newton(y, target)
    value.backward()

    torch.testing.assert_close(value.detach(), loss(scores, target).mean())
    torch.testing.assert_close(y.grad, expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(newton.target(scores, target), scores - N * expected, rtol=1e-6, atol=1e-10)
