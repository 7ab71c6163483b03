"""Reports over finished runs: a markdown table like the paper's (mean ± std over seeds, exact
match with element-wise accuracy in parentheses), a Welch t-test of every Newton variant against
its baseline, CSV/JSON beside it, and PNG plots (test accuracy over steps with 95% bands; the
primary metric over λ for an ablation).

Runs are grouped by their whole configuration except the seed; a group's baseline is the group
with the same configuration and ``variant="none"``. Each run contributes its test metrics at its
best validation evaluation (the diffsort protocol).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from newton_lab.io import atomic_write, atomic_write_text
from newton_lab import registry
from newton_lab.config import LATER_DEFAULTS, RunConfig
from newton_lab.machine import machine_label
from newton_lab.runner import read_metrics

__all__ = ["Report", "Group", "build_report", "control_label", "find_runs", "group_runs", "holm", "welch"]



@dataclass
class Group:
    """The runs of one configuration over seeds: a row of the report's table."""

    key: str
    config: dict  # the configuration without the seed
    runs: list = field(default_factory=list)  # (seed, run_dir, result)

    @property
    def task(self) -> str:
        return self.config["task"]

    def values(self, metric: str) -> np.ndarray:
        return np.array([r["best"]["test"][metric] for _, _, r in self.runs], dtype=np.float64)

    extra: tuple = ()  # other configuration fields that differ between groups of the report

    def label(self) -> str:
        c = self.config
        more = "".join(f", {k}={_short(registry.column_value(c, k))}" for k in self.extra)
        return registry.method(c["task"], c["method"]).label(c["method_args"]) + more

    def variant_label(self) -> str:
        c = self.config
        clip = " " + control_label(c) if control_label(c) else ""
        name = registry.variant(c["variant"]).label
        if c["variant"] == "none":
            return name + clip
        lam = f"λ={c['lam']:g}" + {"relative": " rel", "batch": " batch"}.get(c["damping"], "")
        cg = f" CG≤{c['cg_max_iter']}" if c.get("cg_max_iter") else ""
        return f"{name} {lam}{cg}{clip}"


@dataclass
class Report:
    markdown: str
    groups: list
    files: list




def find_runs(paths: list) -> list[tuple[Path, dict]]:
    """Finished runs (directories with result.json) under ``paths``, sorted by path.

    A path with glob characters (``*?[``) stands for the directories it matches, e.g.
    ``results/study/table/ranking-neuralsort-n5-*`` (one report of part of a directory); a sweep
    file (``configs/....json``) for the directories of the runs it defines."""
    found = {}
    for p in _expand(paths):
        p = Path(p)
        if not p.exists():
            raise ValueError(f"no such run directory or sweep file: {p}")
        candidates = [p / "result.json"] if (p / "result.json").exists() else sorted(p.rglob("result.json"))
        for f in candidates:
            found[f.parent] = json.loads(f.read_text())
    return sorted(found.items(), key=lambda kv: str(kv[0]))


def _expand(paths: list) -> list:
    """``paths`` with every glob pattern (``*?[``) replaced by the paths it matches (sorted), and
    every sweep file (``*.json``) by the directories of its runs that exist (under its ``out``);
    a pattern that matches nothing is an error."""
    import glob as _glob

    expanded = []
    for p in paths:
        if str(p).endswith(".json") and Path(p).is_file():
            from newton_lab.sweep import SweepSpec  # here: sweep imports this module

            spec = SweepSpec.load(p)
            expanded += [d for d in (Path(spec.out) / c.run_id() for c in spec.expand()) if d.is_dir()]
        elif any(ch in str(p) for ch in "*?["):
            hits = sorted(_glob.glob(str(p)))
            if not hits:
                raise ValueError(f"no run directory matches {p}")
            expanded += hits
        else:
            expanded.append(p)
    return expanded


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Welch's unequal-variance t-test: (t, two-sided p); NaN when either side has < 2 values
    or both have zero variance."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return math.nan, math.nan
    with warnings.catch_warnings():
        # Nearly equal values (e.g. identical seeds) trigger scipy's precision-loss warning;
        # the p-value is still the right answer (large).
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def group_runs(runs: list[tuple[Path, dict]]) -> list[Group]:
    """The runs of :func:`find_runs` grouped by configuration without the seed (one report row
    each), sorted as the report lists them; a configuration and seed found twice counts once
    (with a warning). Raises ValueError for a configuration this version cannot read."""
    groups: dict[str, Group] = {}
    for run_dir, result in runs:
        # Fields added since a run was written take their defaults, so old and new runs of one
        # configuration group together.
        try:
            cfg = RunConfig.from_dict(dict(result["config"])).to_dict()
            _baseline_key(cfg)  # the configuration must also validate (its baseline is looked up)
        except (TypeError, ValueError) as exc:
            hint = (" (a method or curvature registered by a module of your own: pass --import MODULE)"
                    if "is not registered" in str(exc) or "must be one of" in str(exc) else "")
            raise ValueError(f"{run_dir}: its configuration cannot be read by this version: {exc}{hint}") from None
        seed = cfg.pop("seed")
        for key in _ROW_OMITS[1:]:
            cfg.pop(key)
        if not cfg["task_args"]:  # tasks without arguments: groups (and summaries) as before
            del cfg["task_args"]
        key = json.dumps(cfg, sort_keys=True)
        group = groups.setdefault(key, Group(key, cfg))
        twin = next((d for s, d, _ in group.runs if s == seed), None)
        if twin is not None:
            # The same configuration and seed twice (e.g. a copied run): counting both would
            # fake a seed and shrink the standard deviation.
            warnings.warn(f"{run_dir} repeats the configuration and seed {seed} of {twin}; "
                          "counted once", stacklevel=3)
            continue
        group.runs.append((seed, run_dir, result))
    for g in groups.values():
        g.runs.sort(key=lambda r: r[0])
    # Fields besides method, n and the Newton settings that differ between groups of a task
    # (protocol, steps, lr, ...) go into the label, so that no two rows look alike.
    shown = {"task", "method", "method_args", "n", "variant", "lam", "damping", "projection", "cg_max_iter",
             "clip_grad_norm", "loss_dtype"}
    for task in {g.task for g in groups.values()}:
        same_task = [g for g in groups.values() if g.task == task]

        columns = set(registry.task(task).columns)

        def varying(gs):
            # configuration fields, and the task's own arguments one by one (task_args)
            keys = [k for k in gs[0].config if k != "task_args"] + list(gs[0].config.get("task_args", {}))
            return {k for k in keys if k not in shown and k not in columns
                    and len({json.dumps(_field(g.config, k), sort_keys=True) for g in gs}) > 1}

        extra = varying(same_task)
        if "protocol" in extra:  # then name the protocol and what differs within one protocol
            by_protocol: dict = {}
            for g in same_task:
                by_protocol.setdefault(g.config["protocol"], []).append(g)
            extra = {"protocol"}.union(*(varying(gs) for gs in by_protocol.values()))
        for g in same_task:
            g.extra = tuple(sorted(extra, key=lambda k: (k != "protocol", k)))
    return sorted(groups.values(), key=lambda g: (g.task, g.label(), g.config.get("n", 0), _columns(g),
                                                   g.config["variant"] != "none", g.config["variant"],
                                                   g.config["lam"]))


def _field(config: dict, key: str):
    """A group configuration's field or task argument ``key`` (None where it has neither)."""
    if key in config.get("task_args", {}):
        return config["task_args"][key]
    return config.get(key)


def _columns(g: "Group") -> tuple:
    """The values of the task's report columns for a group (fields or task arguments)."""
    return tuple(registry.column_value(g.config, c) for c in registry.task(g.task).columns)


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def control_label(cfg: dict) -> str:
    """A configuration's control settings as a label (empty when it has none): gradient
    clipping (``clip 1``) and a loss computed in another dtype (``float64 loss``)."""
    parts = [f"clip {cfg['clip_grad_norm']:g}" if cfg.get("clip_grad_norm") else "",
             f"{cfg['loss_dtype']} loss" if cfg.get("loss_dtype") else ""]
    return " ".join(p for p in parts if p)


def _spikes_cell(g: "Group") -> str:
    counted = [r["spikes"] for _, _, r in g.runs if "spikes" in r]
    if not counted:
        return ""
    return f"{sum(counted)} ({sum(c > 0 for c in counted)}/{len(counted)})"


def _precision_cell(g: "Group") -> str:
    checked = [r["precision"] for _, _, r in g.runs if "precision" in r]
    if not checked:
        return ""
    return (f"{sum(c['precision_sick'] for c in checked)} / {sum(c['precision_checks'] for c in checked)}, "
            f"worst {max(c['precision_worst'] for c in checked):.2g}")


def _extra_columns(groups: list) -> dict:
    """Columns only runs of newer versions have data for, shown when some run in the table
    does (so tables of older runs stay as they were): header -> cell function."""
    runs = [r for g in groups for _, _, r in g.runs]
    extra = {}
    if any("spikes" in r for r in runs):
        extra["spikes (runs)"] = _spikes_cell
    if any("precision" in r for r in runs):
        extra["f64 check: sick / checks, worst"] = _precision_cell
    return extra


def _legacy_note(groups: list) -> str:
    """A note for a table whose rows mix an argument's legacy value (left out of labels) with
    others (named), e.g. the naive and the exact ranking BCE."""
    notes = []
    for g in groups:
        try:
            spec = registry.method(g.config["task"], g.config["method"]).args
        except ValueError:
            continue
        for k, a in spec.items():
            values = {h.config["method_args"].get(k) for h in groups if h.config["method"] == g.config["method"]}
            note = f" Rows without {k}= in their method have {k}={a.legacy}."
            # Only where an unlabelled row could be read as the (labelled) default.
            if a.named_in_id(a.default) and {a.legacy, a.default} <= values and note not in notes:
                notes.append(note)
    return "".join(notes)


def _extra_notes(extra: dict) -> str:
    notes = {
        "spikes (runs)": " spikes: training steps whose parameter-gradient norm exceeded 100× the "
                         "typical norm (the median of the last 1,000 ordinary steps), summed over "
                         "seeds (runs with any / runs counted).",
        "f64 check: sick / checks, worst": " f64 check: samples whose per-sample loss gradient was "
                                           "more than 10% off its float64 value, over the batches "
                                           "checked (precision_every), and the worst relative error.",
    }
    return "".join(notes[k] for k in extra)


def _is_plain_baseline(cfg: dict) -> bool:
    return cfg["variant"] == "none" and not control_label(cfg) and not _equivalent_args(cfg)


def _equivalent_args(cfg: dict) -> dict:
    """The method arguments whose value defines the same loss as another value, computed
    differently (registry ``Arg.same_as``: the exact BCE and the naive one), mapped to it."""
    try:
        spec = registry.method(cfg["task"], cfg["method"]).args
    except ValueError:
        return {}
    return {k: spec[k].same_as[v] for k, v in cfg["method_args"].items() if k in spec and v in spec[k].same_as}


#: Configuration fields a report row (a group of runs) leaves out: the seed (the row is over
#: seeds) and the precision check, which only observes training (checked and unchecked runs of
#: one configuration pool as seeds).
_ROW_OMITS = ("seed", "precision_every")


def _baseline_key(cfg: dict) -> str:
    """The group key of the baseline a configuration is compared with: no Newton loss and every
    later-added field (gradient clipping, CG cap, loss dtype) at its default — a clipped or
    float64-loss baseline is compared with the plain one — except that a Newton loss computed in
    another dtype is compared with the baseline computed in that dtype (the same loss)."""
    same_loss = {} if cfg["variant"] == "none" else {"loss_dtype": cfg.get("loss_dtype", "")}
    # A baseline computed another way (the exact BCE) is compared with the naive one, as a control.
    computed_otherwise = cfg["variant"] == "none" and not control_label(cfg)
    args = {**cfg["method_args"], **_equivalent_args(cfg)} if computed_otherwise else cfg["method_args"]
    base = RunConfig.from_dict({**cfg, **LATER_DEFAULTS, **same_loss, "method_args": args,
                                "seed": 0, "variant": "none"})
    base = base.validate().to_dict()
    for key in _ROW_OMITS:
        base.pop(key)
    if not base["task_args"]:  # as group_runs keys the groups
        del base["task_args"]
    return json.dumps(base, sort_keys=True)


def _named(metric: str) -> str:
    """A metric's name in the report's sentences (the built-in tasks' ``exact``: "exact match")."""
    return "exact match" if metric == "exact" else metric


def _unit(metric: str) -> str:
    """`` %`` after the name of a metric printed as a percentage, else nothing."""
    return " %" if registry.is_percent(metric) else ""


def _scale(metric: str) -> float:
    return 100.0 if registry.is_percent(metric) else 1.0


def _digits(metric: str) -> int:
    return 1 if registry.is_percent(metric) else 4


def _fmt(values: np.ndarray, metric: str) -> str:
    scale, digits = _scale(metric), _digits(metric)
    mean = scale * values.mean()
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {scale * values.std(ddof=1):.{digits}f}"


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN entries stay NaN and do not
    count as comparisons).

    With the m finite p-values sorted, p₍₁₎ ≤ … ≤ p₍ₘ₎, the adjusted value of the i-th is
    max_{j ≤ i} min(1, (m − j + 1) · p₍ⱼ₎). Rejecting where it is below α controls the chance of
    any false positive among the m comparisons at α (Holm 1979), without assuming independence.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be one-dimensional; got shape {p.shape}")
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p-values must lie in [0, 1]; got {p[finite].min()} … {p[finite].max()}")
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(finite)
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[k]))
        out[k] = running
    return out


def build_report(paths: list, *, out: Optional[str | os.PathLike] = None, alpha: float = 0.05,
                 plots: bool = True) -> Report:
    """Build the report of the finished runs under ``paths``; write files into ``out``.

    Files: ``report.md``, ``summary.csv`` / ``summary.json`` (one row per group, with per-seed
    values and p-values), ``runs.csv`` (one row per run), ``curves.png``, and ``lambda.png``
    when some method and variant were run at several λ.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    given, paths = paths, _expand(paths)  # once: sweep files and globs -> run directories
    runs = find_runs(paths)
    if not runs:
        raise ValueError(f"no finished runs (result.json) under {', '.join(map(str, given))}")
    groups = group_runs(runs)
    by_key = {g.key: g for g in groups}
    rows, lines = [], []
    for task in sorted({g.task for g in groups}):
        spec = registry.task(task)
        task_groups = [g for g in groups if g.task == task]
        extra = _extra_columns(task_groups)
        metrics = spec.metrics
        primary, second = metrics[0], (metrics[1] if len(metrics) > 1 else None)
        named, unit = _named(primary), _unit(primary)
        columns = "".join(f"{c} | " for c in spec.columns)
        # only for a task whose primary metric is an error, so other tables read as before
        lower = (f" Lower {named} is better: a negative Δ is an improvement, and the best validation "
                 f"is the lowest." if primary in spec.lower_is_better else "")
        lines += [f"### {spec.title}", "",
                  f"Test {named}{unit}{f' (test {second}{_unit(second)})' if second else ''} at the best "
                  f"validation {named}, mean ± std over seeds; p: Welch t-test of {named} against the baseline "
                  f"(* p < {alpha:g}); p Holm: the same p-values adjusted for the number of "
                  f"comparisons in this table that have a p-value (Holm–Bonferroni; † below "
                  f"{alpha:g}: significant even counting all of them, whereas some unadjusted "
                  f"p < {alpha:g} are expected by chance among many; rows with one seed have no "
                  f"p-value yet, so the adjustment tightens as they get seeds); last: test {named}{unit} at the run's last evaluation "
                  f"(where it is far {'above' if primary in spec.lower_is_better else 'below'} the first "
                  f"column, the run degraded after its best); "
                  f"{spec.column_note}ms/step: the runs' "
                  f"mean wall time per training step (in parentheses, the Newton loss's part of it), "
                  f"including whatever else loaded the machine then (e.g. parallel sweep workers) — "
                  f"a rough cost, not a benchmark (docs/PERFORMANCE.md has those)." + lower + _extra_notes(extra)
                  + _legacy_note(task_groups),
                  "",
                  f"| method | {columns}variant | seeds | {primary}{unit}"
                  f"{f' ({second}{_unit(second)})' if second else ''} "
                  f"| Δ vs baseline | p | p Holm | last{unit} | ms/step (Newton) |"
                  + "".join(f" {name} |" for name in extra),
                  f"|---|{'---|' * len(spec.columns)}---|---|---|---|---|---|---|---|" + "---|" * len(extra)]
        bases = [None if _is_plain_baseline(g.config) else by_key.get(_baseline_key(g.config))
                 for g in task_groups]
        tests = [welch(g.values(primary), base.values(primary)) if base is not None
                 else (math.nan, math.nan) for g, base in zip(task_groups, bases)]
        adjusted = holm([p for _, p in tests])
        for g, base, (t, p), p_holm in zip(task_groups, bases, tests, adjusted):
            vals = {m: g.values(m) for m in metrics}
            delta = math.nan
            if base is not None:
                delta = _scale(primary) * (vals[primary].mean() - base.values(primary).mean())
            last = np.array([r["final"]["test"][primary] for _, _, r in g.runs], dtype=np.float64)
            step_ms = 1e3 * np.mean([r["time"]["step_s"] for _, _, r in g.runs])
            newton_ms = 1e3 * np.mean([r["time"]["newton_s"] for _, _, r in g.runs])
            sig = "*" if (not math.isnan(p) and p < alpha) else ""
            cell = _fmt(vals[primary], primary) + (f" ({_fmt(vals[second], second)})" if second else "")
            cell += "".join(f", {m.replace('_', ' ')} {_fmt(vals[m], m)}" for m in metrics[2:])
            cells = "".join(f"{_short(registry.column_value(g.config, c))} | " for c in spec.columns)
            lines.append(
                f"| {g.label()} | {cells}{g.variant_label()} "
                f"| {len(g.runs)} | {cell} | {'' if math.isnan(delta) else f'{delta:+.{_digits(primary)}f}'} "
                f"| {'' if math.isnan(p) else f'{p:.3g}{sig}'} "
                f"| {'' if math.isnan(p_holm) else f'{p_holm:.3g}' + ('†' if p_holm < alpha else '')} "
                f"| {_fmt(last, primary)} "
                f"| {step_ms:.1f} ({newton_ms:.1f}) |"
                + "".join(f" {cell_of(g)} |" for cell_of in extra.values()))
            rows.append({
                "task": task, "method": g.config["method"], "method_args": g.config["method_args"],
                "n": g.config.get("n"), "variant": g.config["variant"], "lam": g.config["lam"],
                "damping": g.config["damping"], "cg_max_iter": g.config.get("cg_max_iter", 0),
                "clip_grad_norm": g.config.get("clip_grad_norm", 0.0),
                "loss_dtype": g.config.get("loss_dtype", ""), "label": g.label(),
                "variant_label": g.variant_label(), "seeds": [s for s, _, _ in g.runs],
                **{f"{m}_mean": float(vals[m].mean()) for m in metrics},
                **{f"{m}_std": float(vals[m].std(ddof=1)) if len(vals[m]) > 1 else math.nan for m in metrics},
                **{f"{m}_values": vals[m].tolist() for m in metrics},
                "delta_vs_baseline": delta, "welch_t": t, "welch_p": p,
                "significant": bool(sig), "welch_p_holm": float(p_holm),
                "significant_holm": bool(not math.isnan(p_holm) and p_holm < alpha), "step_ms": step_ms, "newton_ms": newton_ms,
                f"last_{primary}_mean": float(last.mean()),
                "runs": [str(d) for _, d, _ in g.runs], "config": g.config,
                # newer runs' records, per seed (None where a run has none), when shown
                **({"spikes": [r.get("spikes") for _, _, r in g.runs]} if "spikes (runs)" in extra else {}),
                **({"precision": [r.get("precision") for _, _, r in g.runs]}
                   if "f64 check: sick / checks, worst" in extra else {}),
            })
        machines = _machines(task_groups)
        unrecorded = machines.pop(None, 0)
        if machines:
            kinds = "; ".join(f"{name} ({count} runs)" for name, count in machines.items())
            lines += ["", ("ms/step mixes machine kinds: " if len(machines) > 1 else "Machine: ")
                      + kinds + (f"; {unrecorded} runs without a record" if unrecorded else "") + "."]
        lines.append("")
    left_out = _unfinished(paths)
    if left_out:
        lines.append("Not in the table: " + ", ".join(f"{len(v)} {k} run(s)" for k, v in left_out.items())
                     + " (" + "; ".join(f"{k}: " + ", ".join(Path(d).name for d in v[:5])
                                         + (", ..." if len(v) > 5 else "") for k, v in left_out.items()) + ").")
    markdown = "\n".join(lines).rstrip() + "\n"
    files = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.md", markdown)
        atomic_write_text(out / "summary.json",
                          json.dumps(_strict(rows), indent=2, default=_json_default, allow_nan=False) + "\n")
        scalar = [{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()
                   if k not in ("config", "runs")} for r in rows]
        atomic_write_text(out / "summary.csv", _csv(scalar))
        atomic_write_text(out / "runs.csv", _csv(_run_rows(runs)))
        files += [out / "report.md", out / "summary.json", out / "summary.csv", out / "runs.csv"]
        if plots:
            files += _plots(groups, by_key, out)
    return Report(markdown, rows, files)


def _machines(groups: list[Group]) -> dict[Optional[str], int]:
    """How many of the groups' runs ran on each machine kind (the processor and torch build of
    the run's ``machine`` record, without the Python version; key None: runs without a record),
    most runs first."""
    counts: dict[Optional[str], int] = {}
    for g in groups:
        for _, _, r in g.runs:
            kind = machine_label(r, python=False)
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] or "")))


def _unfinished(paths: list) -> dict:
    """Run directories under ``paths`` without a result: {"failed": [...], "unfinished": [...]}."""
    found: dict = {}
    for p in _expand(paths):
        p = Path(p)
        dirs = [p] if (p / "config.json").exists() else sorted(c.parent for c in p.rglob("config.json"))
        for d in dirs:
            if (d / "result.json").exists():
                continue
            kind = "failed" if (d / "failed.json").exists() else "unfinished"
            found.setdefault(kind, []).append(str(d))
    return found


def _strict(o):
    """NaN/Inf → None, recursively (strict JSON has no NaN)."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _run_rows(runs) -> list[dict]:
    rows = []
    for run_dir, r in runs:
        c = r["config"]
        row = {"run_dir": str(run_dir), "task": c["task"], "method": c["method"],
               "method_args": json.dumps(c["method_args"], sort_keys=True), "n": c.get("n"),
               "variant": c["variant"], "lam": c["lam"], "damping": c["damping"],
               "cg_max_iter": c.get("cg_max_iter", 0), "clip_grad_norm": c.get("clip_grad_norm", 0.0),
               "loss_dtype": c.get("loss_dtype", ""), "seed": c["seed"],
               "best_step": r["best"]["step"]}
        if c.get("task_args"):  # tasks with arguments only (the other tables keep their columns)
            row["task_args"] = json.dumps(c["task_args"], sort_keys=True)
        row.update({f"test_{k}": v for k, v in r["best"]["test"].items()})
        row.update({f"val_{k}": v for k, v in r["best"]["val"].items()})
        row.update({"step_ms": 1e3 * r["time"]["step_s"], "newton_ms": 1e3 * r["time"]["newton_s"],
                    "network_ms": 1e3 * r["time"]["network_s"], "total_s": r["time"]["total_s"]})
        rows.append(row)
    return rows


def _band(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the 95% t-interval over seeds (rows)."""
    from scipy import stats

    mean = curves.mean(0)
    k = curves.shape[0]
    if k < 2:
        return mean, np.zeros_like(mean)
    return mean, stats.t.ppf(0.975, k - 1) * curves.std(0, ddof=1) / math.sqrt(k)


def _plots(groups: list[Group], by_key: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    panels: dict = {}
    for g in groups:
        panels.setdefault((g.task, g.label(), g.config.get("n"), _columns(g)), []).append(g)
    cols = min(3, len(panels))
    rows_ = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(5.5 * cols, 4 * rows_), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, ((task, label, n, _), gs) in zip(axes.flat, panels.items()):
        primary = registry.task(task).metrics[0]
        for g in gs:
            curves = [[(rec["step"], rec["test"][primary]) for rec in read_metrics(d)] for _, d, _ in g.runs]
            length = min(len(c) for c in curves)
            if length == 0:
                continue
            steps = np.array([s for s, _ in curves[0][:length]])
            vals = _scale(primary) * np.array([[v for _, v in c[:length]] for c in curves])
            mean, half = _band(vals)
            line, = ax.plot(steps, mean, label=f"{g.variant_label()} ({len(g.runs)} seeds)")
            low, high = (mean - half, mean + half) if not registry.is_percent(primary) else \
                (np.clip(mean - half, 0, 100), np.clip(mean + half, 0, 100))
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
        ax.set_title(label + "".join(f", {c}={_short(registry.column_value(gs[0].config, c))}"
                                     for c in registry.task(task).columns))
        ax.set_xlabel("step")
        ax.set_ylabel(f"test {_named(primary)}{_unit(primary)} (95% band)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(_save(fig, out / "curves.png"))
    plt.close(fig)

    ablations: dict = {}
    for g in groups:
        if g.config["variant"] != "none":
            cfg = {k: v for k, v in g.config.items() if k != "lam"}
            ablations.setdefault(json.dumps(cfg, sort_keys=True), []).append(g)
    ablations = {k: v for k, v in ablations.items() if len(v) >= 2}
    if ablations:
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn: set = set()
        sharing: dict = {}
        for gs in ablations.values():
            k = _baseline_key(gs[0].config)
            sharing[k] = sharing.get(k, 0) + 1
        for gs in ablations.values():
            gs = sorted(gs, key=lambda g: g.config["lam"])
            primary = registry.task(gs[0].task).metrics[0]
            lams = np.array([g.config["lam"] for g in gs])
            # The mean over seeds as a line and every seed as a dot: with the 2–3 seeds of an
            # ablation a t-interval is wider than the axis (t(0.975, 1) = 12.7) and says nothing.
            mean = np.array([_scale(primary) * g.values(primary).mean() for g in gs])
            line, = ax.plot(lams, mean, marker="o",
                            label=f"{gs[0].label()} NL-{gs[0].config['variant']}"
                                  + ("" if gs[0].config["damping"] == "absolute" else f" ({gs[0].config['damping']})"))
            for g in gs:
                v = _scale(primary) * g.values(primary)
                ax.scatter(np.full(len(v), g.config["lam"]), v, s=12, alpha=0.5, color=line.get_color())
            key = _baseline_key(gs[0].config)
            base = by_key.get(key)
            if base is not None and key not in drawn:  # one line per baseline, however many variants
                drawn.add(key)
                b = _scale(primary) * base.values(primary)
                # gray when several variants share the baseline, else the variant's colour
                color = "0.3" if sharing[key] > 1 else line.get_color()
                ax.axhline(b.mean(), color=color, ls="--", lw=1,
                           label=f"{gs[0].label()} baseline (mean of {len(b)}; band: range)")
                if len(b) > 1:
                    ax.axhspan(b.min(), b.max(), color=color, alpha=0.12)
        ax.set_xscale("log")
        ax.set_xlabel("λ")
        ax.set_ylabel(f"test {_named(primary)}{_unit(primary)} (line: mean; dots: seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(_save(fig, out / "lambda.png"))
        plt.close(fig)
    return files


def _save(fig, path: Path) -> Path:
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)
    return path
