"""Reports on synthetic result files: the table, Welch p-values against scipy, files written."""
import csv
import math
import json

import numpy as np
import pytest
from scipy import stats

from newton_lab.config import protocol_config
from newton_lab.report import build_report, holm, welch

EXACT = {"none": [0.70, 0.72, 0.71, 0.69], "fisher": [0.80, 0.83, 0.79, 0.82], "hessian": [0.71, 0.69, 0.73, 0.70]}


def _write_run(root, variant, seed, exact, lam=0.1):
    cfg = protocol_config("ranking", "quick", variant=variant, lam=lam if variant != "none" else 0.0, seed=seed)
    _write_run_cfg(root, cfg, exact)


def _write_run_cfg(root, cfg, exact):
    d = root / cfg.run_id()
    d.mkdir(parents=True)
    records = []
    for step in (1000, 2000, 3000):
        acc = exact * step / 3000
        records.append({"step": step, "train_loss": 0.1, "val": {"exact": acc, "elementwise": acc + 0.1},
                        "test": {"exact": acc, "elementwise": acc + 0.1}, "time": {"step_s": 0.01}})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    best = {"step": 3000, "val": records[-1]["val"], "test": records[-1]["test"]}
    result = {"status": "finished", "config": cfg.to_dict(), "best": best, "final": records[-1],
              "time": {"step_s": 0.01, "newton_s": 0.002 if cfg.variant != "none" else 0.0, "network_s": 0.008,
                       "total_s": 30.0}}
    (d / "result.json").write_text(json.dumps(result))
    (d / "config.json").write_text(cfg.to_json())


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for variant, values in EXACT.items():
        for seed, v in enumerate(values):
            _write_run(root, variant, seed, v)
    for seed, v in enumerate([0.75, 0.77, 0.76]):  # an ablation point: fisher at another λ
        _write_run(root, "fisher", seed, v, lam=1.0)
    return root


def test_welch_matches_scipy():
    a, b = np.array(EXACT["fisher"]), np.array(EXACT["none"])
    expected = stats.ttest_ind(a, b, equal_var=False)
    # Independent formula: t = Δ / sqrt(s_a²/n_a + s_b²/n_b).
    t_manual = (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / 4 + b.var(ddof=1) / 4)
    t, p = welch(a, b)
    assert t == pytest.approx(t_manual) and p == pytest.approx(expected.pvalue)
    assert np.isnan(welch(a[:1], b)[1])


def test_report_table_and_files(runs, tmp_path):
    out = tmp_path / "report"
    report = build_report([runs], out=out)
    md = report.markdown
    # Baseline 70.5 ± 1.3 (80.5 ± 1.3), like the paper: exact match with element-wise in parentheses.
    assert "| neuralsort(tau=1,loss=bce_exact) | 5 | baseline | 4 | 70.5 ± 1.3 (80.5 ± 1.3) |" in md
    rows = {(r["variant"], r["lam"]): r for r in report.groups}
    p_fisher = stats.ttest_ind(EXACT["fisher"], EXACT["none"], equal_var=False).pvalue
    p_hessian = stats.ttest_ind(EXACT["hessian"], EXACT["none"], equal_var=False).pvalue
    assert rows[("fisher", 0.1)]["welch_p"] == pytest.approx(p_fisher)
    assert rows[("hessian", 0.1)]["welch_p"] == pytest.approx(p_hessian)
    assert rows[("fisher", 0.1)]["significant"] and not rows[("hessian", 0.1)]["significant"]
    assert f"{p_fisher:.3g}*" in md and f"{p_hessian:.3g} |" in md
    assert rows[("fisher", 0.1)]["delta_vs_baseline"] == pytest.approx(100 * (0.81 - 0.705))
    for name in ("report.md", "summary.csv", "summary.json", "runs.csv", "curves.png", "lambda.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 15
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary[0]["exact_values"]) == sorted(EXACT["none"])


def test_holm_matches_the_step_down_procedure():
    # Hand example: m = 3, p = (0.01, 0.04, 0.03) → 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04).
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # Independent characterization: the adjusted p is below α exactly when Holm's step-down test
    # at α rejects (sorted p₍ₖ₎ ≤ α/(m−k+1) for every k up to that one).
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 9)) ** 2
        adj = holm(p)
        for alpha in (0.001, 0.01, 0.05, 0.1):
            order = np.argsort(p)
            rejected = np.zeros(len(p), bool)
            for k, i in enumerate(order):
                if p[i] > alpha / (len(p) - k):
                    break
                rejected[i] = True
            assert np.array_equal(adj <= alpha, rejected)
        assert np.all(adj >= p) and np.all(adj <= 1)
    # NaN (no test) is not a comparison: it stays NaN and does not inflate the others.
    out = holm([0.01, float("nan"), 0.02])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.02])
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


def test_report_marks_what_survives_holm(runs):
    for seed, v in enumerate([0.72, 0.74, 0.73]):  # p ≈ 0.035 alone, not after the adjustment
        _write_run(runs, "fisher", seed, v, lam=10.0)
    report = build_report([runs], plots=False)
    rows = [r for r in report.groups if r["variant"] != "none"]
    expected = holm([r["welch_p"] for r in rows])  # the four comparisons of this table
    assert [r["welch_p_holm"] for r in rows] == pytest.approx(list(expected))
    fisher = next(r for r in rows if (r["variant"], r["lam"]) == ("fisher", 0.1))
    assert fisher["significant_holm"] and f"{fisher['welch_p_holm']:.3g}†" in report.markdown
    assert "| p | p Holm |" in report.markdown
    baseline = next(r for r in report.groups if r["variant"] == "none")
    assert np.isnan(baseline["welch_p_holm"]) and not baseline["significant_holm"]
    # A row significant only before the adjustment: * without †.
    fisher10 = next(r for r in rows if (r["variant"], r["lam"]) == ("fisher", 10.0))
    assert fisher10["significant"] and not fisher10["significant_holm"]
    for r in rows:
        cell = f"{r['welch_p']:.3g}{'*' if r['welch_p'] < 0.05 else ''} | {r['welch_p_holm']:.3g}"
        assert cell + ("†" if r["welch_p_holm"] < 0.05 else "") + " |" in report.markdown


def test_report_says_which_machines_its_timings_come_from(runs):
    assert "machine kind" not in build_report([runs], plots=False).markdown  # none recorded
    for i, d in enumerate(sorted(runs.glob("*/"))):
        result = json.loads((d / "result.json").read_text())
        result["machine"] = f"CPU {'AB'[i % 2]}; 2 logical CPUs; torch 2.13.0+cpu (1 threads); Python 3.11.7"
        (d / "result.json").write_text(json.dumps(result))
    md = build_report([runs], plots=False).markdown
    assert ("ms/step mixes machine kinds: CPU A, 2 logical CPUs, torch 2.13.0+cpu (1 threads) (8 runs); "
            "CPU B, 2 logical CPUs, torch 2.13.0+cpu (1 threads) (7 runs).") in md
    # One kind, and runs without a record: said as such, not as a mix.
    for d in sorted(runs.glob("*/"))[:3]:
        result = json.loads((d / "result.json").read_text())
        result.pop("machine")
        (d / "result.json").write_text(json.dumps(result))
    for d in sorted(runs.glob("*/"))[3:]:
        result = json.loads((d / "result.json").read_text())
        result["machine"] = "CPU A; 2 logical CPUs; Python 3.11.7"
        (d / "result.json").write_text(json.dumps(result))
    md = build_report([runs], plots=False).markdown
    assert "Machine: CPU A, 2 logical CPUs (12 runs); 3 runs without a record." in md


def test_report_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        build_report([tmp_path])


def test_groups_differing_beyond_method_get_distinct_labels(tmp_path):
    root = tmp_path / "runs"
    for seed, v in enumerate([0.5, 0.6]):
        _write_run(root, "none", seed, v)
    cfg = protocol_config("ranking", "quick", steps=1000, seed=0)
    d = root / cfg.run_id()
    d.mkdir()
    result = json.loads(next(root.glob("*/result.json")).read_text())
    result["config"] = cfg.to_dict()
    (d / "result.json").write_text(json.dumps(result))
    md = build_report([root], plots=False).markdown
    assert "| neuralsort(tau=1,loss=bce_exact), steps=1000 | 5 | baseline | 1 |" in md
    assert "| neuralsort(tau=1,loss=bce_exact), steps=30000 | 5 | baseline | 2 |" in md


def test_results_document_is_rendered_from_runs(runs, tmp_path, monkeypatch):
    from newton_lab.cli import main as cli_main
    from newton_lab.results_doc import render_results

    monkeypatch.chdir(tmp_path)
    template = tmp_path / "T.md"
    template.write_text("# Results\n\nProse stays.\n<!-- an ordinary comment -->\n\n"
                        "<!-- report main: runs -->\n\n<!-- runs: runs -->\n")
    text = render_results(template, tmp_path / "RESULTS.md")
    assert text.startswith("# Results\n\nProse stays.\n<!-- an ordinary comment -->")
    assert "| neuralsort(tau=1,loss=bce_exact) | 5 | NL-fisher λ=0.1 | 4 |" in text
    assert "![test accuracy over steps (mean, 95% band)](docs/results/main/curves.png)" in text
    assert "![accuracy over λ](docs/results/main/lambda.png)" in text
    assert "15 finished runs, 0.1 h of training wall time in total. Machines (the one that finished each run): not recorded" in text
    assert (tmp_path / "docs/results/main/summary.csv").exists()
    assert (tmp_path / "RESULTS.md").read_text() == text
    # The same through the command line; a directive without runs is an error naming the line.
    assert cli_main(["report", "--template", str(template), "--results", "R2.md"]) == 0
    assert (tmp_path / "R2.md").read_text() == text
    (tmp_path / "empty").mkdir()
    template.write_text("x\n<!-- report bad: empty -->\n")
    with pytest.raises(ValueError, match="T.md:2: no finished runs"):
        render_results(template, tmp_path / "R3.md")
    assert not (tmp_path / "R3.md").exists()
    template.write_text("<!-- report: runs -->\n")
    with pytest.raises(ValueError, match="malformed directive"):
        render_results(template, tmp_path / "R3.md")
    # A later directive that fails leaves no figures of earlier ones behind.
    template.write_text("<!-- report early: runs -->\n<!-- report late: empty -->\n")
    with pytest.raises(ValueError, match="T.md:2: no finished runs"):
        render_results(template, tmp_path / "R3.md")
    assert not (tmp_path / "docs/results/early").exists()
    # --no-plots and --alpha reach the reports.
    template.write_text("<!-- report np: runs -->\n")
    assert cli_main(["report", "--template", str(template), "--results", "R4.md", "--no-plots",
                     "--alpha", "0.01"]) == 0
    assert not (tmp_path / "docs/results/np/curves.png").exists() and "curves.png" not in (tmp_path / "R4.md").read_text()
    assert "p < 0.01" in (tmp_path / "R4.md").read_text()


def test_run_paths_may_be_glob_patterns(runs, tmp_path):
    from newton_lab.report import find_runs

    every = find_runs([runs])
    some = find_runs([str(runs / "*fisher*")])
    assert 0 < len(some) < len(every) and all("fisher" in str(d) for d, _ in some)
    with pytest.raises(ValueError, match="no run directory matches"):
        find_runs([str(runs / "*nothing*")])


def test_results_document_includes_files(tmp_path, monkeypatch):
    from newton_lab.results_doc import render_results

    monkeypatch.chdir(tmp_path)
    (tmp_path / "table.md").write_text("| a |\n|---|\n| 1 |\n")
    (tmp_path / "T.md").write_text("before\n<!-- include: table.md -->\nafter\n")
    assert render_results(tmp_path / "T.md", tmp_path / "R.md") == "before\n| a |\n|---|\n| 1 |\nafter\n"
    (tmp_path / "T.md").write_text("<!-- include: missing.md -->\n")
    with pytest.raises(ValueError, match="T.md:1: include: expected one existing file"):
        render_results(tmp_path / "T.md", tmp_path / "R.md")


def test_results_document_counts_a_sweeps_progress(runs, tmp_path, monkeypatch):
    from newton_lab.results_doc import render_results

    monkeypatch.chdir(tmp_path)
    # Seeds 0–3 of the baseline are finished runs of the fixture; 4 is started, 5 not.
    spec = {"out": str(runs), "protocol": "quick", "grid": {"variant": ["none"], "seed": [0, 1, 2, 3, 4, 5]}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    started = runs / protocol_config("ranking", "quick", seed=4).run_id()
    started.mkdir()
    (started / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "T.md").write_text("<!-- progress: s.json -->\n")
    text = render_results(tmp_path / "T.md", tmp_path / "R.md")
    assert "| `s.json` | 6 | 4 | 0 | 1 | 1 |" in text
    (tmp_path / "T.md").write_text("<!-- progress: runs -->\n")
    with pytest.raises(ValueError, match="T.md:1: progress: 'runs' is not a sweep configuration"):
        render_results(tmp_path / "T.md", tmp_path / "R2.md")
    assert not (tmp_path / "R2.md").exists()


def test_paper_table_sets_our_cells_beside_the_papers(runs, tmp_path, monkeypatch):
    from newton_lab.paper import PAPER_RANKING, paper_table, relaxation_name
    from newton_lab.results_doc import render_results

    assert relaxation_name("odd_even", {"sigmoid": "cauchy"}) == "Cauchy DSN"
    assert relaxation_name("odd_even", {}) == "Logistic DSN" and relaxation_name("bitonic", {}) is None
    rows = build_report([str(runs / "*-none-*"), str(runs / "*-lam0.1-*")]).groups
    lines = paper_table(rows)
    header = lines[0]
    assert header.startswith("| relaxation | n | paper baseline | ours baseline | paper NL-Hessian |")
    ns5 = next(line for line in lines if line.startswith("| NeuralSort | 5 |"))
    cells = [c.strip() for c in ns5.strip("|").split("|")]
    # baseline 70.5 ± 1.3 over 4 seeds; Fisher 81.0 ± 1.8, significant; the per-sample Hessian
    # is not the paper's (batch-averaged) Hessian column, so that column stays empty.
    assert cells[2:] == ["71.3", "70.5 ± 1.3 (4)", "≈ 83", "—", "83.9", "81.0 ± 1.8*† (4)", "—"]
    # Every paper row is shown even without our runs, in the paper's order.
    names = [line.split("|")[1].strip() for line in lines[2:2 + len(PAPER_RANKING)]]
    assert names == ["NeuralSort", "NeuralSort", "SoftSort", "Logistic DSN", "Cauchy DSN"]
    # Without the Holm mark when only the unadjusted p is below α.
    fisher_row = next(r for r in rows if r["variant"] == "fisher")
    fisher_row["welch_p_holm"] = 0.2
    assert "| 81.0 ± 1.8* (4) |" in "\n".join(paper_table(rows))
    # The caption names which rows each Newton setting belongs to.
    assert "Newton settings: fisher λ=0.1 (NeuralSort n=5)" in lines[-1]
    # Two λ of one variant in one cell: a clear error, not a silent pick.
    with pytest.raises(ValueError, match="two groups of runs for NeuralSort n=5 fisher"):
        paper_table(build_report([runs]).groups)
    # Through the results document, checked before anything is written.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "T.md").write_text("<!-- paper: runs/*-none-* runs/*-lam0.1-* -->\n")
    assert "| NeuralSort | 5 | 71.3 | 70.5 ± 1.3 (4) |" in render_results(tmp_path / "T.md", tmp_path / "R.md")
    (tmp_path / "T.md").write_text("<!-- report a: runs -->\n<!-- paper: runs -->\n")
    with pytest.raises(ValueError, match="T.md:2: two groups"):
        render_results(tmp_path / "T.md", tmp_path / "R2.md")
    assert not (tmp_path / "R2.md").exists() and not (tmp_path / "docs/results/a").exists()


def test_clipped_baseline_is_compared_with_the_plain_one(runs, tmp_path):
    from newton_lab.paper import paper_table

    for seed, v in enumerate([0.74, 0.75, 0.73]):
        cfg = protocol_config("ranking", "quick", variant="none", seed=seed, clip_grad_norm=1.0)
        assert cfg.run_id().startswith("ranking-neuralsort-bce_exact-n5-none-clip1-s")
        _write_run_cfg(runs, cfg, v)
    report = build_report([runs])
    row = next(r for r in report.groups if r["config"]["clip_grad_norm"] == 1.0)
    assert row["delta_vs_baseline"] == pytest.approx(100 * (0.74 - 0.705))
    assert "| neuralsort(tau=1,loss=bce_exact) | 5 | baseline clip 1 | 3 |" in report.markdown
    # Not one of the paper's settings: the paper table leaves it out instead of failing.
    assert any(line.startswith("| NeuralSort | 5 | 71.3 | 70.5 ± 1.3 (4) |")
               for line in paper_table(build_report([str(runs / "*-none-*"), str(runs / "*-lam0.1-*")]).groups))


def test_float64_loss_baseline_is_a_control_of_the_plain_one(runs, tmp_path):
    from newton_lab.paper import paper_table

    for seed, v in enumerate([0.78, 0.80, 0.79]):
        cfg = protocol_config("ranking", "quick", variant="none", seed=seed, loss_dtype="float64")
        _write_run_cfg(runs, cfg, v)
    report = build_report([runs], out=tmp_path / "rep", plots=False)
    row = next(r for r in report.groups if r["loss_dtype"] == "float64")
    assert row["delta_vs_baseline"] == pytest.approx(100 * (0.79 - 0.705))
    assert row["welch_p"] == pytest.approx(stats.ttest_ind([0.78, 0.80, 0.79], EXACT["none"], equal_var=False).pvalue)
    assert "| neuralsort(tau=1,loss=bce_exact) | 5 | baseline float64 loss | 3 |" in report.markdown
    # A Newton loss in float64 is compared with the float64 baseline (the same loss).
    for seed, v in enumerate([0.81, 0.80, 0.82]):
        _write_run_cfg(runs, protocol_config("ranking", "quick", variant="fisher", lam=0.1, seed=seed,
                                             loss_dtype="float64"), v)
    report = build_report([runs], out=tmp_path / "rep", plots=False)
    row = next(r for r in report.groups if r["loss_dtype"] == "float64" and r["variant"] == "fisher")
    assert row["delta_vs_baseline"] == pytest.approx(100 * (0.81 - 0.79))
    assert "| neuralsort(tau=1,loss=bce_exact) | 5 | NL-fisher λ=0.1 float64 loss | 3 |" in report.markdown
    runs_csv = list(csv.DictReader(open(tmp_path / "rep" / "runs.csv")))
    assert sorted({r["loss_dtype"] for r in runs_csv}) == ["", "float64"]
    # Not one of the paper's settings: the paper table keeps the plain baseline.
    assert any(line.startswith("| NeuralSort | 5 | 71.3 | 70.5 ± 1.3 (4) |")
               for line in paper_table(build_report([str(runs / "*-none-*"), str(runs / "*-lam0.1-*")]).groups))


def test_unfinished_runs_are_named_also_for_glob_paths(runs, tmp_path):
    cfg = protocol_config("ranking", "quick", variant="fisher", lam=0.1, seed=9)
    d = runs / cfg.run_id()
    d.mkdir()
    (d / "config.json").write_text(cfg.to_json())  # started, not finished
    for paths in ([runs], [str(runs / "*-fisher-*")]):
        md = build_report(paths).markdown
        assert "Not in the table: 1 unfinished run(s)" in md and cfg.run_id() in md


def test_summary_rows_tell_controls_apart(runs, tmp_path):
    for seed, v in enumerate([0.74, 0.75]):
        _write_run_cfg(runs, protocol_config("ranking", "quick", seed=seed, clip_grad_norm=1.0), v)
    build_report([runs], out=tmp_path / "rep", plots=False)
    rows = list(csv.DictReader(open(tmp_path / "rep" / "summary.csv")))
    labels = sorted(r["variant_label"] for r in rows if r["variant"] == "none")
    assert labels == ["baseline", "baseline clip 1"]
    assert {r["clip_grad_norm"] for r in rows if r["variant_label"] == "baseline clip 1"} == {"1.0"}


def test_a_run_whose_configuration_no_longer_validates_is_named(runs):
    bad = next(runs.glob("*-none-s0-*"))
    result = json.loads((bad / "result.json").read_text())
    result["config"]["lr"] = 1e38  # valid when written, rejected by a newer rule
    (bad / "result.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match=f"{bad.name}: its configuration cannot be read"):
        build_report([runs])


def test_a_sweep_file_selects_exactly_its_runs(tmp_path, monkeypatch):
    """A sweep file among the report's paths stands for the runs it defines (that exist): a run
    of another configuration in the same directory is not picked up."""
    from newton_lab.report import find_runs

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    spec = {"out": str(out), "task": "ranking", "protocol": "tiny",
            "grid": {"method": ["neuralsort"], "variant": ["fisher"], "lam": [1.0], "seed": [0, 1]}}
    (tmp_path / "sweep.json").write_text(json.dumps(spec))
    wanted = [protocol_config("ranking", "tiny", method="neuralsort", variant="fisher", lam=1.0, seed=s)
              for s in (0, 1)]
    other = protocol_config("ranking", "tiny", method="neuralsort", variant="fisher", lam=0.1, seed=0)
    for cfg in wanted[:1] + [other]:  # seed 1 of the sweep never ran: no directory
        d = out / cfg.run_id()
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"config": cfg.to_dict()}))
    found = [d.name for d, _ in find_runs([str(tmp_path / "sweep.json")])]
    assert found == [wanted[0].run_id()]


def test_shortest_path_table_explains_its_cost_ratio(tmp_path):
    """The shortest-path table adds a cost-ratio cell; its caption says what it is (the ranking
    table's does not mention it)."""
    root = tmp_path / "runs"
    for seed, (exact, ratio) in enumerate([(0.40, 1.02), (0.50, 1.01)]):
        cfg = protocol_config("shortest_path", "tiny", method="bf_for", seed=seed)
        _write_run_cfg(root, cfg, exact)
        f = root / cfg.run_id() / "result.json"
        result = json.loads(f.read_text())
        for part in ("val", "test"):
            result["best"][part].update(cost_optimal=0.6, cost_ratio=ratio)
        f.write_text(json.dumps(result))
    md = build_report([root]).markdown
    assert "cost ratio: the true cost of the predicted path over the optimal path's" in md
    row = next(line for line in md.splitlines() if line.startswith("| bf_for("))
    assert "cost ratio 1.015" in row
    ranking = tmp_path / "ranking"
    _write_run(ranking, "none", 0, 0.7)
    assert "cost ratio" not in build_report([ranking]).markdown


def test_inline_values_quote_the_report_they_name(runs, tmp_path, monkeypatch):
    from newton_lab.results_doc import render_results

    monkeypatch.chdir(tmp_path)
    report = build_report([runs], plots=False)
    fisher = next(r for r in report.groups if r["variant"] == "fisher" and r["lam"] == 0.1)
    # Independent of the table's formatting: the numbers from the fixture's values and scipy.
    a, b = np.array(EXACT["fisher"]), np.array(EXACT["none"])
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    template = tmp_path / "T.md"
    template.write_text("Fisher: {{value main *fisher-lam0.1-* mean}} ± {{value main *fisher-lam0.1-* std}}%, "
                        "Δ {{value main *fisher-lam0.1-* delta}}, p = {{value main *fisher-lam0.1-* p}}, "
                        "p Holm {{ value main *fisher-lam0.1-* p_holm }}, "
                        "{{value main *fisher-lam0.1-* seeds}} seeds, last {{value main *fisher-lam0.1-* last}}.\n"
                        "<!-- report main: runs -->\n")
    text = render_results(template, tmp_path / "R.md", figures=tmp_path / "figures", plots=False)
    first = text.splitlines()[0]
    assert first == (f"Fisher: {100 * a.mean():.1f} ± {100 * a.std(ddof=1):.1f}%, "
                     f"Δ +{100 * (a.mean() - b.mean()):.1f}, p = {p:.2g}, "
                     f"p Holm {fisher['welch_p_holm']:.2g}, 4 seeds, last {100 * a.mean():.1f}.")
    assert fisher["welch_p_holm"] > p  # Holm over this table's three comparisons
    # Errors name what was wrong and write nothing.
    for token, message in [("{{value main *fisher* mean}}", "matches the runs of 2 rows"),
                           ("{{value main *nothing* mean}}", "matches the runs of 0 rows"),
                           ("{{value other *fisher-lam1-* mean}}", "no '<!-- report other"),
                           ("{{value main *fisher-lam1-* median}}", "malformed inline value"),
                           ("{{value main *-none-* p}}", "has no p")]:
        template.write_text(f"x {token}\n<!-- report main: runs -->\n")
        with pytest.raises(ValueError, match=message):
            render_results(template, tmp_path / "R2.md")
        assert not (tmp_path / "R2.md").exists() and not (tmp_path / "docs/results/main").exists()
    # A negative Δ starts with a Unicode minus (no Markdown list item at a line start).
    for seed, v in enumerate([0.60, 0.62]):
        _write_run(runs, "hessian", seed, v, lam=2.0)
    template.write_text("{{value main *-hessian-lam2-* delta}}\n<!-- report main: runs -->\n")
    delta = 100 * (0.61 - np.mean(EXACT["none"]))
    assert render_results(template, tmp_path / "R3.md", figures=tmp_path / "f3", plots=False).startswith(
        f"−{abs(delta):.1f}\n")
    template.write_text("<!-- report main: runs -->\n<!-- report main: runs -->\n")
    with pytest.raises(ValueError, match="used twice"):
        render_results(template, tmp_path / "R2.md")


def test_the_exact_bce_baseline_is_a_control_of_the_naive_one(tmp_path):
    """The exact BCE is the naive BCE computed another way: its baseline is compared with the
    naive baseline (as a float64-loss baseline is), and a Newton loss on it with its own."""
    runs = tmp_path / "runs"
    for loss, variant, values in (("bce", "none", [0.60, 0.62, 0.61]), ("bce_exact", "none", [0.70, 0.72, 0.71]),
                                  ("bce_exact", "fisher", [0.73, 0.74, 0.72])):
        for seed, v in enumerate(values):
            cfg = protocol_config("ranking", "quick", method_args={"loss": loss}, variant=variant,
                                  lam=0.1 if variant != "none" else 0.0, seed=seed)
            _write_run_cfg(runs, cfg, v)
    rows = {(r["method_args"]["loss"], r["variant"]): r for r in build_report([runs], plots=False).groups}
    assert math.isnan(rows[("bce", "none")]["delta_vs_baseline"])  # the plain baseline
    assert rows[("bce_exact", "none")]["delta_vs_baseline"] == pytest.approx(10.0)
    assert rows[("bce_exact", "fisher")]["delta_vs_baseline"] == pytest.approx(2.0)


def test_a_table_mixing_the_naive_and_the_exact_bce_says_which_rows_are_naive(tmp_path):
    runs = tmp_path / "runs"
    for loss in ("bce", "bce_exact"):
        for seed in (0, 1):
            cfg = protocol_config("ranking", "quick", method_args={"loss": loss}, seed=seed)
            _write_run_cfg(runs, cfg, 0.6 + 0.01 * seed)
    report = build_report([runs], plots=False)
    assert "Rows without loss= in their method have loss=bce." in report.markdown
    assert "spikes" not in report.markdown and "spikes" not in report.groups[0]  # old-style runs
