"""Your own model and data through the harness's runner: :func:`register_custom_task`.

The built-in tasks (``ranking``, ``shortest_path``) are modules of the package. A network, data
set and per-sample loss of your own become a task of the same registry with one call, without a
module in the package: every :class:`~newton_lab.config.RunConfig` field, :func:`~newton_lab.train`
(run directory, atomic files, resume with bit-identical metrics, gradient-spike count, the
optional float64 precision check), sweeps and reports then work with it as with the built-ins::

    import torch
    from newton_lab import protocol_config, register_custom_task, train

    register_custom_task(
        "blobs",
        model=lambda cfg: torch.nn.Sequential(torch.nn.Linear(8, cfg.hidden), torch.nn.ReLU(),
                                              torch.nn.Linear(cfg.hidden, 3)),
        train=(x_train, y_train), val=(x_val, y_val), test=(x_test, y_test),
        loss={"cross_entropy": lambda y, t: torch.nn.functional.cross_entropy(y, t, reduction="none")},
        metrics={"accuracy": lambda y, t: (y.argmax(1) == t).double().mean()},
        percent_metrics=("accuracy",),
        protocols={"default": dict(hidden=32, steps=300, eval_every=50, batch_size=32, lr=3e-3)},
    )
    train(protocol_config("blobs", "default", variant="fisher", lam=0.1), "runs/blobs-fisher")

The data live in the registering process: a run directory records the task's *name* (with the
rest of the configuration), so resuming a run, reporting on it, or a sweep's worker processes
need the same registration first — put it in a module and name it (``train --import MODULE``,
``report --import MODULE``, a sweep's ``"imports"``; docs/EXTENDING.md, "Your own model and
data").
"""
from __future__ import annotations

import contextlib
import inspect
import math
import numbers
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from newton_losses.curvature import CompositeLoss

from newton_lab import registry
from newton_lab.config import protocol_config

__all__ = ["register_custom_task", "CustomRun", "DEFAULT_PROTOCOL"]

#: RunConfig fields of every protocol of a custom task unless the protocol sets them (the
#: RunConfig defaults are the ranking protocol's 30,000 steps of 100 sets).
DEFAULT_PROTOCOL: Mapping[str, Any] = MappingProxyType(dict(
    steps=1000, eval_every=100, batch_size=64, lr=1e-3, val_sets=0, test_sets=0, train_size=0))

_DATA = "custom"  # the one value RunConfig.data takes for a custom task
_DEFAULT_MODEL = "default"  # RunConfig.model of a task given one model factory
_DEFAULT_LOSS = "loss"  # RunConfig.method of a task given one loss

Pair = tuple  # (x (N, ...), target (N, ...)) of tensors
Sampler = Callable[[int, torch.Generator], tuple]


def register_custom_task(
    name: str,
    *,
    model: Union[Callable[..., nn.Module], Mapping[str, Callable[..., nn.Module]]],
    train: Union[Pair, Sampler],
    val: Pair,
    test: Pair,
    loss: Union[Callable[..., Tensor], Mapping[str, Callable[..., Tensor]]],
    metrics: Mapping[str, Callable[[Tensor, Tensor], Any]],
    percent_metrics: Iterable[str] = (),
    protocols: Optional[Mapping[str, Mapping[str, Any]]] = None,
    title: Optional[str] = None,
    eval_batch_size: int = 1024,
    replace: bool = False,
) -> registry.Task:
    """Register a task built from your own model, data, loss and metrics; train it with
    ``newton_lab.train(protocol_config(name, "default", ...), run_dir)``.

    Args:
        name: the task's name (``[a-z0-9_]``): ``RunConfig.task``, the first part of run ids,
            ``train NAME`` on the command line.
        model: a factory of the network, ``model(cfg) -> nn.Module`` (``cfg``: the run's
            :class:`~newton_lab.config.RunConfig`, e.g. ``cfg.hidden``) or ``model() -> nn.Module``,
            mapping inputs ``x (B, ...)`` to outputs ``y (B, *out)`` with at least one dimension
            after the batch (``(B, m)``; ``(B, 1)`` for one output). Or a dict name -> factory:
            the names are the values of ``RunConfig.model`` (one factory is ``model="default"``).
            It is called after the run's seed is set, so initialization is reproducible.
        train: the training data, either a pair of tensors ``(x (N, ...), target (N, ...))``,
            visited in epochs (a random permutation each, drawn from the run's generator;
            ``RunConfig.train_size`` > 0 keeps the first ``train_size`` samples), or a sampler
            ``train(batch_size, generator) -> (x (B, ...), target (B, ...))`` that draws fresh
            batches using only ``generator`` for randomness (it is checkpointed; a sampler with
            randomness or state of its own cannot resume bit-identically).
        val, test: fixed evaluation sets, pairs of tensors ``(x (N, ...), target (N, ...))``
            (``RunConfig.val_sets`` / ``test_sets`` > 0 keep the first that many samples). The
            best validation evaluation (of the primary metric) selects the test metrics a
            report shows.
        loss: the per-sample loss ``loss(y (B, *out), target (B, ...)) -> (B,)``, differentiable
            in ``y`` (what :class:`newton_losses.NewtonLoss` wraps; a
            :class:`newton_losses.curvature.CompositeLoss` for ``variant="gauss_newton"``). Or a
            dict name -> loss: the names are the task's methods (``RunConfig.method``; one loss
            is ``method="loss"``). Methods with typed arguments: ``registry.register_method`` on
            this task.
        metrics: name -> ``metric(y (N, *out), target (N, ...)) -> number`` (a float, or a tensor
            of one element, or per-sample values ``(N,)``, averaged), evaluated on a whole split
            without gradients. The first is the primary metric: **higher is better** — the run
            keeps the evaluation with the highest validation value (for an error, return its
            negative, e.g. ``neg_mse``).
        percent_metrics: the metrics that are fractions in [0, 1], printed as percentages.
        protocols: protocol name -> RunConfig field values (``protocol_config(name, protocol)``);
            each starts from :data:`DEFAULT_PROTOCOL` (1,000 steps, evaluation every 100, batch
            64, Adam lr 1e-3, whole evaluation sets) and the first model and loss. Default: one
            protocol, ``"default"``.
        title: the heading of the task's report section (default: the name).
        eval_batch_size: samples per forward pass when evaluating.
        replace: replace an earlier registration of ``name`` (and its methods).

    Returns:
        The registered :class:`~newton_lab.registry.Task`.

    Raises:
        TypeError: a piece of the wrong kind (a model factory that is not callable, data that
            are not tensors, ...), naming it and what it must be.
        ValueError: data whose shapes do not fit (different sample counts of ``x`` and
            ``target``, evaluation inputs of another shape than the training inputs), unknown
            names, a protocol that does not validate, or a name already registered.

    The network's outputs, the loss and each metric are checked on a few validation samples
    when a run starts (without changing the run), so that a wrong shape or a metric that does
    not return a number is a ``ValueError`` before the first training step.
    """
    registry._check_name("task", name)
    models = _named_callables("model", model, _DEFAULT_MODEL, "a factory model(cfg) -> torch.nn.Module")
    for factory in models.values():
        _takes_argument(factory)  # a factory of more than the configuration is an error now
    losses = _named_callables("loss", loss, _DEFAULT_LOSS, "a per-sample loss loss(y, target) -> (B,)")
    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError("metrics must be a non-empty dict name -> metric(y, target) -> number (the first "
                        f"is the primary metric, higher is better); got {_kind(metrics)}")
    for key, fn in metrics.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metrics: names must be non-empty strings; got {key!r}")
        if not callable(fn):
            raise TypeError(f"metrics[{key!r}] must be callable, metric(y, target) -> number; got {_kind(fn)}")
    if isinstance(percent_metrics, str):
        percent_metrics = (percent_metrics,)
    percent_metrics = tuple(percent_metrics)
    unknown = [m for m in percent_metrics if m not in metrics]
    if unknown:
        raise ValueError(f"percent_metrics {unknown} are not among the metrics {list(metrics)}")
    if isinstance(eval_batch_size, bool) or not isinstance(eval_batch_size, int) or eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be an integer >= 1; got {eval_batch_size!r}")
    data = _Data(train, val, test)
    if protocols is None:
        protocols = {"default": {}}
    if not isinstance(protocols, Mapping) or not protocols:
        raise TypeError(f"protocols must be a non-empty dict name -> dict of RunConfig fields; got {_kind(protocols)}")
    first = {"model": next(iter(models)), "method": next(iter(losses)), "data": _DATA}
    full = {}
    for pname, fields in protocols.items():
        if not isinstance(pname, str) or not pname:
            raise TypeError(f"protocols: names must be non-empty strings; got {pname!r}")
        if not isinstance(fields, Mapping):
            raise TypeError(f"protocols[{pname!r}] must be a dict of RunConfig fields; got {_kind(fields)}")
        clash = sorted({"task", "protocol"} & set(fields))
        if clash:
            raise ValueError(f"protocols[{pname!r}]: {clash} are set by the task and protocol names, not in a protocol")
        full[pname] = {**DEFAULT_PROTOCOL, **first, **fields}

    spec = registry.Task(
        name=name,
        title=title or name,
        factory=_factory(models, metrics, data, eval_batch_size),
        protocols=full,
        models=tuple(models),
        data=(_DATA,),
        metrics=tuple(metrics),
        build_loss=_build_loss,
        random_batch=_random_batch(models, data),
        output_size=lambda cfg: math.prod(_output_shape(models, data, cfg)),
        percent_metrics=percent_metrics,
        min_eval_sets=0,
        epoch_size=None if data.sampler is not None else data.train_size,
        check=data.check,
    )
    saved = (dict(registry._REG.tasks), dict(registry._REG.methods))
    if name in registry._REG.tasks and not replace:
        raise ValueError(f"task {name!r} is already registered (pass replace=True to override)")
    try:
        if replace:  # the earlier registration's methods go with it
            for key in [k for k in registry._REG.methods if k[0] == name]:
                del registry._REG.methods[key]
        registry.register_task(spec, replace=replace)
        for lname, fn in losses.items():
            registry.register_method(registry.Method(
                name=lname, task=name, summary=f"the loss {_describe(fn)}", args={},
                build=(lambda fn: lambda args, ctx: fn)(fn), check=_composite_check(lname, fn)))
        for pname in full:  # every protocol must be a valid configuration
            try:
                protocol_config(name, pname)
            except ValueError as exc:
                raise ValueError(f"protocols[{pname!r}] is not a valid run configuration: {exc}") from None
    except BaseException:
        registry._REG.tasks.clear()
        registry._REG.tasks.update(saved[0])
        registry._REG.methods.clear()
        registry._REG.methods.update(saved[1])
        raise
    return spec


class CustomRun:
    """The task object of one run of a custom task (built by the runner; see
    :func:`register_custom_task`).

    Attributes:
        model: the network, ``x (B, ...) -> y (B, *out)``, on the run's device and dtype.
        loss_fn: the run's per-sample loss ``(y (B, *out), target (B, ...)) -> (B,)``.
        primary: the metric that selects the best evaluation (the first); metric_names: all.
    """

    def __init__(self, cfg, *, device: torch.device, dtype: torch.dtype, models: Mapping, metrics: Mapping,
                 data: "_Data", eval_batch_size: int, rank: int = 0) -> None:
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self._data, self._metrics, self._eval_batch_size = data, metrics, eval_batch_size
        self.metric_names = tuple(metrics)
        self.primary = self.metric_names[0]
        self.model = _build_model(models, cfg).to(device=device, dtype=dtype)
        # The noise of a stochastic method of your own (registry.BuildContext.generator), one
        # stream per data-parallel rank; checkpointed.
        self.noise = torch.Generator().manual_seed(cfg.seed * 7919 + 17 + rank * 1_000_003)
        self.method = registry.method(cfg.task, cfg.method)
        self.loss_fn, self._loss = _build_loss(cfg, self.noise)
        self.val = data.split("val", cfg.val_sets, device, dtype)
        self.test = data.split("test", cfg.test_sets, device, dtype)
        self._train = None if data.sampler is not None else data.split("train", cfg.train_size, None, None)
        self._buffer = torch.empty(0, dtype=torch.long)
        self._probe()

    # The runner's interface ---------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The next training batch ``(x (B, ...), target (B, ...))``."""
        if self._train is None:
            batch = self._data.sampler(batch_size, generator)
            x, target = _check_pair(batch, f"the train sampler's batch (batch_size={batch_size})",
                                    returned=True)
            if x.shape[0] != batch_size:
                raise ValueError(f"the train sampler returned {x.shape[0]} samples for batch_size={batch_size}; "
                                 "it must return (x (batch_size, ...), target (batch_size, ...))")
            return _cast(x, self.dtype), _cast(target, self.dtype)
        x, target = self._train
        while self._buffer.numel() < batch_size:  # epochs: one permutation after the other
            self._buffer = torch.cat([self._buffer, torch.randperm(x.shape[0], generator=generator)])
        index, self._buffer = self._buffer[:batch_size], self._buffer[batch_size:]
        return _cast(x[index], self.dtype), _cast(target[index], self.dtype)

    def outputs(self, model: nn.Module, x: Tensor) -> Tensor:
        """The network's outputs ``y (B, *out)``."""
        return model(x)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict:
        """Every metric on the whole ``split`` (``"val"`` or ``"test"``), as floats."""
        x, target = self.val if split == "val" else self.test
        y = torch.cat([model(x[i:i + self._eval_batch_size]) for i in range(0, x.shape[0], self._eval_batch_size)])
        return {name: _metric_value(name, fn(y, target), x.shape[0]) for name, fn in self._metrics.items()}

    def curvature(self, variant: str):
        """The ``NewtonLoss`` curvature argument of a registered variant."""
        return registry.curvature(self.method, self._loss, variant)

    def shared_data(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"buffer": self._buffer.clone(), "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._buffer = state["buffer"].clone()
        self.noise.set_state(state["noise"])

    # ---------------------------------------------------------------------------------------------
    def _probe(self) -> None:
        """Outputs, loss and metrics on a few validation samples: wrong shapes and metrics that
        return no number are errors before training (the global random state and the noise
        generator are left as they were, batch-norm statistics untouched)."""
        x, target = self.val
        k = min(16, x.shape[0])
        was_training, noise = self.model.training, self.noise.get_state()
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                task = f"task {self.cfg.task!r}"
                with _explained(f"{task}: the model {self.cfg.model!r} failed on validation inputs x of shape "
                                f"{tuple(x[:k].shape)} (dtype {x.dtype}): do the data fit the network?"):
                    y = self.model(x[:k])
                if not isinstance(y, Tensor) or not y.is_floating_point():
                    raise TypeError(f"{task}: the model must return a floating-point tensor "
                                    f"y (B, *out); it returned {_kind(y)}")
                if y.ndim < 2 or y.shape[0] != k:
                    raise ValueError(
                        f"{task}: the model returned outputs of shape {tuple(y.shape)} for "
                        f"{k} inputs; it must return y (B, *out) with at least one dimension after the "
                        "batch" + (" (for one output per sample return y.unsqueeze(-1), shape (B, 1))"
                                   if y.ndim == 1 else ""))
                with _explained(f"{task}: the loss {self.cfg.method!r} failed on outputs y of shape {tuple(y.shape)} "
                                f"and targets of shape {tuple(target[:k].shape)} (dtype {target.dtype})"):
                    out = self.loss_fn(y, target[:k])
                if not isinstance(out, Tensor) or tuple(out.shape) != (k,):
                    got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else _kind(out)
                    raise ValueError(
                        f"{task}: the loss {self.cfg.method!r} returned {got} for a batch "
                        f"of {k} (outputs {tuple(y.shape)}, targets {tuple(target[:k].shape)}); it must "
                        f"return one loss per sample, shape ({k},) (e.g. reduction='none', or "
                        ".flatten(1).sum(1) over the other dimensions)")
                for name, fn in self._metrics.items():
                    with _explained(f"{task}: the metric {name!r} failed on outputs y of shape {tuple(y.shape)} "
                                    f"and targets of shape {tuple(target[:k].shape)}"):
                        value = fn(y, target[:k])
                    _metric_value(name, value, k)
        finally:
            self.model.train(was_training)
            self.noise.set_state(noise)


# ------------------------------------------------------------------------------------------------
class _Data:
    """The data of a custom task, checked when it is registered."""

    def __init__(self, train: Any, val: Any, test: Any) -> None:
        self.sampler: Optional[Sampler] = None
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        if callable(train) and not isinstance(train, (tuple, list, Tensor)):
            self.sampler = train
        else:
            self.splits["train"] = _check_pair(train, "train", sampler_ok=True)
        self.splits["val"] = _check_pair(val, "val")
        self.splits["test"] = _check_pair(test, "test")
        ref_name = "train" if "train" in self.splits else "val"
        ref_x, ref_t = self.splits[ref_name]
        for split, (x, t) in self.splits.items():
            for what, a, b in (("inputs x", x, ref_x), ("targets", t, ref_t)):
                if a.shape[1:] != b.shape[1:]:
                    raise ValueError(
                        f"{split} {what} have shape {tuple(a.shape)} but {ref_name} {what} have "
                        f"{tuple(b.shape)}: every split's {what} must have one shape "
                        f"{_sample_shape(b)}, N the split's sample count")

    def train_size(self, cfg) -> int:
        return cfg.train_size or self.splits["train"][0].shape[0]

    def check(self, cfg) -> None:
        """RunConfig.validate's task check: the sizes asked for fit the data."""
        for field_, split in (("train_size", "train"), ("val_sets", "val"), ("test_sets", "test")):
            if split not in self.splits:
                if getattr(cfg, field_):
                    raise ValueError(f"{field_}={getattr(cfg, field_)}: task {cfg.task!r} samples its training "
                                     "batches from a function (no fixed training set); use train_size=0")
                continue
            have = self.splits[split][0].shape[0]
            if getattr(cfg, field_) > have:
                raise ValueError(f"{field_}={getattr(cfg, field_)} exceeds the {have} samples of the {split} "
                                 f"set of task {cfg.task!r} (0: all of them)")

    def split(self, split: str, size: int, device, dtype) -> tuple[Tensor, Tensor]:
        x, t = self.splits[split]
        if size:
            x, t = x[:size], t[:size]
        if device is not None:
            x, t = _cast(x.to(device), dtype), _cast(t.to(device), dtype)
        return x, t


def _check_pair(value: Any, what: str, sampler_ok: bool = False, returned: bool = False) -> tuple[Tensor, Tensor]:
    verb = "returned" if returned else "is"
    hint = " or a sampler train(batch_size, generator) -> (x, target)" if sampler_ok else ""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{what} must be a pair of tensors (x (N, ...), target (N, ...)){hint}; "
                        f"it {verb} {_kind(value)}")
    x, t = value
    for part, v in (("x", x), ("target", t)):
        if not isinstance(v, Tensor):
            raise TypeError(f"{what}: {part} must be a torch.Tensor (N, ...); got {_kind(v)} "
                            "(convert with torch.as_tensor)")
        if v.ndim == 0:
            raise ValueError(f"{what}: {part} must have a sample dimension (N, ...); got a 0-d tensor")
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"{what}: x has {x.shape[0]} samples (shape {tuple(x.shape)}) but target has "
                         f"{t.shape[0]} (shape {tuple(t.shape)}); sample i is x[i] with target[i]")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: no samples (x has shape {tuple(x.shape)})")
    return x, t


@contextlib.contextmanager
def _explained(what: str):
    """A failure of your code on the probe batch as a ValueError that says where (chained)."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _sample_shape(t: Tensor) -> str:
    return "(N, " + ", ".join(map(str, t.shape[1:])) + ")" if t.ndim > 1 else "(N,)"


def _cast(t: Tensor, dtype: Optional[torch.dtype]) -> Tensor:
    """Floating tensors to the run's dtype; integer ones (class labels) as they are."""
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def _metric_value(name: str, value: Any, n: int) -> float:
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return float(value.detach().reshape(()))
        if tuple(value.shape) == (n,) and not value.is_complex():
            return float(value.detach().double().mean())
        raise ValueError(f"metric {name!r} returned a tensor of shape {tuple(value.shape)} for {n} samples; "
                         f"it must return a number, a one-element tensor or per-sample values ({n},)")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"metric {name!r} returned {_kind(value)}; it must return a number (a float or a "
                     f"one-element tensor) or per-sample values ({n},), e.g. (y.argmax(1) == target).double().mean()")


def _named_callables(what: str, value: Any, default: str, expected: str) -> dict:
    named = dict(value) if isinstance(value, Mapping) else {default: value}
    if not named:
        raise ValueError(f"{what}: an empty dict; give {expected}, or a dict name -> one")
    for key, fn in named.items():
        where = f"{what}[{key!r}]" if isinstance(value, Mapping) else what
        if isinstance(value, Mapping):
            registry._check_name(what, key)
        if isinstance(fn, nn.Module) and what == "model":
            raise TypeError(f"{where} must be a factory that builds the network, e.g. lambda cfg: MyNet(), not "
                            "a network instance: each run (and each seed) builds its own")
        if not callable(fn):
            raise TypeError(f"{where} must be callable, {expected}"
                            + ("" if isinstance(value, Mapping) else " (or a dict name -> one)") + f"; got {_kind(fn)}")
    return named


def _build_model(models: Mapping, cfg) -> nn.Module:
    factory = models[cfg.model]
    net = factory(cfg) if _takes_argument(factory) else factory()
    if not isinstance(net, nn.Module):
        raise TypeError(f"task {cfg.task!r}: the model factory {cfg.model!r} returned {_kind(net)}; "
                        "it must return a torch.nn.Module")
    return net


def _takes_argument(fn: Callable) -> bool:
    """Whether ``fn`` can be called with one positional argument (a factory of ``cfg``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    params = list(sig.parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) > 1:
        raise TypeError(f"a model factory takes the run configuration or nothing, model(cfg) or model(); "
                        f"{_describe(fn)} requires {len(required)} arguments (bind the others, e.g. with a "
                        "lambda cfg: ...)")
    return bool(positional)


def _build_loss(cfg, generator: Optional[torch.Generator] = None):
    """(loss_fn, module) of a configuration: its method's loss (``Task.build_loss``)."""
    m = registry.method(cfg.task, cfg.method)
    loss = m.build(m.resolve_args(cfg.method_args), registry.BuildContext(variant=cfg.variant, generator=generator))
    return loss, loss


def _composite_check(name: str, fn: Callable) -> Callable:
    def check(cfg) -> None:
        if registry.variant(cfg.variant).composite and not isinstance(fn, CompositeLoss):
            raise ValueError(
                f"variant {cfg.variant!r} needs the loss as a newton_losses.CompositeLoss(inner, "
                f"outer) (the Gauss-Newton matrix is built from that split); the loss {name!r} of task "
                f"{cfg.task!r} is a plain function: register it as one, or use another variant")
    return check


def _output_shape(models: Mapping, data: _Data, cfg) -> tuple:
    """The network's output shape per sample (for benchmarks and tests: ``Task.output_size``)."""
    x = data.splits["val"][0][:1]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        net = _build_model(models, cfg).to(dtype=getattr(torch, cfg.dtype)).eval()
        return tuple(net(_cast(x, getattr(torch, cfg.dtype))).shape[1:])


def _random_batch(models: Mapping, data: _Data) -> Callable:
    def random_batch(cfg, N: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Random outputs ``(N, *out)`` and validation targets (benchmarks and tests)."""
        y = torch.randn((N,) + _output_shape(models, data, cfg), generator=generator)
        targets = data.splits["val"][1]
        return y, _cast(targets[torch.randint(targets.shape[0], (N,), generator=generator)], y.dtype)
    return random_batch


def _factory(models: Mapping, metrics: Mapping, data: _Data, eval_batch_size: int) -> Callable:
    def factory(cfg, *, device: torch.device, dtype: torch.dtype, rank: int = 0) -> CustomRun:
        return CustomRun(cfg, device=device, dtype=dtype, models=models, metrics=metrics, data=data,
                         eval_batch_size=eval_batch_size, rank=rank)
    return factory


def _kind(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r}" if isinstance(value, (str, int, float, bool)) or value is None \
        else f"a {type(value).__name__}"


def _describe(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
