"""The update-redistribution analysis on a tiny trained run."""
import pytest

from newton_lab.analysis import table, update_weights
from newton_lab.config import protocol_config
from newton_lab.runner import train


def test_update_weights_of_a_tiny_run(tmp_path):
    run = tmp_path / "run"
    train(protocol_config("ranking", "tiny", n=4), run, progress=False)
    rows = update_weights(run, sets=40, settings=(("hessian", 0.1, "batch"), ("fisher", 0.1, "batch")))
    assert [r["update"] for r in rows] == ["gradient", "NL-hessian λ=0.1 batch", "NL-fisher λ=0.1 batch"]
    grad = rows[0]
    assert grad["cos_median"] == pytest.approx(1.0) and 0 < grad["effective_sample_fraction"] <= 1
    assert 0 <= rows[1]["share_on_wrong_sets"] <= 1 and 0 <= grad["wrong_fraction"] <= 1
    assert table(rows).count("\n") == 5
