"""The paper's ranking numbers beside ours: one table, rows = relaxation × n.

The paper's exact-match accuracies (Petersen et al., "Newton Losses", NeurIPS 2024; as summarized
in docs/PAPER.md §3: the paper's CNN on full-size 4-digit MNIST, 100,000 steps, 10
seeds) are kept here as the strings the paper gives ("≈ 83" where only a plot or an approximate
value was available). Our numbers are taken from the report rows of committed runs
(:func:`~.report.build_report`), so the table regenerates as runs land.
"""
from __future__ import annotations

import math
from typing import Optional

from newton_lab.report import control_label

__all__ = ["PAPER_RANKING", "relaxation_name", "paper_table"]

#: (relaxation, n) → {variant: the paper's test exact match %, as printed}. Variants: "none"
#: (baseline), "hessian" (NL-Hessian), "fisher" (NL-Fisher). The paper has no Gauss-Newton row.
PAPER_RANKING: dict[tuple[str, int], dict[str, str]] = {
    ("NeuralSort", 5): {"none": "71.3", "hessian": "≈ 83", "fisher": "83.9"},
    ("NeuralSort", 10): {"none": "24.3", "hessian": "48.8", "fisher": "39.2"},
    ("SoftSort", 10): {"none": "27.5", "hessian": "55.1", "fisher": "54.0"},
    ("Logistic DSN", 10): {"none": "12.3 ± 10.2", "hessian": "42.1 ± 22.3", "fisher": "25.7 ± 27.4"},
    ("Cauchy DSN", 5): {"none": "85.1", "hessian": "85.1", "fisher": "≈ 85"},
}

_ORDER = ("NeuralSort", "SoftSort", "Logistic DSN", "Cauchy DSN")
# Our variants in the paper's columns: the paper's "Hessian" is the batch-averaged Hessian of its
# Definition 1 (docs/PAPER.md §1), our ``hessian_batch``. Our per-sample ``hessian`` has no column
# here (it is in the report tables).
_COLUMNS = (("none", "baseline", "none"), ("hessian_batch", "NL-Hessian", "hessian"),
            ("fisher", "NL-Fisher", "fisher"), ("gauss_newton", "NL-Gauss-Newton", None))


def relaxation_name(method: str, method_args: dict) -> Optional[str]:
    """The paper's name of a ranking relaxation (None: not one of the paper's four)."""
    if method == "neuralsort":
        return "NeuralSort"
    if method == "softsort":
        return "SoftSort"
    if method == "odd_even":
        return {"logistic": "Logistic DSN", "cauchy": "Cauchy DSN"}.get(method_args.get("sigmoid", "logistic"))
    return None


def paper_table(rows: list[dict], *, alpha: float = 0.05) -> list[str]:
    """Markdown lines: for each relaxation and n, the paper's number and ours per variant.

    Args:
        rows: report rows of ranking runs (``Report.groups`` of :func:`~.report.build_report`),
            at most one per (relaxation, n, variant) — pass only the table's settings.
        alpha: the significance level the rows' Welch p-values are marked at.

    Raises:
        ValueError: two rows for one cell (e.g. two λ of one variant: say which one belongs to
            the table by narrowing the run paths).
    """
    ours: dict = {}
    for r in rows:
        if r["task"] != "ranking" or control_label(r["config"]) or r["config"].get("cg_max_iter"):
            continue  # controls (clipped gradients, a float64 loss, truncated solves) are not the paper's settings
        name = relaxation_name(r["method"], r["method_args"])
        if name is None:
            continue
        key = (name, int(r["n"]), r["variant"])
        if key in ours:
            raise ValueError(f"two groups of runs for {name} n={r['n']} {r['variant']}: "
                             f"{_setting(ours[key])} and {_setting(r)}; narrow the run paths to "
                             "one setting per variant")
        ours[key] = r
    cells = sorted({(k[0], k[1]) for k in ours} | set(PAPER_RANKING),
                   key=lambda c: (_ORDER.index(c[0]), c[1]))
    head = ["relaxation", "n"]
    for _, title, paper_variant in _COLUMNS:
        head += ([f"paper {title}"] if paper_variant else []) + [f"ours {title}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, n in cells:
        paper = PAPER_RANKING.get((name, n), {})
        row = [name, str(n)]
        for variant, _, paper_variant in _COLUMNS:
            if paper_variant:
                row.append(paper.get(paper_variant, "—"))
            row.append(_ours(ours.get((name, n, variant)), alpha))
        lines.append("| " + " | ".join(row) + " |")
    settings = _settings_by_row(ours)
    lines += ["", "Ours: test exact match %, mean ± std over the seeds in brackets; * the Welch test "
              f"against our baseline of the same row has p < {alpha:g}, † also after the Holm adjustment over "
              "every comparison with a baseline among these runs (the report table's p Holm); — in an \"ours\" column: not "
              "run (yet), in a \"paper\" column: not in docs/PAPER.md §3. Newton settings: "
              + ("; ".join(settings) if settings else "none") + "."]
    return lines


def _settings_by_row(ours: dict) -> list[str]:
    """Each Newton setting with the rows that use it: rows may be tuned separately, so a bare
    list of settings would not say which λ a cell was run at."""
    users: dict[str, dict[str, list[int]]] = {}
    for (name, n, variant), r in ours.items():
        if variant != "none":
            users.setdefault(_setting(r), {}).setdefault(name, []).append(n)
    out = []
    for setting in sorted(users):
        rows = sorted(users[setting].items(), key=lambda kv: _ORDER.index(kv[0]))
        out.append(setting + " (" + ", ".join(
            f"{name} n={'/'.join(str(n) for n in sorted(ns))}" for name, ns in rows) + ")")
    return out


def _ours(r: Optional[dict], alpha: float) -> str:
    if r is None:
        return "—"
    k = len(r["exact_values"])  # the report row already holds mean and std (ddof 1)
    text = f"{100 * r['exact_mean']:.1f}"
    if k > 1:
        text += f" ± {100 * r['exact_std']:.1f}"
    p = r.get("welch_p")
    star = "*" if p is not None and not (isinstance(p, float) and math.isnan(p)) and p < alpha else ""
    p_holm = r.get("welch_p_holm")
    if star and p_holm is not None and not math.isnan(p_holm) and p_holm < alpha:
        star += "†"
    return f"{text}{star} ({k})"


def _setting(r: dict) -> str:
    if r["variant"] == "none":
        return "baseline"
    damping = {"batch": " batch", "relative": " relative"}.get(r["damping"], "")
    return f"{r['variant']} λ={r['lam']:g}{damping}"
