"""What the samples are that the precision check flags under the exact float32 ranking BCE.

The exact-loss runs of RESULTS §2 ("The exact float32 loss") checked their loss gradient against
float64 every 100 steps, and on the logistic sorting network a few samples per run came out
"sick" (relative error above 0.1, at most 0.93). This script looks for such samples on random
batches of the same relaxation — scores of several scales, target orders close to the scores',
as in a network that has learned something — and prints, for the flagged samples, how large
their float64 gradient is against the batch's mean gradient norm, and how large the float32
error is in absolute terms against that mean::

    python scripts/precision_sick_samples.py                   # logistic odd-even network, n = 5
    python scripts/precision_sick_samples.py --relaxation neuralsort --n 10

A flagged sample whose float64 gradient is a tiny fraction of the batch's (a set the relaxation
has saturated: its swaps' sigmoids are flat) has a large *relative* error that moves nothing;
one whose float32 error is large against the batch mean is a real rounding failure (the
naive BCE's spikes: float32 gradients 10³–10⁵ times the float64 ones). The study's runs checked
with ``floor=0`` (each sample against its own gradient alone); ``check_precision`` now measures
errors against at least 10⁻³ of the batch's mean gradient norm by default, and the script counts
both.
"""
from __future__ import annotations

import argparse
import sys

import torch

from newton_losses import DiffSortNet, NeuralSort, RankingLoss, SoftSort, check_precision


def _relaxation(name: str, n: int):
    if name in ("logistic", "cauchy"):
        return DiffSortNet("odd_even", n, steepness=10, sigmoid=name)
    return {"neuralsort": NeuralSort(tau=1.0), "softsort": SoftSort(tau=1.0)}[name]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--relaxation", default="logistic", choices=["logistic", "cauchy", "neuralsort", "softsort"])
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--loss", default="bce_exact", choices=["bce_exact", "bce"])
    p.add_argument("--batches", type=int, default=20, help="batches of 1,000 sets per score scale")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    loss = RankingLoss(_relaxation(a.relaxation, a.n), loss=a.loss)
    rows = []
    checked = flagged_now = 0
    for scale in (1.0, 3.0, 10.0, 30.0):
        for _ in range(a.batches):
            y = torch.randn(1000, a.n) * scale
            values = y + 0.3 * scale * torch.randn_like(y)  # target orders near the scores' own
            r = check_precision(loss, y, values, floor=0)  # the check as the study's runs made it
            flagged_now += check_precision(loss, y, values).sick.numel()  # today's default floor
            checked += y.shape[0]
            if r.ok:
                continue
            y64 = y.double().requires_grad_()
            g64, = torch.autograd.grad(loss(y64, values.double()).sum(), y64)
            y32 = y.clone().requires_grad_()
            g32, = torch.autograd.grad(loss(y32, values).sum(), y32)
            norm64 = g64.norm(dim=-1)
            median = float(norm64.mean())
            err = (g32.double() - g64).norm(dim=-1)
            for i in r.sick.tolist():
                rows.append((float(r.error[i]), scale, float(norm64[i]) / median, float(err[i]) / median))
    print(f"{a.relaxation}, n = {a.n}, loss={a.loss}: {len(rows)} of {checked:,} sets flagged "
          f"(relative error > 0.1 against their own float64 gradient); {flagged_now} with "
          f"check_precision's default floor (10⁻³ of the batch's mean gradient norm)")
    if not rows:
        return 0
    rel_norm = torch.tensor([r[2] for r in rows])
    rel_err = torch.tensor([r[3] for r in rows])
    print(f"  their float64 gradient norm / the batch mean: max {float(rel_norm.max()):.2g}, "
          f"median {float(rel_norm.median()):.2g}")
    print(f"  their float32 error norm / the batch mean:    max {float(rel_err.max()):.2g}, "
          f"median {float(rel_err.median()):.2g}")
    print("  the 10 largest float32 errors against the batch mean (relative error, score scale, "
          "|g64|/mean, |g32 − g64|/mean):")
    for e, s, g, d in sorted(rows, key=lambda r: r[3], reverse=True)[:10]:
        print(f"    {e:10.3g}  scale {s:4g}  {g:10.3g}  {d:10.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
