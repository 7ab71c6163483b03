"""Smoke tests of the real-loss and training-step benchmarks (timings are never asserted)."""
import io

import pytest

from newton_lab import bench_step as bs
from newton_lab.config import protocol_config


def test_loss_section_times_every_variant_against_the_plain_loss():
    cases = [c for c in bs.loss_cases(quick=True) if c.name in ("neuralsort n=5", "bf_for 12x12")]
    cases[1].N = 4  # a small batch of grids
    out = io.StringIO()
    rows = bs.run_losses(cases, repeats=1, out=out)
    assert {(r["case"], r["variant"]) for r in rows} == {
        (c.name, v) for c in cases for v in ("plain backward",) + c.variants}
    assert all(r["seconds"] > 0 for r in rows)
    assert "hessian" in bs.loss_table(rows) and " cg" in bs.loss_table(rows)  # m = 144 solves by CG


def test_step_section_trains_each_variant_on_the_same_batches():
    cfg = protocol_config("ranking", "tiny", n=4)
    case = bs.StepCase("tiny ranking", cfg, ("none", "fisher", "gauss_newton"))
    sp = protocol_config("shortest_path", "tiny", method="perturbed_fy", method_args={"samples": 2})
    case2 = bs.StepCase("tiny path", sp, ("none", "fisher", "hessian"))
    out = io.StringIO()
    rows = bs.run_steps([case, case2], repeats=1, out=out, progress=False)
    assert [r["variant"] for r in rows] == ["none", "fisher", "gauss_newton", "none", "fisher", "hessian"]
    assert rows[0]["ratio"] == 1.0 and all(r["seconds"] > 0 for r in rows)
    assert rows[0]["newton_s"] == 0.0 and all(r["newton_s"] > 0 and r["grad_s"] > 0 for r in rows[1:3])
    assert "| tiny ranking |" in bs.step_table(rows)


def _row(variant, ratio, protocol="paper", task="ranking", method="odd_even", n=10):
    return dict(section="step", case=f"{protocol} {method}", variant=variant, seconds=1.0, ratio=ratio,
                newton_s=0.0, protocol=protocol, task=task, method=method, n=n)


def test_targets_are_read_from_the_rows():
    rows = [_row("fisher", 1.01), _row("hessian", 1.6),
            _row("gauss_newton", 1.9, task="shortest_path", method="bf_for", n=None),
            _row("hessian", 2.5, task="shortest_path", method="bf_for", n=None),
            _row("hessian@cg2", 1.5, protocol="quick", task="shortest_path", method="bf_for", n=None)]
    dense = [dict(case="x", speedup=25.0, max_abs_diff=1e-7), dict(case="y", speedup=300.0, max_abs_diff=1e-3)]
    lines = bs.check_targets(rows, dense)
    assert lines[0].startswith("PASS: Fisher") and lines[1].startswith("FAIL: Hessian")
    assert lines[2].startswith("PASS: relaxed Bellman-Ford") and "gauss_newton 1.900" in lines[2]
    assert lines[3].startswith("PASS: relaxed Bellman-Ford") and "quick network) — hessian@cg2 1.500" in lines[3]
    assert "CG capped at 2 iterations" not in lines[2]
    assert lines[4].startswith("PASS: Hessian path") and lines[5].startswith("FAIL: Hessian path")


def test_a_ratio_within_the_timing_spread_is_not_a_miss_when_the_added_cost_is_small():
    noisy = dict(_row("fisher", 1.107), spread=0.06, base_spread=0.05, added_ratio=1.0002, newton_s=0.0011)
    slow = dict(_row("fisher", 1.107), spread=0.01, base_spread=0.01, added_ratio=1.0002, newton_s=0.0011)
    costly = dict(_row("fisher", 1.107), spread=0.06, base_spread=0.05, added_ratio=1.08, newton_s=0.5)
    assert bs.check_targets([noisy])[0].startswith("PASS (within noise): Fisher")
    assert "curvature + solve 1.1 ms = 1.0002×" in bs.check_targets([noisy])[0]
    assert bs.check_targets([slow])[0].startswith("FAIL")
    assert bs.check_targets([costly])[0].startswith("FAIL")


def test_cli_rejects_bad_arguments():
    from newton_lab.bench import main

    with pytest.raises(SystemExit):
        main(["--repeats", "0"])
    with pytest.raises(SystemExit):
        main(["--section", "gpu"])
