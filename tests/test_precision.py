"""The precision check (newton_losses.check_precision, NewtonLoss(precision_every=k), the runner's
precision_every) and the runner's online spike count."""
import json

import pytest
import torch

from newton_losses import NewtonLoss, RankingLoss, check_precision
from newton_losses.sorting import DiffSortNet, permutation_matrix

# A set from a gradient spike of a replayed study run (tests/test_sorting.py): a false entry of P
# within 3e-8 of 1, which float32 rounds to 1.
SPIKE_SCORES = torch.tensor([[0.11536180973052979, 0.20101846754550934, 0.5387735962867737,
                              -1.751017451286316, 0.29288342595100403]])
SPIKE_TARGET = permutation_matrix(torch.tensor([[0.0, 4.0, 3.0, 1.0, 2.0]]))


def _batch():
    """Eight ordinary sets and the spike set at index 5."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(8, 5, generator=g)
    T = permutation_matrix(torch.randn(8, 5, generator=g))
    y[5], T[5] = SPIKE_SCORES[0], SPIKE_TARGET[0]
    return y, T


def test_the_naive_float32_bce_is_flagged_on_the_spike_set_and_the_exact_one_passes():
    y, T = _batch()
    # The naive BCE with the study's arithmetic (lerp soft swaps), the exact one with the default.
    lerp, net = DiffSortNet("odd_even", 5, steepness=10.0, precise=False), DiffSortNet("odd_even", 5, steepness=10.0)
    naive = check_precision(RankingLoss(lerp, loss="bce"), y, T)
    # (Sample 7, an ordinary random set, is off by about 40% too: one of its entries is a few
    # 1e-7 from 1, where float32's 1 − P keeps one or two digits.)
    assert 5 in naive.sick.tolist() and set(naive.sick.tolist()) <= {5, 7}
    assert float(naive.ratio[5]) > 1000  # thousands of times too large (RESULTS §2)
    assert not naive.ok and "sample 5" in naive.advice() and "float64" in naive.advice()
    exact = check_precision(RankingLoss(net), y, T)
    assert exact.ok and exact.worst < 1e-4 and exact.advice() == ""
    assert "within 0.1 of float64" in str(exact)


def test_float64_inputs_and_mean_losses_and_bad_arguments():
    y, T = _batch()
    loss = RankingLoss(DiffSortNet("odd_even", 5, steepness=10.0, precise=False), loss="bce")
    assert check_precision(loss, y.double(), T).worst == 0.0  # float64 against itself
    mean = check_precision(lambda s, t: loss(s, t).mean(), y, T)  # a scalar (mean) loss
    assert mean.sick.tolist() == check_precision(loss, y, T).sick.tolist()
    with pytest.raises(ValueError, match="rtol"):
        check_precision(loss, y, T, rtol=0)
    with pytest.raises(TypeError, match="floating-point tensor"):
        check_precision(loss, y.long(), T)


def test_newton_loss_checks_every_k_calls_and_warns_once():
    y, T = _batch()
    newton = NewtonLoss(RankingLoss(DiffSortNet("odd_even", 5, steepness=10.0, precise=False), loss="bce"),
                        curvature="fisher", lam=0.1, precision_every=2)
    with pytest.warns(RuntimeWarning, match="sample 5"):
        newton(y.clone().requires_grad_(True), T)
    sick = newton.last_diagnostics.precision.sick.numel()
    assert 5 in newton.last_diagnostics.precision.sick.tolist()
    assert newton.last_diagnostics.as_dict()["precision"] == {
        "worst": newton.last_diagnostics.precision.worst, "sick": sick}
    newton(y.clone().requires_grad_(True), T)  # call 2: not checked, no warning
    assert newton.last_diagnostics.precision is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        newton(y.clone().requires_grad_(True), T)  # call 3: checked, sick again, warned already
    assert newton.totals.precision_checks == 2 and newton.totals.precision_sick == 2 * sick
    with pytest.raises(ValueError, match="precision_every"):
        NewtonLoss(lambda s: s.sum(-1), precision_every=-1)


def test_spike_counter_follows_the_study_rule():
    from newton_lab.runner import SpikeCounter

    c = SpikeCounter()
    assert sum(c.add(1.0 + 0.01 * (i % 7)) for i in range(SpikeCounter.WARMUP)) == 0
    assert c.add(150.0) == 1  # > 100 × the median (≈ 1.03)
    assert c.add(90.0) == 0  # below the rule: kept in the window
    restored = SpikeCounter()
    restored.load_state_dict(c.state_dict())
    assert restored.add(150.0) == c.add(150.0) == 1
    assert SpikeCounter().add(1e9) == 0  # no typical norm yet


def test_runner_logs_spikes_and_precision_checks_and_report_shows_them(tmp_path):
    from newton_lab import protocol_config, read_metrics, train
    from newton_lab.report import build_report

    cfg = protocol_config("ranking", "tiny", method="odd_even", method_args={"loss": "bce"},
                          precision_every=5, steps=20, eval_every=10)
    result = train(cfg, tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run")
    assert [r["precision"]["checks"] for r in records] == [2, 2]
    assert all(r["spikes"] == 0 for r in records)  # 20 steps: no typical norm yet
    assert result["spikes"] == 0 and result["precision"]["precision_checks"] == 4
    assert json.loads((tmp_path / "run" / "result.json").read_text())["precision"] == result["precision"]
    # Without precision_every the run id is the one it had before the field existed.
    assert "precision_every" not in cfg.replace(precision_every=0).validate().identity()
    md = build_report([tmp_path / "run"], out=tmp_path / "rep", plots=False).markdown
    assert "| spikes (runs) | f64 check: sick / checks, worst |" in md
    assert "| 0 (0/1) | 0 / 4, worst" in md or "/ 4, worst" in md


def test_stochastic_losses_are_refused_with_a_reason():
    """Two evaluations of a loss that draws samples differ by their samples, not by rounding."""
    from newton_lab import protocol_config
    from newton_losses.shortest_path import FenchelYoungLoss

    y = torch.rand(2, 3, 3) + 0.5
    paths = torch.zeros(2, 3, 3)
    loss = FenchelYoungLoss(sigma=0.5, n_samples=4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="draws random samples"):
        check_precision(loss, y, paths)
    with pytest.raises(ValueError, match="draws random samples"):
        NewtonLoss(loss, curvature="fisher", precision_every=1)
    with pytest.raises(ValueError, match="stochastic method 'perturbed_fy'"):
        protocol_config("shortest_path", "tiny", method="perturbed_fy", precision_every=2)


def test_inputs_the_check_handles_or_refuses_clearly():
    y = torch.randn(4, 3)
    assert check_precision(lambda s: (s ** 2).sum(-1), y[:, 0]).ok  # y of shape (N,)
    assert check_precision(lambda s: torch.ones(4), y).worst == 0.0  # no dependence on y
    lin = torch.nn.Linear(3, 1)  # float32 parameters cannot take float64 inputs
    with pytest.raises(ValueError, match="could not be evaluated in float64"):
        check_precision(lambda s: lin(s).squeeze(-1), y)
    with pytest.raises(TypeError, match="precision_every must be an int"):
        NewtonLoss(lambda s: s.sum(-1), precision_every=2.0)


def test_a_sample_with_a_negligible_gradient_is_not_sick_for_its_relative_error():
    # A saturated set (its true gradient 10⁻¹² of the batch's) whose float32 gradient is off by
    # 50% of itself: harmless, and not flagged — unless floor=0 judges it against itself alone.
    def loss_fn(y, scale):
        return (scale * y.sin()).sum(-1)

    y = torch.zeros(3, 4)
    scale32 = torch.tensor([[1.0], [1.0], [1e-12]])

    def wobbly(y, scale):  # float32 rounding stand-in: the third sample's gradient 1.5× in float32
        bump = torch.tensor([[1.0], [1.0], [1.5]], dtype=y.dtype) if y.dtype == torch.float32 else 1.0
        return loss_fn(y, scale * bump)

    report = check_precision(wobbly, y, scale32)
    assert report.ok and report.worst < 1e-9
    strict = check_precision(wobbly, y, scale32, floor=0)
    assert strict.sick.tolist() == [2] and abs(strict.worst - 0.5) < 1e-6
    assert abs(float(report.ratio[2]) - 1.5) < 1e-6   # the ratio stays the sample's own


@pytest.mark.parametrize("floor", [-0.1, 1.0, "0.1", True])
def test_floor_must_be_a_fraction(floor):
    with pytest.raises(ValueError, match="floor"):
        check_precision(lambda y: y.sum(-1), torch.zeros(2, 3), floor=floor)
