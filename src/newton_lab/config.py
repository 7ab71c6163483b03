"""Run configurations: one flat, JSON-serializable dataclass per run, validated up front.

A :class:`RunConfig` holds everything that determines a run's result — task, protocol, method
and its arguments, Newton variant, optimizer, schedule, data and seed — so that the run
directory's ``config.json`` alone reproduces it. :func:`protocol_config` fills in a named
protocol (docs/PAPER.md §2); any field can then be overridden. :meth:`RunConfig.validate` rejects
an invalid configuration with a ``ValueError`` that names the field, before any work starts.
:meth:`RunConfig.run_id` is a readable, stable name with a hash of the canonical JSON.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RunConfig",
    "TASKS",
    "PROTOCOLS",
    "VARIANTS",
    "RANKING_METHODS",
    "SHORTEST_PATH_METHODS",
    "protocol_config",
]

TASKS = ("ranking", "shortest_path")
VARIANTS = ("none", "hessian", "hessian_batch", "fisher", "gauss_newton")
PROTOCOLS = {"ranking": ("paper", "quick", "tiny"), "shortest_path": ("paper", "quick", "tiny")}

# method -> {argument: (type, default)}; defaults follow docs/PAPER.md §2 where it names one.
# Every ranking method also takes ``loss``: the ranking loss on the relaxed permutation matrix
# ("bce": log(P + 1e-12) form, "bce_clamp": BCE of P clamped to [1e-6, 1 - 1e-6], "ce": row-wise
# cross-entropy; see newton_losses.sorting.RankingLoss).
_RANKING_LOSS_ARG = {"loss": (str, "bce")}
RANKING_METHODS: dict[str, dict[str, tuple[type, Any]]] = {
    "neuralsort": {"tau": (float, 1.0), **_RANKING_LOSS_ARG},
    "softsort": {"tau": (float, 1.0), "power": (float, 1.0), **_RANKING_LOSS_ARG},
    "odd_even": {"steepness": (float, 10.0), "sigmoid": (str, "logistic"), **_RANKING_LOSS_ARG},
    "bitonic": {"steepness": (float, 10.0), "sigmoid": (str, "logistic"), **_RANKING_LOSS_ARG},
}
SHORTEST_PATH_METHODS: dict[str, dict[str, tuple[type, Any]]] = {
    "bf_for": {"beta": (float, 10.0), "loss": (str, "l2"), "iterations": (int, 0)},
    "bf_while": {"beta": (float, 10.0), "loss": (str, "l2"), "max_iterations": (int, 0)},
    "smoothed_loss": {"sigma": (float, 0.5), "samples": (int, 10), "loss": (str, "l1")},
    "smoothed_algorithm": {"sigma": (float, 0.5), "samples": (int, 10), "loss": (str, "l1")},
    "perturbed_fy": {"sigma": (float, 0.5), "samples": (int, 10)},
}
MODELS = {"ranking": ("cnn", "mlp"), "shortest_path": ("resnet_stem", "small_cnn")}
DATA = {"ranking": ("mnist", "synthetic"), "shortest_path": ("terrain", "synthetic")}
DAMPINGS = ("absolute", "relative", "batch")
PROJECTIONS = ("abs", "clamp", "tikhonov")
DTYPES = ("float32", "float64")


def _methods(task: str) -> dict[str, dict[str, tuple[type, Any]]]:
    return RANKING_METHODS if task == "ranking" else SHORTEST_PATH_METHODS


_MAX_LR = 1e6

#: Fields added to :class:`RunConfig` after the first runs were committed, with their defaults.
#: A run whose field holds the default has the id it had before the field existed; a new field
#: goes here (and must default to the behaviour runs had without it).
LATER_DEFAULTS: dict[str, Any] = {"cg_max_iter": 0, "clip_grad_norm": 0.0, "loss_dtype": ""}


@dataclass
class RunConfig:
    """Everything that determines one training run.

    Attributes (grouped):
        task: ``"ranking"`` or ``"shortest_path"``; protocol: the named protocol the defaults
            came from (``"paper"``, ``"quick"``, ``"tiny"``; recorded, not interpreted).
        method, method_args: the relaxation / algorithm and its parameters (see
            ``RANKING_METHODS`` / ``SHORTEST_PATH_METHODS``; missing arguments get defaults).
        variant: Newton variant — ``"none"`` (the baseline), ``"hessian"``,
            ``"hessian_batch"``, ``"fisher"``, ``"gauss_newton"``; lam: λ; damping:
            ``"absolute"`` (add λ), ``"batch"`` (add λ·the batch's mean |eigenvalue|) or
            ``"relative"`` (add λ·each matrix's own mean |eigenvalue|); projection: how
            indefinite curvature is made safe (see :class:`newton_losses.NewtonLoss`).
        n, digits, downscale: ranking set size, digits per item, image downscale factor.
        model, hidden: ``"cnn"`` (the paper's), ``"mlp"`` (2 hidden layers of ``hidden``
            units), ``"resnet_stem"`` (paper, shortest path), ``"small_cnn"`` (quick).
        lr, batch_size, steps, lr_milestones, lr_gamma: Adam and a step-wise decay schedule.
        eval_every, val_sets, test_sets: evaluation cadence (steps; each evaluation writes a
            checkpoint) and the sizes of the fixed evaluation collections (ranking) or maps
            (shortest path; 0 = the whole split); train_size: training maps (shortest path,
            0 = all).
        data, synthetic_size: ``"mnist"``/``"terrain"`` or ``"synthetic"`` (a small generated
            stand-in for offline tests) and its size.
        seed, dtype, device: randomness, floating type, ``"cpu"``, ``"cuda"`` or ``"auto"``.
        cg_max_iter: cap on the conjugate-gradient iterations of a matrix-free Newton solve
            (``"hessian"`` / ``"gauss_newton"`` with absolute damping; the solve is then forced
            to CG); 0 = solve to the default tolerance.
        clip_grad_norm: clip the parameters' gradient to this total norm before each Adam step
            (``torch.nn.utils.clip_grad_norm_``); 0 = off. A control for the Newton losses'
            effect on unstable baselines.
        loss_dtype: floating type of the loss (the relaxation, the BCE and any Newton loss): the
            network's outputs and the targets are cast to it before the loss, and the gradient
            flows back into the network in ``dtype``; ``""`` = ``dtype``. A control for float32
            rounding in the loss (``"float64"`` with ``dtype="float32"``).

    Fields added after run ids were first committed (:data:`LATER_DEFAULTS`) are left out of
    :meth:`digest` while they hold their default, so adding one keeps every existing run id.
    """

    task: str = "ranking"
    protocol: str = "quick"
    method: str = "neuralsort"
    method_args: dict = field(default_factory=dict)
    variant: str = "none"
    lam: float = 0.0
    damping: str = "absolute"
    projection: str = "abs"
    n: int = 5
    digits: int = 4
    downscale: int = 2
    model: str = "mlp"
    hidden: int = 256
    lr: float = 10 ** -3.5
    batch_size: int = 100
    steps: int = 30_000
    lr_milestones: list = field(default_factory=list)
    lr_gamma: float = 0.1
    eval_every: int = 1000
    val_sets: int = 1000
    test_sets: int = 1000
    train_size: int = 0
    data: str = "mnist"
    synthetic_size: int = 1200
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    cg_max_iter: int = 0
    clip_grad_norm: float = 0.0
    loss_dtype: str = ""

    # ------------------------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Check every field; fill in method-argument defaults. Returns ``self``.

        Raises:
            ValueError: naming the field, its value and what was expected.
        """
        _choice("task", self.task, TASKS)
        _choice("protocol", self.protocol, PROTOCOLS[self.task])
        methods = _methods(self.task)
        if self.method not in methods:
            raise ValueError(
                f"method must be one of {tuple(methods)} for task {self.task!r}; got {self.method!r}"
            )
        if not isinstance(self.method_args, dict):
            raise ValueError(f"method_args must be a dict; got {type(self.method_args).__name__}")
        spec = methods[self.method]
        unknown = sorted(set(self.method_args) - set(spec))
        if unknown:
            raise ValueError(
                f"method_args: unknown argument(s) {unknown} for method {self.method!r}; "
                f"it takes {sorted(spec)}"
            )
        args = {}
        for key, (typ, default) in spec.items():
            value = self.method_args.get(key, default)
            args[key] = _coerce(f"method_args.{key}", value, typ)
        _check_method_args(self.task, self.method, args)
        self.method_args = args
        _choice("variant", self.variant, VARIANTS)
        self.lam = _number("lam", self.lam, minimum=0.0)
        if self.variant != "none" and self.lam == 0.0:
            raise ValueError(
                f"lam must be > 0 for variant {self.variant!r}: every sorting/path curvature is "
                "singular (e.g. along the all-ones vector); got lam=0"
            )
        _choice("damping", self.damping, DAMPINGS)
        _choice("projection", self.projection, PROJECTIONS)
        if self.variant == "none":
            # The baseline ignores these; canonical values make equal runs share one id.
            self.lam, self.damping, self.projection = 0.0, "absolute", "abs"
        if self.task == "shortest_path":
            if self.method.startswith("bf_"):
                if self.variant in ("hessian", "gauss_newton") and self.damping != "absolute":
                    raise ValueError(
                        f"damping {self.damping!r} with variant {self.variant!r} on a 12×12 path: "
                        "the 144-dimensional curvature is solved matrix-free (CG), without the "
                        "eigenvalues that damping needs; use damping 'absolute'"
                    )
                if self.variant == "gauss_newton" and args["loss"] == "l1":
                    raise ValueError(
                        "variant 'gauss_newton' with method_args.loss='l1': the L1 loss has zero "
                        "second derivative, so its Gauss-Newton matrix is zero; use loss 'l2' or "
                        "'smooth_l1', or another variant"
                    )
            elif self.variant not in ("none", "fisher", "hessian"):
                raise ValueError(
                    f"variant {self.variant!r} is not available for the stochastic method "
                    f"{self.method!r}: use 'fisher' or 'hessian' (its Stein estimator)"
                )
        _int("n", self.n, 2)
        _int("digits", self.digits, 1)
        _int("downscale", self.downscale, 1)
        if 28 % self.downscale:
            raise ValueError(f"downscale must divide 28 (1, 2, 4, 7, 14, 28); got {self.downscale}")
        _choice("model", self.model, MODELS[self.task])
        _int("hidden", self.hidden, 1)
        self.lr = _number("lr", self.lr, minimum=0.0, strict=True)
        if self.lr > _MAX_LR:
            raise ValueError(f"lr must be <= {_MAX_LR:g} (Adam moves every parameter by about lr per "
                             f"step; larger values overflow its update); got {self.lr!r}")
        _int("batch_size", self.batch_size, 1)
        _int("steps", self.steps, 1)
        if not isinstance(self.lr_milestones, (list, tuple)):
            raise ValueError(f"lr_milestones must be a list of steps; got {self.lr_milestones!r}")
        self.lr_milestones = [_int("lr_milestones[]", s, 1) for s in self.lr_milestones]
        if self.lr_milestones != sorted(set(self.lr_milestones)):
            raise ValueError(f"lr_milestones must be strictly increasing; got {self.lr_milestones}")
        self.lr_gamma = _number("lr_gamma", self.lr_gamma, minimum=0.0, strict=True)
        _int("eval_every", self.eval_every, 1)
        if self.eval_every > self.steps:
            raise ValueError(f"eval_every ({self.eval_every}) must be <= steps ({self.steps})")
        _int("val_sets", self.val_sets, 0 if self.task == "shortest_path" else 1)
        _int("test_sets", self.test_sets, 0 if self.task == "shortest_path" else 1)
        _int("train_size", self.train_size, 0)
        _choice("data", self.data, DATA[self.task])
        _int("synthetic_size", self.synthetic_size, 24)
        if self.task == "shortest_path" and self.data == "synthetic":
            total = sum(self.synthetic_splits())
            if total > self.synthetic_size:
                raise ValueError(f"train_size + val_sets + test_sets ({total}) "
                                 f"exceed synthetic_size ({self.synthetic_size})")
        _int("seed", self.seed, 0)
        _choice("dtype", self.dtype, DTYPES)
        _choice("loss_dtype", self.loss_dtype, ("",) + tuple(DTYPES))
        _choice("device", self.device, ("cpu", "cuda", "auto"))
        _int("cg_max_iter", self.cg_max_iter, 0)
        if self.cg_max_iter and (self.variant not in ("hessian", "gauss_newton") or self.damping != "absolute"):
            raise ValueError(
                f"cg_max_iter={self.cg_max_iter} caps a matrix-free (CG) Newton solve, which only "
                "variants 'hessian' and 'gauss_newton' with damping 'absolute' use; got variant "
                f"{self.variant!r}, damping {self.damping!r} (use cg_max_iter=0)"
            )
        self.clip_grad_norm = _number("clip_grad_norm", self.clip_grad_norm, minimum=0.0)
        return self

    def synthetic_splits(self) -> tuple[int, int, int]:
        """(train, val, test) map counts of synthetic terrain: the sizes given, else half the
        maps for training and the rest split evenly."""
        n = self.synthetic_size
        n_train = self.train_size or n // 2
        n_val = self.val_sets or (n - n_train) // 2
        n_test = self.test_sets or n - n_train - n_val
        return n_train, n_val, n_test

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Build (without validating) from a dict; unknown keys are an error."""
        if not isinstance(d, dict):
            raise ValueError(f"a run configuration must be a JSON object; got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown configuration field(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def identity(self) -> dict:
        """The fields that identify the run: :meth:`to_dict` without the later-added fields
        (:data:`LATER_DEFAULTS`) that hold their default."""
        d = self.to_dict()
        for key, default in LATER_DEFAULTS.items():
            if d[key] == default:
                del d[key]
        return d

    def digest(self) -> str:
        """SHA-256 (16 hex digits) of the canonical JSON of :meth:`identity` (validate first)."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def run_id(self) -> str:
        """A readable, stable directory name:
        ``task-method[-loss][-nN]-variant[-lamλ[b|r]][-cgK][-clipC][-lossBITS]-sSEED-HASH`` (loss when not the
        default BCE and n for ranking; ``b``/``r`` mark batch/relative damping; ``-loss64``: a float64
        loss (``loss_dtype``); HASH: the first 8
        hex digits of :meth:`digest`)."""
        parts = [self.task, self.method]
        if self.task == "ranking":
            if self.method_args.get("loss", "bce") != "bce":
                parts.append(self.method_args["loss"])
            parts.append(f"n{self.n}")
        parts.append(self.variant)
        if self.variant != "none":
            parts.append(f"lam{self.lam:g}" + {"relative": "r", "batch": "b"}.get(self.damping, ""))
        if self.cg_max_iter:
            parts.append(f"cg{self.cg_max_iter}")
        if self.clip_grad_norm:
            parts.append(f"clip{self.clip_grad_norm:g}")
        if self.loss_dtype:
            parts.append("loss" + self.loss_dtype.removeprefix("float"))
        parts.append(f"s{self.seed}")
        return "-".join(parts) + "-" + self.digest()[:8]


def protocol_config(task: str, protocol: str, **overrides: Any) -> RunConfig:
    """The configuration of a named protocol, with ``overrides`` applied and validated.

    Ranking (multi-digit MNIST, k = 4 digits per item, docs/PAPER.md §2):
        - ``paper``: the diffsort protocol — CNN at 28×112, Adam lr 10^−3.5, batch 100 sets,
          100,000 steps, evaluation every 1,000 steps on 1,000 validation sets, test (1,000
          sets) at the best validation exact match.
        - ``quick``: CPU-sized — MLP (2 × 256 hidden units) on 2× downscaled images (14×56),
          Adam lr 10^−3.5, batch 100, 30,000 steps, evaluation every 1,000 steps
          (docs/EXPERIMENTS.md has its measured accuracy and time).
        - ``tiny``: a seconds-long smoke test on synthetic digits (tests).

    Shortest path (terrain maps, 12×12 tiles):
        - ``paper``: ResNet18 stem + layer1, Adam 5e-4, batch 70, 50 epochs of 10,000 maps
          (7,150 steps), lr ×0.1 at epochs 30 and 40, evaluation every epoch on 1,000 maps.
        - ``quick``: a tile-wise small CNN (:class:`~.models.SmallCostCNN`), Adam 1e-3, batch 70,
          10 epochs of the 10,000 maps (1,430 steps), lr ×0.1 at epochs 6 and 8, evaluation
          every epoch on 500 validation and 500 test maps.
        - ``tiny``: a seconds-long smoke test on a few synthetic maps.
    """
    _choice("task", task, TASKS)
    _choice("protocol", protocol, PROTOCOLS[task])
    if task == "ranking":
        base = {
            "paper": dict(model="cnn", downscale=1, lr=10 ** -3.5, batch_size=100, steps=100_000,
                          eval_every=1000, val_sets=1000, test_sets=1000),
            "quick": dict(model="mlp", hidden=256, downscale=2, lr=10 ** -3.5, batch_size=100,
                          steps=30_000, eval_every=1000, val_sets=1000, test_sets=1000),
            "tiny": dict(model="mlp", hidden=32, downscale=4, lr=3e-3, batch_size=16, steps=20,
                         eval_every=10, val_sets=32, test_sets=32, data="synthetic",
                         synthetic_size=240),
        }[protocol]
    else:
        steps_per_epoch = {"paper": math.ceil(10_000 / 70)}
        base = {
            "paper": dict(method="bf_for", model="resnet_stem", lr=5e-4, batch_size=70,
                          steps=50 * steps_per_epoch["paper"],
                          lr_milestones=[30 * steps_per_epoch["paper"], 40 * steps_per_epoch["paper"]],
                          eval_every=steps_per_epoch["paper"], val_sets=0, test_sets=0,
                          train_size=0, data="terrain"),
            "quick": dict(method="bf_for", model="small_cnn", hidden=32, lr=1e-3, batch_size=70,
                          steps=10 * steps_per_epoch["paper"],
                          lr_milestones=[6 * steps_per_epoch["paper"], 8 * steps_per_epoch["paper"]],
                          eval_every=steps_per_epoch["paper"], val_sets=500, test_sets=500,
                          train_size=0, data="terrain"),
            "tiny": dict(method="bf_for", model="small_cnn", hidden=8, lr=3e-3, batch_size=8,
                         steps=6, eval_every=3, val_sets=8, test_sets=8, train_size=24,
                         data="synthetic", synthetic_size=48),
        }[protocol]
    return RunConfig.from_dict({"task": task, "protocol": protocol, **base, **overrides}).validate()


# ----------------------------------------------------------------------------------------------
def _check_method_args(task: str, method: str, args: dict) -> None:
    for key in ("tau", "power", "steepness", "beta", "sigma"):
        if key in args and not args[key] > 0:
            raise ValueError(f"method_args.{key} must be > 0; got {args[key]!r}")
    if "sigmoid" in args:
        _choice("method_args.sigmoid", args["sigmoid"], ("logistic", "logistic_phi", "cauchy"))
    if "samples" in args:
        _int("method_args.samples", args["samples"], 1)
    for key in ("iterations", "max_iterations"):
        if key in args:
            _int(f"method_args.{key}", args[key], 0)
    if task == "shortest_path" and "loss" in args:
        _choice("method_args.loss", args["loss"], ("l1", "l2", "smooth_l1"))
    if task == "ranking":
        _choice("method_args.loss", args["loss"], ("bce", "bce_clamp", "ce"))


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}; got {value!r}")


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


def _number(name: str, value: Any, minimum: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}; got {value!r}")
    return float(value)


def _coerce(name: str, value: Any, typ: type) -> Any:
    if typ is float:
        return _number(name, value, minimum=-math.inf)
    if typ is int:
        return _int(name, value, minimum=-(2**62))
    if not isinstance(value, typ):
        raise ValueError(f"{name} must be a {typ.__name__}; got {value!r}")
    return value
