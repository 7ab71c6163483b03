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
