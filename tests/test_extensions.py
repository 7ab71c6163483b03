"""Extending the package from outside, as a user would: a module of their own registers a new
sorting relaxation (a method of the ranking task) and a new curvature, and the harness trains,
sweeps (in worker processes) and reports with them — without editing the package.

Everything runs in subprocesses: registrations are global, and these must not leak into the
other tests' registries.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXTENSION = textwrap.dedent('''
    """A user's extension: a soft-rank relaxation and a diagonal empirical-Fisher curvature."""
    import torch

    from newton_losses import CurvatureEstimate, register_curvature
    from newton_lab import registry


    class SoftRankSort(torch.nn.Module):
        """P[i, k] = softmax_i(-(r_k - i)^2 / tau): item k spread over positions i around its
        soft rank r_k = sum_j sigmoid((s_k - s_j) / tau) - 1/2 (0-based, ascending)."""

        def __init__(self, tau):
            super().__init__()
            self.tau = tau

        def forward(self, s):
            r = torch.sigmoid((s.unsqueeze(-1) - s.unsqueeze(-2)) / self.tau).sum(-1) - 0.5
            pos = torch.arange(s.shape[-1], dtype=s.dtype, device=s.device)
            return torch.softmax(-(r.unsqueeze(-2) - pos.unsqueeze(-1)) ** 2 / self.tau, dim=-2)


    registry.register_method(registry.Method(
        name="soft_rank", task="ranking", summary="soft ranks spread over positions",
        args={"tau": registry.Arg(float, 0.5, positive=True)},
        build=lambda args, ctx: SoftRankSort(args["tau"]),
    ))


    def diagonal_fisher(ctx):
        """C = diag((1/N) sum_i g_i^2), one matrix for the batch."""
        return CurvatureEstimate(matrix=torch.diag(ctx.g.detach().double().pow(2).mean(0)))


    register_curvature("fisher_diag", diagonal_fisher)
''')


@pytest.fixture
def ext(tmp_path):
    (tmp_path / "my_extension.py").write_text(EXTENSION)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return tmp_path, env


def _run(args, env, cwd):
    out = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def test_the_extension_relaxation_and_curvature_are_right(ext):
    """The new relaxation sorts (τ → 0 gives the true permutation matrix) and the new curvature's
    Newton step is the hand-computed (diag(mean g²) + λI)^{-1} g."""
    tmp, env = ext
    code = textwrap.dedent('''
        import torch, my_extension
        from newton_losses import NewtonLoss, RankingLoss, permutation_matrix
        s = torch.tensor([[0.3, -1.0, 2.0, 0.9], [1.0, 0.0, -0.5, 0.2]], dtype=torch.float64)
        P = my_extension.SoftRankSort(0.01)(s)
        assert torch.allclose(P, permutation_matrix(s), atol=1e-6), P
        loss = RankingLoss(my_extension.SoftRankSort(0.7))
        y = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        target = permutation_matrix(torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
        leaf = y.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(leaf, target).sum(), leaf)
        d = g / (g.pow(2).mean(0) + 0.3)
        z = NewtonLoss(loss, curvature="fisher_diag", lam=0.3).target(y, target)
        assert torch.allclose(y - z, d, rtol=1e-10, atol=1e-12), (y - z, d)
        print("ok")
    ''')
    assert _run(["-c", code], env, tmp).stdout.strip().endswith("ok")


def test_train_sweep_and_report_through_the_harness(ext):
    tmp, env = ext
    cli = ["-m", "newton_lab"]
    # train: one tiny run with both extensions, named like the built-ins.
    out = _run(cli + ["train", "ranking", "--import", "my_extension", "--protocol", "tiny",
                      "--method", "soft_rank", "--arg", "tau=0.3", "--variant", "fisher_diag",
                      "--lam", "0.1", "--steps", "10", "--eval-every", "5", "--out", "runs",
                      "--no-progress"], env, tmp)
    (run_dir,) = (tmp / "runs").iterdir()
    assert run_dir.name.startswith("ranking-soft_rank-n5-fisher_diag-lam0.1-s0-")
    result = json.loads((run_dir / "result.json").read_text())
    assert 0.0 <= result["best"]["test"]["exact"] <= 1.0 and "exact" in out.stdout
    # sweep: the same extensions in two spawned worker processes (they import the module too).
    sweep = {"out": "sweep", "workers": 2, "task": "ranking", "protocol": "tiny",
             "imports": ["my_extension"], "base": {"method": "soft_rank", "steps": 10, "eval_every": 5},
             "grid": [{"variant": ["none"]}, {"variant": ["fisher_diag"], "lam": [0.1]}]}
    (tmp / "sweep.json").write_text(json.dumps(sweep))
    _run(cli + ["sweep", "sweep.json", "--no-progress", "--no-report"], env, tmp)
    assert sorted(p.name.split("-")[3] for p in (tmp / "sweep").iterdir() if p.is_dir()) == ["fisher_diag", "none"]
    # report: labels from the registry.
    out = _run(cli + ["report", "sweep", "--import", "my_extension", "--no-plots"], env, tmp)
    assert "| soft_rank(tau=0.5) | 5 | baseline |" in out.stdout
    assert "| soft_rank(tau=0.5) | 5 | NL-fisher_diag λ=0.1 |" in out.stdout


def test_without_the_import_the_names_are_unknown_and_listed(ext):
    tmp, env = ext
    out = subprocess.run([sys.executable, "-m", "newton_lab", "train", "ranking", "--protocol", "tiny",
                          "--method", "soft_rank"], env=env, cwd=tmp, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2
    assert "soft_rank" in out.stderr and "neuralsort, softsort, odd_even, bitonic" in out.stderr
    out = subprocess.run([sys.executable, "-m", "newton_lab", "train", "ranking", "--import", "no_such_module"],
                         env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "cannot import the extension module 'no_such_module'" in out.stderr
