"""Sweeps: grid expansion and validation, skipping finished runs, and a sweep killed in the middle
that loses no finished run and completes on restart."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from newton_lab.runner import read_metrics, run_status
from newton_lab.sweep import SweepSpec, run_sweep

BASE = {"steps": 400, "eval_every": 100, "synthetic_size": 240}


def _spec(tmp_path, **kw):
    data = {"out": str(tmp_path / "runs"), "workers": 2, "task": "ranking", "protocol": "tiny", "base": BASE,
            "grid": [{"variant": ["none"], "seed": [0, 1]},
                     {"variant": ["fisher"], "lam": [0.1], "seed": [0, 1]}]}
    data.update(kw)
    return data


def test_grid_expansion_deduplicates_and_validates(tmp_path):
    spec = SweepSpec.from_dict(_spec(tmp_path, grid={"variant": ["none", "hessian"], "lam": [0.1, 1.0],
                                                        "seed": [0, 1]}))
    configs = spec.expand()
    # The baseline ignores λ: 2 seeds × (1 baseline + 2 λ for hessian).
    assert len(configs) == 6 and len({c.run_id() for c in configs}) == 6
    bad = SweepSpec.from_dict(_spec(tmp_path, grid={"variant": ["fisher"], "lam": [0.1, -1.0]}))
    with pytest.raises(ValueError, match=r"grid combination \(variant='fisher', lam=-1.0\): lam"):
        bad.expand()
    with pytest.raises(ValueError, match="unknown key"):
        SweepSpec.from_dict({"out": "x", "grids": []})
    with pytest.raises(ValueError, match="non-empty list"):
        SweepSpec.from_dict({"out": "x", "grid": {"seed": 3}})


def test_sweep_skips_finished_runs(tmp_path):
    spec = SweepSpec.from_dict(_spec(tmp_path, workers=1, base={**BASE, "steps": 20, "eval_every": 10}))
    configs = spec.expand()
    first = run_sweep(spec, configs, progress=False)
    assert len(first["finished"]) == 4 and first["skipped"] == 0
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/result.json")}
    second = run_sweep(spec, configs, progress=False)
    assert second["skipped"] == 4 and len(second["finished"]) == 4
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/result.json")}


def test_sweep_killed_in_the_middle_loses_nothing_and_resumes(tmp_path):
    cfg_path = tmp_path / "sweep.json"
    cfg_path.write_text(json.dumps(_spec(tmp_path)))
    cmd = [sys.executable, "-m", "newton_losses", "sweep", str(cfg_path), "--no-progress", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not list(runs.glob("*/result.json")):
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the sweep process only: its workers must die with it
        proc.wait()
    finished = {p.parent.name: p.read_text() for p in runs.glob("*/result.json")}
    assert finished, "no run finished before the deadline"
    time.sleep(0.5)
    spec = SweepSpec.load(cfg_path)
    configs = spec.expand()
    statuses = {c.run_id(): run_status(runs / c.run_id()) for c in configs}
    assert any(s != "finished" for s in statuses.values()), "the sweep finished before it was killed"
    summary = run_sweep(spec, configs, progress=False)
    assert len(summary["finished"]) == 4 and not summary["errors"] and not summary["locked"]
    for name, text in finished.items():  # finished runs untouched
        assert (runs / name / "result.json").read_text() == text
    for c in configs:
        records = read_metrics(runs / c.run_id())
        assert [r["step"] for r in records] == [100, 200, 300, 400]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sweep_interrupted_stops_its_workers_and_says_how_to_resume(tmp_path, signum):
    # A signal to the sweep process alone (as `timeout` sends it): exit code 128 + signal, a
    # message instead of a traceback, and the running runs stop now rather than at the end.
    spec = _spec(tmp_path, base={**BASE, "steps": 4000, "eval_every": 20})
    cfg_path = tmp_path / "sweep.json"
    cfg_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "newton_losses", "sweep", str(cfg_path), "--no-progress", "--no-report"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and len(list(runs.glob("*/metrics.jsonl"))) < 2:
            time.sleep(0.05)
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err
    assert "interrupted" in err and "resume" in err and "Traceback" not in err
    sizes = {p: p.stat().st_size for p in runs.glob("*/metrics.jsonl")}
    time.sleep(1.5)
    assert sizes == {p: p.stat().st_size for p in runs.glob("*/metrics.jsonl")}, "workers still training"
    assert not list(runs.glob("*/result.json"))


def test_sweep_progress_counts_training_steps(tmp_path, monkeypatch, capsys):
    """The sweep's bar counts training steps over all runs: in-process and from worker processes
    (through a queue), a resumed run only for the steps it still had to do."""
    import newton_lab.sweep as sweep_mod
    from newton_lab.runner import train

    monkeypatch.setattr(sweep_mod, "_PROGRESS_EVERY_S", 0.0)  # report every step
    reports = []
    on_step = sweep_mod._step_reporter("r", lambda d, s: reports.append((d, s)))
    for s in (1, 2, 3):
        on_step(s)
    assert reports == [("r", 1), ("r", 2), ("r", 3)]
    monkeypatch.setattr(sweep_mod, "_PROGRESS_EVERY_S", 3600.0)  # the first step, then quiet
    reports.clear()
    on_step = sweep_mod._step_reporter("r", lambda d, s: reports.append((d, s)))
    for s in (5, 6, 7):
        on_step(s)
    assert reports == [("r", 5)]

    base = {**BASE, "steps": 40, "eval_every": 20}
    spec = SweepSpec.from_dict(_spec(tmp_path, base=base))
    configs = spec.expand()

    class Stop(Exception):
        pass

    def stop(step):
        if step == 21:
            raise Stop

    first = configs[0]
    with pytest.raises(Stop):  # leaves a checkpoint at step 20
        train(first, tmp_path / "runs" / first.run_id(), progress=False, on_step=stop)
    summary = run_sweep(spec, configs, progress=True)
    assert len(summary["finished"]) == 4
    err = capsys.readouterr().err
    # 4 runs × 40 steps, less the 20 the resumed run had done: 140 steps, all counted.
    assert "runs 4/4" in err and "140/140" in err


def test_every_study_sweep_file_expands_and_make_study_names_only_existing_ones():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "configs" / "study").glob("*.json"))
    assert files
    for path in files:
        configs = SweepSpec.load(path).expand()  # validates every run configuration
        assert configs, path
        assert len({c.run_id() for c in configs}) == len(configs), f"{path.name}: duplicate runs"
    makefile = (root / "Makefile").read_text()
    study = re.search(r"^STUDY :=((?:.*\\\n)*.*)$", makefile, re.M).group(1).replace("\\\n", " ").split()
    assert "table_n10" in study and "gn_lambda10" in study
    for name in study:
        assert (root / "configs" / "study" / f"{name}.json").is_file(), name
