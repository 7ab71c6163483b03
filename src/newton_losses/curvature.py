"""Curvature of a batch loss with respect to the network outputs.

A batch of N independent samples with outputs y: (N, m) and a separable loss
``S(y) = Σ_i ℓ_i(y_i)`` (the sum of per-sample losses) has per-sample gradients
``g_i = ∇ℓ_i(y_i) = ∂S/∂y_i`` and a block-diagonal Hessian whose blocks are
``H_i = ∇²ℓ_i(y_i)``. Because ``∂g_i/∂y_j = 0`` for ``i ≠ j``, one backward pass of
``Σ_i g_i[k]`` yields row k of *every* block at once, so all N blocks cost m backward passes
(batched with ``is_grads_batched``), not N·m.

Curvatures (docs/PAPER.md §1):

- Hessian blocks ``H_i`` (per sample), and their batch average ``(1/N) Σ_j H_j`` (Definition 1).
- Empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` (Definition 2), summed over the global batch when
  torch.distributed is initialized.
- Generalized Gauss-Newton for ``ℓ_i = h_i(a(y_i))`` with convex h: ``G_i = J_iᵀ ∇²h_i J_i``
  (``J_i = ∂a/∂y_i``), positive semidefinite whenever h is convex.

Everything here assumes separability: sample i's loss depends on y_i only (no batch statistics
inside the loss). The functions take a *leaf* ``y`` of shape (N, m) and a callable returning
the per-sample losses (N,) on the (N, *shape) view the user's loss expects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

__all__ = [
    "CurvatureEstimate",
    "CompositeLoss",
    "NotTwiceDifferentiableError",
    "batched_grad",
    "choose_chunk_size",
    "hessian_blocks",
    "hessian_blocks_vmap",
    "hessian_matvec",
    "empirical_fisher",
    "all_reduce_sum",
    "gauss_newton_blocks",
    "gauss_newton_matvec",
]


class NotTwiceDifferentiableError(ValueError):
    """The loss has no (correct) second derivative; a Hessian-based curvature cannot be used."""


@dataclass
class CurvatureEstimate:
    """A curvature matrix for the Newton step, dense or matrix-free.

    Exactly one of ``matrix`` and ``matvec`` is set.

    Attributes:
        matrix: (N, m, m) one matrix per sample, or (m, m) shared by the batch.
        matvec: V (N, m) -> (N, m); row i is ``C_i v_i`` (or ``C v_i`` if ``shared``).
        shared: whether one matrix serves every sample (Fisher, batch-averaged Hessian).
        psd: known to be positive semidefinite by construction (Fisher, Gauss-Newton).
        low_rank: optional (K, m) factor with ``C = (1/n_total) GᵀG`` (the Fisher), which allows
            a Woodbury solve for large m.
        n_total: the K of ``low_rank`` (the global batch size).
    """

    matrix: Optional[Tensor] = None
    matvec: Optional[Callable[[Tensor], Tensor]] = None
    shared: bool = False
    psd: bool = False
    low_rank: Optional[Tensor] = None
    n_total: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.matrix is None) == (self.matvec is None):
            raise ValueError("CurvatureEstimate needs exactly one of matrix= and matvec=")
        if self.matrix is not None and self.matrix.ndim not in (2, 3):
            raise ValueError(
                f"CurvatureEstimate.matrix must have shape (N, m, m) or (m, m); "
                f"got {tuple(self.matrix.shape)}"
            )
        if self.matrix is not None and self.matrix.ndim == 2:
            self.shared = True


class CompositeLoss:
    """A loss given as an outer function of an inner map: ``ℓ(y, *args) = outer(inner(y), *args)``.

    This is what ``NewtonLoss(..., curvature="gauss_newton")`` needs: the generalized
    Gauss-Newton matrix ``G_i = J_iᵀ ∇²h_i J_i`` uses the Jacobian J of ``inner`` and the Hessian
    of ``outer`` with respect to its first argument. G is positive semidefinite when ``outer`` is
    convex in its first argument (binary cross-entropy of a relaxed permutation matrix, L1/L2 of a
    relaxed path).

    Args:
        inner: ``a = inner(y)``; y: (N, *shape) -> a: (N, *a_shape), sample i of a depending only
            on sample i of y (a relaxed sort, a relaxed shortest path).
        outer: ``outer(a, *args, **kwargs)`` -> (N,) per-sample losses or their mean (a scalar);
            the extra arguments (targets) go to ``outer`` only.

    Example:
        >>> import torch
        >>> loss = CompositeLoss(torch.sigmoid, lambda a, t: ((a - t) ** 2).sum(-1))
        >>> loss(torch.zeros(2, 3), torch.ones(2, 3))
        tensor([0.7500, 0.7500])
    """

    def __init__(self, inner: Callable[..., Tensor], outer: Callable[..., Tensor]) -> None:
        if not callable(inner):
            raise TypeError(f"inner must be callable; got {type(inner).__name__}")
        if not callable(outer):
            raise TypeError(f"outer must be callable; got {type(outer).__name__}")
        self.inner = inner
        self.outer = outer

    def __call__(self, y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.outer(self.inner(y), *args, **kwargs)

    def __repr__(self) -> str:
        return f"CompositeLoss(inner={self.inner!r}, outer={self.outer!r})"


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
    parts = []
    if step == 1:
        return torch.stack([_grad_or_zeros(output, inputs, grad_outputs[k]) for k in range(K)])
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


def choose_chunk_size(
    output: Tensor,
    inputs: Tensor,
    grad_outputs: Tensor,
    candidates: tuple = (1, 4, 16, 64),
    *,
    rounds: int = 5,
    budget: float = 1.0,
    min_seconds: float = 0.1,
) -> int:
    """Pick the fastest number of backward passes to batch at once, by measuring.

    Batching backward passes with vmap is fast for small graphs and can be many times slower
    than a plain loop for large ones (cache pressure; measured in docs/PERFORMANCE.md), so the
    choice is made by timing. Each candidate c is scored by its cost per row: the time of one
    chunk of the first c rows of ``grad_outputs`` (K, ...), divided by c. Every candidate is
    warmed up once (vmap tracing, allocations), then the candidates are timed in round-robin,
    so that a burst of load on a busy machine hits all of them alike, and each is scored by its
    median. A larger chunk (more memory) is chosen only when it is at least 10% faster than the
    best smaller one. The results are the same whatever is chosen — the choice only affects
    speed (batched and looped passes give bit-identical rows on the losses we tested).

    Cost: at most ``rounds`` rounds, and no round starts once the timed rounds have taken both
    ``min_seconds`` and ``budget`` × the predicted cost of the real work (K rows at the best
    cost per row so far); at least one round runs. A round is Σc rows (85 for the default
    candidates), so for a cheap loss all rounds run within ``min_seconds``. For an expensive
    one — relaxed Bellman-Ford on 12×12 tiles, 12–25 ms per row, K = 144 — tuning took 2.0×
    one Newton-loss call, where timing every candidate on 64 rows for 5 rounds (the previous
    version) took 8.3× (``scripts/chunk_tuning_cost.py``, on a 2-core machine running two
    training processes).
    """
    import statistics
    import time

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


def _grad_or_zeros(output: Tensor, inputs: Tensor, cot: Tensor) -> Tensor:
    (gr,) = torch.autograd.grad(output, inputs, cot, retain_graph=True, allow_unused=True)
    return torch.zeros_like(inputs) if gr is None else gr


def _require_graph(g: Tensor, what: str) -> None:
    if not g.requires_grad:
        raise NotTwiceDifferentiableError(
            f"{what}: the gradient of the loss does not depend differentiably on y, so autograd "
            "cannot give its Hessian (a custom autograd.Function whose backward is not itself "
            "differentiable, .detach()/numpy inside the loss, or a piecewise-linear loss). "
            "Use curvature='fisher', which needs first derivatives only."
        )


def hessian_blocks(g: Tensor, y: Tensor, *, chunk_size: "ChunkSpec" = None) -> Tensor:
    """Per-sample Hessian blocks from the per-sample gradients, by m batched backward passes.

    Args:
        g: (N, m) per-sample gradients ``∂S/∂y``, computed with ``create_graph=True``.
        y: (N, m) the leaf they were taken with respect to.
        chunk_size: how many of the m passes to batch at once (None: all; 1: a loop; a
            callable ``(output, inputs, grad_outputs) -> int`` such as
            :func:`choose_chunk_size` picks).

    Returns:
        H: (N, m, m) with ``H[i] = ∇²ℓ_i(y_i)``. Row k of every block is
        ``∂(Σ_i g_i[k])/∂y`` — valid because the loss is separable over samples.
    """
    _require_graph(g, "curvature='hessian'")
    N, m = g.shape
    eye = torch.eye(m, dtype=g.dtype, device=g.device)
    basis = eye.unsqueeze(1).expand(m, N, m)  # basis[k, i] = e_k
    try:
        chunk = _resolve_chunk(chunk_size, g, y, basis)
        rows = batched_grad(g, y, basis, chunk_size=chunk)  # (m, N, m): rows[k, i] = H_i[k]
    except RuntimeError as exc:
        _raise_double_backward(exc)
    return rows.permute(1, 0, 2)


ChunkSpec = Union[int, None, Callable[[Tensor, Tensor, Tensor], int]]


def _resolve_chunk(chunk_size: ChunkSpec, output: Tensor, inputs: Tensor, grad_outputs: Tensor):
    """An int or None is used as is; a callable is asked (e.g. a caching autotuner)."""
    if callable(chunk_size):
        return chunk_size(output, inputs, grad_outputs)
    return chunk_size


def _raise_double_backward(exc: BaseException):
    raise NotTwiceDifferentiableError(
        "the loss could not be differentiated twice "
        f"({type(exc).__name__}: {exc}). A custom autograd.Function marked once_differentiable "
        "or without a differentiable backward has no Hessian; use curvature='fisher'."
    ) from exc


def hessian_matvec(g: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    """Matrix-free per-sample Hessian-vector products ``V (N, m) -> (H_i v_i)_i``.

    One double-backward pass through the retained graph of ``g`` per product.
    """
    _require_graph(g, "curvature='hessian' (matrix-free)")

    def matvec(v: Tensor) -> Tensor:
        try:
            (hv,) = torch.autograd.grad(g, y, v, retain_graph=True, allow_unused=True)
        except RuntimeError as exc:
            _raise_double_backward(exc)
        return torch.zeros_like(v) if hv is None else hv

    return matvec


def hessian_blocks_vmap(
    per_sample_loss: Callable[..., Tensor], y: Tensor, args: tuple, kwargs: dict
) -> Tensor:
    """Per-sample Hessian blocks with ``torch.func.vmap(torch.func.hessian(...))``.

    ``per_sample_loss(y_batch, *args, **kwargs)`` is called on a batch of one sample inside the
    vmap. Tensor arguments whose first dimension equals N are sliced per sample; all other
    arguments are passed whole. Kept mainly as the reference point of the benchmarks: it is
    usually slower than :func:`hessian_blocks` (see docs/PERFORMANCE.md).
    """
    N = y.shape[0]

    def batched(a: Any) -> bool:
        return isinstance(a, Tensor) and a.ndim >= 1 and a.shape[0] == N

    flat = list(args) + list(kwargs.values())
    in_dims = tuple(0 if batched(a) else None for a in flat)
    n_args = len(args)
    keys = list(kwargs)

    def one(yi: Tensor, *rest: Any) -> Tensor:
        r = [a.unsqueeze(0) if (d == 0) else a for a, d in zip(rest, in_dims)]
        out = per_sample_loss(yi.unsqueeze(0), *r[:n_args], **dict(zip(keys, r[n_args:])))
        return out.sum()

    from torch.func import hessian, vmap

    try:
        return vmap(hessian(one), in_dims=(0,) + in_dims)(y, *flat)
    except RuntimeError as exc:
        raise NotTwiceDifferentiableError(
            f"torch.func could not compute the Hessian of this loss ({exc}); use "
            "hessian_method='rows' (autograd) or curvature='fisher'."
        ) from exc


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum a tensor over all processes when torch.distributed is initialized (else identity).

    The all-reduce is done in float64 so that every rank ends with the same bits that a single
    process summing the whole batch would get up to summation order.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return t
    buf = t.detach().to(torch.float64).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.dtype)


def empirical_fisher(g: Tensor, *, distributed: bool = True) -> tuple[Tensor, int]:
    """Empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` of per-sample gradients g: (N, m).

    With ``distributed=True`` and torch.distributed initialized, both the sum and N run over the
    global batch (all-reduce), so every rank gets the matrix one process with the whole batch
    would. Returns (F (m, m) in float64, N_global).
    """
    gw = g.detach().to(torch.float64)
    S = gw.transpose(0, 1) @ gw
    n = torch.tensor([float(g.shape[0])], dtype=torch.float64, device=g.device)
    if distributed:
        S = all_reduce_sum(S)
        n = all_reduce_sum(n)
    n_total = int(round(float(n.item())))
    return S / n_total, n_total


def gauss_newton_blocks(
    a: Tensor, y: Tensor, ga: Tensor, a_leaf: Tensor, *, chunk_size: "ChunkSpec" = None
) -> Tensor:
    """Per-sample generalized Gauss-Newton blocks ``G_i = J_iᵀ ∇²h_i J_i``.

    Args:
        a: (N, p) the inner map's output, still attached to the graph of ``y``.
        y: (N, m) the leaf.
        ga: (N, p) per-sample gradients of the outer losses at ``a_leaf``, with create_graph.
        a_leaf: (N, p) the detached copy of ``a`` the outer was evaluated on.

    Cost: m passes for the Jacobian columns ``J e_k`` (a double-backward through the inner map,
    linear in the dummy cotangent) and m Hessian-vector products of the outer.
    """
    _require_graph(ga, "curvature='gauss_newton' (outer function)")
    N, m = y.shape
    JE, chunk = _jacobian_columns(a, y, chunk_size=chunk_size)  # (m, N, p)
    try:
        HJ = batched_grad(ga, a_leaf, JE, chunk_size=chunk)  # (m, N, p)
    except RuntimeError as exc:
        _raise_double_backward(exc)
    return torch.einsum("kip,lip->ikl", JE, HJ)


def _jvp_builder(a: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Return (u, w) with ``u = Jᵀ w`` built with a graph, so ``∂(u·v)/∂w = J v`` (a JVP)."""
    w = torch.zeros_like(a, requires_grad=True)
    (u,) = torch.autograd.grad(a, y, w, create_graph=True, allow_unused=True)
    if u is None or not u.requires_grad:
        raise NotTwiceDifferentiableError(
            "curvature='gauss_newton': the inner map's Jacobian-vector products could not be "
            "formed (its backward is not differentiable). Use curvature='fisher'."
        )
    return u, w


def _jacobian_columns(a: Tensor, y: Tensor, *, chunk_size: "ChunkSpec" = None) -> tuple[Tensor, Optional[int]]:
    N, m = y.shape
    u, w = _jvp_builder(a, y)
    eye = torch.eye(m, dtype=y.dtype, device=y.device)
    basis = eye.unsqueeze(1).expand(m, N, m)
    chunk = _resolve_chunk(chunk_size, u, w, basis)
    return batched_grad(u, w, basis, chunk_size=chunk), chunk  # (m, N, p): [k, i] = J_i e_k


def gauss_newton_matvec(a: Tensor, y: Tensor, ga: Tensor, a_leaf: Tensor) -> Callable[[Tensor], Tensor]:
    """Matrix-free ``V (N, m) -> (J_iᵀ ∇²h_i J_i v_i)_i``: three backward passes per product."""
    _require_graph(ga, "curvature='gauss_newton' (outer function)")
    u, w = _jvp_builder(a, y)

    def matvec(v: Tensor) -> Tensor:
        (jv,) = torch.autograd.grad(u, w, v, retain_graph=True)
        (hjv,) = torch.autograd.grad(ga, a_leaf, jv, retain_graph=True, allow_unused=True)
        if hjv is None:
            return torch.zeros_like(v)
        (out,) = torch.autograd.grad(a, y, hjv, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if out is None else out

    return matvec
