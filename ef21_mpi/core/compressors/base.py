"""What every compressor's message is made of: int32 indices, float64 values, and its dense form; row norms."""

from __future__ import annotations

import numpy as np

INDEX_DTYPE = np.int32
VALUE_DTYPE = np.float64


def densify(indices: np.ndarray | None, values: np.ndarray, d: int) -> np.ndarray:
    """The dense form ``C(v)`` of a message."""
    if indices is None:
        return np.array(values, dtype=VALUE_DTYPE, copy=True)
    out = np.zeros(d, dtype=VALUE_DTYPE)
    out[indices] = values
    return out


def row_norms_sq(V: np.ndarray) -> np.ndarray:
    """``||V[j]||^2`` per row, each a dot product of its own (the same bits whatever the group size): ``vecdot``
    takes each row's ``v @ v`` with the same BLAS call, without a Python loop (tests/test_methods.py)."""
    if hasattr(np, "vecdot"):
        return np.vecdot(V, V)
    return np.array([float(v @ v) for v in V])  # numpy < 2


def sample_without_replacement(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``size`` distinct integers of ``0 .. count - 1``, uniformly, in increasing order (int64):
    ``np.sort(rng.choice(count, size, replace=False))``, the draw of Rand-k and of a worker's minibatch rows.

    For ``size = 1`` that ``choice`` draws exactly ``rng.integers(0, count)``: the same number and the same generator
    state afterwards (tests/test_compressors.py checks it against ``choice`` itself), at a fifth of the cost, which
    matters when a process draws for thousands of workers every round.
    """
    if size == 1:
        return np.array([rng.integers(0, count)], dtype=np.int64)
    return np.sort(rng.choice(count, size=size, replace=False))


def sample_rows(rngs, count: int, size: int) -> np.ndarray:
    """`sample_without_replacement` once per generator: an ``m x size`` index array, row ``j`` from ``rngs[j]``."""
    out = np.empty((len(rngs), size), dtype=INDEX_DTYPE)
    for row, rng in zip(out, rngs):
        row[:] = sample_without_replacement(rng, count, size)
    return out
