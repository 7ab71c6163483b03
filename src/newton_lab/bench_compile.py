"""What ``torch.compile`` does to a training step with a Newton loss (``newton-losses bench
--section compile``).

For a few of the training steps of :mod:`newton_lab.bench_step` (same networks, losses and
batches), each variant's forward — network, loss or Newton loss — is run eagerly and compiled
(``torch.compile``, inductor, with ``torch._dynamo.config.trace_autograd_ops = True`` so that
the Newton loss's ``torch.autograd.grad`` calls are traced; docs/INTEGRATION.md); backward and
the Adam update stay eager. Printed per variant: the graph breaks after the first call (counted by
``torch._dynamo.explain``), the compile time (the first compiled call), the eager and compiled
milliseconds per step (medians over interleaved repeats) and their ratio — all in one process.
"""
from __future__ import annotations

import copy
import sys
import time
import warnings

import torch

from newton_lab.bench_step import _interleaved, _name
from newton_lab.config import protocol_config
from newton_lab.runner import build_task, newton_loss_for

__all__ = ["compile_cases", "run_compile", "compile_table"]


def compile_cases(quick: bool = False) -> list[tuple[str, object, tuple]]:
    """(name, run configuration, variants): the quick ranking network (NeuralSort, n = 5 and
    the logistic sorting network, n = 10) and the quick shortest-path network (relaxed
    Bellman-Ford; the dense Fisher — its Hessian is solved by conjugate gradients, whose
    convergence test dynamo cannot trace)."""
    cases = []
    for method, n in ([("neuralsort", 5)] if quick else [("neuralsort", 5), ("odd_even", 10)]):
        cfg = protocol_config("ranking", "quick", method=method, n=n, data="synthetic",
                              synthetic_size=600, val_sets=1, test_sets=1)
        cases.append((f"ranking quick (MLP 14x56), {_name(cfg)}, batch 100", cfg,
                      ("none", "fisher", "hessian_batch") if quick else ("none", "fisher", "hessian", "hessian_batch")))
    if not quick:
        cfg = protocol_config("shortest_path", "quick", method="bf_for", data="synthetic",
                              synthetic_size=150, train_size=140, val_sets=5, test_sets=5)
        cases.append((f"shortest path quick (small CNN), {_name(cfg)}, batch 70", cfg, ("none", "fisher")))
    return cases


def run_compile(cases, repeats: int, lam: float = 0.1, out=sys.stdout, progress: bool = True) -> list[dict]:
    """Eager against compiled training steps, per case and variant (see the module docstring)."""
    import torch._dynamo as dynamo

    print("\n§4 torch.compile (inductor, trace_autograd_ops=True) of the step's forward — network, "
          f"loss or Newton loss (λ={lam}); backward and Adam eager. Compiled ÷ eager < 1: compile "
          "gains", file=out)
    old = dynamo.config.trace_autograd_ops
    dynamo.config.trace_autograd_ops = True
    rows = []
    try:
        for name, base_cfg, variants in cases:
            torch.manual_seed(0)
            task = build_task(base_cfg, torch.device("cpu"), torch.float32)
            gen = torch.Generator().manual_seed(0)
            batches = [task.sample(base_cfg.batch_size, gen) for _ in range(repeats + 2)]
            if progress:
                print(f"  … {name}", file=sys.stderr, flush=True)
            print(f"\n{name}", file=out)
            print(f"  {'variant':<16} {'breaks':>6} {'compile s':>9} {'eager ms':>9} {'compiled ms':>11} "
                  f"{'compiled ÷ eager':>16}", file=out)
            for v in variants:
                cfg = base_cfg.replace(variant=v, lam=lam if v != "none" else 0.0).validate()
                vtask = build_task(cfg, torch.device("cpu"), torch.float32, **task.shared_data())
                fns, breaks, compile_s = {}, 0, 0.0
                for mode in ("eager", "compiled"):
                    model = copy.deepcopy(task.model)
                    model.train()
                    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
                    newton = newton_loss_for(cfg, vtask, check_hessian="never", reduction="mean")

                    def forward(x, target, model=model, newton=newton, vtask=vtask):
                        y = vtask.outputs(model, x)
                        return newton(y, target) if newton is not None else vtask.loss_fn(y, target).mean()

                    if mode == "compiled":
                        dynamo.reset()
                        fwd = torch.compile(forward)
                        x0, t0 = batches[-1]
                        start = time.perf_counter()
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            fwd(x0, t0).backward()
                            compile_s = time.perf_counter() - start
                            breaks = dynamo.explain(forward)(x0, t0).graph_break_count
                    else:
                        fwd = forward
                    state = {"i": 0}

                    def step(fwd=fwd, opt=opt, state=state) -> None:
                        x, target = batches[state["i"] % repeats]
                        state["i"] += 1
                        loss = fwd(x, target)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()

                    fns[mode] = step
                times, _, spreads = _interleaved(fns, repeats, warmup=2)
                ratio = times["compiled"] / times["eager"]
                rows.append(dict(section="compile", case=name, variant=v, eager_s=times["eager"],
                                 compiled_s=times["compiled"], ratio=ratio, compile_s=compile_s,
                                 breaks=breaks, spread=max(spreads.values())))
                print(f"  {('baseline' if v == 'none' else v):<16} {breaks:>6} {compile_s:>9.1f} "
                      f"{1e3 * times['eager']:>9.2f} {1e3 * times['compiled']:>11.2f} {ratio:>16.3f}",
                      file=out)
                out.flush()
    finally:
        dynamo.config.trace_autograd_ops = old
        dynamo.reset()
    return rows


def compile_table(rows: list[dict]) -> str:
    """The compile rows as a markdown table."""
    lines = ["| step | variant | graph breaks | compile (s) | eager (ms) | compiled (ms) | compiled ÷ eager |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("section") != "compile":
            continue
        v = "baseline" if r["variant"] == "none" else r["variant"]
        lines.append(f"| {r['case']} | {v} | {r['breaks']} | {r['compile_s']:.1f} | {1e3 * r['eager_s']:.2f} | "
                     f"{1e3 * r['compiled_s']:.2f} | {r['ratio']:.3f} |")
    return "\n".join(lines)
