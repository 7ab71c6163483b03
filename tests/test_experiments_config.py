"""Run configurations: validation messages name the field, JSON round trip, stable run ids,
protocol values from docs/PAPER.md §2, and the command line rejecting bad input before any work."""
import json
import math

import pytest

from newton_lab.cli import main
from newton_lab.config import RunConfig, protocol_config


def test_paper_ranking_protocol_matches_method_md():
    c = protocol_config("ranking", "paper")
    assert (c.model, c.downscale, c.batch_size, c.steps, c.eval_every) == ("cnn", 1, 100, 100_000, 1000)
    assert math.isclose(c.lr, 10 ** -3.5)
    assert c.digits == 4 and c.method == "neuralsort"


def test_paper_shortest_path_protocol_matches_method_md():
    c = protocol_config("shortest_path", "paper")
    per_epoch = math.ceil(10_000 / 70)
    assert (c.model, c.batch_size, c.lr) == ("resnet_stem", 70, 5e-4)
    assert c.steps == 50 * per_epoch and c.lr_milestones == [30 * per_epoch, 40 * per_epoch]


def test_synthetic_terrain_too_small_for_its_splits_is_rejected_up_front():
    with pytest.raises(ValueError, match=r"exceed synthetic_size \(48\)"):
        protocol_config("shortest_path", "tiny", train_size=40, val_sets=8, test_sets=8)
    protocol_config("shortest_path", "tiny", train_size=32, val_sets=8, test_sets=8)


@pytest.mark.parametrize("overrides, field", [
    (dict(variant="newton"), "variant"),
    (dict(method="quicksort"), "method"),
    (dict(method_args={"temperature": 1.0}), "method_args"),
    (dict(method_args={"tau": -1.0}), "method_args.tau"),
    (dict(method_args={"tau": "hot"}), "method_args.tau"),
    (dict(variant="fisher", lam=0.0), "lam"),
    (dict(lam=-1.0, variant="fisher"), "lam"),
    (dict(lam=float("nan"), variant="fisher"), "lam"),
    (dict(damping="none"), "damping"),
    (dict(lr=0.0), "lr"),
    (dict(lr=1e38), "lr"),
    (dict(batch_size=0), "batch_size"),
    (dict(steps=1.5), "steps"),
    (dict(eval_every=10**6), "eval_every"),
    (dict(downscale=3), "downscale"),
    (dict(model="resnet_stem"), "model"),
    (dict(lr_milestones=[20, 10]), "lr_milestones"),
    (dict(n=1), "n"),
    (dict(seed=-1), "seed"),
    (dict(device="tpu"), "device"),
    (dict(dtype="float16"), "dtype"),
])
def test_invalid_fields_are_rejected_with_their_name(overrides, field):
    with pytest.raises(ValueError) as exc:
        protocol_config("ranking", "tiny", **overrides)
    assert str(exc.value).split(" ")[0].rstrip(":") == field


def test_unknown_field_and_task_specific_rules():
    with pytest.raises(ValueError, match="unknown configuration field"):
        RunConfig.from_dict({"task": "ranking", "learning_rate": 1.0})
    with pytest.raises(ValueError, match="stochastic method"):
        protocol_config("shortest_path", "tiny", method="perturbed_fy", variant="hessian_batch", lam=0.1)
    with pytest.raises(ValueError, match="zero second derivative"):
        protocol_config("shortest_path", "tiny", method="bf_for", method_args={"loss": "l1"},
                        variant="gauss_newton", lam=0.1)


def test_json_round_trip_and_stable_ids():
    c = protocol_config("ranking", "quick", variant="hessian", lam=0.1, method_args={"tau": 0.5}, seed=3)
    back = RunConfig.from_json(c.to_json()).validate()
    assert back == c and back.run_id() == c.run_id()
    assert c.run_id().startswith("ranking-neuralsort-bce_exact-n5-hessian-lam0.1-s3-")
    # The loss runs had before the exact BCE became the default is left out of ids and labels.
    legacy = protocol_config("ranking", "quick", variant="hessian", lam=0.1, method_args={"tau": 0.5, "loss": "bce"}, seed=3)
    assert legacy.run_id().startswith("ranking-neuralsort-n5-hessian-lam0.1-s3-")
    assert c.replace(seed=4).validate().run_id() != c.run_id()
    assert json.loads(c.to_json())["method_args"] == {"tau": 0.5, "loss": "bce_exact"}
    with pytest.raises(ValueError, match="method_args.loss"):
        protocol_config("ranking", "quick", method_args={"loss": "l2"})


def test_baseline_ignores_newton_fields():
    a = protocol_config("ranking", "quick", variant="none", lam=0.3, damping="relative")
    b = protocol_config("ranking", "quick", variant="none")
    assert a.run_id() == b.run_id()


def test_cli_rejects_invalid_configuration_before_work(tmp_path, capsys):
    rc = main(["train", "ranking", "--protocol", "tiny", "--variant", "fisher", "--lam", "0",
               "--out", str(tmp_path)])
    assert rc == 2
    assert "lam must be > 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    rc = main(["train", "ranking", "--protocol", "tiny", "--arg", "tau", "--out", str(tmp_path)])
    assert rc == 2 and "KEY=VALUE" in capsys.readouterr().err
    rc = main(["train", "ranking", "--epochs", "3", "--out", str(tmp_path)])
    assert rc == 2 and "--epochs applies to shortest-path" in capsys.readouterr().err


def test_committed_runs_keep_their_ids():
    """Every committed run directory is named by the run id of its config.json: a new field
    (LATER_DEFAULTS) at its default must not change an existing id."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    root = repo / "results"
    # the committed ones: git-ignored scratch (e.g. the anchor's PyEPO-loop run folders) is not a run
    listed = subprocess.run(["git", "ls-files", "-z", "--", "results"], cwd=repo, capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        configs = sorted(repo / f for f in listed.stdout.decode().split("\0") if f.endswith("/config.json"))
    else:  # not a git checkout (an sdist): every run folder under results/
        configs = sorted(root.glob("**/config.json"))
    if not configs:
        pytest.skip("no committed runs in this checkout")
    for path in configs:
        cfg = RunConfig.from_json(path.read_text()).validate()
        assert cfg.run_id() == path.parent.name, path


def test_cg_max_iter_is_a_later_field():
    from newton_lab.config import LATER_DEFAULTS

    assert LATER_DEFAULTS == {"cg_max_iter": 0, "clip_grad_norm": 0.0, "loss_dtype": "", "precision_every": 0}
    base = protocol_config("shortest_path", "quick", method="bf_for", variant="hessian", lam=1.0)
    assert "cg_max_iter" not in base.identity() and "cg_max_iter" in base.to_dict()
    capped = base.replace(cg_max_iter=2).validate()
    assert capped.identity()["cg_max_iter"] == 2 and capped.digest() != base.digest()
    assert capped.run_id().startswith("shortest_path-bf_for-hessian-lam1-cg2-s0-")
    # A config.json written before the field existed reads back to the same id.
    old = base.to_dict()
    del old["cg_max_iter"]
    assert RunConfig.from_dict(old).validate().run_id() == base.run_id()
    for bad in ({"variant": "fisher", "damping": "batch"}, {"variant": "none"},
                {"variant": "hessian", "damping": "batch"}):
        with pytest.raises(ValueError, match="cg_max_iter=2 caps a matrix-free"):
            protocol_config("ranking", "quick", lam=0.1, cg_max_iter=2, **bad)
    with pytest.raises(ValueError, match="cg_max_iter"):
        protocol_config("shortest_path", "quick", method="bf_for", variant="hessian", lam=1.0, cg_max_iter=-1)


def test_loss_dtype_field():
    base = protocol_config("ranking", "quick", method="odd_even")
    wide = base.replace(loss_dtype="float64").validate()
    assert "loss_dtype" not in base.identity() and wide.digest() != base.digest()
    assert "-none-loss64-s0-" in wide.run_id()
    old = base.to_dict()
    del old["loss_dtype"]  # a config.json from before the field: the same id
    assert RunConfig.from_dict(old).validate().run_id() == base.run_id()
    for bad in ("float16", "double", None):
        with pytest.raises(ValueError, match="loss_dtype"):
            base.replace(loss_dtype=bad).validate()


def test_clip_grad_norm_field():
    base = protocol_config("ranking", "quick")
    clipped = base.replace(clip_grad_norm=1.5).validate()
    assert "clip_grad_norm" not in base.identity() and clipped.digest() != base.digest()
    assert "-none-clip1.5-s0-" in clipped.run_id()
    with pytest.raises(ValueError, match="clip_grad_norm"):
        base.replace(clip_grad_norm=-1.0).validate()
