"""Compressors (SPEC 3): values with an ``alpha`` and ``compress(v, rng) -> (indices, values)``.

``indices`` is ``None`` for a dense message (every coordinate, in order). Sparse messages carry int32
indices in increasing order, so a message is canonical whatever way it was selected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ef21_mpi.errors import InputError

INDEX_DTYPE = np.int32
VALUE_DTYPE = np.float64

COMPRESSORS = ("top-k", "rand-k", "identity")


def _top_k_indices(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries, ties to the lower index, in O(d): threshold, then fill with ties."""
    d = magnitude.shape[0]
    threshold = np.partition(magnitude, d - k)[d - k]
    above = np.flatnonzero(magnitude > threshold)
    ties = np.flatnonzero(magnitude == threshold)[: k - len(above)]
    return np.union1d(above, ties).astype(INDEX_DTYPE)


@dataclass(frozen=True)
class _KOfD:
    """A compressor that sends ``k`` of the ``d`` coordinates: ``alpha = k/d``, ``k`` (index, value) pairs."""

    k: int
    d: int

    @property
    def alpha(self) -> float:
        return self.k / self.d

    @property
    def n_values(self) -> int:
        return self.k


@dataclass(frozen=True)
class TopK(_KOfD):
    """Keep the ``k`` entries of largest magnitude; ties go to the lower index. ``alpha = k/d``."""

    def compress(self, v: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        k, d = self.k, self.d
        magnitude = np.abs(v)
        if k == 1:  # argmax returns the first maximum: the same tie rule, one pass
            idx = np.array([magnitude.argmax()], dtype=INDEX_DTYPE)
        elif k == d:
            idx = np.arange(d, dtype=INDEX_DTYPE)
        else:
            # O(d) selection: the k-th largest magnitude, everything above it, then the lowest-index ties.
            idx = _top_k_indices(magnitude, k)
            if len(idx) < k:  # NaN compares false with everything: rank it above every number, as argmax does
                idx = _top_k_indices(np.where(np.isnan(magnitude), np.inf, magnitude), k)
        return idx, v[idx]


@dataclass(frozen=True)
class RandK(_KOfD):
    """Keep ``k`` coordinates drawn uniformly without replacement, unscaled (the contractive form). ``alpha = k/d``."""

    def compress(self, v: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(rng.choice(self.d, size=self.k, replace=False)).astype(INDEX_DTYPE)
        return idx, v[idx]


@dataclass(frozen=True)
class Identity:
    """No compression: the whole vector, sent dense. ``alpha = 1``."""

    d: int

    @property
    def k(self) -> int:
        return self.d

    @property
    def alpha(self) -> float:
        return 1.0

    @property
    def n_values(self) -> int:
        return self.d

    def compress(self, v: np.ndarray, rng: np.random.Generator | None = None) -> tuple[None, np.ndarray]:
        return None, np.array(v, dtype=VALUE_DTYPE, copy=True)


Compressor = TopK | RandK | Identity


def make_compressor(name: str, k: int | None, d: int) -> Compressor:
    """Build a compressor from CLI words, checking ``1 <= k <= d``."""
    if name == "identity":
        return Identity(d)
    if name not in COMPRESSORS:
        raise InputError(f"unknown compressor {name!r}; expected one of {', '.join(COMPRESSORS)}")
    if k is None:
        raise InputError(f"--k is required with --compressor {name}")
    if not 1 <= k <= d:
        raise InputError(f"--k {k} is out of range for this data set: expected 1 <= k <= d = {d}")
    return TopK(k, d) if name == "top-k" else RandK(k, d)


def densify(indices: np.ndarray | None, values: np.ndarray, d: int) -> np.ndarray:
    """The dense form ``C(v)`` of a message."""
    if indices is None:
        return np.array(values, dtype=VALUE_DTYPE, copy=True)
    out = np.zeros(d, dtype=VALUE_DTYPE)
    out[indices] = values
    return out
