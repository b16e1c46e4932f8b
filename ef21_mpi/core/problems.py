"""The objective functions ``f_i`` held by the workers (SPEC 1), and their smoothness constants.

A problem shard is a value: ``loss(x)``, ``grad(x)``, ``loss_and_grad(x)`` on the worker's own rows.
Nothing here knows about workers, messages or MPI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from ef21_mpi.core import spectrum
from ef21_mpi.core.stacked import matvec_into, row_block, stacked_transpose

#: Above this dimension the Gram matrices are never formed; eigenvalues come from Lanczos.
DENSE_EIG_MAX_D = 500
#: The stacked transposes go to CSC when their rows hold fewer nonzeros than this on average.
CSC_BELOW_NNZ_PER_ROW = 8



class _ShardGroup:
    """The ``f_i`` of the m workers one process holds, evaluated for all of them in one pass.

    All rows are stacked in one CSR matrix (for the per-row products ``A x``); the blocks' transposes are
    stacked block-diagonally, so one CSR product gives every worker's ``A_i^T s_i`` as a row of an m x d
    array. Each row is summed exactly as a lone worker sums it (the same terms in the same order), so the
    results do not depend on how workers are grouped into processes: a serial run of n workers and n MPI
    ranks of one worker each agree bit for bit.

    A gradient evaluation is two steps, so that a caller can take the workers in cache-sized blocks:
    `row_pass` (every row's weight ``s_j``, and the losses) and `grads_into` (rows ``lo .. hi - 1`` of
    ``grad_i = A_i^T s_i + r(x)``, written into a buffer the caller keeps).
    """

    def __init__(self, blocks: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float):
        self.m = len(blocks)
        self.d = blocks[0][0].shape[1]
        self.lam = float(lam)
        self.n_rows = np.array([A.shape[0] for A, _ in blocks], dtype=np.int64)
        self.bounds = np.concatenate([[0], np.cumsum(self.n_rows)])
        # 1/N_i on every row of worker i (1 for an empty worker, whose rows never occur)
        self.row_count = np.repeat(np.maximum(self.n_rows, 1).astype(np.float64), self.n_rows)
        self._per_row = np.empty(int(self.bounds[-1]))  # the products M x of every round, allocated once
        self._blocks: dict[tuple[int, int], tuple[sp.spmatrix, int, int]] = {}

    def _stack(self, blocks: Sequence[sp.csr_matrix]) -> tuple[sp.csr_matrix, sp.spmatrix]:
        """``(M, M_T)``: the rows stacked, and the blocks' transposes stacked block-diagonally (m d x N)."""
        M = sp.vstack(blocks, format="csr") if self.m > 1 else sp.csr_matrix(blocks[0])
        # CSR walks M_T's m d rows; when they hold few nonzeros each (large d, or many workers: a9a with 1000
        # workers has 3.7 per row) the per-row overhead dominates, and CSC, whose product walks the nonzeros only,
        # is faster (a9a, 1000 workers: 1.2 instead of 3.7 ms; d = 10^6: 53 instead of 99 ms). Both forms add
        # each output's terms in row order from 0, so they give the same bits (tests/test_worker.py).
        sparse_rows = CSC_BELOW_NNZ_PER_ROW * self.m * self.d > M.nnz
        return M, stacked_transpose(M, self.bounds, self.d, "csc" if sparse_rows else "csr")

    def _rows_times(self, M: sp.csr_matrix, x: np.ndarray) -> np.ndarray:
        """``M x`` (every stacked row) into the group's buffer, which the next call overwrites."""
        matvec_into(M, x, self._per_row)
        return self._per_row

    def _block(self, lo: int, hi: int) -> tuple[sp.spmatrix, int, int]:
        """``(M_T's rows for workers lo .. hi - 1 as a matrix, c0, c1)``: its product with ``s[c0:c1]`` gives their
        ``A_i^T s_i``, the terms of each output added in the same order as ``M_T @ s`` does. Kept for the next round."""
        MT = self._MT
        if lo == 0 and hi == self.m:
            return MT, 0, MT.shape[1]
        if (lo, hi) not in self._blocks:
            c0, c1 = int(self.bounds[lo]), int(self.bounds[hi])  # the columns of these workers' data rows
            block = row_block(MT, lo * self.d, hi * self.d, c0, c1)
            self._blocks[lo, hi] = (block, c0, c1) if block.format == "csc" else (block, 0, MT.shape[1])
        return self._blocks[lo, hi]

    def row_pass(self, x: np.ndarray, with_losses: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """``(s, losses)``: every row's weight (``grad_i = A_i^T s_i + r(x)``) and, if asked, every ``f_i(x)``."""
        raise NotImplementedError

    def regulariser_grad(self, x: np.ndarray) -> np.ndarray:
        """``r(x)``, the gradient of the regulariser every ``f_i`` shares."""
        raise NotImplementedError

    def grads_into(self, s: np.ndarray, reg: np.ndarray, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """``out`` (a C-contiguous (hi - lo) x d array) = the gradients of workers ``lo .. hi - 1`` from `row_pass`'s
        ``s`` and ``reg = r(x)`` (a d-vector, or rows of it: ``reg[:hi - lo]`` is added elementwise)."""
        if not out.flags.c_contiguous:
            raise ValueError("the gradient buffer must be C-contiguous")
        block, c0, c1 = self._block(lo, hi)
        matvec_into(block, s[c0:c1], out.reshape(-1))
        np.add(out, reg if reg.ndim == 1 else reg[:hi - lo], out=out)
        return out

    def _segment_sums(self, per_row: np.ndarray) -> np.ndarray:
        """``sum_{j in rows of i} per_row[j]`` for each worker: one ``reduceat``, each segment summed on its own."""
        if per_row.size == 0:
            return np.zeros(self.m)
        sums = np.add.reduceat(per_row, np.minimum(self.bounds[:-1], per_row.size - 1))
        sums[self.n_rows == 0] = 0.0  # reduceat gives an empty segment the next row's value
        return sums

    def grads(self, x: np.ndarray) -> np.ndarray:
        """Every worker's ``grad f_i(x)`` as the rows of an m x d array."""
        return self.losses_and_grads(x, with_losses=False)[1]

    def losses_and_grads(self, x: np.ndarray, with_losses: bool = True,
                         out: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """Every ``f_i(x)`` (if asked) and every gradient (in ``out``, an m x d array, when given)."""
        s, losses = self.row_pass(x, with_losses)
        out = np.empty((self.m, self.d)) if out is None else out
        return losses, self.grads_into(s, self.regulariser_grad(x), 0, self.m, out)

    def _batch_weights(self, per_row: np.ndarray, picked: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The weights ``w`` of a minibatch gradient ``A_S^T w`` from its rows' products, for rows ``picked`` of the
        stack in batches of ``counts`` rows (one count per row)."""
        raise NotImplementedError

    def minibatch_grads(self, x: np.ndarray, rows: Sequence[np.ndarray], workers: np.ndarray | None = None,
                        out: np.ndarray | None = None) -> np.ndarray:
        """The gradients of workers ``workers`` (default: all, in order) on their minibatches (EF21-SGD): row ``j``
        uses worker ``workers[j]``'s rows ``rows[j]`` (indices into its shard, increasing) and the full regulariser.

        All batches go through one product: the picked rows are stacked, and their per-worker transposes stacked
        block-diagonally as for full gradients, so each row is summed exactly as a lone worker sums its batch.
        """
        workers = np.arange(self.m) if workers is None else np.asarray(workers, dtype=np.int64)
        counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        out = np.empty((len(rows), self.d)) if out is None else out
        picked = (np.concatenate(rows).astype(np.int64, copy=False) if len(rows) else np.empty(0, np.int64)) \
            + np.repeat(self.bounds[workers], counts)
        reg = self.regulariser_grad(x)
        if picked.size == 0:
            out[:] = 0.0
            out += reg
            return out
        stacked = self._M[picked]
        weights = self._batch_weights(stacked @ x, picked, np.repeat(counts, counts).astype(np.float64))
        batches = np.concatenate([[0], np.cumsum(counts)])
        matvec_into(stacked_transpose(stacked, batches, self.d, "csc"), weights, out.reshape(-1))
        out += reg
        return out

    def minibatch_grad(self, x: np.ndarray, rows: np.ndarray, worker: int = 0) -> np.ndarray:
        """Worker ``worker``'s gradient on its ``rows`` plus the full regulariser (`minibatch_grads` for one)."""
        return self.minibatch_grads(x, [np.asarray(rows)], np.array([worker]))[0]

    # -- the mean of the group's f_i (for one worker: f_i itself) ----------------------------------
    def loss(self, x: np.ndarray) -> float:
        return float(self.losses_and_grads(x)[0].mean())

    def grad(self, x: np.ndarray) -> np.ndarray:
        return self.grads(x).mean(axis=0)

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        losses, grads = self.losses_and_grads(x)
        return float(losses.mean()), grads.mean(axis=0)


class LogisticShards(_ShardGroup):
    """``f_i(x) = mean_j log(1 + exp(-y_j a_j^T x)) + lam * sum_k x_k^2 / (1 + x_k^2)`` (SPEC 1.1, paper eq. (19)).

    Rows are kept label-scaled, ``b_j = y_j a_j``, so the margins are ``B x``.
    """

    def __init__(self, blocks: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float):
        super().__init__(blocks, lam)
        self.B, self.BT = self._stack([sp.csr_matrix(sp.diags(y) @ A) for A, y in blocks])
        self._M, self._MT = self.B, self.BT
        self._zero_rows = np.zeros(self.B.shape[0])

    def _regulariser_value(self, x: np.ndarray) -> float:
        x2 = x * x
        return self.lam * float(np.add.reduce(x2 / (1.0 + x2)))  # np.sum's reduction, without its wrapper

    def regulariser_grad(self, x: np.ndarray) -> np.ndarray:
        # 2 lam x / (1 + x^2)^2, with two temporaries (this runs every round on every worker)
        denominator = x * x
        denominator += 1.0
        denominator *= denominator
        g = x * (2.0 * self.lam)
        g /= denominator
        return g

    def _row_losses(self, margins: np.ndarray) -> np.ndarray:
        # log(1 + exp(-m)) = log1p(exp(-|m|)) - min(m, 0): stable for any margin. min(m, 0) against an array of
        # zeros takes numpy's vector loop (4x faster than against the scalar 0); the two may differ only in the
        # sign of a zero, which log1p(...) - min(m, 0) does not see.
        loss = np.abs(margins)
        np.negative(loss, out=loss)
        np.exp(loss, out=loss)
        np.log1p(loss, out=loss)
        loss -= np.minimum(margins, self._zero_rows)
        return loss

    def _sigmoid_weights(self, margins: np.ndarray) -> np.ndarray:
        # d/dm log(1 + exp(-m)) / N_i = -1 / ((1 + exp(m)) N_i); exp overflowing to inf gives the right 0
        s = np.exp(margins)
        s += 1.0
        s *= self.row_count
        return np.divide(-1.0, s, out=s)

    def row_pass(self, x: np.ndarray, with_losses: bool) -> tuple[np.ndarray, np.ndarray | None]:
        margins = self._rows_times(self.B, x)
        with np.errstate(over="ignore"):
            s = self._sigmoid_weights(margins)
        if not with_losses:
            return s, None
        losses = self._segment_sums(self._row_losses(margins)) / np.maximum(self.n_rows, 1)
        return s, losses + self._regulariser_value(x)

    def _batch_weights(self, per_row: np.ndarray, picked: np.ndarray, counts: np.ndarray) -> np.ndarray:
        # -1 / ((1 + exp(m)) tau), as `_sigmoid_weights` with the batch size in place of N_i
        with np.errstate(over="ignore"):
            w = np.exp(per_row)
            w += 1.0
            w *= counts
            return np.divide(-1.0, w, out=w)


class LeastSquaresShards(_ShardGroup):
    """``f_i(x) = ||A_i x - y_i||^2 / (2 N_i) + lam/2 ||x||^2`` (SPEC 1.2)."""

    def __init__(self, blocks: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float):
        super().__init__(blocks, lam)
        self.A, self.AT = self._stack([sp.csr_matrix(A) for A, _ in blocks])
        self._M, self._MT = self.A, self.AT
        self.y = np.concatenate([np.asarray(y, dtype=np.float64) for _, y in blocks])

    def regulariser_grad(self, x: np.ndarray) -> np.ndarray:
        return self.lam * x

    def row_pass(self, x: np.ndarray, with_losses: bool) -> tuple[np.ndarray, np.ndarray | None]:
        r = self._rows_times(self.A, x)
        r -= self.y
        s = r / self.row_count
        if not with_losses:
            return s, None
        losses = self._segment_sums(r * r) / (2.0 * np.maximum(self.n_rows, 1)) + 0.5 * self.lam * float(x @ x)
        return s, losses

    def _batch_weights(self, per_row: np.ndarray, picked: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return (per_row - self.y[picked]) / counts


ShardGroup = LogisticShards | LeastSquaresShards


#: The registry: command-line name -> the shard group that evaluates it.
PROBLEMS: dict[str, type[_ShardGroup]] = {"logreg": LogisticShards, "least-squares": LeastSquaresShards}


def make_shards(problem: str, blocks: Sequence[tuple[sp.csr_matrix, np.ndarray]], lam: float) -> ShardGroup:
    """The objective of the workers holding ``blocks`` (one ``(A_i, y_i)`` per worker)."""
    cls = PROBLEMS.get(problem)
    if cls is None:
        raise ValueError(f"unknown problem {problem!r}; expected one of {', '.join(PROBLEMS)}")
    return cls(blocks, lam)


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
