"""Shared by the harness tests: a training run interrupted at a step and resumed."""
from pathlib import Path

import pytest

from newton_lab import train


class Interrupted(Exception):
    """Raised from the runner's on_step hook to stop a run the way Ctrl-C or a crash would."""


def interrupt_at(cfg, run_dir: Path, step: int) -> None:
    """Train ``cfg`` into ``run_dir`` and stop it at ``step`` (after the checkpoints before it)."""
    def stop(s):
        if s == step:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, run_dir, progress=False, on_step=stop)


def without_time(records: list) -> list:
    """metrics.jsonl records without their wall times (which differ between any two runs)."""
    return [{k: v for k, v in r.items() if k != "time"} for r in records]
