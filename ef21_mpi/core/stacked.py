"""Sparse products over the stacked shards of a worker group (`core.problems`), written into arrays of ours.

The rows of all workers are stacked in one CSR matrix; the blocks' transposes are stacked block-diagonally
(`stacked_transpose`), so one product gives every worker's ``A_i^T s_i``. `matvec_into` calls the kernel
behind scipy's ``M @ v`` with an output array the caller keeps (the same additions in the same order: the
same bits), and `row_block` cuts the stacked transpose into the rows of a block of workers.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

try:  # the kernels behind ``M @ v``, called with an output array of ours
    from scipy.sparse import _sparsetools
except ImportError:  # pragma: no cover - a scipy without them: ``M @ v`` and a copy
    _sparsetools = None


def stacked_transpose(M: sp.csr_matrix, bounds: np.ndarray, d: int, fmt: str) -> sp.spmatrix:
    """The transposes of ``M``'s row blocks ``bounds[i]:bounds[i+1]``, stacked block-diagonally: (m d) x N.

    Row ``i d + k`` holds column ``k`` of block ``i``, so ``M_T @ s`` gives every block's ``M_i^T s_i``.
    ``fmt`` is ``"csr"`` or ``"csc"``; the CSC form is ``M`` itself with block ``i``'s columns shifted by ``i d``.
    """
    m, N = len(bounds) - 1, M.shape[0]
    block_of_row = np.repeat(np.arange(m, dtype=np.int64), np.diff(bounds))
    shift = np.repeat(block_of_row * d, np.diff(M.indptr))
    index_dtype = np.int64 if m * d >= 2**31 else np.int32
    csc = sp.csc_matrix((M.data, (M.indices + shift).astype(index_dtype), M.indptr), shape=(m * d, N))
    return csc if fmt == "csc" else sp.csr_matrix(csc)


def matvec_into(M: sp.spmatrix, v: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = M @ v`` without a fresh output array: scipy's own kernel (``csr_matvec`` / ``csc_matvec``, the
    one ``M @ v`` calls) adds into the zeroed ``out``, so the bits are those of ``M @ v``."""
    out[:] = 0.0
    v = np.ascontiguousarray(v, dtype=np.float64)
    if _sparsetools is None or M.format not in ("csr", "csc") or M.dtype != np.float64:
        out += M @ v  # 0 + p = p: still the bits of M @ v
        return
    kernel = _sparsetools.csr_matvec if M.format == "csr" else _sparsetools.csc_matvec
    kernel(M.shape[0], M.shape[1], M.indptr, M.indices, M.data, v, out)


def row_block(MT: sp.spmatrix, r0: int, r1: int, c0: int, c1: int) -> sp.spmatrix:
    """Rows ``r0 .. r1 - 1`` of ``MT`` as a matrix of their own, in ``MT``'s format and entry order, given that
    their entries lie in columns ``c0 .. c1 - 1`` (a CSC block keeps only those columns, a CSR block all)."""
    if MT.format == "csr":
        p0, p1 = MT.indptr[r0], MT.indptr[r1]
        return sp.csr_matrix((MT.data[p0:p1], MT.indices[p0:p1], MT.indptr[r0:r1 + 1] - p0), shape=(r1 - r0, MT.shape[1]))
    p0, p1 = MT.indptr[c0], MT.indptr[c1]
    return sp.csc_matrix((MT.data[p0:p1], MT.indices[p0:p1] - r0, MT.indptr[c0:c1 + 1] - p0), shape=(r1 - r0, c1 - c0))
