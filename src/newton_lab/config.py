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

from newton_lab import registry
import newton_lab.tasks  # noqa: F401  (registers the built-in tasks and their methods)

__all__ = ["RunConfig", "protocol_config", "LATER_DEFAULTS"]

DAMPINGS = ("absolute", "relative", "batch")
PROJECTIONS = ("abs", "clamp", "tikhonov")
DTYPES = ("float32", "float64")

_MAX_LR = 1e6

#: Fields added to :class:`RunConfig` after the first runs were committed, with their defaults.
#: A run whose field holds the default has the id it had before the field existed; a new field
#: goes here (and must default to the behaviour runs had without it).
LATER_DEFAULTS: dict[str, Any] = {"cg_max_iter": 0, "clip_grad_norm": 0.0, "loss_dtype": "",
                                  "precision_every": 0}


@dataclass
class RunConfig:
    """Everything that determines one training run.

    Attributes (grouped):
        task: ``"ranking"``, ``"shortest_path"`` or ``"pto"`` (a registered task); protocol: the
            named protocol the defaults came from (``"paper"``, ``"quick"``, ``"tiny"``, ...;
            recorded, not interpreted).
        method, method_args: the relaxation / algorithm and its parameters (see
            ``newton-losses train --help`` and :mod:`newton_lab.registry`; missing arguments get
            defaults).
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
        precision_every: every k-th step, evaluate the batch's per-sample loss gradients also in
            float64 (:func:`newton_losses.check_precision`, two more passes of the loss) and log
            the checks, sick samples and worst relative error per interval in metrics.jsonl
            (``"precision"``); 0 = off. It does not change training.
        task_args: the task's own settings (``registry.Task.args``; predict-then-optimize:
            ``problem``, ``deg``, ``noise``, ``features``, ``solver``, ...; see
            docs/PYEPO.md); completed with the task's defaults by :meth:`validate`. ``{}`` for
            the tasks without any (ranking, shortest path), and then left out of :meth:`digest`.

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
    precision_every: int = 0
    task_args: dict = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Check every field; fill in method-argument defaults. Returns ``self``.

        Raises:
            ValueError: naming the field, its value and what was expected.
        """
        task = registry.task(self.task)
        _choice("protocol", self.protocol, tuple(task.protocols))
        self.task_args = task.resolve_args(self.task_args)
        method = registry.method(task.name, self.method)
        self.method_args = method.resolve_args(self.method_args)
        _choice("variant", self.variant, registry.variants())
        if not method.supports(self.variant):
            kind = "stochastic method" if method.stochastic else "method"
            raise ValueError(
                f"variant {self.variant!r} is not available for the {kind} {self.method!r}: use one "
                f"of {method.variants}" + (" ('hessian' is its Stein estimator)" if method.stochastic else "")
            )
        self.lam = _number("lam", self.lam, minimum=0.0)
        estimator = registry.own_estimator(method, self.variant)  # matrix-free: absolute damping only
        if self.variant != "none" and self.lam == 0.0:
            raise ValueError(
                f"lam must be > 0 for variant {self.variant!r} (the harness trains Newton variants "
                "with damping: the built-in tasks' curvatures are singular, e.g. along the all-ones "
                "vector of a ranking, and an undamped step on a task of your own can be arbitrarily "
                "large); got lam=0. Use e.g. "
                + ("lam=1 (damping 'absolute': this estimator is matrix-free)" if estimator
                   else "lam=0.1 with damping='batch'")
            )
        _choice("damping", self.damping, DAMPINGS)
        if estimator and self.damping != "absolute":
            kind = "Stein" if self.variant == "hessian" else "Gauss-Newton"
            raise ValueError(
                f"damping={self.damping!r} scales λ by the curvature matrix, but the {self.variant!r} of "
                f"the stochastic method {self.method!r} is its own {kind} estimator, matrix-free (solved "
                "by conjugate gradients): use damping='absolute' (e.g. lam=1)"
            )
        _choice("projection", self.projection, PROJECTIONS)
        if self.variant == "none":
            # The baseline ignores these; canonical values make equal runs share one id.
            self.lam, self.damping, self.projection = 0.0, "absolute", "abs"
        if method.check is not None:
            method.check(self)
        _int("n", self.n, 2)
        _int("digits", self.digits, 1)
        _int("downscale", self.downscale, 1)
        if 28 % self.downscale:
            raise ValueError(f"downscale must divide 28 (1, 2, 4, 7, 14, 28); got {self.downscale}")
        _choice("model", self.model, task.models)
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
        _int("val_sets", self.val_sets, task.min_eval_sets)
        _int("test_sets", self.test_sets, task.min_eval_sets)
        _int("train_size", self.train_size, 0)
        _choice("data", self.data, task.data)
        _int("synthetic_size", self.synthetic_size, 24)
        if task.check is not None:
            task.check(self)
        _int("seed", self.seed, 0)
        _choice("dtype", self.dtype, DTYPES)
        _choice("loss_dtype", self.loss_dtype, ("",) + tuple(DTYPES))
        _choice("device", self.device, ("cpu", "cuda", "auto"))
        _int("cg_max_iter", self.cg_max_iter, 0)
        if self.cg_max_iter and (not registry.variant(self.variant).matrix_free or self.damping != "absolute"):
            raise ValueError(
                f"cg_max_iter={self.cg_max_iter} caps a matrix-free (CG) Newton solve, which only "
                "variants 'hessian' and 'gauss_newton' with damping 'absolute' use; got variant "
                f"{self.variant!r}, damping {self.damping!r} (use cg_max_iter=0)"
            )
        self.clip_grad_norm = _number("clip_grad_norm", self.clip_grad_norm, minimum=0.0)
        _int("precision_every", self.precision_every, 0)
        if self.precision_every and method.stochastic:
            raise ValueError(
                f"precision_every={self.precision_every}: the stochastic method {self.method!r} draws "
                "random samples, so its float32 and float64 evaluations cannot be compared; use 0"
            )
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
        (:data:`LATER_DEFAULTS`) that hold their default, and without ``task_args`` when it is
        empty (the tasks without arguments)."""
        d = self.to_dict()
        for key, default in LATER_DEFAULTS.items():
            if d[key] == default:
                del d[key]
        if not d["task_args"]:  # a task without arguments: ids as before the field existed
            del d["task_args"]
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
        task, method = registry.task(self.task), registry.method(self.task, self.method)
        parts = [self.task, self.method]
        # Arguments with a legacy value name the run when they differ from it (ranking: the loss).
        parts += [str(v) for k, v in self.method_args.items() if k in method.args and method.args[k].named_in_id(v)]
        if task.id_parts is not None:
            parts += list(task.id_parts(self))
        else:
            parts += [f"{col}{registry.column_value(self, col)}" for col in task.columns]
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

    Predict-then-optimize (``pto``, PyEPO's problems; docs/PYEPO.md, "The harness task"):
        - ``pyepo``: PyEPO's tutorial settings — linear model, Adam 10^-2, batch 32, 20 epochs
          of 1,000 training instances, 200 validation and 1,000 test instances.
        - ``quick``: the same with 5 epochs and 500 test instances.
        - ``tiny``: a seconds-long smoke test (64 training instances).
    """
    spec = registry.task(task)
    _choice("protocol", protocol, tuple(spec.protocols))
    base = dict(spec.protocols[protocol])
    if isinstance(base.get("task_args"), dict) and isinstance(overrides.get("task_args"), dict):
        # task arguments override one by one (a protocol's own settings stay unless named)
        overrides = {**overrides, "task_args": {**base["task_args"], **overrides["task_args"]}}
    return RunConfig.from_dict({"task": spec.name, "protocol": protocol, **base, **overrides}).validate()


# ----------------------------------------------------------------------------------------------
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
