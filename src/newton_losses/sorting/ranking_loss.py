"""Ground-truth permutation matrices and the ranking-supervision loss of the diffsort protocol.

Reference: F. Petersen et al., "Differentiable Sorting Networks for Scalable Sorting and Ranking
Supervision", ICML 2021 (binary cross-entropy between relaxed and true permutation matrices).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ._validation import _traced, all_finite, all_in_unit_interval, check_positive

DEFAULT_EPS = 1e-12
#: ε of :func:`ranking_bce_clamped`: P is clamped to [ε, 1 − ε] (1 − 1e-6 is representable in float32).
DEFAULT_CLAMP_EPS = 1e-6
RANKING_LOSSES = ("bce_exact", "bce", "bce_clamp", "ce")
"""The ranking losses :class:`RankingLoss` accepts as ``loss=``, by name; the first,
``"bce_exact"`` (the BCE with each complement 1 − P taken from its row's other entries, so that
float32 keeps its digits; :func:`ranking_bce_exact`), is its default."""


def permutation_matrix(values: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """True sorting permutation matrix of ``values`` (or of ranks, which sort the same way).

        P[i, k] = 1  if item k is at position i of the ascending order, else 0,

    so P @ values = values sorted ascending, the convention of every relaxation in this package.
    Ties are broken by item index (a stable sort): equal values keep their input order.

    Args:
        values: (..., n) real tensor (integer or floating), n >= 1; no NaN.
        dtype: floating dtype of the result; default: ``values.dtype`` if floating, else
            ``torch.get_default_dtype()``.

    Returns:
        P: (..., n, n) 0/1 matrix on the device of ``values``, without gradient.
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    if values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"values must be a real integer or floating tensor, got dtype {values.dtype}")
    if values.dim() == 0:
        raise ValueError("values must have shape (..., n), got a 0-d tensor")
    if values.is_floating_point() and not _traced(values) and bool(torch.isnan(values).any()):
        raise ValueError("values must not contain NaN (NaN has no position in a sort)")
    if dtype is None:
        dtype = values.dtype if values.is_floating_point() else torch.get_default_dtype()
    elif not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    n = values.shape[-1]
    order = torch.argsort(values.detach(), dim=-1, stable=True)
    # A comparison, not an in-place scatter: the same matrix, and it works under torch.func
    # transforms (vmap) and torch.compile.
    return (order.unsqueeze(-1) == torch.arange(n, device=values.device)).to(dtype)


def ranking_bce(P: torch.Tensor, P_true: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Per-sample binary cross-entropy between a relaxed and a true permutation matrix.

        ℓ(P, T) = −(1/n²) Σ_{i,k} [ T_ik log((P_ik + ε)/(1 + ε))
                                  + (1 − T_ik) log((1 − P_ik + ε)/(1 + ε)) ]

    The mean over a batch equals ``torch.nn.BCELoss()(P, T)`` of the diffsort protocol up to O(ε)
    wherever BCELoss is finite.

    Numerical safety: P is first clamped to [0, 1], which only removes rounding overshoot (the
    relaxations produce [0, 1] in exact arithmetic). The shift ε keeps every log finite, so there
    is no log(0), and keeps ℓ smooth and convex in P (a requirement of Gauss-Newton) with
    |∂ℓ/∂P| <= 1/(n² ε) and ∂²ℓ/∂P² <= 1/(n² ε²), and ℓ = 0 exactly at P = T for a 0/1 target.
    This differs from BCELoss, which clamps log at −100 (zero second derivative there, and a first
    derivative that is not the derivative of its value); with ε = 1e-12 both give the same weak
    gradient for entries predicted below about 1e-12, and agree elsewhere.

    Precision: float32 has nothing between 1 − 2⁻²⁴ and 1, and a relaxation's float32 arithmetic
    returns exactly 1 for entries a few 1e-8 from 1; where such an entry's target is 0 the
    complement term then weighs it by 1/ε instead of 1/(1 − P), and the gradient of that
    sample comes out orders of magnitude too large (torch's BCELoss does the same). Compute P and
    the loss in float64 when the scores are float32 (``RankingLoss(..., dtype=torch.float64)``;
    docs/SORTING.md, Precision).

    Args:
        P: (..., n, n) floating tensor, relaxed permutation matrices with entries in [0, 1].
        P_true: (..., n, n) real target of the same shape, finite entries in [0, 1] (cast to
            P's dtype); outside [0, 1] the loss is no cross-entropy (unbounded below, not convex).
        eps: ε > 0.

    Raises:
        TypeError, ValueError: wrong types or shapes, non-finite P, or P_true entries that are
            NaN or outside [0, 1]. Under ``torch.func.vmap`` (and so ``jacfwd``/``hessian``) the
            value checks cannot run and are skipped; the untransformed call checks them.

    Returns:
        (...,) per-sample losses (shape (N,) for a batch of N matrices).
    """
    eps = check_positive("eps", eps)
    _check_matrices(P, P_true, eps)
    return _ranking_bce(P, P_true.to(P.dtype), eps)


def _check_matrices(P: torch.Tensor, P_true: torch.Tensor, eps: float) -> None:
    for name, value in (("P", P), ("P_true", P_true)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not P.is_floating_point():
        raise TypeError(f"P must be a floating-point tensor, got dtype {P.dtype}")
    tiny = torch.finfo(P.dtype).tiny
    if eps < tiny:  # float16: ε = 1e-12 rounds to 0, and log(0) makes every loss NaN or infinite
        raise ValueError(
            f"eps={eps:g} is below the smallest normal {P.dtype} number ({tiny:.3g}), so the loss "
            "cannot be computed in this dtype; compute it in float32 or wider, e.g. "
            "RankingLoss(..., dtype=torch.float32)"
        )
    if P.dim() < 2 or P.shape[-1] != P.shape[-2]:
        raise ValueError(f"P must have shape (..., n, n), got {tuple(P.shape)}")
    if P_true.shape != P.shape:
        raise ValueError(
            f"P_true must have the shape of P {tuple(P.shape)}, got {tuple(P_true.shape)}"
        )
    if P_true.is_complex():
        raise TypeError(f"P_true must be a real tensor, got dtype {P_true.dtype}")
    if not all_finite(P):
        raise ValueError("P must be finite, got NaN or Inf entries")
    if not all_in_unit_interval(P_true):
        bad = P_true[~((P_true >= 0) & (P_true <= 1))]
        raise ValueError(
            f"P_true must have finite entries in [0, 1] (a permutation matrix or soft targets), "
            f"got {bad.numel()} entries outside, e.g. {bad.flatten()[0].item()}"
        )


def _ranking_bce(P: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    P = P.clamp(0.0, 1.0)
    # Dividing in P's dtype (rather than subtracting log1p(ε)) makes ℓ(T, T) exactly 0.
    log_p = torch.log((P + eps) / (1.0 + eps))
    log_q = torch.log(((1.0 - P) + eps) / (1.0 + eps))
    return -(target * log_p + (1.0 - target) * log_q).mean(dim=(-2, -1))


def ranking_bce_exact(P: torch.Tensor, P_true: torch.Tensor, eps: float = DEFAULT_EPS, *,
                      dim: int = -1) -> torch.Tensor:
    """:func:`ranking_bce` without its float32 failure: an entry's complement 1 − P_ik from the
    other entries of its row,

        ℓ(P, T) = −(1/n²) Σ_{i,k} [ T_ik log((P_ik + ε)/(1 + ε))
                                  + (1 − T_ik) log((c_ik + ε)/(1 + ε)) ],
        c_ik = Σ_{j≠k} P_ij  if P_ik > ½ is its row's largest entry,   else 1 − P_ik,

    equal to ranking_bce in exact arithmetic for row-stochastic P (Σ_j P_ij = 1: NeuralSort,
    SoftSort, sorting networks). In float32, 1 − P_ik rounds to 0 for an entry within about
    6·10⁻⁸ of 1, and ranking_bce then weighs it by 1/ε; the sum of the row's other entries keeps
    their digits (a sum of non-negative numbers), so value and gradient agree with the float64
    loss. Below ½, 1 − P_ik is exact to rounding, and at most one entry of a stochastic row
    exceeds ½. That needs P's small entries to carry their relative precision: every relaxation
    of this package computes them so (softmax rows; the sorting networks' soft swaps as sums of
    non-negative products, :func:`~newton_losses.sorting.sorting_networks.swap_probabilities`);
    a relaxation of your own that forms small entries as differences of large ones does not.
    Convex in P; ℓ(T, T) = 0; twice differentiable (the switch at ½ is between two
    expressions of the same function).

    Args:
        P, P_true, eps: as :func:`ranking_bce`.
        dim: the dimension along which P sums to one: -1 (rows, every relaxation here) or -2
            (column-stochastic P).

    Raises:
        ValueError: besides ranking_bce's checks, P does not sum to 1 along ``dim`` up to
            rounding (64 n ulps; not checked under torch.func transforms) — for such P use
            :func:`ranking_bce`.
    """
    eps = check_positive("eps", eps)
    _check_matrices(P, P_true, eps)
    if dim not in (-1, -2):
        raise ValueError(f"dim must be -1 (rows) or -2 (columns); got {dim!r}")
    _check_stochastic(P, dim)
    return _ranking_bce_exact(P, P_true.to(P.dtype), eps, dim)


def _sums_to_one(P: torch.Tensor, dim: int) -> torch.Tensor:
    """Per matrix (shape ``P.shape[:-2]``): whether it sums to 1 along ``dim`` up to rounding
    (64 n ulps of P's dtype: a relaxation that leaks even that much mass makes the complement
    from the others differ from 1 − P)."""
    tol = 64 * P.shape[dim] * torch.finfo(P.dtype).eps
    return ((P.detach().sum(dim) - 1.0).abs() <= tol).all(-1)


def _check_stochastic(P: torch.Tensor, dim: int) -> None:
    """Raise ``ValueError`` unless P sums to 1 along ``dim`` (skipped under torch.func)."""
    if _traced(P) or bool(_sums_to_one(P, dim).all()):
        return
    sums = P.detach().sum(dim)
    what = "rows" if dim == -1 else "columns"
    raise ValueError(
        f"ranking_bce_exact needs P whose {what} sum to 1 (dim={dim}); got sums in "
        f"[{float(sums.min()):.6g}, {float(sums.max()):.6g}]. Pass dim={-3 - dim} if the "
        f"other dimension does, or use ranking_bce (loss='bce') for a P that is not stochastic"
    )


def _complement(P: torch.Tensor, dim: int) -> torch.Tensor:
    """1 − P, with the largest entry above ½ along ``dim`` replaced by the sum of the others."""
    # The row's largest entry, if above ½: one entry per row (rounding can lift two tied entries
    # of ½ both just above it, so `P > ½` alone could pick two).
    top = P.detach().argmax(dim, keepdim=True)
    index = torch.arange(P.shape[dim], device=P.device)
    big = (index.view(-1, 1) if dim == -2 else index) == top
    big = big & (P > 0.5)
    others = P.masked_fill(big, 0.0).sum(dim, keepdim=True)
    return torch.where(big, others, 1.0 - P)


def _bce(P: torch.Tensor, complement: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    log_p = torch.log((P + eps) / (1.0 + eps))
    log_q = torch.log((complement + eps) / (1.0 + eps))
    # T log p + (1 − T) log q in one pass; exact at T = 0 and T = 1, so ℓ(T, T) stays exactly 0.
    return -torch.lerp(log_q, log_p, target).mean(dim=(-2, -1))


def _ranking_bce_exact(P: torch.Tensor, target: torch.Tensor, eps: float, dim: int) -> torch.Tensor:
    P = P.clamp(0.0, 1.0)
    return _bce(P, _complement(P, dim), target, eps)


def _ranking_bce_per_matrix(P: torch.Tensor, target: torch.Tensor, eps: float) -> tuple[torch.Tensor, bool]:
    """The exact BCE with each matrix's complement from its rows if they sum to one, else from
    its columns if they do, else 1 − P (the naive form); and whether some matrix was neither
    (not known, so False, under torch.func). Each sample's loss depends on its own P only."""
    P = P.clamp(0.0, 1.0)
    rows = _sums_to_one(P, -1)
    if not _traced(P) and bool(rows.all()):
        return _bce(P, _complement(P, -1), target, eps), False
    cols = _sums_to_one(P, -2)
    complement = torch.where(rows[..., None, None], _complement(P, -1),
                             torch.where(cols[..., None, None], _complement(P, -2), 1.0 - P))
    neither = False if _traced(P) else not bool((rows | cols).all())
    return _bce(P, complement, target, eps), neither


def ranking_bce_clamped(P: torch.Tensor, P_true: torch.Tensor, eps: float = DEFAULT_CLAMP_EPS) -> torch.Tensor:
    """Per-sample BCE with clamped probabilities, the form common in ranking-supervision code:

        ℓ(P, T) = −(1/n²) Σ_{i,k} [ T_ik log p_ik + (1 − T_ik) log(1 − p_ik) ],
        p = clamp(P, ε, 1 − ε).

    Where an entry is confidently wrong (P_ik < ε with T_ik = 1, or P_ik > 1 − ε with T_ik = 0)
    the clamp makes its gradient — and its curvature — exactly zero: such entries stop
    contributing to training. This is the key difference from :func:`ranking_bce`, whose shift
    keeps a (large) gradient there. Shapes and checks as :func:`ranking_bce`; ε in (0, 0.5).
    """
    eps = check_positive("eps", eps)
    if not eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5) so that [eps, 1 - eps] is an interval; got {eps!r}")
    _check_matrices(P, P_true, eps)
    p = P.clamp(eps, 1.0 - eps)
    target = P_true.to(P.dtype)
    return -(target * torch.log(p) + (1.0 - target) * torch.log1p(-p)).mean(dim=(-2, -1))


def ranking_ce(P: torch.Tensor, P_true: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Per-sample row-wise cross-entropy: each row of P (a sorted position) is a distribution over
    items, scored against the true item at that position,

        ℓ(P, T) = −(1/n) Σ_i Σ_k T_ik log((P_ik + ε)/(1 + ε)).

    Only the entries where T = 1 enter (n of the n² of :func:`ranking_bce`); convex in P, so
    Gauss-Newton applies. ℓ(T, T) = 0. Shapes and checks as :func:`ranking_bce`.
    """
    eps = check_positive("eps", eps)
    _check_matrices(P, P_true, eps)
    P = P.clamp(0.0, 1.0)
    target = P_true.to(P.dtype)
    n = P.shape[-1]
    return -(target * torch.log((P + eps) / (1.0 + eps))).sum(dim=(-2, -1)) / n


class RankingLoss(torch.nn.Module):
    """Ranking-supervision loss: ℓ_i = h(relaxation(scores_i), P_true_i), one per sample, with h
    :func:`ranking_bce_exact` (``loss="bce_exact"``, default), :func:`ranking_bce` (``"bce"``,
    the same loss computed naively: in float32 it fails on confidently wrong entries),
    :func:`ranking_bce_clamped` (``"bce_clamp"``) or :func:`ranking_ce` (``"ce"``).

    The exact form needs P's small entries to keep their relative precision, as every relaxation
    of this package computes them (see :func:`ranking_bce_exact`). It also needs to know which
    dimension of P sums to one (rows for every relaxation here; columns work too): the loss
    decides per matrix, so that each sample's loss depends on its own P only, and for a matrix
    that is neither it computes ``"bce"`` (warning once).

    Composite form for Gauss-Newton: ``inner`` = the relaxation, scores (N, n) -> P (N, n, n);
    ``outer`` = h, (P, P_true) -> (N,), convex in P: ``NewtonLoss(loss.composite(),
    curvature="gauss_newton")``.

    Targets: the true permutation matrices P_true (..., n, n) in this package's convention —
    ``P_true[i, k] = 1`` if item k is at position i of the ascending order, so that
    ``P_true @ values`` is sorted (:func:`permutation_matrix`) — or the true values or ranks
    themselves (..., n) — values, or ranks ``argsort(argsort(values))`` (item k's place in the
    ascending order; not the order ``argsort(values)`` itself, which is the inverse permutation
    and would be taken as ranks) — from which :func:`permutation_matrix` builds them. diffsort's and
    difftopk's training code builds the transpose (``one_hot(argsort(labels)).transpose(-2,
    -1)``); passed here it would train the network towards the inverse permutation, and no
    check can tell a transposed permutation matrix from a true one. Pass the values or ranks
    and the convention cannot go wrong.

    Args:
        relaxation: callable scores (..., n) -> P (..., n, n), e.g. :class:`NeuralSort`,
            :class:`SoftSort` or :class:`DiffSortNet`.
        eps: ε of the loss; default 1e-12 (``"bce_exact"``, ``"bce"``, ``"ce"``) or 1e-6
            (``"bce_clamp"``).
        loss: ``"bce_exact"`` (default), ``"bce"``, ``"bce_clamp"`` or ``"ce"`` (see above).
        dtype: compute the relaxation and the loss in this floating dtype (``inner`` casts the
            scores, ``outer`` the targets; the gradient reaches the scores in their own dtype), or
            ``None`` (default): in the scores' dtype. ``torch.float64`` with float32 scores is
            the other cure for ``"bce"``'s float32 failure (docs/SORTING.md, Precision); the
            per-sample losses are then returned in this dtype.

    Forward: scores (..., n), target (..., n, n) permutation matrices or (..., n) values or
    ranks -> (...,) per-sample losses.
    """

    def __init__(self, relaxation: Callable[[torch.Tensor], torch.Tensor], eps: float | None = None,
                 loss: str = "bce_exact", dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not callable(relaxation):
            raise TypeError(f"relaxation must be callable (scores -> P), got {type(relaxation).__name__}")
        if loss not in RANKING_LOSSES:
            raise ValueError(f"loss must be one of {RANKING_LOSSES}; got {loss!r}")
        if eps is None:
            eps = DEFAULT_CLAMP_EPS if loss == "bce_clamp" else DEFAULT_EPS
        self.relaxation = relaxation
        self.loss = loss
        self.eps = check_positive("eps", eps)
        if loss == "bce_clamp" and not self.eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5) for loss='bce_clamp'; got {eps!r}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype or None; got {dtype!r}")
        self.dtype = dtype
        self._outer = {"bce_exact": ranking_bce_exact, "bce": ranking_bce, "bce_clamp": ranking_bce_clamped,
                       "ce": ranking_ce}[loss]
        self._warned = False

    @property
    def inner(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The relaxation, scores (..., n) -> P (..., n, n); with a ``dtype``, one that casts the
        scores to it first."""
        return self.relaxation if self.dtype is None else self._cast_inner

    def _cast_inner(self, scores: torch.Tensor) -> torch.Tensor:
        return self.relaxation(scores.to(self.dtype) if isinstance(scores, torch.Tensor) else scores)

    def outer(self, P: torch.Tensor, P_true: torch.Tensor) -> torch.Tensor:
        """The loss of P against the targets: (..., n, n), (..., n, n) or values/ranks (..., n)
        -> (...,)."""
        if isinstance(P, torch.Tensor) and isinstance(P_true, torch.Tensor) and P.dim() >= 2 \
                and P_true.shape == P.shape[:-1]:  # values or ranks: the matrices in this package's convention
            P_true = permutation_matrix(P_true, dtype=P.dtype if P.is_floating_point() else None)
        if self.dtype is not None and isinstance(P_true, torch.Tensor):
            P_true = P_true.to(self.dtype)
        if self.loss != "bce_exact":
            return self._outer(P, P_true, eps=self.eps)
        _check_matrices(P, P_true, self.eps)
        out, neither = _ranking_bce_per_matrix(P, P_true.to(P.dtype), self.eps)
        if neither and not self._warned:
            self._warned = True
            warnings.warn(
                "RankingLoss(loss='bce_exact'): the relaxation's P sums to 1 along neither its rows "
                "nor its columns for some samples, so their complement cannot be taken from the "
                "other entries; computing loss='bce' for those samples (imprecise in float32 for "
                "entries near 1). Pass loss='bce' to choose it explicitly.", RuntimeWarning, stacklevel=2)
        return out

    @property
    def shift_invariant(self) -> bool:
        """Whether each sample's loss is unchanged by adding a constant to its scores (true for
        every relaxation of this package; a relaxation of your own says so with a
        ``shift_invariant = True`` attribute)."""
        return bool(getattr(self.relaxation, "shift_invariant", False))

    def composite(self):
        """This loss as ``CompositeLoss(inner, outer)``, for ``NewtonLoss(...,
        curvature="gauss_newton")``; called with (scores, target) like the loss itself."""
        from ..curvature import CompositeLoss

        composite = CompositeLoss(self.inner, self.outer)
        composite.shift_invariant = self.shift_invariant
        return composite

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(scores, torch.Tensor) and isinstance(target, torch.Tensor) and scores.dim():
            expected = (*scores.shape, scores.shape[-1])
            if target.shape not in (expected, scores.shape):
                raise ValueError(
                    f"the target must be the true permutation matrices, shape (*scores.shape, n) = "
                    f"{expected}, or the true values or ranks, shape {tuple(scores.shape)}, for scores "
                    f"of shape {tuple(scores.shape)}; got {tuple(target.shape)}"
                )
        return self.outer(self.inner(scores), target)

    def extra_repr(self) -> str:
        return f"loss={self.loss!r}, eps={self.eps}" + (f", dtype={self.dtype}" if self.dtype is not None else "")
