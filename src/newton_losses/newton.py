"""NewtonLoss: train through a hard loss with a regularized Newton step on the loss only.

For a batch of N independent samples with network outputs y_i ∈ R^m and a loss
``ℓ(y) = (1/N) Σ_i ℓ_i(y_i)``, Petersen et al. (NeurIPS 2024) replace ℓ for one step by

    z*_i = y_i − (C + λI)^{-1} ∇ℓ_i(y_i)        ℓ*(y) = (1/N) Σ_i ½ ‖z*_i − y_i‖²   (z* fixed)

so that ``∂ℓ*/∂y_i = (1/N) (C + λI)^{-1} ∇ℓ_i(y_i)``. :class:`NewtonLoss` implements the
equivalent *injection* form: its value is ℓ(y) (logs stay meaningful) and the gradient it sends
back to y is the preconditioned one. The network is never differentiated twice; only the loss
is, and only with respect to its m inputs per sample.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from . import curvature as _curv
from .curvature._reduce import REDUCTIONS, reduce_loss, require_grad
from .curvature.composite import CompositeGradient, CompositeLoss, composite_gradient
from .curvature.estimate import CurvatureEstimate
from .curvature.provider import CurvatureContext, CurvatureProvider, UserCurvature
from .curvature.registry import BUILTIN_CURVATURES, get_curvature
from .curvature.second_order import (
    NotTwiceDifferentiableError,
    find_once_differentiable,
    has_custom_function,
    hvp_mismatch,
)
from .linalg import DAMPINGS, PROJECTIONS, SolveInfo, conjugate_gradient, damped_solve, low_rank_damped_solve
from ._checks import user_stacklevel as _user_stacklevel
from ._pytree import flatten_outputs, subset_loss
from .precision import PrecisionReport, check_precision, to_float64

__all__ = ["NewtonLoss", "NewtonDiagnostics", "NewtonTotals", "NonFiniteLossError", "CURVATURES", "choose_solver",
           "newton_direction"]

CURVATURES = BUILTIN_CURVATURES
HESSIAN_METHODS = ("auto", "rows", "vmap", "cg")
SOLVERS = ("auto", "dense", "cg")
CHECK_HESSIAN = ("auto", "first", "always", "never")

# Above this output size the automatic choice switches from dense blocks (m batched backward
# passes + eigendecomposition) to conjugate gradients on Hessian-vector products; chosen from
# the benchmarks in docs/PERFORMANCE.md.
AUTO_DENSE_MAX_M = 64
# The finite-difference check fails above this relative mismatch (see hvp_mismatch): a missing
# second-order term of 10% of C v gives about 0.1; kinks, stiffness and float32 roundoff on the
# package's own losses stay below it (calibration in docs/PERFORMANCE.md, "Second-order check").
HVP_MISMATCH_TOL = 0.05


class NonFiniteLossError(FloatingPointError):
    """The loss, its gradient or the Newton direction contained NaN or Inf."""


@dataclass
class NewtonDiagnostics:
    """What one call of :class:`NewtonLoss` computed (``newton.last_diagnostics``).

    Attributes:
        curvature: the curvature used (its registered name, or "custom" for a callable).
        method: how it was obtained ("rows", "vmap", "cg", "fisher", "woodbury", "custom").
        n_samples, m: batch size and per-sample output size.
        lam, lam_effective: requested λ and the λ actually added (relative damping).
        min_eig, max_eig: extreme eigenvalues of C before projection (dense solves only).
        n_matrices: distinct matrices solved with (N, or 1 if shared).
        n_indefinite: matrices with a negative eigenvalue (CG: negative curvature met).
        n_fallback: matrices not solved in the requested form (Tikhonov fallback, CG truncation).
        n_singular: matrices with directions left out of the solve (pseudo-inverse) because their
            damped eigenvalue was numerically zero: with ``lam=0`` and a singular curvature.
        n_unscaled: matrices damped with the absolute λ because their relative/batch damping
            scale was zero (an all-zero curvature, e.g. of an L1 or hinge loss: λ × 0 leaves
            nothing to solve with); their step is g/λ. NewtonLoss warns the first time.
        cg_iterations, cg_max_residual: conjugate-gradient effort and accuracy.
        min_descent_cosine: smallest cos∠(d_i, g_i) over samples with g_i ≠ 0; positive means
            every per-sample step is a descent direction for that sample's loss.
        skipped: the update was skipped because of NaN/Inf (``on_nonfinite="skip"``).
        time_gradient_s: wall time of the loss's forward pass and per-sample gradient (the
            part a plain backward pass also pays; for ``gauss_newton`` it includes the
            Jacobian of the inner part).
        time_curvature_s, time_solve_s: wall time of building C (after the gradient) and of
            the solve. Their sum is the Newton step's own cost.
        precision: the :class:`~newton_losses.precision.PrecisionReport` of this call's batch
            when ``precision_every`` asked for one, else None.
    """

    curvature: str
    method: str
    n_samples: int
    m: int
    lam: float
    lam_effective: float = float("nan")
    min_eig: Optional[float] = None
    max_eig: Optional[float] = None
    n_matrices: int = 0
    n_indefinite: int = 0
    n_fallback: int = 0
    n_singular: int = 0
    n_unscaled: int = 0
    cg_iterations: int = 0
    cg_max_residual: Optional[float] = None
    min_descent_cosine: Optional[float] = None
    skipped: bool = False
    time_gradient_s: float = 0.0
    time_curvature_s: float = 0.0
    time_solve_s: float = 0.0
    precision: Optional[PrecisionReport] = None

    def as_dict(self) -> dict:
        d = asdict(self)
        p = self.precision
        d["precision"] = None if p is None else {"worst": p.worst, "sick": int(p.sick.numel())}
        return d


@dataclass
class NewtonTotals:
    """Running counts of a :class:`NewtonLoss` since it was made (``newton.totals``).

    Attributes:
        calls: calls with gradients (Newton steps taken or skipped).
        skipped: of those, batches skipped because of NaN/Inf (``on_nonfinite="skip"``).
        precision_checks: batches checked against float64 (``precision_every``).
        precision_sick: samples those checks flagged, summed over the checks.
        indefinite_matrices: curvature matrices with a negative eigenvalue (or negative curvature
            met by conjugate gradients).
        fallback_matrices: matrices not solved in the requested form (Tikhonov fallback, CG
            truncation).
        matrices: distinct matrices solved with, summed over the calls.
    """

    calls: int = 0
    skipped: int = 0
    precision_checks: int = 0
    precision_sick: int = 0
    indefinite_matrices: int = 0
    fallback_matrices: int = 0
    matrices: int = 0


class _Inject(torch.autograd.Function):
    """Forward: the loss value. Backward: a fixed direction for y (the Newton gradient)."""

    @staticmethod
    def forward(ctx, y: Tensor, value: Tensor, direction: Tensor) -> Tensor:  # noqa: D401
        ctx.save_for_backward(direction)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (direction,) = ctx.saved_tensors
        return grad_out * direction, None, None


def choose_solver(provider: CurvatureProvider, solver: str, hessian_method: str, damping: str, m: int) -> str:
    """The form to ask the provider for, ``"dense"`` or ``"cg"`` — the one place it is decided.

    ``hessian_method="cg"`` means CG; ``"auto"`` means dense when the damping needs eigenvalues,
    when dense blocks were asked for (``hessian_method`` ``"rows"``/``"vmap"``) or when
    m ≤ ``AUTO_DENSE_MAX_M``, else CG. A form the provider does not support becomes its first
    (preferred) one: the Fisher and the batch Hessian are one shared matrix, for which m dense
    passes are cheaper than N products per CG iteration.
    """
    if hessian_method == "cg":
        want = "cg"
    elif solver != "auto":
        want = solver
    elif damping != "absolute" or hessian_method in ("rows", "vmap") or m <= AUTO_DENSE_MAX_M:
        want = "dense"
    else:
        want = "cg"
    return want if want in provider.solvers else provider.solvers[0]


class NewtonLoss(nn.Module):
    """Wrap a loss so that the network is trained with the regularized Newton step of the loss.

    ``loss = NewtonLoss(loss_fn, curvature="fisher", lam=0.1)(y, *args)`` returns the value of
    ``loss_fn`` (the mean over the batch) and, on ``backward()``, sends to each y_i the gradient

        (1/N) (C + λI)^{-1} ∇ℓ_i(y_i)

    instead of ``(1/N) ∇ℓ_i(y_i)``. ``newton.target(y, *args)`` returns the Newton target
    ``z* = y − (C + λI)^{-1} ∇ℓ(y)`` for the explicit two-step form ``½‖z* − y‖²``.

    One call: evaluate the loss and its per-sample gradient g (with a graph if the curvature
    provider needs second derivatives), check those are complete, ask the provider for a
    :class:`~newton_losses.CurvatureEstimate`, and solve with what the estimate holds: a
    low-rank factor by Woodbury, a matrix by a projected dense solve, a matvec by conjugate
    gradients (:mod:`newton_losses.linalg`).

    Args:
        loss_fn: ``loss_fn(y, *args, **kwargs)`` with y: (N, *shape) returns the N per-sample
            losses ℓ_i (shape (N,)) or their mean (a scalar). Sample i's loss must depend on
            y_i only. For ``"gauss_newton"`` it must be a :class:`CompositeLoss`.
        curvature: a registered name (:func:`~newton_losses.available_curvatures`; add your
            own with :func:`~newton_losses.register_curvature`). Built in:

            - ``"hessian"``: per-sample blocks ``C_i = ∇²ℓ_i(y_i)``.
            - ``"hessian_batch"``: ``C = (1/N) Σ_j ∇²ℓ_j(y_j)``, one matrix for the batch
              (the paper's Definition 1); all-reduced like the Fisher.
            - ``"fisher"``: empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` (Definition 2); needs
              first derivatives only; under torch.distributed summed over the global batch.
            - ``"gauss_newton"``: ``C_i = J_iᵀ ∇²h_i J_i`` for ``ℓ = h ∘ a`` given as
              ``CompositeLoss(inner=a, outer=h)``; PSD when h is convex.

            Or a callable ``curvature(y, g, *args, **kwargs)`` with y, g: (N, m) (detached
            outputs and per-sample gradients) returning a (N, m, m) or (m, m) tensor or a
            :class:`CurvatureEstimate` — for stochastic losses that bring their own estimator.
        lam: Tikhonov regularizer λ ≥ 0. λ → ∞ recovers gradient descent scaled by 1/λ.
        projection: how indefinite curvature is made safe (see :mod:`newton_losses.linalg`):
            ``"abs"`` (default; |eigenvalues|, saddle-free Newton), ``"clamp"`` (negative
            eigenvalues set to 0) or ``"tikhonov"`` (the paper's plain ``C + λI``, with
            ``fallback`` wherever ``C + λI`` has a negative eigenvalue). Irrelevant for the
            Fisher and Gauss-Newton, which are PSD. Dense solves only: conjugate gradients
            (``solver="cg"``, and ``"auto"`` for per-sample Hessians when m > 64) solve
            ``C + λI`` as is, truncated at negative curvature — pass ``solver="dense"`` for the
            projection there.
        fallback: ``"abs"`` or ``"clamp"``, used by ``"tikhonov"`` for non-PD matrices.
        damping: how λ is added. ``"absolute"``: add λ. ``"batch"``: add ``λ · s`` with s the
            mean |eigenvalue| over all the batch's curvature matrices — λ becomes unit-free
            (independent of the loss's reduction and scale) while samples keep their relative
            weighting (with per-sample curvatures under torch.distributed, s is each process's
            local batch mean). ``"relative"``: add ``λ · mean|eigenvalue|`` of each matrix
            separately — also unit-free, but every sample's step becomes scale-free, so a
            nearly solved sample (tiny gradient, tiny curvature) takes as large a step as an
            unsolved one (docs/PERFORMANCE.md, "Notes moved from docstrings"). Non-absolute
            damping needs eigenvalues: dense solves only (a low-rank Fisher uses its trace).
        solver: ``"auto"``, ``"dense"`` or ``"cg"`` (matrix-free conjugate gradients on
            Hessian- or Gauss-Newton-vector products; negative curvature truncates). See
            :func:`choose_solver`: ``"auto"`` uses dense for m ≤ 64 and CG above, and always
            dense with a non-absolute damping; curvatures that are one shared matrix are dense.
        hessian_method: how dense Hessian blocks are built: ``"auto"``/``"rows"`` (m batched
            backward passes over the summed loss) or ``"vmap"`` (``torch.func.vmap(hessian)``;
            tensor arguments with first dimension N are sliced per sample). ``"cg"`` is the
            same as ``solver="cg"``.
        chunk_size: how many backward passes to batch at once (vmap) when building dense
            blocks; 1 is a plain loop. Default: on the first call for each output size, all at
            once (up to 64) if the m passes are predicted to take under 50 ms, else chosen by
            timing the candidates 1, 4, 16, 64 (:func:`~newton_losses.curvature.pick_chunk_size`);
            the choice changes speed, not results.
        cg_max_iter, cg_rtol: conjugate-gradient limits (defaults: m iterations; 1e-10 for
            float64 and 1e-5 for float32 relative residual).
        solve_dtype: dtype of the solves (float64 by default).
        distributed: all-reduce the Fisher / batch Hessian over torch.distributed processes
            (default: whenever torch.distributed is initialized).
        on_nonfinite: ``"raise"`` (default) raises :class:`NonFiniteLossError` when the outputs
            y (checked before the loss is called), the loss, its gradient or the Newton
            direction has NaN/Inf; ``"skip"`` returns the loss (NaN for non-finite outputs) with
            a zero gradient and records ``diagnostics.skipped``.
        check_hessian: guards second-order curvatures against a silently incomplete Hessian
            (:mod:`newton_losses.curvature.second_order`). A custom ``autograd.Function`` with
            a ``@once_differentiable`` backward in the loss's graph raises
            :class:`NotTwiceDifferentiableError`; one whose backward is computed outside
            autograd is caught by comparing one Hessian-vector product with finite differences
            of the gradient. ``"auto"`` (default) runs both on the first call, the
            finite-difference check only if the graph contains a custom autograd.Function;
            ``"first"`` / ``"always"`` run both unconditionally on the first / every call;
            ``"never"`` skips both. (Finite differences cannot be trusted on very stiff
            losses — e.g. log of probabilities near 1e-20 — hence not by default.)
        reduction: how a scalar returned by ``loss_fn`` is read: ``"mean"`` or ``"sum"`` of the
            per-sample losses (the value NewtonLoss returns is the mean either way). ``"auto"``
            (default) reads it as the mean and checks that on the first call, at the cost of one
            more evaluation of the loss on two of the samples: a loss that returns the batch sum
            raises ``ValueError`` (pass ``reduction="sum"``), one that is neither — samples
            coupled, e.g. by batch statistics — gives a ``RuntimeWarning``. Per-sample outputs
            (N,) are not probed unless ``check_samples=True``. ``"mean"`` / ``"sum"`` skip it.
        check_samples: also probe per-sample losses (N,) on the first call: two samples
            evaluated alone must keep the losses and gradients they had in the batch, else a
            ``RuntimeWarning`` (the loss couples samples: a softmax or normalization over the
            batch). Off by default because the probe calls the loss on those two samples, and a
            loss that records its last batch (``RelaxedShortestPathLoss.last_result``, a
            BatchNorm in training mode) would then hold the probe's.
        precision_every: every k-th call (the first included) also evaluates the batch's
            per-sample gradients in float64 (:func:`~newton_losses.check_precision`: two more
            passes of the loss) and records the report in ``last_diagnostics.precision`` and
            ``totals``; the first sick batch gives a ``RuntimeWarning`` with advice. 0 (default):
            never.

    Attributes:
        last_diagnostics: :class:`NewtonDiagnostics` of the last call with gradients.
        totals: :class:`NewtonTotals`, running counts (calls, skipped, precision checks,
            indefinite and fallback matrices).

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> quad = lambda y: 2.0 * ((y - a) ** 2).sum(-1)        # Hessian 4·I per sample
        >>> newton = NewtonLoss(quad, curvature="hessian", lam=0.0)
        >>> newton.target(torch.zeros(2, 2))                      # one Newton step: the minimum
        tensor([[1., 2.],
                [3., 4.]])
    """

    def __init__(
        self,
        loss_fn: Callable[..., Tensor],
        curvature: Union[str, Callable[..., Any]] = "fisher",
        lam: float = 1.0,
        *,
        projection: str = "abs",
        fallback: str = "abs",
        damping: str = "absolute",
        solver: str = "auto",
        hessian_method: str = "auto",
        chunk_size: Optional[int] = None,
        cg_max_iter: Optional[int] = None,
        cg_rtol: Optional[float] = None,
        solve_dtype: torch.dtype = torch.float64,
        distributed: Optional[bool] = None,
        on_nonfinite: str = "raise",
        check_hessian: str = "auto",
        precision_every: int = 0,
        reduction: str = "auto",
        check_samples: bool = False,
    ) -> None:
        super().__init__()
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
        self.loss_fn = loss_fn
        self._warned_lam0 = False
        self._warned_singular = False
        self._warned_unscaled = False
        self._warned_target_grad = False
        self._warned_half = False
        trainable = [n for n, p in loss_fn.named_parameters() if p.requires_grad] if isinstance(loss_fn, nn.Module) else []
        if trainable:
            warnings.warn(
                f"NewtonLoss: loss_fn has trainable parameters ({', '.join(trainable[:4])}"
                f"{', ...' if len(trainable) > 4 else ''}), which get no gradient from a Newton loss: it "
                "differentiates with respect to the outputs y only. Freeze them (requires_grad_(False)) "
                "or train them with a separate term, e.g. loss_fn(y.detach(), ...).mean().",
                RuntimeWarning, stacklevel=_user_stacklevel(),
            )
        self.curvature = curvature  # resolved and checked by the property setter
        self.lam = lam  # validated by the property setter
        _check_options(projection=projection, fallback=fallback, damping=damping, solver=solver,
                       hessian_method=hessian_method, on_nonfinite=on_nonfinite,
                       check_hessian=check_hessian, chunk_size=chunk_size, cg_max_iter=cg_max_iter,
                       cg_rtol=cg_rtol, solve_dtype=solve_dtype)
        _check_solver_request(self._name, self._provider, solver, hessian_method, damping)
        self.projection = projection
        self.fallback = fallback
        self.damping = damping
        self.solver = solver
        self.hessian_method = hessian_method
        self.chunk_size = chunk_size
        self.cg_max_iter = cg_max_iter
        self.cg_rtol = cg_rtol
        self.solve_dtype = solve_dtype
        self.distributed = distributed
        self.on_nonfinite = on_nonfinite
        self.check_hessian = check_hessian
        if isinstance(precision_every, bool) or not isinstance(precision_every, int):
            raise TypeError(f"precision_every must be an int (0: never); got {precision_every!r}")
        if precision_every < 0:
            raise ValueError(f"precision_every must be >= 0 (0: never); got {precision_every!r}")
        if precision_every and getattr(loss_fn, "stochastic", False):
            raise ValueError(f"precision_every: {type(loss_fn).__name__} draws random samples, so its "
                             "float32 and float64 evaluations cannot be compared; use precision_every=0")
        self.precision_every = precision_every
        self._warned_precision = False
        _check_choice("reduction", reduction, REDUCTIONS)
        self.reduction = reduction
        if not isinstance(check_samples, bool):
            raise TypeError(f"check_samples must be True or False; got {check_samples!r}")
        self.check_samples = check_samples
        self._reduction_checked = reduction != "auto" and not check_samples
        self._scalar_output = False
        self._probe_values: Optional[Tensor] = None
        self._sample_values: Optional[Tensor] = None  # the last call's per-sample losses (messages)
        self._chunk_cache: dict = {}
        self._first_call_done = False
        self.last_diagnostics: Optional[NewtonDiagnostics] = None
        self.totals = NewtonTotals()

    @property
    def curvature(self) -> Union[str, Callable[..., Any]]:
        """The curvature: a registered name or a callable. Assigning one takes effect on the next
        call (it is looked up and checked against ``loss_fn`` then and there)."""
        return self._curvature

    @curvature.setter
    def curvature(self, value: Union[str, Callable[..., Any]]) -> None:
        self._name, self._provider = _resolve_curvature(value, self.loss_fn)
        self._curvature = value
        self._checked = False  # a new curvature is checked again on its first call

    # λ is validated on every assignment, so schedules cannot set a bad value silently.
    @property
    def lam(self) -> float:
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"lam must be a real number; got {type(value).__name__}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"lam must be finite and >= 0; got {value!r}")
        if value == 0 and _shift_invariant(self.loss_fn) and not self._warned_lam0:
            self._warned_lam0 = True
            warnings.warn(
                f"NewtonLoss: lam=0 with {type(self.loss_fn).__name__}, whose per-sample loss does not "
                "change when a constant is added to all of a sample's outputs: every curvature is "
                "singular along that all-ones direction, so with no damping the step there is "
                "undetermined (huge or arbitrary). Use lam > 0, e.g. lam=0.1 with damping='batch'.",
                RuntimeWarning, stacklevel=_user_stacklevel(),
            )
        self._lam = float(value)

    def extra_repr(self) -> str:
        return f"curvature={self._name!r}, lam={self.lam}, projection={self.projection!r}, solver={self.solver!r}"

    # ------------------------------------------------------------------------------------------
    def forward(self, y: Any, *args: Any, **kwargs: Any) -> Tensor:
        """Loss value (mean over the batch) with the Newton gradient for y.

        y: (N, *shape), or a tuple/list/dict (nested too) of such tensors with one N, one dtype
        and one device — several heads, whose outputs the curvature couples per sample: they are
        viewed as one (N, Σ m_j) matrix and ``loss_fn`` receives the same structure. If some
        leaves require grad, the others are held fixed (constants of the loss, not variables of
        the Newton step).

        Only y is differentiated: parameters of ``loss_fn`` and targets get no gradient from a
        Newton loss (a warning says so when they require grad).
        """
        y, fn, layout = self._outputs(y)
        if not (torch.is_grad_enabled() and y.requires_grad):
            return reduce_loss(fn(y, *args, **kwargs), y.shape[0], self.reduction)[0]
        if not self._warned_target_grad and not torch.compiler.is_compiling():
            self._warn_target_grad(args, kwargs)
        value, direction = self._newton(y, args, kwargs, fn)
        return _Inject.apply(y, value, direction.reshape(y.shape) / y.shape[0])

    def _warn_half(self, dtype: torch.dtype) -> None:
        """Once: a loss computed in half precision gives its curvature in half precision."""
        self._warned_half = True
        bits = 8 if dtype == torch.bfloat16 else 11
        warnings.warn(
            f"NewtonLoss: loss_fn computed the loss in {dtype} ({bits} significant bits), so its gradient "
            "and curvature are that coarse too (only the solve runs in solve_dtype): a saturated "
            "sample's Hessian can round to 0 and the Newton step be off by tens of percent. Compute "
            "the loss in float32 — newton(y.float(), ...), outside the autocast region; the gradient "
            "reaches the half-precision outputs through the cast (docs/INTEGRATION.md).",
            RuntimeWarning, stacklevel=_user_stacklevel(),
        )

    def _warn_target_grad(self, args: tuple, kwargs: dict) -> None:
        """Once: tensor arguments that require grad get none through a Newton loss."""
        self._warned_target_grad = True
        grads = [i for i, a in enumerate(list(args) + list(kwargs.values()))
                 if isinstance(a, Tensor) and a.requires_grad]
        if grads:
            warnings.warn(
                "NewtonLoss: a tensor argument of the loss requires grad, but a Newton loss sends a "
                "gradient to the outputs y only; the targets (and anything they were computed from) "
                "get none. Detach them, or train what produced them with a separate term.",
                RuntimeWarning, stacklevel=_user_stacklevel(),
            )

    def direction(self, y: Any, *args: Any, **kwargs: Any) -> Any:
        """The detached Newton direction ``d_i = (C + λI)^{-1} ∇ℓ_i(y_i)``, shape (and structure)
        of y — what ``forward`` sends back to y_i, times N. For training loops of your own:
        ``y.backward(newton.direction(y, t) / len(y))`` gives the network the gradient that
        ``newton(y, t).backward()`` gives it; for a tuple or dict y, with N the batch size,
        ``torch.autograd.backward(leaves(y), [d_j / N for d_j in leaves(d)])`` with
        ``leaves = torch.utils._pytree.tree_leaves``. Leaves of y that do not require grad (when
        some do) are held fixed: their direction is zero.
        """
        y, fn, layout = self._outputs(y)
        with torch.enable_grad():
            _, d = self._newton(y, args, kwargs, fn)
        d = d.reshape(y.shape).detach()
        return d if layout is None else layout.unflatten(d, fill="zeros")

    def target(self, y: Any, *args: Any, **kwargs: Any) -> Any:
        """The detached Newton target ``z* = y − (C + λI)^{-1} ∇ℓ(y)``, shape (and structure) of y.

        Training with ``0.5 * ((z - y) ** 2).sum() / N`` gives the same gradient as
        ``forward``.
        """
        d = self.direction(y, *args, **kwargs)
        return pytree.tree_map(lambda yi, di: yi.detach() - di, y, d)

    def _outputs(self, y: Any):
        """(y as one tensor, the loss as a function of it, the pytree layout or None)."""
        if isinstance(y, Tensor):
            _check_y(y)
            return y, self.loss_fn, None
        if not isinstance(y, (tuple, list, dict)):
            raise TypeError(f"y must be a torch.Tensor or a tuple/list/dict of tensors; got {type(y).__name__}")
        layout = flatten_outputs(y)
        return layout.flat, layout.wrap(self.loss_fn), layout

    # ------------------------------------------------------------------------------------------
    def _newton(self, y: Tensor, args: tuple, kwargs: dict, fn: Callable[..., Tensor]) -> tuple[Tensor, Tensor]:
        """(loss value, Newton direction (N, m)) — or a zero direction for a skipped batch.
        ``fn`` is the loss as a function of y (``loss_fn``, or its pytree wrapper)."""
        if torch.compiler.is_compiling():
            return self._newton_traced(y, args, kwargs, fn)
        if torch.is_inference_mode_enabled() or y.is_inference():
            raise RuntimeError(
                "NewtonLoss needs autograd (the loss's gradient, and its curvature, with respect to y), "
                "which torch.inference_mode() switches off for good"
                + (": y is an inference tensor (made under inference_mode); pass y.clone() made "
                   "outside it" if not torch.is_inference_mode_enabled() else
                   ": call it outside inference_mode") +
                " (torch.no_grad() around it is fine: NewtonLoss enables gradients for its own part)"
            )
        N, m = y.shape[0], y[0].numel()
        diag = NewtonDiagnostics(curvature=self._name, method="", n_samples=N, m=m, lam=self.lam)
        t0 = time.perf_counter()
        flat = y.detach().reshape(N, m).requires_grad_(True)
        solver = choose_solver(self._provider, self.solver, self.hessian_method, self.damping, m)
        needs_graph = self._provider.needs_graph(solver, self.hessian_method)
        if bool(torch.isnan(flat).any()):
            # before the loss: a loss that validates its inputs would raise its own ValueError,
            # and on_nonfinite="skip" is there for exactly this (a network emitting NaN). ±Inf
            # is left to the loss: masked logits (-inf) give finite losses and gradients.
            if self.on_nonfinite == "raise":
                raise NonFiniteLossError(_nonfinite_outputs_message(flat, y.dtype))
            return self._skip(torch.tensor(float("nan"), dtype=y.dtype, device=y.device), flat, diag)
        value, total, g, composite = self._first_order(fn, flat, y.shape, args, kwargs, needs_graph)
        t_grad = time.perf_counter()
        diag.time_gradient_s = t_grad - t0
        finite = self._finite(value, g, "gradient", y.dtype)
        self._sample_values = None  # only the message above reads them
        if not finite:
            return self._skip(value, flat, diag)
        if self.precision_every and self.totals.calls % self.precision_every == 0:
            diag.precision = self._check_precision(fn, y, args, kwargs)
        if needs_graph:
            self._check_second_order(fn, total, flat, composite, y.shape, args, kwargs)
        ctx = CurvatureContext(
            y=flat, g=g, loss_fn=fn, shape=y.shape, args=args, kwargs=kwargs,
            solver=solver, lam=self.lam, chunk_size=self._chunk_spec(*flat.shape),
            hessian_method=self.hessian_method, distributed=self._use_distributed(),
            solve_dtype=self.solve_dtype, composite=composite,
        )
        est = self._provider.estimate(ctx)
        diag.method = est.method or "custom"
        if est.matrix is not None and not self._finite(value, est.matrix, "curvature matrix", y.dtype):
            return self._skip(value, flat, diag)
        t1 = time.perf_counter()
        direction, info = self._solve(est, g.detach())
        t2 = time.perf_counter()
        if not self._finite(value, direction, "Newton direction", y.dtype):
            return self._skip(value, flat, diag)
        self._record(diag, info, g.detach(), direction, t1 - t_grad, t2 - t1)
        if not self._reduction_checked:  # after the step: the loss's caches are used
            self._check_reduction(fn, flat, g, y.shape, args, kwargs)
            self._probe_values = None
        self._first_call_done = True
        return value, direction

    def _newton_traced(self, y: Tensor, args: tuple, kwargs: dict, fn: Callable[..., Tensor]):
        """The step as ``torch.compile`` traces it: the same maths, nothing that needs the host.

        The first call runs the whole eager step once outside the graph (:func:`_first_call`),
        so the first-call checks (second-order check, reduction probe, chunk-size choice) and
        the first diagnostics happen as in eager mode; after it no timer, ``.item()`` or
        NaN/Inf test is traced, and ``last_diagnostics``, ``totals`` and ``precision_every``
        are not updated (docs/INTEGRATION.md).
        """
        if self._provider.needs_composite:
            # Gauss-Newton's Jacobian-vector products differentiate the inner map twice, which
            # AOTAutograd cannot do through compiled code: the step runs eagerly (docs/INTEGRATION.md).
            return _eager(_eager_newton)(self, y, args, kwargs, fn)
        if (not self._first_call_done and self._first_call_needed()) or not self._reduction_checked:
            # the reduction probe also waits (eagerly) for a batch it can read: N ≥ 2, g ≠ 0
            _eager(_eager_step)(self, y, args, kwargs, fn)
        N, m = y.shape[0], y[0].numel()
        # Differentiate with respect to y itself (autograd.grad stops there, the network is not
        # touched): a detached copy made a leaf by requires_grad_() cannot leave a compiled region.
        flat = y.reshape(N, m) if y.requires_grad else y.detach().reshape(N, m).requires_grad_(True)
        solver = choose_solver(self._provider, self.solver, self.hessian_method, self.damping, m)
        needs_graph = self._provider.needs_graph(solver, self.hessian_method)
        value, _, g, composite = self._first_order(fn, flat, y.shape, args, kwargs, needs_graph)
        # One backward pass per row unless asked otherwise: batched passes (vmap over autograd)
        # do not trace for every loss, and the compiler fuses the unrolled passes anyway.
        chunk = 1 if self.chunk_size is None else self.chunk_size
        ctx = CurvatureContext(
            y=flat, g=g, loss_fn=fn, shape=y.shape, args=args, kwargs=kwargs, solver=solver,
            lam=self.lam, chunk_size=chunk, hessian_method=self.hessian_method,
            distributed=self._use_distributed(), solve_dtype=self.solve_dtype, composite=composite,
        )
        direction, _ = self._solve(self._provider.estimate(ctx), g.detach())
        return value, direction

    def _first_call_needed(self) -> bool:
        """Whether the first call has checks to run (they need the host, so run eagerly)."""
        return (self._provider.second_order and self.check_hessian != "never") or not self._reduction_checked

    def _first_order(self, fn, flat: Tensor, shape: torch.Size, args: tuple, kwargs: dict, needs_graph: bool):
        """(mean loss (detached), summed loss, g (N, m), CompositeGradient or None)."""
        self._sample_values = None
        if self._provider.needs_composite:
            value, total, g, composite = composite_gradient(fn, flat, shape, args, kwargs, self.reduction)
            self._scalar_output = composite.scalar
            return value.detach(), total, g, composite
        out = fn(flat.reshape(shape), *args, **kwargs)
        if not self._warned_half and isinstance(out, Tensor) and out.dtype in (torch.float16, torch.bfloat16):
            self._warn_half(out.dtype)
        self._scalar_output = isinstance(out, Tensor) and out.ndim == 0
        # per-sample values, kept only for the error message of a non-finite loss (which samples)
        self._sample_values = out.detach() if isinstance(out, Tensor) and out.ndim == 1 else None
        if self.check_samples and not self._reduction_checked and isinstance(out, Tensor) and out.ndim == 1:
            self._probe_values = out.detach()  # for the first call's sample-independence probe
        value, total = reduce_loss(out, flat.shape[0], self.reduction)
        require_grad(total)
        (g,) = torch.autograd.grad(total, flat, create_graph=needs_graph, allow_unused=True)
        return value.detach(), total, (torch.zeros_like(flat) if g is None else g), None

    def _chunk_spec(self, N: int, m: int):
        """The user's chunk size, or a picker that decides once per (curvature, N, m) — the best
        chunk depends on the batch too — and remembers."""
        if self.chunk_size is not None:
            return self.chunk_size
        key = (self._name, N, m)

        def pick(output: Tensor, inputs: Tensor, grad_outputs: Tensor) -> int:
            if key not in self._chunk_cache:
                # The tuner is looked up on the package at call time, so that a replacement
                # installed there (a profiling script timing it) is the one used.
                self._chunk_cache[key] = _curv.pick_chunk_size(
                    output, inputs, grad_outputs, tune=_curv.choose_chunk_size
                )
            return self._chunk_cache[key]

        return pick

    def _solve(self, est: CurvatureEstimate, g: Tensor) -> tuple[Tensor, SolveInfo]:
        """The solve follows from what the estimate holds: factor, matrix or matvec."""
        if est.low_rank is not None:
            n_total = est.n_total or est.low_rank.shape[0]
            lam = self.lam
            if self.damping != "absolute":
                # One PSD matrix F = GᵀG/n: mean |eigenvalue| = trace(F)/m = ‖G‖²_F/(n·m).
                scale = float(est.low_rank.double().pow(2).sum()) / (n_total * est.low_rank.shape[1])
                lam = self.lam * scale if scale > 0 else self.lam
            return low_rank_damped_solve(est.low_rank, n_total, g, lam, dtype=self.solve_dtype)
        if est.matrix is not None:
            # Under torch.distributed, "batch" damping uses each process's own batch scale: an
            # all-reduce here could pair with another collective when a rank skips a non-finite
            # batch. Shared matrices (Fisher, batch Hessian) are global anyway.
            return damped_solve(
                est.matrix, g, self.lam, projection=self.projection, fallback=self.fallback,
                damping=self.damping, dtype=self.solve_dtype,
            )
        if est.matvec is None:  # not reached: CurvatureEstimate checks that it holds one of the three
            raise ValueError("CurvatureEstimate holds neither matrix=, low_rank= nor matvec=")
        if self.damping != "absolute":
            raise ValueError(
                f"damping={self.damping!r} scales lam by the curvature matrix, but curvature "
                f"{self._name!r} returned a matrix-free estimate (a matvec, solved by conjugate "
                "gradients): use damping='absolute', or an estimator that returns a matrix (the "
                "Stein and Gauss-Newton estimators: projection='dense')"
            )
        return conjugate_gradient(
            est.matvec, g, self.lam, max_iter=self.cg_max_iter, rtol=self.cg_rtol,
            dtype=self.solve_dtype,
        )

    def _use_distributed(self) -> bool:
        import torch.distributed as dist

        active = dist.is_available() and dist.is_initialized()
        return active if self.distributed is None else (bool(self.distributed) and active)

    # ------------------------------------------------------------------------------------------
    def _finite(self, value: Tensor, t: Tensor, what: str, dtype: torch.dtype) -> bool:
        if bool(torch.isfinite(value).all()) and bool(torch.isfinite(t).all()):
            return True
        if self.on_nonfinite == "raise":
            raise NonFiniteLossError(_nonfinite_message(value, t, what, dtype, self._sample_values))
        return False

    def _skip(self, value: Tensor, flat: Tensor, diag: NewtonDiagnostics):
        diag.skipped = True
        self.last_diagnostics = diag
        self.totals.calls += 1
        self.totals.skipped += 1
        return value, torch.zeros_like(flat.detach())

    def _record(self, diag, info: SolveInfo, g: Tensor, d: Tensor, t_curv: float, t_solve: float) -> None:
        diag.lam_effective = info.lam_effective
        diag.min_eig, diag.max_eig = info.min_eig, info.max_eig
        diag.n_matrices = info.n_matrices
        diag.n_indefinite = info.n_indefinite
        diag.n_fallback = info.n_fallback
        diag.n_singular = info.n_singular
        diag.n_unscaled = info.n_unscaled
        if info.n_unscaled and not self._warned_unscaled:
            self._warned_unscaled = True
            warnings.warn(
                f"NewtonLoss: damping={self.damping!r} scales lam by the curvature's mean |eigenvalue|, "
                f"and the curvature of {info.n_unscaled} of {info.n_matrices} matrices is zero (a loss "
                "linear in the outputs where it was evaluated, e.g. L1 or a hinge, has no second "
                "derivative): those were damped with the absolute lam, a step of gradient / lam. "
                "For such a loss use curvature='fisher' (first derivatives only), or "
                "damping='absolute'.",
                RuntimeWarning, stacklevel=_user_stacklevel(),
            )
        unsolved = info.iterations > 0 and (info.max_residual or 0.0) > 1e-2
        if self.lam == 0 and (info.n_singular or unsolved) and not self._warned_singular:
            self._warned_singular = True
            what = (f"the curvature of {info.n_singular} of {info.n_matrices} matrices is singular"
                    if info.n_singular else
                    f"conjugate gradients did not solve the system (relative residual {info.max_residual:.2g})")
            warnings.warn(
                f"NewtonLoss: lam=0 and {what} (e.g. a sampled estimate of rank below the output "
                "size, a Fisher of rank <= batch size, or a loss flat in some direction): with no "
                "damping the step along those directions is undetermined — a dense solve leaves "
                "them out (pseudo-inverse), conjugate gradients stop where the curvature vanishes, "
                "and the step can be far larger than the gradient. Use lam > 0, e.g. lam=0.1 with "
                "damping='batch'.",
                RuntimeWarning, stacklevel=_user_stacklevel(),
            )
        diag.cg_iterations = info.iterations
        diag.cg_max_residual = info.max_residual
        gd = g.to(torch.float64)
        dd = d.to(torch.float64)
        gn, dn = gd.norm(dim=-1), dd.norm(dim=-1)
        ok = (gn > 0) & (dn > 0)
        if bool(ok.any()):
            cos = (gd * dd).sum(-1)[ok] / (gn[ok] * dn[ok])
            diag.min_descent_cosine = float(cos.min())
        diag.time_curvature_s = t_curv
        diag.time_solve_s = t_solve
        self.last_diagnostics = diag
        self.totals.calls += 1
        self.totals.indefinite_matrices += info.n_indefinite
        self.totals.fallback_matrices += info.n_fallback
        self.totals.matrices += info.n_matrices

    def _check_reduction(self, fn, flat: Tensor, g: Tensor, shape: torch.Size, args: tuple, kwargs: dict) -> None:
        """Is a scalar loss the mean of the per-sample losses, as ``reduction="auto"`` reads it?
        Are per-sample losses independent of the other samples?

        Read as a mean, sample i's gradient is the same in the batch and in any subset of k
        samples holding it (``k ∂ℓ_subset/∂y_i``); a sum gives N/k times it in the batch, and a
        loss coupling samples anything else. Per-sample losses must keep their values and
        gradients (:meth:`_check_per_sample`). Runs once — on the first batch with N ≥ 2 and a
        nonzero gradient —, on the sample with the largest gradient and (for N ≥ 3) one other: the loss is called once more on
        them, with its tensor arguments of first dimension N sliced to them (arguments nested
        in tuples or dicts are passed whole).
        """
        self._reduction_checked = True
        if getattr(fn, "stochastic", False):  # evaluating it would draw samples
            return
        if self._scalar_output and self.reduction != "auto":
            return  # the reduction was given; check_samples asked about per-sample losses only
        if not self._scalar_output and self._probe_values is None:
            return  # per-sample losses without check_samples (or a composite's): not probed
        N = flat.shape[0]
        norms = g.detach().norm(dim=1)
        order = torch.argsort(norms, descending=True)
        if N < 2 or not float(norms[order[0]]) > 0:
            self._reduction_checked = False  # nothing to compare in this batch: ask the next one
            return
        index = order[:2] if N >= 3 else order[:1]
        k = len(index)

        def sub(a: Any) -> Any:
            return a[index] if isinstance(a, Tensor) and a.ndim >= 1 and a.shape[0] == N else a

        ys = flat.detach()[index].clone().requires_grad_(True)
        call = subset_loss(fn, index)
        with torch.enable_grad(), _state_kept(self.loss_fn):
            try:
                out = call(ys.reshape((k,) + tuple(shape[1:])), *map(sub, args),
                           **{key: sub(v) for key, v in kwargs.items()})
            except Exception as exc:  # noqa: BLE001 — a loss made for one batch size: no evidence
                self._unchecked(N, k, f"{type(exc).__name__}: {exc}")
                return
            if not isinstance(out, Tensor) or not out.requires_grad or out.ndim not in (0, 1):
                self._unchecked(N, k, "it returned " + (f"shape {tuple(out.shape)}" if isinstance(out, Tensor)
                                                        else type(out).__name__))
                return
            (gs,) = torch.autograd.grad(out.sum(), ys, allow_unused=True)
        if out.ndim == 1:
            self._check_per_sample(out.detach(), gs, index, g, N)
            return
        if gs is None or not float(gs[0].norm()) > 0:
            return
        ratio = float(norms[order[0]] / (k * gs[0].norm()))
        i = int(order[0])
        if N > k and abs(ratio - N / k) <= 0.05 * N / k:
            raise ValueError(
                f"loss_fn returned a scalar that grows with the batch like the sum of per-sample losses "
                f"(sample {i}'s gradient is {ratio:.3g}× larger in the batch of N = {N} than among {k}), "
                "and NewtonLoss reads a scalar as their mean. If it is the sum, pass reduction='sum'; "
                "if it divides a sum by a fixed batch size, divide by the actual one (or use .mean()); "
                "or return the N per-sample losses"
            )
        if abs(ratio - 1.0) > 0.05:
            warnings.warn(
                f"NewtonLoss: loss_fn's scalar is neither the mean nor the sum of per-sample losses "
                f"(sample {i}'s gradient in the batch of N = {N} is {ratio:.3g}× its gradient among {k}): "
                "does the loss couple samples (batch statistics, a softmax over the batch)? The Newton "
                "step assumes independent samples.", RuntimeWarning, stacklevel=_user_stacklevel(),
            )

    def _unchecked(self, N: int, k: int, why: str) -> None:
        """The first-call probe could not run: say so, and how to state the convention instead."""
        if self._scalar_output:
            what, cure = ("that loss_fn's scalar is the mean of the per-sample losses (NewtonLoss reads a "
                          "scalar as their mean; a batch sum would make every step N times too large)",
                          "pass reduction='mean' (or 'sum' if it returns the batch sum) to state the "
                          "convention and skip the check")
        else:
            what, cure = ("that loss_fn's per-sample losses do not depend on the other samples "
                          "(check_samples=True)", "pass the per-sample targets as tensor arguments, or "
                          "check_samples=False")
        warnings.warn(
            f"NewtonLoss: could not check {what}: calling it on {k} of the N = {N} samples, with its tensor "
            f"arguments of first dimension N sliced to them, failed ({why}). A loss that closes over "
            f"per-sample targets or takes them nested in a tuple, dict or object cannot be sliced; {cure}.",
            RuntimeWarning, stacklevel=_user_stacklevel(),
        )

    def _check_per_sample(self, out: Tensor, gs: Optional[Tensor], index: Tensor, g: Tensor, N: int) -> None:
        """Per-sample losses: the k samples alone must give the values and gradients they had in
        the batch (up to rounding), else the loss couples samples."""
        full = self._probe_values
        if full is None or out.shape != index.shape:
            return
        ref_g = g.detach()[index]
        gs = torch.zeros_like(ref_g) if gs is None else gs
        tol = 1e-3 if out.dtype in (torch.float16, torch.bfloat16) else 1e-4
        v_err = float(((out - full[index]).abs() / full[index].abs().clamp_min(1e-12)).max())
        g_err = float((gs - ref_g).norm() / ref_g.norm().clamp_min(1e-30))
        if v_err > tol or g_err > tol:
            i = int(index[0])
            warnings.warn(
                f"NewtonLoss: loss_fn's per-sample losses depend on the other samples of the batch "
                f"(sample {i} evaluated alone with {len(index) - 1} other sample(s) changes its loss by "
                f"{v_err:.2g} and its gradient by {g_err:.2g}, relative, against the batch of N = {N}): "
                "does the loss couple samples (batch statistics, a softmax or normalization over the "
                "batch)? The Newton step assumes sample i's loss depends on y_i only.",
                RuntimeWarning, stacklevel=_user_stacklevel(),
            )

    def _check_precision(self, fn, y: Tensor, args: tuple, kwargs: dict) -> PrecisionReport:
        report = check_precision(fn, y.detach(), *args, **kwargs)
        self.totals.precision_checks += 1
        self.totals.precision_sick += int(report.sick.numel())
        if not report.ok and not self._warned_precision:
            self._warned_precision = True
            warnings.warn(f"NewtonLoss (precision check, call {self.totals.calls}): {report.advice()}",
                          RuntimeWarning, stacklevel=_user_stacklevel())
        return report

    # ------------------------------------------------------------------------------------------
    def _check_second_order(self, fn, total, flat, composite: Optional[CompositeGradient], shape, args, kwargs) -> None:
        """Raise :class:`NotTwiceDifferentiableError` if autograd's Hessian of the loss is incomplete."""
        mode = self.check_hessian
        if not (mode == "always" or (mode in ("first", "auto") and not self._checked)):
            return
        leaf = flat if composite is None else composite.a_leaf
        culprit = find_once_differentiable(total, leaf)
        if culprit is None and composite is not None:  # Gauss-Newton differentiates the inner map's JVPs
            culprit = find_once_differentiable(composite.a, flat)
        if culprit is not None:
            raise NotTwiceDifferentiableError(
                f"curvature={self._name!r}: the loss's graph contains the custom autograd.Function "
                f"{culprit}, whose backward is marked @once_differentiable. Its second derivative is "
                "missing from autograd's Hessian, and torch does not say so when the gradient "
                "flowing into that backward is constant (e.g. F(y).sum() + other terms). Use "
                f"{_first_order_advice(self.loss_fn)}"
                + ("" if _own_estimators(self.loss_fn) else
                   ", give the Function a backward built from differentiable torch operations, or "
                   "pass check_hessian='never' if its backward does not depend on its input (a linear map)")
                + "."
            )
        if mode != "auto" or has_custom_function(total, leaf):
            err = self._probe(fn, flat, composite, shape, args, kwargs)
            if err > HVP_MISMATCH_TOL:  # NaN (no converged differences) is no evidence
                raise NotTwiceDifferentiableError(
                    f"curvature={self._name!r}: the autograd Hessian of the loss disagrees with "
                    f"finite differences of its gradient (relative error {err:.2g} in the worst tenth "
                    f"of the samples, tolerance {HVP_MISMATCH_TOL}). The loss is probably not twice "
                    "differentiable (e.g. a custom autograd.Function whose backward is computed "
                    f"outside autograd). Use {_first_order_advice(self.loss_fn)}, or "
                    "check_hessian='never' if the loss is intentionally non-smooth."
                )
        self._checked = True

    def _probe(self, fn, flat, composite: Optional[CompositeGradient], shape, args, kwargs) -> float:
        """:func:`hvp_mismatch` of the function whose Hessian the provider uses, in float64.

        A missing term is structural, so it shows in float64 too, where finite differences
        resolve 10% of the curvature even on stiff losses; float32 roundoff near saturation
        (a relaxed sort with P ≈ 1) would not. A loss that cannot run in float64 is probed in
        its own dtype.
        """
        if flat.dtype != torch.float64:
            wide = tuple(to_float64(a) for a in args), {k: to_float64(v) for k, v in kwargs.items()}
            try:
                return hvp_mismatch(*self._gradient_map(fn, flat, composite, shape, *wide, torch.float64))
            except (RuntimeError, TypeError):
                pass
        return hvp_mismatch(*self._gradient_map(fn, flat, composite, shape, args, kwargs, None))

    def _gradient_map(self, loss_fn, flat, composite: Optional[CompositeGradient], shape, args, kwargs, dtype):
        """(x, g(x) with graph, z -> g(z)) for the loss (or a composite's outer), in ``dtype``."""
        N = flat.shape[0]
        if composite is None:
            fn, x0, view = loss_fn, flat, shape
        else:
            fn, x0, view = composite.outer, composite.a_leaf, composite.a_shape

        def grad_at(z: Tensor, create_graph: bool = False):
            out = reduce_loss(fn(z.reshape(view), *args, **kwargs), N, self.reduction)[1]
            return torch.autograd.grad(out, z, create_graph=create_graph, allow_unused=True)[0]

        x = x0.detach().to(dtype or x0.dtype).requires_grad_(True)
        gx = grad_at(x, create_graph=True)
        return x, (torch.zeros_like(x) if gx is None else gx), grad_at


def _eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run outside the compiled graph. (Wrapped at call time, not decorated:
    ``torch.compiler.disable`` imports dynamo, which ``import newton_losses`` must not; this is
    only reached while compiling, with dynamo loaded.)"""
    return torch.compiler.disable(fn)


def _eager_newton(newton: NewtonLoss, y: Tensor, args: tuple, kwargs: dict, fn: Callable[..., Tensor]):
    """The eager Newton step, (value, direction), for a compiled caller."""
    with torch.enable_grad():
        return newton._newton(y.detach(), args, kwargs, fn)


def _eager_step(newton: NewtonLoss, y: Tensor, args: tuple, kwargs: dict, fn: Callable[..., Tensor]) -> None:
    """One eager Newton step, for the first call's checks (its direction is not used)."""
    _eager_newton(newton, y, args, kwargs, fn)
    newton._first_call_done = True


def newton_direction(
    loss_fn: Callable[..., Tensor],
    y: Any,
    *args: Any,
    curvature: Union[str, Callable[..., Any]] = "fisher",
    lam: float = 1.0,
    loss_kwargs: Optional[dict] = None,
    **options: Any,
) -> Any:
    """The Newton direction ``d_i = (C + λI)^{-1} ∇ℓ_i(y_i)`` of one batch, as a function.

    For training loops of your own: ``y.backward(d / len(y))`` sends the network the gradient
    that ``NewtonLoss(loss_fn, curvature, lam)(y, *args).backward()`` sends it, and ``y - d`` is
    the Newton target. Each call builds a :class:`NewtonLoss` and so repeats its first-call
    checks (second-order check, reduction probe, chunk-size choice); in a loop, make one
    ``NewtonLoss`` and call its :meth:`~NewtonLoss.direction`.

    Args:
        loss_fn: ``loss_fn(y, *args, **loss_kwargs)`` -> (N,) per-sample losses or their mean.
        y: (N, *shape) outputs, or a tuple/list/dict of them (see :meth:`NewtonLoss.forward`).
        args, loss_kwargs: the loss's other arguments (targets).
        curvature, lam, options: as for :class:`NewtonLoss` (``projection``, ``damping``, ...).

    Returns:
        d: detached, the shape (and structure) of y.

    Example:
        >>> import torch
        >>> y = torch.zeros(2, 2)
        >>> newton_direction(lambda y: 2.0 * ((y - 1.0) ** 2).sum(-1), y, curvature="hessian", lam=0.0)
        tensor([[-1., -1.],
                [-1., -1.]])
    """
    try:
        newton = NewtonLoss(loss_fn, curvature, lam, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise TypeError(
            f"newton_direction: {exc}. Its keyword arguments are NewtonLoss's options "
            "(projection, damping, solver, ...); pass the loss's own keyword arguments as "
            "loss_kwargs={...}"
        ) from None
    return newton.direction(y, *args, **(loss_kwargs or {}))


class _state_kept:
    """Context manager: a probe call of the loss leaves no trace on it — the buffers (BatchNorm
    running statistics) and attributes (a recorded last batch) of the loss's modules are put
    back as they were. Plain functions have nothing to restore."""

    def __init__(self, loss_fn: Any) -> None:
        parts = [loss_fn, getattr(loss_fn, "inner", None), getattr(loss_fn, "outer", None)]
        self.modules = list(dict.fromkeys(m for p in parts if isinstance(p, nn.Module) for m in p.modules()))

    def __enter__(self) -> None:
        self.saved = [(m, dict(m.__dict__), {k: b.detach().clone() for k, b in m._buffers.items() if b is not None})
                      for m in self.modules]

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for m, attrs, buffers in self.saved:
                m.__dict__.clear()
                m.__dict__.update(attrs)
                for k, b in buffers.items():
                    current = m._buffers[k]
                    if current is None:  # the probe set the buffer to None: put the saved copy back
                        m._buffers[k] = b
                    else:
                        current.copy_(b)


def _shift_invariant(loss_fn: Any) -> bool:
    """Whether the loss declares itself unchanged by adding a constant to a sample's outputs —
    itself, through a CompositeLoss's inner map (a relaxation), or through functools.partial."""
    while isinstance(loss_fn, functools.partial):
        loss_fn = loss_fn.func
    if getattr(loss_fn, "shift_invariant", False):
        return True
    return isinstance(loss_fn, CompositeLoss) and bool(getattr(loss_fn.inner, "shift_invariant", False))


def _own_estimators(loss_fn: Any) -> list:
    return [name for name in ("hessian_estimator", "gauss_newton_estimator") if callable(getattr(loss_fn, name, None))]


def _first_order_advice(loss_fn: Any) -> str:
    """The curvatures to suggest for a loss autograd cannot differentiate twice: the loss's own
    estimators first, when it has them."""
    own = [f"curvature=loss.{name}() (the loss's own estimator)" for name in _own_estimators(loss_fn)]
    return " or ".join(own + ["curvature='fisher' (first derivatives only)"])


def _bad_rows(mask: Tensor) -> str:
    """' in k of N samples (i, j, ...)' for the rows of ``mask`` (N, ...) with any True entry."""
    bad = mask.reshape(mask.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
    shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
    return f" in {len(bad)} of {mask.shape[0]} samples ({shown})"


def _nonfinite_message(value: Tensor, t: Tensor, what: str, dtype: torch.dtype,
                       sample_values: Optional[Tensor] = None) -> str:
    """What was not finite, where, and what to do (:class:`NonFiniteLossError`).
    ``sample_values``: the loss's per-sample values (N,), when it returned them."""
    v = float(value)
    if not math.isfinite(v):
        head = f"NewtonLoss: the loss value is {v}"
        if sample_values is not None and sample_values.ndim == 1 and sample_values.shape[0] > 0:
            if bool(torch.isfinite(sample_values).all()):
                head += (" — every per-sample loss is finite: their sum or mean overflowed "
                         f"{sample_values.dtype} (compute the loss in a wider dtype, or scale it down)")
            else:
                head += " — the per-sample loss is not finite" + _bad_rows(~torch.isfinite(sample_values))
    else:
        head = f"NewtonLoss: the loss value is finite ({v:.6g}) but the {what} contains NaN or Inf"
        if t.ndim == 2 and what != "curvature matrix":  # per-sample rows: gradient, direction
            head += _bad_rows(~torch.isfinite(t))
    if dtype == torch.float16:
        return (
            f"{head}. The outputs are float16, whose largest value is 65504: the loss or its "
            "gradient overflowed it. Compute the loss in float32 (loss_fn(y.float(), ...); under "
            "autocast, outside the autocast region), or use bfloat16, which has float32's range. "
            "No update was produced."
        )
    return f"{head}. No update was produced. Pass on_nonfinite='skip' to skip such batches."


def _nonfinite_outputs_message(flat: Tensor, dtype: torch.dtype) -> str:
    """The outputs y themselves hold NaN: which samples, and what to do."""
    hint = (" The outputs are float16 (largest value 65504): the network may have overflowed it; "
            "use bfloat16 or float32." if dtype == torch.float16 else "")
    return (f"NewtonLoss: the network's outputs y contain NaN{_bad_rows(torch.isnan(flat))}, before the loss was "
            f"evaluated.{hint} No update was produced. Pass on_nonfinite='skip' to skip such "
            "batches.")


def _resolve_curvature(curvature: Any, loss_fn: Callable[..., Any]) -> tuple[str, CurvatureProvider]:
    """(name for diagnostics, provider) for a registered name or a user callable."""
    if isinstance(curvature, str):
        provider = get_curvature(curvature)
        provider.check_loss(loss_fn, curvature)
        return curvature, provider
    if not callable(curvature):
        raise TypeError(f"curvature must be a string or a callable; got {type(curvature).__name__}")
    return "custom", UserCurvature(curvature)


def _check_options(*, projection, fallback, damping, solver, hessian_method, on_nonfinite, check_hessian,
                   chunk_size, cg_max_iter, cg_rtol, solve_dtype) -> None:
    _check_choice("projection", projection, PROJECTIONS)
    _check_choice("fallback", fallback, ("abs", "clamp"))
    _check_choice("damping", damping, DAMPINGS)
    _check_choice("solver", solver, SOLVERS)
    _check_choice("hessian_method", hessian_method, HESSIAN_METHODS)
    _check_choice("on_nonfinite", on_nonfinite, ("raise", "skip"))
    _check_choice("check_hessian", check_hessian, CHECK_HESSIAN)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
    if cg_max_iter is not None and (not isinstance(cg_max_iter, int) or cg_max_iter < 1):
        raise ValueError(f"cg_max_iter must be a positive int or None; got {cg_max_iter!r}")
    if cg_rtol is not None and not (0 < cg_rtol < 1):
        raise ValueError(f"cg_rtol must be in (0, 1); got {cg_rtol!r}")
    if not isinstance(solve_dtype, torch.dtype) or not solve_dtype.is_floating_point:
        raise TypeError(f"solve_dtype must be a floating torch.dtype; got {solve_dtype!r}")
    if hessian_method == "cg" and solver == "dense":
        raise ValueError("hessian_method='cg' asks for the matrix-free solver and solver='dense' for "
                         "dense matrices; pass one of them")


def _check_solver_request(name: str, provider: CurvatureProvider, solver: str, hessian_method: str,
                          damping: str) -> None:
    """Reject or announce a solver request the curvature cannot honour."""
    if "cg" not in (solver, hessian_method):
        return
    if "cg" not in provider.solvers:
        warnings.warn(
            f"NewtonLoss: curvature={name!r} has no matrix-free form (its solvers: "
            f"{provider.solvers}); it is solved with dense matrices, not by conjugate gradients",
            UserWarning, stacklevel=3,
        )
    elif damping != "absolute":
        raise ValueError(
            f"damping={damping!r} needs the curvature's eigenvalues, which the matrix-free "
            "solver does not have; use solver='dense' or damping='absolute'"
        )


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def _check_y(y: Any) -> None:
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor; got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"y must be a floating-point tensor; got dtype {y.dtype}")
    if y.ndim < 2:
        raise ValueError(
            "y must have a batch dimension and at least one output dimension, (N, m) or "
            f"(N, *shape); got shape {tuple(y.shape)}"
            + (" (for one output per sample use y.unsqueeze(-1))" if y.ndim == 1 else "")
        )
    if y.shape[0] < 1 or y[0].numel() < 1:
        raise ValueError(f"y must be non-empty; got shape {tuple(y.shape)}")
