"""Helpers shared by the data modules (private): integer argument checks and derived seeds."""

from __future__ import annotations

import numpy as np


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def derived_seed(*entropy: int) -> int:
    """A 63-bit seed derived from non-negative ints by ``numpy.random.SeedSequence``.

    Independent streams of one user seed (splits, chunks, a sampler) get unrelated seeds, unlike
    ``seed + stream``, and the value is the same on every platform.
    """
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0] >> 1)
