"""The experiment commands end to end (tiny, synthetic, offline): train, report, sweep, exit codes."""
import fcntl
import json
import os

from newton_lab.cli import main
from newton_lab import protocol_config

TINY = ["--protocol", "tiny", "--steps", "20", "--eval-every", "10", "--no-progress"]


def test_train_then_report(tmp_path, capsys):
    for variant in ("none", "fisher"):
        for seed in ("0", "1"):
            rc = main(["train", "ranking", *TINY, "--variant", variant, "--lam", "0.1", "--seed", seed,
                       "--arg", "tau=0.5", "--out", str(tmp_path / "runs")])
            assert rc == 0
    out = capsys.readouterr().out
    assert "test at best validation" in out and "ms/step" in out
    assert len(list((tmp_path / "runs").iterdir())) == 4
    rc = main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    assert rc == 0
    md = capsys.readouterr().out
    assert "| neuralsort(loss=bce_exact,tau=0.5) | 5 | baseline | 2 |" in md and "NL-fisher λ=0.1" in md
    assert (tmp_path / "rep" / "report.md").read_text() in md


def test_config_file_and_set_overrides(tmp_path, capsys):
    cfg = protocol_config("ranking", "tiny", steps=10, eval_every=5)
    (tmp_path / "c.json").write_text(cfg.to_json())
    rc = main(["train", "ranking", "--config", str(tmp_path / "c.json"), "--set", "hidden=8", "--no-progress",
               "--run-dir", str(tmp_path / "r")])
    assert rc == 0
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    assert stored["hidden"] == 8 and stored["steps"] == 10 and stored["protocol"] == "tiny"


def test_task_may_be_given_as_an_option(tmp_path, capsys):
    """``--task NAME`` and ``--task=NAME`` read as the positional TASK (``--task-arg`` is untouched)."""
    from newton_lab.commands import _task_option_to_positional as move

    assert move(["--task", "pto", "--lr", "1"]) == ["pto", "--lr", "1"]
    assert move(["--lr", "1", "--task=pto"]) == ["pto", "--lr", "1"]
    assert move(["pto", "--task-arg", "deg=2"]) == ["pto", "--task-arg", "deg=2"]
    rc = main(["train", "--task", "ranking", "--config", str(_tiny_config(tmp_path)), "--no-progress",
               "--run-dir", str(tmp_path / "r")])
    assert rc == 0 and json.loads((tmp_path / "r" / "config.json").read_text())["task"] == "ranking"


def _tiny_config(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(protocol_config("ranking", "tiny", steps=4, eval_every=2).to_json())
    return path


def test_locked_run_directory_exit_code(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert main(["train", "ranking", *TINY, "--run-dir", str(run)]) == 4
        assert "another process" in capsys.readouterr().err
    finally:
        os.close(fd)


def test_sweep_command_runs_and_reports(tmp_path, capsys):
    spec = {"out": str(tmp_path / "runs"), "workers": 1, "task": "ranking", "protocol": "tiny",
            "base": {"steps": 10, "eval_every": 5},
            "grid": [{"variant": ["none"], "seed": [0, 1]}, {"variant": ["hessian"], "lam": [0.1], "seed": [0, 1]}]}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    assert main(["sweep", str(tmp_path / "s.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "NL-hessian λ=0.1" in out and (tmp_path / "runs" / "report" / "curves.png").exists()
    assert main(["sweep", str(tmp_path / "s.json"), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("finished") == 4
    (tmp_path / "bad.json").write_text(json.dumps({**spec, "grid": {"variant": ["newton"]}}))
    assert main(["sweep", str(tmp_path / "bad.json")]) == 2
    assert "variant must be one of" in capsys.readouterr().err


def test_help_lists_experiment_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "sweep", "report", "plot", "demo", "bench", "data"):
        assert command in out
