"""Shared machinery of the stochastic losses: perturbation samples, their reuse, estimators.

A stochastic loss evaluates a black box (a solver, or a loss of a solver's output) at
``y + σε_s`` for S Gaussian samples, all in one batched call of size S·N (plus N for the
``"center"`` baseline), keeps the samples of its last forward pass in ``last_samples``, and hands
out curvature estimators (:class:`SteinCurvature`) that reuse those samples when called on the
same inputs — which is what ``NewtonLoss`` does: it calls the loss, then the curvature, on the same
``y`` and targets in the same step.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch.autograd.function import once_differentiable

from ._validation import check_choice, check_generator, check_sampling, check_target
from .stein import LowRankCurvature, centered, gaussian_noise


@dataclass
class PerturbationSamples:
    """The perturbations of one forward pass and what the black box returned for them.

    Attributes:
        y: (N, *shape) the unperturbed input (detached).
        eps: (S, N, *shape) the noise ε_s; the black box saw ``y + σ ε_s``.
        outputs: (S, N, *p) its outputs (a value per sample: p = (); a path mask: p = (H, W)).
        center: (N, *p) its output at ``y`` (baseline ``"center"``), else None; also None until
            an estimator needs it where the loss itself does not (:class:`~.perturbed.FenchelYoungLoss`
            solves the centre lazily: :meth:`PerturbedBase.ensure_center`).
        sigma: σ.
        args, kwargs: the extra (target) arguments of that call, detached.
    """

    y: torch.Tensor
    eps: torch.Tensor
    outputs: torch.Tensor
    center: Optional[torch.Tensor]
    sigma: float
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return self.eps.shape[0]

    def centered(self, baseline: str) -> torch.Tensor:
        """``outputs − baseline``, (S, N, *p)."""
        return centered(self.outputs, baseline, self.center)

    def flat_eps(self) -> torch.Tensor:
        """(S, N, m) noise, flattened per sample."""
        S, N = self.eps.shape[:2]
        return self.eps.reshape(S, N, -1)

    def matches(self, y: torch.Tensor, args: tuple, kwargs: dict) -> bool:
        """Whether these samples were drawn at this ``y`` (any shape with N rows) and targets."""
        if y.shape[0] != self.y.shape[0] or y.numel() != self.y.numel():
            return False
        if not torch.equal(y.detach().reshape(self.y.shape).to(self.y), self.y):
            return False
        if len(args) != len(self.args) or set(kwargs) != set(self.kwargs):
            return False
        return all(_same(a, b) for a, b in zip(args, self.args)) and all(
            _same(kwargs[k], self.kwargs[k]) for k in kwargs
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and torch.equal(a.detach().to(b), b)
        )
    try:
        return bool(a is b or a == b)
    except Exception:  # objects whose == is not a bool (arrays): treat as different
        return False


def _detach(a: Any) -> Any:
    return a.detach() if isinstance(a, torch.Tensor) else a


def _repeat(a: Any, n: int, k: int) -> Any:
    """Tile a per-sample tensor argument (first dimension n) k times, sample-major, like the points."""
    if isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == n:
        return a.detach().unsqueeze(0).expand(k, *a.shape).reshape(k * n, *a.shape[1:])
    return a


class _WithGradient(torch.autograd.Function):
    """Forward: given values (N,). Backward: a given per-sample gradient estimate for y."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_out.reshape((-1,) + (1,) * (grad.dim() - 1)) * grad, None, None


def with_gradient(y: torch.Tensor, value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``value`` (N,) as a function of y whose gradient is ``grad`` (N, *shape); once differentiable."""
    return _WithGradient.apply(y, value.detach(), grad.detach().to(y.dtype))


class _SteinVJP(torch.autograd.Function):
    """Forward: the sample mean ŷ (N, *p). Backward: ``v ↦ (1/(Sσ)) Σ_s ⟨v, c_s⟩ ε_s``."""

    @staticmethod
    def forward(ctx, y, mean, c, eps, sigma):
        ctx.save_for_backward(c, eps)
        ctx.sigma = sigma
        return mean.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        c, eps = ctx.saved_tensors
        S, N = c.shape[:2]
        coef = (c.reshape(S, N, -1) * grad_out.reshape(1, N, -1)).sum(-1)  # (S, N)
        grad = torch.einsum("sn,sn...->n...", coef, eps) / (S * ctx.sigma)
        return grad, None, None, None, None


def stein_mean(y: torch.Tensor, samples: PerturbationSamples, baseline: str) -> torch.Tensor:
    """ŷ = mean_s outputs_s as a function of y with the Stein-Jacobian backward (baseline ``baseline``)."""
    mean = samples.outputs.mean(0)
    c = samples.centered(baseline)
    return _SteinVJP.apply(y, mean.to(y.dtype), c.to(y.dtype), samples.eps.to(y.dtype), samples.sigma)


class PerturbedBase(torch.nn.Module):
    """σ, S, baseline, generator; drawing, caching and reusing perturbation samples."""

    def __init__(self, sigma: float, n_samples: int, baseline: str, generator: Optional[torch.Generator]):
        super().__init__()
        self.sigma, self.n_samples, self.baseline = check_sampling(sigma, n_samples, baseline)
        self.generator = check_generator(generator)
        self.last_samples: Optional[PerturbationSamples] = None

    #: The loss draws random samples on every call (so two evaluations differ; see
    #: :func:`newton_losses.check_precision`, which refuses such losses).
    stochastic: bool = True

    #: Whether ``forward(y, target)`` takes one target (stored positionally as ``args = (target,)``
    #: so that ``target=`` by keyword and by position give the same samples).
    _has_target: bool = False

    def _evaluate(self, points: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        """The black box at K points (K, *shape) -> (K, *p); args already tiled to K rows."""
        raise NotImplementedError

    def _check_point(self, y: torch.Tensor) -> torch.Tensor:
        """The forward pass's check of the input (e.g. non-negative costs), for fresh draws."""
        return y

    def _noise(self, n_samples: int, y: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """ε (S, N, *shape) for the S perturbations of y: :func:`~.stein.gaussian_noise` (drawn in
        float64, sample-major). A subclass may draw the same distribution another way (the PyEPO
        integration reproduces PyEPO's stream)."""
        return gaussian_noise(n_samples, y, generator)

    def normalize_args(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The extra arguments as the forward pass stores them: ``((target,), {})`` for the losses
        with a target (given by position or as ``target=``), unchanged otherwise."""
        if not self._has_target:
            return tuple(args), dict(kwargs)
        try:
            bound = inspect.signature(self.forward).bind(None, *args, **kwargs)
        except TypeError as err:
            raise TypeError(
                f"{type(self).__name__}: the curvature estimator is called as estimator(y, g, "
                "target) or estimator(y, g, target=target) — with the loss's own target, which "
                f"NewtonLoss passes on — got {len(args)} extra positional and keyword "
                f"{sorted(kwargs)} arguments ({err})"
            ) from None
        return (bound.arguments["target"],), {}

    def _center_in_forward(self) -> bool:
        """Whether the forward pass evaluates the centre (baseline ``"center"``) with its samples."""
        return self.baseline == "center"

    def ensure_center(self, samples: PerturbationSamples) -> PerturbationSamples:
        """Fill in ``samples.center`` (one black-box call on N points) if the baseline needs it."""
        if self.baseline == "center" and samples.center is None:
            with torch.no_grad():
                samples.center = self._evaluate(samples.y, samples.args, samples.kwargs)
        return samples

    def draw(
        self, y: torch.Tensor, args: tuple = (), kwargs: Optional[dict] = None,
        generator: Optional[torch.Generator] = None, *, center: Optional[bool] = None,
    ) -> PerturbationSamples:
        """Draw S perturbations of y (N, *shape) and evaluate the black box once on all of them
        (and on y itself for the ``"center"`` baseline, unless ``center=False``)."""
        kwargs = {} if kwargs is None else kwargs
        with_center = self.baseline == "center" if center is None else center
        gen = self.generator if generator is None else generator
        y = y.detach()
        N, S = y.shape[0], self.n_samples
        eps = self._noise(S, y, gen)
        points = (y.unsqueeze(0) + self.sigma * eps).reshape(S * N, *y.shape[1:])
        K = S
        if with_center:
            points = torch.cat([points, y])
            K = S + 1
        targs = tuple(_repeat(a, N, K) for a in args)
        tkw = {k: _repeat(v, N, K) for k, v in kwargs.items()}
        with torch.no_grad():
            out = self._evaluate(points, targs, tkw)
        out = out.reshape(K, N, *out.shape[1:])
        return PerturbationSamples(
            y=y, eps=eps, outputs=out[:S], center=out[S] if with_center else None, sigma=self.sigma,
            args=tuple(_detach(a) for a in args), kwargs={k: _detach(v) for k, v in kwargs.items()},
        )

    def _forward_samples(self, y: torch.Tensor, args: tuple, kwargs: dict) -> PerturbationSamples:
        samples = self.draw(y, args, kwargs, center=self._center_in_forward())
        self.last_samples = samples
        return samples

    def samples_for(
        self, y: torch.Tensor, args: tuple, kwargs: dict, *, fresh: bool,
        generator: Optional[torch.Generator],
    ) -> PerturbationSamples:
        """The last forward pass's samples if drawn at (y, args) and not ``fresh``, else new ones.

        ``args``/``kwargs`` are normalized first (:meth:`normalize_args`), and y and the target
        are validated against the last forward pass (its grid shape) before anything is drawn.
        """
        name = type(self).__name__
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise TypeError(
                f"{name}: the curvature estimator's y must be a floating-point torch.Tensor, got "
                f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__}"
            )
        args, kwargs = self.normalize_args(args, kwargs)
        last = self.last_samples
        if last is not None and y.numel() == last.y.numel() and y.dim() >= 1 and y.shape[0] == last.y.shape[0]:
            shape = last.y.shape
        elif not self._needs_grid():
            shape = y.shape
        elif last is not None:
            raise ValueError(
                f"{name}: the curvature estimator got y of shape {tuple(y.shape)}, but the last "
                f"forward pass was on inputs of shape {tuple(last.y.shape)} "
                f"({last.y.shape[0]} rows of {last.y[0].numel()} entries); call the estimator "
                "with the same inputs as the loss (NewtonLoss does)"
            )
        else:
            raise ValueError(
                f"{name}: cannot draw samples for flattened inputs of shape "
                f"{tuple(y.shape)} before a forward pass has shown the grid shape; call the loss "
                "first (NewtonLoss does)"
            )
        y_grid = y.detach().reshape(shape)
        if self._has_target:
            args = (check_target(args[0], y_grid),)
        if not fresh and last is not None and last.matches(y, args, kwargs):
            return last
        return self.draw(self._check_point(y_grid), args, kwargs, generator)

    def _needs_grid(self) -> bool:
        return True

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, n_samples={self.n_samples}, baseline={self.baseline!r}"


PROJECTIONS = ("abs", "none", "dense")


class SteinCurvature:
    """A curvature estimator for ``NewtonLoss(loss_fn, curvature=estimator)``.

    Called as ``estimator(y, g, *args, **kwargs)`` with y, g: (N, m) (what the core passes), it
    returns a :class:`~newton_losses.CurvatureEstimate` built from perturbation samples: those
    of the loss's last forward pass if it was evaluated at the same y and targets (the default,
    ``fresh=False``: no extra solver calls), else new ones drawn with ``generator`` (or the
    loss's generator). ``last`` keeps the :class:`~.stein.LowRankCurvature` of the last call
    (e.g. ``last.eigenvalue_range()``).

    Bias and variance of reusing the forward pass's samples: the curvature and the gradient are
    then built from the same noise, so they are correlated, and ``(C + λI)^{-1} g`` is a
    ratio-type estimate whose bias is of order 1/S (as is that of any nonlinear function of
    Monte-Carlo means, independent samples included). Fresh samples (``fresh=True``) remove the
    correlation at the cost of a second solver call on S·N grids. Every estimate here is
    unbiased for its matrix except the Gauss-Newton products ``ĴᵀDĴ``, which reuse Ĵ on both
    sides (PSD; biased upward by O(1/S), which acts like extra damping).

    Args:
        loss: the stochastic loss whose samples are used.
        build: samples -> :class:`~.stein.LowRankCurvature`.
        projection: ``"abs"`` (default: matrix-free |C|, PSD, the saddle-free form the core's
            default projection would apply), ``"none"`` (matrix-free C as estimated; the core's
            CG truncates at negative curvature) or ``"dense"`` ((N, m, m) matrices for the
            core's own eigendecomposition and ``projection=``).
        fresh: draw new samples instead of reusing the forward pass's.
        generator: generator for fresh samples (default: the loss's).
    """

    def __init__(
        self,
        loss: PerturbedBase,
        build: Callable[[PerturbationSamples], LowRankCurvature],
        *,
        projection: str = "abs",
        fresh: bool = False,
        generator: Optional[torch.Generator] = None,
        name: str = "hessian",
    ) -> None:
        self.loss = loss
        self.build = build
        self.projection = check_choice("projection", projection, PROJECTIONS)
        if not isinstance(fresh, bool):
            raise TypeError(f"fresh must be a bool, got {type(fresh).__name__}")
        self.fresh = fresh
        self.generator = check_generator(generator)
        self.name = name
        self.last: Optional[LowRankCurvature] = None

    def __call__(self, y: torch.Tensor, g: Optional[torch.Tensor] = None, *args: Any, **kwargs: Any):
        samples = self.loss.samples_for(y, args, kwargs, fresh=self.fresh, generator=self.generator)
        self.last = self.build(self.loss.ensure_center(samples))
        return self.last.estimate(self.projection)

    def __repr__(self) -> str:
        return (
            f"SteinCurvature({self.name!r} of {type(self.loss).__name__}, projection="
            f"{self.projection!r}, fresh={self.fresh})"
        )
