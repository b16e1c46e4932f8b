"""The workers one process holds: their shards, their method state, and what they do in a round.

The serial backend holds all n workers in one group; an MPI rank holds a block of them (often one). The
gradients of a group come from one pass over its stacked shards (`core.problems`), and the method's
worker side updates the whole group in one call (every array has a leading worker axis). Each row is
computed exactly as for a lone worker, so the grouping never changes a number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ef21_mpi.core.methods import Messages, Method, Workers
from ef21_mpi.core.problems import ShardGroup


class WorkerFailed(Exception):
    """A round of the group raised: ``who`` is the worker (or, for the shared pass, the group), ``detail`` the error."""

    def __init__(self, who: str, t: int, detail: str):
        super().__init__(f"{who} failed in round {t}: {detail}")
        self.who, self.detail = who, detail


class WorkerGroup:
    """Workers ``first .. first + m - 1``: their gradients at the broadcast ``x``, state updates and messages.

    On a logged round the group also fills its monitoring rows ``[grad_i(x), f_i(x), ||g_i - grad_i(x)||^2]``
    (the last NaN for methods without ``g_i``), which travel on a channel not counted as the method's traffic.
    """

    def __init__(self, method: Method, shards: ShardGroup, seeds: Sequence[np.random.SeedSequence],
                 batch_size: int | None = None, first: int = 0):
        self.method = method
        self.shards = shards
        self.batch_size = batch_size if method.minibatch else None
        self.first = first
        self.state: Workers = method.init_workers([np.random.default_rng(s) for s in seeds])

    @property
    def m(self) -> int:
        return len(self.state.rngs)

    @property
    def label(self) -> str:
        last = self.first + self.m - 1
        return f"worker {self.first}" if self.m == 1 else f"workers {self.first}-{last}"

    def _minibatch_rows(self, j: int) -> np.ndarray:
        # tau rows without replacement from worker j's stream, in increasing order; tau = N_i needs no draw.
        n_rows = self.shards.n_rows[j]
        if self.batch_size >= n_rows:
            return np.arange(n_rows)
        return np.sort(self.state.rngs[j].choice(n_rows, size=self.batch_size, replace=False))

    def _gradients(self, x: np.ndarray, logged: bool,
                   t: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(what the method step uses, full gradients, losses)``; the last two only on logged rounds."""
        if self.batch_size is None or (t == 0 and self.method.full_gradient_init):
            losses, grads = self.shards.losses_and_grads(x, with_losses=logged)
            return grads, grads, losses
        rows = [self._minibatch_rows(j) for j in range(self.m)]
        whole = [len(r) == n for r, n in zip(rows, self.shards.n_rows)]  # tau = N_i: the full gradient, exactly
        losses, full = self.shards.losses_and_grads(x, with_losses=logged) if logged or any(whole) else (None, None)
        used = np.empty((self.m, x.shape[0]))
        for j, r in enumerate(rows):
            used[j] = full[j] if whole[j] else self.shards.minibatch_grad(x, r, worker=j)
        return used, full, losses

    def round(self, down: np.ndarray, t: int, monitors: np.ndarray | None) -> Messages:
        """The group's messages for round ``t`` given the master's broadcast ``down`` (its bytes, or ``x^t`` itself
        for methods that broadcast ``x``); ``monitors`` (m x (d + 2)) is filled when given.

        Any error becomes `WorkerFailed` naming the group.
        """
        try:
            x = self.method.receive(self.state, np.ascontiguousarray(down).view(np.uint8), t,
                                    range(self.first, self.first + self.m))
            return self._round(x, t, monitors)
        except WorkerFailed:
            raise
        except Exception as err:
            raise WorkerFailed(self.label, t, f"{type(err).__name__}: {err}") from err

    def _round(self, x: np.ndarray, t: int, monitors: np.ndarray | None) -> Messages:
        d = x.shape[0]
        used, full, losses = self._gradients(x, monitors is not None, t)
        msgs = self.method.worker_step(self.state, used, t)
        if monitors is not None:
            monitors[:, :d] = full
            monitors[:, d] = losses
            distortion = self.method.distortion(self.state, full)
            monitors[:, d + 1] = np.nan if distortion is None else distortion
        return msgs


def summarise(monitors: np.ndarray, d: int) -> tuple[float, float, float]:
    """``(||mean_i grad_i||^2, mean_i f_i, mean_i ||g_i - grad_i||^2)`` from the n monitoring rows, in worker order."""
    n = monitors.shape[0]
    grad = monitors[:, :d].sum(axis=0) / n
    return float(grad @ grad), float(monitors[:, d].sum() / n), float(monitors[:, d + 1].sum() / n)
