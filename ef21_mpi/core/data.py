"""LibSVM reader and sequential sharding (SPEC section 2).

The reader is strict: a malformed line is an ``ValueError`` naming the file, the line and what was
expected. Parsing is vectorised over the raw bytes with numpy (``_parse_fast``); whenever that path
meets anything it does not accept, the line-by-line reference parser (``_parse_slow``) runs instead
and either parses the file or raises with the first offending line.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

_DECOMPRESS = {".bz2": bz2.decompress, ".gz": gzip.decompress, ".xz": lzma.decompress}
_INDEX_MAX = int(np.iinfo(np.int32).max)  # CSR column indices are int32
_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER_STR = re.compile(_NUMBER)
_NUMBER_BYTES = re.compile(_NUMBER.encode())
_DIGITS = re.compile(r"[0-9]+")
_BLANKS = re.compile(r"[ \t\r\v\f]+")
_COMMENT = re.compile(rb"#[^\n]*")

# Bytes the fast path accepts outside comments: blanks, digits, "+-.eE" and ":".
_ALLOWED = np.zeros(256, bool)
_ALLOWED[list(b" \t\n\r\v\f0123456789+-.eE:")] = True
_POW10_FLOAT = 10.0 ** np.arange(19)
_FAST_DIGITS = 15  # up to 15 significant digits a decimal converts exactly in one division


@dataclass(frozen=True, eq=False)
class Dataset:
    """A binary-classification data set: rows of ``A`` are the samples ``a_j``, ``y`` their ±1 labels."""

    name: str  # registry name, or the file stem for an arbitrary path
    path: str  # the file it was read from
    A: sp.csr_matrix  # float64 (N, d), canonical, int32 indices
    y: np.ndarray  # float64 (N,), exactly -1.0 / +1.0
    d: int
    sha256: str  # of the uncompressed bytes

    @property
    def N(self) -> int:
        """Number of samples (rows)."""
        return int(self.A.shape[0])


class _Rows(NamedTuple):
    """Parsed content before label mapping: 1-based ``indices`` in CSR order, row pointer ``indptr``."""

    labels: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray


def read_uncompressed(path: str | os.PathLike) -> bytes:
    """Return the file's content, decompressed according to its suffix (.bz2, .gz, .xz, else plain)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"data file not found: {p}") from None
    except IsADirectoryError:
        raise ValueError(f"data file is a directory, expected a file: {p}") from None
    except OSError as err:
        raise ValueError(f"cannot read data file {p}: {err.strerror or err}") from None
    suffix = p.suffix.lower()
    decompress = _DECOMPRESS.get(suffix)
    if decompress is None:
        return raw
    try:
        return decompress(raw)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as err:
        raise ValueError(f"cannot decompress {p}: {err}; expected a valid {suffix} file") from None


def read_libsvm(path: str | os.PathLike, d: int | None = None, name: str | None = None) -> Dataset:
    """Read a LibSVM file (plain or compressed); ``d`` is the declared dimension, else the largest index."""
    return parse_libsvm(read_uncompressed(path), str(path), d=d, name=name or file_stem(path))


def file_stem(path: str | os.PathLike) -> str:
    """The data set name of an arbitrary file: its name without compression suffix and extension."""
    p = Path(path)
    if p.suffix.lower() in _DECOMPRESS:
        p = p.with_suffix("")
    return p.stem or p.name


def parse_libsvm(data: bytes, path: str, d: int | None = None, name: str | None = None) -> Dataset:
    """Parse uncompressed LibSVM bytes; ``path`` is used in error messages and recorded in the result."""
    _check_dimension(d)
    _check_line_endings(data, path)
    rows = _parse_fast(_COMMENT.sub(b"", data) if b"#" in data else data, d)
    if rows is None:
        rows = _parse_slow(data, path, d)
    if rows.labels.size == 0:
        raise ValueError(f"{path}: no data rows; expected lines of the form 'label index:value ...'")
    classes = np.unique(rows.labels)
    if classes.size != 2:
        shown = ", ".join(f"{c:.15g}" for c in classes[:10]) + (", ..." if classes.size > 10 else "")
        raise ValueError(
            f"{path}: expected exactly two distinct labels (binary classification), found {classes.size}: {shown}"
        )
    y = np.where(rows.labels == classes[1], 1.0, -1.0)
    if d is None:
        if rows.indices.size == 0:
            raise ValueError(f"{path}: no row has any feature, so the dimension cannot be inferred; give d")
        d = int(rows.indices.max())
    index_dtype = np.int32 if rows.indices.size <= _INDEX_MAX else np.int64
    A = sp.csr_matrix(
        (rows.values, (rows.indices - 1).astype(index_dtype), rows.indptr.astype(index_dtype)),
        shape=(y.size, d),
    )
    A.has_sorted_indices = True  # strictly increasing indices were enforced while parsing
    A.has_canonical_format = True
    return Dataset(
        name=name or file_stem(path),
        path=str(path),
        A=A,
        y=y,
        d=int(d),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _check_line_endings(data: bytes, path: str) -> None:
    """A CR not followed by LF (old Mac line endings) would glue lines together; say so instead of a parse error."""
    at = data.find(b"\r")
    while at != -1 and data[at + 1:at + 2] == b"\n":
        at = data.find(b"\r", at + 1)
    if at != -1:
        line = data.count(b"\n", 0, at) + 1
        raise ValueError(f"{path}:{line}: a carriage return (CR) ends a line without a line feed; LibSVM files "
                         "use LF (or CRLF) line endings: convert the file (e.g. tr '\\r' '\\n')")


def _check_dimension(d: int | None) -> None:
    if d is None:
        return
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d <= _INDEX_MAX:
        raise ValueError(f"declared dimension d must be a positive integer (at most {_INDEX_MAX}), got {d!r}")


def _parse_fast(data: bytes, d: int | None) -> _Rows | None:
    """Vectorised parse of comment-free bytes; None as soon as anything is unusual or wrong."""
    b = np.frombuffer(data, np.uint8)
    if np.bincount(b, minlength=256)[~_ALLOWED].any():
        return None
    solid = np.concatenate(([False], b > ord(" "), [False]))  # the only bytes <= " " left are blanks
    edge = np.diff(solid.view(np.int8))
    starts = np.flatnonzero(edge == 1)  # token k is b[starts[k]:ends[k]]
    ends = np.flatnonzero(edge == -1)
    is_label = np.zeros(starts.size, bool)  # the first token of each line
    first = np.searchsorted(starts, np.flatnonzero(b == ord("\n")))
    is_label[first[first < starts.size]] = True
    is_label[:1] = True
    feature = np.flatnonzero(~is_label)
    colon = np.flatnonzero(b == ord(":"))
    # colon i strictly inside feature token i: then each feature has exactly one ':' with text on
    # both sides, and no label has one
    if colon.size != feature.size or not ((colon > starts[feature]) & (colon < ends[feature] - 1)).all():
        return None
    indices = _parse_uint(b, starts[feature], colon)
    values = _parse_decimals(data, b, colon + 1, ends[feature])
    labels = _parse_decimals(data, b, starts[is_label], ends[is_label])
    if indices is None or values is None or labels is None:
        return None
    counts = np.diff(np.append(np.flatnonzero(is_label), starts.size)) - 1
    indptr = np.concatenate(([0], np.cumsum(counts)))
    if indices.size:
        limit = _INDEX_MAX if d is None else d
        continues_row = np.ones(indices.size, bool)
        continues_row[indptr[:-1][counts > 0]] = False
        rises = np.diff(indices) > 0
        if indices.min() < 1 or indices.max() > limit or not (rises | ~continues_row[1:]).all():
            return None
    return _Rows(labels, indptr, indices, values)


def _parse_uint(b: np.ndarray, fs: np.ndarray, fe: np.ndarray) -> np.ndarray | None:
    """Integers spelled by the non-empty fields ``b[fs:fe]`` if all are digits (at most 10), else None."""
    value = np.zeros(fs.size, np.int64)
    n = fe - fs
    if fs.size and n.max() > 10:
        return None
    for j in range(int(n.max()) if fs.size else 0):  # Horner, one character column at a time
        live = j < n
        digit = b[np.minimum(fs + j, b.size - 1)] - np.uint8(ord("0"))  # wraps above 9 if not a digit
        if not ((digit <= 9) | ~live).all():
            return None
        value = np.where(live, value * 10 + digit, value)
    return value


def _parse_decimals(data: bytes, b: np.ndarray, fs: np.ndarray, fe: np.ndarray) -> np.ndarray | None:
    """Finite floats spelled by the non-empty fields ``b[fs:fe]``, else None.

    Plain decimals (optional sign, at most 15 digits, optional point) are converted in bulk: the
    digits form an integer below 2**53 and 10**k is exact, so one division rounds exactly as
    ``float()`` does. Anything else (exponents, long digit strings) goes through ``float()``.
    """
    out = np.empty(fs.size)
    if fs.size == 0:
        return out
    n = fe - fs
    lead = b[fs]
    negative = lead == ord("-")
    plain = negative | (lead == ord("+"))  # a sign is allowed in column 0 only
    mantissa = np.zeros(fs.size, np.int64)
    n_digit = np.zeros(fs.size, np.int64)
    n_frac = np.zeros(fs.size, np.int64)
    seen_point = np.zeros(fs.size, bool)
    for j in range(min(int(n.max()), _FAST_DIGITS + 2)):
        live = j < n
        c = b[np.minimum(fs + j, b.size - 1)]
        digit = c - np.uint8(ord("0"))
        is_digit = live & (digit <= 9)
        is_point = live & (c == ord("."))
        ok = is_digit | is_point | ~live
        if j == 0:
            plain |= ok
        else:
            plain &= ok & ~(is_point & seen_point)
        seen_point |= is_point
        mantissa = np.where(is_digit, mantissa * 10 + digit, mantissa)
        n_digit += is_digit
        n_frac += is_digit & seen_point
    plain &= (n_digit >= 1) & (n_digit <= _FAST_DIGITS) & (n <= _FAST_DIGITS + 2)
    value = mantissa / _POW10_FLOAT[n_frac]
    out[plain] = np.where(negative, -value, value)[plain]
    for k in np.flatnonzero(~plain):
        token = data[fs[k] : fe[k]]
        if not _NUMBER_BYTES.fullmatch(token):
            return None
        out[k] = float(token)
        if not math.isfinite(out[k]):
            return None
    return out


def _parse_slow(data: bytes, path: str, d: int | None) -> _Rows:
    """Line-by-line reference parser: slow, but names the file, line and reason of the first error."""
    limit = _INDEX_MAX if d is None else d
    labels: list[float] = []
    counts: list[int] = []
    indices: list[int] = []
    values: list[float] = []
    for lineno, line in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
        tokens = [t for t in _BLANKS.split(line.partition("#")[0]) if t]
        if not tokens:
            continue
        where = f"{path}:{lineno}"
        labels.append(_number(tokens[0], "label", where))
        previous = 0
        for token in tokens[1:]:
            if token.count(":") != 1:
                raise ValueError(f"{where}: feature {token!r} is not of the form index:value")
            index_text, _, value_text = token.partition(":")
            if not _DIGITS.fullmatch(index_text) or int(index_text) < 1:
                raise ValueError(f"{where}: index {index_text!r} is not a positive integer (indices are 1-based)")
            index = int(index_text)
            if index > limit:
                expected = f"the declared dimension d={d}" if d is not None else f"the maximum {_INDEX_MAX}"
                raise ValueError(f"{where}: index {index} exceeds {expected}")
            if index <= previous:
                raise ValueError(
                    f"{where}: indices must be strictly increasing within a line, but {index} follows {previous}"
                )
            values.append(_number(value_text, f"value of index {index}", where))
            indices.append(index)
            previous = index
        counts.append(len(tokens) - 1)
    return _Rows(
        labels=np.array(labels, dtype=np.float64),
        indptr=np.concatenate(([0], np.cumsum(counts, dtype=np.int64))),
        indices=np.array(indices, dtype=np.int64),
        values=np.array(values, dtype=np.float64),
    )


def _number(text: str, what: str, where: str) -> float:
    """``float(text)`` for a decimal number; NaN, inf and anything else is an ValueError."""
    try:
        x = float(text)
    except ValueError:
        x = None
    if x is not None and not math.isfinite(x):
        raise ValueError(f"{where}: {what} {text!r} is not finite; expected a finite number")
    if x is None or not _NUMBER_STR.fullmatch(text):
        raise ValueError(f"{where}: {what} {text!r} is not a number")
    return x


def shard_bounds(N: int, n: int) -> list[tuple[int, int]]:
    """Row ranges of the ``n`` sequential shards: ``m = N // n`` each, the last also takes the rest."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= N:
        raise ValueError(f"cannot split {N} rows among {n!r} workers; expected 1 <= workers <= {N}")
    m = N // n
    return [(i * m, (i + 1) * m if i < n - 1 else N) for i in range(n)]


def shard(ds: Dataset, n: int) -> list[tuple[sp.csr_matrix, np.ndarray]]:
    """The ``(A_i, y_i)`` row slices of ``ds`` for ``n`` workers, per ``shard_bounds``."""
    return [(ds.A[lo:hi], ds.y[lo:hi]) for lo, hi in shard_bounds(ds.N, n)]
