"""Curvature along a baseline run: how the per-sample Hessian and the Newton direction change as
the network learns.

    python scripts/curvature_trace.py RUN_DIR [--steps 351] [--every 50] [--lam 10 ...]

RUN_DIR is a committed run (its ``config.json`` is read). The script replays that run's
*baseline* (``newton_lab.replay.replay_baseline``): the plain loss with the
runner's seeding (model initialization, batch order), data, Adam learning rate and schedule —
the training a ``variant="none"`` run of the same configuration does — for ``--steps`` steps
and, every ``--every`` steps, on that step's batch (before the step), measures:

- the per-sample Hessians ∇²ℓ_i(y_i) (m × m, computed in the run's dtype by autograd, their
  eigenvalues in float64): quantiles over the batch (min / median / max) of each set's smallest
  and of each set's largest eigenvalue; values below 10⁻⁶ of the batch's largest |eigenvalue|
  print as 0 (rounding); and s, their mean |eigenvalue| over all N·m eigenvalues — the unit of
  ``damping="batch"`` for ``curvature="hessian"`` (λ_added = λ·s);
- the two shared matrices: the eigenvalues (min / median / max) of the batch-averaged Hessian
  (1/N) Σ_i ∇²ℓ_i and of the empirical Fisher (1/N) Σ_i g_i g_iᵀ, how many of them are zero
  (|μ| ≤ 10⁻⁶ of the largest), the smallest other |eigenvalue|, and the mean |eigenvalue| s —
  the unit of ``damping="batch"`` for ``hessian_batch`` and ``fisher`` — so that a λ grid can
  be read against the curvature's eigenvalue range;
- the Newton loss's own matrices, as its diagnostics report them (``NewtonDiagnostics``: the
  smallest and largest eigenvalue over the batch's matrices, and its damping unit s = λ_added /
  λ) — for ``gauss_newton`` the per-set Gauss-Newton matrices J_iᵀ ∇²h_i J_i, which the other
  columns do not show; "—" where the solve was matrix-free (CG);
- for each λ: the cosine between the network-parameter gradient of the Newton loss (the run's
  variant, damping, projection and CG cap, with that λ) and that of the plain loss, over the
  whole batch, and the ratio of their norms ‖∇θ Newton‖ / ‖∇θ plain‖. A batch the Newton loss
  skips (non-finite values) prints as ``skipped``.

A cosine near 1 means the Newton loss is a rescaled gradient (Adam undoes the scale); a cosine far
from 1 means the curvature changes the direction. Output: a Markdown table on stdout, then a
sentence saying whether the replay followed the recorded losses of the baseline run (RUN_DIR,
or for a Newton run the baseline of its configuration in the same folder; the intervals it
covered; a run trained on another CPU can part from it). For the ``hessian``,
``hessian_batch``, ``fisher`` and ``gauss_newton`` variants.

Stochastic methods (the perturbed losses: ``pto``'s DPO and PFYL, the shortest-path task's
perturbed ones): their Hessian is an estimator built from the loss's own Monte-Carlo samples, not
something autograd can differentiate, so for ``hessian`` and ``gauss_newton`` the per-set and
batch-averaged columns show *the variant's estimate* on the measured step's samples (a
matrix-free estimate is materialized by m products with unit vectors), and "—" for ``fisher``.
Losses whose gradient does not depend on the outputs differentiably (piecewise-linear ones such
as SPO+ and DBB: their Hessian is zero almost everywhere) print "—" there as well, with the
``fisher`` variant traced. Their gradient is itself an
estimate: at a measured step every Newton loss and a plain reference loss draw the *same*
samples (the task's noise generator is rewound to where the replay left it before each of them,
and left there afterwards, so the replay's own stream is unchanged), and the cosine and the norm
ratio compare the Newton gradient with that reference's; the column "plain vs plain" gives the
cosine of two plain gradients on independent samples — the sampling noise a cosine must beat
to mean anything.

Used for RESULTS.md §2 (NL-Gauss-Newton at λ = 1 and 10), §3 (the λ grid against the
eigenvalues), §4 (the relaxed Bellman-Ford NL-Hessian runs) and §5 (predict-then-optimize).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from newton_losses.curvature import empirical_fisher, hessian_blocks
from newton_lab import registry
from newton_lab.replay import fidelity, load_run_config, replay_baseline
from newton_lab.runner import newton_loss_for

VARIANTS = ("hessian", "hessian_batch", "fisher", "gauss_newton")
#: An eigenvalue with |μ| at most this fraction of the largest |μ| counts as zero (rounding).
ZERO_REL = 1e-6


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def _quantiles(v: torch.Tensor, scale: float) -> str:
    q = v.quantile(torch.tensor([0.0, 0.5, 1.0], dtype=v.dtype)).tolist()
    return " / ".join("0" if abs(x) <= ZERO_REL * scale else f"{x:.2g}" for x in q)


def _spectrum(C: torch.Tensor) -> str:
    """Eigenvalues of one symmetric matrix: min / median / max; how many are zero (|μ| ≤ 10⁻⁶ of
    the largest |μ|) and the smallest other |μ|; the mean |eigenvalue| s."""
    ev = torch.linalg.eigvalsh(C)
    a = ev.abs()
    scale = float(a.max())
    zero = a <= ZERO_REL * scale
    other = f"{float(a[~zero].min()):.2g}" if bool((~zero).any()) else "—"
    return (f"{_quantiles(ev, scale)}; {int(zero.sum())} zero, smallest other {other}; "
            f"s = {float(a.mean()):.2g}")


def _own_matrices(d) -> str:
    """The Newton loss's matrices from its diagnostics: min / max eigenvalue over the batch; s."""
    s = f"s = {d.lam_effective / d.lam:.2g}" if d.lam > 0 else "s: —"
    if d.min_eig is None or d.max_eig is None:
        return f" — ; {s} |"
    return f" {d.min_eig:.2g} / {d.max_eig:.2g}; {s} |"


def _materialize(est, N: int, m: int) -> torch.Tensor:
    """A CurvatureEstimate's per-set matrices (N, m, m) in float64, symmetrized (a shared matrix
    repeated; a matvec applied to the m unit vectors)."""
    if est.matrix is not None:
        M = est.matrix.detach().to(torch.float64)
        M = M.expand(N, m, m) if M.ndim == 2 else M
    elif est.low_rank is not None:
        G = est.low_rank.detach().to(torch.float64)
        M = (G.T @ G / (est.n_total or G.shape[0])).expand(N, m, m)
    else:
        cols = [est.matvec(torch.zeros(N, m).index_fill_(1, torch.tensor([k]), 1.0)).detach() for k in range(m)]
        M = torch.stack(cols, dim=-1).to(torch.float64)  # column k of each set's matrix
    return 0.5 * (M + M.transpose(-1, -2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--steps", type=int, default=351, help="baseline training steps (default 351)")
    ap.add_argument("--every", type=int, default=50, help="measure every k steps (default 50)")
    ap.add_argument("--lam", type=float, nargs="+", default=None,
                    help="λ values of the Newton loss (default: the run's λ)")
    ap.add_argument("--variant", choices=VARIANTS, default=None,
                    help="Newton variant (default: the run's; a baseline run needs one)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        ap.error("--steps and --every must be >= 1")

    try:
        cfg = load_run_config(args.run_dir)
    except ValueError as exc:
        ap.error(str(exc))
    variant = args.variant or (cfg.variant if cfg.variant != "none" else None)
    if variant is None:
        ap.error("the run is a baseline: name a Newton variant with --variant")
    if variant not in VARIANTS:
        ap.error(f"variant {variant!r} is not traced by this script (supported: {', '.join(VARIANTS)})")
    stochastic = registry.method(cfg.task, cfg.method).stochastic
    lams = args.lam or [cfg.lam]
    try:  # every Newton configuration is checked before the replay starts
        configs = {lam: cfg.replace(variant=variant, lam=lam).validate() for lam in lams}
    except ValueError as exc:
        ap.error(f"the Newton loss cannot be built for this run: {exc}")
    cg = f", CG ≤ {cfg.cg_max_iter}" if cfg.cg_max_iter else ""
    print(f"Baseline training of {args.run_dir} ({cfg.task}, {cfg.method} {cfg.method_args}, seed "
          f"{cfg.seed}); Newton loss: {variant}, {cfg.damping} damping, projection {cfg.projection}{cg}\n")
    head = ("| step | batch loss | smallest eigenvalue per set (min / median / max over the batch) "
            "| largest eigenvalue per set (min / median / max), s | batch-averaged Hessian: eigenvalues "
            "(min / median / max); zeros, smallest other; s | Fisher: the same "
            f"| NL-{variant}'s matrices (diagnostics): min / max eigenvalue; s |")
    head += "".join(f" λ={lam:g}: cos, ‖∇θ Newton‖/‖∇θ plain‖ |" for lam in lams)
    if stochastic:
        head += " plain vs plain (other samples): cos |"
    print(head)
    print("|" + "---|" * (7 + len(lams) + stochastic))
    newton, seen = None, []
    for s in replay_baseline(cfg, args.steps):
        seen.append(float(s.loss.detach()))
        if newton is None:
            newton = {lam: newton_loss_for(c, s.task) for lam, c in configs.items()}
        if s.step % args.every:
            continue
        N = s.y.shape[0]
        noise = getattr(s.task, "noise", None) if stochastic else None
        state = noise.get_state() if noise is not None else None

        def rewind() -> None:  # the same samples for every loss below; the replay's stream kept
            if state is not None:
                noise.set_state(state)

        rewind()
        yf = s.y.detach().reshape(N, -1).requires_grad_(True)
        (g,) = torch.autograd.grad(s.task.loss_fn(yf.reshape(s.y.shape), s.target).sum(), yf,
                                   create_graph=not stochastic)
        fisher = _spectrum(empirical_fisher(g.detach(), distributed=False)[0])
        flat = not stochastic and g.grad_fn is None  # piecewise linear (SPO+, DBB): no Hessian
        if stochastic or flat:
            hess_cells = "— | —, s = — | — |"  # stochastic: filled in from the variant's estimate below
        else:
            H = hessian_blocks(g, yf).detach().to(torch.float64)
            ev = torch.linalg.eigvalsh(H)
            scale = float(ev.abs().max())
            hess_cells = (f"{_quantiles(ev[:, 0], scale)} | {_quantiles(ev[:, -1], scale)}, "
                          f"s = {float(ev.abs().mean()):.2g} | {_spectrum(H.mean(0))} |")
        if stochastic:  # the reference on the Newton losses' samples; the replay's on its own
            rewind()
            plain = _flat(torch.autograd.grad(s.task.loss_fn(s.y, s.target).mean(), s.params, retain_graph=True))
            replay_plain = _flat(torch.autograd.grad(s.loss, s.params, retain_graph=True))
        else:
            plain = _flat(torch.autograd.grad(s.loss, s.params, retain_graph=True))
        cells = []
        for lam in lams:
            rewind()
            value = newton[lam](s.y, s.target)
            if newton[lam].last_diagnostics.skipped:
                cells.append(" skipped |")
                continue
            ng = _flat(torch.autograd.grad(value, s.params, retain_graph=True))
            cos = float(ng @ plain / (ng.norm() * plain.norm()).clamp_min(1e-300))
            cells.append(f" {cos:.2f}, {float(ng.norm() / plain.norm().clamp_min(1e-300)):.2g} |")
        if stochastic:
            cos = float(replay_plain @ plain / (replay_plain.norm() * plain.norm()).clamp_min(1e-300))
            cells.append(f" {cos:.2f} |")
            est = newton[lams[-1]].curvature
            if callable(est):  # the estimate from the last λ's forward samples (the same for every λ)
                E = _materialize(est(s.y.detach().reshape(N, -1), g.detach(), s.target), N, g.shape[-1])
                ev = torch.linalg.eigvalsh(E)
                scale = float(ev.abs().max())
                hess_cells = (f"{_quantiles(ev[:, 0], scale)} | {_quantiles(ev[:, -1], scale)}, "
                              f"s = {float(ev.abs().mean()):.2g} | {_spectrum(E.mean(0))} |")
        rewind()
        # The matrices do not depend on λ: the first λ whose call was not skipped reports them.
        done = [newton[lam].last_diagnostics for lam in lams if not newton[lam].last_diagnostics.skipped]
        own = _own_matrices(done[0]) if done else " skipped |"
        print(f"| {s.step} | {s.loss.item():.4f} | {hess_cells} {fisher} |{own}" + "".join(cells), flush=True)
    print("\n" + fidelity(args.run_dir, seen, cfg.eval_every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
