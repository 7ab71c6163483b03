"""The scripts under scripts/: tiny runs on synthetic data, checked against what they must show."""
import importlib.util
import json
from pathlib import Path

import pytest

from newton_losses.experiments import protocol_config

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_dir(tmp_path, **fields):
    cfg = protocol_config("shortest_path", "tiny", method="bf_for", **fields)
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.json").write_text(cfg.to_json())
    return d


def test_curvature_trace_table(tmp_path, capsys):
    trace = _load("curvature_trace")
    d = _run_dir(tmp_path, variant="hessian", lam=1.0, cg_max_iter=2)
    assert trace.main([str(d), "--steps", "2", "--every", "1", "--lam", "0.1", "1e6", "--train-size", "0"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["0", "1"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        cos_small, cos_huge = (float(c.split(",")[0]) for c in cells[-2:])
        assert -1.0 <= cos_small <= 1.0
        # λ → ∞: the Newton loss is a rescaled gradient (METHOD.md §1).
        assert cos_huge >= 0.999


def test_curvature_trace_needs_a_variant_for_a_baseline(tmp_path):
    trace = _load("curvature_trace")
    d = _run_dir(tmp_path, variant="none")
    with pytest.raises(SystemExit):
        trace.main([str(d), "--steps", "1", "--train-size", "0"])
    with pytest.raises(SystemExit, match="not found"):
        trace.main([str(tmp_path / "missing"), "--steps", "1"])
