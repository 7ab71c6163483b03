"""Batched vector-Jacobian products and the choice of how many to batch at once."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Optional, Union

import torch
from torch import Tensor

__all__ = ["ChunkSpec", "batched_grad", "choose_chunk_size", "pick_chunk_size", "resolve_chunk"]

# Candidate chunk sizes (backward passes batched at once); the largest is also the default
# for work too small to be worth timing.
CANDIDATES = (1, 4, 16, 64)
# Below this predicted cost of all the rows (seconds, as a loop), timing the candidates would
# cost more than it could ever save on one call; see pick_chunk_size.
MIN_TUNED_WORK_S = 0.05

ChunkSpec = Union[int, None, Callable[[Tensor, Tensor, Tensor], int]]


def batched_grad(
    output: Tensor,
    inputs: Tensor,
    grad_outputs: Tensor,
    *,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Vector-Jacobian products for K stacked cotangents: (K, *output.shape) -> (K, *inputs.shape).

    Uses ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over the backward pass) in
    chunks of ``chunk_size`` cotangents (all at once by default; 1 means a plain loop of
    backward passes), and falls back to a loop for operations that have no batching rule. The
    graph is retained.
    """
    K = grad_outputs.shape[0]
    step = K if chunk_size is None else max(1, int(chunk_size))
    if step == 1:
        return torch.stack([_grad_or_zeros(output, inputs, grad_outputs[k]) for k in range(K)])
    parts = []
    for start in range(0, K, step):
        chunk = grad_outputs[start : start + step]
        try:
            (part,) = torch.autograd.grad(
                output, inputs, chunk, retain_graph=True, is_grads_batched=True,
                allow_unused=True,
            )
        except RuntimeError as exc:
            if "batch" not in str(exc).lower() and "vmap" not in str(exc).lower():
                raise
            part = torch.stack([
                _grad_or_zeros(output, inputs, chunk[k]) for k in range(chunk.shape[0])
            ])
        if part is None:
            part = torch.zeros((chunk.shape[0],) + tuple(inputs.shape), dtype=inputs.dtype,
                               device=inputs.device)
        parts.append(part)
    return torch.cat(parts, dim=0)


def _grad_or_zeros(output: Tensor, inputs: Tensor, cot: Tensor) -> Tensor:
    (gr,) = torch.autograd.grad(output, inputs, cot, retain_graph=True, allow_unused=True)
    return torch.zeros_like(inputs) if gr is None else gr


def resolve_chunk(chunk_size: ChunkSpec, output: Tensor, inputs: Tensor, grad_outputs: Tensor):
    """An int or None is used as is; a callable is asked (e.g. a caching autotuner)."""
    if callable(chunk_size):
        return chunk_size(output, inputs, grad_outputs)
    return chunk_size


def choose_chunk_size(
    output: Tensor,
    inputs: Tensor,
    grad_outputs: Tensor,
    candidates: tuple = CANDIDATES,
    *,
    rounds: int = 5,
    budget: float = 1.0,
    min_seconds: float = 0.1,
) -> int:
    """Pick the fastest number of backward passes to batch at once, by measuring.

    Batching backward passes with vmap is fast for small graphs and can be many times slower
    than a plain loop for large ones (cache pressure; docs/PERFORMANCE.md), so the choice is
    made by timing. Each candidate c is scored by its cost per row: the time of one chunk of
    the first c rows of ``grad_outputs`` (K, ...), divided by c. Every candidate is warmed up
    once (vmap tracing, allocations), then the candidates are timed in round-robin, so that a
    burst of load on a busy machine hits all of them alike, and each is scored by its median. A
    larger chunk (more memory) is chosen only when it is at least 10% faster than the best
    smaller one. The result does not depend on the choice, only the speed does.

    Cost: at most ``rounds`` rounds, and no round starts once the timed rounds have taken both
    ``min_seconds`` and ``budget`` × the predicted cost of the real work (K rows at the best
    cost per row so far); at least one round runs. A round is Σc rows (85 for the default
    candidates).
    """
    K = grad_outputs.shape[0]
    cands = sorted({min(int(c), K) for c in candidates})
    for c in cands:
        batched_grad(output, inputs, grad_outputs[:c], chunk_size=c)  # warm-up
    per_row: dict = {c: [] for c in cands}
    spent = 0.0
    for r in range(max(1, int(rounds))):
        if r:
            predicted = K * min(statistics.median(v) for v in per_row.values())
            if spent >= max(min_seconds, budget * predicted):
                break
        for c in cands:
            t0 = time.perf_counter()
            batched_grad(output, inputs, grad_outputs[:c], chunk_size=c)
            dt = time.perf_counter() - t0
            spent += dt
            per_row[c].append(dt / c)
    best, best_cost = cands[0], statistics.median(per_row[cands[0]])
    for c in cands[1:]:
        cost = statistics.median(per_row[c])
        if cost < 0.9 * best_cost:  # prefer the smaller chunk (less memory) unless clearly faster
            best, best_cost = c, cost
    return best


def pick_chunk_size(
    output: Tensor,
    inputs: Tensor,
    grad_outputs: Tensor,
    *,
    tune: Optional[Callable[[Tensor, Tensor, Tensor], int]] = None,
    min_work_s: Optional[float] = None,
) -> int:
    """A chunk size for the K rows ``grad_outputs`` (K, ...): tuned only when that can pay off.

    Times one row as a plain backward pass (twice; the first absorbs one-time costs), predicts
    the cost of all K rows as K times that, and if the prediction is at most ``min_work_s``
    (default ``MIN_TUNED_WORK_S``, 50 ms)
    returns ``min(K, 64)`` (all rows at once, as the timing picks for small graphs) without
    timing anything else. Otherwise calls ``tune`` (default :func:`choose_chunk_size`), whose
    rounds cost about as much as the work they tune.
    """
    K = grad_outputs.shape[0]
    row = grad_outputs[:1]
    batched_grad(output, inputs, row, chunk_size=1)
    t0 = time.perf_counter()
    batched_grad(output, inputs, row, chunk_size=1)
    if K * (time.perf_counter() - t0) <= (MIN_TUNED_WORK_S if min_work_s is None else min_work_s):
        return min(K, max(CANDIDATES))
    return (tune or choose_chunk_size)(output, inputs, grad_outputs)
