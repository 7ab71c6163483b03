"""What one PyEPO TSP solve costs without a commercial licence — the measurement behind RESULTS
§5's "TSP not run".

    pip install pyomo highspy          # not in the project's environment: only this script needs them
    python scripts/pto_tsp_cost.py [--nodes 20] [--instances 5]

PyEPO (2.2.7) formulates the TSP for Gurobi, COPT (both licensed) and Pyomo; its OR-Tools back-end,
the one this project uses, has none. Through Pyomo the free MIP solver is HiGHS
(``solver="appsi_highs"``). The script draws instances from PyEPO's TSP generator (degree 2,
noise half-width 0.5), solves each with the GG and the MTZ formulation and prints the median and
the largest time per solve. Every training step of SPO+ needs one solve per instance (DPO/PFYL:
one per perturbation sample), so a run of the study's protocol (1,000 instances × 20 epochs)
needs 20,000 solves or more.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20, help="cities (default 20, PyEPO's tutorial size)")
    ap.add_argument("--instances", type=int, default=5, help="instances solved per formulation (default 5)")
    args = ap.parse_args(argv)
    if args.nodes < 3 or args.instances < 1:
        ap.error("--nodes must be >= 3 and --instances >= 1")
    try:
        import pyepo
        from pyepo.model.omo import tspGGModel, tspMTZModel
        import highspy  # noqa: F401  (Pyomo's appsi_highs needs it)
    except ImportError as e:
        ap.error(f"{e}; this script needs PyEPO, Pyomo and HiGHS: pip install pyepo pyomo highspy")
    _, c = pyepo.data.tsp.genData(args.instances, 10, args.nodes, deg=2, noise_width=0.5, seed=0)
    print(f"PyEPO TSP, {args.nodes} nodes ({c.shape[1]} edges), Pyomo + HiGHS, {args.instances} instances")
    for cls in (tspGGModel, tspMTZModel):
        model = cls(args.nodes, solver="appsi_highs")
        times = []
        for cost in c:
            model.setObj(cost)
            t = time.perf_counter()
            model.solve()
            times.append(time.perf_counter() - t)
        per = float(np.median(times))
        print(f"  {cls.__name__}: median {per:.2f} s, largest {max(times):.2f} s per solve; "
              f"20,000 solves (one SPO+ run of the study's protocol, training alone) ≈ "
              f"{20000 * per / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
