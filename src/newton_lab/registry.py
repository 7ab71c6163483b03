"""The one place the harness's names live: tasks, methods and Newton variants.

Everything that knows what exists reads this registry — configuration validation
(:meth:`~newton_lab.config.RunConfig.validate`), task construction (:func:`~newton_lab.runner.train`),
the benchmarks, the demos, ``plot gradients``, run ids and report labels — so that adding a
task, a relaxation or a loss is one registration, and one name means the same thing in
``train``, ``sweep``, ``plot``, ``demo``, ``bench`` and the reports.

- A :class:`Task` (``"ranking"``, ``"shortest_path"``, ``"pto"``) builds the data, network and metrics of a
  run; its protocols are named sets of :class:`~newton_lab.config.RunConfig` defaults.
- A :class:`Method` belongs to one task: a relaxation or algorithmic loss with typed arguments
  (:class:`Arg`) and a ``build`` function that returns the loss module.
- A :class:`Variant` is how the loss's gradient reaches the network: ``"none"`` (the plain
  loss) or a curvature of the library's registry (:func:`newton_losses.register_curvature`):
  every curvature registered there is a variant here, under the same name — the harness keeps
  no second list.

Built-in tasks and their methods register themselves in their modules (:mod:`newton_lab.tasks`,
imported by :mod:`newton_lab.config`, hence by ``import newton_lab``). A name that is not
registered is a ``ValueError`` listing the registered ones.

A method is written ``NAME`` or ``NAME:KEY=VALUE,...`` wherever one string names it (the
``--relaxations`` of ``demo`` and ``plot gradients``, bench case labels), e.g.
``odd_even:sigmoid=cauchy``; ``train`` takes the same as ``--method NAME --arg KEY=VALUE``.

Extension (a new relaxation for the ranking task, from outside the package)::

    from newton_lab import registry
    registry.register_method(registry.Method(
        name="my_sort", task="ranking", summary="my relaxed sort",
        args={"tau": registry.Arg(float, 1.0, positive=True)},
        build=lambda args, ctx: MySort(tau=args["tau"]),   # a relaxation: scores -> P (N, n, n)
    ))
    train(protocol_config("ranking", "tiny", method="my_sort"), "runs/my_sort")
"""
from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from newton_losses.curvature import available_curvatures, get_curvature

__all__ = [
    "Arg",
    "BuildContext",
    "curvature",
    "Method",
    "Task",
    "Variant",
    "column_value",
    "format_spec",
    "import_extensions",
    "is_percent",
    "method",
    "methods",
    "own_estimator",
    "parse_spec",
    "register_method",
    "register_alias",
    "register_task",
    "task",
    "tasks",
    "variant",
    "variants",
]


_NO_LEGACY = object()


@dataclass(frozen=True)
class Arg:
    """One argument of a method: its type, default and allowed values.

    Attributes:
        type: ``float``, ``int``, ``str`` or ``bool``; values are coerced and checked.
        default: the value a configuration gets when it does not set the argument.
        choices: the allowed values (strings), if restricted.
        positive: numbers must be > 0; minimum: numbers must be >= this.
        legacy: for an argument whose default changed after runs were recorded (or that was
            added later), the value those runs had: it is left out of report labels and run ids,
            so theirs do not change; every other value is shown in both (ranking ``loss``:
            ``"bce"``). Arguments without one are shown in labels and never in run ids.
        same_as: value -> another value that defines the same loss in exact arithmetic but is
            computed differently (ranking ``loss``: ``{"bce_exact": "bce"}``); reports compare a
            baseline with such a value against the baseline with the other one, as a control.
        help: one line for ``--help`` texts.
        below: numbers must be < this (with the reason in ``below_why``, for the error).
        below_why: why the bound, one clause.
    """

    type: type
    default: Any
    choices: Optional[tuple] = None
    positive: bool = False
    minimum: Optional[float] = None
    legacy: Any = _NO_LEGACY
    same_as: Mapping[Any, Any] = field(default_factory=dict, hash=False)
    help: str = ""
    below: Optional[float] = None
    below_why: str = ""

    def named_in_id(self, value: Any) -> bool:
        """Whether a run id names this argument's ``value`` (see ``legacy``)."""
        return self.legacy is not _NO_LEGACY and value != self.legacy

    def shown(self, value: Any) -> bool:
        """Whether a report label shows this argument's ``value`` (all but the legacy one)."""
        return self.legacy is _NO_LEGACY or value != self.legacy

    def coerce(self, name: str, value: Any) -> Any:
        """The value as this argument's type, or a ``ValueError`` naming ``name``."""
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    self.type is int and not isinstance(value, int)):
                raise ValueError(f"{name} must be {'an integer' if self.type is int else 'a number'}; "
                                 f"got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite; got {value!r}")
            value = self.type(value)
            if self.positive and not value > 0:
                raise ValueError(f"{name} must be > 0; got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{name} must be >= {self.minimum:g}; got {value!r}")
            if self.below is not None and not value < self.below:
                why = f" ({self.below_why})" if self.below_why else ""
                raise ValueError(f"{name} must be < {self.below:g}{why}; got {value!r}")
        elif not isinstance(value, self.type):
            raise ValueError(f"{name} must be a {self.type.__name__}; got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{name} must be one of {self.choices}; got {value!r}")
        return value


@dataclass(frozen=True)
class BuildContext:
    """What a method's ``build`` may need besides its arguments.

    Attributes:
        n: ranking set size (items per sample), or None.
        variant: the Newton variant the loss is built for (a loss may offer another form for
            Gauss-Newton, e.g. ``RelaxedShortestPathLoss.composite()``).
        generator: the noise generator of stochastic losses (checkpointed by the task).
        problem: what the task's losses solve, for tasks whose methods need it (predict-then-
            optimize: a :class:`~newton_lab.tasks.pyepo.Problem`, PyEPO's optModel and a
            batched solver), or None.
    """

    n: Optional[int] = None
    variant: str = "none"
    generator: Any = None
    problem: Any = None


@dataclass(frozen=True)
class Method:
    """A relaxation or algorithmic loss of one task.

    Attributes:
        name: the registry name (``[a-z0-9_]``), used in configurations and run ids.
        task: the task it belongs to.
        summary: one line for ``--help`` texts and docs.
        args: argument name -> :class:`Arg`.
        build: ``build(args, ctx) -> module`` with the validated arguments and a
            :class:`BuildContext`. What the module is depends on the task (ranking: a relaxation
            ``scores (N, n) -> P (N, n, n)``; shortest path: a loss ``(costs, paths) -> (N,)``).
        variants: the Newton variants it supports (None: all registered).
        stochastic: draws Monte-Carlo samples from the task's noise generator; its
            ``"hessian"`` variant uses the module's own estimator (``module.hessian_estimator()``),
            and its ``"gauss_newton"`` variant, where the method supports it, the module's
            ``gauss_newton_estimator()``.
        check: ``check(cfg)`` raises ``ValueError`` for combinations the arguments alone do not
            rule out (e.g. a variant with a damping this method cannot use).
    """

    name: str
    task: str
    summary: str
    args: Mapping[str, Arg]
    build: Callable[[dict, BuildContext], Any]
    variants: Optional[tuple] = None
    stochastic: bool = False
    check: Optional[Callable[[Any], None]] = None

    def defaults(self) -> dict:
        return {k: a.default for k, a in self.args.items()}

    def resolve_args(self, given: Mapping[str, Any]) -> dict:
        """``given`` completed with defaults, coerced and checked; unknown names are an error."""
        if not isinstance(given, Mapping):
            raise ValueError(f"method_args must be a dict; got {type(given).__name__}")
        unknown = sorted(set(given) - set(self.args))
        if unknown:
            raise ValueError(f"method_args: unknown argument(s) {unknown} for method {self.name!r}; "
                             f"it takes {sorted(self.args)}")
        return {k: a.coerce(f"method_args.{k}", given.get(k, a.default)) for k, a in self.args.items()}

    def supports(self, variant_name: str) -> bool:
        return self.variants is None or variant_name in self.variants

    def label(self, args: Mapping[str, Any]) -> str:
        """``name(k=v,...)`` as the reports write it: every argument but hidden defaults."""
        shown = {k: v for k, v in args.items() if k not in self.args or self.args[k].shown(v)}
        return f"{self.name}({','.join(f'{k}={_fmt(v)}' for k, v in shown.items())})"


@dataclass(frozen=True)
class Task:
    """A kind of training run: data, network, loss and metrics.

    Attributes:
        name: registry name, used in configurations and run ids (``shortest_path``); the command
            line writes it with hyphens (``train shortest-path``).
        title: heading of the task's report section.
        factory: ``factory(cfg, device=, dtype=, **kwargs)`` -> the task object (data, ``model``,
            ``loss_fn``, ``sample``, ``outputs``, ``evaluate``, ``curvature``; see
            :class:`newton_lab.tasks.ranking.RankingTask`).
        protocols: protocol name -> RunConfig field values (``protocol_config``).
        models, data: the values ``RunConfig.model`` and ``RunConfig.data`` may take.
        metrics: evaluation metrics, the primary one (model selection) first, fractions.
        percent_metrics: those the reports print as percentages.
        columns: configuration fields shown as report columns and in run ids (ranking: ``n``).
        column_note: caption text for the report's extra metric columns.
        min_eval_sets: the least ``val_sets``/``test_sets`` (0 = "the whole split" allowed).
        epoch_size: ``epoch_size(cfg) -> int``: training samples per epoch, for tasks that visit
            a fixed training set in epochs (``train --epochs`` applies); None: fresh samples.
        check: ``check(cfg)`` raises ``ValueError`` for task-specific constraints.
        build_loss: ``build_loss(cfg, generator) -> (loss_fn, module)``: the loss a run trains
            through (``loss_fn``, what ``NewtonLoss`` wraps) and the method's module, without the
            task's data or network (benchmarks build it alone).
        random_batch: ``random_batch(cfg, N, generator) -> (y, target)``: random network outputs
            and targets of the loss's shapes, for benchmarks and tests without data.
        output_size: ``output_size(cfg) -> m``, the network's outputs per sample.
        args: name -> :class:`Arg`, the task's own configuration (``RunConfig.task_args``: e.g.
            the predict-then-optimize problem and its data generator's degree); defaults filled
            in and values checked by ``RunConfig.validate``. Names must not be RunConfig fields.
            ``columns`` may name them.
        lower_is_better: the metrics for which lower is better (an error, a regret); the best
            evaluation of a run is then the one with the *lowest* validation primary metric, and
            the reports say so. Every other metric: higher is better.
        id_parts: ``id_parts(cfg) -> [str, ...]``: the parts of a run id between the method and
            the variant (default: ``f"{column}{value}"`` for each of ``columns``).
        requires: modules the task needs beyond the harness's dependencies (``("pyepo",)``);
            tests skip the task where one is missing.
    """

    name: str
    title: str
    factory: Callable[..., Any]
    protocols: Mapping[str, Mapping[str, Any]]
    models: tuple
    data: tuple
    metrics: tuple
    build_loss: Callable[..., Any]
    random_batch: Callable[..., Any]
    output_size: Callable[[Any], int]
    percent_metrics: tuple = ()
    columns: tuple = ()
    column_note: str = ""
    min_eval_sets: int = 1
    epoch_size: Optional[Callable[[Any], int]] = None
    check: Optional[Callable[[Any], None]] = None
    args: Mapping[str, Arg] = field(default_factory=dict, hash=False)
    lower_is_better: tuple = ()
    id_parts: Optional[Callable[[Any], list]] = None
    requires: tuple = ()

    @property
    def cli_name(self) -> str:
        return self.name.replace("_", "-")

    def resolve_args(self, given: Mapping[str, Any]) -> dict:
        """``given`` task arguments completed with defaults, coerced and checked; unknown names
        are an error (a task without arguments takes none: ``{}``)."""
        if not isinstance(given, Mapping):
            raise ValueError(f"task_args must be a dict; got {type(given).__name__}")
        unknown = sorted(set(given) - set(self.args))
        if unknown:
            takes = f"it takes {sorted(self.args)}" if self.args else "it takes none (use {})"
            raise ValueError(f"task_args: unknown argument(s) {unknown} for task {self.name!r}; {takes}")
        return {k: a.coerce(f"task_args.{k}", given.get(k, a.default)) for k, a in self.args.items()}

    def better(self, metric: str, new: float, old: float) -> bool:
        """Whether ``new`` is strictly better than ``old`` for ``metric`` (lower for the metrics
        in ``lower_is_better``, higher for the others)."""
        return new < old if metric in self.lower_is_better else new > old


@dataclass(frozen=True)
class Variant:
    """How a run trains through its loss (derived from the library's curvature registry).

    Attributes:
        name: ``"none"`` or a curvature name (``"fisher"``, ...), used in configurations and
            run ids.
        curvature: the :class:`~newton_losses.NewtonLoss` curvature, or None for the plain loss.
        label: the reports' name (``NL-fisher``; ``baseline`` for none).
        matrix_free: its provider can be solved by conjugate gradients (``cg_max_iter`` applies).
        composite: its provider needs the loss as a ``CompositeLoss`` (Gauss-Newton).
    """

    name: str
    curvature: Optional[str]
    label: str
    matrix_free: bool = False
    composite: bool = False


@dataclass
class _Registry:
    tasks: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)  # (task, name) -> Method
    aliases: dict = field(default_factory=dict)  # earlier spec -> spec


_REG = _Registry()


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not name or not all(c.isalnum() or c == "_" for c in name) \
            or name != name.lower():
        raise ValueError(f"{kind} name must be a non-empty lower-case identifier ([a-z0-9_]); got {name!r}")


def register_task(spec: Task, *, replace: bool = False) -> Task:
    """Register a task; ``replace=True`` overrides an existing one of the same name."""
    if not isinstance(spec, Task):
        raise TypeError(f"register_task takes a registry.Task; got {type(spec).__name__}")
    _check_name("task", spec.name)
    for k, a in spec.args.items():
        _check_name("task argument", k)
        a.coerce(f"{spec.name}: default of task_args.{k}", a.default)
    if spec.name in _REG.tasks and not replace:
        raise ValueError(f"task {spec.name!r} is already registered (pass replace=True to override)")
    _REG.tasks[spec.name] = spec
    return spec


def register_method(spec: Method, *, replace: bool = False) -> Method:
    """Register a method of an already registered task."""
    if not isinstance(spec, Method):
        raise TypeError(f"register_method takes a registry.Method; got {type(spec).__name__}")
    _check_name("method", spec.name)
    task(spec.task)  # raises for an unknown task, listing the known ones
    if (spec.task, spec.name) in _REG.methods and not replace:
        raise ValueError(f"method {spec.name!r} of task {spec.task!r} is already registered "
                         "(pass replace=True to override)")
    for k, a in spec.args.items():
        _check_name("argument", k)
        a.coerce(f"{spec.name}: default of {k}", a.default)
    _REG.methods[(spec.task, spec.name)] = spec
    return spec


def register_alias(old: str, new: str) -> None:
    """An earlier name of a method spec, accepted by :func:`parse_spec` with a warning."""
    _REG.aliases[old] = new


def import_extensions(modules) -> None:
    """Import modules that register tasks, methods or variants of their own (``train --import``,
    a sweep's ``"imports"``); a module that cannot be imported is a ``ValueError``."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"cannot import the extension module {name!r} ({exc}); it must be "
                             "importable by this Python (installed, or its folder on PYTHONPATH)") from exc


def tasks() -> tuple:
    """Names of the registered tasks."""
    return tuple(_REG.tasks)


def task(name: str) -> Task:
    """The task registered as ``name`` (hyphens read as underscores)."""
    key = name.replace("-", "_") if isinstance(name, str) else None
    if key not in _REG.tasks:
        raise ValueError(f"task {name!r} is not registered; registered tasks: {', '.join(_REG.tasks)}")
    return _REG.tasks[key]


def methods(task_name: str) -> tuple:
    """Names of the methods registered for a task."""
    t = task(task_name)
    return tuple(n for (tk, n) in _REG.methods if tk == t.name)


def method(task_name: str, name: str) -> Method:
    """The method ``name`` of a task."""
    t = task(task_name)
    if not isinstance(name, str) or (t.name, name) not in _REG.methods:
        raise ValueError(f"method {name!r} is not registered for task {t.name!r}; registered "
                         f"methods: {', '.join(methods(t.name))}")
    return _REG.methods[(t.name, name)]


_BASELINE = Variant("none", None, "baseline")


def variants() -> tuple:
    """Names of the variants: ``"none"``, then every curvature registered with the library."""
    return ("none",) + available_curvatures()


def variant(name: str) -> Variant:
    """The variant ``name``: the baseline or a registered curvature."""
    if name == "none":
        return _BASELINE
    if not isinstance(name, str) or name not in available_curvatures():
        raise ValueError(f"variant {name!r} is not registered; registered variants: {', '.join(variants())} "
                         "(a curvature of your own: newton_losses.register_curvature)")
    provider = get_curvature(name)
    return Variant(name, name, f"NL-{name}", matrix_free="cg" in provider.solvers,
                   composite=provider.needs_composite)


def own_estimator(spec: Method, variant_name: str) -> bool:
    """Whether the variant is the method's module's own estimator (matrix-free, solved by
    conjugate gradients) rather than a registered curvature: a stochastic method's ``"hessian"``
    and ``"gauss_newton"`` (see :func:`curvature`)."""
    return spec.stochastic and variant_name in ("hessian", "gauss_newton")


def curvature(spec: Method, module: Any, variant_name: str) -> Any:
    """The ``NewtonLoss`` curvature argument of a variant for a loss built by ``spec``: a
    stochastic method's ``"hessian"`` is its module's own estimator (``hessian_estimator()``),
    and its ``"gauss_newton"`` the module's ``gauss_newton_estimator()`` where it has one; every
    other variant its registered curvature name (None for ``"none"``)."""
    if own_estimator(spec, variant_name):
        if variant_name == "hessian":
            return module.hessian_estimator()
        if hasattr(module, "gauss_newton_estimator"):
            return module.gauss_newton_estimator()
    return variant(variant_name).curvature


def column_value(config: Any, name: str) -> Any:
    """The value of a report column / run-id part ``name`` of a configuration (a ``RunConfig`` or
    its dict): a task argument (``task_args[name]``) if the configuration has one of that name,
    else the field ``name``."""
    if isinstance(config, Mapping):
        task_args = config.get("task_args") or {}
        return task_args[name] if name in task_args else config[name]
    task_args = getattr(config, "task_args", None) or {}
    return task_args[name] if name in task_args else getattr(config, name)


def is_percent(metric: str) -> bool:
    """Whether ``metric`` (a fraction) is printed as a percentage (a registered task says so)."""
    return any(metric in t.percent_metrics for t in _REG.tasks.values())


def parse_spec(task_name: str, spec: str) -> tuple[str, dict]:
    """``"odd_even:sigmoid=cauchy,steepness=5"`` -> ("odd_even", {"sigmoid": "cauchy", "steepness": 5.0}).

    Values are converted to the argument's type; the method and the argument names must be
    registered. An earlier name (:func:`register_alias`) is accepted with a ``FutureWarning``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a method spec must be a non-empty string NAME[:KEY=VALUE,...]; got {spec!r}")
    spec = spec.strip()
    if spec in _REG.aliases:
        new = _REG.aliases[spec]
        warnings.warn(f"{spec!r} is an earlier name of the method spec {new!r}; use {new!r}",
                      FutureWarning, stacklevel=2)
        spec = new
    name, _, rest = spec.partition(":")
    m = method(task_name, name)
    args: dict = {}
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, text = pair.partition("=")
        if not eq:
            raise ValueError(f"method spec {spec!r}: {pair!r} is not KEY=VALUE")
        if key not in m.args:
            raise ValueError(f"method spec {spec!r}: unknown argument {key!r}; {name} takes "
                             f"{sorted(m.args)}")
        args[key] = _convert(m.args[key], key, text)
    return name, m.resolve_args(args)


def format_spec(task_name: str, name: str, args: Mapping[str, Any]) -> str:
    """The spec string of a method with ``args``: arguments that differ from their defaults only
    (``format_spec`` and :func:`parse_spec` are inverse up to defaults)."""
    m = method(task_name, name)
    diff = {k: v for k, v in m.resolve_args(args).items() if v != m.args[k].default}
    return name + (":" + ",".join(f"{k}={_fmt(v)}" for k, v in diff.items()) if diff else "")


def _convert(arg: Arg, key: str, text: str) -> Any:
    if arg.type is str:
        return text
    if arg.type is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} must be true or false; got {text!r}")
        return text.lower() in ("true", "1")
    try:
        return arg.type(text)
    except ValueError:
        raise ValueError(f"{key} must be {'an integer' if arg.type is int else 'a number'}; "
                         f"got {text!r}") from None


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)

