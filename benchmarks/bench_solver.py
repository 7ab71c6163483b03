"""Throughput of the exact grid shortest-path solver next to a per-grid scipy Dijkstra loop.

The perturbed-optimizer losses of the Warcraft protocol call the solver on batch 70 × 30 samples
= 2,100 grids of 12×12 per training step, so that is the default setting.

    python benchmarks/bench_solver.py                       # batch 2100, 12×12
    python benchmarks/bench_solver.py --batch 64 --repeats 2 --scipy-grids 64   # smoke run
    python benchmarks/bench_solver.py --device cuda --dtype float32

Prints solves per second (grids per second) for both; the scipy loop solves ``--scipy-grids``
grids and is extrapolated. The scipy graph's structure is built once; only its weights change.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from newton_losses.shortest_path import shortest_path


def _scipy_solver(height: int, width: int):
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import dijkstra

    idx = np.arange(height * width).reshape(height, width)
    src, dst = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            ys = slice(max(0, -dy), height - max(0, dy))
            xs = slice(max(0, -dx), width - max(0, dx))
            src.append(idx[ys, xs].ravel())
            dst.append(idx[ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx].ravel())
    src, dst = np.concatenate(src), np.concatenate(dst)
    n = height * width

    def solve(w: np.ndarray) -> tuple[float, np.ndarray]:
        flat = w.ravel()
        graph = csr_array((flat[dst], (src, dst)), shape=(n, n))
        dist, pred = dijkstra(graph, indices=0, return_predecessors=True)
        mask = np.zeros(n)
        v = n - 1
        while v >= 0:
            mask[v] = 1
            v = pred[v]
        return flat[0] + dist[-1], mask.reshape(height, width)

    return solve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2100)
    parser.add_argument("--size", type=int, default=12, help="grid side H = W")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--scipy-grids", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    values = torch.tensor([0.8, 1.2, 5.3, 7.7, 9.2], dtype=getattr(torch, args.dtype))
    shape = (args.batch, args.size, args.size)
    costs = {
        "uniform[0.8, 9.2]": torch.rand(shape, generator=gen, dtype=values.dtype) * 8.4 + 0.8,
        "5 discrete values": values[torch.randint(0, 5, shape, generator=gen)],
    }
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(
        f"grids {args.size}x{args.size}, batch {args.batch}, {args.dtype}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    for name, c in costs.items():
        c = c.to(args.device)
        shortest_path(c)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(args.repeats):
            shortest_path(c)
        sync()
        per_call = (time.perf_counter() - start) / args.repeats
        print(
            f"  torch batched  [{name}]: {per_call * 1e3:8.2f} ms per batch, "
            f"{args.batch / per_call:10.0f} solves/s"
        )

    try:
        solve = _scipy_solver(args.size, args.size)
    except ImportError:
        print("  scipy not installed: per-grid Dijkstra skipped")
        return
    grids = costs["uniform[0.8, 9.2]"][: args.scipy_grids].double().cpu().numpy()
    start = time.perf_counter()
    for w in grids:
        solve(w)
    per_grid = (time.perf_counter() - start) / len(grids)
    print(
        f"  scipy Dijkstra loop (uniform, {len(grids)} grids): {per_grid * 1e6:8.1f} us per grid, "
        f"{1 / per_grid:10.0f} solves/s, "
        f"{args.batch * per_grid * 1e3:.1f} ms per batch of {args.batch}"
    )


if __name__ == "__main__":
    main()
