"""Anchor of the predict-then-optimize task: SPO+ and PFYL with PyEPO's linear model, trained by our
harness (task ``pto``: the grid dynamic program, our SPO+ and PFYLoss, the runner) and by PyEPO's
own training loop as its documentation writes it (``optDataset``, a shuffled ``DataLoader``,
``pyepo.func.SPOPlus`` / ``perturbedFenchelYoung``, ``pyepo.metric.regret``, all from the
installed package; :mod:`newton_lab.pto_anchor`), on the same data, seeds and optimizer settings,
reach the same normalized test regret within seed noise.

Size: the 5 × 5 shortest path, degree 4, noise half-width 0.5, 100 training instances (batches of
32, 32, 32, 4 per epoch, as PyEPO's loader cuts them), 10 epochs of Adam at 10⁻², 300 test
instances; seeds 0–5. Per seed both sides start from the same weights and see the same data;
the batch order and PFYL's perturbations differ, so the runs differ by training noise and the
comparison is of the mean over seeds of the paired difference d = ours − PyEPO's.

Tolerance, from the seed spread: at this size (AMD EPYC, one thread) the regret is about
0.12–0.16 with a seed standard deviation of 0.01–0.02, and the standard deviation of the paired
difference, measured five times on 6–20 seeds each, was 0.005–0.010 for SPO+ and 0.003–0.010 for
PFYL: a standard error of at most ≈ 0.0045 for the mean of 6 seeds. The test allows
|mean d| ≤ max(0.02, 4 × the standard error measured in the test itself): two regret points,
at least 4.4 standard errors of the largest spread measured (a false alarm about once in 10⁵
runs if the mean of d is normal), and never tighter than four standard errors of the spread the
run itself shows — on another processor every trajectory changes, their distribution does not.
The bound must stay below 0.04 (a spread larger than that would make the comparison
meaningless). It catches a wrong loss, gradient, metric, data split, learning rate or
initialization (each moves the regret by several points); a subtler difference is below what six
seeds resolve — before the task's epochs cut a short last batch as PyEPO's loader does, PFYL was
1.2 points below PyEPO (t = −4 over 6 seeds at 20 epochs) — which is what the benchmark-size
table of ``scripts/pto_anchor.py`` is for.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("pyepo")
pytest.importorskip("ortools")

from newton_lab.pto_anchor import LinearRegression, anchor_config, generate, harness_run, pyepo_loop  # noqa: E402
from newton_lab.runner import build_task, seed_run  # noqa: E402
from newton_lab.tasks.pyepo import load_data  # noqa: E402

SIZE = dict(deg=4, noise=0.5, n_train=100, n_val=20, n_test=300)
EPOCHS = 10
SEEDS = range(6)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWTON_LOSSES_CACHE", str(tmp_path / "cache"))


def test_both_sides_see_the_same_data_and_initialization():
    seed = 3
    cfg = anchor_config("pfyl", seed=seed, epochs=EPOCHS, **SIZE)
    assert cfg.steps == EPOCHS * 4 and cfg.eval_every == 4 and cfg.lr == 1e-2 and cfg.batch_size == 32
    ours, theirs = load_data(cfg), generate(seed, SIZE["deg"], SIZE["noise"], 100, 20, 300)
    for split in ("train", "val", "test"):
        assert (ours[split]["x"] == theirs[split][0]).all() and (ours[split]["c"] == theirs[split][1]).all()
    seed_run(seed)
    task = build_task(cfg, torch.device("cpu"), torch.float32)
    torch.manual_seed(seed)
    reference = LinearRegression(5, 40)
    assert torch.equal(task.model.linear.weight, reference.linear.weight)
    assert torch.equal(task.model.linear.bias, reference.linear.bias)


@pytest.mark.parametrize("method", ["spo_plus", "pfyl"])
def test_harness_reaches_pyepos_regret(method, tmp_path):
    ours, theirs = [], []
    for seed in SEEDS:
        data = generate(seed, SIZE["deg"], SIZE["noise"], SIZE["n_train"], SIZE["n_val"], SIZE["n_test"])
        theirs.append(pyepo_loop(method, data, seed=seed, epochs=EPOCHS))
        ours.append(harness_run(method, tmp_path / f"s{seed}", seed=seed, epochs=EPOCHS, **SIZE)["final"])
    ours, theirs = np.array(ours), np.array(theirs)
    d = ours - theirs
    se = d.std(ddof=1) / math.sqrt(len(d))
    tolerance = max(0.02, 4 * se)
    summary = (f"{method}: ours {ours.round(4)} (mean {ours.mean():.4f}), PyEPO {theirs.round(4)} "
               f"(mean {theirs.mean():.4f}); mean difference {d.mean():+.4f}, tolerance {tolerance:.4f}")
    print(summary)
    assert 0.03 < theirs.mean() < 0.4, summary  # trained, and far from a degenerate predictor
    assert tolerance <= 0.04, "the seed spread is too large for the comparison to mean anything: " + summary
    assert abs(d.mean()) <= tolerance, summary


def test_anchor_script_at_a_tiny_size_resumes_and_refuses_other_settings(tmp_path, capsys):
    """scripts/pto_anchor.py (the benchmark-size table) on a few instances: its table, per-cell
    results, a second call that trains nothing, and a WORK of other settings refused."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "pto_anchor.py"
    spec = importlib.util.spec_from_file_location("pto_anchor_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    work, out = tmp_path / "work", tmp_path / "table.md"
    args = ["--out", str(out), "--work", str(work), "--methods", "spo_plus", "--degs", "2", "--seeds", "0", "1",
            "--n-train", "40", "--n-val", "8", "--n-test", "40", "--epochs", "2", "--no-progress"]
    assert script.main(args) == 0
    table = out.read_text()
    row = next(line for line in table.splitlines() if line.startswith("| spo_plus | 2 | 2 |"))
    cells = [json.loads(p.read_text()) for p in sorted((work / "cells").glob("*.json"))]
    assert [c["seed"] for c in cells] == [0, 1]
    mean = 100 * np.mean([c["ours_final"] for c in cells])
    assert f"| {mean:.2f} ± " in row and "PyEPO reported" in table
    mtimes = [p.stat().st_mtime_ns for p in (work / "cells").glob("*.json")]
    assert script.main(args) == 0  # resumed: nothing trained again
    assert [p.stat().st_mtime_ns for p in (work / "cells").glob("*.json")] == mtimes
    assert out.read_text() == table
    assert script.main(args[:-3] + ["--epochs", "3", "--no-progress"]) == 2
    assert "holds a cell of other settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--out", str(out), "--methods", "dpo"])
