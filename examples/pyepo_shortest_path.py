"""Predict-then-optimize with PyEPO: a Newton PFYL on PyEPO's 5×5 shortest path.

    pip install 'newton-losses[pyepo]'              # pyepo, ortools (OR-Tools: no licence needed)
    python examples/pyepo_shortest_path.py          # about 10 s on one CPU core

PyEPO (Tang & Khalil) trains a model that predicts the 40 arc costs of a 5×5 grid shortest path
from 5 features; the decision is the cheapest path under the predicted costs, and it is scored
by its regret under the true costs. The loss here is PyEPO's perturbed Fenchel-Young loss
(PFYL, σ = 1, 10 samples) computed by ``newton_losses.integrations.pyepo.PFYLoss`` with PyEPO's
own optModel (its grid shortest path is solved by an exact batched dynamic program); NewtonLoss
wraps it with the empirical Fisher or with PFYL's Stein Hessian estimator (docs/PYEPO.md).

Printed: the normalized test regret, Σ_i (⟨c_i, w(ĉ_i)⟩ − ⟨c_i, w(c_i)⟩) / Σ_i ⟨c_i, w(c_i)⟩
(PyEPO's ``pyepo.metric.regret``), of a linear model before and after 10 epochs, for the
plain PFYL gradient and the two Newton losses — one seed, so differences of a point or two
mean nothing; whether either Newton loss helps on PyEPO's benchmarks has not been measured.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

try:
    from pyepo.data import shortestpath
    from pyepo.model.ort import shortestPathModel      # the OR-Tools back-end
except ImportError:
    sys.exit("this example needs PyEPO: pip install 'newton-losses[pyepo]'")

from newton_losses import NewtonLoss
from newton_losses.integrations.pyepo import OptModelSolver, PFYLoss
from newton_losses.integrations.pyepo_grid import grid_shortest_path


def normalized_regret(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, best: torch.Tensor) -> float:
    with torch.no_grad():
        decision = grid_shortest_path(model(x).double()).solution    # the path under predicted costs
    return float(((decision * c).sum(1) - best).sum() / best.sum())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train", type=int, default=1000, help="training instances")
    args = p.parse_args(argv)

    optmodel = shortestPathModel((5, 5))                 # 5×5 nodes, 40 arcs, minimization
    x, c = shortestpath.genData(args.train + 1000, 5, (5, 5), deg=4, noise_width=0.5, seed=0)
    x, c = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(c)
    true_sol, true_obj = OptModelSolver(optmodel).solve(c)     # solved once with OR-Tools
    train = slice(0, args.train)
    test = slice(args.train, None)
    print(f"PyEPO 5×5 shortest path, {args.train} training / 1000 test instances (deg 4, noise 0.5), "
          f"linear model, PFYL σ = 1, S = 10, Adam 1e-2, batch 32, {args.epochs} epochs")

    for label, curvature in (("PFYL gradient (no Newton loss)", None),
                             ("NewtonLoss, fisher λ = 1", "fisher"),
                             ("NewtonLoss, Hessian estimator λ = 1", "hessian")):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 40)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        pfyl = PFYLoss(optmodel, sigma=1.0, n_samples=10, generator=torch.Generator().manual_seed(0))
        if curvature is None:
            loss_fn = lambda y, t: pfyl(y, t).mean()      # noqa: E731 — PFYLoss gives (N,) values
        else:
            loss_fn = NewtonLoss(pfyl, curvature=pfyl.hessian_estimator() if curvature == "hessian" else curvature,
                                 lam=1.0)
        before = normalized_regret(model, x[test], c[test], true_obj[test])
        order = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        for epoch in range(args.epochs):
            perm = torch.randperm(args.train, generator=order)
            for i in range(0, args.train, 32):
                b = perm[i:i + 32]
                loss = loss_fn(model(x[b]), true_sol[b])   # (32, 40) costs, (32, 40) true paths
                opt.zero_grad()
                loss.backward()
                opt.step()
        after = normalized_regret(model, x[test], c[test], true_obj[test])
        print(f"  {label:36s} test regret {100 * before:5.1f}% -> {100 * after:5.1f}%   "
              f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
