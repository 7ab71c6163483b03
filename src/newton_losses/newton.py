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

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from . import curvature as _curv
from .curvature import CompositeLoss, CurvatureEstimate, NotTwiceDifferentiableError
from .linalg import DAMPINGS, PROJECTIONS, SolveInfo, conjugate_gradient, damped_solve, low_rank_damped_solve

__all__ = ["NewtonLoss", "NewtonDiagnostics", "NonFiniteLossError", "CURVATURES"]

CURVATURES = ("hessian", "hessian_batch", "fisher", "gauss_newton")
HESSIAN_METHODS = ("auto", "rows", "vmap", "cg")
SOLVERS = ("auto", "dense", "cg")

# Above this output size the automatic choice switches from dense blocks (m batched backward
# passes + eigendecomposition) to conjugate gradients on Hessian-vector products. Chosen from
# `newton-losses bench` (docs/PERFORMANCE.md): at m ≤ 64 dense is as cheap as a few CG steps and
# exact; at m = 144 (12×12 grids) building 144 rows per sample dominates.
AUTO_DENSE_MAX_M = 64
# Above this m (and m > N) the Fisher is solved by Woodbury on its (N, m) factor.
AUTO_FISHER_LOW_RANK_M = 512


class NonFiniteLossError(FloatingPointError):
    """The loss, its gradient or the Newton direction contained NaN or Inf."""


@dataclass
class NewtonDiagnostics:
    """What one call of :class:`NewtonLoss` computed (``newton.last_diagnostics``).

    Attributes:
        curvature: the curvature used ("hessian", ..., or "custom").
        method: how it was obtained ("rows", "vmap", "cg", "fisher", "woodbury", "custom").
        n_samples, m: batch size and per-sample output size.
        lam, lam_effective: requested λ and the λ actually added (relative damping).
        min_eig, max_eig: extreme eigenvalues of C before projection (dense solves only).
        n_matrices: distinct matrices solved with (N, or 1 if shared).
        n_indefinite: matrices with a negative eigenvalue (CG: negative curvature met).
        n_fallback: matrices not solved in the requested form (Tikhonov fallback, CG truncation).
        cg_iterations, cg_max_residual: conjugate-gradient effort and accuracy.
        min_descent_cosine: smallest cos∠(d_i, g_i) over samples with g_i ≠ 0; positive means
            every per-sample step is a descent direction for that sample's loss.
        skipped: the update was skipped because of NaN/Inf (``on_nonfinite="skip"``).
        time_gradient_s: wall time of the loss's forward pass and per-sample gradient (the
            part a plain backward pass also pays; for ``gauss_newton`` it includes the
            Jacobian of the inner part).
        time_curvature_s, time_solve_s: wall time of building C (after the gradient) and of
            the solve. Their sum is the Newton step's own cost.
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
    cg_iterations: int = 0
    cg_max_residual: Optional[float] = None
    min_descent_cosine: Optional[float] = None
    skipped: bool = False
    time_gradient_s: float = 0.0
    time_curvature_s: float = 0.0
    time_solve_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Totals:
    calls: int = 0
    skipped: int = 0
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


class NewtonLoss(nn.Module):
    """Wrap a loss so that the network is trained with the regularized Newton step of the loss.

    ``loss = NewtonLoss(loss_fn, curvature="fisher", lam=0.1)(y, *args)`` returns the value of
    ``loss_fn`` (the mean over the batch) and, on ``backward()``, sends to each y_i the gradient

        (1/N) (C + λI)^{-1} ∇ℓ_i(y_i)

    instead of ``(1/N) ∇ℓ_i(y_i)``. ``newton.target(y, *args)`` returns the Newton target
    ``z* = y − (C + λI)^{-1} ∇ℓ(y)`` for the explicit two-step form ``½‖z* − y‖²``.

    Args:
        loss_fn: ``loss_fn(y, *args, **kwargs)`` with y: (N, *shape) returns the N per-sample
            losses ℓ_i (shape (N,)) or their mean (a scalar). Sample i's loss must depend on
            y_i only. For ``"gauss_newton"`` it must be a :class:`CompositeLoss`.
        curvature: which C to use:

            - ``"hessian"``: per-sample blocks ``C_i = ∇²ℓ_i(y_i)``.
            - ``"hessian_batch"``: ``C = (1/N) Σ_j ∇²ℓ_j(y_j)``, one matrix for the batch
              (the paper's Definition 1); all-reduced like the Fisher.
            - ``"fisher"``: empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` (Definition 2); needs
              first derivatives only; under torch.distributed summed over the global batch.
            - ``"gauss_newton"``: ``C_i = J_iᵀ ∇²h_i J_i`` for ``ℓ = h ∘ a`` given as
              ``CompositeLoss(inner=a, outer=h)``; PSD when h is convex.
            - a callable ``curvature(y, g, *args, **kwargs)`` with y, g: (N, m) (detached
              outputs and per-sample gradients) returning a (N, m, m) or (m, m) tensor or a
              :class:`CurvatureEstimate` — for stochastic losses that bring their own estimator.
        lam: Tikhonov regularizer λ ≥ 0. λ → ∞ recovers gradient descent scaled by 1/λ.
        projection: how indefinite curvature is made safe (see :mod:`newton_losses.linalg`):
            ``"abs"`` (default; |eigenvalues|, saddle-free Newton), ``"clamp"`` (negative
            eigenvalues set to 0) or ``"tikhonov"`` (the paper's plain ``C + λI``, with
            ``fallback`` wherever ``C + λI`` has a negative eigenvalue). Irrelevant for the
            Fisher and Gauss-Newton, which are PSD.
        fallback: ``"abs"`` or ``"clamp"``, used by ``"tikhonov"`` for non-PD matrices.
        damping: how λ is added. ``"absolute"``: add λ. ``"batch"``: add ``λ · s`` with s the
            mean |eigenvalue| over all the batch's curvature matrices — λ becomes unit-free
            (independent of the loss's reduction and scale) while samples keep their relative
            weighting (with per-sample curvatures under torch.distributed, s is each process's
            local batch mean). ``"relative"``:
            add ``λ · mean|eigenvalue|`` of each matrix separately — also unit-free, but every
            sample's step becomes scale-free, so a nearly solved sample (tiny gradient, tiny
            curvature) takes as large a step as an unsolved one; on losses whose per-sample
            minimum lies at infinity (cross-entropies of relaxed sorts) this drove training
            with Gauss-Newton to diverge (RESULTS.md). Non-absolute damping needs eigenvalues:
            dense solves only (a Fisher with m > 512 uses its trace instead).
        solver: ``"auto"``, ``"dense"`` or ``"cg"`` (matrix-free conjugate gradients on
            Hessian- or Gauss-Newton-vector products; negative curvature truncates).
            ``"auto"`` uses dense for m ≤ 64 and CG above, and always dense with a
            non-absolute damping (which needs the eigenvalues).
        hessian_method: how dense Hessian blocks are built: ``"auto"``/``"rows"`` (m batched
            backward passes over the summed loss) or ``"vmap"`` (``torch.func.vmap(hessian)``;
            tensor arguments with first dimension N are sliced per sample). ``"cg"`` is the
            same as ``solver="cg"``.
        chunk_size: how many backward passes to batch at once (vmap) when building dense
            blocks; 1 is a plain loop. Default: chosen by timing the candidates 1, 4, 16, 64
            on the first call for each output size (batching is faster for small losses and
            much slower for large ones); the choice changes speed, not results.
        cg_max_iter, cg_rtol: conjugate-gradient limits (defaults: m iterations; 1e-10 for
            float64 and 1e-5 for float32 relative residual).
        solve_dtype: dtype of the solves (float64 by default).
        distributed: all-reduce the Fisher / batch Hessian over torch.distributed processes
            (default: whenever torch.distributed is initialized).
        on_nonfinite: ``"raise"`` (default) raises :class:`NonFiniteLossError` when the loss,
            its gradient or the Newton direction has NaN/Inf; ``"skip"`` returns the loss with
            a zero gradient and records ``diagnostics.skipped``.
        check_hessian: guards against a silently wrong Hessian. Built-in torch operations
            have correct second derivatives; a custom ``autograd.Function`` whose backward is
            computed outside autograd does not, yet may still leave a graph. ``"auto"``
            (default) compares, on the first call, one Hessian-vector product with finite
            differences of the gradient *if the loss's graph contains a custom
            autograd.Function*; ``"first"`` / ``"always"`` do so unconditionally on the first /
            every call; ``"never"`` skips it. (Finite differences cannot be trusted on very
            stiff losses — e.g. log of probabilities near 1e-20 — hence not by default.)

    Attributes:
        last_diagnostics: :class:`NewtonDiagnostics` of the last call with gradients.
        totals: running counts (calls, skipped, indefinite and fallback matrices).

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
    ) -> None:
        super().__init__()
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
        if isinstance(curvature, str):
            if curvature not in CURVATURES:
                raise ValueError(
                    f"curvature must be one of {CURVATURES} or a callable; got {curvature!r}"
                )
            if curvature == "gauss_newton" and not isinstance(loss_fn, CompositeLoss):
                raise TypeError(
                    "curvature='gauss_newton' needs the loss as an outer function of an inner "
                    "map: pass loss_fn=CompositeLoss(inner, outer); got "
                    f"{type(loss_fn).__name__}"
                )
        elif not callable(curvature):
            raise TypeError(
                f"curvature must be a string or a callable; got {type(curvature).__name__}"
            )
        self.lam = lam  # validated by the property setter
        _check_choice("projection", projection, PROJECTIONS)
        _check_choice("fallback", fallback, ("abs", "clamp"))
        _check_choice("damping", damping, DAMPINGS)
        _check_choice("solver", solver, SOLVERS)
        _check_choice("hessian_method", hessian_method, HESSIAN_METHODS)
        _check_choice("on_nonfinite", on_nonfinite, ("raise", "skip"))
        _check_choice("check_hessian", check_hessian, ("auto", "first", "always", "never"))
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
        if cg_max_iter is not None and (not isinstance(cg_max_iter, int) or cg_max_iter < 1):
            raise ValueError(f"cg_max_iter must be a positive int or None; got {cg_max_iter!r}")
        if cg_rtol is not None and not (0 < cg_rtol < 1):
            raise ValueError(f"cg_rtol must be in (0, 1); got {cg_rtol!r}")
        if not isinstance(solve_dtype, torch.dtype) or not solve_dtype.is_floating_point:
            raise TypeError(f"solve_dtype must be a floating torch.dtype; got {solve_dtype!r}")
        if hessian_method == "cg":
            solver = "cg"
        if damping != "absolute" and solver == "cg":
            raise ValueError(
                f"damping={damping!r} needs the curvature's eigenvalues, which the matrix-free "
                "solver does not have; use solver='dense' or damping='absolute'"
            )
        if solver == "cg" and curvature in ("fisher", "hessian_batch"):
            # One shared m×m matrix: building it densely (m passes) is cheaper than CG, which
            # would need N products per iteration for N different right-hand sides.
            solver = "dense"
        self.loss_fn = loss_fn
        self.curvature = curvature
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
        self._checked = False
        self._chunk_cache: dict = {}
        self.last_diagnostics: Optional[NewtonDiagnostics] = None
        self.totals = _Totals()

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
        self._lam = float(value)

    def extra_repr(self) -> str:
        name = self.curvature if isinstance(self.curvature, str) else "custom"
        return f"curvature={name!r}, lam={self.lam}, projection={self.projection!r}, solver={self.solver!r}"

    # ------------------------------------------------------------------------------------------
    def forward(self, y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """Loss value (mean over the batch) with the Newton gradient for y. y: (N, *shape)."""
        _check_y(y)
        if not (torch.is_grad_enabled() and y.requires_grad):
            return self._value_only(y, args, kwargs)
        value, direction = self._newton(y, args, kwargs)
        return _Inject.apply(y, value, direction.reshape(y.shape) / y.shape[0])

    def target(self, y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """The detached Newton target ``z* = y − (C + λI)^{-1} ∇ℓ(y)``, shape of y.

        Training with ``0.5 * ((z - y) ** 2).sum() / N`` gives the same gradient as
        ``forward``.
        """
        _check_y(y)
        with torch.enable_grad():
            _, direction = self._newton(y, args, kwargs)
        return (y.detach() - direction.reshape(y.shape)).detach()

    # ------------------------------------------------------------------------------------------
    def _value_only(self, y: Tensor, args: tuple, kwargs: dict) -> Tensor:
        out = self.loss_fn(y, *args, **kwargs)
        return _reduce(out, y.shape[0])[0]

    def _newton(self, y: Tensor, args: tuple, kwargs: dict) -> tuple[Tensor, Tensor]:
        N = y.shape[0]
        m = y[0].numel()
        name = self.curvature if isinstance(self.curvature, str) else "custom"
        diag = NewtonDiagnostics(curvature=name, method="", n_samples=N, m=m, lam=self.lam)
        t0 = time.perf_counter()
        flat = y.detach().reshape(N, m).requires_grad_(True)
        shape = y.shape
        solver = self._pick_solver(m)
        needs_graph = name in ("hessian", "hessian_batch") and not (
            self.hessian_method == "vmap" and solver == "dense"
        )

        def per_sample(yf: Tensor) -> tuple[Tensor, Tensor]:
            out = self.loss_fn(yf.reshape(shape), *args, **kwargs)
            return _reduce(out, N)

        gn = None
        if name == "gauss_newton":
            value, total, g, gn = self._gauss_newton_forward(flat, shape, args, kwargs, N)
        else:
            value, total = per_sample(flat)
            (g,) = torch.autograd.grad(total, flat, create_graph=needs_graph, allow_unused=True)
            if g is None:
                g = torch.zeros_like(flat)
        value = value.detach()
        t_grad = time.perf_counter()
        diag.time_gradient_s = t_grad - t0

        if not self._finite(value, g, "loss value or gradient"):
            return self._skip(value, flat, diag)

        if needs_graph or gn is not None:
            mode = self.check_hessian
            if mode == "always" or (mode in ("first", "auto") and not self._checked):
                if mode != "auto" or _has_custom_function(total):
                    self._verify_second_order(name, flat, g, gn, per_sample, shape, args, kwargs)
                self._checked = True

        est, method = self._curvature(name, solver, flat, shape, g, gn, args, kwargs)
        diag.method = method
        if est.matrix is not None and not self._finite(value, est.matrix, "curvature matrix"):
            return self._skip(value, flat, diag)
        t1 = time.perf_counter()
        direction, info = self._solve(est, g.detach(), solver)
        t2 = time.perf_counter()
        if not self._finite(value, direction, "Newton direction"):
            return self._skip(value, flat, diag)
        self._record(diag, info, g.detach(), direction, t1 - t_grad, t2 - t1)
        return value, direction

    def _pick_solver(self, m: int) -> str:
        if self.solver != "auto":
            return self.solver
        if self.curvature in ("fisher", "hessian_batch") or not isinstance(self.curvature, str):
            return "dense"
        if self.hessian_method in ("rows", "vmap") or self.damping != "absolute":
            return "dense"
        return "dense" if m <= AUTO_DENSE_MAX_M else "cg"

    def _gauss_newton_forward(self, flat, shape, args, kwargs, N):
        loss: CompositeLoss = self.loss_fn  # type: ignore[assignment]
        a = loss.inner(flat.reshape(shape))
        if not isinstance(a, Tensor) or a.ndim < 1 or a.shape[0] != N:
            raise ValueError(
                f"CompositeLoss.inner must return a tensor (N, *a_shape) with N={N}; got "
                f"{tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__}"
            )
        a_flat = a.reshape(N, -1)
        a_leaf = a_flat.detach().requires_grad_(True)
        out = loss.outer(a_leaf.reshape(a.shape), *args, **kwargs)
        value, total = _reduce(out, N)
        (ga,) = torch.autograd.grad(total, a_leaf, create_graph=True, allow_unused=True)
        if ga is None:
            ga = torch.zeros_like(a_leaf)
        (g,) = torch.autograd.grad(a_flat, flat, ga.detach(), retain_graph=True, allow_unused=True)
        if g is None:
            g = torch.zeros_like(flat)
        return value, total, g, (a_flat, ga, a_leaf, loss.outer, a.shape)

    def _curvature(self, name, solver, flat, shape, g, gn, args, kwargs):
        chunk = self.chunk_size if self.chunk_size is not None else self._tuned_chunk(name, flat.shape[1])
        if name == "fisher":
            dist = self._use_distributed()
            F, n_total = _curv.empirical_fisher(g, distributed=dist)
            m = g.shape[1]
            low = None
            if not dist and m > AUTO_FISHER_LOW_RANK_M and g.shape[0] < m and self.lam > 0:
                low = g.detach()
            return CurvatureEstimate(matrix=F, shared=True, psd=True, low_rank=low, n_total=n_total), (
                "woodbury" if low is not None else "fisher"
            )
        if name == "gauss_newton":
            a_flat, ga, a_leaf, _, _ = gn
            if solver == "cg":
                return CurvatureEstimate(matvec=_curv.gauss_newton_matvec(a_flat, flat, ga, a_leaf), psd=True), "cg"
            G = _curv.gauss_newton_blocks(a_flat, flat, ga, a_leaf, chunk_size=chunk)
            return CurvatureEstimate(matrix=G.detach(), psd=True), "rows"
        if name in ("hessian", "hessian_batch"):
            shared = name == "hessian_batch"
            if solver == "cg":
                return CurvatureEstimate(matvec=_curv.hessian_matvec(g, flat)), "cg"
            if self.hessian_method == "vmap":
                tail = tuple(shape[1:])

                def one_loss(yy: Tensor, *a: Any, **k: Any) -> Tensor:
                    return _reduce(self.loss_fn(yy.reshape((yy.shape[0],) + tail), *a, **k), yy.shape[0])[1]

                H = _curv.hessian_blocks_vmap(one_loss, flat.detach(), args, kwargs)
                method = "vmap"
            else:
                H = _curv.hessian_blocks(g, flat, chunk_size=chunk)
                method = "rows"
            H = H.detach()
            if shared:
                S = H.to(torch.float64).sum(0)
                n = torch.tensor([float(H.shape[0])], dtype=torch.float64, device=H.device)
                if self._use_distributed():
                    S, n = _curv.all_reduce_sum(S), _curv.all_reduce_sum(n)
                H = S / n
            return CurvatureEstimate(matrix=H, shared=shared), method
        # A user-supplied estimator.
        out = self.curvature(flat.detach(), g.detach(), *args, **kwargs)
        if isinstance(out, CurvatureEstimate):
            return out, "custom"
        if not isinstance(out, Tensor):
            raise TypeError(
                "a custom curvature must return a Tensor (N, m, m) / (m, m) or a "
                f"CurvatureEstimate; got {type(out).__name__}"
            )
        N, m = flat.shape
        if tuple(out.shape) not in ((N, m, m), (m, m)):
            raise ValueError(
                f"a custom curvature must return shape (N, m, m) = {(N, m, m)} or (m, m) = "
                f"{(m, m)}; got {tuple(out.shape)}"
            )
        return CurvatureEstimate(matrix=out.detach()), "custom"

    def _tuned_chunk(self, name: str, m: int):
        """A chunk-size picker that measures once per (curvature, m) and remembers."""
        key = (name, m)

        def pick(output: Tensor, inputs: Tensor, grad_outputs: Tensor) -> int:
            if key not in self._chunk_cache:
                self._chunk_cache[key] = _curv.choose_chunk_size(output, inputs, grad_outputs)
            return self._chunk_cache[key]

        return pick

    def _solve(self, est: CurvatureEstimate, g: Tensor, solver: str) -> tuple[Tensor, SolveInfo]:
        if est.matrix is not None:
            if est.low_rank is not None:
                n_total = est.n_total or est.low_rank.shape[0]
                lam = self.lam
                if self.damping != "absolute":
                    # One PSD matrix F = GᵀG/n: mean |eigenvalue| = trace(F)/m = ‖G‖²_F/(n·m).
                    scale = float(est.low_rank.double().pow(2).sum()) / (n_total * est.low_rank.shape[1])
                    lam = self.lam * scale if scale > 0 else self.lam
                return low_rank_damped_solve(est.low_rank, n_total, g, lam, dtype=self.solve_dtype)
            # Under torch.distributed, "batch" damping uses each process's own batch scale: an
            # all-reduce here could pair with another collective when a rank skips a non-finite
            # batch (found in review). Shared matrices (Fisher, batch Hessian) are global anyway.
            return damped_solve(
                est.matrix, g, self.lam, projection=self.projection, fallback=self.fallback,
                damping=self.damping, dtype=self.solve_dtype,
            )
        if self.damping != "absolute":
            raise ValueError(f"damping={self.damping!r} needs a dense curvature; got a matrix-free one")
        return conjugate_gradient(
            est.matvec, g, self.lam, max_iter=self.cg_max_iter, rtol=self.cg_rtol,
            dtype=self.solve_dtype,
        )

    def _use_distributed(self) -> bool:
        import torch.distributed as dist

        active = dist.is_available() and dist.is_initialized()
        return active if self.distributed is None else (bool(self.distributed) and active)

    # ------------------------------------------------------------------------------------------
    def _finite(self, value: Tensor, t: Tensor, what: str) -> bool:
        if bool(torch.isfinite(value).all()) and bool(torch.isfinite(t).all()):
            return True
        if self.on_nonfinite == "raise":
            raise NonFiniteLossError(
                f"NewtonLoss: the {what} contains NaN or Inf (loss value {float(value):.6g}). "
                "No update was produced. Pass on_nonfinite='skip' to skip such batches."
            )
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

    # ------------------------------------------------------------------------------------------
    def _verify_second_order(self, name, flat, g, gn, per_sample, shape, args, kwargs) -> None:
        """Compare one autograd Hessian-vector product with a central difference of the gradient.

        A custom autograd.Function whose backward is computed outside autograd gives a Hessian
        that is silently missing terms; this catches it on the first call at the cost of two to
        ten extra gradient evaluations.
        """
        gen = torch.Generator(device="cpu").manual_seed(0)
        if gn is None:
            x, grad_at, gx = flat, lambda z: torch.autograd.grad(per_sample(z)[1], z, allow_unused=True)[0], g
        else:
            a_flat, ga, a_leaf, outer, a_shape = gn

            def grad_at(z):
                out = outer(z.reshape(a_shape), *args, **kwargs)
                return torch.autograd.grad(_reduce(out, z.shape[0])[1], z, allow_unused=True)[0]

            x, gx = a_leaf, ga
        # A direction scaled elementwise to the point (relative perturbations), so that stiff
        # losses (log of probabilities near 0) are probed on their own scale.
        xd = x.detach()
        mag = xd.abs() + 0.01 * xd.pow(2).mean().sqrt() + torch.finfo(x.dtype).tiny
        v = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype=x.dtype, device=x.device) * mag
        try:
            (hv,) = torch.autograd.grad(gx, x, v, retain_graph=True, allow_unused=True)
        except RuntimeError as exc:
            _curv._raise_double_backward(exc)
        hv = (torch.zeros_like(x) if hv is None else hv).detach()
        steps = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6) if x.dtype == torch.float64 else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
        floor = 1e-3 * float(gx.detach().norm(dim=-1).median()) + 1e-12
        err = float("inf")
        # Several step sizes, per-sample errors, the median over samples, the best step: kinks
        # (abs, clamp) near some samples, stiff losses (log of tiny probabilities) at large steps
        # and roundoff at small ones do not fail the check; a missing second-order term fails
        # it at every step size and in (nearly) every sample.
        for h in steps:
            with torch.enable_grad():
                gp = grad_at((x.detach() + h * v).requires_grad_(True))
                gm = grad_at((x.detach() - h * v).requires_grad_(True))
            if gp is None or gm is None:
                return
            fd = (gp - gm) / (2 * h)
            if not (bool(torch.isfinite(fd).all()) and bool(torch.isfinite(hv).all())):
                continue
            den = torch.maximum(fd.norm(dim=-1), hv.norm(dim=-1)).clamp_min(floor)
            errs = (hv - fd).norm(dim=-1) / den
            err = min(err, float(errs.median()))
            if err < 0.05:
                break
        # Non-smooth losses (abs, clamp) and float32 roundoff disagree a little; a missing
        # second-order term disagrees completely.
        if err > 0.5:
            raise NotTwiceDifferentiableError(
                f"curvature={name!r}: the autograd Hessian of the loss disagrees with finite "
                f"differences of its gradient (median relative error {err:.2g} per sample). "
                "The loss is probably not twice differentiable (e.g. a custom "
                "autograd.Function whose backward is not differentiable). Use "
                "curvature='fisher', or check_hessian='never' if the loss is intentionally "
                "non-smooth."
            )


def _has_custom_function(t: Tensor) -> bool:
    """Whether the autograd graph behind ``t`` contains a custom ``torch.autograd.Function``."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if isinstance(fn, torch.autograd.function.BackwardCFunction):
            return True
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return False


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


def _reduce(out: Any, N: int) -> tuple[Tensor, Tensor]:
    """Return (mean, sum over samples) of a loss that gave N values or their mean."""
    if not isinstance(out, Tensor):
        raise TypeError(f"loss_fn must return a torch.Tensor; got {type(out).__name__}")
    if out.ndim == 0:
        return out, out * N
    if out.ndim == 1 and out.shape[0] == N:
        return out.mean(), out.sum()
    raise ValueError(
        f"loss_fn must return a scalar (the mean over the batch) or N={N} per-sample losses of "
        f"shape ({N},); got shape {tuple(out.shape)}"
    )
