"""Compressors (SPEC 3) and their registry: a compressor is a value with ``alpha`` and ``compress(v, rng)``.

A new compressor is one module here (a frozen dataclass with ``alpha``, ``n_values``, ``compress`` and
``compress_group``) plus one line in `COMPRESSORS`.
"""

from __future__ import annotations

from ef21_mpi.core.compressors.base import INDEX_DTYPE, VALUE_DTYPE, densify
from ef21_mpi.core.compressors.contractive import Identity, RandK, TopK

__all__ = ["COMPRESSORS", "INDEX_DTYPE", "VALUE_DTYPE", "Compressor", "Identity", "RandK", "TopK", "densify",
           "make_compressor"]

Compressor = TopK | RandK | Identity

#: The registry: command-line name -> compressor class. Every class takes ``(k, d)`` except `Identity` (``d``).
COMPRESSORS: dict[str, type] = {"top-k": TopK, "rand-k": RandK, "identity": Identity}


def make_compressor(name: str, k: int | None, d: int) -> Compressor:
    """Build a registered compressor, checking ``1 <= k <= d``; ValueError otherwise."""
    cls = COMPRESSORS.get(name)
    if cls is None:
        raise ValueError(f"unknown compressor {name!r}; expected one of {', '.join(COMPRESSORS)}")
    if cls is Identity:
        return Identity(d)
    if k is None:
        raise ValueError(f"compressor {name} needs k")
    if not 1 <= k <= d:
        raise ValueError(f"k = {k} is out of range for this data set: expected 1 <= k <= d = {d}")
    return cls(k, d)
