"""Every built-in curvature provider against an independent float64 oracle (tests/test_newton.py).

A new built-in curvature is one entry in ORACLES; the first test fails until it has one.
"""
import pytest
import torch

from newton_losses import CompositeLoss, NewtonLoss
from newton_losses.curvature import BUILTIN_CURVATURES, get_curvature

from _losses import wavy
from test_newton import ref_direction, ref_fisher, ref_gauss_newton, ref_grads, ref_hessians

F64 = torch.float64


def _problem(seed=0, N=5, m=4):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(3, m, generator=gen, dtype=F64)
    t = torch.randn(N, m, generator=gen, dtype=F64)
    y = torch.randn(N, m, generator=gen, dtype=F64)
    return W, t, y


def _plain(W):
    return (lambda yy, tt: wavy(W, tt)(yy)), lambda y, t: ref_hessians(lambda yy, tt: wavy(W, tt)(yy), y, t)


def _composite(W):
    inner = lambda y: torch.softmax(y @ W.T, dim=-1)
    outer = lambda a, tt: ((a - torch.softmax(tt @ W.T, -1)) ** 2).sum(-1) + (a**4).sum(-1)
    return CompositeLoss(inner, outer), lambda y, t: ref_gauss_newton(inner, outer, y, t)


# name -> (loss builder, oracle C(y, t) with the shape the provider's step uses)
ORACLES = {
    "hessian": lambda W: _plain(W),
    "hessian_batch": lambda W: (_plain(W)[0], lambda y, t: _plain(W)[1](y, t).mean(0)),
    "fisher": lambda W: (_plain(W)[0], lambda y, t: ref_fisher(ref_grads(lambda yy, tt: wavy(W, tt)(yy), y, t))),
    "gauss_newton": lambda W: _composite(W),
}


def test_every_builtin_has_an_oracle():
    assert set(ORACLES) == set(BUILTIN_CURVATURES)


@pytest.mark.parametrize("name", BUILTIN_CURVATURES)
@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_builtin_step_matches_the_dense_oracle(name, solver):
    W, t, y = _problem()
    loss, oracle = ORACLES[name](W)
    C = oracle(y, t)
    # C + λI positive definite, so that CG's answer is the plain damped step.
    lam = 0.5 + max(0.0, -float(torch.linalg.eigvalsh(C).min()))
    if solver in get_curvature(name).solvers:
        newton = NewtonLoss(loss, curvature=name, lam=lam, solver=solver, projection="tikhonov")
    else:  # a form the curvature does not have: said, then solved in its own
        with pytest.warns(UserWarning, match="no matrix-free form"):
            newton = NewtonLoss(loss, curvature=name, lam=lam, solver=solver, projection="tikhonov")
    d = y - newton.target(y, t)
    g = ref_grads(lambda yy, tt: loss(yy, tt), y, t)
    expected = ref_direction(C, g, lam, "tikhonov")
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=1e-9)
    provider = get_curvature(name)
    used = "cg" if solver in provider.solvers and solver == "cg" else "dense"
    assert (newton.last_diagnostics.method == "cg") == (used == "cg")


@pytest.mark.parametrize("name", BUILTIN_CURVATURES)
def test_declared_needs_match_what_the_provider_does(name):
    provider = get_curvature(name)
    assert provider.solvers[0] == "dense"
    assert provider.needs_composite == (name == "gauss_newton")
    assert provider.psd == (name in ("fisher", "gauss_newton"))
    assert provider.second_order == (name != "fisher")
