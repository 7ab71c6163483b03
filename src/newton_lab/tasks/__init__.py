"""The harness's tasks, one module each: data, network, loss and metrics of one kind of run,
and the task's registration (its protocols and methods) in :mod:`newton_lab.registry`.

Importing this package registers the built-in tasks; :mod:`newton_lab.config` does so, hence
``import newton_lab``.
"""
from newton_lab.tasks import ranking, shortest_path, pyepo  # noqa: F401  (registration)
