"""newton_lab — the experiment harness of newton-losses: data sets, protocols, models, the
training loop, sweeps, reports, plots, benchmarks and the ``newton-losses`` command. It depends
on the library :mod:`newton_losses`, which never imports it.

- :mod:`.registry`: tasks, methods and variants — the one place names live (docs/EXTENDING.md).
- :mod:`.config`: :class:`RunConfig` and the named protocols (:func:`protocol_config`).
- :mod:`.models`: the protocols' networks; :mod:`.data`: MNIST, multi-digit sets, terrain.
- :mod:`.tasks.ranking`, :mod:`.tasks.shortest_path`: the tasks (data, network, loss, metrics)
  and their registrations.
- :mod:`.runner`: :func:`train` — one resumable, deterministic run in its own directory.
- :mod:`.custom`: :func:`register_custom_task` — your own model, data, loss and metrics as a
  task of the registry, trained by the same :func:`train` (docs/EXTENDING.md).
- :mod:`.distributed`: data parallelism under torchrun.
- :mod:`.sweep`: grids of runs in worker processes; :mod:`.report`: tables, tests and plots.
- :mod:`.gradients`: the gradient picture of a relaxed sorting loss vs its Newton loss.

Commands: ``newton-losses train | sweep | report | plot gradients`` (docs/EXPERIMENTS.md).
"""
from newton_lab.config import RunConfig, protocol_config
from newton_lab.runner import RunFailed, RunInterrupted, RunLocked, read_metrics, run_status, train
from newton_lab.custom import register_custom_task

__all__ = ["RunConfig", "protocol_config", "train", "read_metrics", "run_status", "RunFailed", "RunInterrupted",
           "RunLocked", "register_custom_task"]
