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
from types import SimpleNamespace

import torch

from newton_losses import NewtonLoss
from newton_losses.sorting import permutation_matrix

from newton_lab import registry
from newton_lab.io import atomic_write

__all__ = ["gradient_curves", "main", "DEFAULT_RELAXATIONS"]

#: What ``plot gradients`` draws by default: NeuralSort at a low temperature and the logistic
#: odd-even sorting network (method specs of the ranking task, :mod:`newton_lab.registry`).
DEFAULT_RELAXATIONS = ("neuralsort:tau=0.1", "odd_even")


def gradient_curves(relaxation: str, *, n: int = 5, lam: float = 0.1, spacing: float = 1.0,
                    points: int = 401, lo: float = -3.0, hi: float | None = None) -> dict:
    """x (points,), and ∂ℓ/∂y_0 for ``"gradient"``, ``"hessian"``, ``"gauss_newton"`` (float64).

    ``relaxation``: a ranking method spec, ``NAME[:KEY=VALUE,...]`` (e.g. ``"neuralsort:tau=0.1"``,
    ``"odd_even:sigmoid=cauchy"``), with the ranking loss its ``loss`` argument names.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2; got {n}")
    name, args = registry.parse_spec("ranking", relaxation)
    cfg = SimpleNamespace(method=name, method_args=args, n=n, variant="none")
    hi = (n + 2.0) * spacing if hi is None else hi
    loss, _ = registry.task("ranking").build_loss(cfg, None)
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
    p.add_argument("--relaxations", nargs="+", default=list(DEFAULT_RELAXATIONS), metavar="SPEC",
                   help="ranking method specs NAME[:KEY=VALUE,...] (default: "
                        f"{' '.join(DEFAULT_RELAXATIONS)}); methods: {', '.join(registry.methods('ranking'))}")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--lam", type=float, default=0.1)
    p.add_argument("--points", type=int, default=401)
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers relaxations or curvatures of your own)")
    args = p.parse_args(argv)
    # A token without ':' may be an earlier comma-separated list ("neuralsort,logistic_dsn").
    names = [r.strip() for tok in args.relaxations
             for r in (tok.split(",") if ":" not in tok else [tok]) if r.strip()]
    if not names:
        p.error(f"--relaxations names none; methods: {', '.join(registry.methods('ranking'))}")
    try:
        registry.import_extensions(args.imports)
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
