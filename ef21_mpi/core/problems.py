"""The objective functions ``f_i`` held by the workers (SPEC 1); their constants are in `core.smoothness`.

A problem shard is a value: ``loss(x)``, ``grad(x)``, ``loss_and_grad(x)`` on the worker's own rows.
Nothing here knows about workers, messages or MPI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ef21_mpi.core.stacked import matvec_into, row_block, stacked_transpose

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
