"""A plug-in compressor: Block Top-k, the contiguous window of ``block`` coordinates with the largest norm.

Use it from the command line (its folder must be importable on every rank)::

    PYTHONPATH=examples ef21-mpi run --dataset a9a --compressor block_top_k:BlockTopK --compressor-arg block=4 ...

or from Python: ``ef21_mpi.simulate(dataset="a9a", compressor=BlockTopK(d=123, block=4))``.

The windows start at 0, block, 2 block, ...; the last one ends at d (it may overlap the one before), so
every message has exactly ``block`` values. The windows cover every coordinate, so the best of the
``w = ceil(d / block)`` windows holds at least ``1/w`` of ``||v||^2``:
``||C(v) - v||^2 <= (1 - 1/w) ||v||^2``, i.e. ``alpha = 1/w``. Deterministic (the generator is unused);
ties go to the first window. It has no ``compress_group``: the methods then call ``compress`` row by row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlockTopK:
    d: int
    block: int = 2

    def __post_init__(self):
        if not 1 <= self.block <= self.d:
            raise ValueError(f"block must be in 1..d = {self.d}, got {self.block}")

    @property
    def n_values(self) -> int:
        return self.block

    @property
    def starts(self) -> np.ndarray:
        """First coordinate of each window."""
        return np.minimum(np.arange(0, self.d, self.block), self.d - self.block)

    @property
    def alpha(self) -> float:
        return 1.0 / math.ceil(self.d / self.block)

    def compress(self, v: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        energy = np.array([float(v[s:s + self.block] @ v[s:s + self.block]) for s in self.starts])
        start = int(self.starts[int(np.argmax(energy))])
        indices = np.arange(start, start + self.block, dtype=np.int32)
        return indices, v[indices]
