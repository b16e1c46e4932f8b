"""What every compressor's message is made of: int32 indices, float64 values, and its dense form."""

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
