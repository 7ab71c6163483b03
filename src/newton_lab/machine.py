"""What machine a run or a benchmark ran on: the line the runner records in ``result.json`` and
the benchmarks print, and its short form in reports."""
from __future__ import annotations

import os
import platform
from typing import Optional

import torch

__all__ = ["machine_description", "machine_label"]


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}; {os.cpu_count()} logical CPUs; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); Python {platform.python_version()}"
    )


def machine_label(result: dict, *, python: bool = True) -> Optional[str]:
    """A run's ``machine`` record ("processor; CPUs; torch build; Python x.y[; GPU]", as the
    runner writes it) as one comma-separated line, without the Python version unless
    ``python``; None when the run has no record (runs from before the record existed)."""
    if not result.get("machine"):
        return None
    parts = [p.strip() for p in str(result["machine"]).split(";")]
    return ", ".join(p for p in parts if python or not p.startswith("Python"))
