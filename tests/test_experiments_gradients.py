"""The gradient picture: the plotted curves against independent oracles, and the command."""
import torch

from newton_lab.cli import main
from newton_lab.gradients import gradient_curves
from newton_losses.sorting import NeuralSort, permutation_matrix, ranking_bce


def test_curves_against_finite_differences_and_a_dense_solve():
    # Away from saturation (x ≳ 5 makes P round to exactly 0/1, where finite differences fail).
    c = gradient_curves("neuralsort:tau=0.1", n=4, points=5, lam=0.5, lo=-1.0, hi=4.5)
    target = permutation_matrix(torch.arange(4.0, dtype=torch.float64))

    def loss(y):
        return ranking_bce(NeuralSort(0.1)(y), target)

    for i, x in enumerate(c["x"]):
        y = torch.tensor([float(x), 1.0, 2.0, 3.0], dtype=torch.float64)
        h = 1e-6
        e0 = torch.tensor([h, 0, 0, 0], dtype=torch.float64)
        fd = (loss(y + e0) - loss(y - e0)) / (2 * h)
        assert torch.allclose(c["gradient"][i], fd, rtol=1e-5, atol=1e-9)
        H = torch.autograd.functional.hessian(loss, y)
        g = torch.autograd.functional.jacobian(loss, y)
        mu, Q = torch.linalg.eigh(H)
        d = Q @ ((Q.T @ g) / (mu.abs() + 0.5))  # default projection "abs"
        assert torch.allclose(c["hessian"][i], d[0], rtol=1e-8, atol=1e-12)


def test_plot_gradients_command_writes_png(tmp_path):
    out = tmp_path / "g.png"
    assert main(["plot", "gradients", "--out", str(out), "--points", "21", "--relaxations", "softsort"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", "gradients", "--relaxations", "bogus", "--out", str(out)]) == 2


def test_plot_keeps_the_legend_off_the_curves_and_smooths_a_noisy_series():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from newton_lab.gradients import SERIES, plot_gradient_curves, smooth_curve

    rng = np.random.default_rng(0)
    x = np.linspace(-3.0, 7.0, 401)
    curve = {"x": x}
    for k, (key, *_) in enumerate(SERIES):
        clean = np.exp(-((x - 2.0 - k) ** 2))
        curve[key] = clean + 0.2 * rng.standard_normal(x.size)
    fig = plot_gradient_curves({"a": curve, "b": curve}, n=5, lam=0.1, smooth=0.5, yscale="linear")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)  # not cut off
        for ax in fig.axes:
            assert ax.get_legend() is None
            assert not box.overlaps(ax.get_window_extent(renderer))  # the data area, frame included
            for key, *_ in SERIES:
                (raw,) = [ln for ln in ax.lines if ln.get_gid() == f"raw:{key}"]
                (smoothed,) = [ln for ln in ax.lines if ln.get_gid() == f"smoothed:{key}"]
                tv_raw = np.abs(np.diff(raw.get_ydata())).sum()
                tv_smooth = np.abs(np.diff(smoothed.get_ydata())).sum()
                assert tv_smooth < 0.25 * tv_raw
                assert raw.get_alpha() < 0.5 and smoothed.get_label().startswith(("original", "Newton"))
        assert "rolling mean over 0.5 score units (21 points)" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
    # The rolling statistic itself: centred, shrinking at the ends, identity for a window of 1.
    v = np.array([0.0, 10.0, 0.0, 0.0, 3.0])
    assert np.allclose(smooth_curve(v, 3, stat="median"), [5.0, 0.0, 0.0, 0.0, 1.5])
    assert np.allclose(smooth_curve(v, 3, stat="mean"), [5.0, 10 / 3, 10 / 3, 1.0, 1.5])
    assert np.array_equal(smooth_curve(v, 1), v)


def test_plot_uses_a_symmetric_log_scale_when_the_curves_span_decades():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from newton_lab.gradients import plot_gradient_curves

    c = gradient_curves("neuralsort:tau=0.1", n=4, points=81)  # the gradient dies off like exp(-x/τ)
    fig = plot_gradient_curves({"neuralsort:tau=0.1": c}, n=4, lam=0.1)
    assert fig.axes[0].get_yscale() == "symlog"
    plt.close(fig)
    fig = plot_gradient_curves({"neuralsort:tau=0.1": c}, n=4, lam=0.1, yscale="linear", smooth=0)
    assert fig.axes[0].get_yscale() == "linear"
    assert {ln.get_gid() for ln in fig.axes[0].lines} >= {"raw:gradient", "raw:hessian"}
    assert not any(str(ln.get_gid()).startswith("smoothed") for ln in fig.axes[0].lines)
    plt.close(fig)
