"""The harness registry (newton_lab.registry): names, specs, errors, and — driven by the registry
itself — every registered method of every task with every variant it supports."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from newton_lab import registry
from newton_lab.config import RunConfig, protocol_config
from newton_lab.runner import newton_loss_for

ROOT = Path(__file__).resolve().parents[1]
def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _case(t, m):
    """A task's method, skipped where a package the task needs is missing (the predict-then-
    optimize task needs PyEPO: registry.Task.requires)."""
    missing = [r for r in registry.task(t).requires if not _installed(r)]
    return pytest.param(t, m, marks=pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}"))


CASES = [_case(t, m) for t in registry.tasks() for m in registry.methods(t)]


def test_unknown_names_are_errors_that_list_the_registered_ones():
    with pytest.raises(ValueError, match="task 'ranks' is not registered; registered tasks: ranking, shortest_path"):
        registry.task("ranks")
    with pytest.raises(ValueError, match="registered methods: neuralsort, softsort, odd_even, bitonic"):
        registry.method("ranking", "quicksort")
    with pytest.raises(ValueError, match="registered variants: none, hessian, hessian_batch, fisher, gauss_newton"):
        registry.variant("newton")
    with pytest.raises(ValueError, match="method 'bf_for' is not registered for task 'ranking'"):
        protocol_config("ranking", "tiny", method="bf_for")
    assert registry.task("shortest-path") is registry.task("shortest_path")  # the command line's spelling


@pytest.mark.parametrize("task,method", CASES)
def test_specs_round_trip(task, method):
    m = registry.method(task, method)
    assert registry.parse_spec(task, method) == (method, m.defaults())
    assert registry.format_spec(task, method, m.defaults()) == method
    # Change the first numeric argument: the spec names it, and parses back to the same arguments.
    key = next((k for k, a in m.args.items() if a.type in (int, float)), None)
    if key is not None:
        args = {**m.defaults(), key: m.args[key].type(m.args[key].default + 3)}
        spec = registry.format_spec(task, method, args)
        assert spec == f"{method}:{key}={args[key]:g}"
        assert registry.parse_spec(task, spec) == (method, args)


def test_bad_specs_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown argument 'beta'; neuralsort takes"):
        registry.parse_spec("ranking", "neuralsort:beta=2")
    with pytest.raises(ValueError, match="'tau' is not KEY=VALUE|is not KEY=VALUE"):
        registry.parse_spec("ranking", "neuralsort:tau")
    with pytest.raises(ValueError, match="tau must be a number; got 'x'"):
        registry.parse_spec("ranking", "neuralsort:tau=x")
    with pytest.raises(ValueError, match=r"method_args.tau must be > 0"):
        registry.parse_spec("ranking", "neuralsort:tau=0")
    with pytest.raises(ValueError, match="method_args.sigmoid must be one of"):
        registry.parse_spec("ranking", "odd_even:sigmoid=tanh")
    with pytest.raises(ValueError, match="non-empty string"):
        registry.parse_spec("ranking", " ")


def test_earlier_names_are_accepted_with_a_warning():
    with pytest.warns(FutureWarning, match="'cauchy_dsn' is an earlier name of the method spec 'odd_even:sigmoid=cauchy'"):
        assert registry.parse_spec("ranking", "cauchy_dsn")[1]["sigmoid"] == "cauchy"


def test_registration_errors():
    m = registry.method("ranking", "neuralsort")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_method(m)
    with pytest.raises(ValueError, match="task 'nope' is not registered"):
        registry.register_method(registry.Method("x", "nope", "", {}, lambda a, c: None))
    with pytest.raises(ValueError, match="lower-case identifier"):
        registry.register_method(registry.Method("My-Sort", "ranking", "", {}, lambda a, c: None))
    with pytest.raises(ValueError, match="default of tau"):
        registry.register_method(registry.Method("bad_default", "ranking", "",
                                                 {"tau": registry.Arg(float, -1.0, positive=True)},
                                                 lambda a, c: None))
    with pytest.raises(TypeError, match="registry.Task"):
        registry.register_task("ranking")


@pytest.mark.parametrize("task,method", CASES)
def test_every_method_with_every_supported_variant_gives_a_finite_newton_step(task, method):
    """What the bench and the runner build, from the registry alone: the loss of the task's tiny
    protocol, on a random batch of the loss's shapes, through every variant the method supports."""
    spec = registry.task(task)
    m = registry.method(task, method)
    variants = [v for v in registry.variants() if v != "none" and m.supports(v)]
    assert variants, f"{method} supports no Newton variant"
    for variant in variants:
        overrides = {"variant": variant, "lam": 1.0}
        try:
            cfg = protocol_config(task, "tiny", method=method, **overrides)
        except ValueError:
            # A combination the method rules out (e.g. Gauss-Newton with an L1 path loss): the
            # check must say why, and the variant with another argument must work.
            cfg = protocol_config(task, "tiny", method=method, method_args={"loss": "l2"}, **overrides)
        gen = torch.Generator().manual_seed(0)
        y, target = spec.random_batch(cfg, 3, gen)
        assert y.shape[1:].numel() == spec.output_size(cfg)
        loss_fn, module = spec.build_loss(cfg, gen)

        class _LossOnly:  # what newton_loss_for needs of a task
            pass

        t = _LossOnly()
        t.loss_fn, t.curvature = loss_fn, lambda v: registry.curvature(m, module, v)
        newton = newton_loss_for(cfg, t, check_hessian="never")
        leaf = y.double().clone().requires_grad_(True)
        newton(leaf, target.double()).backward()
        assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0, (method, variant)


def test_report_labels_come_from_the_registry():
    from newton_lab.report import Group

    cfg = protocol_config("ranking", "tiny", method="odd_even", method_args={"sigmoid": "cauchy", "loss": "bce"},
                          variant="fisher", lam=0.1, damping="batch").to_dict()
    g = Group("k", cfg)
    assert g.label() == "odd_even(steepness=10,sigmoid=cauchy)"  # the legacy loss is not shown
    assert g.variant_label() == "NL-fisher λ=0.1 batch"
    cfg["method_args"]["loss"] = "bce_exact"  # the default since the exact BCE: shown
    assert g.label() == "odd_even(steepness=10,sigmoid=cauchy,loss=bce_exact)"


def _committed_configs() -> list:
    """The config.json files git tracks under results/ (runs in progress and git-ignored work
    folders — scripts/pto_anchor.py's runs, named by their cell — are not committed runs); every
    one under results/ where git is not available."""
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", "results"], cwd=ROOT, capture_output=True,
                             check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted((ROOT / "results").rglob("config.json"))
    return sorted(ROOT / f for f in out.split("\0") if f.endswith("/config.json"))


def test_committed_run_ids_are_unchanged():
    """Every committed run's directory name is the id its config.json computes now."""
    configs = _committed_configs()
    assert len(configs) > 100
    wrong = [(f.parent.name, cfg.run_id()) for f in configs
             for cfg in [RunConfig.from_dict(json.loads(f.read_text())).validate()]
             if cfg.run_id() != f.parent.name]
    assert not wrong, wrong[:5]
