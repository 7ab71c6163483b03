"""The command line: demo and bench run end to end (tiny settings) and reject bad arguments."""
import subprocess
import sys

import pytest

from newton_lab.cli import main
from newton_lab.demo import run_one


def test_demo_tiny_run_prints_table(capsys):
    rc = main(["demo", "--sets", "8", "--steps", "3", "--seeds", "1", "--lrs", "1", "--workers", "1",
               "--n", "4", "--relaxations", "neuralsort:tau=0.1"])
    assert rc == 0
    out = capsys.readouterr().out
    # The registry's names: relaxations as method specs, variants with the reports' labels.
    for label in ("baseline", "NL-hessian", "NL-gauss_newton", "NL-fisher"):
        assert f"| neuralsort:tau=0.1 | {label} |" in out


def test_demo_accepts_earlier_names_with_a_warning(capsys):
    with pytest.warns(FutureWarning, match="earlier name"):
        rc = main(["demo", "--sets", "4", "--steps", "1", "--seeds", "1", "--lrs", "1", "--workers", "1",
                   "--n", "3", "--relaxations", "cauchy-sorting-network", "--methods", "GD", "NL-Fisher"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| odd_even:sigmoid=cauchy | baseline |" in out and "| odd_even:sigmoid=cauchy | NL-fisher |" in out


def test_demo_rejects_unknown_names_listing_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--relaxations", "quicksort"])
    err = capsys.readouterr().err
    assert "quicksort" in err and "neuralsort" in err and "odd_even" in err


def test_demo_runs_are_deterministic():
    a = run_one("odd_even:sigmoid=cauchy", "gauss_newton", 1.0, 0, 5, 10, 5)
    b = run_one("odd_even:sigmoid=cauchy", "gauss_newton", 1.0, 0, 5, 10, 5)
    assert (a.exact, a.elementwise, a.loss) == (b.exact, b.elementwise, b.loss)


def test_newton_improves_over_gd_on_the_demo_problem():
    # The demo's claim at a reduced size: Gauss-Newton beats plain GD on a Cauchy sorting network.
    gd = max(run_one("odd_even:sigmoid=cauchy", "none", lr, 0, 6, 40, 30).exact for lr in (1.0, 10.0))
    nl = max(run_one("odd_even:sigmoid=cauchy", "gauss_newton", lr, 0, 6, 40, 30).exact for lr in (1.0, 10.0))
    assert nl > gd


@pytest.mark.parametrize("argv", [["demo", "--steps", "0"], ["demo", "--lrs", "-1"], ["demo", "--n", "1"],
                                  ["bench", "--repeats", "0"], ["nope"]])
def test_bad_arguments_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "newton_losses", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "bench" in out.stdout


def test_bench_quick_smoke(capsys):
    from newton_lab.bench import Case, VARIANTS, _pairwise, run_core

    rows = run_core([Case("pairwise n=4", 100, 4, _pairwise(4))], {"fisher": VARIANTS["fisher"]}, repeats=1)
    assert [r["variant"] for r in rows] == ["plain backward", "fisher"]
    assert rows[1]["ratio"] > 0


def test_a_missing_harness_dependency_is_named(tmp_path, monkeypatch, capsys):
    import json
    import sys

    from newton_lab.cli import main

    config = tmp_path / "sweep.json"
    config.write_text(json.dumps({"out": str(tmp_path / "runs"), "task": "ranking", "protocol": "tiny",
                                  "grid": [{"variant": ["none"], "seed": [0]}]}))
    for name in ("tqdm", "tqdm.auto"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    assert main(["sweep", str(config), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "'tqdm'" in err and "pip install -e ./lab" in err


def test_data_help_lists_its_subcommand(capsys):
    assert main(["data", "--help"]) == 0
    assert "newton-losses data show" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["data"])
    assert exc.value.code == 2
