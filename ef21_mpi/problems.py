"""The objective functions ``f_i`` held by the workers (SPEC 1), and their smoothness constants.

A problem shard is a value: ``loss(x)``, ``grad(x)``, ``loss_and_grad(x)`` on the worker's own rows.
Nothing here knows about workers, messages or MPI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.special import expit

from .errors import InputError

#: Above this dimension the Gram matrices are never formed; eigenvalues come from Lanczos.
DENSE_EIG_MAX_D = 500

PROBLEMS = ("logreg", "least-squares")


class Shard(Protocol):
    """What a worker needs from its part of the objective."""

    n_rows: int

    def loss(self, x: np.ndarray) -> float: ...

    def grad(self, x: np.ndarray) -> np.ndarray: ...

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]: ...

    def minibatch_grad(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray: ...


class LogisticShard:
    """``f_i(x) = mean_j log(1 + exp(-y_j a_j^T x)) + lam * sum_k x_k^2 / (1 + x_k^2)`` (SPEC 1.1, paper eq. (19))."""

    def __init__(self, A: sp.csr_matrix, y: np.ndarray, lam: float):
        # Label-scaled rows b_j = y_j a_j, kept in CSR (for B x) and in CSR of B^T (for B^T s).
        self.B = sp.csr_matrix(sp.diags(y) @ A)
        self.BT = sp.csr_matrix(self.B.T)
        self.lam = float(lam)
        self.n_rows = A.shape[0]
        self.d = A.shape[1]

    def _regulariser_value(self, x: np.ndarray) -> float:
        x2 = x * x
        return self.lam * float(np.sum(x2 / (1.0 + x2)))

    def _regulariser_grad(self, x: np.ndarray) -> np.ndarray:
        # 2 lam x / (1 + x^2)^2, with two temporaries (this runs every round on every worker)
        denominator = x * x
        denominator += 1.0
        denominator *= denominator
        g = x * (2.0 * self.lam)
        g /= denominator
        return g

    @staticmethod
    def _mean_logistic_loss(margins: np.ndarray) -> float:
        # log(1 + exp(-m)) = log1p(exp(-|m|)) + max(-m, 0): stable for any margin, cheaper than logaddexp
        return float(np.sum(np.log1p(np.exp(-np.abs(margins))) + np.maximum(-margins, 0.0))) / margins.shape[0]

    def loss(self, x: np.ndarray) -> float:
        data = self._mean_logistic_loss(self.B @ x) if self.n_rows else 0.0
        return data + self._regulariser_value(x)

    def _data_grad(self, margins: np.ndarray, BT: sp.csr_matrix, n_rows: int) -> np.ndarray:
        # d/dx log(1+exp(-m)) = -sigmoid(-m) * b; expit is stable for any margin.
        return BT @ (expit(-margins) * (-1.0 / n_rows))

    def grad(self, x: np.ndarray) -> np.ndarray:
        g = self._regulariser_grad(x)
        if self.n_rows:
            g += self._data_grad(self.B @ x, self.BT, self.n_rows)
        return g

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        reg_value, g = self._regulariser_value(x), self._regulariser_grad(x)
        if not self.n_rows:
            return reg_value, g
        margins = self.B @ x
        g += self._data_grad(margins, self.BT, self.n_rows)
        return self._mean_logistic_loss(margins) + reg_value, g

    def minibatch_grad(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Gradient of the loss on ``rows`` of this shard plus the full regulariser (EF21-SGD)."""
        Bs = self.B[rows]
        g = self._regulariser_grad(x)
        g += Bs.T @ (expit(-(Bs @ x)) * (-1.0 / len(rows)))
        return g


class LeastSquaresShard:
    """``f_i(x) = ||A_i x - y_i||^2 / (2 N_i) + lam/2 ||x||^2`` (SPEC 1.2)."""

    def __init__(self, A: sp.csr_matrix, y: np.ndarray, lam: float):
        self.A = sp.csr_matrix(A)
        self.AT = sp.csr_matrix(self.A.T)
        self.y = np.asarray(y, dtype=np.float64)
        self.lam = float(lam)
        self.n_rows = A.shape[0]
        self.d = A.shape[1]

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        r = self.A @ x - self.y
        n = max(self.n_rows, 1)
        value = float(r @ r) / (2.0 * n) + 0.5 * self.lam * float(x @ x)
        return value, self.AT @ (r / n) + self.lam * x

    def loss(self, x: np.ndarray) -> float:
        return self.loss_and_grad(x)[0]

    def grad(self, x: np.ndarray) -> np.ndarray:
        return self.loss_and_grad(x)[1]

    def minibatch_grad(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        As = self.A[rows]
        return As.T @ ((As @ x - self.y[rows]) / len(rows)) + self.lam * x


def make_shard(problem: str, A: sp.csr_matrix, y: np.ndarray, lam: float) -> Shard:
    if problem == "logreg":
        return LogisticShard(A, y, lam)
    if problem == "least-squares":
        return LeastSquaresShard(A, y, lam)
    raise InputError(f"unknown problem {problem!r}; expected one of {', '.join(PROBLEMS)}")


# --- smoothness constants -------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Constants:
    """Smoothness (and, for least squares, strong convexity) constants of SPEC 1."""

    L_i: np.ndarray
    L: float
    L_tilde: float
    mu: float | None = None
    f_star: float | None = None  # least squares: the exact optimum value, so f(x^t) - f* can be logged


def _hessian_scale(problem: str) -> float:
    # The logistic loss has curvature at most 1/4; least squares exactly 1.
    return 0.25 if problem == "logreg" else 1.0


def _regulariser_curvature(problem: str, lam: float) -> float:
    # lam * x^2/(1+x^2) has second derivative at most 2 lam; lam/2 ||x||^2 exactly lam.
    return 2.0 * lam if problem == "logreg" else lam


def smoothness_constants(problem: str, shards: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float) -> Constants:
    """``L_i``, ``L`` (smoothness of the mean of the ``f_i``) and ``L~ = sqrt(mean L_i^2)``; ``mu`` for least squares."""
    c = _hessian_scale(problem)
    reg = _regulariser_curvature(problem, lam)
    n = len(shards)
    L_i = np.array(
        [_extreme_eig(A * np.sqrt(c / max(A.shape[0], 1)), "LA") + reg for A, _ in shards], dtype=np.float64
    )
    # (1/n) sum_i c A_i^T A_i / N_i  ==  W^T W with the rows of shard i scaled by sqrt(c / (n N_i)).
    W = sp.vstack([A * np.sqrt(c / (n * max(A.shape[0], 1))) for A, _ in shards], format="csr")
    L = _extreme_eig(W, "LA") + reg
    mu = f_star = None
    if problem == "least-squares":
        mu = _extreme_eig(W, "SA") + reg
        f_star = least_squares_optimum(shards, lam)[1]
    return Constants(L_i=L_i, L=L, L_tilde=float(np.sqrt(np.mean(L_i**2))), mu=mu, f_star=f_star)


def least_squares_optimum(shards: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float) -> tuple[np.ndarray, float]:
    """``x*`` and ``f* = f(x*)`` of SPEC 1.2 from the normal equations ``(mean_i A_i^T A_i / N_i + lam I) x = mean_i A_i^T y_i / N_i``."""
    n = len(shards)
    W = sp.vstack([A / np.sqrt(n * A.shape[0]) for A, _ in shards], format="csr")
    rhs = sum(A.T @ y / A.shape[0] for A, y in shards) / n
    d = W.shape[1]
    if d <= DENSE_EIG_MAX_D:
        x_star = np.linalg.solve((W.T @ W).toarray() + lam * np.eye(d), rhs)
    else:
        from scipy.sparse.linalg import cg

        op = LinearOperator((d, d), matvec=lambda v: W.T @ (W @ v) + lam * v, dtype=np.float64)
        x_star, info = cg(op, rhs, rtol=1e-13, maxiter=10 * d)
        if info != 0:
            raise RuntimeError(f"conjugate gradients did not reach x* for least squares (info={info})")
    f_star = float(np.mean([LeastSquaresShard(A, y, lam).loss(x_star) for A, y in shards]))
    return x_star, f_star
