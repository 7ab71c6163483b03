"""Speed of the sorting relaxations beside the reference packages (diffsort, difftopk).

For each relaxation and n, on a batch of B score vectors, in one process:

- fwd+bwd: relaxation -> ranking_bce -> mean -> backward to the scores;
- hessian (batched bwd): the per-sample n × n Hessians of the BCE loss w.r.t. the scores by
  n batched backward passes over the summed gradient (``is_grads_batched=True``), the way the
  core builds Hessian blocks;
- hessian (torch.func): ``vmap(hessian(loss))`` per sample.

The reference rows use the reference relaxation (float32-only research code) with the same loss,
our ``ranking_bce`` on the transposed / flipped matrix, so only the relaxation differs. Times are
medians over ``--repeats`` runs after ``--warmup`` runs, in milliseconds.

    OMP_NUM_THREADS=1 python benchmarks/bench_sorting.py                 # B=100, n in 5 10 32
    OMP_NUM_THREADS=1 python benchmarks/bench_sorting.py --batch 8 --sizes 5 --repeats 2   # smoke test

Not a test: it prints a Markdown table (the one in docs/SORTING.md, impl = "ours" or the reference
package) and asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.func import hessian, vmap

from newton_losses.sorting import DiffSortNet, NeuralSort, SoftSort, permutation_matrix, ranking_bce

Relaxation = Callable[[torch.Tensor], torch.Tensor]


def _references(name: str, n: int, settings: dict) -> Relaxation | None:
    """The reference package's relaxation, mapped to our convention (P @ x ascending)."""
    reference = _reference_batched(name, n, settings)
    if reference is None:
        return None

    def relax(x: torch.Tensor) -> torch.Tensor:
        # The references take (B, n) only; torch.func.vmap hands one sample (n,) at a time.
        return reference(x.unsqueeze(0)).squeeze(0) if x.dim() == 1 else reference(x)

    return relax


def _reference_batched(name: str, n: int, settings: dict) -> Relaxation | None:
    try:
        if name == "NeuralSort":
            import difftopk

            ref = difftopk.NeuralSort(tau=settings["tau"])
            return lambda x: ref(x).transpose(-2, -1)
        if name == "SoftSort":
            import difftopk

            ref = difftopk.SoftSort(tau=settings["tau"], pow=settings["power"])
            return lambda x: ref(-x)
        import diffsort

        ref = diffsort.DiffSortNet(
            settings["network"], n, steepness=settings["steepness"], distribution=settings["sigmoid"]
        )
        return lambda x: ref(x)[1].transpose(-2, -1)
    except ImportError:
        return None


def _relaxations(n: int) -> list[tuple[str, str, Relaxation, str, Relaxation | None]]:
    """(name, variant, ours, reference package, reference relaxation or None if not installed)."""
    rows = []
    for name, settings, ours in (
        ("NeuralSort", {"tau": 1.0}, NeuralSort(1.0)),
        ("SoftSort", {"tau": 1.0, "power": 1.0}, SoftSort(1.0)),
    ):
        rows.append((name, "", ours, "difftopk", _references(name, n, settings)))
    for network in ("odd_even", "bitonic"):
        for sigmoid in ("logistic", "logistic_phi", "cauchy"):
            settings = {"network": network, "steepness": 10.0, "sigmoid": sigmoid}
            ours = DiffSortNet(network, n, steepness=10.0, sigmoid=sigmoid)
            reference = _references("DiffSortNet", n, settings)
            rows.append(("DiffSortNet", f"{network}/{sigmoid}", ours, "diffsort", reference))
    return rows


def _interleaved_medians(fns: list[Callable[[], object] | None], warmup: int, repeats: int) -> list[float | None]:
    """Median time in ms of each function, timed in turn within every repeat.

    Interleaving keeps a load change on a shared machine from favouring one implementation.
    A function that raises (a reference package may not support a transform) is reported as None.
    """
    live = []
    for fn in fns:
        try:
            for _ in range(warmup):
                fn()
            live.append(fn)
        except Exception:
            live.append(None)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(live, times):
            if fn is not None:
                start = time.perf_counter()
                fn()
                record.append(time.perf_counter() - start)
    return [1e3 * statistics.median(record) if record else None for record in times]


def _forward_backward(relax: Relaxation, scores: torch.Tensor, target: torch.Tensor) -> None:
    y = scores.detach().requires_grad_()
    ranking_bce(relax(y), target).mean().backward()


def _hessian_batched_backward(relax: Relaxation, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    y = scores.detach().requires_grad_()
    (grad,) = torch.autograd.grad(ranking_bce(relax(y), target).sum(), y, create_graph=True)
    n = y.shape[-1]
    basis = torch.eye(n, dtype=y.dtype).unsqueeze(1).expand(n, *y.shape)
    (rows,) = torch.autograd.grad(grad, y, basis, is_grads_batched=True)
    return rows.transpose(0, 1)


def _hessian_func(relax: Relaxation, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return vmap(hessian(lambda s, t: ranking_bce(relax(s), t)))(scores, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # The reference packages print notices when first imported; keep them out of the table.
    with contextlib.redirect_stdout(sys.stderr):
        for package in ("diffsort", "difftopk"):
            try:
                importlib.import_module(package)
            except ImportError:
                pass
    generator = torch.Generator().manual_seed(args.seed)
    print(
        f"torch {torch.__version__}, float32, CPU threads {torch.get_num_threads()}, batch {args.batch}, "
        f"median of {args.repeats} (ms)\n"
    )
    print("| relaxation | variant | n | impl | fwd+bwd | hessian (batched bwd) | hessian (torch.func) |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        scores = torch.randn(args.batch, n, generator=generator)
        target = permutation_matrix(torch.randn(args.batch, n, generator=generator))
        for name, variant, ours, package, reference in _relaxations(n):
            impls = [("ours", ours)] + ([(package, reference)] if reference is not None else [])
            cells = {impl: [] for impl, _ in impls}
            for measure in (_forward_backward, _hessian_batched_backward, _hessian_func):
                fns = [lambda relax=relax, measure=measure: measure(relax, scores, target) for _, relax in impls]
                for (impl, _), value in zip(impls, _interleaved_medians(fns, args.warmup, args.repeats)):
                    cells[impl].append(value)
            for impl, values in cells.items():
                text = " | ".join("n/a" if v is None else f"{v:.2f}" for v in values)
                print(f"| {name} | {variant} | {n} | {impl} | {text} |", flush=True)


if __name__ == "__main__":
    main()
