"""The training loop: an end-to-end tiny ranking run, determinism, resume after SIGKILL equal to
an uninterrupted run, NaN stop with state saved, and run-directory protection."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from _runs import interrupt_at

from newton_lab import RunFailed, protocol_config, read_metrics, run_status, train
from newton_lab.tasks.ranking import ranking_metrics


def _cfg(**kw):
    base = dict(steps=40, eval_every=10, variant="hessian", lam=0.1, synthetic_size=240)
    return protocol_config("ranking", "tiny", **{**base, **kw})


def _strip_time(records):
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def test_ranking_metrics_against_hand_cases():
    scores = torch.tensor([[0.1, 0.3, 0.2], [3.0, 2.0, 1.0]])
    ranks = torch.tensor([[0, 2, 1], [0, 1, 2]])
    exact, elem = ranking_metrics(scores, ranks)
    assert exact.tolist() == [1.0, 0.0]
    assert torch.allclose(elem, torch.tensor([1.0, 1 / 3]))


def test_tiny_run_end_to_end(tmp_path):
    cfg = _cfg(steps=150, eval_every=50, variant="none", lr=3e-3)
    result = train(cfg, tmp_path / "run", progress=False)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "result.json"} <= files
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [50, 100, 150]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    # The synthetic digits are easy: 150 steps learn far above chance (1/120 exact at n = 5).
    assert result["best"]["test"]["elementwise"] > 0.5
    assert result["best"]["val"]["exact"] == max(r["val"]["exact"] for r in records)
    assert run_status(tmp_path / "run") == "finished"
    # A finished run is not trained again.
    assert train(cfg, tmp_path / "run", progress=False) == result


def test_same_seed_gives_identical_metrics(tmp_path):
    a = train(_cfg(), tmp_path / "a", progress=False)
    b = train(_cfg(), tmp_path / "b", progress=False)
    assert _strip_time(read_metrics(tmp_path / "a")) == _strip_time(read_metrics(tmp_path / "b"))
    assert a["best"] == b["best"]
    train(_cfg(seed=1), tmp_path / "c", progress=False)
    assert _strip_time(read_metrics(tmp_path / "c")) != _strip_time(read_metrics(tmp_path / "a"))


def test_other_configuration_in_run_dir_is_rejected(tmp_path):
    train(_cfg(steps=10), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="different configuration.*steps"):
        train(_cfg(steps=20), tmp_path / "r", progress=False)


_KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from newton_lab import RunConfig, train
    cfg = RunConfig.from_json(open(sys.argv[1]).read())
    kill_at = int(sys.argv[3])
    def on_step(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, sys.argv[2], progress=False, on_step=on_step)
""")


@pytest.mark.parametrize("variant", ["fisher", "hessian"])
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, variant):
    cfg = _cfg(variant=variant)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    (tmp_path / "killer.py").write_text(_KILLER)
    run = tmp_path / "killed"
    proc = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(tmp_path / "cfg.json"), str(run), "25"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert run_status(run) == "partial"
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 20
    # A torn line after the checkpoint (killed mid-write) is discarded on resume.
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "trai')
    resumed = train(cfg, run, progress=False)
    reference = train(cfg, tmp_path / "reference", progress=False)
    assert _strip_time(read_metrics(run)) == _strip_time(read_metrics(tmp_path / "reference"))
    assert resumed["best"] == reference["best"]
    ref_state = torch.load(tmp_path / "reference" / "checkpoint.pt", weights_only=False)["model"]
    for k, v in torch.load(run / "checkpoint.pt", weights_only=False)["model"].items():
        assert torch.equal(v, ref_state[k])


def test_nan_loss_stops_with_state_saved(tmp_path, monkeypatch):
    from newton_lab.tasks import ranking

    original = ranking.RankingTask.outputs

    def poisoned(self, model, x):
        y = original(self, model, x)
        return y * float("nan") if model.training and self._calls_left() else y

    counter = {"n": 0}

    def calls_left(self):
        counter["n"] += 1
        return counter["n"] == 15

    monkeypatch.setattr(ranking.RankingTask, "outputs", poisoned)
    monkeypatch.setattr(ranking.RankingTask, "_calls_left", calls_left, raising=False)
    for variant in ("none", "fisher"):
        counter["n"] = 0
        run = tmp_path / variant
        with pytest.raises(RunFailed, match="non-finite training loss.*step 15"):
            train(_cfg(variant=variant), run, progress=False)
        assert run_status(run) == "failed"
        failed = json.loads((run / "failed.json").read_text())
        assert failed["step"] == 15 and "non-finite" in failed["message"]
        state = torch.load(run / "checkpoint_nan.pt", weights_only=False)
        assert state["step"] == 14 and "batch" in state
        assert all(torch.isfinite(v).all() for v in state["model"].values())
        assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 10


def test_resume_refuses_a_modified_run_directory(tmp_path):
    cfg = _cfg(steps=20)
    interrupt_at(cfg, tmp_path / "r", 15)
    (tmp_path / "r" / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match="run directory was modified"):
        train(cfg, tmp_path / "r", progress=False)


def test_clip_grad_norm_clips_before_the_adam_step(tmp_path, monkeypatch):
    import torch

    from newton_lab import protocol_config, train

    seen = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        total = original(params, max_norm, *a, **k)
        seen.append((float(total), max_norm, float(torch.cat([p.grad.flatten() for p in params]).norm())))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    cfg = protocol_config("ranking", "tiny", clip_grad_norm=1e-3)
    train(cfg, tmp_path / "r", progress=False)
    assert len(seen) == cfg.steps
    # Every gradient was larger than 1e-3 before, and has norm 1e-3 after.
    assert all(before > 1e-3 and after == pytest.approx(1e-3, rel=1e-3) for before, _, after in seen)


@pytest.mark.parametrize("variant", ["none", "fisher"])
def test_loss_dtype_computes_the_loss_in_float64_and_trains_the_network_in_float32(tmp_path, monkeypatch, variant):
    import torch

    import newton_lab.runner as runner_mod
    from newton_lab import protocol_config, train

    seen = set()
    build = runner_mod.build_task

    def spy_build(*args, **kwargs):
        task = build(*args, **kwargs)
        inner = task.loss_fn.inner

        def spy_inner(y):
            seen.add(y.dtype)
            return inner(y)

        task.loss_fn.inner = spy_inner
        return task

    monkeypatch.setattr(runner_mod, "build_task", spy_build)
    lam = 0.1 if variant != "none" else 0.0
    wide = protocol_config("ranking", "tiny", method="odd_even", variant=variant, lam=lam, damping="batch",
                           loss_dtype="float64")
    result = train(wide, tmp_path / "wide", progress=False)
    assert seen == {torch.float64} and result["status"] == "finished"
    params = torch.load(tmp_path / "wide" / "checkpoint.pt", weights_only=False)["model"]
    assert {v.dtype for v in params.values() if v.is_floating_point()} == {torch.float32}
    seen.clear()
    train(wide.replace(loss_dtype=""), tmp_path / "plain", progress=False)
    assert seen == {torch.float32}


def test_gradient_norm_is_recorded_and_a_non_finite_one_stops_the_run(tmp_path, monkeypatch):
    import json

    import newton_lab.runner as runner_mod
    from newton_lab import RunFailed, protocol_config, read_metrics, train

    cfg = protocol_config("ranking", "tiny")
    train(cfg, tmp_path / "ok", progress=False)
    for rec in read_metrics(tmp_path / "ok"):
        assert 0 < rec["grad_norm"]["mean"] <= rec["grad_norm"]["max"]
    calls = []
    original = runner_mod._grad_norm

    def flaky(params):
        calls.append(1)
        return float("nan") if len(calls) == 13 else original(params)

    monkeypatch.setattr(runner_mod, "_grad_norm", flaky)
    with pytest.raises(RunFailed, match="non-finite parameter gradient .* at step 13"):
        train(cfg, tmp_path / "bad", progress=False)
    failed = json.loads((tmp_path / "bad" / "failed.json").read_text())
    assert failed["step"] == 13 and (tmp_path / "bad" / "checkpoint_nan.pt").exists()
