"""The checkpointed random state that the epoch-based tasks share (shortest path, pto): the
permutation buffer of the current epoch and the noise generator of stochastic losses."""
from __future__ import annotations

import torch


class EpochNoiseState:
    """Mixin: ``self._buffer`` (the rest of the current epoch's permutation) and ``self.noise``
    (a generator for the losses' Monte-Carlo samples), saved and restored with checkpoints.

    Under data parallelism each process perturbs its own slice of the batch, so its noise stream
    must differ from the other ranks' (rank 0 keeps the single-process stream), or the samples
    would repeat across the global batch; the global run is then equal in distribution to one
    process, not bit-identical."""

    noise: torch.Generator
    _buffer: torch.Tensor

    def _init_stream(self, seed: int, rank: int) -> None:
        self.noise = torch.Generator().manual_seed(seed * 7919 + 17 + rank * 1_000_003)
        self._buffer = torch.empty(0, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"buffer": self._buffer.clone(), "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._buffer = state["buffer"].clone()
        self.noise.set_state(state["noise"])
