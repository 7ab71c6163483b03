"""What a Newton loss does on the batches where the plain gradient spikes.

    python scripts/spike_response.py RUN_DIR [--steps 15000] [--spike 100] [--every 100]
        [--newton fisher:0.1:batch hessian_batch:0.1:batch ...] [--sources K] [--out FILE.md]

RUN_DIR is a committed run (its ``config.json`` is read). The script replays that run's baseline
training (``newton_lab.replay.replay_baseline``: the runner's seeding, batches,
Adam and schedule, checked against the runner's recorded losses) for ``--steps`` steps. At every
step it takes the network-parameter gradient of the plain loss; a step is a *spike* when that
gradient's norm exceeds ``--spike`` × the median norm of the previous 200 steps (after the first
50). At every spike, and at every ``--every``-th ordinary step (the reference), it also takes the
network-parameter gradient of each Newton loss given with ``--newton VARIANT:λ:DAMPING`` — on the
same batch and network state — and records its norm and its cosine with the plain gradient.

Printed (Markdown): a summary per gradient — the typical norm (the median over the reference
steps) and, separately for isolated spikes (no other spike within 100 steps) and spikes in bursts,
their count and the median and range of the norm as multiples of the typical one — then one row
per spike (step, isolated or burst, the plain norm as a multiple of its running median, each
Newton gradient's norm as a multiple of its own typical norm, and the cosine). If a Newton loss acts as a soft gradient clip (RESULTS.md
§2, controls), its norm at the spikes stays near its typical norm while the plain one is many
times larger. The replay follows the *baseline's* trajectory: it shows how each Newton loss would
respond to those batches, not the trajectory a Newton run takes.

``--sources K`` (ranking runs) adds where the K largest excursions of the plain gradient come
from — the K steps with the largest plain norm ÷ running median, spikes or not, so that a run
without spikes shows its largest ones: the gradient of the batch loss with respect to the
network's scores y (B, n), as a multiple of its own running median (a loss-side spike is large
here too; a network-side one is not); the largest set's share of it (‖∂L/∂y_i‖² ÷ ‖∂L/∂y‖²);
that set's loss ÷ the batch's median set loss; the smallest relaxed probability P_ik at that
set's true entries (T_ik = 1; near 0 means confidently wrong); 1 − P_ik at its false entry
(T_ik = 0) nearest 1, computed in float64 and as the run computed it (float32 has nothing between
1 − 2⁻²⁴ and 1, and a relaxation's float32 arithmetic can return exactly 1 for entries a few
1e-8 from 1; the BCE's log(1 − P + ε) then weighs the entry by 1/ε); that set's score-gradient
norm recomputed in float64 ÷ the float32 one (far from 1: the float32 gradient is rounding, not
the loss); and the float64 gradient's relative difference from central differences of the
float64 loss (step 10⁻⁶), which checks it.
"""
from __future__ import annotations

import argparse
import heapq
import statistics
import sys
from collections import deque
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from newton_lab.config import RunConfig
from newton_lab import registry
from newton_lab.replay import fidelity, load_run_config, replay_baseline
from newton_lab.runner import newton_loss_for
from newton_lab.io import atomic_write_text

WINDOW, WARMUP = 200, 50  # running median over the previous WINDOW steps, spikes after WARMUP steps
ISOLATION = 100  # a spike is isolated when no other spike lies within this many steps


def _setting(text: str) -> tuple[str, float, str]:
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected VARIANT:LAMBDA:DAMPING, got {text!r}")
    try:
        lam = float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"λ of {text!r} is not a number") from None
    return parts[0], lam, parts[2]


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def _isolated(steps: list) -> list:
    """For each spike step (sorted), whether no other spike lies within ISOLATION steps of it."""
    return [all(abs(t - u) > ISOLATION for j, u in enumerate(steps) if j != i) for i, t in enumerate(steps)]


def _ratio(x: float, typical: float) -> str:
    return f"{x / typical:.3g}" if typical > 0 else "—"


def _source(s, gy: torch.Tensor, score_median: Optional[float]) -> tuple:
    """Where this step's plain gradient comes from (``--sources``; see the module docstring);
    ``gy`` is ∂L/∂y (B, n) of the batch loss L."""
    per_set = gy.flatten(1).pow(2).sum(1)
    i = int(per_set.argmax())
    share = float(per_set[i] / per_set.sum().clamp_min(1e-300))
    with torch.no_grad():
        set_losses = s.task.loss_fn(s.y, s.target)
        P = s.task.loss_fn.inner(s.y[i:i + 1])[0]
    loss_ratio = float(set_losses[i] / set_losses.median().clamp_min(1e-300))
    p_true = float(P[s.target[i] > 0.5].min())
    y64 = s.y[i:i + 1].detach().double().requires_grad_(True)
    with torch.no_grad():  # 1 − P at the false entry nearest 1, in float64 and as the run computed it
        false = s.target[i] < 0.5
        gaps64 = 1 - s.task.loss_fn.inner(y64)[0][false]
        k = int(gaps64.argmin())
        gap, gap_run = float(gaps64[k]), float(1 - P[false][k].clamp(0, 1))
    # The batch loss is the mean over sets: set i's part of ∂L/∂y is its own gradient ÷ B.
    t64 = s.target[i:i + 1].double()
    g64 = torch.autograd.grad(s.task.loss_fn(y64, t64).sum(), y64)[0]
    precision = float(g64.norm() / len(gy) / gy[i].norm().clamp_min(1e-300))
    with torch.no_grad():  # the float64 gradient checked by central differences (step 1e-6)
        eye = 1e-6 * torch.eye(y64.shape[1], dtype=torch.float64)
        fd = torch.stack([(s.task.loss_fn(y64 + e, t64) - s.task.loss_fn(y64 - e, t64)).sum() / 2e-6 for e in eye])
    fd_error = float((g64[0] - fd).norm() / fd.norm().clamp_min(1e-300))
    excess = float(gy.norm()) / score_median if score_median else float("nan")
    return excess, share, loss_ratio, p_true, gap, gap_run, precision, fd_error


def trace(cfg: RunConfig, settings: list, *, steps: int, spike: float, every: int, progress: bool = True,
          sources: int = 0):
    """Replay and measure; returns (spike rows — step, plain norm ÷ running median, batch loss and
    (norm, cosine) per gradient —, reference norms per gradient, skipped measurements per
    gradient, every replayed step's plain loss, source rows). Gradient 0 is the plain loss's, then
    one per Newton setting; a Newton loss that skipped a batch (non-finite values) is counted in
    ``skipped``, not in the norms. With ``sources`` = K > 0, the source rows are the K steps with
    the largest plain norm ÷ running median: (step, that ratio, :func:`_source`'s values),
    largest first."""
    losses = [cfg.replace(variant=v, lam=lam, damping=d).validate() for v, lam, d in settings]
    newton = None
    recent: deque = deque(maxlen=WINDOW)
    recent_scores: deque = deque(maxlen=WINDOW)
    top: list = []  # heap of (ratio, step, source values), the K largest excursions
    reference = [[] for _ in range(1 + len(settings))]
    rows, skipped, seen = [], [0] * (1 + len(settings)), []
    bar = tqdm(total=steps, desc="replay", unit="step", file=sys.stderr, disable=not progress)
    for s in replay_baseline(cfg, steps):
        bar.update(1)
        if newton is None:
            newton = [newton_loss_for(c, s.task) for c in losses]
        seen.append(float(s.loss.detach()))
        plain = _flat(torch.autograd.grad(s.loss, s.params, retain_graph=True))
        norm = float(plain.norm())
        median = statistics.median(recent) if len(recent) >= WARMUP else None
        recent.append(norm)
        is_spike = median is not None and median > 0 and norm > spike * median
        if sources:
            gy = torch.autograd.grad(s.loss, s.y, retain_graph=True)[0].detach()
            score_median = statistics.median(recent_scores) if len(recent_scores) >= WARMUP else None
            recent_scores.append(float(gy.norm()))
            ratio = norm / median if median else 0.0
            if median and (len(top) < sources or ratio > top[0][0]):
                item = (ratio, s.step, _source(s, gy, score_median))
                (heapq.heappush if len(top) < sources else heapq.heapreplace)(top, item)
        if not is_spike and s.step % every:
            continue
        cells = [(norm, 1.0)]
        for loss in newton:
            value = loss(s.y, s.target)
            if loss.last_diagnostics.skipped:
                cells.append((float("nan"), float("nan")))
                continue
            g = _flat(torch.autograd.grad(value, s.params, retain_graph=True))
            cos = float(g @ plain / (g.norm() * plain.norm()).clamp_min(1e-300))
            cells.append((float(g.norm()), cos))
        for k, (n, _) in enumerate(cells):
            if n != n:  # a skipped Newton loss (non-finite values) is counted apart, not averaged
                skipped[k] += 1
            elif not is_spike:  # the spikes' norms stay in their rows
                reference[k].append(n)
        if is_spike:
            rows.append((s.step, norm / median, float(s.loss.detach()), cells))
            bar.set_postfix(spikes=len(rows))
    bar.close()
    return rows, reference, skipped, seen, [(step, r, *src) for r, step, src in sorted(top, reverse=True)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--steps", type=int, default=15000, help="baseline training steps (default 15000)")
    ap.add_argument("--spike", type=float, default=100.0,
                    help="a spike: plain gradient norm above this × its running median (default 100)")
    ap.add_argument("--every", type=int, default=100, help="reference measurement every k ordinary steps")
    ap.add_argument("--newton", type=_setting, nargs="+", metavar="VARIANT:LAMBDA:DAMPING",
                    default=[("fisher", 0.1, "batch"), ("hessian_batch", 0.1, "batch")],
                    help="Newton losses to compare (default fisher:0.1:batch hessian_batch:0.1:batch)")
    ap.add_argument("--max-rows", type=int, default=40, help="spike rows printed (the summary counts all)")
    ap.add_argument("--sources", type=int, default=0, metavar="K",
                    help="also show where the K largest plain-gradient excursions come from (ranking runs)")
    ap.add_argument("--out", type=Path, help="also write the output to this file (atomically)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.every < 1 or args.max_rows < 0 or args.sources < 0:
        ap.error("--steps and --every must be >= 1, --max-rows and --sources >= 0")
    if not args.spike > 1:
        ap.error(f"--spike must be > 1, got {args.spike}")
    try:
        cfg = load_run_config(args.run_dir)
    except ValueError as exc:
        ap.error(str(exc))
    if args.sources and cfg.task != "ranking":
        ap.error("--sources needs a ranking run (it reads the relaxed permutation matrix)")
    if registry.method(cfg.task, cfg.method).stochastic:
        ap.error(f"method {cfg.method!r} draws noise: Newton losses evaluated beside the replay would "
                 "draw from the same generator and change the replayed trajectory")
    for v, lam, d in args.newton:
        if v == "none":
            ap.error("--newton: variant 'none' is the plain loss, which is always measured")
        try:
            cfg.replace(variant=v, lam=lam, damping=d).validate()
        except (TypeError, ValueError) as exc:
            ap.error(f"--newton {v}:{lam:g}:{d}: {exc}")

    rows, reference, skipped, seen, source_rows = trace(cfg, args.newton, steps=args.steps, spike=args.spike,
                                                        every=args.every, progress=not args.quiet,
                                                        sources=args.sources)
    names = ["plain"] + [f"NL-{v} λ={lam:g} {d}" for v, lam, d in args.newton]
    typical = [statistics.median(r) if r else float("nan") for r in reference]
    out = [f"Baseline replay of `{args.run_dir}` ({cfg.method} {cfg.method_args}, n = {cfg.n}, seed "
           f"{cfg.seed}), {args.steps:,} steps: {len(rows)} spikes (plain gradient norm > {args.spike:g}× "
           f"its running median), {len(reference[0])} reference steps. "
           f"Command: `python scripts/spike_response.py {args.run_dir} --steps {args.steps} "
           f"--spike {args.spike:g} --every {args.every} --max-rows {args.max_rows} "
           + (f"--sources {args.sources} " if args.sources else "") + "--newton "
           + " ".join(f"{v}:{lam:g}:{d}" for v, lam, d in args.newton) + "`. "
           + fidelity(args.run_dir, seen, cfg.eval_every), "",
           f"Isolated spikes have no other spike within {ISOLATION} steps; the others come in bursts.", "",
           "| gradient | typical norm (median over the reference steps) | isolated spikes — count: median "
           "norm ÷ typical (range) | spikes in bursts — count: median norm ÷ typical (range) "
           "| batches skipped (non-finite) |", "|---|---|---|---|---|"]
    isolated = _isolated([r[0] for r in rows])
    for k, name in enumerate(names):
        cells = []
        for kind in (True, False):
            vals = [r[3][k][0] for r, iso in zip(rows, isolated) if iso == kind and r[3][k][0] == r[3][k][0]]
            cells.append(f"{len(vals)}: {_ratio(statistics.median(vals), typical[k])} "
                         f"({_ratio(min(vals), typical[k])}–{_ratio(max(vals), typical[k])})" if vals else "0: —")
        out.append(f"| {name} | {typical[k]:.3g} | {cells[0]} | {cells[1]} | {skipped[k]} |")
    out += ["", "Per spike: the plain norm as a multiple of its running median (the spike criterion); each "
            "Newton gradient's norm as a multiple of its typical norm above (the median over the whole "
            "replay's reference steps), and its cosine with the plain gradient.", "",
            "| step | kind | batch loss | plain norm ÷ running median | "
            + " | ".join(f"{n}: norm ÷ typical, cos" for n in names[1:]) + " |",
            "|---|---|---|---|" + "---|" * (len(names) - 1)]
    for (step, excess, loss, cells), iso in list(zip(rows, isolated))[:args.max_rows]:
        out.append(f"| {step} | {'isolated' if iso else 'burst'} | {loss:.4g} | {excess:.3g} | "
                   + " | ".join(f"{_ratio(n, typical[k + 1])}, {c:.2f}" for k, (n, c) in enumerate(cells[1:]))
                   + " |")
    if len(rows) > args.max_rows:
        out.append(f"\n({len(rows) - args.max_rows} more spikes not listed; all are in the summary.)")
    if source_rows:
        out += ["", f"Where the {len(source_rows)} largest excursions of the plain gradient come from (largest "
                "first; spikes or not): the score gradient ∂L/∂y as a multiple of its running median; the "
                "largest set's share of ‖∂L/∂y‖²; that set's loss ÷ the batch's median set loss; the smallest "
                "relaxed probability at its true entries; 1 − P at its false entry nearest 1, in float64 and as "
                "the run computed it (its dtype, after the BCE's clamp to [0, 1]); its "
                "score-gradient norm in float64 ÷ float32; the float64 gradient's relative difference from central "
                "differences (step 1e-6).", "",
                "| step | plain norm ÷ running median | score gradient ÷ running median | largest set's share "
                "| its loss ÷ median | its smallest P at a true entry | 1 − its largest P at a false entry: "
                "float64 | as run | float64 ÷ float32 | float64 vs differences |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for step, r, excess, share, loss_ratio, p_true, gap, gap_run, precision, fd_error in source_rows:
            out.append(f"| {step} | {r:.3g} | {excess:.3g} | {share:.3f} | {loss_ratio:.3g} | {p_true:.3g} "
                       f"| {gap:.3g} | {gap_run:.3g} | {precision:.4g} | {fd_error:.1e} |")
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
