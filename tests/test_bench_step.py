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


def test_step_rows_carry_the_newton_share_and_the_share_table_reads_them():
    cfg = protocol_config("ranking", "tiny", n=4)
    rows = bs.run_steps([bs.StepCase("tiny ranking", cfg, ("none", "fisher"))], repeats=2, out=io.StringIO(),
                        progress=False)
    assert rows[0]["newton_share"] == 0.0 and 0.0 < rows[1]["newton_share"] < 1.0
    table = bs.share_table(rows).splitlines()
    assert table[0] == "| training step | baseline ms | fisher |"
    assert table[2].startswith("| tiny ranking | ") and table[2].endswith(f"({rows[1]['ratio']:.3f}×) |")


def test_pto_cases_are_the_issues_and_left_out_without_pyepo(monkeypatch):
    import newton_lab.tasks.pyepo as task_module

    if bs.pto_missing() is None:
        cases = bs.pto_step_cases()
        assert [(c.cfg.method, c.variants) for c in cases] == [
            ("spo_plus", ("none", "fisher")), ("pfyl", ("none", "fisher", "hessian")),
            ("dpo", ("none", "fisher", "hessian", "gauss_newton"))]
        for c in cases:  # PyEPO's linear model on its grid shortest path, batch 32
            assert (c.cfg.task, c.cfg.model, c.cfg.batch_size, c.cfg.task_args["problem"]) == (
                "pto", "linear", 32, "shortest_path")
            assert c.name.startswith("pto shortest path 5x5 (linear), ") and c.name.endswith(", batch 32")
        assert [c.cfg.method for c in bs.pto_step_cases(quick=True)] == ["pfyl"]
        assert [c.name for c in bs.step_cases(quick=True, paper=False) if c.cfg.task == "pto"] == [
            c.name for c in bs.pto_step_cases(quick=True)]
        assert not any(c.cfg.task == "pto" for c in bs.step_cases(quick=True, paper=False, pto=False))
    # without PyEPO: a note, and the other cases as before
    monkeypatch.setattr(task_module, "installed", lambda name: name != "pyepo")
    assert "pyepo not installed" in bs.pto_missing()
    assert [c.cfg.task for c in bs.step_cases(quick=True, paper=False)] == ["ranking", "shortest_path"]


def test_pto_steps_at_a_tiny_size():
    pytest.importorskip("pyepo")
    pytest.importorskip("ortools")
    cases = bs.pto_step_cases()
    for c in cases:  # the issue's cases, made tiny: few instances, 2 samples
        args = {"samples": 2} if c.cfg.method in ("pfyl", "dpo") else {}
        c.cfg = c.cfg.replace(train_size=40, val_sets=4, test_sets=4, batch_size=8,
                              method_args={**c.cfg.method_args, **args}).validate()
    out = io.StringIO()
    rows = bs.run_steps(cases, repeats=1, out=out, progress=False)
    assert [(r["method"], r["variant"]) for r in rows] == [
        ("spo_plus", "none"), ("spo_plus", "fisher"), ("pfyl", "none"), ("pfyl", "fisher"), ("pfyl", "hessian"),
        ("dpo", "none"), ("dpo", "fisher"), ("dpo", "hessian"), ("dpo", "gauss_newton")]
    assert all(r["task"] == "pto" and r["protocol"] == "pyepo" and r["n"] is None for r in rows)
    assert all(r["seconds"] > 0 for r in rows)
    for r in rows:
        if r["variant"] == "none":
            assert r["ratio"] == 1.0 and r["newton_s"] == 0.0 and r["newton_share"] == 0.0
        else:
            assert r["newton_s"] > 0 and 0.0 < r["newton_share"] < 1.0
    steps, shares = bs.step_table(rows), bs.share_table(rows)
    for c in cases:
        assert f"| {c.name} | " in steps and f"| {c.name} | " in shares
    header = "| training step | baseline ms | hessian | fisher | gauss_newton |"  # the registry's order
    assert steps.splitlines()[0] == header and shares.splitlines()[0] == header
    spo = shares.splitlines()[2].split(" | ")  # SPO+: Fisher only
    assert spo[0] == f"| {cases[0].name}" and spo[2] == "n/a" and spo[4] == "n/a |"
    assert spo[3] == f"{100 * rows[1]['newton_share']:.1f}% ({rows[1]['ratio']:.3f}×)"
    assert "Newton share" in out.getvalue()
    # the issue-6 targets do not read the pto rows
    assert bs.check_targets(rows) == []


def test_bench_command_prints_the_share_table_and_says_when_pto_is_left_out(monkeypatch, capsys):
    from newton_lab.bench import main

    tiny = [bs.StepCase("tiny ranking", protocol_config("ranking", "tiny", n=4), ("none", "fisher"))]
    monkeypatch.setattr(bs, "step_cases", lambda quick=False, paper=True, pto=True: tiny)
    monkeypatch.setattr(bs, "pto_missing", lambda: "predict-then-optimize (pto) steps left out: test")
    assert main(["--section", "step", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "predict-then-optimize (pto) steps left out: test" in out
    assert "Newton step's share of each variant's training step" in out
    assert out.count("| tiny ranking | ") == 2  # the ratio table and the share table
