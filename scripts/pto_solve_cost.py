"""What one solve of PyEPO's OR-Tools models costs on the generator's costs — a reference for
the ``pyepo`` solver's speed that docs/PYEPO.md quotes.

    python scripts/pto_solve_cost.py [--instances 100] [--deg 2 6] [--seed 0]

Needs PyEPO and OR-Tools (``pip install pyepo ortools``). The problems are the ``pto`` task's
(``newton_lab.tasks.pyepo``): the 5 × 5 grid shortest path and the knapsack of 32 items in 2
resource dimensions, capacity 20 each, costs from PyEPO's generators with noise half-width 0.5.
Each instance is solved with one ``optModel.solve`` call, as the study's ``pyepo`` solver does,
for two cost vectors built from the generated costs c:

- ``true``: c itself (what the data set's true solutions need, once per instance);
- ``perturbed``: c + σZ with σ = 1, Z ~ N(0, I) (the shape of DPO's and PFYL's samples, which
  perturb the model's predictions the same way).

It prints the median and the 90th percentile of the time per solve (ms) and, for the shortest
path, the grid dynamic program's time per instance in batches of 32 for comparison. A model's
predicted costs can take SCIP much longer than these (up to about 10× on the knapsack in the
study's runs: the knapsack table's solver-time line in RESULTS §5 gives the evaluations' time per
predicted instance). Timings depend on the machine and on what else runs on it: measure on an
idle one.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch


def _time_solves(optmodel, costs: np.ndarray) -> np.ndarray:
    times = np.empty(len(costs))
    for i, cost in enumerate(costs):
        t = time.perf_counter()
        optmodel.setObj(cost)
        optmodel.solve()
        times[i] = time.perf_counter() - t
    return 1000.0 * times


def _kinds(c: np.ndarray, rng: np.random.Generator) -> dict:
    return {"true": c, "perturbed": c + rng.standard_normal(c.shape)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=100, help="instances per problem and degree (default 100)")
    ap.add_argument("--deg", type=int, nargs="+", default=[2, 6], help="polynomial degrees (default 2 6)")
    ap.add_argument("--seed", type=int, default=0, help="data and noise seed (default 0)")
    args = ap.parse_args(argv)
    if args.instances < 1 or any(d < 1 for d in args.deg):
        ap.error("--instances and every --deg must be >= 1")
    try:
        import pyepo
        import pyepo.model.ort  # noqa: F401  (OR-Tools)
    except ImportError as e:
        ap.error(f"{e}; this script needs PyEPO and OR-Tools: pip install pyepo ortools")
    from newton_lab import protocol_config
    from newton_lab.tasks.pyepo import problem_of
    from newton_losses.integrations.pyepo_grid import GridShortestPath

    rng = np.random.default_rng(args.seed)
    print(f"PyEPO OR-Tools models, one solve per call, {args.instances} instances per row; ms per solve "
          "(median / 90th percentile)")
    print(f"{'problem':<20} {'deg':>3}  {'true':>15}  {'perturbed':>15}")
    for problem in ("shortest_path", "knapsack"):
        for deg in args.deg:
            # the task's problem and defaults (grid; items, dimensions, capacity; features; noise)
            cfg = protocol_config("pto", "pyepo", seed=args.seed,
                                  task_args={"problem": problem, "deg": deg, "solver": "pyepo"})
            a, optmodel = cfg.task_args, problem_of(cfg).optmodel
            if problem == "shortest_path":
                _, c = pyepo.data.shortestpath.genData(args.instances, a["features"], (a["grid"], a["grid"]),
                                                       deg=deg, noise_width=a["noise"], seed=args.seed)
                name = f"shortest path {a['grid']} x {a['grid']}"
            else:
                _, _, c = pyepo.data.knapsack.genData(args.instances, a["features"], a["items"], dim=a["dim"],
                                                      deg=deg, noise_width=a["noise"], seed=args.seed)
                name = f"knapsack {a['items']} x {a['dim']}"
            cells = []
            for kind, costs in _kinds(np.asarray(c, dtype=np.float64), rng).items():
                t = _time_solves(optmodel, costs)
                cells.append(f"{np.median(t):.3g} / {np.percentile(t, 90):.3g}")
            print(f"{name:<20} {deg:>3}  " + "  ".join(f"{x:>15}" for x in cells))
            if problem == "shortest_path":
                grid = GridShortestPath((a["grid"], a["grid"]))
                batch = torch.as_tensor(np.asarray(c, dtype=np.float64)[:32])
                grid(batch)  # warm-up
                reps = 50
                t = time.perf_counter()
                for _ in range(reps):
                    grid(batch)
                per = 1000.0 * (time.perf_counter() - t) / (reps * batch.shape[0])
                print(f"{'  grid DP, batch 32':<20} {deg:>3}  {per:.3g} per instance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
