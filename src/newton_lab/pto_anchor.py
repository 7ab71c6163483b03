"""The anchor of the predict-then-optimize task: our harness against PyEPO's own training loop.

For SPO+ and PFYL with PyEPO's linear model on its grid shortest path, :func:`pyepo_loop` trains
as PyEPO's documentation and tutorial do (``docs .../content/examples/training``, notebook *03
Training and Testing*): ``optDataset`` (true solutions by the OR-Tools optModel), a shuffled
``DataLoader`` of batch 32, ``nn.Linear(p, d)``, ``torch.optim.Adam(lr=1e-2)``,
``pyepo.func.SPOPlus(optmodel)`` (``loss(cp, c, w, z)``) or
``pyepo.func.perturbedFenchelYoung(optmodel)`` (``loss(cp, w)``; ``n_samples=10``, ``sigma=1``, its
defaults), a fixed number of epochs, then ``pyepo.metric.regret`` on the test set — all from
the installed package. :func:`harness_run` trains the same setting with
:func:`newton_lab.train` (task ``pto``, protocol ``pyepo``: the grid dynamic program as the
solver, our own SPO+ and :class:`~newton_losses.integrations.pyepo.PFYLoss`, the runner's
batches). Both see the same data (one ``genData`` call of ``n_train + n_val + n_test`` instances
with the run's seed, split in that order; PyEPO's loop ignores the validation rows) and the same
initialization (``torch.manual_seed(seed)``, then ``nn.Linear(p, d)``); the batch order and the
perturbations differ, so the two agree in distribution over seeds, not run by run.

``tests/test_pto_anchor.py`` runs it at a small size; ``scripts/pto_anchor.py`` at benchmark
size (a table).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path
import numpy as np
import torch
from torch import nn

__all__ = ["ANCHOR_METHODS", "anchor_config", "generate", "pyepo_loop", "harness_run"]

#: The losses anchored (our method name -> PyEPO's module).
ANCHOR_METHODS = {"spo_plus": "SPOPlus", "pfyl": "perturbedFenchelYoung"}
GRID = (5, 5)
FEATURES = 5


def anchor_config(method: str, *, seed: int, deg: int, noise: float = 0.5, n_train: int = 1000,
                  n_val: int = 200, n_test: int = 1000, epochs: int = 20, lr: float = 1e-2,
                  batch_size: int = 32):
    """The ``pto`` run configuration of one anchor cell (protocol ``pyepo`` with these sizes:
    ``epochs × ⌈n_train / batch_size⌉`` steps, an evaluation per epoch)."""
    from newton_lab.config import protocol_config

    if method not in ANCHOR_METHODS:
        raise ValueError(f"method must be one of {tuple(ANCHOR_METHODS)}; got {method!r}")
    per_epoch = math.ceil(n_train / batch_size)
    return protocol_config("pto", "pyepo", method=method, seed=seed, lr=lr, batch_size=batch_size,
                           train_size=n_train, val_sets=n_val, test_sets=n_test, steps=epochs * per_epoch,
                           eval_every=per_epoch, task_args={"deg": deg, "noise": noise})


def generate(seed: int, deg: int, noise: float, n_train: int, n_val: int, n_test: int) -> dict:
    """PyEPO's shortest-path data of one anchor cell: ``{"train" | "val" | "test": (x float32 (n, p),
    c float32 (n, d))}`` from one ``genData`` call (seed = the run's seed), split in that order."""
    import pyepo

    n = n_train + n_val + n_test
    x, c = pyepo.data.shortestpath.genData(n, FEATURES, GRID, deg=deg, noise_width=noise, seed=seed)
    x, c = np.asarray(x, dtype=np.float32), np.asarray(c, dtype=np.float32)
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    return {s: (x[i:j], c[i:j]) for s, (i, j) in cuts.items()}


class LinearRegression(nn.Module):
    """PyEPO's tutorial model: ``nn.Linear(num_feat, num_cost)``."""

    def __init__(self, p: int, d: int) -> None:
        super().__init__()
        self.linear = nn.Linear(p, d)

    def forward(self, x):
        return self.linear(x)


def pyepo_loop(method: str, data: dict, *, seed: int, epochs: int = 20, lr: float = 1e-2,
               batch_size: int = 32) -> float:
    """PyEPO's own training loop (module docstring); returns the test set's normalized regret
    after the last epoch (``pyepo.metric.regret``)."""
    import pyepo
    from torch.utils.data import DataLoader

    optmodel = pyepo.model.ort.shortestPathModel(GRID)
    (x_train, c_train), (x_test, c_test) = data["train"], data["test"]
    torch.manual_seed(seed)
    reg = LinearRegression(x_train.shape[1], c_train.shape[1])
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # its progress bars
        dataset_train = pyepo.data.dataset.optDataset(optmodel, x_train, c_train)
        dataset_test = pyepo.data.dataset.optDataset(optmodel, x_test, c_test)
    loader_train = DataLoader(dataset_train, batch_size=batch_size, shuffle=True)
    loader_test = DataLoader(dataset_test, batch_size=batch_size, shuffle=False)
    optimizer = torch.optim.Adam(reg.parameters(), lr=lr)
    if method == "spo_plus":
        loss_func = pyepo.func.SPOPlus(optmodel, processes=1)
    elif method == "pfyl":
        loss_func = pyepo.func.perturbedFenchelYoung(optmodel, n_samples=10, sigma=1.0, processes=1)
    else:
        raise ValueError(f"method must be one of {tuple(ANCHOR_METHODS)}; got {method!r}")
    reg.train()
    for _ in range(epochs):
        for x, c, w, z in loader_train:
            cp = reg(x)
            loss = loss_func(cp, c, w, z) if method == "spo_plus" else loss_func(cp, w)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return float(pyepo.metric.regret(reg, optmodel, loader_test))


def harness_run(method: str, run_dir: str | os.PathLike, *, seed: int, deg: int, noise: float = 0.5,
                n_train: int = 1000, n_val: int = 200, n_test: int = 1000, epochs: int = 20,
                lr: float = 1e-2, batch_size: int = 32) -> dict:
    """One anchor cell through :func:`newton_lab.train` (resumable in ``run_dir``): ``{"final":
    test regret after the last epoch, "best": test regret at the best validation, "step_ms": ...}``."""
    from newton_lab.runner import train

    cfg = anchor_config(method, seed=seed, deg=deg, noise=noise, n_train=n_train, n_val=n_val,
                        n_test=n_test, epochs=epochs, lr=lr, batch_size=batch_size)
    result = train(cfg, Path(run_dir), progress=False)
    return {"final": result["final"]["test"]["regret"], "best": result["best"]["test"]["regret"],
            "step_ms": 1e3 * result["time"]["step_s"], "run_id": cfg.run_id()}
