"""The shortest-path task: metrics against hand-computed cases, and tiny end-to-end runs on
synthetic terrain for the relaxed and stochastic methods (with resume equality)."""
import pytest
import torch

from _runs import interrupt_at, without_time

from newton_lab import protocol_config, read_metrics, run_status, train
from newton_lab.tasks.shortest_path import path_metrics


def test_path_metrics_against_hand_cases():
    # 3×3 grids whose optimum is the diagonal (cost 3). The predicted costs make the path
    # (0,0) (0,1) (1,2) (2,2) cheapest: it costs 4 on the first grid, and 3 on the second — a
    # second optimal path, which is cost-optimal without being an exact match.
    w = torch.tensor([[[1.0, 1.0, 9.0], [9.0, 1.0, 1.0], [9.0, 9.0, 1.0]],
                      [[1.0, 0.5, 9.0], [9.0, 1.0, 0.5], [9.0, 9.0, 1.0]]])
    truth = torch.eye(3).expand(2, 3, 3)
    pred_costs = torch.tensor([[[1.0, 0.0, 9.0], [9.0, 9.0, 0.0], [9.0, 9.0, 1.0]]] * 2)
    m = path_metrics(pred_costs, w, truth)
    assert m["exact"].tolist() == [0.0, 0.0]
    assert m["cost_optimal"].tolist() == [0.0, 1.0]
    assert torch.allclose(m["cost_ratio"], torch.tensor([4 / 3, 1.0], dtype=torch.float64))
    m = path_metrics(w, w, truth)
    assert m["exact"][0] == 1.0 and m["cost_ratio"][0] == 1.0


@pytest.mark.parametrize("method, variant", [("bf_for", "none"), ("bf_for", "gauss_newton"),
                                             ("perturbed_fy", "hessian"), ("smoothed_loss", "fisher")])
def test_tiny_shortest_path_runs(tmp_path, method, variant):
    cfg = protocol_config("shortest_path", "tiny", method=method, variant=variant, lam=0.1)
    result = train(cfg, tmp_path / "r", progress=False)
    assert run_status(tmp_path / "r") == "finished"
    for key in ("exact", "cost_optimal", "cost_ratio"):
        assert key in result["best"]["test"]
    assert result["best"]["test"]["cost_ratio"] >= 1.0
    assert [r["step"] for r in read_metrics(tmp_path / "r")] == [3, 6]


def test_stochastic_run_resumes_identically(tmp_path):
    cfg = protocol_config("shortest_path", "tiny", method="perturbed_fy", variant="hessian", lam=0.1)
    reference = train(cfg, tmp_path / "ref", progress=False)
    interrupt_at(cfg, tmp_path / "cut", 4)
    resumed = train(cfg, tmp_path / "cut", progress=False)
    assert without_time(read_metrics(tmp_path / "cut")) == without_time(read_metrics(tmp_path / "ref"))
    assert resumed["best"] == reference["best"]


def test_truncated_cg_run_caps_the_solver(tmp_path):
    """cg_max_iter reaches NewtonLoss: the solve is CG, capped; an old run directory (config.json
    without the field) still resumes."""
    import json

    from newton_lab.runner import build_task, newton_loss_for

    cfg = protocol_config("shortest_path", "tiny", method="bf_for", variant="hessian", lam=1.0, cg_max_iter=2)
    task = build_task(cfg, torch.device("cpu"), torch.float32)
    nl = newton_loss_for(cfg, task)
    assert nl.solver == "cg" and nl.cg_max_iter == 2
    result = train(cfg, tmp_path / "r", progress=False)
    assert result["status"] == "finished"
    # A run written before cg_max_iter existed: same id, and its directory is accepted.
    plain = protocol_config("shortest_path", "tiny", method="bf_for", variant="none")
    train(plain, tmp_path / "old", progress=False)
    stored = json.loads((tmp_path / "old" / "config.json").read_text())
    del stored["cg_max_iter"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(stored))
    assert train(plain, tmp_path / "old", progress=False)["status"] == "finished"
