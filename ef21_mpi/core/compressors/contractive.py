"""The contractive compressors of SPEC 3: Top-k, Rand-k (unscaled) and the identity, ``alpha = k/d``.

``indices`` is ``None`` for a dense message (every coordinate, in order). Sparse messages carry int32
indices in increasing order, so a message is canonical whatever way it was selected.

``compress_group(V, rngs)`` compresses the rows of an ``m x d`` array (one row per worker, each with its
own generator) and returns ``(m, k)`` arrays; row ``j`` is exactly ``compress(V[j], rngs[j])``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ef21_mpi.core.compressors.base import INDEX_DTYPE, VALUE_DTYPE, sample_rows, sample_without_replacement


def _top_k_indices(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries, ties to the lower index, in O(d): threshold, then fill with ties."""
    d = magnitude.shape[0]
    threshold = np.partition(magnitude, d - k)[d - k]
    above = np.flatnonzero(magnitude > threshold)
    ties = np.flatnonzero(magnitude == threshold)[: k - len(above)]
    return np.union1d(above, ties).astype(INDEX_DTYPE)


def _top_k_mask(magnitude: np.ndarray, k: int) -> np.ndarray:
    """`_top_k_indices` of every row of an m x d array at once, as a mask (NaN rows may keep fewer than k)."""
    d = magnitude.shape[1]
    threshold = np.partition(magnitude, d - k, axis=1)[:, d - k, None]
    above = magnitude > threshold
    ties = magnitude == threshold
    missing = k - above.sum(axis=1, keepdims=True)
    return above | (ties & (np.cumsum(ties, axis=1) <= missing))  # the lowest-index ties fill the rest


@dataclass(frozen=True)
class _KOfD:
    """A compressor that sends ``k`` of the ``d`` coordinates: ``alpha = k/d``, ``k`` (index, value) pairs."""

    k: int
    d: int
    sparse = True  # the message carries indices
    packed_nbytes = None  # float64 values (and int32 indices) on the wire, no packed encoding

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

    def compress_group(self, V: np.ndarray, rngs=None) -> tuple[np.ndarray, np.ndarray]:
        m, d = V.shape
        k = self.k
        magnitude = np.abs(V)
        if k == 1:  # one value per row, picked by (row, index) pairs
            first = magnitude.argmax(axis=1)
            return first.astype(INDEX_DTYPE)[:, None], V[np.arange(m), first][:, None]
        if k == d:
            idx = np.broadcast_to(np.arange(d, dtype=INDEX_DTYPE), (m, d)).copy()
        else:
            keep = _top_k_mask(magnitude, k)
            short = keep.sum(axis=1) < k
            if short.any():  # as in `compress`: where NaNs leave too few, NaN ranks above every number
                rows = magnitude[short]
                keep[short] = _top_k_mask(np.where(np.isnan(rows), np.inf, rows), k)
            idx = np.nonzero(keep)[1].astype(INDEX_DTYPE).reshape(m, k)
        return idx, np.take_along_axis(V, idx, axis=1)


@dataclass(frozen=True)
class RandK(_KOfD):
    """Keep ``k`` coordinates drawn uniformly without replacement, unscaled (the contractive form). ``alpha = k/d``."""

    def compress(self, v: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        idx = sample_without_replacement(rng, self.d, self.k).astype(INDEX_DTYPE)
        return idx, v[idx]

    def compress_group(self, V: np.ndarray, rngs) -> tuple[np.ndarray, np.ndarray]:
        idx = sample_rows(rngs, self.d, self.k)  # one draw per worker, from its own generator
        return idx, np.take_along_axis(V, idx, axis=1)


@dataclass(frozen=True)
class Identity:
    """No compression: the whole vector, sent dense. ``alpha = 1``."""

    d: int
    sparse = False
    packed_nbytes = None

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

    def compress_group(self, V: np.ndarray, rngs=None) -> tuple[None, np.ndarray]:
        return None, np.array(V, dtype=VALUE_DTYPE, copy=True)
