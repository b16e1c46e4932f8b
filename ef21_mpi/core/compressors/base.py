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
