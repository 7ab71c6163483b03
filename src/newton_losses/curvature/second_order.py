"""Is autograd's second derivative of this loss complete? Structural and numerical checks.

Built-in torch operations have correct second derivatives. A custom ``autograd.Function`` may
not, and autograd does not always say so:

- A backward marked ``@once_differentiable`` runs under ``no_grad``; torch attaches an error
  node to its result (raised on double backward) only if one of the *cotangents flowing into
  it* requires grad. In ``loss = F(y).sum() + q(y)`` the cotangent reaching F's backward is the
  constant 1 (it comes from ``sum``), so F's backward returns a constant, no error node is
  attached, and the gradient still requires grad through q: the Hessian silently lacks F's
  term. :func:`find_once_differentiable` finds such a Function in the graph by its backward.
- A backward computed outside autograd (``.detach()``, numpy) leaves no trace in the graph;
  only comparing a Hessian-vector product with finite differences of the gradient
  (:func:`hvp_mismatch`) can tell.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = [
    "NotTwiceDifferentiableError",
    "find_once_differentiable",
    "graph_reaches",
    "has_custom_function",
    "hvp_mismatch",
    "raise_double_backward",
    "require_graph",
]


#: The quantile over samples that :func:`hvp_mismatch` reports.
MISMATCH_QUANTILE = 0.9


class NotTwiceDifferentiableError(ValueError):
    """The loss has no (correct) second derivative; a Hessian-based curvature cannot be used."""


def require_graph(g: Tensor, what: str) -> None:
    """Raise if the gradient g carries no graph (so it has no second derivative at all)."""
    if not g.requires_grad:
        raise NotTwiceDifferentiableError(
            f"{what}: the gradient of the loss does not depend differentiably on y, so autograd "
            "cannot give its Hessian (a custom autograd.Function whose backward is not itself "
            "differentiable, .detach()/numpy inside the loss, or a loss linear in y, whose Hessian "
            "is zero: the Newton step would be the gradient divided by λ). "
            "Use curvature='fisher', which needs first derivatives only."
        )


def raise_double_backward(exc: BaseException):
    """Re-raise a double-backward failure of autograd as :class:`NotTwiceDifferentiableError`."""
    raise NotTwiceDifferentiableError(
        "the loss could not be differentiated twice "
        f"({type(exc).__name__}: {exc}). A custom autograd.Function marked once_differentiable "
        "or without a differentiable backward has no Hessian; use curvature='fisher'."
    ) from exc


def _graph_nodes(t: Tensor, leaf: Optional[Tensor] = None) -> set:
    """The autograd nodes behind ``t``; with ``leaf``, only those on a path from t to leaf (a
    target computed from other tensors — a teacher's output, say — is not differentiated with
    respect to y, so what its graph holds does not matter)."""
    parents: dict = {}
    seen, stack, target = set(), [t.grad_fn], None
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if leaf is not None and getattr(fn, "variable", None) is leaf:
            target = fn
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                parents.setdefault(nxt, []).append(fn)
                stack.append(nxt)
    if leaf is None:
        return seen
    reaching, stack = set(), [target] if target is not None else []
    while stack:
        fn = stack.pop()
        if fn not in reaching:
            reaching.add(fn)
            stack.extend(parents.get(fn, ()))
    return reaching


def graph_reaches(t: Tensor, leaf: Tensor) -> bool:
    """Whether ``t`` depends on the leaf ``leaf`` through autograd's graph."""
    return bool(_graph_nodes(t, leaf))


def has_custom_function(t: Tensor, leaf: Optional[Tensor] = None) -> bool:
    """Whether the autograd graph behind ``t`` (on paths to ``leaf``, if given) contains a custom
    ``torch.autograd.Function``."""
    return any(isinstance(fn, torch.autograd.function.BackwardCFunction) for fn in _graph_nodes(t, leaf))


_ONCE_DIFFERENTIABLE_CODE = torch.autograd.function.once_differentiable(lambda ctx: None).__code__


def find_once_differentiable(t: Tensor, leaf: Optional[Tensor] = None) -> Optional[str]:
    """Name of a custom Function behind ``t`` (on a path to ``leaf``, if given) whose backward is
    ``@once_differentiable``, or None.

    Recognized by the wrapper torch puts around such a backward (its code object is shared by
    every decorated function).
    """
    for fn in _graph_nodes(t, leaf):
        cls = getattr(fn, "_forward_cls", None)
        backward = getattr(cls, "backward", None)
        if cls is not None and getattr(backward, "__code__", None) is _ONCE_DIFFERENTIABLE_CODE:
            return cls.__name__
    return None


def hvp_mismatch(
    x: Tensor, gx: Tensor, grad_at: Callable[[Tensor], Optional[Tensor]], *, seed: int = 0,
    agree: float = 0.02,
) -> float:
    """How far autograd's Hessian-vector product is from finite differences of the gradient.

    Args:
        x: (N, p) leaf; gx: (N, p) the per-sample gradient at x, built with ``create_graph``.
        grad_at: z (N, p) leaf -> the per-sample gradient at z (no graph needed).
        agree: two finite differences count as converged when they differ by less than this
            (relative).

    Returns:
        the 90th percentile over samples of ``‖Hv_i − δg_i‖ / max(‖δg_i‖, ‖Hv_i‖)`` (so a term
        missing in a tenth of the samples shows, where the median would hide one missing in up to
        half of them), where δg_i is a
        *converged* central difference ``(g(x + hv) − g(x − hv)) / 2h`` of sample i: two
        consecutive step sizes h (of five) that agree to ``agree``, each moving the gradient by more
        than roundoff. v is a random direction
        scaled elementwise to x, so stiff losses are probed on their own scale. A sample whose
        differences never converge (stiffness, roundoff, a kink between the steps) gives no
        evidence and is left out; a missing second-order term that is a fraction p of C v_i
        leaves the differences converged and gives about p. NaN if no sample gave evidence.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    xd = x.detach()
    mag = xd.abs() + 0.01 * xd.pow(2).mean().sqrt() + torch.finfo(x.dtype).tiny
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype=x.dtype, device=x.device) * mag
    try:
        (hv,) = torch.autograd.grad(gx, x, v, retain_graph=True, allow_unused=True)
    except RuntimeError as exc:
        raise_double_backward(exc)
    hv = (torch.zeros_like(x) if hv is None else hv).detach().to(torch.float64)
    steps = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6) if x.dtype == torch.float64 else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
    floor = 1e-3 * float(gx.detach().norm(dim=-1).median()) + 1e-12
    best = torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)
    prev = None
    for h in steps:
        with torch.enable_grad():
            gp = grad_at((xd + h * v).requires_grad_(True))
            gm = grad_at((xd - h * v).requires_grad_(True))
        if gp is None or gm is None:
            return 0.0
        # A change of the gradient at roundoff level (a float32 loss flat at its resolution,
        # e.g. log(1 − P) with 1 − P rounded to 0) is no finite difference at all.
        eps = torch.finfo(gp.dtype).eps
        resolved = (gp - gm).norm(dim=-1) > 1e3 * eps * (gp.norm(dim=-1) + gm.norm(dim=-1))
        fd = ((gp - gm) / (2 * h)).to(torch.float64)
        fd[~resolved] = float("nan")
        if prev is not None:
            err, ok = _converged_error(hv, prev, fd, floor, agree)
            best = torch.where(ok & ~(best <= err), err, best)
        prev = fd
    decided = best[~torch.isnan(best)]
    return float(decided.quantile(MISMATCH_QUANTILE)) if decided.numel() else float("nan")


def _converged_error(hv: Tensor, fd1: Tensor, fd2: Tensor, floor: float, agree: float):
    """Per-sample (error of hv against the mean of fd1, fd2; whether fd1 and fd2 agree)."""
    def rel(a: Tensor, b: Tensor) -> Tensor:
        return (a - b).norm(dim=-1) / torch.maximum(a.norm(dim=-1), b.norm(dim=-1)).clamp_min(floor)

    finite = torch.isfinite(fd1).all(-1) & torch.isfinite(fd2).all(-1) & torch.isfinite(hv).all(-1)
    fd = 0.5 * (fd1 + fd2)
    ok = finite & (rel(fd1, fd2) < agree)
    return torch.where(ok, rel(hv, fd), torch.full_like(fd[:, 0], float("nan"))), ok
