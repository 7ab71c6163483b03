"""`newton-losses bench`: what each curvature costs, measured in one process.

Sections: ``loss`` and ``step`` (the package's real losses and whole training steps, in
:mod:`newton_lab.bench_step`), ``dense`` (our Hessian path against a dense
(N·m)² reference) and ``synthetic`` (the self-contained cases below, with every solver option).

Every figure is the median of ``repeats`` timed runs after a warm-up, all measured in one
process, and printed as a ratio to the plain loss's forward+backward at the same size — the
only kind of number that survives this project's noisy machines. Absolute times are printed
beside the ratios for orientation.

Cases (N samples, m outputs each):

- ``pairwise``: a RankNet-style relaxed ranking loss, ``ℓ_i = BCE(σ(β(y_ij − y_ik)), 1[v_j > v_k])``
  over all pairs — a self-contained stand-in for a relaxed sort (outer∘inner, so Gauss-Newton
  applies), N = 100, m = n ∈ {5, 10, 32};
- ``softmin-grid``: a softmin dynamic program over a 12×12 grid (the shape of a relaxed
  Bellman-Ford), N = 70, m = 144;
- and our Hessian path against the straightforward dense implementation (the full
  (N·m)×(N·m) Hessian of the batch loss by autograd, solved densely) at N = 100, m = 10.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from newton_losses.curvature import CompositeLoss
from newton_losses.newton import NewtonLoss

from newton_lab.machine import machine_description


@dataclass
class Case:
    name: str
    N: int
    m: int
    make: Callable[[torch.Generator], tuple]  # -> (loss_fn, y, args)


def _pairwise(n: int, beta: float = 5.0):
    def make(gen: torch.Generator):
        N = 100
        v = torch.rand(N, n, generator=gen)
        truth = (v.unsqueeze(-1) > v.unsqueeze(-2)).to(torch.float32)

        def inner(y: Tensor) -> Tensor:
            return torch.sigmoid(beta * (y.unsqueeze(-1) - y.unsqueeze(-2)))

        def outer(p: Tensor, t: Tensor) -> Tensor:
            p = p.clamp(1e-6, 1 - 1e-6)
            return -(t * p.log() + (1 - t) * (1 - p).log()).mean(dim=(-1, -2))

        y = torch.randn(N, n, generator=gen)
        return CompositeLoss(inner, outer), y, (truth,)

    return make


def _softmin_grid(H: int = 12, W: int = 12, beta: float = 10.0, iters: int = 12):
    def make(gen: torch.Generator):
        N = 70
        truth = (torch.rand(N, H, W, generator=gen) < 0.15).to(torch.float32)

        source = torch.zeros(H, W, dtype=torch.bool)
        source[0, 0] = True
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]

        def inner(y: Tensor) -> Tensor:
            # Softmin Bellman-Ford from the top-left corner over the 8-neighbourhood:
            # d_v = c_v + softmin_β(d_u, u ∈ N(v)), d_source = c_source; soft "on path" scores.
            c = torch.nn.functional.softplus(y.reshape(-1, H, W))
            big = 1e3
            d = torch.where(source, c, torch.full_like(c, big))
            for _ in range(iters):
                p = torch.nn.functional.pad(d, (1, 1, 1, 1), value=big)
                nb = torch.stack([p[:, 1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W] for dy, dx in shifts], 0)
                d = torch.where(source, c, c - torch.logsumexp(-beta * nb, dim=0) / beta)
            return torch.sigmoid(d[:, -1:, -1:] - d)

        def outer(a: Tensor, t: Tensor) -> Tensor:
            return ((a - t) ** 2).sum(dim=(-1, -2))

        y = torch.randn(N, H * W, generator=gen)
        return CompositeLoss(inner, outer), y, (truth,)

    return make


def default_cases(quick: bool = False) -> list[Case]:
    ns = (5, 10) if quick else (5, 10, 32)
    cases = [Case(f"pairwise n={n}", 100, n, _pairwise(n)) for n in ns]
    cases.append(Case("softmin-grid 12x12", 70, 144, _softmin_grid()))
    return cases


VARIANTS = {
    "fisher": dict(curvature="fisher"),
    "hessian (rows)": dict(curvature="hessian", solver="dense", hessian_method="rows"),
    "hessian (vmap)": dict(curvature="hessian", solver="dense", hessian_method="vmap"),
    "hessian (cg)": dict(curvature="hessian", solver="cg"),
    "hessian_batch": dict(curvature="hessian_batch"),
    "gauss_newton": dict(curvature="gauss_newton", solver="dense"),
    "gauss_newton (cg)": dict(curvature="gauss_newton", solver="cg"),
}


def _median_time(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run_core(cases: list[Case], variants: dict, repeats: int, lam: float = 0.1,
             out=sys.stdout) -> list[dict]:
    rows = []
    for case in cases:
        gen = torch.Generator().manual_seed(0)
        loss_fn, y0, args = case.make(gen)

        def plain() -> None:
            y = y0.clone().requires_grad_(True)
            out_ = loss_fn(y, *args)
            (out_.mean() if out_.ndim else out_).backward()

        t_plain = _median_time(plain, repeats)
        rows.append(dict(case=case.name, N=case.N, m=case.m, variant="plain backward",
                         seconds=t_plain, ratio=1.0))
        for vname, kw in variants.items():
            if case.m > 64 and "vmap" in vname:
                continue  # per-sample vmap(hessian) at m=144 takes tens of seconds per call
            newton = NewtonLoss(loss_fn, lam=lam, check_hessian="never", **kw)

            def step() -> None:
                y = y0.clone().requires_grad_(True)
                newton(y, *args).backward()

            try:
                t = _median_time(step, repeats)
            except Exception as exc:  # report, don't hide: some variants don't apply
                rows.append(dict(case=case.name, N=case.N, m=case.m, variant=vname,
                                 seconds=None, ratio=None, error=f"{type(exc).__name__}: {exc}"[:80]))
                continue
            d = newton.last_diagnostics
            note = ""
            if d is not None and d.method == "cg":
                note = f"CG {d.cg_iterations} it., {d.n_fallback}/{d.n_matrices} truncated"
            elif d is not None and d.n_indefinite:
                note = f"{d.n_indefinite}/{d.n_matrices} indefinite"
            rows.append(dict(case=case.name, N=case.N, m=case.m, variant=vname, seconds=t,
                             ratio=t / t_plain, note=note))
        _print_case(rows, case.name, out)
    return rows


def dense_reference(loss_fn, y0: Tensor, args: tuple, lam: float) -> Tensor:
    """The straightforward implementation: the full (N·m)×(N·m) Hessian of the summed loss by
    autograd, its |eigenvalue| projection (block-diagonal, so equal to the per-block one) and a
    dense solve. Returns the Newton directions (N, m)."""
    N, m = y0.shape

    def total(flat: Tensor) -> Tensor:
        out = loss_fn(flat.reshape(N, m), *args)
        return out.sum() if out.ndim else out * N

    flat = y0.detach().reshape(-1).to(torch.float64)
    H = torch.autograd.functional.hessian(total, flat, vectorize=True)
    g = torch.autograd.functional.jacobian(total, flat)
    mu, Q = torch.linalg.eigh(0.5 * (H + H.T))
    d = Q @ ((Q.T @ g) / (mu.abs() + lam))
    return d.reshape(N, m)


def run_dense_reference(repeats: int, lam: float = 0.1, out=sys.stdout) -> list[dict]:
    """Our Hessian path vs the dense (N·m)² reference at N = 100, n = 10 (float64)."""
    from newton_losses.sorting import DiffSortNet, RankingLoss

    rows = []
    gen = torch.Generator().manual_seed(0)
    pair_loss, y_pair, pair_args = _pairwise(10)(gen)
    values = torch.randn(100, 10, generator=gen, dtype=torch.float64)
    from newton_losses.sorting import permutation_matrix

    cases = [
        ("pairwise n=10", pair_loss, y_pair.double(), tuple(a.double() for a in pair_args)),
        ("logistic sorting network n=10", RankingLoss(DiffSortNet("odd_even", 10, 10.0)),
         torch.randn(100, 10, generator=gen, dtype=torch.float64), (permutation_matrix(values),)),
    ]
    print("\nHessian path vs a dense reference (full (N·m)×(N·m) autograd Hessian, dense solve), "
          "N=100, m=10, float64", file=out)
    print(f"  {'loss':<32} {'ours ms':>9} {'dense ms':>10} {'speed-up':>9} {'max |Δd|':>10}", file=out)
    for name, loss_fn, y0, args in cases:
        newton = NewtonLoss(loss_fn, curvature="hessian", lam=lam, solver="dense", check_hessian="never")
        ours = (y0 - newton.target(y0, *args)).detach()
        ref = dense_reference(loss_fn, y0, args, lam)
        t_ours = _median_time(lambda: newton.target(y0, *args), repeats)
        # The call above was a first warm-up; one more, then the median of 3 timed calls.
        t_ref = _median_time(lambda: dense_reference(loss_fn, y0, args, lam), 3, warmup=1)
        err = float((ours - ref).abs().max())
        rows.append(dict(case=name, ours_s=t_ours, dense_s=t_ref, speedup=t_ref / t_ours, max_abs_diff=err))
        print(f"  {name:<32} {1e3 * t_ours:>9.2f} {1e3 * t_ref:>10.1f} {t_ref / t_ours:>8.0f}× {err:>10.1e}",
              file=out)
        out.flush()
    return rows


def _print_case(rows: list[dict], name: str, out) -> None:
    sel = [r for r in rows if r["case"] == name]
    print(f"\n{name}  (N={sel[0]['N']}, m={sel[0]['m']})", file=out)
    print(f"  {'variant':<20} {'ms':>9} {'× plain':>9}", file=out)
    for r in sel:
        if r["seconds"] is None:
            print(f"  {r['variant']:<20} {'—':>9} {'—':>9}   {r.get('error', '')}", file=out)
        else:
            print(f"  {r['variant']:<20} {1e3 * r['seconds']:>9.2f} {r['ratio']:>9.2f}   "
                  f"{r.get('note', '')}", file=out)
    out.flush()


def markdown_table(rows: list[dict]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    head = "| variant | " + " | ".join(cases) + " |\n|---|" + "---|" * len(cases) + "\n"
    body = ""
    for v in variants:
        cells = []
        for c in cases:
            r = next((r for r in rows if r["case"] == c and r["variant"] == v), None)
            if r is None:
                cells.append("n/a")
            elif r["ratio"] is None:
                cells.append("fails")
            elif v == "plain backward":
                cells.append(f"1.00 ({1e3 * r['seconds']:.1f} ms)")
            else:
                cells.append(f"{r['ratio']:.2f}")
        body += f"| {v} | " + " | ".join(cells) + " |\n"
    return head + body


SECTIONS = ("loss", "step", "dense", "synthetic", "compile")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="newton-losses bench",
        description="Newton-step cost, in one process: §1 on the package's losses relative to a plain "
                    "backward pass, §2 whole training steps relative to the baseline step and the Newton "
                    "step's share of them (quick and paper networks; predict-then-optimize where PyEPO is "
                    "installed), §3 our Hessian path against a dense (N·m)² reference; then the "
                    "issue-6 targets checked against the measurements. docs/PERFORMANCE.md records "
                    "the output.")
    p.add_argument("--section", action="append", choices=SECTIONS, default=None,
                   help="run only these sections (repeatable; default: loss, step, dense). "
                        "'synthetic' is the stand-alone pairwise/softmin-grid table with every "
                        "solver option; 'compile' times eager against torch.compile'd steps "
                        "(minutes: it compiles every variant)")
    p.add_argument("--no-paper", action="store_true",
                   help="§2 without the paper networks (seconds per step on a CPU)")
    p.add_argument("--quick", action="store_true", help="fewer cases and repeats (a smoke run)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per figure, median (default 15 for losses, 5 for steps; --quick 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--lam", type=float, default=0.1, help="λ for every variant")
    p.add_argument("--json", type=str, default=None, help="also write every row as JSON here")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.repeats is not None and args.repeats < 1:
        p.error(f"--repeats must be >= 1; got {args.repeats}")
    if not args.lam > 0:
        p.error(f"--lam must be > 0; got {args.lam}")
    sections = args.section or ["loss", "step", "dense"]
    loss_repeats = args.repeats or (2 if args.quick else 15)
    step_repeats = args.repeats or (2 if args.quick else 5)
    print("newton-losses bench — what a Newton loss costs")
    print(f"machine: {machine_description()}")
    print(f"each figure: median of {loss_repeats} (losses) / {step_repeats} (steps) interleaved runs; "
          f"λ={args.lam}")
    from newton_lab import bench_step as bs

    rows: list[dict] = []
    dense: list[dict] = []
    if "loss" in sections:
        rows += bs.run_losses(bs.loss_cases(args.quick), loss_repeats, lam=args.lam)
        print("\nMarkdown (the Newton loss's forward+backward relative to the plain loss's; in parentheses its curvature + solve part alone relative to the plain pass; cg: solved by CG):\n")
        print(bs.loss_table(rows))
    if "step" in sections:
        missing = bs.pto_missing()
        if missing:
            print(f"\n{missing}")
        rows += bs.run_steps(bs.step_cases(args.quick, paper=not args.no_paper), step_repeats, lam=args.lam)
        print("\nMarkdown (whole training step, ratio to the baseline step):\n")
        print(bs.step_table(rows))
        print("\nMarkdown (the Newton step's share of each variant's training step: curvature + solve over "
              "the whole step; in parentheses the step relative to the baseline's):\n")
        print(bs.share_table(rows))
    if "dense" in sections:
        dense = run_dense_reference(loss_repeats, lam=args.lam)
    if "synthetic" in sections:
        synthetic = run_core(default_cases(args.quick), VARIANTS, loss_repeats, lam=args.lam)
        print("\nMarkdown (ratio to plain forward+backward of the same loss):\n")
        print(markdown_table(synthetic))
        rows += [{**r, "section": "synthetic"} for r in synthetic]
    if "compile" in sections:
        from newton_lab import bench_compile as bc

        compiled = bc.run_compile(bc.compile_cases(args.quick), args.repeats or (3 if args.quick else 20),
                                  lam=args.lam)
        print("\nMarkdown (eager and torch.compile'd training steps, in one process):\n")
        print(bc.compile_table(compiled))
        rows += compiled
    targets = bs.check_targets(rows, dense)
    if targets:
        print("\nIssue-6 targets, from the figures above:")
        for line in targets:
            print("  " + line)
    if args.json:
        from newton_lab.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(dict(machine=machine_description(), rows=rows,
                                                     dense_reference=dense, targets=targets), indent=2))
    return 0
