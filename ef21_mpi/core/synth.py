"""``ef21-mpi data synth``: synthetic LibSVM-like sparse data with heterogeneous shards, for scale tests.

Rows are generated in ``n`` sequential blocks that line up with the package's sharding
(`ef21_mpi.core.data.shard_bounds`), and every block differs from the others on purpose (SPEC 1: no
similarity between shards is assumed):

- *features*: each row has exactly ``Z`` distinct columns. Column ranks follow a power law
  (``rank = floor(m * u ** skew_i)``, with a block-specific ``skew_i``) and block ``i`` rotates them by its
  own offset, so every block has its own popular features;
- *values*: ``scale_i * |N(1, 0.5)|`` rounded to four decimals (``d.dddd``: short text that the reader
  converts exactly), with a block-specific ``scale_i``;
- *the last row* always has column ``d - 1``, so the reader infers exactly ``d`` without being told;
- *labels*: block ``i`` scores its rows with its own linear model ``w_i = w + 0.5 z_i`` and labels the
  lowest fraction ``q_i`` of its scores -1 and the rest +1, so every block of two or more rows holds
  both labels and the class balance differs between blocks.

Everything comes from ``SeedSequence(seed).spawn(n + 1)`` (the shared ``w``, then one stream per block),
and the text is written with vectorised integer formatting, so 200k rows at ``d = 10^6`` take seconds.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ef21_mpi.core.data import shard_bounds

VALUE_DECIMALS = 4
_VALUE_QUANTUM = 10**VALUE_DECIMALS
_VALUE_MAX_UNITS = 10 * _VALUE_QUANTUM - 1  # values are written as one digit, a point and four decimals
_VALUE_WIDTH = 2 + VALUE_DECIMALS
_ZERO = np.uint8(ord("0"))
_COMPRESS = {".bz2": bz2.compress, ".gz": gzip.compress, ".xz": lzma.compress}


@dataclass(frozen=True)
class Synthetic:
    """A generated data set, exactly as the LibSVM reader will see it (``A`` float64 CSR, ``y`` in {-1, +1})."""

    A: sp.csr_matrix
    y: np.ndarray

    @property
    def d(self) -> int:
        return int(self.A.shape[1])


def _distinct_sorted_columns(rng: np.random.Generator, rows: int, dim: int, z: int, skew: float,
                             offset: int) -> np.ndarray:
    """``rows x z`` strictly increasing columns in ``[0, dim)``: sorted draws from ``[0, dim - z]`` plus ``0..z-1``."""
    m = dim - z + 1
    ranks = np.floor(m * rng.random((rows, z)) ** skew).astype(np.int64)
    cols = np.sort((ranks + offset) % m, axis=1)
    cols += np.arange(z, dtype=np.int64)  # s_0 <= s_1 <= ... becomes s_0 < s_1 + 1 < ...: z distinct columns
    return cols


def generate(rows: int, dim: int, nnz_per_row: int, workers: int, seed: int = 0) -> Synthetic:
    """The data set of the module docstring; ``ValueError`` if the sizes do not fit together."""
    if rows < 2 or dim < 1 or workers < 1:
        raise ValueError(f"need rows >= 2, dim >= 1 and workers >= 1, got rows={rows}, dim={dim}, workers={workers}")
    if not 1 <= nnz_per_row <= dim:
        raise ValueError(f"--nnz-per-row {nnz_per_row} must be between 1 and --dim {dim}")
    if dim > np.iinfo(np.int32).max or rows * nnz_per_row > np.iinfo(np.int32).max:
        raise ValueError("the data set is too large for int32 CSR indices")
    bounds = shard_bounds(rows, workers)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(workers + 1)]
    w = streams[0].standard_normal(dim)  # the shared part of every block's linear model
    indices = np.empty((rows, nnz_per_row), dtype=np.int32)
    units = np.empty((rows, nnz_per_row), dtype=np.int64)  # values in units of 10^-4
    y = np.empty(rows)
    for i, (lo, hi) in enumerate(bounds):
        rng = streams[i + 1]
        skew = rng.uniform(1.5, 4.0)
        offset = int(rng.integers(dim))
        scale = rng.uniform(0.3, 2.0)
        q = rng.uniform(0.2, 0.8)
        m = hi - lo
        indices[lo:hi] = _distinct_sorted_columns(rng, m, dim, nnz_per_row, skew, offset)
        if hi == rows:  # the reader infers d from the largest index: make sure column d - 1 occurs
            indices[rows - 1, -1] = dim - 1
        raw = np.abs(rng.normal(1.0, 0.5, size=(m, nnz_per_row))) * scale
        units[lo:hi] = np.clip(np.rint(raw * _VALUE_QUANTUM), 1, _VALUE_MAX_UNITS)
        A_i = sp.csr_matrix((units[lo:hi].ravel() / _VALUE_QUANTUM, indices[lo:hi].ravel(),
                             np.arange(0, m * nnz_per_row + 1, nnz_per_row)), shape=(m, dim))
        w_i = w + 0.5 * rng.standard_normal(dim)
        score = A_i @ w_i + 0.1 * rng.standard_normal(m)
        negatives = min(max(round(q * m), 1), m - 1) if m >= 2 else i % 2  # one-row blocks alternate
        labels = np.ones(m)
        labels[np.argsort(score, kind="stable")[:negatives]] = -1.0
        y[lo:hi] = labels
    indptr = np.arange(0, rows * nnz_per_row + 1, nnz_per_row, dtype=np.int64)
    A = sp.csr_matrix((units.ravel() / _VALUE_QUANTUM, indices.ravel(), indptr), shape=(rows, dim))
    A.has_sorted_indices = True
    return Synthetic(A, y)


def _digit_count(v: np.ndarray) -> np.ndarray:
    """Decimal digits of the positive integers ``v``."""
    count = np.ones(v.shape, dtype=np.int64)
    for power in range(1, 19):
        big = v >= 10**power
        if not big.any():
            break
        count += big
    return count


def libsvm_bytes(data: Synthetic) -> bytes:
    """The LibSVM text of ``data``: ``+1 3:0.1234 17:1.5000`` per row, 1-based indices, LF line ends.

    Vectorised: the width of every token is known in advance (label 2, feature ``1 + digits + 1 + 6``,
    newline 1), so each token's offset is a cumulative sum and each character column is written in one
    numpy assignment.
    """
    A, y = data.A, data.y
    rows, nnz = A.shape[0], A.nnz
    row_of = np.repeat(np.arange(rows), np.diff(A.indptr))
    index = A.indices.astype(np.int32) + 1
    digits = _digit_count(index)
    # Token slots in file order: row r is [label, its features..., newline].
    label_slot = A.indptr[:-1] + 2 * np.arange(rows)
    feature_slot = np.arange(nnz) + 2 * row_of + 1
    newline_slot = A.indptr[1:] + 2 * np.arange(rows) + 1
    width = np.empty(nnz + 2 * rows, dtype=np.int64)
    width[label_slot] = 2
    width[feature_slot] = 1 + digits + 1 + _VALUE_WIDTH
    width[newline_slot] = 1
    start = np.concatenate(([0], np.cumsum(width)[:-1]))
    size = int(width.sum())
    out = np.empty(size + 1, dtype=np.uint8)  # the last byte takes the writes of digit columns a token lacks

    at = start[label_slot]
    out[at] = np.where(y > 0, ord("+"), ord("-"))
    out[at + 1] = ord("1")
    out[start[newline_slot]] = ord("\n")

    at = start[feature_slot]
    out[at] = ord(" ")
    last = at + digits  # the least significant digit of the index
    rest = index
    for position in range(int(digits.max()) if nnz else 0):
        rest, digit = np.divmod(rest, 10)
        out[np.where(position < digits, last - position, size)] = digit.astype(np.uint8) + _ZERO
    at = last + 1
    out[at] = ord(":")
    rest = np.rint(A.data * _VALUE_QUANTUM).astype(np.int32)
    for position in range(VALUE_DECIMALS):
        rest, digit = np.divmod(rest, 10)
        out[at + 2 + VALUE_DECIMALS - position] = digit.astype(np.uint8) + _ZERO
    out[at + 2] = ord(".")
    out[at + 1] = rest.astype(np.uint8) + _ZERO
    return out[:size].tobytes()


def write(data: Synthetic, path: str | os.PathLike) -> Path:
    """Write ``data`` as LibSVM text, compressed when the suffix is ``.bz2``, ``.gz`` or ``.xz``."""
    path = Path(path)
    text = libsvm_bytes(data)
    compress = _COMPRESS.get(path.suffix.lower())
    payload = compress(text) if compress else text
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"cannot write {path}: {err.strerror or err}") from None
    return path
