"""The constants of SPEC 1 behind the stepsizes and the theory: ``L_i``, ``L``, ``L~`` and, for least squares,
``mu`` (strong convexity, or at ``lam = 0`` the PL constant) and ``f*``. A pure function of the data: Gram
matrices below `DENSE_EIG_MAX_D`, Lanczos (`core.spectrum`) above, never a d x d matrix there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from ef21_mpi.core import spectrum
from ef21_mpi.core.problems import LeastSquaresShards

#: Above this dimension the Gram matrices are never formed; eigenvalues come from Lanczos.
DENSE_EIG_MAX_D = 500


def _extreme_eig(stacked: sp.csr_matrix, which: str) -> float:
    """Largest (``"LA"``) or smallest (``"SA"``) eigenvalue of ``stacked^T stacked`` without a d x d matrix when d is large."""
    if which == "LA" and stacked.shape[0] < stacked.shape[1]:
        stacked = sp.csr_matrix(stacked.T)  # S^T S and S S^T share their nonzero spectrum: work in the smaller space
    d = stacked.shape[1]
    if d <= DENSE_EIG_MAX_D:
        gram = (stacked.T @ stacked).toarray()
        eigs = np.linalg.eigvalsh(gram)
        return float(eigs[-1] if which == "LA" else eigs[0])
    op = LinearOperator((d, d), matvec=lambda v: stacked.T @ (stacked @ v), dtype=np.float64)
    v0 = np.ones(d)  # fixed start: the constants are a pure function of the data
    value = eigsh(op, k=1, which=which, v0=v0, tol=1e-12, return_eigenvectors=False)[0]
    return float(value)


#: What ``mu`` is (the log's ``mu_kind``): ``lambda_min + lam > 0``, or at ``lam = 0`` on rank-deficient data the PL
#: constant, the smallest positive eigenvalue of the mean Hessian (SPEC 1.2).
MU_STRONG, MU_PL = "strong convexity", "PL: smallest positive eigenvalue"


@dataclass(frozen=True)
class Constants:
    """Smoothness (and, for least squares, strong convexity or PL) constants of SPEC 1."""

    L_i: np.ndarray
    L: float
    L_tilde: float
    mu: float | None = None
    f_star: float | None = None  # least squares: the exact optimum value, so f(x^t) - f* can be logged
    mu_kind: str | None = None  # MU_STRONG or MU_PL (least squares)


def _hessian_scale(problem: str) -> float:
    # The logistic loss has curvature at most 1/4; least squares exactly 1.
    return 0.25 if problem == "logreg" else 1.0


def _regulariser_curvature(problem: str, lam: float) -> float:
    # lam * x^2/(1+x^2) has second derivative at most 2 lam; lam/2 ||x||^2 exactly lam.
    return 2.0 * lam if problem == "logreg" else lam


def smoothness_constants(problem: str, shards: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float) -> Constants:
    """``L_i``, ``L`` (smoothness of the mean of the ``f_i``) and ``L~ = sqrt(mean L_i^2)``; ``mu`` for least squares."""
    f_star = least_squares_optimum(shards, lam)[1] if problem == "least-squares" else None
    return constants_from_curvature(problem, curvature(problem, shards, lam), lam, f_star)


def curvature(problem: str, shards: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float | None = None) -> dict:
    """The data's part of the constants: the largest eigenvalue of each ``c A_i^T A_i / N_i`` (``eig_i``), of their
    mean (``eig``) and, for least squares, the smallest of the mean (``eig_min``, what ``lam > 0`` needs) and its
    smallest positive one (``eig_min_positive``, what ``lam = 0`` needs; `_bottom_of_spectrum`). ``lam = None`` (a
    shard store): everything, so that the constants follow for any ``lam``."""
    c = _hessian_scale(problem)
    n = len(shards)
    eig_i = np.array([_extreme_eig(A * np.sqrt(c / max(A.shape[0], 1)), "LA") for A, _ in shards], dtype=np.float64)
    # (1/n) sum_i c A_i^T A_i / N_i  ==  W^T W with the rows of shard i scaled by sqrt(c / (n N_i)).
    W = sp.vstack([A * np.sqrt(c / (n * max(A.shape[0], 1))) for A, _ in shards], format="csr")
    eigs = {"eig_i": eig_i, "eig": _extreme_eig(W, "LA"), "eig_min": None}
    if problem == "least-squares":
        eigs["eig_min"], eigs["eig_min_positive"] = _bottom_of_spectrum(W, lam)
    return eigs


def _bottom_of_spectrum(W: sp.csr_matrix, lam: float | None) -> tuple[float, float | None]:
    """``lambda_min(W^T W)`` and its smallest positive eigenvalue (`core.spectrum`), each when ``lam`` needs it.

    ``lambda_min`` is computed as it always was, so that logs keep their bits; when it is certainly positive it is
    also the smallest positive eigenvalue, bit for bit. With Lanczos, data whose null space has shown up need no
    ``lambda_min`` at ``lam = 0`` (it is 0), and where Lanczos cannot converge to a cluster of zero eigenvalues the
    smallest positive one decides: ``lambda_min`` is then 0, or that eigenvalue if no null vector was seen.
    """
    want_min, want_positive = lam is None or lam > 0, lam is None or lam == 0
    if W.shape[1] <= DENSE_EIG_MAX_D:  # `_extreme_eig`'s dense branch, keeping the whole spectrum
        eigs = np.linalg.eigvalsh((W.T @ W).toarray())
        if not want_positive:
            return float(eigs[0]), None
        return float(eigs[0]), spectrum.positive_of(eigs, spectrum.zero_tolerance(W)).value
    found = failure = None
    if want_positive:
        try:
            found = spectrum.smallest_positive_eig(W, DENSE_EIG_MAX_D)
        except ValueError as err:  # needed only if lambda_min is not certainly positive
            failure = err
    if not want_min and found is not None and found.singular:
        return 0.0, found.value
    try:
        low = _extreme_eig(W, "SA")
    except ArpackNoConvergence:
        if failure is not None:
            raise failure from None
        found = found or spectrum.smallest_positive_eig(W, DENSE_EIG_MAX_D)
        return (0.0 if found.singular else found.value), found.value if want_positive else None
    if not want_positive:
        return low, None
    if low > spectrum.zero_tolerance(W):
        return low, low
    if failure is not None:
        raise failure
    return low, found.value


def constants_from_curvature(problem: str, eigs: dict, lam: float, f_star: float | None = None) -> Constants:
    """`Constants` from `curvature`'s eigenvalues plus the regulariser's curvature (a prepared shard store keeps
    the eigenvalues, so a run on it needs no pass over the data).

    Least squares: ``mu = lambda_min + lam`` (strong convexity); at ``lam = 0`` with a smallest eigenvalue that is not
    certainly positive, ``mu`` = the smallest positive eigenvalue, the PL constant (SPEC 1.2).
    """
    reg = _regulariser_curvature(problem, lam)
    L_i = np.asarray(eigs["eig_i"], dtype=np.float64) + reg
    mu = kind = None
    if problem == "least-squares":
        mu, kind = eigs["eig_min"] + reg, MU_STRONG
        positive = eigs.get("eig_min_positive")
        if lam == 0 and positive is not None and not (positive > 0 and positive == eigs["eig_min"]):
            mu, kind = positive, MU_PL
    return Constants(L_i=L_i, L=eigs["eig"] + reg, L_tilde=float(np.sqrt(np.mean(L_i**2))), mu=mu, f_star=f_star,
                     mu_kind=kind)


def least_squares_optimum(shards: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float) -> tuple[np.ndarray, float]:
    """``x*`` and ``f* = f(x*)`` of SPEC 1.2 from the normal equations ``(mean_i A_i^T A_i / N_i + lam I) x = mean_i A_i^T y_i / N_i``.

    At ``lam = 0`` on rank-deficient data they are singular but consistent: ``x*`` is then their minimum-norm solution
    (pseudo-inverse over the eigenvalues above `spectrum.zero_tolerance`; conjugate gradients from 0 converge to it
    too, the right-hand side being in the range), and ``f*`` is the same for every solution.
    """
    n = len(shards)
    W = sp.vstack([A / np.sqrt(n * A.shape[0]) for A, _ in shards], format="csr")
    rhs = sum(A.T @ y / A.shape[0] for A, y in shards) / n
    d = W.shape[1]
    if d <= DENSE_EIG_MAX_D:
        gram = (W.T @ W).toarray()
        x_star = None
        if lam == 0:
            eigs, V = np.linalg.eigh(gram)
            keep = eigs > spectrum.zero_tolerance(W)
            if not keep.all():
                x_star = V[:, keep] @ ((V[:, keep].T @ rhs) / eigs[keep])
        if x_star is None:
            x_star = np.linalg.solve(gram + lam * np.eye(d), rhs)
    else:
        from scipy.sparse.linalg import cg

        op = LinearOperator((d, d), matvec=lambda v: W.T @ (W @ v) + lam * v, dtype=np.float64)
        x_star, info = cg(op, rhs, rtol=1e-13, maxiter=10 * d)
        if info != 0:
            raise RuntimeError(f"conjugate gradients did not reach x* for least squares (info={info})")
    f_star = LeastSquaresShards(shards, lam).loss(x_star)
    return x_star, f_star
