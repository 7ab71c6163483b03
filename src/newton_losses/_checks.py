"""Argument checks shared by the algorithm modules (private)."""
from __future__ import annotations

import math
import numbers
import os
import sys
from types import FrameType

__all__ = ["check_positive", "user_stacklevel"]


def check_positive(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_TORCH_MODULE = os.path.join("torch", "nn", "modules", "module.py")


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised here point at the first frame outside
    this package (and outside torch.nn.Module's attribute and call machinery): the user's line,
    however deep inside the package the warning is raised."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if not (name.startswith(_PACKAGE + os.sep) or name.endswith(_TORCH_MODULE)):
            return level
        frame, level = frame.f_back, level + 1
    return level
