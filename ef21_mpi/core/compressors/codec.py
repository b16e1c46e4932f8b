"""Packed encodings: how a compressor whose message is not (index, float64) pairs goes over the wire.

A packed compressor draws its message as bytes first (``encode_group(V, rngs) -> payload``, an ``m x nbytes``
uint8 array) and its values are *defined* as the decoding of those bytes (``decode(payload) -> values``).
So the worker's ``Q(v)`` and what the master decodes are the same function of the same bytes: exact by
construction, with no inversion of floats back into codes. `Scaled` divides the decoded values by a
constant (``Q / (omega + 1)``) on both sides, again the same operation on the same bytes.

Fields of a fixed bit width are packed most significant bit first, without padding between
coordinates (``ceil(d * width / 8)`` bytes per message).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def packed_nbytes(count: int, width: int) -> int:
    """Bytes of ``count`` fields of ``width`` bits, packed without gaps."""
    return (count * width + 7) // 8


def _container(width: int) -> int:
    """Bytes of the smallest unsigned integer that holds a ``width``-bit field (1, 2, 4 or 8)."""
    if not 1 <= width <= 64:
        raise ValueError(f"a packed field has 1 to 64 bits, not {width}")
    return next(size for size in (1, 2, 4, 8) if width <= 8 * size)


def pack_fields(codes: np.ndarray, width: int) -> np.ndarray:
    """Rows of unsigned integer codes (``m x c``, each below ``2**width``) as ``m x packed_nbytes(c, width)`` bytes.

    Each code is written big-endian into the smallest integer that holds it, its bytes spread into bits, and its
    last ``width`` bits kept: every temporary is one byte per bit (no 8-byte word per bit).
    """
    m, c = codes.shape
    size = _container(width)
    big_endian = np.ascontiguousarray(codes, dtype=f">u{size}")
    # along the long axis (numpy's bit routines are slow along a short one), then each code's last width bits
    bits = np.unpackbits(big_endian.view(np.uint8).reshape(m, c * size), axis=1).reshape(m, c, 8 * size)
    return np.packbits(bits[:, :, 8 * size - width:].reshape(m, c * width), axis=1)


def unpack_fields(payload: np.ndarray, count: int, width: int) -> np.ndarray:
    """The inverse of `pack_fields`: ``m x count`` codes (uint64) from ``m x packed_nbytes(count, width)`` bytes."""
    m = payload.shape[0]
    size = _container(width)
    bits = np.zeros((m, count, 8 * size), dtype=np.uint8)  # each code's bits, right-aligned in its container
    bits[:, :, 8 * size - width:] = np.unpackbits(payload, axis=1, count=count * width).reshape(m, count, width)
    return np.packbits(bits.reshape(m, count * 8 * size), axis=1).view(f">u{size}").astype(np.uint64)


@dataclass(frozen=True)
class Scaled:
    """``c Q``: an unbiased compressor ``Q`` times ``scale = 1/(omega + 1)``, contractive with ``alpha = scale``.

    EF21 paper, introduction (after eqs. (2)-(3)): ``E||Q(v)/(omega+1) - v||^2 <= (1 - 1/(omega+1)) ||v||^2``.
    The wire carries ``Q``'s own message; both ends divide by ``omega + 1`` after decoding.
    """

    inner: object

    @property
    def omega(self) -> float:
        return self.inner.omega

    @property
    def alpha(self) -> float:
        return 1.0 / (self.inner.omega + 1.0)

    @property
    def k(self) -> int:
        return self.inner.k

    @property
    def n_values(self) -> int:
        return self.inner.n_values

    @property
    def sparse(self) -> bool:
        return self.inner.sparse

    @property
    def packed_nbytes(self) -> int | None:
        return self.inner.packed_nbytes

    def _shrink(self, values: np.ndarray) -> np.ndarray:
        return values / (self.inner.omega + 1.0)

    def compress(self, v: np.ndarray, rng: np.random.Generator | None = None):
        indices, values = self.inner.compress(v, rng)
        return indices, self._shrink(values)

    def compress_group(self, V: np.ndarray, rngs):
        indices, values = self.inner.compress_group(V, rngs)
        return indices, self._shrink(values)

    def encode_group(self, V: np.ndarray, rngs) -> np.ndarray:
        return self.inner.encode_group(V, rngs)

    def decode(self, payload: np.ndarray) -> np.ndarray:
        return self._shrink(self.inner.decode(payload))

