"""The predict-then-optimize task (newton_lab.tasks.pyepo, task "pto"): its configuration and
errors, its losses and metric against PyEPO's own modules, the cached true solutions against
PyEPO's solver, tiny runs of every method and variant, resume, lower-is-better model selection,
the knapsack, the command line, sweeps and reports. Skipped without PyEPO."""
from __future__ import annotations

import json
import math

import pytest
import torch

from _runs import interrupt_at

pyepo = pytest.importorskip("pyepo")
pytest.importorskip("ortools")

from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from newton_lab import protocol_config, read_metrics, registry, run_status, train  # noqa: E402
from newton_lab.config import RunConfig  # noqa: E402
from newton_lab.runner import build_task, seed_run  # noqa: E402
from newton_lab.tasks import pyepo as T  # noqa: E402



def strip(records):
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """True solutions that an optModel solves go to the harness's cache: a temporary one here."""
    monkeypatch.setenv("NEWTON_LOSSES_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------------------------
# Configuration
def test_protocols_defaults_and_run_ids():
    cfg = protocol_config("pto", "pyepo")
    assert (cfg.model, cfg.lr, cfg.batch_size, cfg.train_size, cfg.test_sets) == ("linear", 1e-2, 32, 1000, 1000)
    assert cfg.steps == 20 * 32 and cfg.eval_every == 32 and cfg.lr_milestones == []
    assert cfg.task_args == {"problem": "shortest_path", "deg": 4, "noise": 0.5, "features": 5, "data_seed": -1,
                             "solver": "auto", "last_batch": "partial", "grid": 5, "items": 32, "dim": 2,
                             "capacity": 20.0}
    assert cfg.run_id().startswith("pto-spo_plus-sp-deg4-e0.5-n1000-none-s0-")
    # task arguments override one by one, and name the run
    other = protocol_config("pto", "pyepo", task_args={"deg": 2}, model="mlp", method="pfyl",
                            variant="hessian", lam=1.0, seed=3)
    assert other.task_args["deg"] == 2 and other.task_args["noise"] == 0.5
    assert other.run_id().startswith("pto-pfyl-sp-deg2-e0.5-n1000-mlp-hessian-lam1-s3-")
    assert "task_args" in cfg.identity()
    # JSON round trip
    assert RunConfig.from_json(other.to_json()).validate().run_id() == other.run_id()
    # the other tasks take no task arguments, and their ids do not mention the field
    ranking = protocol_config("ranking", "tiny")
    assert ranking.task_args == {} and "task_args" not in ranking.identity()
    assert registry.task("pto").output_size(cfg) == 40
    assert registry.task("pto").output_size(protocol_config("pto", "tiny", task_args={"problem": "knapsack"})) == 32


@pytest.mark.parametrize("overrides, match", [
    ({"task_args": {"degree": 4}}, r"task_args: unknown argument\(s\) \['degree'\] for task 'pto'; it takes"),
    ({"task_args": {"problem": "tsp"}}, r"task_args.problem must be one of \('shortest_path', 'knapsack'\)"),
    ({"task_args": {"deg": 0}}, r"task_args.deg must be >= 1; got 0"),
    ({"task_args": {"noise": -0.5}}, r"task_args.noise must be >= 0"),
    ({"task_args": {"noise": 1.0}}, r"task_args.noise must be < 1 \(the noise multiplies each cost"),
    ({"task_args": {"solver": "gurobi"}}, r"task_args.solver must be one of \('auto', 'grid', 'pyepo'\)"),
    ({"task_args": {"problem": "knapsack", "solver": "grid"}}, r"solver='grid' is the exact dynamic program"),
    ({"task_args": {"problem": "knapsack", "grid": 4}}, r"task_args.grid=4 applies to problem 'shortest_path'"),
    ({"task_args": {"items": 10}}, r"task_args.items=10 applies to problem 'knapsack'"),
    ({"train_size": 0}, r"train_size must be >= 1 for task 'pto'"),
    ({"val_sets": 0}, r"val_sets must be >= 1"),
    ({"model": "cnn"}, r"model must be one of \('linear', 'mlp'\)"),
    ({"method": "pfyl", "variant": "gauss_newton", "lam": 1.0}, r"variant 'gauss_newton' is not available"),
    ({"method": "spo_plus", "variant": "hessian", "lam": 1.0}, r"variant 'hessian' is not available"),
    ({"method": "dpo", "method_args": {"loss": "l1"}, "variant": "gauss_newton", "lam": 1.0},
     r"the L1 loss has zero second derivative"),
    ({"method": "dbb", "method_args": {"lambd": 0}}, r"method_args.lambd must be > 0"),
    ({"method": "pfyl", "variant": "hessian", "lam": 0.1, "damping": "batch"},
     r"damping='batch' scales λ by the curvature matrix, but the 'hessian' of the stochastic method 'pfyl' "
     r"is its own Stein estimator, matrix-free .*use damping='absolute'"),
    ({"method": "dpo", "variant": "gauss_newton", "lam": 0.1, "damping": "relative"},
     r"the 'gauss_newton' of the stochastic method 'dpo' is its own Gauss-Newton estimator, matrix-free "
     r".*use damping='absolute'"),
    ({"method": "dpo", "variant": "hessian", "lam": 0.0}, r"got lam=0. Use e.g. lam=1 \(damping 'absolute'"),
    ({"method": "dpo", "variant": "gauss_newton", "lam": 0.0}, r"got lam=0. Use e.g. lam=1 \(damping 'absolute'"),
    ({"method": "spo_plus", "variant": "fisher", "lam": 0.0}, r"got lam=0. Use e.g. lam=0.1 with damping='batch'"),
    ({"method": "pfyl", "precision_every": 5}, r"draws random samples"),
    ({"method": "nce"}, r"method 'nce' is not registered for task 'pto'"),
])
def test_bad_configurations_say_what_is_wrong(overrides, match):
    with pytest.raises(ValueError, match=match):
        protocol_config("pto", "tiny", **overrides)


def test_task_arguments_of_a_task_without_them():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['deg'\] for task 'ranking'; it takes none"):
        protocol_config("ranking", "tiny", task_args={"deg": 4})
    with pytest.raises(ValueError, match="task_args must be a dict"):
        protocol_config("pto", "tiny", task_args=[("deg", 4)])


def test_lower_is_better_is_the_tasks_choice():
    pto, ranking = registry.task("pto"), registry.task("ranking")
    assert pto.better("regret", 0.1, 0.2) and not pto.better("regret", 0.2, 0.1)
    assert not pto.better("regret", 0.1, 0.1)  # ties keep the earlier evaluation
    assert ranking.better("exact", 0.6, 0.5) and not ranking.better("exact", 0.5, 0.6)


# ----------------------------------------------------------------------------------------------
# Data, losses and metric against PyEPO
def _data(cfg):
    data = T.load_data(cfg)
    tr = data["train"]
    return (data, torch.from_numpy(tr["x"]), torch.from_numpy(tr["c"]), torch.from_numpy(tr["w"]),
            torch.from_numpy(tr["z"]))


def test_data_are_pyepos_generator_split_in_order():
    cfg = protocol_config("pto", "tiny", seed=7, task_args={"deg": 2})
    data = T.load_data(cfg)
    x, c = pyepo.data.shortestpath.genData(64 + 32 + 32, 5, (5, 5), deg=2, noise_width=0.5, seed=7)
    assert (data["train"]["x"] == x[:64].astype("float32")).all() and (data["test"]["c"] == c[96:]).all()
    assert T.load_data(cfg) is data  # generated and solved once
    fixed = protocol_config("pto", "tiny", seed=7, task_args={"deg": 2, "data_seed": 1})
    assert not (T.load_data(fixed)["train"]["c"] == data["train"]["c"]).all()


def test_true_solutions_of_the_grid_solver_are_pyepos():
    """Every instance of a generated set (128, the tiny splits): the task's cached solutions and
    objectives with the exact dynamic program equal those of PyEPO's OR-Tools model
    (tests/test_pyepo_integration.py compares the solvers themselves on more data)."""
    base = dict(seed=11, train_size=64, val_sets=32, test_sets=32)
    grid = T.load_data(protocol_config("pto", "tiny", task_args={"solver": "grid"}, **base))
    ort = T.load_data(protocol_config("pto", "tiny", task_args={"solver": "pyepo"}, **base))
    for split in ("train", "val", "test"):
        assert (grid[split]["c"] == ort[split]["c"]).all()
        assert (grid[split]["w"] == ort[split]["w"]).all()
        assert abs(grid[split]["z"] - ort[split]["z"]).max() < 1e-12
    assert T.problem_of(protocol_config("pto", "tiny")).solver_name == "grid"


@pytest.mark.parametrize("problem", ["shortest_path", "knapsack"])
def test_losses_and_regret_are_pyepos(problem):
    """SPO+, DBB + L1 and the two-stage MSE against PyEPO's modules (values and gradients), and
    the normalized regret and MSE against pyepo.metric, on the same batch."""
    cfg = protocol_config("pto", "tiny", task_args={"problem": problem})
    prob = T.problem_of(cfg)
    data, x, c, w, z = _data(cfg)
    # PyEPO's own true solutions (a knapsack's integer values tie: use one set of solutions for both)
    dataset = pyepo.data.dataset.optDataset(prob.optmodel, data["train"]["x"], data["train"]["c"])
    assert torch.allclose(dataset.objs.squeeze(1).double(), z, atol=1e-4)
    w, z = dataset.sols, dataset.objs
    target = T.pack_targets(c.double(), w.double(), z.squeeze(1).double()).float()
    pred = c + 0.5 * torch.randn(c.shape, generator=torch.Generator().manual_seed(0)) * c.mean()

    def grad(fn):
        leaf = pred.clone().requires_grad_(True)
        value = fn(leaf)
        value.backward()
        return value.detach(), leaf.grad

    ours = grad(lambda p: T.SPOPlusLoss(prob)(p, target).sum())
    theirs = grad(lambda p: pyepo.func.SPOPlus(prob.optmodel, processes=1, reduction="none")(p, c, w, z).sum())
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=0)

    # DBB: PyEPO averages nn.L1Loss over the batch; so does the baseline here
    ours = grad(lambda p: T.DBBLoss(prob, 10.0)(p, target).mean())
    dbb = pyepo.func.blackboxOpt(prob.optmodel, lambd=10, processes=1)
    theirs = grad(lambda p: nn.L1Loss()((dbb(p) * c).sum(1).view(-1, 1), z))
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-5, atol=1e-7)
    assert theirs[1].abs().sum() > 0

    ours = grad(lambda p: T.TwoStageLoss(prob)(p, target).mean())
    theirs = grad(lambda p: nn.MSELoss()(p, c))
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])

    torch.manual_seed(1)
    model = nn.Linear(5, prob.num_cost)
    loader = DataLoader(dataset, batch_size=32, shuffle=False)
    with torch.no_grad():
        metrics = T.regret_metrics(prob, model(x), c, dataset.objs.squeeze(1))
    assert metrics["regret"] > 0.05  # an untrained model: far from optimal
    assert math.isclose(metrics["regret"], pyepo.metric.regret(model, prob.optmodel, loader), rel_tol=1e-5)
    assert math.isclose(metrics["mse"], pyepo.metric.MSE(model, loader), rel_tol=1e-5)


def test_perturbed_losses_are_the_integrations():
    """dpo / pfyl hand the true solutions of the packed target to DPOLoss / PFYLoss, and their
    estimators (registry.curvature) to NewtonLoss the same way."""
    from newton_losses.integrations.pyepo import DPOLoss, PFYLoss

    cfg = protocol_config("pto", "tiny", method="dpo", variant="gauss_newton", lam=1.0)
    prob = T.problem_of(cfg)
    y, target = T.random_batch(cfg, 4, torch.Generator().manual_seed(0))
    w = target[:, 40:80]
    for method, inner in (("dpo", DPOLoss(prob.optmodel, "l2", generator=torch.Generator().manual_seed(3))),
                          ("pfyl", PFYLoss(prob.optmodel, generator=torch.Generator().manual_seed(3)))):
        loss, _ = T.build_loss(protocol_config("pto", "tiny", method=method), torch.Generator().manual_seed(3))
        assert torch.equal(loss(y, target), inner(y, w))
        assert loss.stochastic and isinstance(loss.inner, type(inner))
    loss, module = T.build_loss(cfg, torch.Generator())
    assert "gauss_newton" in repr(registry.curvature(registry.method("pto", "dpo"), module, "gauss_newton"))
    assert "hessian" in repr(registry.curvature(registry.method("pto", "dpo"), module, "hessian"))
    assert registry.curvature(registry.method("pto", "spo_plus"), module, "fisher") == "fisher"


# ----------------------------------------------------------------------------------------------
# Runs
def _supported():
    return [(m, v) for m in registry.methods("pto") for v in registry.variants()
            if registry.method("pto", m).supports(v)]


@pytest.mark.parametrize("method, variant", _supported())
def test_every_method_and_variant_trains(tmp_path, method, variant):
    cfg = protocol_config("pto", "tiny", method=method, variant=variant, lam=0.0 if variant == "none" else 1.0,
                          steps=2, eval_every=2)
    result = train(cfg, tmp_path / "r", progress=False)
    assert run_status(tmp_path / "r") == "finished"
    assert set(result["best"]["test"]) == {"regret", "mse"} and result["best"]["test"]["regret"] >= 0
    assert math.isfinite(result["final"]["train_loss"])
    t = result["time"]
    assert t["network_s"] > 0 and (t["newton_s"] > 0) == (variant != "none")


def test_a_tiny_run_lowers_the_regret(tmp_path):
    cfg = protocol_config("pto", "tiny", steps=40, eval_every=8)
    seed_run(cfg.seed)
    task = build_task(cfg, torch.device("cpu"), torch.float32)
    before = task.evaluate(task.model, "test")["regret"]
    result = train(cfg, tmp_path / "r", progress=False)
    assert result["best"]["test"]["regret"] < 0.6 * before, (before, result["best"]["test"])
    # the harness's initialization is PyEPO's: torch.manual_seed(seed), then nn.Linear(p, d)
    torch.manual_seed(cfg.seed)
    assert torch.equal(nn.Linear(5, 40).weight, task.model.linear.weight)


def test_resume_is_bit_identical_with_a_short_last_batch(tmp_path):
    """PFYL with its Hessian estimator (noise generator), 40 training instances in batches of
    16 (epochs of 16, 16, 8): killed mid-epoch after the first checkpoint, resumed."""
    cfg = protocol_config("pto", "tiny", method="pfyl", variant="hessian", lam=1.0, train_size=40,
                          steps=9, eval_every=3)
    reference = train(cfg, tmp_path / "ref", progress=False)
    interrupt_at(cfg, tmp_path / "cut", 5)
    resumed = train(cfg, tmp_path / "cut", progress=False)
    assert strip(read_metrics(tmp_path / "cut")) == strip(read_metrics(tmp_path / "ref"))
    assert resumed["best"] == reference["best"]
    sizes = []
    task = build_task(cfg, torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        sizes.append(task.sample(16, gen)[0].shape[0])
    assert sizes == [16, 16, 8, 16, 16, 8]
    full = build_task(cfg.replace(task_args={**cfg.task_args, "last_batch": "full"}).validate(),
                      torch.device("cpu"), torch.float32)
    assert [full.sample(16, gen)[0].shape[0] for _ in range(3)] == [16, 16, 16]
    with pytest.raises(ValueError, match="data-parallel processes train on equal slices"):
        build_task(cfg, torch.device("cpu"), torch.float32, rank=1)


def test_the_best_evaluation_has_the_lowest_validation_regret(tmp_path, monkeypatch):
    scripted = iter([0.5, 0.9, 0.2, 0.9, 0.3, 0.9])  # (val, test) per evaluation

    def evaluate(self, model, split):
        return {"regret": next(scripted), "mse": 1.0}

    monkeypatch.setattr(T.PTOTask, "evaluate", evaluate)
    result = train(protocol_config("pto", "tiny", steps=6, eval_every=2), tmp_path / "r", progress=False)
    assert result["best"]["step"] == 4 and result["best"]["val"]["regret"] == 0.2


def test_knapsack_maximization_trains_and_caches_its_solutions(tmp_path, monkeypatch):
    cfg = protocol_config("pto", "tiny", task_args={"problem": "knapsack"}, method="spo_plus", steps=4,
                          eval_every=4, val_sets=16, test_sets=16)
    result = train(cfg, tmp_path / "r", progress=False)
    assert result["status"] == "finished" and 0 <= result["best"]["test"]["regret"] < 1
    assert cfg.run_id().startswith("pto-spo_plus-ks-deg4-")
    assert len(list((tmp_path / "cache" / "pyepo").glob("knapsack-*.npz"))) == 1
    first = T.load_data(cfg)
    T._DATA_CACHE.clear()

    def no_solver(*args, **kwargs):
        raise AssertionError("solved again instead of read from the cache")

    monkeypatch.setattr(T.Problem, "solve", no_solver)
    again = T.load_data(cfg)
    assert (again["test"]["w"] == first["test"]["w"]).all()


# ----------------------------------------------------------------------------------------------
# Command line, sweeps, reports
def test_command_line_and_report(tmp_path, capsys):
    from newton_lab.cli import main
    from newton_lab.report import build_report

    rc = main(["train", "pto", "--protocol", "tiny", "--task-arg", "deg=2", "--method", "dbb", "--no-progress",
               "--out", str(tmp_path / "runs")])
    assert rc == 0, capsys.readouterr().err
    assert "regret" in capsys.readouterr().out
    rc = main(["train", "pto", "--protocol", "tiny", "--task-arg", "deg=2", "--method", "dbb", "--variant",
               "fisher", "--lam", "0.1", "--no-progress", "--out", str(tmp_path / "runs")])
    assert rc == 0
    rc = main(["train", "pto", "--protocol", "tiny", "--task-arg", "problem=tsp", "--out", str(tmp_path / "runs")])
    assert rc == 2 and "task_args.problem must be one of" in capsys.readouterr().err
    report = build_report([tmp_path / "runs"], plots=False)
    text = report.markdown
    assert "| method | problem | deg | noise | train_size | variant |" in text
    assert "Lower regret is better" in text
    assert "| dbb(lambd=10) | shortest_path | 2 | 0.5 | 64 | NL-fisher λ=0.1 |" in text
    row = next(r for r in report.groups if r["variant"] == "fisher")
    base = next(r for r in report.groups if r["variant"] == "none")
    assert math.isclose(row["delta_vs_baseline"], 100 * (row["regret_mean"] - base["regret_mean"]))


def test_sweep_grids_over_task_arguments():
    from newton_lab.sweep import SweepSpec

    spec = SweepSpec.from_dict({"task": "pto", "protocol": "tiny", "out": "x",
                                "base": {"task_args": {"noise": 0.0}},
                                "grid": {"task_args.deg": [1, 2], "method": ["spo_plus", "pfyl"]}})
    configs = spec.expand()
    assert [(c.task_args["deg"], c.task_args["noise"], c.method) for c in configs] == \
        [(1, 0.0, "spo_plus"), (1, 0.0, "pfyl"), (2, 0.0, "spo_plus"), (2, 0.0, "pfyl")]
    spec = SweepSpec.load("configs/pto_quick.json")
    configs = spec.expand()
    assert {c.task for c in configs} == {"pto"} and len(configs) == len({c.run_id() for c in configs})
    json.dumps([c.to_dict() for c in configs])
