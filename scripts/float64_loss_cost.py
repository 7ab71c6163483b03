"""What computing the ranking loss in float64 costs, against float32, in one process.

    python scripts/float64_loss_cost.py [--repeats 30] [--n 5 10 32] [--out FILE.md]

The reproduction study's remedy for the float32 failure of the ranking BCE (RESULTS.md §2, "Where
the spikes come from"; docs/SORTING.md, Precision) casts the network's float32 scores to float64
before the relaxation and the BCE (``RankingLoss(..., dtype=torch.float64)``, the runner's
``loss_dtype="float64"``). Measured here, on one thread, for each relaxation of the study and
each n, with float32 scores of a batch of 100 sets:

- the loss alone (relaxation + BCE, forward and backward to the scores), float32 and float64;
- a whole training step of the quick protocol's network (the MLP on 14 × 56 images: forward,
  loss, backward, Adam) with the loss in float32 and in float64.

Each timing is the median of ``--repeats`` calls after warm-up, the two dtypes interleaved so that
machine noise hits both alike. Read the ratios; the milliseconds depend on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from newton_lab.config import protocol_config
from newton_lab.machine import machine_label
from newton_lab.runner import _machine, build_task, loss_inputs, seed_run
from newton_lab.io import write_or_print

RELAXATIONS = [
    ("NeuralSort τ=1", dict(method="neuralsort", method_args={"tau": 1.0})),
    ("SoftSort τ=1", dict(method="softsort", method_args={"tau": 1.0})),
    ("logistic network β=10", dict(method="odd_even", method_args={"sigmoid": "logistic", "steepness": 10.0})),
    ("Cauchy network β=10", dict(method="odd_even", method_args={"sigmoid": "cauchy", "steepness": 10.0})),
]


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def measure(label: str, fields: dict, n: int, repeats: int, data: str) -> tuple:
    """(loss f32 ms, loss f64 ms, step f32 ms, step f64 ms) for one relaxation and n."""
    cfgs = {dt: protocol_config("ranking", "quick", n=n, data=data, loss_dtype=dt, **fields)
            for dt in ("", "float64")}
    task = build_task(cfgs[""], torch.device("cpu"), torch.float32)
    net = task.model
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, target = task.sample(100, seed_run(0))
    with torch.no_grad():
        scores = task.outputs(net, x)

    def loss_only(cfg):
        y = scores.clone().requires_grad_(True)
        yy, tt = loss_inputs(cfg, y, target)
        task.loss_fn(yy, tt).mean().backward()

    def step(cfg):
        yy, tt = loss_inputs(cfg, task.outputs(net, x), target)
        opt.zero_grad(set_to_none=True)
        task.loss_fn(yy, tt).mean().backward()
        opt.step()

    out = []
    for fn in (loss_only, step):
        for cfg in cfgs.values():  # warm-up
            for _ in range(3):
                fn(cfg)
        pairs = [[], []]
        for _ in range(repeats):  # interleaved, one call each
            for k, cfg in enumerate(cfgs.values()):
                pairs[k].append(_median_ms(lambda: fn(cfg), 1))
        out += [statistics.median(pairs[0]), statistics.median(pairs[1])]
    return tuple(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per dtype (default 30)")
    ap.add_argument("--n", type=int, nargs="+", default=[5, 10, 32], help="set sizes (default 5 10 32)")
    ap.add_argument("--data", choices=("mnist", "synthetic"), default="mnist",
                    help="images of the batch (synthetic: no MNIST needed; the timings do not depend on it)")
    ap.add_argument("--out", type=Path, help="also write the table to this file (atomically)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or any(n < 2 for n in args.n):
        ap.error("--repeats must be >= 1 and every --n >= 2")
    torch.set_num_threads(1)
    machine = machine_label({"machine": _machine(torch.device("cpu"))}, python=False)
    lines = [f"Loss in float64 vs float32, float32 scores of a batch of 100 sets, one thread, median of "
             f"{args.repeats} interleaved calls (ms). Command: `python scripts/float64_loss_cost.py --repeats "
             f"{args.repeats} --n {' '.join(map(str, args.n))}"
             f"{' --data synthetic' if args.data == 'synthetic' else ''}`. Machine: {machine}.",
             "", "| relaxation | n | loss f32 | loss f64 | ratio | training step f32 | step f64 | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for label, fields in RELAXATIONS:
        for n in args.n:
            l32, l64, s32, s64 = measure(label, fields, n, args.repeats, args.data)
            lines.append(f"| {label} | {n} | {l32:.2f} | {l64:.2f} | {l64 / l32:.2f} | {s32:.1f} | {s64:.1f} "
                         f"| {s64 / s32:.2f} |")
    write_or_print("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
