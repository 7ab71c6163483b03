"""A user's own model and data through the runner (newton_lab.register_custom_task): training with
a Newton loss, interruption and resume equal to an uninterrupted run, the report's rows, a sampler
instead of a fixed training set, the error messages for wrong pieces, and the example script
(examples/train_your_own.py) with its module in a sweep's worker processes.

Registrations are global: every test here works on a copy of the registry, restored afterwards.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from newton_lab import RunInterrupted, protocol_config, read_metrics, register_custom_task, registry, run_status, train
from newton_lab.report import build_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    monkeypatch.setattr(registry._REG, "tasks", dict(registry._REG.tasks))
    monkeypatch.setattr(registry._REG, "methods", dict(registry._REG.methods))


def blobs(n, seed, classes=4, dim=6):
    """Overlapping Gaussian blobs: x (n, dim), labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    label = torch.randint(classes, (n,), generator=g)
    return centers[label] + 0.8 * torch.randn(n, dim, generator=g), label


class Net(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 4))

    def forward(self, x):
        return self.net(x)


def ce(y, t):
    return nn.functional.cross_entropy(y, t, reduction="none")


def register_blobs(name="blobs", **changes):
    pieces = dict(
        model=lambda cfg: Net(cfg.hidden),
        train=blobs(300, 0), val=blobs(120, 1), test=blobs(120, 2),
        loss={"ce": ce},
        metrics={"accuracy": lambda y, t: (y.argmax(1) == t).double(),
                 "neg_loss": lambda y, t: -float(ce(y, t).mean())},
        percent_metrics=("accuracy",),
        protocols={"default": dict(hidden=16, steps=40, eval_every=10, batch_size=32, lr=1e-2)},
        title="Blobs (a user's task)",
    )
    return register_custom_task(name, **{**pieces, **changes})


def _strip_time(records):
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def _interrupt_at(step):
    def on_step(s):
        if s == step:
            raise KeyboardInterrupt
    return on_step


def test_own_model_and_data_train_resume_and_report(tmp_path):
    register_blobs()
    # 40 steps of 32 over 300 samples: the epoch permutation (checkpointed) wraps around.
    cfg = protocol_config("blobs", "default", variant="fisher", lam=0.1, precision_every=7)
    assert cfg.run_id().startswith("blobs-ce-fisher-lam0.1-s0-")
    spec = registry.task("blobs")  # what the benchmarks and registry tests ask of a task
    y, target = spec.random_batch(cfg, 3, torch.Generator().manual_seed(0))
    assert y.shape == (3, 4) and target.shape == (3,) and spec.output_size(cfg) == 4
    assert spec.build_loss(cfg, None)[0](y, target).shape == (3,)
    reference = train(cfg, tmp_path / "ref", progress=False)

    with pytest.raises(RunInterrupted, match="resume from step 20"):
        train(cfg, tmp_path / "cut", progress=False, on_step=_interrupt_at(25))
    assert run_status(tmp_path / "cut") == "partial"
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["step"] == 20
    resumed = train(cfg, tmp_path / "cut", progress=False)

    records = read_metrics(tmp_path / "cut")
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert _strip_time(records) == _strip_time(read_metrics(tmp_path / "ref"))
    assert resumed["best"] == reference["best"] and resumed["spikes"] == reference["spikes"] == 0
    assert resumed["precision"]["precision_checks"] == 6 and "precision" in records[0]
    ref_state = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=False)["model"]
    for k, v in torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["model"].items():
        assert torch.equal(v, ref_state[k])
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "result.json"} <= {p.name for p in (tmp_path / "cut").iterdir()}
    assert set(records[-1]["val"]) == {"accuracy", "neg_loss"}
    assert resumed["best"]["val"]["accuracy"] > 0.6  # chance: 1/4

    train(protocol_config("blobs", "default"), tmp_path / "base", progress=False)
    report = build_report([tmp_path / "ref", tmp_path / "base"], out=tmp_path / "report")
    assert "### Blobs (a user's task)" in report.markdown
    assert "| accuracy % (neg_loss) |" in report.markdown
    assert "| ce() | baseline | 1 |" in report.markdown and "| ce() | NL-fisher λ=0.1 | 1 |" in report.markdown
    fisher = next(r for r in report.groups if r["variant"] == "fisher")
    assert fisher["task"] == "blobs" and fisher["accuracy_mean"] == reference["best"]["test"]["accuracy"]
    assert (tmp_path / "report" / "curves.png").exists()


def test_a_sampler_one_metric_and_a_model_without_arguments(tmp_path):
    """Fresh batches from a function of the run's generator, a regression loss, one metric that is
    not a percentage (an error, negated: higher is better) and a factory without arguments."""
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))

    def sample(batch_size, generator):
        x = torch.randn(batch_size, 5, generator=generator)
        return x, x @ w

    x_val = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    register_custom_task(
        "regress", model={"linear": lambda: nn.Linear(5, 3)}, train=sample,
        val=(x_val, x_val @ w), test=(x_val[:32], x_val[:32] @ w),
        loss={"mse": lambda y, t: (y - t).pow(2).sum(1)},
        metrics={"neg_mse": lambda y, t: -(y - t).pow(2).sum(1).mean()},
        protocols={"default": dict(steps=20, eval_every=5, batch_size=16, lr=3e-2)})
    cfg = protocol_config("regress", "default", variant="hessian", lam=0.1)
    assert cfg.model == "linear" and cfg.method == "mse"
    reference = train(cfg, tmp_path / "ref", progress=False)
    with pytest.raises(RunInterrupted):
        train(cfg, tmp_path / "cut", progress=False, on_step=_interrupt_at(12))
    train(cfg, tmp_path / "cut", progress=False)
    assert _strip_time(read_metrics(tmp_path / "cut")) == _strip_time(read_metrics(tmp_path / "ref"))
    first, last = read_metrics(tmp_path / "ref")[0], read_metrics(tmp_path / "ref")[-1]
    assert last["val"]["neg_mse"] > first["val"]["neg_mse"]
    md = build_report([tmp_path / "ref"], plots=False).markdown
    assert "Test neg_mse at the best validation neg_mse" in md and "| neg_mse |" in md
    assert f"| mse() | NL-hessian λ=0.1 | 1 | {reference['best']['test']['neg_mse']:.4f} |" in md
    with pytest.raises(ValueError, match="train_size=10: task 'regress' samples its training batches from a function"):
        protocol_config("regress", "default", train_size=10)


def test_wrong_pieces_are_errors_that_say_what_to_do(tmp_path):
    with pytest.raises(TypeError, match="model must be a factory that builds the network, e.g. lambda cfg: MyNet()"):
        register_blobs(model=Net(4))
    with pytest.raises(TypeError, match="model must be callable, a factory model\\(cfg\\) -> torch.nn.Module"):
        register_blobs(model="mlp")
    x, t = blobs(50, 3)
    with pytest.raises(ValueError, match=r"train: x has 50 samples \(shape \(50, 6\)\) but target has 40"):
        register_blobs(train=(x, t[:40]))
    with pytest.raises(ValueError, match=r"val inputs x have shape \(50, 5\) but train inputs x have \(300, 6\)"):
        register_blobs(val=(x[:, :5], t))
    with pytest.raises(TypeError, match="test: x must be a torch.Tensor.*got a ndarray.*torch.as_tensor"):
        register_blobs(test=(x.numpy(), t))
    with pytest.raises(ValueError, match=r"percent_metrics \['acc'\] are not among the metrics"):
        register_blobs(percent_metrics=("acc",))
    with pytest.raises(ValueError, match="protocols\\['default'\\] is not a valid run configuration: unknown "
                                         "configuration field\\(s\\) \\['stepz'\\]"):
        register_blobs(protocols={"default": {"stepz": 10}})
    assert "blobs" not in registry.tasks()  # a failed registration leaves nothing behind

    # Pieces that are only wrong when called: checked on a few samples before the first step.
    register_blobs("bad_metric", metrics={"accuracy": lambda y, t: {"acc": 1.0}})
    with pytest.raises(ValueError, match="metric 'accuracy' returned a dict; it must return a number"):
        train(protocol_config("bad_metric", "default"), tmp_path / "m", progress=False)
    register_blobs("bad_loss", loss=lambda y, t: ce(y, t).mean())
    with pytest.raises(ValueError, match=r"the loss 'loss' returned shape \(\) for a batch of 16.*one loss per "
                                         r"sample, shape \(16,\)"):
        train(protocol_config("bad_loss", "default"), tmp_path / "l", progress=False)
    register_blobs("bad_model", model=lambda: nn.Sequential(nn.Linear(6, 1), nn.Flatten(0)))
    with pytest.raises(ValueError, match=r"outputs of shape \(16,\).*y.unsqueeze\(-1\)"):
        train(protocol_config("bad_model", "default"), tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "checkpoint.pt").exists()
    register_blobs("bad_fit", model=lambda: nn.Linear(5, 4))
    with pytest.raises(ValueError, match=r"the model 'default' failed on validation inputs x of shape \(16, 6\).*"
                                         r"do the data fit the network\?.*RuntimeError"):
        train(protocol_config("bad_fit", "default"), tmp_path / "f", progress=False)
    with pytest.raises(ValueError, match="variant 'gauss_newton' needs the loss as a newton_losses.CompositeLoss"):
        protocol_config("bad_model", "default", variant="gauss_newton", lam=0.1)
    with pytest.raises(ValueError, match="val_sets=500 exceeds the 120 samples of the val set of task 'bad_model'"):
        protocol_config("bad_model", "default", val_sets=500)


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    """docs/EXTENDING.md, "Your own model and data": its script, as written."""
    text = (ROOT / "docs" / "EXTENDING.md").read_text().split("## Your own model and data", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/EXTENDING.md", "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "| cross_entropy() | NL-fisher λ=0.1 | 1 |" in out and "| cross_entropy() | NL-hessian λ=0.1 | 1 |" in out
    assert len(list((tmp_path / "runs" / "blobs").glob("*/result.json"))) == 3


def test_the_example_trains_and_its_module_serves_sweeps(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_your_own.py"), "--out", "runs",
                          "--steps", "40"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "interrupted at step 21; run the same command to resume from step 20" in out.stdout
    assert "| cross_entropy() | NL-hessian λ=0.1 | 1 |" in out.stdout
    # A sweep over the example's task: its module registers it in the sweep and in the worker.
    sweep = {"out": "sweep", "workers": 1, "task": "spirals", "protocol": "default",
             "imports": ["train_your_own"], "base": {"steps": 10, "eval_every": 5},
             "grid": [{"variant": ["none"]}, {"variant": ["fisher"], "lam": [0.1]}]}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    out = subprocess.run([sys.executable, "-m", "newton_lab", "sweep", "sweep.json", "--no-progress"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert sorted(p.name.split("-")[2] for p in (tmp_path / "sweep").iterdir() if (p / "result.json").exists()) \
        == ["fisher", "none"]
    assert "| cross_entropy() | NL-fisher λ=0.1 | 1 |" in out.stdout
