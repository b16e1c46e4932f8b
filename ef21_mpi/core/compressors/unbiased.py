"""The unbiased compressors of SPEC 3: ``E Q(v) = v``, ``E||Q(v) - v||^2 <= omega ||v||^2``.

- `RandKUnbiased`: ``k`` uniform coordinates scaled by ``d/k`` (``omega = d/k - 1``), sent as (index, float64).
- `Natural` (Horváth et al. 2019): every coordinate rounded at random to a neighbouring signed power of two
  (``omega = 1/8``), sent packed: a sign bit and an 8-bit exponent per coordinate.
- `Dithering` with ``s`` levels (QSGD, Alistarh et al. 2017): ``||v|| sign(v_j) xi_j / s`` with ``xi_j`` the
  random rounding of ``s |v_j| / ||v||`` (``omega = min(d/s^2, sqrt(d)/s)``), sent packed: the norm as
  float64, then a sign bit and ``ceil(log2(s + 1))`` level bits per coordinate.

The packed ones draw their message as bytes (`encode_group`) and define their values as the decoding of
those bytes (`decode`), so the master decodes exactly the worker's ``Q(v)`` (see `codec`). Each worker
draws ``d`` uniforms per message from its own generator. A method that needs a contractive compressor
uses ``Q / (omega + 1)`` (`codec.Scaled`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ef21_mpi.core.compressors.base import (
    INDEX_DTYPE,
    VALUE_DTYPE,
    row_norms_sq,
    sample_rows,
    sample_without_replacement,
)
from ef21_mpi.core.compressors.codec import pack_fields, packed_nbytes, unpack_fields


@dataclass(frozen=True)
class RandKUnbiased:
    """``k`` coordinates drawn uniformly without replacement, scaled by ``d/k``. ``omega = d/k - 1``."""

    k: int
    d: int
    sparse = True
    packed_nbytes = None

    @property
    def omega(self) -> float:
        return self.d / self.k - 1.0

    @property
    def n_values(self) -> int:
        return self.k

    def compress(self, v: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = sample_without_replacement(rng, self.d, self.k).astype(INDEX_DTYPE)  # the draw of RandK
        return idx, v[idx] * (self.d / self.k)

    def compress_group(self, V: np.ndarray, rngs) -> tuple[np.ndarray, np.ndarray]:
        idx = sample_rows(rngs, self.d, self.k)  # the draws of RandK
        return idx, np.take_along_axis(V, idx, axis=1) * (self.d / self.k)


class _Packed:
    """Shared shape of a dense packed compressor: values = decode(encode_group(V, rngs))."""

    d: int
    sparse = False

    @property
    def k(self) -> int:
        return self.d

    @property
    def n_values(self) -> int:
        return self.d

    def _uniforms(self, rngs, m: int) -> np.ndarray:
        """``d`` uniforms per worker from its own generator, drawn straight into row ``j`` (as ``rng.random(d)``)."""
        u = np.empty((m, self.d))
        for row, rng in zip(u, rngs):
            rng.random(out=row)
        return u

    def compress(self, v: np.ndarray, rng: np.random.Generator) -> tuple[None, np.ndarray]:
        return None, self.decode(self.encode_group(v[None, :], [rng]))[0]

    def compress_group(self, V: np.ndarray, rngs) -> tuple[None, np.ndarray]:
        return None, self.decode(self.encode_group(V, rngs))


EXP_MIN, EXP_MAX, EXP_BIAS = -126, 127, 127  # float32's normal exponents; code 0 = zero, 255 = infinite
EXP_WIDTH = 8


@dataclass(frozen=True)
class Natural(_Packed):
    """Natural compression: ``sign(v_j) 2^e`` with ``2^e <= |v_j| < 2^(e+1)``, the upper power with probability
    ``(|v_j| - 2^e) / 2^e``. ``omega = 1/8``. 9 bits per coordinate (sign, exponent code ``e + 127``).

    Magnitudes below ``2^-126`` round at random between 0 and ``2^-126`` (still unbiased); at or above
    ``2^128``, and NaN, become infinite (a diverged run).
    """

    d: int
    omega = 1.0 / 8.0

    @property
    def packed_nbytes(self) -> int:
        return packed_nbytes(self.d, 1 + EXP_WIDTH)

    def encode_group(self, V: np.ndarray, rngs) -> np.ndarray:
        u = self._uniforms(rngs, len(V))
        a = np.abs(V)
        mantissa, exponent = np.frexp(a)  # a = mantissa 2^exponent, mantissa in [0.5, 1)
        e = exponent - 1
        p_up = 2.0 * mantissa - 1.0  # (a - 2^e) / 2^e, exact
        tiny = a < 2.0 ** EXP_MIN
        p_up = np.where(tiny, a * 2.0 ** -EXP_MIN, p_up)  # between 0 (down) and 2^EXP_MIN (up)
        e = np.where(tiny, EXP_MIN - 1, e) + (u < p_up)
        code = np.where(e > EXP_MAX, 255, np.maximum(e + EXP_BIAS, 0))
        code = np.where(~np.isfinite(a), 255, np.where(a == 0, 0, code))
        return pack_fields((np.signbit(V).astype(np.uint64) << EXP_WIDTH) | code.astype(np.uint64), 1 + EXP_WIDTH)

    def decode(self, payload: np.ndarray) -> np.ndarray:
        codes = unpack_fields(payload, self.d, 1 + EXP_WIDTH)
        code = (codes & np.uint64(255)).astype(np.int64)
        magnitude = np.where(code == 255, np.inf, np.ldexp(1.0, code - EXP_BIAS))
        magnitude = np.where(code == 0, 0.0, magnitude)
        return np.where((codes >> np.uint64(EXP_WIDTH)).astype(bool), -magnitude, magnitude).astype(VALUE_DTYPE)


@dataclass(frozen=True)
class Dithering(_Packed):
    """Random dithering with ``s`` levels: ``Q(v)_j = ||v|| sign(v_j) xi_j / s``, ``xi_j`` in ``{0..s}`` the
    unbiased random rounding of ``s |v_j| / ||v||``. ``omega = min(d/s^2, sqrt(d)/s)``."""

    levels: int
    d: int

    @property
    def omega(self) -> float:
        s = self.levels
        return min(self.d / s**2, math.sqrt(self.d) / s)

    @property
    def width(self) -> int:
        return self.levels.bit_length() + 1  # sign + ceil(log2(s + 1)) level bits

    @property
    def packed_nbytes(self) -> int:
        return 8 + packed_nbytes(self.d, self.width)

    def encode_group(self, V: np.ndarray, rngs) -> np.ndarray:
        m, s = len(V), self.levels
        u = self._uniforms(rngs, m)
        norms = np.sqrt(row_norms_sq(V))  # one dot product per row: the same bits in any group
        with np.errstate(divide="ignore", invalid="ignore"):
            r = s * np.abs(V) / norms[:, None]
        r = np.where(np.isfinite(r), r, 0.0)  # ||v|| = 0 (all levels 0); a non-finite norm decodes to NaN anyway
        low = np.floor(r)
        xi = np.minimum(low + (u < r - low), s).astype(np.uint64)
        codes = (np.signbit(V).astype(np.uint64) << np.uint64(self.width - 1)) | xi
        payload = np.empty((m, self.packed_nbytes), dtype=np.uint8)
        payload[:, :8] = norms.astype(VALUE_DTYPE).reshape(m, 1).view(np.uint8)
        payload[:, 8:] = pack_fields(codes, self.width)
        return payload

    def decode(self, payload: np.ndarray) -> np.ndarray:
        norms = np.ascontiguousarray(payload[:, :8]).view(VALUE_DTYPE)  # (m, 1)
        codes = unpack_fields(np.ascontiguousarray(payload[:, 8:]), self.d, self.width)
        xi = (codes & np.uint64((1 << (self.width - 1)) - 1)).astype(VALUE_DTYPE)
        magnitude = norms * xi / self.levels
        return np.where((codes >> np.uint64(self.width - 1)).astype(bool), -magnitude, magnitude)
