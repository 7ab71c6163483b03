"""Your own model and data through the newton_lab runner (docs/EXTENDING.md, "Your own model and
data"): three interleaved spirals, a small MLP of your own and the per-sample cross-entropy,
trained as the plain loss and as two Newton losses, interrupted and resumed, then reported.

    python examples/train_your_own.py [--out runs/spirals] [--steps 400]

Importing this module registers the task ``spirals`` (that is all a module needs to do for the
command line and sweeps), so the same runs also go through the ``newton-losses`` command:

    PYTHONPATH=examples newton-losses train spirals --import train_your_own --protocol default \\
        --variant fisher --lam 0.1 --out runs/spirals
    PYTHONPATH=examples newton-losses report runs/spirals --import train_your_own

Synthetic data, CPU, a few seconds.
"""
from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from newton_lab import RunInterrupted, protocol_config, read_metrics, register_custom_task, run_status, train
from newton_lab.report import build_report


def spirals(n: int, seed: int, classes: int = 3, noise: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of ``classes`` interleaved spirals: inputs x (n, 2), labels (n,) int64."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(classes, (n,), generator=g)
    r = torch.rand(n, generator=g)
    angle = 4.0 * r + 2 * math.pi * label / classes
    x = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1) * 3
    return x + noise * r.unsqueeze(1) * torch.randn(n, 2, generator=g), label


class MLP(nn.Module):
    """x (B, 2) -> class scores (B, 3)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def cross_entropy(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample loss: scores (B, 3), labels (B,) -> (B,)."""
    return nn.functional.cross_entropy(y, target, reduction="none")


def accuracy(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample correctness (N,), averaged by the harness."""
    return (y.argmax(dim=1) == target).double()


def margin(y: torch.Tensor, target: torch.Tensor) -> float:
    """Mean score margin of the true class over the best other class (higher is better)."""
    true = y.gather(1, target.unsqueeze(1)).squeeze(1)
    other = y.scatter(1, target.unsqueeze(1), float("-inf")).max(dim=1).values
    return float((true - other).mean())


register_custom_task(
    "spirals",
    model=lambda cfg: MLP(cfg.hidden),              # built after the run's seed is set
    train=spirals(2000, seed=0), val=spirals(500, seed=1), test=spirals(500, seed=2),
    loss={"cross_entropy": cross_entropy},          # RunConfig.method = "cross_entropy"
    metrics={"accuracy": accuracy, "margin": margin},  # the first selects the best evaluation
    percent_metrics=("accuracy",),
    protocols={"default": dict(hidden=32, lr=1e-2, batch_size=50, steps=400, eval_every=50)},
    title="Spirals (examples/train_your_own.py)",
)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/spirals", help="parent directory of the run directories")
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args(argv)
    eval_every = max(1, min(50, args.steps // 2))
    runs = []
    for variant, lam in (("none", 0.0), ("fisher", 0.1), ("hessian", 0.1)):
        cfg = protocol_config("spirals", "default", variant=variant, lam=lam, steps=args.steps,
                              eval_every=eval_every)
        run_dir = f"{args.out}/{cfg.run_id()}"
        if variant == "hessian" and run_status(run_dir) == "new":
            # Interrupt this run after its first checkpoint (as Ctrl-C or a killed job would)...
            def stop(step, at=eval_every + 1):
                if step == at:
                    raise KeyboardInterrupt
            try:
                train(cfg, run_dir, progress=False, on_step=stop)
            except RunInterrupted as exc:
                print(f"interrupted: {exc}")
        # ... and train it again: it resumes from its checkpoint (a finished run is not retrained).
        result = train(cfg, run_dir, progress=False)
        best = result["best"]
        print(f"{variant:8s} best validation accuracy {100 * best['val']['accuracy']:.1f}% at step "
              f"{best['step']}, test {100 * best['test']['accuracy']:.1f}% "
              f"({len(read_metrics(run_dir))} evaluations in {run_dir}/metrics.jsonl)")
        runs.append(run_dir)
    print()
    print(build_report(runs, plots=False).markdown)


if __name__ == "__main__":
    main()
