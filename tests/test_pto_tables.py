"""scripts/pto_tables.py: the predict-then-optimize study's λ rule and tables, on run directories
written as the runner writes them (config.json, result.json) with chosen validation and test
regrets, and on a few real tiny runs."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyepo")
pytest.importorskip("ortools")

from newton_lab import protocol_config  # noqa: E402
from newton_lab.report import holm, welch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2, 3, 4)
LAMS = (0.1, 1.0, 10.0)
# per-seed offsets that sum to zero: a cell's mean is exactly the value it is given
NOISE = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])


def _load():
    spec = importlib.util.spec_from_file_location("pto_tables", ROOT / "scripts" / "pto_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pto_tables"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pt = _load()

# The study's rows, at the tiny protocol: (method, variant, damping)
ROWS = {"spo": ("spo_plus", "fisher", "batch"), "pfyl_f": ("pfyl", "fisher", "batch"),
        "pfyl_h": ("pfyl", "hessian", "absolute")}


def _cfg(method, variant="none", lam=None, damping=None, seed=0, deg=2):
    fields = dict(method=method, variant=variant, seed=seed, task_args={"deg": deg})
    if variant != "none":
        fields.update(lam=lam, damping=damping)
    return protocol_config("pto", "tiny", **fields)


def _write(out: Path, cfg, val: float, test: float) -> Path:
    """A finished run directory as the runner leaves it (the fields the reports read)."""
    d = out / cfg.run_id()
    d.mkdir(parents=True)
    (d / "config.json").write_text(cfg.to_json())
    metrics = lambda r: {"mse": 1.0, "regret": float(r)}  # noqa: E731
    result = {"best": {"step": 8, "test": metrics(test), "val": metrics(val)}, "config": cfg.to_dict(),
              "final": {"step": 8, "test": metrics(test), "val": metrics(val),
                        "time": {"eval_s": 0.01, "network_s": 0.001, "newton_s": 0.001, "step_s": 0.002}},
              "machine": "test", "run_id": cfg.run_id(), "spikes": 0, "status": "finished", "steps": 8,
              "time": {"network_s": 0.001, "newton_s": 0.001, "step_s": 0.002, "total_s": 0.1},
              "world_size": 1}
    (d / "result.json").write_text(json.dumps(result, indent=2))
    return d


def _sweep(tmp_path, rows=ROWS, degs=(2,), seeds=SEEDS, lams=LAMS) -> Path:
    """A sweep file of the study's shape at the tiny protocol (written, never run)."""
    grid = []
    for method in sorted({m for m, _, _ in rows.values()}):
        grid.append({"method": [method], "variant": ["none"], "task_args.deg": list(degs), "seed": list(seeds)})
    for method, variant, damping in rows.values():
        grid.append({"method": [method], "variant": [variant], "lam": list(lams), "damping": [damping],
                     "task_args.deg": list(degs), "seed": list(seeds)})
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"name": "test study", "out": str(tmp_path / "out"), "task": "pto",
                                "protocol": "tiny", "grid": grid}))
    return path


def _at(v, i: int, spread: float) -> float:
    """Seed ``i``'s value of a cell given as a mean (the seeds spread around it by NOISE ×
    ``spread``) or as one value per seed."""
    return v[i] if isinstance(v, (list, tuple)) else v + NOISE[i] * spread


def _fill(tmp_path, val: dict, test: dict, skip=(), degs=(2,)) -> Path:
    """Write every run of :func:`_sweep` but those in ``skip`` ((row or method, λ or None, seed));
    ``val``/``test``: (row or method, λ or None) -> mean regret (a fraction) or its value per seed."""
    sweep = _sweep(tmp_path, degs=degs)
    out = tmp_path / "out"
    methods = sorted({m for m, _, _ in ROWS.values()})
    for deg in degs:
        for method in methods:
            for i, s in enumerate(SEEDS):
                if (method, None, s) not in skip:
                    _write(out, _cfg(method, seed=s, deg=deg), _at(val[(method, None)], i, 0.01),
                           _at(test[(method, None)], i, 0.01))
        for name, (method, variant, damping) in ROWS.items():
            for lam in LAMS:
                for i, s in enumerate(SEEDS):
                    if (name, lam, s) not in skip:
                        _write(out, _cfg(method, variant, lam, damping, seed=s, deg=deg),
                               _at(val[(name, lam)], i, 0.01), _at(test[(name, lam)], i, 0.02))
    return sweep


def _row(rows, method, variant):
    return next(r for r in rows if r.config["method"] == method and r.config["variant"] == variant)


def _values(overrides=None):
    """Validation and test means: baselines at 0.20 / 0.20, Newton rows at 0.25 unless given."""
    val = {("spo_plus", None): 0.20, ("pfyl", None): 0.20}
    test = dict(val)
    for name in ROWS:
        for lam in LAMS:
            val[(name, lam)] = test[(name, lam)] = 0.25
    for (name, lam, split), v in (overrides or {}).items():
        (val if split == "val" else test)[(name, lam)] = v
    return val, test


def test_choose_lowest_mean_and_ties_to_the_larger_lam():
    # lowest validation mean wins
    assert pt.choose({0.1: 12.0, 1.0: 11.5, 10.0: 13.0}, 0.1, lower=True) == 1.0
    # within 0.1 points of the best: the larger λ
    assert pt.choose({0.1: 12.0, 1.0: 11.5, 10.0: 11.59}, 0.1, lower=True) == 10.0
    assert pt.choose({0.1: 11.5, 1.0: 11.58, 10.0: 13.0}, 0.1, lower=True) == 1.0
    # exactly 0.1 apart ties, whatever the float rounding of the means
    assert pt.choose({1.0: 0.123 * 100, 10.0: 0.124 * 100}, 0.1, lower=True) == 10.0
    # just outside: the lower mean
    assert pt.choose({1.0: 11.5, 10.0: 11.61}, 0.1, lower=True) == 1.0
    # a smaller λ within the tie of the best does not beat a larger best
    assert pt.choose({0.1: 11.55, 10.0: 11.5}, 0.1, lower=True) == 10.0
    # higher-is-better metrics: the highest mean, ties again to the larger λ
    assert pt.choose({0.1: 90.0, 1.0: 89.95, 10.0: 80.0}, 0.1, lower=False) == 1.0
    assert pt.choose({}, 0.1, lower=True) is None


def test_the_rule_on_run_directories(tmp_path):
    val, test = _values({
        # spo: λ=1 lowest, λ=10 0.09 points behind -> tie -> 10
        ("spo", 0.1, "val"): 0.160, ("spo", 1.0, "val"): 0.150, ("spo", 10.0, "val"): 0.1509,
        # pfyl fisher: λ=10 0.12 points behind -> no tie -> 1; its test is worse than λ=10's,
        # which the rule must not look at
        ("pfyl_f", 0.1, "val"): 0.170, ("pfyl_f", 1.0, "val"): 0.150, ("pfyl_f", 10.0, "val"): 0.1512,
        ("pfyl_f", 1.0, "test"): 0.30, ("pfyl_f", 10.0, "test"): 0.10,
        # pfyl hessian: a lower-is-better metric: λ=0.1 is lowest (the highest would be λ=10)
        ("pfyl_h", 0.1, "val"): 0.100, ("pfyl_h", 1.0, "val"): 0.200, ("pfyl_h", 10.0, "val"): 0.300,
    })
    sweep = _fill(tmp_path, val, test)
    text, rows = pt.tables([str(sweep)])
    assert _row(rows, "spo_plus", "fisher").choice == 10.0
    assert _row(rows, "pfyl", "fisher").choice == 1.0
    assert _row(rows, "pfyl", "hessian").choice == 0.1
    assert all(not r.incomplete for r in rows) and "All 3 Newton rows and their baselines are complete." in text
    # the main table reports the chosen λ's test regret against the baseline's, in points
    r = _row(rows, "pfyl", "fisher")
    assert r.delta == pytest.approx(100 * (0.30 - 0.20))
    assert "| 2 | 64 | pfyl | NL-fisher batch | 1 | 5 of 5 | 30.00 ± " in text
    # the all-λ table shows every λ, the chosen one in bold
    line = next(x for x in text.splitlines() if x.startswith("| 2 | 64 | spo_plus | NL-fisher batch | 20.000 / 20.00"))
    assert "| 16.000 / 25.00 (5) | 15.000 / 25.00 (5) | **15.090 / 25.00 (5)** | 10 | seeds 0, 1, 2, 3, 4 |" in line
    assert "Lower is better: a negative Δ vs baseline is an improvement." in text
    # a wider tie margin moves pfyl fisher's choice to λ = 10
    _, rows = pt.tables([str(sweep)], tie=0.2)
    assert _row(rows, "pfyl", "fisher").choice == 10.0


def test_holm_is_applied_across_the_rows_and_the_verdicts_follow_it(tmp_path):
    val, test = _values({
        ("spo", 1.0, "val"): 0.10,  # chosen λ = 1 everywhere
        ("pfyl_f", 1.0, "val"): 0.10, ("pfyl_h", 1.0, "val"): 0.10,
        ("spo", 1.0, "test"): 0.15,  # 5 points better than the baseline: helped
        ("pfyl_f", 1.0, "test"): 0.25,  # 5 points worse: hurt
        ("pfyl_h", 1.0, "test"): 0.2003,  # nothing
    })
    sweep = _fill(tmp_path, val, test, degs=(2, 4))
    text, rows = pt.tables([str(sweep)])
    assert len(rows) == 6 and all(r.choice == 1.0 for r in rows)
    # the raw p-values are Welch's over the seeds, and Holm adjusts them over all six rows
    # (two settings × three rows), not per setting
    for r in rows:
        assert r.p == pytest.approx(welch(r.test, r.base_test)[1])
    assert [r.p_holm for r in rows] == pytest.approx(list(holm([r.p for r in rows])))
    smallest = min(rows, key=lambda r: r.p)
    assert smallest.p_holm == pytest.approx(6 * smallest.p)
    verdicts = [x for x in text.splitlines() if x.startswith("- deg ")]
    assert len(verdicts) == 6
    assert sum("**helped**: Δ -5.00 points" in x for x in verdicts) == 2
    assert sum("**hurt**: Δ +5.00 points" in x for x in verdicts) == 2
    assert sum("nothing detectable" in x for x in verdicts) == 2
    assert "Holm–Bonferroni over the table's 6 comparisons" in text


def test_incomplete_rows_are_flagged_and_choose_on_common_seeds(tmp_path):
    val, test = _values({
        # spo: λ=0.1 is best over its five seeds (mean 0.08) but worst on seeds 0-2 (0.10), the
        # only seeds λ=10 has finished (0.095 there): the choice compares the λ on seeds 0-2
        ("spo", 0.1, "val"): [0.10, 0.10, 0.10, 0.05, 0.05],
        ("spo", 1.0, "val"): [0.12, 0.12, 0.12, 0.12, 0.12],
        ("spo", 10.0, "val"): [0.095, 0.095, 0.095, 0.0, 0.0],
    })
    skip = {("spo", 10.0, 3), ("spo", 10.0, 4),  # λ=10 of spo: seeds 3, 4 unfinished
            ("pfyl", None, 4),  # the pfyl baseline: seed 4 unfinished
            *(("pfyl_h", 10.0, s) for s in SEEDS)}  # pfyl hessian: λ=10 not run at all
    sweep = _fill(tmp_path, val, test, skip=skip)
    text, rows = pt.tables([str(sweep)])
    spo, pf, ph = _row(rows, "spo_plus", "fisher"), _row(rows, "pfyl", "fisher"), _row(rows, "pfyl", "hessian")
    assert spo.incomplete == ["λ=10: seed(s) 3, 4 missing"]
    assert spo.basis == [0, 1, 2]
    assert spo.basis_means == pytest.approx({0.1: 10.0, 1.0: 12.0, 10.0: 9.5})
    assert spo.choice == 10.0 and len(spo.test) == 3  # never averaged silently: 3 seeds, shown
    assert "| 2 | 64 | spo_plus | NL-fisher batch | 10 (provisional) | 3 of 5 |" in text
    assert "seeds 0, 1, 2: 10.000 / 12.000 / 9.500" in text
    # the all-λ table shows each λ's own seeds and count
    assert "| 8.000 / 25.00 (5) | 12.000 / 25.00 (5) | **9.500 / 24.98 (3)** |" in text
    assert pf.incomplete == ["baseline: seed(s) 4 missing"] and len(pf.base_test) == 4
    assert ph.incomplete == ["λ=10: no finished run", "baseline: seed(s) 4 missing"]
    assert ph.choice == 1.0  # among the λ that ran (a tie at 25.0: the larger), provisionally
    assert "#### Incomplete (3 of 3 Newton rows)" in text
    assert "- deg 2, train 64, spo_plus, NL-fisher batch: λ=10: seed(s) 3, 4 missing." in text
    assert "| 2 | 64 | pfyl | baseline | — | 4 of 5 |" in text
    assert sum("provisional — " in x for x in text.splitlines()) == 3


def test_a_row_without_runs_counts_as_p_1_in_holm(tmp_path):
    val, test = _values({("spo", 1.0, "val"): 0.10, ("spo", 1.0, "test"): 0.15})
    skip = {(name, lam, s) for name in ("pfyl_f", "pfyl_h") for lam in LAMS for s in SEEDS}
    sweep = _fill(tmp_path, val, test, skip=skip)
    _, rows = pt.tables([str(sweep)])
    spo = _row(rows, "spo_plus", "fisher")
    assert spo.p_holm == pytest.approx(min(1.0, 3 * spo.p))  # three planned comparisons
    assert all(r.choice is None and math.isnan(r.p_holm) for r in rows if r is not spo)


def test_run_directories_without_a_sweep_file_and_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    for i, s in enumerate(SEEDS[:3]):
        _write(out, _cfg("spo_plus", seed=s), 0.2 + NOISE[i] / 100, 0.2 + NOISE[i] / 100)
        for lam, v in ((0.1, 0.15), (1.0, 0.10)):
            _write(out, _cfg("spo_plus", "fisher", lam, "batch", seed=s), v + NOISE[i] / 100, 0.18 + NOISE[i] / 100)
    # without a sweep: the seeds and λ found are the expected ones
    _, rows = pt.tables([str(out)])
    assert len(rows) == 1 and rows[0].choice == 1.0 and not rows[0].incomplete
    # stated explicitly, the missing ones make the row incomplete
    _, rows = pt.tables([str(out)], seeds=[0, 1, 2, 3, 4], lams=[0.1, 1, 10])
    assert rows[0].incomplete == ["λ=0.1: seed(s) 3, 4 missing", "λ=1: seed(s) 3, 4 missing",
                                  "λ=10: no finished run", "baseline: seed(s) 3, 4 missing"]
    target = tmp_path / "tables" / "pto.md"
    assert pt.main([str(out / "*"), "--out", str(target)]) == 0
    assert target.read_text().startswith("#### Predict-then-optimize")
    assert "written:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        pt.main([str(tmp_path / "nothing-here")])
    with pytest.raises(SystemExit):
        pt.main([str(out), "--metric", "accuracy"])


def test_real_tiny_runs(tmp_path):
    from newton_lab.runner import train
    from newton_lab.sweep import SweepSpec

    path = tmp_path / "real.json"
    path.write_text(json.dumps({"out": str(tmp_path / "runs"), "task": "pto", "protocol": "tiny",
                                "grid": [{"method": ["spo_plus"], "variant": ["none"], "seed": [0, 1]},
                                         {"method": ["spo_plus"], "variant": ["fisher"], "damping": ["batch"],
                                          "lam": [0.1, 1.0], "seed": [0, 1]}]}))
    spec = SweepSpec.load(path)
    for cfg in spec.expand()[:-1]:  # the last run left out: the study is partial
        train(cfg, Path(spec.out) / cfg.run_id(), progress=False)
    text, rows = pt.tables([str(path)])
    (row,) = rows
    assert row.choice in (0.1, 1.0) and row.basis == [0]
    assert len(row.incomplete) == 1 and "seed(s) 1 missing" in row.incomplete[0]
    # the choice is the rule's on the runs' own best-validation records
    means = {lam: 100 * json.loads((Path(spec.out) / c.run_id() / "result.json").read_text())["best"]["val"]["regret"]
             for c in spec.expand() if c.variant == "fisher" and c.seed == 0 for lam in [c.lam]}
    assert row.choice == pt.choose(means, 0.1, lower=True)
    assert "**incomplete**" in text


def test_time_per_step_column_gives_ms_and_the_ratio_to_the_baseline():
    """The main table's ms/step: the mean of the runs' ``time.step_s`` in ms, a Newton row's with
    its ratio to its baseline's; a cell without timings shows a dash, not a made-up zero."""
    base = pt.Cell("b", {}, expected={0, 1}, runs={0: {"time": {"step_s": 0.002}}, 1: {"time": {"step_s": 0.004}}})
    newton = pt.Cell("n", {}, expected={0, 1}, runs={0: {"time": {"step_s": 0.009}}, 1: {"time": {"step_s": 0.009}}})
    untimed = pt.Cell("u", {}, expected={0}, runs={0: {}})
    assert base.step_ms() == pytest.approx(3.0)
    assert pt._ms(base) == "3"
    assert pt._ms(newton, base) == "9 (3×)"
    assert pt._ms(untimed) == "—" and pt._ms(None) == "—"
    assert pt._ms(newton, untimed) == "9"


def test_main_table_has_the_time_per_step_column(tmp_path):
    val, test = _values()
    text, _ = pt.tables([str(_fill(tmp_path, val, test))])
    header = next(line for line in text.splitlines() if line.startswith("| deg"))
    assert "ms/step" in header
    row = next(line for line in text.splitlines() if "NL-fisher" in line and "spo_plus" in line)
    assert "2 (1×)" in row  # every fake run takes 2 ms a step
    # the study's run time: every run's total_s (0.1 s each) summed
    n = 5 * (2 + 3 * 3)  # seeds × (2 baselines + 3 Newton rows × 3 λ)
    assert f"Run time: {n} runs, {n * 0.1 / 3600:.1f} hours in all" in text
    # the grid solver is batched: no per-instance solver-time line
    assert "Solver time" not in text
    slow = pt.Cell("s", {}, expected={0}, runs={0: {"time": {"step_s": 1.0004}}})
    assert pt._ms(slow) == "1000"  # a second per step prints without an exponent


def test_solver_time_per_instance_counts_each_loss_solves():
    """The solver-time line divides a baseline's ms/step by the instances the step solves: SPO+
    one per training instance, DBB two, DPO/PFYL S, two-stage none (no line); a partial last
    batch lowers the mean batch (1,000 instances, B = 32: 32 batches an epoch, 31.25 each); only
    per-instance solvers (PyEPO's) are counted, not the batched grid DP."""
    def cfg(method, samples=None, problem="knapsack", solver="auto", last="partial", n=1000):
        args = {} if samples is None else {"samples": samples}
        return {"task": "pto", "method": method, "method_args": args, "train_size": n, "batch_size": 32,
                "task_args": {"problem": problem, "solver": solver, "last_batch": last}}

    assert pt.solves_per_step(cfg("spo_plus")) == pytest.approx(31.25)
    assert pt.solves_per_step(cfg("dbb", last="full")) == 64
    assert pt.solves_per_step(cfg("pfyl", samples=3, n=64)) == 96  # 32 divides 64: full batches
    assert pt.solves_per_step(cfg("two_stage")) == 0
    assert pt.per_instance_solver(cfg("spo_plus"))
    assert not pt.per_instance_solver(cfg("spo_plus", problem="shortest_path"))  # auto → grid
    assert pt.per_instance_solver(cfg("spo_plus", problem="shortest_path", solver="pyepo"))
    assert not pt.per_instance_solver(cfg("spo_plus", problem="knapsack", solver="grid"))

    def base(c, step_s):
        return pt.Cell("b", c, expected={0}, runs={0: {"time": {"step_s": step_s}}})

    got = pt.solve_ms([base(cfg("spo_plus", last="full"), 0.064), base(cfg("spo_plus", last="full"), 0.032),
                       base(cfg("dbb", last="full"), 0.128), base(cfg("two_stage"), 0.001),
                       base(cfg("spo_plus", problem="shortest_path"), 0.005)])
    assert [(loss, round(lo, 9), round(hi, 9)) for loss, lo, hi in got] == [("spo_plus", 1.0, 2.0), ("dbb", 2.0, 2.0)]


def test_evaluation_solve_time_per_instance_from_the_runs_metrics(tmp_path):
    """The evaluation line: the median over a run's evaluations of eval_s over the instances
    evaluated (validation + test), ranged over the baselines' runs; the batched grid solver and
    runs without metrics are left out."""
    def cfg(problem="knapsack"):
        return {"task": "pto", "method": "spo_plus", "method_args": {}, "train_size": 64, "batch_size": 32,
                "val_sets": 100, "test_sets": 300, "task_args": {"problem": problem, "solver": "auto"}}

    def run(name, evals):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "time": {"eval_s": e}}) + "\n"
                                                 for i, e in enumerate(evals)) + json.dumps({"step": 99}) + "\n")
        return d

    ks = pt.Cell("k", cfg(), expected={0, 1}, runs={0: {}, 1: {}},
                 dirs={0: run("a", [0.4, 0.8, 4.0]), 1: run("b", [1.2, 1.2])})  # medians 0.8 s, 1.2 s
    no_metrics = pt.Cell("m", cfg(), expected={0}, runs={0: {}}, dirs={0: tmp_path / "missing"})
    grid = pt.Cell("g", cfg("shortest_path"), expected={0}, runs={0: {}}, dirs={0: run("c", [9.0])})
    got = pt.eval_solve_ms([ks, no_metrics, grid])
    assert [(loss, round(lo, 9), round(hi, 9)) for loss, lo, hi in got] == [("spo_plus", 2.0, 3.0)]
