"""Differentiable sorting networks: every comparator of a sorting network becomes a soft swap.

References:
- F. Petersen, C. Borgelt, H. Kuehne, O. Deussen, "Differentiable Sorting Networks for Scalable
  Sorting and Ranking Supervision", ICML 2021 (logistic swaps, odd-even and bitonic networks).
- F. Petersen, C. Borgelt, H. Kuehne, O. Deussen, "Monotonic Differentiable Sorting Networks",
  ICLR 2022 (the activation replacement trick, ART, and the Cauchy swap).
"""

from __future__ import annotations

import math

import torch

from ._validation import _traced, check_in_unit_interval, check_positive, check_scores, check_size
from .network_layouts import NETWORKS, Layout, network_layout

SIGMOIDS = ("logistic", "logistic_phi", "cauchy")

# The fused layers (custom autograd functions below) make Hessians by batched backward passes 2-3x
# faster from about n = 12 on, but cost Python overhead per call: plain autograd is faster for a
# first-order backward at every n, for Hessians at small n, and under torch.func transforms, whose
# generated vmap rules for custom functions are slow (measured in benchmarks/bench_sorting.py).
_FUSED_FROM_N = 12


# Keeps ART finite at d = 0; the value of diffsort, so the relaxations agree to the last digit.
_ART_EPS = 1e-10


def swap_probabilities(d: torch.Tensor, steepness: float, sigmoid: str, art_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(α, 1 − α): the probability α = f(d) that a comparator leaves its inputs in place, given
    d = b − a, and its complement, each to full relative precision.

    a is the value on the min side and b the one on the max side, so α → 1 for d ≫ 0, α → 0
    for d ≪ 0 and α = ½ at d = 0:

    - "logistic":      f(d) = σ(β d)
    - "logistic_phi":  f(d) = σ(β d / (|d| + 1e-10)^λ)    (ART, the λ-scaled logistic)
    - "cauchy":        f(d) = arctan(β d) / π + ½          (monotonic, heavy-tailed)

    ``1 − α`` is computed as f(−d) (f(d) + f(−d) = 1 for every swap relaxation), never as a
    difference, so a probability within 10⁻⁸ of 0 keeps its digits in float32 where 1 − α would
    round to 0. For the Cauchy swap, arctan(x)/π + ½ itself cancels for x = βd ≪ 0; it is
    computed as α = atan2(1, −x)/π and 1 − α = atan2(1, x)/π (the same values: atan2(1, −x) =
    π/2 + arctan(x) for every real x), whose small ends atan2 returns to full relative precision.
    """
    if sigmoid != "cauchy":
        x = steepness * d if sigmoid == "logistic" else steepness * d / (d.abs() + _ART_EPS).pow(art_lambda)
        return torch.sigmoid(x), torch.sigmoid(-x)
    x = steepness * d
    one = torch.ones_like(x)
    return torch.atan2(one, -x) / math.pi, torch.atan2(one, x) / math.pi


class _PermuteRows(torch.autograd.Function):
    """T.index_select(dim, index) whose backward is the same gather with the inverse permutation.

    Autograd would scatter-add (index_add) instead, which vmap over the batched backward passes of
    a Hessian runs sample by sample; a gather keeps every derivative order a single kernel.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(T: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor, dim: int) -> torch.Tensor:
        return T.index_select(dim, index)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, ctx.index, ctx.inverse, ctx.dim = inputs

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _PermuteRows.apply(grad, ctx.inverse, ctx.index, ctx.dim), None, None, None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, *_):
        return _PermuteRows.apply(tangent, ctx.index, ctx.inverse, ctx.dim)


def _swap_rows(T: torch.Tensor, partner: torch.Tensor, dim: int) -> torch.Tensor:
    """Rows of T exchanged with their partners; the partner map is an involution (its own inverse)."""
    return _PermuteRows.apply(T, partner, partner, dim)


class _MixRows(torch.autograd.Function):
    """One layer of soft swaps on the rows of P: out[w] = α_w P[w] + β_w P[partner(w)], where
    β = 1 − α is passed separately, with its own precision (:func:`swap_probabilities`).

    The layer matrix M (out = M P) is symmetric because both slots of a comparator get the same
    α and β (α_lo = f(β(x_hi − x_lo)) = α_hi, and idle slots are their own partner), so the
    backward Mᵀ g = M g is this same operation: every derivative order is a gather and a
    weighted sum of non-negative terms.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(P: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
        return alpha.unsqueeze(-1) * P + beta.unsqueeze(-1) * P.index_select(-2, partner)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        P, alpha, beta, partner = inputs
        ctx.save_for_backward(P, alpha, beta)
        ctx.save_for_forward(P, alpha, beta)
        ctx.partner = partner

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        P, alpha, beta = ctx.saved_tensors
        grad_P = _MixRows.apply(grad, alpha, beta, ctx.partner) if ctx.needs_input_grad[0] else None
        grad_alpha = (grad * P).sum(-1) if ctx.needs_input_grad[1] else None
        grad_beta = (grad * _swap_rows(P, ctx.partner, -2)).sum(-1) if ctx.needs_input_grad[2] else None
        return grad_P, grad_alpha, grad_beta, None

    @staticmethod
    def jvp(ctx, tangent_P, tangent_alpha, tangent_beta, _):
        P, alpha, beta = ctx.saved_tensors
        out = None
        if tangent_P is not None:
            out = _MixRows.apply(tangent_P, alpha, beta, ctx.partner)
        if tangent_alpha is not None:
            term = tangent_alpha.unsqueeze(-1) * P
            out = term if out is None else out + term
        if tangent_beta is not None:
            term = tangent_beta.unsqueeze(-1) * _swap_rows(P, ctx.partner, -2)
            out = term if out is None else out + term
        return out


class _LerpRows(torch.autograd.Function):
    """The layer of :class:`_MixRows` as a lerp, out[w] = P[p(w)] + α_w (P[w] − P[p(w)]): the
    arithmetic of ``DiffSortNet(precise=False)``, which loses entries near 0 in float32.

    The layer matrix M (out = M P) is symmetric because both slots of a comparator get the same α
    (α_lo = f(β(x_hi − x_lo)) = α_hi, and idle slots are their own partner), so the backward
    Mᵀ g = M g is this same operation: every derivative order is a gather and a lerp.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(P: torch.Tensor, alpha: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
        return torch.lerp(P.index_select(-2, partner), P, alpha.unsqueeze(-1))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        P, alpha, partner = inputs
        ctx.save_for_backward(P, alpha)
        ctx.save_for_forward(P, alpha)
        ctx.partner = partner

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        P, alpha = ctx.saved_tensors
        grad_P = _LerpRows.apply(grad, alpha, ctx.partner) if ctx.needs_input_grad[0] else None
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            grad_alpha = (grad * (P - _swap_rows(P, ctx.partner, -2))).sum(-1)
        return grad_P, grad_alpha, None

    @staticmethod
    def jvp(ctx, tangent_P, tangent_alpha, _):
        P, alpha = ctx.saved_tensors
        out = None
        if tangent_P is not None:
            out = _LerpRows.apply(tangent_P, alpha, ctx.partner)
        if tangent_alpha is not None:
            term = tangent_alpha.unsqueeze(-1) * (P - _swap_rows(P, ctx.partner, -2))
            out = term if out is None else out + term
        return out


class DiffSortNet(torch.nn.Module):
    """Differentiable sorting network (Petersen et al., ICML 2021 / ICLR 2022).

    A comparator on values (a, b) (a on the min side) outputs

        min ≈ α a + (1 − α) b,   max ≈ (1 − α) a + α b,   α = f(b − a)

    with f one of the swap relaxations of :func:`swap_probabilities` and steepness β. Composing the
    soft swaps of all layers gives a doubly stochastic matrix P (..., n, n) with P @ scores ≈
    the ascending sort of scores; β → ∞ gives the exact permutation matrix.

    Implementation: each layer is vectorized over its comparators. Every row of P (a slot) is
    replaced by P_w ← α_w P_w + (1 − α_w) P_p(w), with α and 1 − α each computed to full relative
    precision (:func:`swap_probabilities`), so every entry of P is a sum of non-negative products
    and keeps its digits even within 10⁻⁸ of 0 in float32 — what the exact ranking BCE needs to
    take an entry's complement 1 − P_ik from the rest of its row (a lerp P_p + α (P_w − P_p)
    would take 1 − α as a rounded difference). O(n) per slot and layer instead of dense n × n
    products. From n = 12 on, the layer is a custom autograd function whose derivatives of every
    order are again gathers and weighted sums (the layer matrix is symmetric), which makes
    Hessians by batched backward passes faster.

    Args:
        network: "odd_even" (odd-even transposition, any n) or "bitonic" (any n: padded with
            −∞ to the next power of two, exact in the hard limit; see ``network_layouts``).
        n: number of items, >= 2; forward takes scores (..., n).
        steepness: β > 0.
        sigmoid: "logistic", "logistic_phi" (ART) or "cauchy".
        art_lambda: λ ∈ [0, 1] of ART, used only by "logistic_phi" (diffsort's default 0.25).
        precise: the soft swaps as sums of non-negative products, every entry of P to full
            relative precision (default). ``False``: as lerps P_p + α (P_w − P_p), the arithmetic
            of diffsort and of this package before version 0.1's exact BCE — the same P up to
            rounding, but entries near 0 lose their digits in float32 (and with them the exact
            BCE's precision); kept to reproduce runs made with it.

    >>> import torch
    >>> P = DiffSortNet("bitonic", 3, steepness=100.0)(torch.tensor([3.0, 1.0, 2.0]))
    >>> (P @ torch.tensor([3.0, 1.0, 2.0])).round()
    tensor([1., 2., 3.])
    """

    #: P depends on score differences only: adding a constant to a sample's scores changes
    #: nothing (NewtonLoss warns about lam=0 for losses built on such relaxations).
    shift_invariant = True

    # Non-persistent buffers registered in __init__ (declared for type checkers).
    _partners: torch.Tensor
    _sides: torch.Tensor
    _output: torch.Tensor
    _output_inverse: torch.Tensor

    def __init__(
        self,
        network: str,
        n: int,
        steepness: float = 10.0,
        sigmoid: str = "logistic",
        art_lambda: float = 0.25,
        precise: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(precise, bool):
            raise TypeError(f"precise must be True or False; got {precise!r}")
        self.precise = precise
        if network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {network!r}")
        if sigmoid not in SIGMOIDS:
            raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {sigmoid!r}")
        self.network = network
        self.n = check_size("n", n)
        self.steepness = check_positive("steepness", steepness)
        self.sigmoid = sigmoid
        self.art_lambda = check_in_unit_interval("art_lambda", art_lambda)
        self.layout: Layout = network_layout(network, self.n)
        # Index tensors are built once here, outside any torch.func transform (a tensor created
        # inside one and cached would escape it). Non-persistent buffers follow module.to(device);
        # forward moves them to the scores' device otherwise.
        partners, sides = [], []
        for comparators in self.layout.layers:
            partner, side = list(range(self.n)), [0] * self.n  # side +1: gets the min, −1: the max
            for lo, hi in comparators:
                partner[lo], partner[hi] = hi, lo
                side[lo], side[hi] = 1, -1
            partners.append(partner)
            sides.append(side)
        self.register_buffer("_partners", torch.tensor(partners, dtype=torch.long), persistent=False)
        self.register_buffer("_sides", torch.tensor(sides, dtype=torch.int8), persistent=False)
        self._permute_output = self.layout.output != list(range(self.n))
        inverse = sorted(range(self.n), key=self.layout.output.__getitem__)
        self.register_buffer("_output", torch.tensor(self.layout.output, dtype=torch.long), persistent=False)
        self.register_buffer("_output_inverse", torch.tensor(inverse, dtype=torch.long), persistent=False)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """scores: (..., n) -> P: (..., n, n), P @ scores ≈ ascending sort of scores."""
        check_scores(scores, n=self.n)
        device = scores.device
        partners, sides = self._partners.to(device), self._sides.to(device)
        eye = torch.eye(self.n, dtype=scores.dtype, device=device)
        x, perm = scores, eye
        fused = self.n >= _FUSED_FROM_N and not _traced(scores)
        last = len(partners) - 1
        for index in range(len(partners)):
            partner = partners[index]
            x_partner = _swap_rows(x, partner, -1) if fused else x.index_select(-1, partner)
            d = sides[index] * (x_partner - x)
            alpha, beta = swap_probabilities(d, self.steepness, self.sigmoid, self.art_lambda)
            if not self.precise and self.sigmoid == "cauchy":  # the lerp form's own arithmetic
                alpha = torch.atan(self.steepness * d) / math.pi + 0.5
            perm = self._layer(perm, alpha, beta, partner, fused and index > 0)  # index 0: P = I
            if index < last:
                x = torch.lerp(x_partner, x, alpha)
        if self._permute_output:
            output = self._output.to(device)
            if fused:
                perm = _PermuteRows.apply(perm, output, self._output_inverse.to(device), -2)
            else:
                perm = perm.index_select(-2, output)
        return perm

    def _layer(self, perm: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, partner: torch.Tensor,
               fused: bool) -> torch.Tensor:
        """One layer of soft swaps on the rows of P (see the class docstring)."""
        if not self.precise:
            if fused:
                return _LerpRows.apply(perm, alpha, partner)
            return torch.lerp(perm.index_select(-2, partner), perm, alpha.unsqueeze(-1))
        if fused:
            return _MixRows.apply(perm, alpha, beta, partner)
        return alpha.unsqueeze(-1) * perm + beta.unsqueeze(-1) * perm.index_select(-2, partner)

    def extra_repr(self) -> str:
        art = f", art_lambda={self.art_lambda}" if self.sigmoid == "logistic_phi" else ""
        lerp = "" if self.precise else ", precise=False"
        return f"network={self.network!r}, n={self.n}, steepness={self.steepness}, sigmoid={self.sigmoid!r}{art}{lerp}"
