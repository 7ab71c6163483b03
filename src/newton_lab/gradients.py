"""The gradient picture: how the gradient of a relaxed sorting loss with respect to one score
behaves as that score moves, for the original loss and for the Newton loss.

n items with true order 0 < 1 < … < n−1 and scores ``y = (x, 1, 2, …, n−1)·spacing``: item 0
should be the smallest, and x sweeps across the others. For each x we plot ``∂ℓ/∂y_0`` of the
ranking BCE through a relaxation, and the first component of the Newton direction
``[(C + λI)^{-1} ∇ℓ]_0`` (Hessian and Gauss-Newton curvature). Each curve is divided by its
largest magnitude over the sweep, since the Newton direction lives on another scale: the plot
compares shapes — where the gradient vanishes (plateaus, the relaxation saturating) and
explodes, and how the Newton step evens that out.

The figure (:func:`plot_gradient_curves`) draws each curve smoothed by a centred rolling mean
over a window in score units (``smooth``; the raw values stay faint behind it), on a symmetric
log scale when the curves span several decades (the gradient dies off exponentially where the
relaxation saturates), with one legend below the panels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from newton_losses import NewtonLoss
from newton_losses.sorting import permutation_matrix

from newton_lab import registry
from newton_lab.io import atomic_write

__all__ = ["gradient_curves", "smooth_curve", "plot_gradient_curves", "main", "DEFAULT_RELAXATIONS",
           "SERIES"]

#: What ``plot gradients`` draws by default: NeuralSort at a low temperature and the logistic
#: odd-even sorting network (method specs of the ranking task, :mod:`newton_lab.registry`).
DEFAULT_RELAXATIONS = ("neuralsort:tau=0.1", "odd_even")

#: The curves of each panel: key of :func:`gradient_curves`, legend label (``{lam}`` filled in),
#: colour (Okabe-Ito, distinguishable with colour-blindness and in greyscale) and line style.
SERIES = (("gradient", "original loss: ∂ℓ/∂y₀", "#000000", "-"),
          ("hessian", "Newton loss, Hessian (λ={lam:g}): [(|H|+λI)⁻¹∇ℓ]₀", "#0072B2", "--"),
          ("gauss_newton", "Newton loss, Gauss-Newton (λ={lam:g}): [(G+λI)⁻¹∇ℓ]₀", "#D55E00", "-."))


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


def smooth_curve(values, window: int, *, stat: str = "median") -> np.ndarray:
    """Centred rolling ``stat`` (``"median"`` or ``"mean"``) of a 1-d series over ``window`` points.

    An even ``window`` is rounded up to the next odd number; near the ends the window shrinks to
    the points there are (no padding). ``window <= 1`` returns the values unchanged (float64).
    """
    if stat not in ("median", "mean"):
        raise ValueError(f"stat must be 'median' or 'mean'; got {stat!r}")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if window <= 1 or v.size < 2:
        return v.copy()
    half = int(window) // 2
    padded = np.pad(v, half, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return (np.nanmedian if stat == "median" else np.nanmean)(windows, axis=1)


def _window_points(x: np.ndarray, smooth: float) -> int:
    """Odd number of points that spans ``smooth`` score units on the grid ``x`` (1: no smoothing)."""
    if smooth <= 0 or x.size < 3:
        return 1
    dx = float(x[-1] - x[0]) / (x.size - 1)
    w = int(round(smooth / dx)) if dx > 0 else 1
    w = min(w, x.size)
    return w + 1 - w % 2 if w >= 3 else 1


def plot_gradient_curves(curves: dict, *, n: int, lam: float, smooth: float = 0.5,
                         stat: str = "mean", yscale: str = "auto", linthresh: float = 1e-3,
                         spacing: float = 1.0):
    """The figure of ``plot gradients``: one panel per relaxation, returned (matplotlib ``Figure``).

    ``curves``: relaxation spec → the dict of :func:`gradient_curves`. Each curve is divided by its
    largest magnitude, then drawn as a centred rolling ``stat`` over ``smooth`` score units (bold)
    over its raw values (faint); ``smooth=0`` draws the raw values only. ``yscale``: ``"linear"``,
    ``"symlog"`` (logarithmic beyond ±``linthresh``, linear inside, so the sign stays visible), or
    ``"auto"``: symlog when a curve spans more than two decades (its 10th-percentile magnitude is
    below 1 % of its largest). The legend sits below the panels and never covers the curves.
    Lines carry ``gid`` ``"raw:KEY"`` / ``"smoothed:KEY"`` (KEY of :data:`SERIES`).
    """
    if yscale not in ("auto", "linear", "symlog"):
        raise ValueError(f"yscale must be 'auto', 'linear' or 'symlog'; got {yscale!r}")
    import matplotlib.pyplot as plt

    names = list(curves)
    norm = {}
    for r in names:
        c = curves[r]
        x = np.asarray(c["x"], dtype=np.float64)
        for key, *_ in SERIES:
            v = np.asarray(c[key], dtype=np.float64)
            peak = np.abs(v).max() if v.size else 0.0
            norm[r, key] = (x, v / max(peak, 1e-300))
    if yscale == "auto":
        spans = [np.quantile(np.abs(v), 0.1) < 1e-2 for _, v in norm.values() if v.size]
        yscale = "symlog" if any(spans) else "linear"

    cols = len(names)
    fig, axes = plt.subplots(1, cols, figsize=(max(7.5, 6.4 * cols), 4.8), squeeze=False, sharey=True)
    windows = set()
    for ax, r in zip(axes[0], names):
        for key, label, color, style in SERIES:
            x, v = norm[r, key]
            w = _window_points(x, smooth)
            windows.add(w)
            label = label.format(lam=lam)
            if w > 1:
                ax.plot(x, v, "-", color=color, lw=0.8, alpha=0.25, gid=f"raw:{key}")
                ax.plot(x, smooth_curve(v, w, stat=stat), style, color=color, lw=1.8, label=label,
                        gid=f"smoothed:{key}")
            else:
                ax.plot(x, v, style, color=color, lw=1.5, label=label, gid=f"raw:{key}")
        for k in range(1, n):
            ax.axvline(k * spacing, color="grey", lw=0.6, alpha=0.5, zorder=0)
        ax.axhline(0, color="black", lw=0.6, zorder=0)
        if yscale == "symlog":
            ax.set_yscale("symlog", linthresh=linthresh, linscale=0.5)
        ax.set_title(r)
        ax.set_xlabel(f"score y₀ of item 0 (score units); grey lines: the other items' scores "
                      f"{spacing:g}, …, {(n - 1) * spacing:g}")
        ax.grid(alpha=0.3, which="major")
    scale = f"\nsymmetric log scale, linear within ±{linthresh:g}" if yscale == "symlog" else ""
    axes[0][0].set_ylabel("curve ÷ its max |·| (dimensionless)" + scale)
    w = max(windows)
    how = (f"bold: rolling {stat} over {smooth:g} score units ({w} points), faint: raw values"
           if w > 1 else "raw values, no smoothing")
    fig.suptitle(f"Gradient vs Newton direction with respect to y₀, n={n} (item 0 should be the "
                 f"smallest)\n{how}; each curve ÷ its largest |·|", fontsize=11)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0),
                        ncol=min(len(labels), 3 if cols > 1 else 1), fontsize=9, frameon=False)
    # Leave room at the bottom for the legend (measured once drawn), then lay the panels out above.
    fig.canvas.draw()
    height = legend.get_window_extent().transformed(fig.transFigure.inverted()).height
    fig.tight_layout(rect=(0, height + 0.01, 1, 1))
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="newton-losses plot gradients", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gradients.png", help="PNG file (default: gradients.png)")
    p.add_argument("--relaxations", nargs="+", default=list(DEFAULT_RELAXATIONS), metavar="SPEC",
                   help="ranking method specs NAME[:KEY=VALUE,...] (default: "
                        f"{' '.join(DEFAULT_RELAXATIONS)}); methods: {', '.join(registry.methods('ranking'))}")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--lam", type=float, default=0.1)
    p.add_argument("--points", type=int, default=401)
    p.add_argument("--smooth", type=float, default=0.5, metavar="WIDTH",
                   help="rolling-mean window in score units; the raw curves stay faint behind "
                        "(default: 0.5; 0: raw curves only)")
    p.add_argument("--yscale", choices=("auto", "linear", "symlog"), default="auto",
                   help="y axis; auto: symmetric log when the curves span more than two decades "
                        "(default: auto)")
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

    fig = plot_gradient_curves(curves, n=args.n, lam=args.lam, smooth=args.smooth, yscale=args.yscale)
    out = Path(args.out)
    with atomic_write(out) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    print(out)
    return 0
