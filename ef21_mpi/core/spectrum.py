"""The bottom of the spectrum of a Gram matrix ``W^T W``: which computed eigenvalues are zero, and the smallest
positive one (the PL constant of least squares at ``lam = 0``, SPEC 1.2).

Zero or not is decided against a bound on the rounding error of the computation (`zero_tolerance`), not by a guess:
every dot product that forms ``W^T W`` (or applies it as ``W^T (W v)``) has at most ``rows + columns`` terms and the
symmetric eigensolver adds a backward error of ``eps ||W^T W||`` times a modest function of the size, so a computed eigenvalue whose exact value is 0
is at most ``eps (rows + columns) ||W||_F^2`` in size. Above that the eigenvalue is certainly positive; below it this
computation cannot tell it from zero. (numpy's ``matrix_rank`` uses ``eps d lambda_max``, which leaves out the error
of forming the Gram matrix: on a9a, n = 20, the most negative computed zero eigenvalue is already 0.6 times that.)
Nothing here forms a dense ``d x d`` matrix when both sides of ``W`` are larger than ``dense_max_d``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

EPS = float(np.finfo(np.float64).eps)
#: Lanczos: Ritz values asked for per pass at first, the smallest Krylov basis, and the passes allowed.
FIRST_BLOCK, MIN_NCV, MAX_PASSES = 12, 40, 64
#: ARPACK's relative residual for the Ritz pairs: the value returned is a Rayleigh quotient, accurate to about the
#: square of it (times lambda / gap), which is why 1e-6 suffices and is 2-10x cheaper than 1e-10 (a9a, w8a).
ARPACK_TOL = 1e-6


class PositiveEig(NamedTuple):
    """The smallest eigenvalue above ``tolerance`` (0 when there is none), how many of the ``d`` eigenvalues are
    counted as zero (``None`` when Lanczos found the value without counting them) and whether any is."""

    value: float
    zeros: int | None
    tolerance: float
    singular: bool


def nonzero_part(W: sp.spmatrix) -> sp.csr_matrix:
    """``W`` without its all-zero rows and columns: ``W^T W`` loses only zero eigenvalues (and ``W W^T`` too)."""
    W = sp.csr_matrix(W, copy=True)
    W.eliminate_zeros()  # (on the copy: the caller's matrix keeps its stored zeros)
    rows = np.flatnonzero(np.diff(W.indptr))
    cols = np.flatnonzero(np.bincount(W.indices, minlength=W.shape[1]))
    return W[rows][:, cols]


def zero_tolerance(W: sp.spmatrix) -> float:
    """``eps (r + c) ||W||_F^2`` with ``r x c`` the shape of `nonzero_part` (module docstring): the largest value a
    computed eigenvalue of ``W^T W`` may take when the exact one is zero."""
    W = nonzero_part(W)
    return EPS * (W.shape[0] + W.shape[1]) * float(np.sum(W.data**2))


def positive_of(eigs: np.ndarray, tolerance: float) -> PositiveEig:
    """From the full (ascending) spectrum of a dense ``d x d`` Gram matrix."""
    above = eigs[eigs > tolerance]
    zeros = int(eigs.size - above.size)
    return PositiveEig(float(above[0]) if above.size else 0.0, zeros, tolerance, zeros > 0)


def smallest_positive_eig(W: sp.spmatrix, dense_max_d: int) -> PositiveEig:
    """The smallest positive eigenvalue of ``W^T W``.

    Zero rows and columns go first; then the smaller of ``W^T W`` and ``W W^T`` (same nonzero spectrum) is either
    formed densely (side ``<= dense_max_d``) or handed to `_lanczos_positive`.
    """
    d, tolerance = W.shape[1], zero_tolerance(W)
    S = nonzero_part(W)
    if S.shape[0] < S.shape[1]:
        S = sp.csr_matrix(S.T)
    side = S.shape[1]
    if side == 0:
        return PositiveEig(0.0, d, tolerance, d > 0)
    if side <= max(dense_max_d, 2 * FIRST_BLOCK + 2):  # (ARPACK needs room for its Krylov basis)
        found = positive_of(np.linalg.eigvalsh((S.T @ S).toarray()), tolerance)
        zeros = d - (side - found.zeros)
        return PositiveEig(found.value, zeros, tolerance, zeros > 0)
    value, deflated = _lanczos_positive(S, tolerance)
    return PositiveEig(value, None, tolerance, side < d or deflated > 0)


def _lanczos_positive(S: sp.csr_matrix, tolerance: float) -> tuple[float, int]:
    """Lanczos (ARPACK) for the smallest eigenvalues of ``S^T S``, deflating the null space as it shows up.

    Lanczos finds the bottom of the spectrum even from a rounding-sized component, so a null space cannot be kept out
    by starting in the range of ``S^T`` (a random combination of its rows, so that every positive eigenvector is in
    the start); that start only makes it show up late. Each pass asks for the ``block`` smallest converged Ritz pairs.
    If one of them is above ``tolerance``, the smallest such is the answer: the Krylov space holds the bottom of the
    positive spectrum before anything above it. If all are at or below it, they are null vectors: the next pass works
    on ``S^T S + Y Y^T`` (``S`` scaled to ``||S||_F = 1 >= lambda_max``) with ``Y`` the null vectors found so far,
    which moves them to the top of the spectrum and leaves the rest as it was, and asks for more pairs. The answer
    is the Rayleigh quotient ``||S u||^2`` of its Ritz vector ``u`` with ``Y`` projected out, an eigenvalue estimate of
    ``S^T S`` itself, returned with the number of null vectors deflated.
    """
    size = S.shape[1]
    scale = float(np.sum(S.data**2))  # ||S||_F^2 >= lambda_max
    S = S / np.sqrt(scale)  # so that ARPACK's absolute floor for Ritz values near 0 (tol eps^(2/3)) is relative
    shift = 1.0
    Y = np.zeros((size, 0))
    v0 = S.T @ np.random.default_rng(0).standard_normal(S.shape[0])  # fixed: the constants are a function of the data
    block = FIRST_BLOCK
    for _ in range(MAX_PASSES):
        def gram(v, Y=Y):
            out = S.T @ (S @ v)
            return out + shift * (Y @ (Y.T @ v)) if Y.shape[1] else out

        block = min(block, size - 2)
        op = LinearOperator((size, size), matvec=gram, dtype=np.float64)
        try:
            values, vectors = eigsh(op, k=block, which="SA", v0=v0, tol=ARPACK_TOL, ncv=min(size, max(2 * block + 1,
                                    MIN_NCV)), maxiter=100 * size)
        except ArpackNoConvergence:
            break
        null = values <= tolerance / scale
        if not null.all():
            u = vectors[:, int(np.argmin(np.where(null, np.inf, values)))]
            u = u - Y @ (Y.T @ u)
            return scale * float(np.sum((S @ u) ** 2) / (u @ u)), Y.shape[1]
        found = vectors[:, null] - Y @ (Y.T @ vectors[:, null])
        Y = np.hstack([Y, np.linalg.qr(found)[0]])
        block = max(block, 2 * int(null.sum()) + 1)
        if Y.shape[1] >= size - 2:
            break
    raise ValueError(f"Lanczos did not separate the smallest positive eigenvalue of the mean Hessian from its null "
                     f"space ({Y.shape[1]} null vectors deflated); rerun with --lam > 0 or --stepsize")
