"""Learn shortest paths from terrain images with a perturbed Fenchel-Young loss and its Newton loss.

    python examples/shortest_path_terrain.py                       # about 20 s on one CPU core
    python examples/shortest_path_terrain.py --steps 60 --maps 400  # shorter

The Warcraft benchmark's problem (Vlastelica, Paulus et al., ICLR 2020) on the harness's
procedural terrain (newton_lab.data.generate_terrain; docs/DATA.md): a 96×96 image of 12×12
terrain tiles whose hidden costs (road 0.8 … water 9.2) the network must predict from pixels,
supervised only by the cheapest top-left → bottom-right path (8-neighbourhood). The loss is the
perturbed optimizer + Fenchel-Young loss (Berthet et al., NeurIPS 2020): the exact solver on
S = 10 noisy copies of the predicted costs; its gradient is ȳ − ŷ (true path minus the mean
perturbed path). NewtonLoss uses its Stein Hessian estimator, −½(M + Mᵀ) with
M = (1/(Sσ)) Σ_s (y_s − b) Z_sᵀ, built from the same 10 samples (docs/SHORTEST_PATH.md §3).

Printed: on 200 held-out maps, before and after training, the share of maps whose predicted path
(the exact solver on the predicted costs) is the true one, the share whose path is cost-optimal
(many maps have several cheapest paths), and the mean ratio of its true cost to the optimum.
This is a short run: the study (RESULTS.md §4) trains 1,430 steps, and did not find this Newton
loss better than the plain Fenchel-Young loss there.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from newton_losses import NewtonLoss
from newton_losses.shortest_path import FenchelYoungLoss, shortest_path
from newton_lab.data import generate_terrain


class TileCosts(nn.Module):
    """Images (B, 3, 8H, 8W) -> costs (B, H, W) > 0: one feature vector per 8×8 tile, a 3×3
    context convolution, softplus (the harness's ``small_cnn``)."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels, 8, stride=8), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.net(images).squeeze(1))


@torch.no_grad()
def path_metrics(net: nn.Module, images: torch.Tensor, weights: torch.Tensor, paths: torch.Tensor) -> dict:
    # shortest_path returns a ShortestPathResult(path, cost): the 0/1 mask is its .path
    predicted = shortest_path(net(images).double()).path
    true_cost = (paths.double() * weights).flatten(1).sum(1)
    predicted_cost = (predicted * weights).flatten(1).sum(1)     # its cost under the TRUE weights
    return {
        "exact": float((predicted == paths).flatten(1).all(1).double().mean()),
        "optimal": float((predicted_cost <= true_cost * (1 + 1e-6)).double().mean()),
        "ratio": float((predicted_cost / true_cost).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--maps", type=int, default=1200, help="maps generated (the last 200 are the test set)")
    p.add_argument("--lam", type=float, default=1.0)
    args = p.parse_args(argv)
    torch.manual_seed(0)

    data = generate_terrain(args.maps, size=12, seed=0)           # deterministic, ~1 s per 1,000 maps
    images, weights, paths = data.tensors(dtype=torch.float32)   # (M, 3, 96, 96), (M, 12, 12) ×2
    weights = weights.double()
    n_train = args.maps - 200
    test = images[n_train:], weights[n_train:], paths[n_train:]

    net = TileCosts()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    fy = FenchelYoungLoss(sigma=0.5, n_samples=10, generator=torch.Generator().manual_seed(0))
    newton = NewtonLoss(fy, curvature=fy.hessian_estimator(), lam=args.lam)

    def show(label: str, m: dict) -> None:
        print(f"  {label:22s} exact path {100 * m['exact']:5.1f}%   cost-optimal {100 * m['optimal']:5.1f}%   "
              f"cost ratio {m['ratio']:.3f}")

    print(f"terrain 12×12, {n_train} training maps, perturbed Fenchel-Young loss (σ = 0.5, S = 10), "
          f"NewtonLoss(Stein Hessian estimator, λ = {args.lam:g}), batch 70")
    show("before training:", path_metrics(net, *test))
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n_train, (70,), generator=gen)
        costs = net(images[idx])                                   # (70, 12, 12) predicted costs
        loss = newton(costs, paths[idx])                            # true paths: (70, 12, 12) 0/1
        opt.zero_grad()
        loss.backward()
        opt.step()
    show(f"after {args.steps} steps:", path_metrics(net, *test))
    d = newton.last_diagnostics
    print(f"  ({time.perf_counter() - t0:.0f} s; last step: curvature {d.method}, CG iterations {d.cg_iterations}, "
          f"Newton step {1e3 * (d.time_curvature_s + d.time_solve_s):.1f} ms)")


if __name__ == "__main__":
    main()
