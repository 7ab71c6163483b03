"""Relaxed Bellman-Ford: a twice-differentiable shortest path on vertex-weighted grids.

The exact problem is the one of :mod:`.solver` (top-left s → bottom-right t, 8-neighbourhood,
vertex weights w ≥ 0, both ends counted). The relaxation (Petersen et al., "Learning with
Algorithmic Supervision via Continuous Relaxations", NeurIPS 2021; used with Newton losses in
Petersen et al., NeurIPS 2024) replaces every min of Bellman-Ford by a softmin with inverse
temperature β:

1. Distances (all cells and all grids at once; a Jacobi iteration vectorized over the 8 shifts):

       d(s) = w(s),     d(v) ← w(v) + softmin_β{ d(u) : u ∈ N₈(v) },
       softmin_β(x) = −(1/β) log Σ_k exp(−β x_k)     (log-sum-exp; concave, ≤ min x)

   started, like the exact algorithm, from d = +∞ except at s (a cell's neighbours count only
   once they have been reached, so no +∞ ever enters the arithmetic).
2. Predecessors: the softmin's own weights at the final distances,

       p(u → v) = exp(−β d(u)) / Σ_{u' ∈ N₈(v)} exp(−β d(u')),     p(· → s) = 0,

   a distribution over the 8 neighbours of every cell but the source.
3. Traceback: unit mass starts at t and flows backward along p until it is absorbed at s; the
   soft path is the total mass that visited each cell,

       path = Σ_{k ≥ 0} e_tᵀ Pᵏ      (expected visits of the backward random walk t → s).

   At a fixed point of step 1 this equals ∂d(t)/∂w (the implicit-function gradient of the
   relaxed distance), and as β → ∞ it tends to the 0/1 mask of the cheapest path when that path
   is unique.

Two loop forms, as in the paper:

- ``mode="for"``: ``n_iter`` distance iterations and ``n_iter`` traceback steps, a fixed
  computation graph. ``n_iter`` must be at least ``max(H, W) − 1`` (so that t is reached); the
  default ``H + W`` covers every cheapest path of the Warcraft-style terrain data (at most 22
  cells on 12×12 over 2,000 maps); the exact algorithm needs (cells on the path − 1) iterations.
- ``mode="while"``: distance iterations until no relaxed distance moves by more than
  ``tol · max(1, max_v |d(v)|)``, then traceback steps until the mass not yet absorbed at s is
  at most ``tol``; each grid stops on its own (converged grids are frozen, so a grid's result
  does not depend on the rest of the batch); both loops stop at ``max_iter`` (default ``H·W``,
  enough for the exact algorithm on any grid). ``converged`` reports which grids stopped
  before the cap. The loop counts are not differentiated (the graph is the unrolled iterations).

Convergence of the While loop: the iteration is monotone (distances only decrease from +∞), and
softmin ≥ min − log(8)/β, so the relaxed distances are bounded below by the exact distances for
weights ``w − log(8)/β``. If ``β · min_v w(v) > log 8`` they converge; for smaller weights the
soft mass can circulate on cheap cycles and the distances may decrease without bound until the
cap (then ``converged`` is False). The For loop is a fixed finite computation, but it is no
safer: with ``β · min w ≤ log 8`` its result is the distances after ``n_iter`` steps of that
divergent iteration (it depends on ``n_iter``), and even for large β a cheapest path with more
cells than ``n_iter`` + 1 (e.g. snake-shaped costs; default ``n_iter = H + W``) is not reached.
Its ``converged`` reports whether the last iteration still moved the distances, and
:func:`relaxed_shortest_path` warns (``RuntimeWarning``; :class:`RelaxedBellmanFord` once per
module) when a For result has ``converged`` False or ``β · min w ≤ log 8``. With softmin ≤ min, relaxed distances never exceed the exact ones, and at a fixed
point ``d_exact − d_β ≤ (cells on the path − 1) · log(8)/β``.

Everything is plain torch (``unfold``/``fold`` for the 8 shifts, ``logsumexp``, ``softmax``), so
the result is twice differentiable by autograd: ``NewtonLoss`` can use ``"hessian"``, ``"fisher"``
and ``"gauss_newton"`` on it.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ._validation import check_choice, check_costs, check_int, check_positive
from .path_loss import PATH_LOSSES, PathLoss

__all__ = ["RelaxedPathResult", "relaxed_shortest_path", "RelaxedBellmanFord", "RelaxedShortestPathLoss"]

MODES = ("for", "while")
_CENTRE = 4  # index of the centre of the 3×3 unfold window (not a neighbour)


class RelaxedPathResult(NamedTuple):
    """Output of :func:`relaxed_shortest_path`.

    Attributes:
        path: (B, H, W) soft path mask (expected visits; ≥ 0, ≈ 0/1 for large β).
        distances: (B, H, W) relaxed distances from the source, both ends' weights included.
        predecessors: (B, 8, H, W) relaxed predecessor distribution of every cell over its
            neighbours in :data:`~newton_losses.shortest_path.NEIGHBOUR_OFFSETS` order (zero
            outside the grid and at the source).
        n_iter: distance iterations run (the largest over the batch for ``"while"``).
        converged: (B,) bool; whether the last distance iteration moved no distance by more
            than ``tol · max(1, max|d|)`` and (``"while"``) the traceback absorbed all but
            ``tol`` of the mass.
    """

    path: torch.Tensor
    distances: torch.Tensor
    predecessors: torch.Tensor
    n_iter: int
    converged: torch.Tensor


_MASKS: dict = {}


def _masks(height: int, width: int, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Neighbour validity for each early iteration, and which cells are updated.

    Returns ``valid`` (list; ``valid[k]`` is (9, H·W) bool for distance iteration k + 1, the last
    entry serving all later iterations) and ``update`` ((len(valid), H·W) bool). In iteration k a
    cell at Chebyshev distance r = max(i, j) from the source is updated if 1 ≤ r ≤ k, from its
    in-grid neighbours with r ≤ k − 1 (those are exactly the cells with finite distance when
    starting from +∞).
    """
    key = (height, width, str(device))
    if key not in _MASKS:
        ii, jj = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        ring = torch.maximum(ii, jj).flatten()
        neighbours = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ok = (ii + dy >= 0) & (ii + dy < height) & (jj + dx >= 0) & (jj + dx < width)
                ok = ok & ~torch.tensor(dy == 0 and dx == 0)
                neighbours.append(ok.flatten())
        in_grid = torch.stack(neighbours)  # (9, HW)
        ring_pad = F.pad(ring.view(1, 1, height, width).double(), (1, 1, 1, 1), value=1e9)
        nb_ring = F.unfold(ring_pad, 3).view(9, height * width).long()  # ring of each neighbour
        last = max(height, width) - 1
        valid, update = [], []
        for k in range(1, last + 2):
            valid.append(in_grid & (nb_ring <= k - 1))
            update.append((ring >= 1) & (ring <= k))
        _MASKS[key] = ([v.to(device) for v in valid], torch.stack(update).to(device))
    return _MASKS[key]


def _neighbour_logits(d: torch.Tensor, valid: torch.Tensor, beta: float, shape: tuple) -> torch.Tensor:
    """−β d(u) for the 9 cells of each 3×3 window, (B, 9, H·W); invalid ones at a huge negative.

    A finite fill (not −∞) keeps every intermediate of first and second derivatives finite: its
    softmax weight underflows to exactly 0, and it receives no gradient through ``where``.
    """
    B = d.shape[0]
    height, width = shape
    nb = F.unfold(d.view(B, 1, height, width), 3, padding=1)
    fill = torch.finfo(d.dtype).min / 16
    return torch.where(valid, nb * (-beta), torch.tensor(fill, dtype=d.dtype, device=d.device))


def relaxed_shortest_path(
    costs: torch.Tensor,
    beta: float,
    *,
    mode: str = "for",
    n_iter: Optional[int] = None,
    max_iter: Optional[int] = None,
    tol: Optional[float] = None,
    warn: bool = True,
) -> RelaxedPathResult:
    """Relaxed Bellman-Ford distances, predecessors and soft path (see the module docstring).

    Args:
        costs: (B, H, W) floating, finite, non-negative vertex weights (any device).
        beta: inverse temperature β > 0 of the softmin; β → ∞ gives the exact algorithm.
        mode: ``"for"`` (fixed ``n_iter``) or ``"while"`` (until converged, at most ``max_iter``).
        n_iter: For-loop length, ≥ max(H, W) − 1; default H + W.
        max_iter: While-loop cap on distance iterations and on traceback steps; default H·W
            (≥ max(H, W) − 1).
        tol: While-loop tolerance (relative for distances, absolute for the mass); default
            max(1e-6, 100 · machine epsilon of the dtype).
        warn: For loop only: emit a ``RuntimeWarning`` when the result is not meaningful —
            some grid has ``converged`` False (increase ``n_iter`` or use ``mode="while"``) or
            ``β · min w ≤ log 8`` (the iteration diverges; use a larger β). Not checked under
            ``torch.func`` transforms.

    Returns:
        :class:`RelaxedPathResult` (path, distances, predecessors, n_iter, converged).

    Example:
        >>> w = torch.tensor([[[1., 9., 1.], [1., 9., 1.], [1., 1., 1.]]])
        >>> res = relaxed_shortest_path(w, beta=20.0)
        >>> res.path.round(decimals=2)[0]
        tensor([[1., 0., 0.],
                [1., 0., 0.],
                [0., 1., 1.]])
    """
    w = check_costs(costs)
    beta = check_positive("beta", beta)
    mode = check_choice("mode", mode, MODES)
    B, height, width = w.shape
    reach = max(height, width) - 1
    if mode == "for":
        if max_iter is not None:
            raise ValueError("max_iter is the While loop's cap; mode='for' takes n_iter")
        steps = height + width if n_iter is None else check_int("n_iter", n_iter, 1)
        if steps < reach:
            raise ValueError(
                f"n_iter must be >= max(H, W) - 1 = {reach} so that the target cell is reached, "
                f"got {steps}"
            )
    else:
        if n_iter is not None:
            raise ValueError("n_iter is the For loop's length; mode='while' takes max_iter (a cap)")
        steps = height * width if max_iter is None else check_int("max_iter", max_iter, 1)
        if steps < reach:
            raise ValueError(
                f"max_iter must be >= max(H, W) - 1 = {reach} so that the target cell can be "
                f"reached, got {steps}"
            )
    if tol is None:
        tol = max(1e-6, 100 * torch.finfo(w.dtype).eps)
    else:
        tol = check_positive("tol", tol)

    valid, update = _masks(height, width, w.device)
    m = height * width
    wf = w.reshape(B, m)
    shape = (height, width)
    is_while = mode == "while"
    # While torch.compile traces, the While loop runs its whole cap: finished rows are frozen by
    # the masks below, so the result is the same, and the early exits would need the host.
    early_exit = is_while and not torch.compiler.is_compiling()

    # 1. Distances.
    d = wf
    done = torch.zeros(B, dtype=torch.bool, device=w.device)
    it = 0
    for it in range(1, steps + 1):
        k = min(it, len(valid)) - 1
        x = _neighbour_logits(d, valid[k], beta, shape)
        soft = torch.logsumexp(x, dim=1) / (-beta)
        d_new = torch.where(update[k], wf + soft, d)
        if is_while or it == steps:  # the For loop only reports the last step's change
            with torch.no_grad():
                delta = (d_new - d).abs().amax(1)
                scale = d_new.abs().amax(1).clamp_min(1.0)
                now_done = (delta <= tol * scale) & (it > reach)
        if is_while:
            d_new = torch.where(done.unsqueeze(1), d, d_new)
            done = done | now_done
            d = d_new
            if early_exit and bool(done.all()):
                break
        else:
            d = d_new
            if it == steps:
                done = now_done
    n_run = it
    dist_converged = done

    # 2. Predecessors at the final distances (every cell reached: full neighbourhoods).
    x = _neighbour_logits(d, valid[-1], beta, shape)
    pred = torch.softmax(x, dim=1) * update[-1].to(w.dtype)  # (B, 9, HW), zero at the source

    # 3. Traceback from the target.
    mass = torch.zeros_like(wf)
    mass = mass.index_fill(1, torch.tensor([m - 1], device=w.device), 1.0)
    path = mass
    not_source = update[-1].to(w.dtype)
    traced = torch.zeros(B, dtype=torch.bool, device=w.device)
    for _ in range(steps):
        moved = F.fold((mass.unsqueeze(1) * pred), shape, 3, padding=1).view(B, m)
        if is_while:
            moved = torch.where(traced.unsqueeze(1), torch.zeros_like(moved), moved)
        path = path + moved
        mass = moved
        if is_while:
            with torch.no_grad():
                traced = traced | ((mass * not_source).sum(1) <= tol)
            if early_exit and bool(traced.all()):
                break
    converged = dist_converged & traced if is_while else dist_converged

    pred_out = torch.cat([pred[:, :_CENTRE], pred[:, _CENTRE + 1 :]], dim=1)
    result = RelaxedPathResult(
        path=path.view(B, height, width),
        distances=d.view(B, height, width),
        predecessors=pred_out.view(B, 8, height, width),
        n_iter=n_run,
        converged=converged,
    )
    if warn and not is_while:
        message = _for_loop_problem(w, beta, result)
        if message is not None:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
    return result


def _for_loop_problem(w: torch.Tensor, beta: float, result: RelaxedPathResult) -> Optional[str]:
    """Why a For-loop result is not meaningful (None if it is, or if it cannot be checked)."""
    if torch.compiler.is_compiling():
        return None
    try:
        with torch.no_grad():
            n_bad = int((~result.converged).sum())
            w_min = float(w.detach().min())
    except RuntimeError:  # inside torch.func transforms: data-dependent checks are unavailable
        return None
    problems = []
    if beta * w_min <= math.log(8):
        problems.append(
            f"beta · min(costs) = {beta:g} · {w_min:.4g} = {beta * w_min:.4g} ≤ log 8 ≈ 2.079, so the "
            "relaxed Bellman-Ford iteration need not converge (soft mass circulates on cheap "
            "cycles) and the result depends on n_iter; use a larger beta (> "
            f"{math.log(8) / w_min if w_min > 0 else float('inf'):.4g}) or larger costs"
        )
    if n_bad:
        problems.append(
            f"{n_bad} of {result.converged.numel()} grids did not converge in n_iter="
            f"{result.n_iter} distance iterations (the relaxed distances still moved in the last "
            "one, e.g. long snake-shaped cheapest paths; the default is n_iter = H + W), so their "
            "paths may not reach the source; increase n_iter or use mode='while'"
        )
    if not problems:
        return None
    return "relaxed_shortest_path(mode='for'): " + "; ".join(problems) + " (see result.converged)"


class RelaxedBellmanFord(torch.nn.Module):
    """Soft shortest-path mask of relaxed Bellman-Ford: costs (B, H, W) -> path (B, H, W).

    ``RelaxedBellmanFord(beta, mode="for", n_iter=None, max_iter=None, tol=None)`` wraps
    :func:`relaxed_shortest_path` (see there and the module docstring for the formulas) and
    returns its ``path``; ``last_result`` keeps the whole :class:`RelaxedPathResult` (detached) of the last
    call (distances, predecessors, iterations, convergence), and ``converged`` its (B,) bool
    ``converged``. A For loop whose result is not meaningful (``converged`` False somewhere, or
    ``β · min w ≤ log 8``) gives a ``RuntimeWarning`` once per module.
    """

    def __init__(
        self,
        beta: float,
        *,
        mode: str = "for",
        n_iter: Optional[int] = None,
        max_iter: Optional[int] = None,
        tol: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta)
        self.mode = check_choice("mode", mode, MODES)
        if mode == "for" and max_iter is not None:
            raise ValueError("max_iter is the While loop's cap; mode='for' takes n_iter")
        if mode == "while" and n_iter is not None:
            raise ValueError("n_iter is the For loop's length; mode='while' takes max_iter (a cap)")
        self.n_iter = None if n_iter is None else check_int("n_iter", n_iter, 1)
        self.max_iter = None if max_iter is None else check_int("max_iter", max_iter, 1)
        self.tol = None if tol is None else check_positive("tol", tol)
        self.last_result: Optional[RelaxedPathResult] = None
        self._warned = False

    @property
    def converged(self) -> Optional[torch.Tensor]:
        """(B,) bool ``converged`` of the last call (None before the first)."""
        return None if self.last_result is None else self.last_result.converged

    def forward(self, costs: torch.Tensor) -> torch.Tensor:
        res = relaxed_shortest_path(
            costs, self.beta, mode=self.mode, n_iter=self.n_iter, max_iter=self.max_iter, tol=self.tol,
            warn=False,
        )
        # Detached: diagnostics only; keeping the graph alive would hold its memory (and a
        # tensor with a graph stored on the module cannot leave a compiled region).
        self.last_result = RelaxedPathResult(
            res.path.detach(), res.distances.detach(), res.predecessors.detach(), res.n_iter, res.converged.detach()
        )
        if self.mode == "for" and not self._warned:
            message = _for_loop_problem(costs, self.beta, res)
            if message is not None:
                self._warned = True
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        return res.path

    def extra_repr(self) -> str:
        loop = f"n_iter={self.n_iter}" if self.mode == "for" else f"max_iter={self.max_iter}, tol={self.tol}"
        return f"beta={self.beta}, mode={self.mode!r}, {loop}"


class RelaxedShortestPathLoss(torch.nn.Module):
    """Loss of a relaxed Bellman-Ford path against the true path, one value per grid.

        ℓ_i = path_loss(RelaxedBellmanFord(β)(costs_i), target_i, kind)

    with ``kind`` ``"l1"``, ``"l2"`` (squared) or ``"smooth_l1"`` (see
    :mod:`~newton_losses.shortest_path.path_loss`). Twice differentiable: usable with
    ``NewtonLoss(loss, curvature="hessian" | "hessian_batch" | "fisher")``, and through
    ``CompositeLoss(loss.inner, loss.outer)`` (or :meth:`composite`) with ``"gauss_newton"``,
    whose matrix ``Jᵀ ∇²ℓ J`` is PSD (the path losses are convex) — but identically zero for L1,
    so :meth:`composite` refuses ``"l1"`` (use ``"smooth_l1"`` or ``"l2"``).

    Args:
        beta, mode, n_iter, max_iter, tol: as in :func:`relaxed_shortest_path`.
        loss: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        delta: δ of ``"smooth_l1"``.

    Forward: costs (B, H, W), target (B, H, W) 0/1 -> (B,). ``last_result`` / ``converged``: those
    of ``inner`` (:class:`RelaxedBellmanFord`) for the last forward pass, including its
    once-per-module ``RuntimeWarning`` for a For loop whose result is not meaningful.
    """

    def __init__(
        self,
        beta: float,
        loss: str = "l2",
        *,
        mode: str = "for",
        n_iter: Optional[int] = None,
        max_iter: Optional[int] = None,
        tol: Optional[float] = None,
        delta: float = 0.1,
    ) -> None:
        super().__init__()
        check_choice("loss", loss, PATH_LOSSES)
        self.inner = RelaxedBellmanFord(beta, mode=mode, n_iter=n_iter, max_iter=max_iter, tol=tol)
        self.outer = PathLoss(loss, delta=delta)

    @property
    def last_result(self) -> Optional[RelaxedPathResult]:
        """The :class:`RelaxedPathResult` of the last forward pass (None before the first)."""
        return self.inner.last_result

    @property
    def converged(self) -> Optional[torch.Tensor]:
        """(B,) bool: which grids' relaxation converged in the last forward pass."""
        return self.inner.converged

    def forward(self, costs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_costs(costs)
        if isinstance(target, torch.Tensor) and target.shape != costs.shape:
            raise ValueError(
                f"target must have the shape of the costs {tuple(costs.shape)}, got {tuple(target.shape)}"
            )
        return self.outer(self.inner(costs), target)

    def composite(self):
        """``CompositeLoss(inner, outer)`` for ``NewtonLoss(..., curvature="gauss_newton")``."""
        if self.outer.kind == "l1":
            raise ValueError(
                "loss='l1' has zero second derivative, so its Gauss-Newton matrix Jᵀ∇²ℓJ is "
                "identically zero; use loss='smooth_l1' or 'l2' for Gauss-Newton, or "
                "curvature='hessian'/'fisher' with L1"
            )
        from ..curvature import CompositeLoss

        return CompositeLoss(self.inner, self.outer)

    def extra_repr(self) -> str:
        return f"loss={self.outer!r}"
