"""The gradient picture: how the gradient of a relaxed sorting loss with respect to one score
behaves as that score moves, for the original loss and for the Newton loss.

n items with true order 0 < 1 < … < n−1 and scores ``y = (x, 1, 2, …, n−1)·spacing``: item 0
should be the smallest, and x sweeps across the others. For each x we plot ``∂ℓ/∂y_0`` of the
ranking BCE through a relaxation, and the first component of the Newton direction
``[(C + λI)^{-1} ∇ℓ]_0`` (Hessian and Gauss-Newton curvature). Each curve is divided by its
largest magnitude over the sweep, since the Newton direction lives on another scale: the plot
compares shapes — where the gradient vanishes (plateaus, the relaxation saturating) and
explodes, and how the Newton step evens that out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from newton_losses.curvature import CompositeLoss
from newton_lab.io import atomic_write
from newton_losses.newton import NewtonLoss
from newton_losses.sorting import DiffSortNet, NeuralSort, RankingLoss, SoftSort, permutation_matrix

__all__ = ["gradient_curves", "main"]

_RELAXATIONS = {
    "neuralsort": lambda n, t: NeuralSort(tau=t),
    "softsort": lambda n, t: SoftSort(tau=t),
    "logistic_dsn": lambda n, t: DiffSortNet("odd_even", n, steepness=t, sigmoid="logistic"),
    "cauchy_dsn": lambda n, t: DiffSortNet("odd_even", n, steepness=t, sigmoid="cauchy"),
}
_DEFAULT_PARAM = {"neuralsort": 0.1, "softsort": 0.1, "logistic_dsn": 10.0, "cauchy_dsn": 10.0}


def gradient_curves(relaxation: str, *, n: int = 5, param: float | None = None, lam: float = 0.1,
                    spacing: float = 1.0, points: int = 401, lo: float = -3.0, hi: float | None = None) -> dict:
    """x (points,), and ∂ℓ/∂y_0 for ``"gradient"``, ``"hessian"``, ``"gauss_newton"`` (float64).

    ``param``: τ for NeuralSort/SoftSort, steepness β for sorting networks.
    """
    if relaxation not in _RELAXATIONS:
        raise ValueError(f"relaxation must be one of {tuple(_RELAXATIONS)}; got {relaxation!r}")
    if n < 2:
        raise ValueError(f"n must be >= 2; got {n}")
    param = _DEFAULT_PARAM[relaxation] if param is None else param
    hi = (n + 2.0) * spacing if hi is None else hi
    rl = RankingLoss(_RELAXATIONS[relaxation](n, param))
    loss = CompositeLoss(rl.inner, rl.outer)
    x = torch.linspace(lo, hi, points, dtype=torch.float64)
    y = (torch.arange(n, dtype=torch.float64) * spacing).repeat(points, 1)
    y[:, 0] = x
    target = permutation_matrix(torch.arange(n).repeat(points, 1), dtype=torch.float64)
    yg = y.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(yg, target).sum(), yg)
    out = {"x": x, "gradient": g[:, 0]}
    for curvature in ("hessian", "gauss_newton"):
        newton = NewtonLoss(loss, curvature=curvature, lam=lam)
        out[curvature] = (y - newton.target(y, target))[:, 0]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="newton-losses plot gradients", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gradients.png", help="PNG file (default: gradients.png)")
    p.add_argument("--relaxations", default="neuralsort,logistic_dsn",
                   help=f"comma-separated, from {', '.join(_RELAXATIONS)}")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--lam", type=float, default=0.1)
    p.add_argument("--points", type=int, default=401)
    args = p.parse_args(argv)
    names = [r.strip() for r in args.relaxations.split(",") if r.strip()]
    if not names:
        p.error(f"--relaxations names none; choose from {', '.join(_RELAXATIONS)}")
    try:
        curves = {r: gradient_curves(r, n=args.n, lam=args.lam, points=args.points) for r in names}
    except ValueError as exc:
        print(f"newton-losses plot gradients: {exc}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.8), squeeze=False)
    for ax, r in zip(axes[0], names):
        c = curves[r]
        for key, label, style in (("gradient", "original loss  ∂ℓ/∂y₀", "-"),
                                  ("hessian", f"Newton loss, Hessian (λ={args.lam:g})", "--"),
                                  ("gauss_newton", f"Newton loss, Gauss-Newton (λ={args.lam:g})", ":")):
            v = c[key]
            ax.plot(c["x"], v / v.abs().max().clamp_min(1e-300), style, label=label)
        for k in range(1, args.n):
            ax.axvline(k, color="grey", lw=0.5, alpha=0.5)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(f"{r}, n={args.n} (item 0 should be smallest)")
        ax.set_xlabel("score y₀ of item 0 (other scores at 1, …, n−1)")
        ax.set_ylabel("gradient w.r.t. y₀ (÷ max |·|)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(args.out)
    with atomic_write(out) as f:
        fig.savefig(f, format="png", dpi=120)
    print(out)
    return 0
