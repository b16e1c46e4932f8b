"""Compressors (SPEC 3) and their registry: a compressor is a value with ``compress(v, rng)`` and its constant.

A contractive compressor states ``alpha``, an unbiased one ``omega``. A new compressor is one module here (a
frozen dataclass with its constant, ``n_values``, ``compress`` and ``compress_group``; a packed one also
``packed_nbytes``, ``encode_group`` and ``decode``, see `codec`) plus one line in `COMPRESSORS`.
"""

from __future__ import annotations

from ef21_mpi.core.compressors.base import INDEX_DTYPE, VALUE_DTYPE, densify
from ef21_mpi.core.compressors.codec import Scaled
from ef21_mpi.core.compressors.contractive import Identity, RandK, TopK
from ef21_mpi.core.compressors.unbiased import Dithering, Natural, RandKUnbiased

__all__ = [
    "COMPRESSORS",
    "INDEX_DTYPE",
    "PARAMETERS",
    "VALUE_DTYPE",
    "Compressor",
    "Dithering",
    "Identity",
    "Natural",
    "RandK",
    "RandKUnbiased",
    "Scaled",
    "TopK",
    "as_contractive",
    "densify",
    "is_unbiased",
    "make_compressor",
]

Compressor = TopK | RandK | Identity | RandKUnbiased | Natural | Dithering | Scaled

#: The registry: command-line name -> compressor class. Each class's ``PARAMETERS`` names what it is built from
#: besides ``d`` (``k``, ``levels`` or nothing).
COMPRESSORS: dict[str, type] = {"top-k": TopK, "rand-k": RandK, "identity": Identity,
                                "rand-k-unbiased": RandKUnbiased, "natural": Natural, "dithering": Dithering}
PARAMETERS: dict[type, tuple[str, ...]] = {TopK: ("k",), RandK: ("k",), RandKUnbiased: ("k",), Identity: (),
                                           Natural: (), Dithering: ("levels",)}


def make_compressor(name: str, k: int | None, d: int, levels: int | None = None) -> Compressor:
    """Build a registered compressor, checking ``1 <= k <= d`` and ``levels >= 1``; ValueError otherwise."""
    cls = COMPRESSORS.get(name)
    if cls is None:
        raise ValueError(f"unknown compressor {name!r}; expected one of {', '.join(COMPRESSORS)}")
    needs = PARAMETERS[cls]
    if "k" in needs:
        if k is None:
            raise ValueError(f"compressor {name} needs k")
        if not 1 <= k <= d:
            raise ValueError(f"k = {k} is out of range for this data set: expected 1 <= k <= d = {d}")
        return cls(k, d)
    if "levels" in needs:
        if levels is None or levels < 1:
            raise ValueError(f"compressor {name} needs levels s >= 1, got {levels}")
        return cls(levels, d)
    return cls(d)


def is_unbiased(compressor) -> bool:
    """States ``omega`` rather than ``alpha``: unbiased, not yet scaled into a contractive one."""
    return hasattr(compressor, "omega") and not hasattr(compressor, "alpha")


def as_contractive(compressor) -> Compressor:
    """A contractive compressor as it is; an unbiased ``Q`` as ``Q / (omega + 1)`` (``alpha = 1/(omega + 1)``)."""
    return Scaled(compressor) if is_unbiased(compressor) else compressor
