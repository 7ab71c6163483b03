"""NewtonLoss under torch.compile (issue 24): a compiled training step gives the eager gradients,
and no graph break comes from this package — counted with ``torch._dynamo.explain``.

PyTorch's own limit: with its default configuration dynamo does not trace ``torch.autograd.grad``
(a graph break per call, reason "trace_autograd_ops=False"); with
``torch._dynamo.config.trace_autograd_ops = True`` it does, and the built-in dense curvatures
compile with ``fullgraph=True``. docs/INTEGRATION.md says which configuration does what.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from newton_losses import CompositeLoss, NewtonLoss
from newton_losses.shortest_path import RelaxedShortestPathLoss
from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix

dynamo = pytest.importorskip("torch._dynamo")


@pytest.fixture
def trace_autograd():
    """dynamo with torch.autograd.grad traced (restored afterwards)."""
    old = dynamo.config.trace_autograd_ops
    dynamo.config.trace_autograd_ops = True
    dynamo.reset()
    yield
    dynamo.config.trace_autograd_ops = old
    dynamo.reset()


def _quartic(y, t):
    return ((y - t) ** 4).sum(-1) + (y[:, 0] * y[:, 1]) ** 2


class _Costs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(5, 9)

    def forward(self, x):
        return torch.nn.functional.softplus(self.linear(x)).view(-1, 3, 3) + 1.0


def _problem(name):
    """(loss, network, x, target) — one generic loss and the package's own losses."""
    g = torch.Generator().manual_seed(0)
    if name == "quartic":
        return _quartic, torch.nn.Linear(4, 3), torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)
    if name == "path":  # costs ≥ 1 and β = 5: the relaxed Bellman-Ford converges
        return (RelaxedShortestPathLoss(beta=5.0), _Costs(), torch.randn(6, 5, generator=g),
                (torch.rand(6, 3, 3, generator=g) > 0.5).float())
    if name == "values":  # the target as values, from which RankingLoss builds the matrices
        return RankingLoss(NeuralSort()), torch.nn.Linear(4, 4), torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    relaxation = {"neuralsort": NeuralSort(), "softsort": SoftSort(),
                  "odd_even": DiffSortNet("odd_even", 4, sigmoid="logistic")}[name]
    P = permutation_matrix(torch.randn(8, 4, generator=g))
    return RankingLoss(relaxation), torch.nn.Linear(4, 4), torch.randn(8, 4, generator=g), P


def _grads(newton, net, x, t, compile_kw=None):
    net.zero_grad()
    step = lambda x, t: newton(net(x), t)  # noqa: E731
    if compile_kw is not None:
        step = torch.compile(step, **compile_kw)
    value = step(x, t)
    value.backward()
    return value.detach(), [p.grad.clone() for p in net.parameters()]


def _break_reasons(fn, *args):
    ex = dynamo.explain(fn)(*args)
    return ex.graph_break_count, [r.reason for r in ex.break_reasons]


PROBLEMS = ["quartic", "neuralsort", "softsort", "odd_even", "path", "values"]
DENSE = ["fisher", "hessian", "hessian_batch"]


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("curvature", DENSE)
def test_no_graph_break_after_the_first_call(trace_autograd, problem, curvature):
    loss, net, x, t = _problem(problem)
    newton = NewtonLoss(loss, curvature=curvature, lam=0.1)
    step = lambda x, t: newton(net(x), t)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dynamo's own notes
        first, _ = _break_reasons(step, x, t)  # the first call's checks run eagerly: one break
        count, reasons = _break_reasons(step, x, t)
    assert newton._first_call_done or not newton._first_call_needed()
    assert count == 0, reasons
    assert first <= 3


# Every (problem, curvature) pair compiles twice (about 5 s each): a spread in the default suite,
# the whole matrix with the slow tests.
FAST_PAIRS = {("quartic", "fisher"), ("quartic", "hessian"), ("quartic", "hessian_batch"),
              ("neuralsort", "hessian"), ("odd_even", "fisher"), ("path", "hessian_batch"),
              ("values", "hessian")}
FULLGRAPH_CASES = [pytest.param(p, c, marks=() if (p, c) in FAST_PAIRS else pytest.mark.slow)
                   for p in PROBLEMS for c in DENSE]


@pytest.mark.parametrize("problem, curvature", FULLGRAPH_CASES)
def test_fullgraph_step_gives_the_eager_gradients(trace_autograd, problem, curvature):
    loss, net, x, t = _problem(problem)
    options = dict(curvature=curvature, lam=0.1, check_hessian="never", reduction="mean")
    value, eager = _grads(NewtonLoss(loss, **options), net, x, t)
    newton = NewtonLoss(loss, **options)  # nothing to check on the first call: fullgraph from the start
    for _ in range(2):  # the second call reuses the graph
        c_value, compiled = _grads(newton, net, x, t, dict(fullgraph=True, backend="aot_eager"))
        torch.testing.assert_close(c_value, value)
        for a, b in zip(compiled, eager):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_default_config_breaks_only_at_autograd_grad():
    """Without trace_autograd_ops, every break is PyTorch's autograd.grad (or the frame dynamo
    then gives up on), none is a timer, .item() or private check of ours."""
    dynamo.reset()
    for problem in ("quartic", "neuralsort", "path"):
        loss, net, x, t = _problem(problem)
        newton = NewtonLoss(loss, curvature="hessian", lam=0.1)
        step = lambda x, t: newton(net(x), t)  # noqa: E731
        step(x, t)  # eager first call
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            count, reasons = _break_reasons(step, x, t)
        assert count > 0
        ours = [r for r in reasons if "autograd.grad" not in r and "step_unsupported" not in r]
        assert not ours, ours
    dynamo.reset()


def test_compiled_step_with_default_options_matches_eager(trace_autograd):
    loss, net, x, t = _problem("neuralsort")
    value, eager = _grads(NewtonLoss(loss, curvature="hessian", lam=0.1), net, x, t)
    newton = NewtonLoss(loss, curvature="hessian", lam=0.1)
    _grads(newton, net, x, t, dict(backend="aot_eager"))  # first call: checks eagerly, then traced
    c_value, compiled = _grads(newton, net, x, t, dict(backend="aot_eager"))
    torch.testing.assert_close(c_value, value)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert newton.last_diagnostics is not None  # from the eager first call


def test_gauss_newton_runs_its_step_eagerly_and_gives_the_eager_gradients(trace_autograd):
    """Gauss-Newton's Jacobian-vector products differentiate the inner map twice, which
    AOTAutograd cannot do through compiled code ("does not currently support double backward"):
    its step runs outside the graph (docs/INTEGRATION.md), and the result is the eager one."""
    loss, net, x, t = _problem("odd_even")
    options = dict(curvature="gauss_newton", lam=0.1, check_hessian="never", reduction="mean")
    value, eager = _grads(NewtonLoss(loss.composite(), **options), net, x, t)
    c_value, compiled = _grads(NewtonLoss(loss.composite(), **options), net, x, t, dict(backend="aot_eager"))
    torch.testing.assert_close(c_value, value)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_checks_still_catch_a_bad_loss(trace_autograd):
    """The first-call checks run eagerly under compile too: a summed loss is still refused."""
    newton = NewtonLoss(lambda y, t: _quartic(y, t).sum(), curvature="fisher", lam=0.1)
    net = torch.nn.Linear(4, 3)
    step = torch.compile(lambda x, t: newton(net(x), t), backend="aot_eager")
    with pytest.raises(ValueError, match="reduction='sum'"):
        step(torch.randn(8, 4), torch.randn(8, 3))


def test_compiled_probe_waits_for_a_batch_it_can_read(trace_autograd):
    """A first batch of one sample cannot tell a sum from a mean: under compile too, the probe
    runs (eagerly) on the next batch that can, and refuses the summed loss there."""
    newton = NewtonLoss(lambda y, t: _quartic(y, t).sum(), curvature="fisher", lam=0.1)
    net = torch.nn.Linear(4, 3)
    step = torch.compile(lambda x, t: newton(net(x), t), backend="aot_eager")
    step(torch.randn(1, 4), torch.randn(1, 3))
    assert not newton._reduction_checked
    with pytest.raises(ValueError, match="reduction='sum'"):
        step(torch.randn(8, 4), torch.randn(8, 3))


def test_composite_loss_is_traceable_at_least_with_breaks(trace_autograd):
    loss = CompositeLoss(torch.tanh, lambda a, t: ((a - t) ** 2).sum(-1))
    net = torch.nn.Linear(4, 3)
    x, t = torch.randn(5, 4), torch.randn(5, 3)
    newton = NewtonLoss(loss, curvature="hessian", lam=0.1, check_hessian="never", reduction="mean")
    value, eager = _grads(newton, net, x, t)
    c_value, compiled = _grads(newton, net, x, t, dict(fullgraph=True, backend="aot_eager"))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
