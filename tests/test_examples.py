"""Every script in examples/ runs, as a subprocess, and prints what it claims.

Each example is run at a small size (its own flags) on one thread; each test then reads the
printed key lines back — the max differences against hand computations, the accuracy before and
after training — with tolerances no tighter than the printed digits and loose enough for
another CPU's rounding. The snippet of docs/SHORTEST_PATH.md is run as written. Examples that
need an optional package (diffsort, PyEPO) skip without it; the MNIST example uses the offline
stand-in digits when MNIST is not in the cache (nothing is downloaded). About 1.5 minutes on a
loaded 2-core machine; `python scripts/run_examples.py` runs them at full size and records their
output in docs/examples/.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, timeout: int = 300, cwd: Path = ROOT) -> str:
    """Run examples/NAME.py with ``args`` on one thread; return its stdout (it must exit 0)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"examples/{name}.py failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def number(pattern: str, text: str) -> float:
    """The float captured by ``pattern`` (one group) in ``text``."""
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in:\n{text}"
    return float(match.group(1))


def numbers(pattern: str, text: str) -> list[float]:
    found = re.findall(pattern, text)
    assert found, f"{pattern!r} not found in:\n{text}"
    return [float(x) for x in found]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_every_example_is_tested_and_listed():
    scripts = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for stem in scripts:
        assert stem in tested, f"examples/{stem}.py has no test_{stem} in this file"
        assert f"{stem}.py" in readme, f"examples/README.md does not list {stem}.py"


def test_quickstart():
    """The README's quickstart (tests/test_readme.py checks that it is this file verbatim)."""
    out = run_example("quickstart")
    assert number(r"sets ranked exactly: ([0-9.]+)%", out) > 50   # measured 91% (chance: 1/120)


def test_wrap_your_loss():
    out = run_example("wrap_your_loss")
    # float64 throughout: NewtonLoss's step and the hand-computed one agree to rounding (1e-15).
    assert number(r"max difference ([0-9.e+-]+)", out) < 1e-10
    for line in ("projection='abs'", "projection='tikhonov'", "fisher"):
        assert line in out
    assert number(r"(\d+) of 64 samples fell back", out) > 0          # the toy loss is non-convex
    start, end = map(float, re.search(r"mean loss ([0-9.]+) -> ([0-9.]+)", out).groups())
    assert end < 0.2 * start
    assert "every step a descent direction for every sample: True" in out


def test_rank_mnist():
    args = ["--steps", "150"]
    try:
        from newton_lab.data import DataUnavailableError, load_mnist

        load_mnist(download=False)
    except DataUnavailableError:
        args.append("--synthetic")
    out = run_example("rank_mnist", *args)
    (e0, a0), (e1, a1) = [tuple(map(float, m)) for m in re.findall(
        r"exact match +([0-9.]+)% +element-wise +([0-9.]+)%", out)]
    assert e0 < 5 and a0 < 30                  # untrained: about chance (1/120, 20%)
    assert e1 > e0 + 10 and a1 > a0 + 20       # measured after 150 steps: 28.6% / 62.2% (MNIST)


def test_shortest_path_terrain():
    out = run_example("shortest_path_terrain", "--steps", "40", "--maps", "400")
    rows = re.findall(r"exact path +([0-9.]+)% +cost-optimal +([0-9.]+)% +cost ratio ([0-9.]+)", out)
    (x0, o0, r0), (x1, o1, r1) = [tuple(map(float, r)) for r in rows]
    assert r1 < r0 - 0.1 and o1 > o0           # measured: cost ratio 1.547 -> 1.164, optimal 7 -> 14.5%
    assert "CG iterations" in out


def test_shortest_path_doc_snippet_runs_as_written():
    """The python block of docs/SHORTEST_PATH.md, executed as it stands."""
    text = (ROOT / "docs" / "SHORTEST_PATH.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "docs/SHORTEST_PATH.md", "exec"), namespace)
    assert namespace["loss"].ndim == 0 and namespace["costs"].grad is not None
    assert bool(namespace["costs"].grad.isfinite().all())


@pytest.mark.skipif(not _installed("diffsort"), reason="diffsort is not installed (pip install diffsort==0.2.0)")
def test_wrap_diffsort():
    out = run_example("wrap_diffsort")
    assert number(r"max \|X − Pᵀ\| = ([0-9.e+-]+)", out) < 1e-10
    assert "permutation_matrix(values)ᵀ: True" in out
    # relative differences of the Newton directions; measured 4e-7 (Hessian: rounding of entries
    # near 0 amplified by the BCE's 1/(P + ε)), 4e-10 and 5e-10
    for rel in numbers(r"(?:hessian|composite\(\)|ground truth\)) +([0-9.]+e[+-]\d+)", out):
        assert rel < 1e-4
    right = number(r"as values \(or permutation_matrix\(values\)\) +([0-9.]+)%", out)
    wrong = number(r"passed as P_true \(wrong\) +([0-9.]+)%", out)
    involutions = number(r"only the ([0-9.]+)% of sets whose permutation is its own inverse", out)
    assert right > 90 and wrong <= involutions + 0.5 and wrong < 40


def test_gauss_newton_composite():
    out = run_example("gauss_newton_composite", "--quick")
    for rel in numbers(r"max \|difference\| / max \|direction\| = ([0-9.e+-]+)", out):
        assert rel < 1e-8                      # float64: measured 2e-15 and 5e-15
    exact = {name: float(v) for name, v in re.findall(r"(gradient|hessian|gauss_newton)\b.*?exact +([0-9.]+)%", out)}
    assert set(exact) == {"gradient", "hessian", "gauss_newton"}
    assert exact["gauss_newton"] > exact["gradient"] + 20


def test_data_parallel():
    out = run_example("data_parallel", timeout=400)
    # float64 and the same global batch: the 2-process run is the 1-process run to rounding
    assert number(r"max weight difference with the all-reduce ([0-9.e+-]+)", out) < 1e-9
    first, local = numbers(r"first batch, Newton directions +max difference ([0-9.e+-]+)", out)
    assert first < 1e-9 and local > 1e-3       # without the all-reduce each rank has its own Fisher
    lams = re.search(r"all-reduced Fisher.*?λ·s added to the Fisher +([0-9.e+-]+), ([0-9.e+-]+) "
                     r"\(one process: ([0-9.e+-]+)\)", out, re.S).groups()
    assert len(set(lams)) == 1                 # the same damping on every process, printed to 4 digits


def test_precision_check():
    out = run_example("precision_check")
    naive = numbers(r"loss='bce' +flagged +(\d+) of 1000", out)
    exact = numbers(r"loss='bce_exact' +flagged +(\d+) of 1000", out)
    assert len(naive) == len(exact) == 3
    assert all(k > 10 for k in naive) and all(k == 0 for k in exact)
    assert "all of them confidently wrong: False" not in out
    assert number(r"naive BCE: \d+ batches checked, (\d+) sets flagged", out) > 0
    assert "exact BCE: 3 batches checked, 0 sets flagged, 0 RuntimeWarning" in out


@pytest.mark.skipif(not _installed("pyepo"), reason="PyEPO is not installed (pip install 'newton-losses[pyepo]')")
def test_pyepo_shortest_path():
    out = run_example("pyepo_shortest_path", "--epochs", "2", "--train", "300")
    rows = re.findall(r"test regret +([0-9.]+)% -> +([0-9.]+)%", out)
    assert len(rows) == 3
    for before, after in rows:
        assert float(after) < 0.6 * float(before)   # measured 64.6% -> 26-27% after 2 epochs


def test_train_your_own(tmp_path):
    out = run_example("train_your_own", "--steps", "60", "--out", str(tmp_path / "runs"))
    assert len(re.findall(r"^(?:none|fisher|hessian) +best validation accuracy", out, re.M)) == 3
    assert "interrupted:" in out and "| method | variant |" in out


def test_sorting_doc_first_snippet_runs_as_written():
    """The first python block of docs/SORTING.md (the Newton-loss recipe), executed as it stands."""
    text = (ROOT / "docs" / "SORTING.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    namespace: dict = {}
    exec(compile(code, "docs/SORTING.md", "exec"), namespace)
    grad = namespace["scores"].grad
    assert grad is not None and bool(grad.isfinite().all()) and float(grad.abs().max()) > 0


def test_precision_doc_snippet_runs_and_flags_the_naive_loss():
    text = (ROOT / "docs" / "PRECISION.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    namespace: dict = {}
    exec(compile(code, "docs/PRECISION.md", "exec"), namespace)
    cp, RankingLoss, NeuralSort = namespace["check_precision"], namespace["RankingLoss"], namespace["NeuralSort"]
    scores, values = namespace["scores"], namespace["values"]
    naive = cp(RankingLoss(NeuralSort(tau=1.0), loss="bce"), scores, values)
    exact = cp(RankingLoss(NeuralSort(tau=1.0)), scores, values)
    assert not naive.ok and float(naive.ratio.max()) > 1e3   # printed: 104 sick, ×9.5e+04
    assert exact.ok
