"""`torchrun --nproc-per-node 2 -m newton_lab train ...` (gloo, CPU) follows the
single-process run on the same global batch: same metrics and parameters up to the order of
floating-point sums (float64 here, so the tolerance can be tight)."""
import os
import subprocess
import sys

import pytest
import torch

from newton_lab import protocol_config, read_metrics, train

ARGS = ["--protocol", "tiny", "--variant", "fisher", "--lam", "0.1", "--steps", "12", "--eval-every", "6",
        "--batch-size", "16", "--set", 'dtype="float64"', "--no-progress"]


@pytest.mark.timeout(240)
def test_two_gloo_processes_match_one_process(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "newton_losses", "train", "ranking", *ARGS, "--run-dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = protocol_config("ranking", "tiny", variant="fisher", lam=0.1, steps=12, eval_every=6, batch_size=16,
                          dtype="float64")
    single = train(cfg, tmp_path / "single", progress=False)
    ddp_records, ref_records = read_metrics(run), read_metrics(tmp_path / "single")
    assert [r["step"] for r in ddp_records] == [6, 12]
    for a, b in zip(ddp_records, ref_records):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
        assert a["val"] == b["val"] and a["test"] == b["test"]
    ddp_state = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    ref_state = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=False)["model"]
    for k, v in ref_state.items():
        # Adam divides by sqrt(v): parameters whose gradients are ~0 amplify 1e-16 sum-order noise.
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-8, atol=1e-10)
    assert single["world_size"] == 1
    import json

    assert json.loads((run / "result.json").read_text())["world_size"] == 2


def test_batch_not_divisible_by_processes_is_rejected(tmp_path):
    run = tmp_path / "bad"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "newton_losses", "train", "ranking", *ARGS[:-1], "--batch-size", "15", "--run-dir", str(run),
           "--no-progress"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=220)
    assert proc.returncode != 0
    assert "batch_size (15) must be divisible by the number of processes (2)" in proc.stderr
