"""Edge cases of the runner, sweeps and reports found in review: repeated seeds, damping labels,
strict JSON, epochs of small training sets, sweep-configuration errors, NaN messages."""
import json
from pathlib import Path
import warnings

import pytest

from newton_lab.config import protocol_config
from newton_lab.report import build_report
from newton_lab.sweep import SweepSpec, _record, run_sweep


def _fake_run(root, name, variant="none", seed=0, exact=0.5, damping="absolute", lam=0.1):
    cfg = protocol_config("ranking", "quick", variant=variant, seed=seed, damping=damping,
                          lam=lam if variant != "none" else 0.0)
    d = root / name
    d.mkdir(parents=True)
    rec = {"step": 1000, "train_loss": 0.1, "val": {"exact": exact, "elementwise": exact},
           "test": {"exact": exact, "elementwise": exact}, "time": {"step_s": 0.01}}
    (d / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    (d / "result.json").write_text(json.dumps({
        "status": "finished", "config": cfg.to_dict(), "best": {"step": 1000, "val": rec["val"], "test": rec["test"]},
        "final": rec, "time": {"step_s": 0.01, "newton_s": 0.0, "network_s": 0.01, "total_s": 10.0}}))
    return cfg


def test_a_repeated_seed_counts_once(tmp_path):
    _fake_run(tmp_path, "a", seed=0, exact=0.5)
    _fake_run(tmp_path, "b", seed=1, exact=0.7)
    _fake_run(tmp_path, "copy_of_a", seed=0, exact=0.5)
    with pytest.warns(UserWarning, match="repeats the configuration and seed 0"):
        report = build_report([tmp_path])
    assert report.groups[0]["seeds"] == [0, 1]


def test_damping_is_visible_in_labels_ids_and_strict_json(tmp_path):
    _fake_run(tmp_path, "base")
    for damping in ("absolute", "batch", "relative"):
        _fake_run(tmp_path, damping, variant="hessian", damping=damping)
    out = tmp_path / "rep"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md = build_report([tmp_path], out=out, plots=False).markdown
    assert "NL-hessian λ=0.1 |" in md and "NL-hessian λ=0.1 batch |" in md and "NL-hessian λ=0.1 rel |" in md
    ids = {d: protocol_config("ranking", "quick", variant="hessian", lam=0.1, damping=d).run_id()
           for d in ("absolute", "batch", "relative")}
    assert "-lam0.1-" in ids["absolute"] and "-lam0.1b-" in ids["batch"] and "-lam0.1r-" in ids["relative"]

    def no_nan(token):
        raise AssertionError(f"summary.json holds {token}")

    rows = json.loads((out / "summary.json").read_text(), parse_constant=no_nan)
    assert rows[0]["welch_p"] is None  # one seed: no test


def test_lam_zero_is_rejected_for_every_damping():
    for damping in ("absolute", "batch", "relative"):
        with pytest.raises(ValueError, match="lam must be > 0"):
            protocol_config("ranking", "quick", variant="fisher", lam=0.0, damping=damping)


def test_epochs_count_the_actual_training_maps():
    from newton_lab.commands import config_from_args, train_parser

    args = train_parser().parse_args(["shortest-path", "--protocol", "quick", "--data", "synthetic",
                                      "--set", "synthetic_size=600", "--set", "val_sets=100",
                                      "--set", "test_sets=100", "--epochs", "2"])
    cfg = config_from_args(args)
    per_epoch = -(-300 // 70)  # 600 // 2 training maps, batch 70
    assert cfg.steps == 2 * per_epoch and cfg.eval_every == per_epoch


def test_config_file_errors_name_the_file(tmp_path):
    from newton_lab.commands import config_from_args, train_parser

    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        config_from_args(train_parser().parse_args(["ranking", "--config", str(bad)]))
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        config_from_args(train_parser().parse_args(["ranking", "--config", str(bad)]))


@pytest.mark.parametrize("spec, message", [
    ({"grid": []}, "grid is an empty list"),
    ({"out": 5}, "out must be a directory path"),
    ({"base": {"task": "ranking"}}, "belong at the top level"),
    ({"grid": [{"protocol": ["quick"]}]}, "belong at the top level"),
])
def test_sweep_configuration_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        SweepSpec.from_dict(spec)


def test_dry_run_writes_nothing_and_shared_outputs_merge(tmp_path):
    out = tmp_path / "sweep"
    spec = SweepSpec.from_dict({"out": str(out), "protocol": "tiny", "grid": {"seed": [0, 1]}})
    run_sweep(spec, spec.expand(), dry_run=True, progress=False)
    assert not out.exists()
    other = SweepSpec.from_dict({"out": str(out), "protocol": "tiny", "grid": {"seed": [2]},
                                 "base": {"steps": 2, "eval_every": 1}})
    run_sweep(other, other.expand(), progress=False)
    spec2 = SweepSpec.from_dict({"out": str(out), "protocol": "tiny", "grid": {"seed": [3]},
                                 "base": {"steps": 2, "eval_every": 1}, "name": "second"})
    run_sweep(spec2, spec2.expand(), progress=False)
    record = json.loads((out / "sweep.json").read_text())
    assert {c["seed"] for c in record["runs"].values()} == {2, 3}
    # Each sweep keeps the runs it defines (the last sweep does not rename the others).
    assert record["sweeps"]["(unnamed)"]["runs"] == [other.expand()[0].run_id()]
    assert record["sweeps"]["second"]["runs"] == [spec2.expand()[0].run_id()]


def test_sweep_record_follows_the_configuration_file(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    # A record in the earlier single-sweep format keeps its name; its runs stay listed.
    (out / "sweep.json").write_text(json.dumps({"name": "old", "task": "ranking", "protocol": "tiny",
                                                "runs": {"r-old": {"seed": 7}}}))
    cfg_file = tmp_path / "s.json"
    spec_dict = {"out": str(out), "protocol": "tiny", "grid": {"seed": [0, 1]}, "name": "first name"}
    cfg_file.write_text(json.dumps(spec_dict))
    spec = SweepSpec.load(cfg_file)
    _record(out / "sweep.json", spec, spec.expand())
    record = json.loads((out / "sweep.json").read_text())
    assert record["sweeps"]["(recorded before per-sweep records)"]["name"] == "old"
    assert "r-old" in record["runs"]
    ids = [c.run_id() for c in spec.expand()]
    assert record["sweeps"][str(cfg_file)] == {"name": "first name", "task": "ranking",
                                               "protocol": "tiny", "runs": ids}
    # The same file with a new name and a changed grid: one entry, with the runs it defines now.
    cfg_file.write_text(json.dumps({**spec_dict, "grid": {"seed": [1]}, "name": "renamed"}))
    spec = SweepSpec.load(cfg_file)
    _record(out / "sweep.json", spec, spec.expand())
    record = json.loads((out / "sweep.json").read_text())
    assert record["sweeps"][str(cfg_file)]["runs"] == [ids[1]]
    assert record["sweeps"][str(cfg_file)]["name"] == "renamed"
    assert set(ids) <= set(record["runs"])  # configurations are never dropped
    # A malformed record is replaced, not a crash.
    (out / "sweep.json").write_text(json.dumps({"sweeps": {"x": "not an object"}, "runs": []}))
    _record(out / "sweep.json", spec, spec.expand())
    record = json.loads((out / "sweep.json").read_text())
    assert list(record["sweeps"]) == [str(cfg_file)] and list(record["runs"]) == [ids[1]]


def test_nan_before_the_first_checkpoint_says_so(tmp_path, monkeypatch):
    from newton_lab.tasks import ranking
    from newton_lab.runner import RunFailed, train

    original = ranking.RankingTask.outputs
    monkeypatch.setattr(ranking.RankingTask, "outputs",
                        lambda self, model, x: original(self, model, x) * float("nan"))
    with pytest.raises(RunFailed, match="at step 1 .*no checkpoint was written before it"):
        train(protocol_config("ranking", "tiny"), tmp_path / "run", progress=False)


def test_report_names_runs_it_leaves_out(tmp_path):
    _fake_run(tmp_path, "done")
    (tmp_path / "crashed").mkdir()
    (tmp_path / "crashed" / "config.json").write_text("{}")
    (tmp_path / "crashed" / "failed.json").write_text("{}")
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "config.json").write_text("{}")
    md = build_report([tmp_path]).markdown
    assert "Not in the table: 1 failed run(s), 1 unfinished run(s) (failed: crashed; unfinished: running)." in md


def test_demo_ranking_runs_what_its_config_file_says():
    from newton_lab.demo_ranking import _parser, demo_spec

    demo = {c.run_id() for c in demo_spec(_parser().parse_args([])).expand()}
    documented = {c.run_id() for c in SweepSpec.load(Path(__file__).resolve().parent.parent / "configs" / "demo_ranking.json").expand()}
    assert demo == documented and len(demo) == 6
    with pytest.raises(ValueError, match="is not VARIANT:λ"):
        demo_spec(_parser().parse_args(["--variants", "fisher:x"]))


def test_matrix_free_path_curvature_rejects_eigenvalue_damping_up_front():
    with pytest.raises(ValueError, match="solved matrix-free"):
        protocol_config("shortest_path", "tiny", method="bf_for", variant="gauss_newton", lam=0.1,
                        damping="batch")
    protocol_config("shortest_path", "tiny", method="bf_for", variant="fisher", lam=0.1, damping="batch")


def test_ctrl_c_says_where_the_run_resumes(tmp_path, capsys, monkeypatch):
    """An interrupted run names the step reached and the checkpoint it resumes from; the command
    prints that in one line (no traceback) and exits 130."""
    from newton_lab import RunInterrupted, protocol_config, train
    from newton_lab.cli import main

    cfg = protocol_config("ranking", "tiny", steps=20, eval_every=10)

    def stop(step):
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as exc:
        train(cfg, tmp_path / "run", progress=False, on_step=stop)
    assert (exc.value.step, exc.value.checkpoint_step) == (15, 10)
    assert "interrupted at step 15; run the same command to resume from step 10" in str(exc.value)
    import newton_lab.runner as runner_mod

    def interrupted(cfg, run_dir, **kwargs):
        raise RunInterrupted(run_dir, 7, 0)

    monkeypatch.setattr(runner_mod, "train", interrupted)
    rc = main(["train", "ranking", "--protocol", "tiny", "--no-progress", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted at step 7; run the same command to start again (no checkpoint yet)" in err
    assert "Traceback" not in err


def test_train_help_names_the_lambda_default_and_the_models(capsys):
    from newton_lab.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "required (> 0) for a Newton variant" in out and "which only the baseline accepts" in out
    assert "ranking: cnn, mlp" in out and "shortest-path: resnet_stem, small_cnn" in out
