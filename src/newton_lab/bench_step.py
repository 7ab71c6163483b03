"""Benchmarks on the package's real losses and the experiment protocols' networks.

Two sections of ``newton-losses bench`` (see :mod:`newton_lab.bench`):

- :func:`run_losses` — the Newton-step cost (curvature + solve, plus the loss's own forward
  and backward) relative to a plain backward pass of the same loss: sorting relaxations at
  batch 100 with n ∈ {5, 10, 32}, relaxed Bellman-Ford on 12×12 grids at batch 70, and the
  stochastic losses (smoothing, perturbed optimizer + Fenchel-Young) with 10 samples.
- :func:`run_steps` — the whole training step (forward through the network, loss or Newton
  loss, backward, Adam) of each Newton variant relative to the baseline's step, and the Newton
  step's share of it (curvature + solve over the variant's whole step), for the quick and the
  paper networks of the ranking (n = 5, 10) and shortest-path protocols, and for
  predict-then-optimize (task ``pto``: PyEPO's 5×5 grid shortest path, its linear model, batch 32;
  SPO+ and PFYL with Fisher, PFYL and DPO with their Stein Hessian estimators, DPO with
  Gauss-Newton — left out, with a note, where PyEPO is not installed).

Both use the experiment runner's own construction of the loss and of the Newton loss
(:func:`~newton_lab.runner.newton_loss_for`), so they time what training runs.
Timings are interleaved (one repeat of every variant, then the next repeat) so that slow drifts
of a noisy machine hit every variant alike; each figure is the median over repeats.
"""
from __future__ import annotations

import copy
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from newton_lab import registry
from newton_lab.config import RunConfig, protocol_config
from newton_lab.runner import build_task, newton_loss_for

__all__ = ["LossCase", "StepCase", "loss_cases", "step_cases", "pto_step_cases", "pto_missing", "run_losses",
           "run_steps", "loss_table", "step_table", "share_table", "check_targets"]



@dataclass
class LossCase:
    """A loss at a size: ``cfg`` names the method (a run configuration), ``N`` the batch."""

    name: str
    cfg: RunConfig
    N: int
    variants: tuple

    @property
    def m(self) -> int:
        return registry.task(self.cfg.task).output_size(self.cfg)


@dataclass
class StepCase:
    """A training step: a protocol's network, data shapes, method and batch size."""

    name: str
    cfg: RunConfig
    variants: tuple


def _variants(cfg: RunConfig) -> tuple:
    """The Newton variants a configuration's method supports."""
    m = registry.method(cfg.task, cfg.method)
    return tuple(v for v in registry.variants() if v != "none" and m.supports(v))


def _name(cfg: RunConfig) -> str:
    """A case's name: the method spec (registry naming) and its columns (``n=5``)."""
    cols = "".join(f" {c}={getattr(cfg, c)}" for c in registry.task(cfg.task).columns)
    return registry.format_spec(cfg.task, cfg.method, cfg.method_args) + cols


#: Variant labels of the form ``"hessian@cg2"``: the Hessian by HVP + conjugate gradients
#: stopped after 2 iterations (an inexact Newton step; ``NewtonLoss(cg_max_iter=2)``).
TRUNCATED_CG = "hessian@cg2"


def _parse_variant(label: str) -> tuple[str, dict]:
    """``"hessian@cg2"`` → ("hessian", {"cg_max_iter": 2}); other labels unchanged."""
    if "@cg" in label:
        name, cap = label.split("@cg")
        return name, {"cg_max_iter": int(cap)}
    return label, {}


def loss_cases(quick: bool = False) -> list[LossCase]:
    """The losses of issue 6 §1 (``quick``: n ∈ {5, 10} and fewer cases, for smoke tests)."""
    cases = []
    for n in ((5, 10) if quick else (5, 10, 32)):
        for method in ("neuralsort", "softsort", "odd_even"):
            cfg = protocol_config("ranking", "tiny", method=method, n=n)
            cases.append(LossCase(_name(cfg), cfg, 100, _variants(cfg)))
    for method in (("bf_for",) if quick else ("bf_for", "smoothed_loss", "perturbed_fy")):
        cfg = protocol_config("shortest_path", "tiny", method=method)
        # hessian_batch at m = 144 needs 144 double-backward passes (seconds per call); §2 times it.
        variants = tuple(v for v in _variants(cfg) if v != "hessian_batch")
        if method == "bf_for":
            variants += (TRUNCATED_CG,)
        cases.append(LossCase(_name(cfg) + " 12x12", cfg, 70, variants))
    return cases


def step_cases(quick: bool = False, paper: bool = True, pto: bool = True) -> list[StepCase]:
    """The training steps of issue 6 §2: quick and paper networks (``paper=False`` drops the
    paper networks, which take seconds per step on a CPU), and, with ``pto`` and PyEPO
    installed, the predict-then-optimize steps of :func:`pto_step_cases` (issue 25)."""
    ranking = [("neuralsort", 5), ("neuralsort", 10), ("odd_even", 10)]
    paths = ["bf_for", "smoothed_loss", "perturbed_fy"]
    protocols = [("quick", "MLP 14x56", "small CNN")]
    if paper:
        protocols.append(("paper", "CNN 28x112", "ResNet18 stem"))
    cases = []
    for protocol, rnet, pnet in protocols:
        for method, n in (ranking[:1] if quick else ranking):
            cfg = protocol_config("ranking", protocol, method=method, n=n,
                                  data="synthetic", synthetic_size=600, val_sets=1, test_sets=1)
            cases.append(StepCase(f"ranking {protocol} ({rnet}), {_name(cfg)}, batch 100", cfg,
                                  ("none",) + _variants(cfg)))
        for method in (paths[:1] if quick else paths):
            cfg = protocol_config("shortest_path", protocol, method=method,
                                  data="synthetic", synthetic_size=150, train_size=140,
                                  val_sets=5, test_sets=5)
            extra = (TRUNCATED_CG,) if method == "bf_for" else ()
            cases.append(StepCase(f"shortest path {protocol} ({pnet}), {_name(cfg)}, batch 70", cfg,
                                  ("none",) + _variants(cfg) + extra))
    if pto and pto_missing() is None:
        cases += pto_step_cases(quick)
    return cases


#: The predict-then-optimize step cases: method -> the variants timed against its baseline
#: (issue 25: SPO+, PFYL and DPO with Fisher; PFYL and DPO with their Stein Hessian estimators;
#: DPO with Gauss-Newton).
PTO_VARIANTS = {"spo_plus": ("fisher",), "pfyl": ("fisher", "hessian"), "dpo": ("fisher", "hessian", "gauss_newton")}


def pto_missing() -> Optional[str]:
    """Why the ``pto`` cases cannot run here (PyEPO or OR-Tools not installed), else None."""
    from newton_lab.tasks.pyepo import INSTALL_HINT, installed

    missing = [m for m in ("pyepo", "ortools") if not installed(m)]
    if missing:
        return f"predict-then-optimize (pto) steps left out: {' and '.join(missing)} not installed ({INSTALL_HINT})"
    return None


def pto_step_cases(quick: bool = False) -> list[StepCase]:
    """Predict-then-optimize training steps (task ``pto``, protocol ``pyepo``): PyEPO's 5×5 grid
    shortest path (40 arcs, degree 4, noise 0.5, 1,000 training instances, the exact grid solver
    the study uses), its linear model, batch 32, PyEPO's defaults for DPO and PFYL (σ = 1, 10
    samples). Every batch is full (``last_batch="full"``: the bench draws more batches than an
    epoch has). ``quick``: PFYL only. Needs PyEPO (see :func:`pto_missing`)."""
    cases = []
    for method, variants in PTO_VARIANTS.items():
        if quick and method != "pfyl":
            continue
        cfg = protocol_config("pto", "pyepo", method=method, val_sets=32, test_sets=32,
                              task_args={"problem": "shortest_path", "deg": 4, "noise": 0.5,
                                         "last_batch": "full"})
        spec = registry.format_spec("pto", cfg.method, cfg.method_args)
        cases.append(StepCase(f"pto shortest path 5x5 (linear), {spec}, batch {cfg.batch_size}", cfg,
                              ("none",) + variants))
    return cases


# ----------------------------------------------------------------------------------------------
class _LossOnly:
    """The loss of a run configuration without its data or network (for :func:`run_losses`)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.loss_fn, self._loss = registry.task(cfg.task).build_loss(cfg, torch.Generator().manual_seed(0))

    def curvature(self, variant: str):
        return registry.curvature(registry.method(self.cfg.task, self.cfg.method), self._loss, variant)


def _interleaved(fns: dict, repeats: int, warmup: int = 1, newtons: Optional[dict] = None) -> tuple[dict, dict, dict]:
    """Median seconds of each callable, timing one call of every callable per round.

    Returns ``(times, parts, spreads)``: ``spreads[k]`` is the relative half-range of the
    callable's timed calls, (max − min) / (2 · median) — how far one figure can be off on this
    machine; ``parts[k]`` holds, for a callable with a Newton loss in
    ``newtons``, the medians over the timed calls of the Newton loss's own split — ``grad_s``
    (the loss's forward and per-sample gradient inside it) and ``step_s`` (curvature + solve:
    what the Newton step adds) — read from ``last_diagnostics`` after every call — and ``share``,
    the median over the timed calls of each call's curvature + solve time over its whole time.
    """
    newtons = newtons or {}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {k: [] for k in fns}
    split: dict = {k: ([], [], []) for k in fns if newtons.get(k) is not None}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            times[k].append(elapsed)
            if k in split:
                d = newtons[k].last_diagnostics
                split[k][0].append(d.time_gradient_s)
                split[k][1].append(d.time_curvature_s + d.time_solve_s)
                split[k][2].append(split[k][1][-1] / elapsed if elapsed > 0 else 0.0)
    parts = {k: dict(grad_s=statistics.median(g), step_s=statistics.median(c), share=statistics.median(f))
             for k, (g, c, f) in split.items()}
    medians = {k: statistics.median(v) for k, v in times.items()}
    spreads = {k: (max(v) - min(v)) / (2 * medians[k]) if medians[k] > 0 else 0.0 for k, v in times.items()}
    return medians, parts, spreads


def _how(newton) -> str:
    d = newton.last_diagnostics if newton is not None else None
    if d is None:
        return ""
    return d.method + (f", CG {d.cg_iterations} it." if d.method == "cg" else "")


def run_losses(cases: list[LossCase], repeats: int, lam: float = 0.1, out=sys.stdout) -> list[dict]:
    """Newton loss forward+backward relative to the plain loss's, per case and variant."""
    print("\n§1 Newton-step cost on the package's losses (λ={lam}, absolute damping, automatic "
          "solver). 'plain' is a forward and backward pass of the loss alone; for each variant: the "
          "whole Newton-loss forward+backward, and its curvature + solve part alone (the Newton "
          "step's own cost; the rest is the loss's forward and gradient, which a plain pass also "
          "pays). Medians over repeats.".format(lam=lam), file=out)
    rows = []
    for case in cases:
        gen = torch.Generator().manual_seed(0)
        y0, target = registry.task(case.cfg.task).random_batch(case.cfg, case.N, gen)
        base = _LossOnly(case.cfg)

        def plain(base=base, y0=y0, target=target) -> None:
            y = y0.clone().requires_grad_(True)
            base.loss_fn(y, target).mean().backward()

        fns, newtons = {"plain backward": plain}, {}
        for label in case.variants:
            v, extra = _parse_variant(label)
            cfg = case.cfg.replace(variant=v, lam=lam).validate()
            newton = newton_loss_for(cfg, _LossOnly(cfg), check_hessian="never", **extra)
            newtons[label] = newton

            def step(newton=newton, y0=y0, target=target) -> None:
                y = y0.clone().requires_grad_(True)
                newton(y, target).backward()

            fns[label] = step
        times, parts, _ = _interleaved(fns, repeats, newtons=newtons)
        t_plain = times["plain backward"]
        print(f"\n{case.name}  (N={case.N}, m={case.m})", file=out)
        print(f"  {'variant':<16} {'ms':>9} {'× plain':>8}  {'curv+solve ms':>13} {'× plain':>8}  how",
              file=out)
        for v, t in times.items():
            p = parts.get(v, dict(grad_s=0.0, step_s=0.0))
            rows.append(dict(section="loss", case=case.name, N=case.N, m=case.m, variant=v,
                             seconds=t, ratio=t / t_plain, newton_s=p["step_s"], grad_s=p["grad_s"],
                             step_ratio=p["step_s"] / t_plain, how=_how(newtons.get(v))))
            print(f"  {v:<16} {1e3 * t:>9.2f} {t / t_plain:>8.2f}  {1e3 * p['step_s']:>13.2f} "
                  f"{p['step_s'] / t_plain:>8.2f}  {rows[-1]['how']}", file=out)
        out.flush()
    return rows


def run_steps(cases: list[StepCase], repeats: int, lam: float = 0.1, out=sys.stdout,
              progress: bool = True) -> list[dict]:
    """Whole training-step time of each variant relative to the baseline step.

    A step is what the runner does per batch, minus drawing the batch (the same for every
    variant): network forward, loss or Newton loss, backward, Adam update. Every variant trains
    its own copy of one initialization on the same batches.
    """
    print("\n§2 Whole training step (forward, loss or Newton loss, backward, Adam) relative to the "
          f"baseline step (λ={lam}; the batch is drawn outside the timed region); Newton share: the "
          "curvature + solve part of the variant's own step (median over the timed steps)", file=out)
    rows = []
    for case in cases:
        torch.manual_seed(0)
        task = build_task(case.cfg, torch.device("cpu"), torch.float32)
        gen = torch.Generator().manual_seed(0)
        batches = [task.sample(case.cfg.batch_size, gen) for _ in range(repeats + 1)]
        fns, newtons = {}, {}
        for label in case.variants:
            v, extra = _parse_variant(label)
            cfg = case.cfg.replace(variant=v, lam=lam if v != "none" else 0.0).validate()
            model = copy.deepcopy(task.model)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            vtask = build_task(cfg, torch.device("cpu"), torch.float32, **task.shared_data())
            newton = newton_loss_for(cfg, vtask, check_hessian="never", **extra)
            newtons[label] = newton
            state = {"i": 0}

            def step(model=model, opt=opt, vtask=vtask, newton=newton, state=state) -> None:
                x, target = batches[state["i"] % len(batches)]
                state["i"] += 1
                y = vtask.outputs(model, x)
                loss = newton(y, target) if newton is not None else vtask.loss_fn(y, target).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            fns[label] = step
        if progress:
            print(f"  … {case.name}", file=sys.stderr, flush=True)
        times, parts, spreads = _interleaved(fns, repeats, newtons=newtons)
        t_base = times["none"]
        print(f"\n{case.name}", file=out)
        print(f"  {'variant':<16} {'ms/step':>9} {'± %':>5} {'× baseline':>11}  {'curv+solve ms':>13} "
              f"{'1 + c+s/base':>12} {'Newton share':>12}  how", file=out)
        for v, t in times.items():
            p = parts.get(v, dict(grad_s=0.0, step_s=0.0, share=0.0))
            rows.append(dict(section="step", case=case.name, variant=v, seconds=t, ratio=t / t_base,
                             spread=spreads[v], base_spread=spreads["none"],
                             added_ratio=1.0 + p["step_s"] / t_base, newton_share=p["share"],
                             newton_s=p["step_s"], grad_s=p["grad_s"], how=_how(newtons[v]),
                             protocol=case.cfg.protocol, task=case.cfg.task, method=case.cfg.method,
                             n=case.cfg.n if "n" in registry.task(case.cfg.task).columns else None))
            print(f"  {('baseline' if v == 'none' else v):<16} {1e3 * t:>9.1f} {100 * spreads[v]:>5.1f} "
                  f"{t / t_base:>11.3f}  {1e3 * p['step_s']:>13.2f} {rows[-1]['added_ratio']:>12.4f} "
                  f"{100 * p['share']:>11.1f}%  {rows[-1]['how']}", file=out)
        out.flush()
    return rows


def _measured_variants(rows: list[dict], section: str) -> list[str]:
    """The Newton variants measured in a section, in the registry's order (capped-CG labels
    after their variant)."""
    seen = {r["variant"] for r in rows if r["section"] == section} - {"none", "plain backward"}
    order = {v: i for i, v in enumerate(registry.variants())}
    return sorted(seen, key=lambda v: (order.get(_parse_variant(v)[0], len(order)), v))


def _variant_table(rows: list[dict], cell) -> str:
    """Markdown: one row per step case, the baseline's ms, then ``cell(row)`` per variant."""
    variants = _measured_variants(rows, "step")
    head = ("| training step | baseline ms | " + " | ".join(variants) + " |\n|---|---|"
            + "---|" * len(variants) + "\n")
    body = ""
    for case in dict.fromkeys(r["case"] for r in rows if r["section"] == "step"):
        sel = {r["variant"]: r for r in rows if r["case"] == case and r["section"] == "step"}
        cells = [cell(sel[v]) if v in sel else "n/a" for v in variants]
        body += f"| {case} | {1e3 * sel['none']['seconds']:.1f} | " + " | ".join(cells) + " |\n"
    return head + body


def step_table(rows: list[dict]) -> str:
    """Markdown: one row per step case, one column per variant (ratio to the baseline step,
    baseline ms in its own column)."""
    return _variant_table(rows, lambda r: f"{r['ratio']:.3f}")


def share_table(rows: list[dict]) -> str:
    """Markdown: one row per step case, one column per variant: the Newton step's share of the
    variant's training step (curvature + solve over the whole step, median over the timed
    steps), and in parentheses the variant's step relative to the baseline step; the baseline's
    ms in its own column."""
    return _variant_table(rows, lambda r: f"{100 * r.get('newton_share', math.nan):.1f}% ({r['ratio']:.3f}×)")


def loss_table(rows: list[dict]) -> str:
    """Markdown: one row per loss case; per variant, the Newton loss's forward+backward
    relative to the plain pass, and in parentheses its curvature + solve part alone relative to
    the plain pass ("cg": solved by conjugate gradients)."""
    variants = _measured_variants(rows, "loss")
    head = ("| loss (N, m) | plain fwd+bwd ms | " + " | ".join(variants) + " |\n|---|---|"
            + "---|" * len(variants) + "\n")
    body = ""
    for case in dict.fromkeys(r["case"] for r in rows if r["section"] == "loss"):
        sel = {r["variant"]: r for r in rows if r["case"] == case and r["section"] == "loss"}
        first = sel["plain backward"]
        cells = []
        for v in variants:
            if v not in sel:
                cells.append("n/a")
            else:
                how = sel[v]["how"]
                cells.append(f"{sel[v]['ratio']:.2f} ({sel[v]['step_ratio']:.2f})"
                             + (" cg" if how.startswith("cg") else ""))
        body += (f"| {case} ({first['N']}, {first['m']}) | {1e3 * first['seconds']:.2f} | "
                 + " | ".join(cells) + " |\n")
    return head + body


def check_targets(rows: list[dict], dense_rows: Optional[list[dict]] = None) -> list[str]:
    """The issue-6 targets as lines "PASS/FAIL: ..." from measured rows."""
    lines = []
    steps = [r for r in rows if r["section"] == "step"]
    paper = [r for r in steps if r["protocol"] == "paper"]

    def verdict(r: dict, target: float) -> str:
        # A ratio above the target but within the two medians' own spread, for a variant whose
        # measured curvature + solve time keeps it under the target, is noise, not a miss.
        if r["ratio"] <= target:
            return "PASS"
        noise = r.get("spread", 0.0) + r.get("base_spread", 0.0)
        if r.get("added_ratio", math.inf) <= target and r["ratio"] - 1.0 <= noise:
            return "PASS (within noise)"
        return "FAIL"

    def detail(r: dict) -> str:
        if "added_ratio" not in r:
            return f"{r['ratio']:.3f}×"
        return (f"{r['ratio']:.3f}× measured (± {100 * (r.get('spread', 0) + r.get('base_spread', 0)):.0f}% "
                f"spread), curvature + solve {1e3 * r['newton_s']:.1f} ms = {r['added_ratio']:.4f}×")

    for variant, target, sel, what in (
            ("fisher", 1.05, paper, "Fisher step ≤ 1.05× baseline, paper networks"),
            ("hessian", 1.5, [r for r in paper if r["task"] == "ranking" and r["n"] == 10],
             "Hessian step ≤ 1.5× baseline, sorting n=10, paper CNN")):
        cands = [r for r in sel if r["variant"] == variant]
        if cands:
            verdicts = [(verdict(r, target), r) for r in cands]
            worst = max(cands, key=lambda r: r["ratio"])
            overall = ("FAIL" if any(v == "FAIL" for v, _ in verdicts) else
                       "PASS (within noise)" if any(v != "PASS" for v, _ in verdicts) else "PASS")
            lines.append(f"{overall}: {what} — worst {detail(worst)} ({worst['case']})")
    bf = [r for r in steps if r["method"] == "bf_for"
          and _parse_variant(r["variant"])[0] in ("hessian", "gauss_newton")]
    for protocol in ("paper", "quick"):
        sel = [r for r in bf if r["protocol"] == protocol]
        if sel:
            best = min(sel, key=lambda r: r["ratio"])
            full = [r for r in sel if "@cg" not in r["variant"]]
            note = ""
            if "@cg" in best["variant"] and full:
                note = (f" (CG capped at {_parse_variant(best['variant'])[1]['cg_max_iter']} iterations; "
                        "CG to convergence: " + ", ".join(f"{r['variant']} {r['ratio']:.3f}×" for r in full) + ")")
            lines.append(f"{verdict(best, 2.0)}: relaxed Bellman-Ford 12x12 batch 70, a second-order "
                         f"variant ≤ 2× baseline step ({protocol} network) — {best['variant']} "
                         f"{detail(best)}{note}")
    for r in dense_rows or []:
        ok = r["speedup"] >= 20 and r["max_abs_diff"] <= 1e-6
        lines.append(f"{'PASS' if ok else 'FAIL'}: Hessian path ≥ 20× faster than the dense "
                     f"reference, same result to 1e-6 — {r['case']}: {r['speedup']:.0f}×, "
                     f"max |Δ| {r['max_abs_diff']:.1e}")
    return lines
