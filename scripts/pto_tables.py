"""The predict-then-optimize study's tables, by the λ rule written into its sweep file before its runs.

    python scripts/pto_tables.py configs/study/pto_shortest_path.json [RUN_DIR_OR_GLOB ...]
        [--out FILE.md] [--alpha 0.05] [--tie 0.1] [--metric regret] [--seeds 0 1 2 3 4]
        [--lams 0.1 1 10]

The rule (``configs/study/pto_shortest_path.json``, its ``name``): for each Newton row (problem
setting × loss × curvature) λ is the grid value with the lowest mean validation regret over the
five seeds (each run at its own best-validation checkpoint); a tie within 0.1 points goes to the
larger λ; the table reports that λ's test regret against the baseline's (Welch over seeds, Holm
over the table's comparisons), and a second table shows every λ so that the selection is visible.

What this script does with it:

- A *Newton row* is one configuration without its λ and seed (setting, loss with its arguments,
  variant, damping); its *baseline* is the report's (``newton_lab.report``: the same
  configuration with ``variant="none"``). Every run contributes its ``best`` record (the
  evaluation of best validation): validation ``--metric`` for the choice, test for the table.
- The choice: per λ the mean validation metric over the seeds (in points: regret is printed in
  %), the best mean (lowest where the task's metric is lower-is-better, as regret is; highest
  otherwise), then among the λ whose mean is within ``--tie`` points of it, the largest λ.
- Main table: per setting and loss the baseline and each Newton row at its chosen λ — test
  metric mean ± std over seeds, Δ vs the baseline (negative = better for a lower-is-better
  metric), Welch's p over seeds, and Holm's adjustment over all the table's comparisons (one per
  Newton row; a row without a p-value yet — unfinished, fewer than 2 seeds a side — counts as
  p = 1, so that a partial study's adjusted p-values are never smaller than the complete
  study's can be: Holm's adjusted p-values only grow with any input p-value).
- The all-λ table: validation and test mean (seeds) of every λ and of the baseline; the chosen λ
  in bold.
- One line per row: curvature helped / hurt (Holm-adjusted p < α, by the sign of Δ) or did
  nothing detectable.

Partial studies: the seeds and λ a row should have are the sweep file's (every run it defines),
else ``--seeds`` / ``--lams``, else every seed / λ found among the runs. A row missing any of
them (or whose baseline misses seeds) is *incomplete*: flagged in both tables and listed with
what is missing, its choice and verdict marked provisional. An incomplete row's choice compares
the λ on the seeds they all have (said in the all-λ table), so that no λ is favoured by an
easier data set (each seed draws its own); its test comparison uses the finished seeds of each
side, whose count the table shows. Runs of seeds outside the expected ones are not used (a
note counts them).

Output: Markdown (stdout, or ``--out``, written atomically).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from newton_lab import registry
from newton_lab.io import emit_table
from newton_lab.report import _baseline_key, find_runs, group_runs, holm, welch

TASK = "pto"
#: Points (of the printed metric) below which two means count as equal whatever the tie margin:
#: a gap of exactly the margin must not be decided by float rounding.
TOL = 1e-9
#: Configuration fields a Newton row's label names (the others go into the setting when they vary).
_ROW_FIELDS = ("method", "method_args", "variant", "damping", "lam")


@dataclass
class Cell:
    """One configuration (a report group): its expected seeds and its finished runs."""

    key: str
    config: dict
    expected: set = field(default_factory=set)  # seeds the study defines for it
    runs: dict = field(default_factory=dict)  # seed -> result.json
    dirs: dict = field(default_factory=dict)  # seed -> run directory
    unused: int = 0  # runs of seeds outside the expected ones
    planned: bool = False  # defined by a sweep file among the inputs

    def seeds(self) -> list:
        return sorted(self.runs)

    def values(self, split: str, metric: str, scale: float, seeds=None) -> np.ndarray:
        seeds = self.seeds() if seeds is None else seeds
        return np.array([scale * self.runs[s]["best"][split][metric] for s in seeds], dtype=np.float64)

    def missing(self) -> list:
        return sorted(self.expected - set(self.runs))

    def step_ms(self) -> float:
        """Mean over the finished seeds of the run's mean time per training step (ms; the
        runner's ``time.step_s``: forward, loss — with its solver calls —, Newton step, backward,
        optimizer), NaN when no run recorded it."""
        t = [1000.0 * r["time"]["step_s"] for r in self.runs.values() if r.get("time", {}).get("step_s") is not None]
        return float(np.mean(t)) if t else math.nan


@dataclass
class Row:
    """A Newton row: one configuration without λ, its cells per λ and its baseline."""

    key: str
    config: dict  # without lam
    cells: dict  # λ -> Cell
    lams: list  # the expected λ grid
    baseline: Optional[Cell]
    choice: Optional[float] = None
    basis: list = field(default_factory=list)  # the seeds the choice compared the λ on
    basis_means: dict = field(default_factory=dict)  # λ -> mean validation over basis
    incomplete: list = field(default_factory=list)  # what is missing, in words
    delta: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    test: np.ndarray = field(default_factory=lambda: np.zeros(0))
    base_test: np.ndarray = field(default_factory=lambda: np.zeros(0))


# ----------------------------------------------------------------------------------------------
def choose(means: dict, tie: float, lower: bool) -> Optional[float]:
    """The rule: the λ of best mean (lowest if ``lower``), then among the λ within ``tie`` points
    of that mean the largest λ. ``means``: λ -> mean (points); None when empty."""
    if not means:
        return None
    best = min(means.values()) if lower else max(means.values())
    close = [lam for lam, m in means.items() if abs(m - best) <= tie + TOL]
    return max(close)


def _planned(paths: list) -> list:
    """(run dir, {"config": ...}) of every run the sweep files among ``paths`` define."""
    from newton_lab.sweep import SweepSpec

    planned = []
    for p in paths:
        if str(p).endswith(".json") and Path(p).is_file():
            spec = SweepSpec.load(p)
            planned += [(Path(spec.out) / c.run_id(), {"config": c.to_dict()}) for c in spec.expand()]
    return planned


def _failed(planned: list) -> list:
    return [str(d) for d, _ in planned if (Path(d) / "failed.json").exists() and not (Path(d) / "result.json").exists()]


def collect(paths: list, *, seeds=None) -> tuple[dict, list]:
    """Cells (group key -> :class:`Cell`) of the ``pto`` runs under ``paths`` and of the runs
    their sweep files define, and the run directories that failed."""
    planned = _planned(paths)
    cells: dict = {}
    for g in group_runs(planned) if planned else []:
        if g.task == TASK:
            cells[g.key] = Cell(g.key, g.config, expected={s for s, _, _ in g.runs}, planned=True)
    found = [g for g in group_runs(find_runs(paths)) if g.task == TASK]
    for g in found:
        cell = cells.setdefault(g.key, Cell(g.key, g.config))
        cell.runs = {s: r for s, _, r in g.runs}
        cell.dirs = {s: Path(d) for s, d, _ in g.runs}
    if not cells:
        raise ValueError(f"no {TASK} runs (finished or defined by a sweep file) under {', '.join(map(str, paths))}")
    if seeds is not None:
        for c in cells.values():
            c.expected = set(seeds)
    elif not planned:  # every seed found anywhere
        every = {s for c in cells.values() for s in c.runs}
        for c in cells.values():
            c.expected = set(every)
    for c in cells.values():
        if not c.expected:  # found, but not among the sweep's runs: expect what the others expect
            c.expected = set().union(*(d.expected for d in cells.values()))
        extra = set(c.runs) - c.expected
        c.unused = len(extra)
        for s in extra:
            del c.runs[s]
            c.dirs.pop(s, None)
    return cells, _failed(planned)


def rows_of(cells: dict, *, lams=None) -> tuple[list, list]:
    """(Newton rows, baseline cells) of the cells. A row's λ grid: ``lams``, else the λ the sweep
    files define for it, else every λ found among the Newton runs."""
    rows: dict = {}
    bases = [c for c in cells.values() if c.config["variant"] == "none"]
    for c in cells.values():
        if c.config["variant"] == "none":
            continue
        cfg = {k: v for k, v in c.config.items() if k != "lam"}
        key = json.dumps(cfg, sort_keys=True)
        row = rows.setdefault(key, Row(key, cfg, {}, [], cells.get(_baseline_key(c.config))))
        row.cells[float(c.config["lam"])] = c
    found = sorted({lam for r in rows.values() for lam in r.cells})
    for r in rows.values():
        planned = sorted(lam for lam, c in r.cells.items() if c.planned)
        r.lams = sorted(float(x) for x in lams) if lams is not None else planned or found
    return list(rows.values()), bases


def decide(rows: list, *, metric: str, tie: float, lower: bool, scale: float) -> None:
    """The rule's choice, the test comparison and Holm's adjustment, in place."""
    for r in rows:
        # only the grid's λ compete (runs of other λ among the inputs are shown, not chosen)
        present = {lam: r.cells[lam] for lam in r.lams if lam in r.cells and r.cells[lam].runs}
        for lam in r.lams:
            c = r.cells.get(lam)
            if c is None or not c.runs:
                r.incomplete.append(f"λ={lam:g}: no finished run")
            elif c.missing():
                r.incomplete.append(f"λ={lam:g}: seed(s) {_seeds(c.missing())} missing")
        if r.baseline is None:
            r.incomplete.append("baseline: not found")
        elif r.baseline.missing():
            r.incomplete.append(f"baseline: seed(s) {_seeds(r.baseline.missing())} missing")
        if not present:
            continue
        common = sorted(set.intersection(*(set(c.runs) for c in present.values())))
        r.basis = common
        if common:
            r.basis_means = {lam: float(c.values("val", metric, scale, common).mean()) for lam, c in present.items()}
            r.choice = choose(r.basis_means, tie, lower)
        if r.choice is None:
            continue
        r.test = r.cells[r.choice].values("test", metric, scale)
        if r.baseline is not None and r.baseline.runs:
            r.base_test = r.baseline.values("test", metric, scale)
            r.delta = float(r.test.mean() - r.base_test.mean())
            _, r.p = welch(r.test, r.base_test)
    adjusted = holm([1.0 if math.isnan(r.p) else r.p for r in rows]) if rows else []
    for r, p_holm in zip(rows, adjusted):
        r.p_holm = float(p_holm) if not math.isnan(r.p) else math.nan


# ----------------------------------------------------------------------------------------------
def _seeds(seeds: list) -> str:
    return ", ".join(map(str, seeds))


def _fmt(v: np.ndarray, digits: int = 2) -> str:
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return f"{v.mean():.{digits}f} (1 seed)"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _ms(c: Optional[Cell], base: Optional[Cell] = None) -> str:
    """Time per step (ms), and for a Newton row its ratio to the baseline's."""
    t = math.nan if c is None else c.step_ms()
    if math.isnan(t):
        return "—"
    text = f"{t:.3g}" if t < 1000 else f"{t:.0f}"  # no exponent: 1003, not 1e+03
    b = math.nan if base is None else base.step_ms()
    return text + ("" if math.isnan(b) or b <= 0 else f" ({t / b:.2g}×)")


#: Instances a loss solves per training instance in a baseline step (``samples`` for the perturbed
#: losses): two-stage none, SPO+ one (2θ̂ − c), DBB two (θ̂ forward, the interpolated costs backward).
_SOLVES = {"two_stage": 0, "spo_plus": 1, "dbb": 2, "dpo": None, "pfyl": None}


def solves_per_step(cfg: dict) -> Optional[float]:
    """Mean number of instances a baseline's training step hands the solver, or None where the
    loss is not one of :data:`_SOLVES`. With ``task_args.last_batch="partial"`` an epoch is
    ⌈n / B⌉ batches of n instances, so a step holds n / ⌈n / B⌉ on average (31.25 for 1,000 and
    B = 32), else B."""
    if cfg["method"] not in _SOLVES:
        return None
    per = _SOLVES[cfg["method"]]
    per = cfg["method_args"].get("samples", 10) if per is None else per
    n, b = cfg["train_size"], cfg["batch_size"]
    mean_batch = n / math.ceil(n / b) if cfg["task_args"].get("last_batch", "partial") == "partial" else b
    return per * mean_batch


def per_instance_solver(cfg: dict) -> bool:
    """True when the configuration solves one instance per solver call (PyEPO's optModel:
    ``solver="pyepo"``, or ``"auto"`` on a problem other than the shortest path, as
    ``newton_lab.tasks.pyepo`` resolves it); False for the batched grid solver."""
    a = cfg["task_args"]
    return a.get("solver") == "pyepo" or (a.get("solver", "auto") == "auto" and a.get("problem") != "shortest_path")


def solve_ms(bases: list) -> list:
    """(loss, smallest, largest) over the settings of ``bases`` (baseline cells) of a step's time
    over the instances it solves (ms) — an upper bound of one solve's time, since the step also
    runs the network and the loss; only per-instance solvers and losses that solve."""
    out: dict = {}
    for b in bases:
        k = solves_per_step(b.config)
        t = b.step_ms()
        if not per_instance_solver(b.config) or not k or math.isnan(t):
            continue
        out.setdefault(_loss(b.config), []).append(t / k)
    return [(loss, min(v), max(v)) for loss, v in out.items()]


def eval_solve_ms(bases: list) -> list:
    """(loss, smallest, largest) over the runs of ``bases`` (baseline cells) of the median over a
    run's evaluations of its time over the instances it solves (ms): every evaluation solves the
    model's predicted costs of the validation and the test set, one solver call each — what a
    solve of predictions costs, as against :func:`solve_ms`'s training solves. Only
    per-instance solvers; runs without a metrics.jsonl are skipped."""
    out: dict = {}
    for b in bases:
        if not per_instance_solver(b.config):
            continue
        k = b.config["val_sets"] + b.config["test_sets"]
        for d in b.dirs.values():
            path = Path(d) / "metrics.jsonl"
            if not path.exists():
                continue
            t = [json.loads(line).get("time", {}).get("eval_s") for line in path.read_text().splitlines() if line.strip()]
            t = [x for x in t if x is not None]
            if t:
                out.setdefault(_loss(b.config), []).append(1000.0 * float(np.median(t)) / k)
    return [(loss, min(v), max(v)) for loss, v in out.items()]


def _range(lo: float, hi: float) -> str:
    return f"{lo:.2g}" + ("" if f"{lo:.2g}" == f"{hi:.2g}" else f"–{hi:.2g}")


def _p(p: float) -> str:
    return "" if math.isnan(p) else f"{p:.3g}"


def _flat(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k != "task_args"}
    out.update({f"task_args.{k}": v for k, v in cfg.get("task_args", {}).items()})
    return out


class _Setting:
    """How rows name their setting: the task's columns and the model, plus any other field that
    tells apart rows that would otherwise look alike."""

    def __init__(self, configs: list) -> None:
        spec = registry.task(TASK)
        self.columns = [c for c in spec.columns] + ["model"]
        named = set(self.columns) | set(_ROW_FIELDS) | {"task", "seed"}
        flats = [_flat(c) for c in configs]

        def base_name(k: str) -> str:
            return k.removeprefix("task_args.")

        def ident(f: dict) -> str:
            return json.dumps({k: v for k, v in f.items() if base_name(k) in named}, sort_keys=True, default=str)

        seen: dict = {}
        extra = set()
        for f in flats:
            for k, v in f.items():
                if base_name(k) in named:
                    continue
                other = seen.setdefault((ident(f), k), json.dumps(v, sort_keys=True, default=str))
                if other != json.dumps(v, sort_keys=True, default=str):
                    extra.add(k)
        self.extra = sorted(extra)
        self.varying = [c for c in self.columns
                        if c in ("deg", "train_size") or len({json.dumps(registry.column_value(cfg, c), default=str)
                                                              for cfg in configs}) > 1]
        self.constant = {c: registry.column_value(configs[0], c) for c in self.columns if c not in self.varying}

    def header(self) -> list:
        names = {"deg": "deg", "train_size": "train", "noise": "noise", "problem": "problem", "model": "model"}
        return [names.get(c, c) for c in self.varying] + (["other"] if self.extra else [])

    def cells(self, cfg: dict) -> list:
        flat = _flat(cfg)
        out = [_short(registry.column_value(cfg, c)) for c in self.varying]
        if self.extra:
            out.append(", ".join(f"{k.removeprefix('task_args.')}={_short(flat.get(k))}" for k in self.extra))
        return out

    def key(self, cfg: dict) -> tuple:
        flat = _flat(cfg)
        return tuple(json.dumps(registry.column_value(cfg, c), default=str) for c in self.columns) + tuple(
            json.dumps(flat.get(k), default=str) for k in self.extra)

    def sort_key(self, cfg: dict) -> tuple:
        flat = _flat(cfg)
        return tuple(_sortable(registry.column_value(cfg, c)) for c in self.columns) + tuple(
            _sortable(flat.get(k)) for k in self.extra)


def _sortable(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, json.dumps(v, default=str))


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _loss(cfg: dict) -> str:
    return registry.format_spec(cfg["task"], cfg["method"], cfg["method_args"])


def _curvature(cfg: dict) -> str:
    damping = {"relative": " rel", "batch": " batch"}.get(cfg["damping"], "")
    return registry.variant(cfg["variant"]).label + damping + (f" CG≤{cfg['cg_max_iter']}" if cfg.get("cg_max_iter") else "")


#: The order of a setting's rows: the baseline, then these curvatures, then any other.
_VARIANTS = ("none", "fisher", "hessian", "hessian_batch", "gauss_newton")


def _order(cfg: dict) -> tuple:
    methods = registry.methods(TASK)
    variants = _VARIANTS + tuple(v for v in registry.variants() if v not in _VARIANTS)
    return (methods.index(cfg["method"]) if cfg["method"] in methods else len(methods),
            json.dumps(cfg["method_args"], sort_keys=True),
            variants.index(cfg["variant"]) if cfg["variant"] in variants else len(variants),
            cfg.get("damping", ""), json.dumps({k: v for k, v in cfg.items() if k not in ("lam",)}, sort_keys=True,
                                               default=str))


def _verdict(r: Row, alpha: float, lower: bool, unit: str) -> str:
    if r.choice is None:
        return "no choice yet (" + ("no finished run" if not any(c.runs for c in r.cells.values())
                                    else "no seed finished at every λ") + ")"
    if r.baseline is None or not r.baseline.runs:
        return "no baseline to compare with yet"
    d = f"Δ {r.delta:+.2f}{unit}"
    if math.isnan(r.p):
        return f"no test yet ({len(r.test)} vs {len(r.base_test)} seeds; {d})"
    better = (r.delta < 0) == lower
    if r.p_holm < alpha:
        word = "**helped**" if better else "**hurt**"
        return f"{word}: {d}, Holm p = {r.p_holm:.3g}"
    raw = f"; p = {r.p:.3g} before the adjustment" if r.p < alpha else ""
    return f"nothing detectable: {d}, Holm p = {r.p_holm:.3g}{raw}"


def tables(paths: list, *, metric: str = "regret", tie: float = 0.1, alpha: float = 0.05, seeds=None,
           lams=None) -> tuple[str, list]:
    """(Markdown, Newton rows) of the study under ``paths`` (sweep files, run directories, globs)."""
    spec = registry.task(TASK)
    if metric not in spec.metrics:
        raise ValueError(f"metric {metric!r} is not one of task {TASK!r}'s: {', '.join(spec.metrics)}")
    lower = metric in spec.lower_is_better
    scale = 100.0 if registry.is_percent(metric) else 1.0
    unit = " points" if registry.is_percent(metric) else ""
    name = f"{metric} %" if registry.is_percent(metric) else metric
    cells, failed = collect(paths, seeds=seeds)
    rows, bases = rows_of(cells, lams=lams)
    decide(rows, metric=metric, tie=tie, lower=lower, scale=scale)
    setting = _Setting([c.config for c in cells.values()])

    # main table: per setting and loss, the baseline then the Newton rows
    blocks: dict = {}
    for b in bases:
        blocks.setdefault((setting.key(b.config), _loss(b.config), json.dumps(b.config["method_args"], sort_keys=True)),
                          {"cfg": b.config, "base": b, "rows": []})
    for r in rows:
        cfg = r.baseline.config if r.baseline is not None else {**r.config, "variant": "none"}
        blk = blocks.setdefault((setting.key(r.config), _loss(r.config),
                                 json.dumps(r.config["method_args"], sort_keys=True)),
                                {"cfg": cfg, "base": r.baseline, "rows": []})
        blk["rows"].append(r)
    ordered = sorted(blocks.values(), key=lambda b: (setting.sort_key(b["cfg"]), _order(b["cfg"])))
    for b in ordered:
        b["rows"].sort(key=lambda r: _order(r.config))
    ordered_rows = [r for b in ordered for r in b["rows"]]
    n_incomplete = sum(bool(r.incomplete) for r in rows)
    better = "lower" if lower else "higher"

    head = setting.header()
    constant = ", ".join(f"{k} {_short(v)}" for k, v in setting.constant.items())
    lines = [f"#### Predict-then-optimize: Newton rows at the λ the rule chose ({metric})", "",
             f"Test {name} at each run's best-validation checkpoint, mean ± std over seeds"
             + (f" ({constant} in every row)" if constant else "") + f". {better.capitalize()} is better: "
             + (f"a negative Δ vs baseline is an improvement. " if lower else "a positive Δ is an improvement. ")
             + f"λ: the rule's choice — the λ of {'lowest' if lower else 'highest'} mean validation {metric} "
             f"over the seeds, a tie within {tie:g}{unit} going to the larger λ (all λ in the next table). "
             f"p: Welch's t-test over seeds against the baseline; p Holm: Holm–Bonferroni over the "
             f"table's {len(rows)} comparisons (one per Newton row; a row without a p-value counts as "
             f"p = 1, so a partial study's adjusted values can only fall as runs finish); † Holm p < {alpha:g}. "
             "seeds: the seeds finished (of those expected). ms/step: mean time of a training step "
             "(forward, loss with its solver calls, Newton step, backward, update) over the seeds' runs, "
             "for a Newton row with its ratio to the baseline's — as the sweep measured it (its workers "
             "share the machine, so compare within a table, not across machines). status: complete, or "
             "incomplete (listed below; its λ and verdict provisional).", ""]
    sign = "− better" if lower else "+ better"
    lines += ["| " + " | ".join(head + ["loss", "variant", "λ", "seeds", f"test {name}",
                                        f"Δ vs baseline ({unit.strip() or metric}; {sign})",
                                        "p", "p Holm", "ms/step", "status"]) + " |",
              "|" + "---|" * (len(head) + 10)]
    for b in ordered:
        base: Optional[Cell] = b["base"]
        cols = setting.cells(b["cfg"])
        if base is not None:
            vals = base.values("test", metric, scale)
            status = "complete" if not base.missing() else "**incomplete**"
            lines.append("| " + " | ".join(cols + [_loss(base.config), "baseline", "—",
                                                   f"{len(base.runs)} of {len(base.expected)}", _fmt(vals),
                                                   "", "", "", _ms(base), status]) + " |")
        else:
            lines.append("| " + " | ".join(cols + [_loss(b["cfg"]), "baseline", "—", "0", "—", "", "", "", "—",
                                                   "**no baseline run**"]) + " |")
        for r in b["rows"]:
            chosen = r.cells.get(r.choice) if r.choice is not None else None
            seeds_cell = (f"{len(chosen.runs)} of {len(chosen.expected)}" if chosen is not None
                          else f"0 of {max((len(c.expected) for c in r.cells.values()), default=0)}")
            lam = "—" if r.choice is None else f"{r.choice:g}" + (" (provisional)" if r.incomplete else "")
            delta = "" if math.isnan(r.delta) else f"{r.delta:+.2f}"
            holm_cell = "" if math.isnan(r.p_holm) else f"{r.p_holm:.3g}" + ("†" if r.p_holm < alpha else "")
            status = "complete" if not r.incomplete else "**incomplete**"
            lines.append("| " + " | ".join(cols + [_loss(r.config), _curvature(r.config), lam, seeds_cell,
                                                   _fmt(r.test), delta, _p(r.p), holm_cell,
                                                   _ms(chosen, r.baseline), status]) + " |")
    lines.append("")
    base_cells = [b["base"] for b in ordered if b["base"] is not None]
    per_solve, per_eval = solve_ms(base_cells), eval_solve_ms(base_cells)
    if per_solve:
        lines += ["Solver time: a baseline step's ms/step over the instances it hands PyEPO's solver "
                  "(one call each; per training instance SPO+ 1, DBB 2, DPO and PFYL S; an upper bound "
                  "of a solve, the step also runs the rest) — "
                  + "; ".join(f"{loss} {_range(lo, hi)} ms" for loss, lo, hi in per_solve) + " per instance."
                  + ("" if not per_eval else
                     " An evaluation's time over the predicted costs it solves (validation and test sets; "
                     "the median over a run's evaluations, the range over the baselines' runs) — "
                     + "; ".join(f"{loss} {_range(lo, hi)} ms" for loss, lo, hi in per_eval) + " per instance."),
                  ""]

    # all-λ table
    grid = sorted({lam for r in rows for lam in r.lams})
    lines += [f"#### Every λ ({metric}, validation / test)", "",
              f"Mean validation / test {name} over the seeds (in parentheses, how many); bold: the rule's "
              f"choice. The choice compares the λ's validation means over the seeds every λ of the row "
              f"has finished — for a complete row all expected seeds; for an incomplete one the 'chosen "
              f"on' column names them and gives those means (λ order as in the header). The rule compares "
              f"the unrounded means: two λ printed exactly {tie:g}{unit} apart can be just outside the tie.", "",
              "| " + " | ".join(head + ["loss", "variant", "baseline"] + [f"λ={lam:g}" for lam in grid]
                                + ["chosen λ", "chosen on"]) + " |",
              "|" + "---|" * (len(head) + 5 + len(grid))]

    def pair(c: Optional[Cell]) -> str:
        if c is None or not c.runs:
            return "—"
        return (f"{c.values('val', metric, scale).mean():.3f} / {c.values('test', metric, scale).mean():.2f} "
                f"({len(c.runs)})")

    for r in ordered_rows:
        cells_ = []
        for lam in grid:
            text = pair(r.cells.get(lam))
            if lam not in r.lams:
                text = "not in the grid" + ("" if text == "—" else f": {text}")
            cells_.append(f"**{text}**" if lam == r.choice else text)
        on = "—" if r.choice is None else (
            f"seeds {_seeds(r.basis)}" if not r.incomplete else
            f"seeds {_seeds(r.basis)}: " + " / ".join(f"{r.basis_means[lam]:.3f}" for lam in sorted(r.basis_means)))
        lines.append("| " + " | ".join(setting.cells(r.config) + [_loss(r.config), _curvature(r.config),
                                                                  pair(r.baseline)] + cells_
                                        + ["—" if r.choice is None else f"{r.choice:g}", on]) + " |")
    lines.append("")

    # verdicts
    lines += [f"#### What curvature did, per row (α = {alpha:g}, after Holm)", ""]
    for r in ordered_rows:
        where = ", ".join(f"{h} {c}" for h, c in zip(head, setting.cells(r.config)))
        lam = "" if r.choice is None else f" (λ = {r.choice:g})"
        lines.append(f"- {where}, {_loss(r.config)}, {_curvature(r.config)}{lam}: "
                     + ("provisional — " if r.incomplete else "") + _verdict(r, alpha, lower, unit) + ".")
    lines.append("")

    # incomplete rows
    missing_bases = [b["base"] for b in ordered if b["base"] is not None and b["base"].missing() and not b["rows"]]
    if n_incomplete or missing_bases or failed:
        lines += [f"#### Incomplete ({n_incomplete} of {len(rows)} Newton rows)", ""]
        for r in ordered_rows:
            if r.incomplete:
                where = ", ".join(f"{h} {c}" for h, c in zip(head, setting.cells(r.config)))
                lines.append(f"- {where}, {_loss(r.config)}, {_curvature(r.config)}: " + "; ".join(r.incomplete) + ".")
        for b in missing_bases:
            where = ", ".join(f"{h} {c}" for h, c in zip(head, setting.cells(b.config)))
            lines.append(f"- {where}, {_loss(b.config)}, baseline: seed(s) {_seeds(b.missing())} missing.")
        if failed:
            lines.append(f"- {len(failed)} run(s) failed (failed.json, a NaN/Inf loss): "
                         + ", ".join(Path(d).name for d in failed[:5]) + (", ..." if len(failed) > 5 else "") + ".")
        lines.append("")
    else:
        lines += [f"All {len(rows)} Newton rows and their baselines are complete.", ""]
    unused = sum(c.unused for c in cells.values())
    if unused:
        lines += [f"{unused} run(s) of seeds outside the expected ones are not used.", ""]
    timed = [r["time"]["total_s"] for c in cells.values() for r in c.runs.values()
             if r.get("time", {}).get("total_s") is not None]
    if timed:
        lines += [f"Run time: {len(timed)} runs, {sum(timed) / 3600:.1f} hours in all (each run's "
                  "wall time, summed; a sweep's workers run side by side).", ""]
    lines.append("Generated by `scripts/pto_tables.py`.")
    return "\n".join(lines) + "\n", ordered_rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="the study's sweep file, run directories, directories of runs, "
                                            "or glob patterns")
    ap.add_argument("--metric", default="regret", help="the metric the rule and the tables use (default regret)")
    ap.add_argument("--tie", type=float, default=0.1,
                    help="points within which two λ's validation means tie; the larger λ wins (default 0.1)")
    ap.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm (default 0.05)")
    ap.add_argument("--seeds", type=int, nargs="+", help="the seeds every configuration should have "
                                                         "(default: the sweep file's, else every seed found)")
    ap.add_argument("--lams", type=float, nargs="+", help="the λ grid every Newton row should have "
                                                          "(default: the sweep file's, else every λ found)")
    ap.add_argument("--out", type=Path, help="write the tables to this file (atomically) instead of stdout")
    args = ap.parse_args(argv)
    if args.tie < 0:
        ap.error(f"--tie must be >= 0, got {args.tie}")
    if not 0 < args.alpha < 1:
        ap.error(f"--alpha must be in (0, 1), got {args.alpha}")
    return emit_table(ap, lambda: tables(args.runs, metric=args.metric, tie=args.tie, alpha=args.alpha,
                                         seeds=args.seeds, lams=args.lams)[0], args.out)


if __name__ == "__main__":
    sys.exit(main())
