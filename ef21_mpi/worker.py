"""One worker: its shard, its method state, and what it does in a round. Used unchanged by every backend."""

from __future__ import annotations

import numpy as np

from .methods import Message, Method, WorkerState
from .problems import Shard


class Worker:
    """Worker ``i``: computes its gradient at the broadcast ``x``, updates its state and returns its message.

    When the round is logged it also fills its monitoring row ``[grad_i(x), f_i(x), ||g_i - grad_i(x)||^2]``
    (the last NaN for methods without ``g_i``), which travels on a channel not counted as the method's traffic.
    """

    def __init__(self, method: Method, shard: Shard, seed: np.random.SeedSequence, batch_size: int | None = None):
        self.method = method
        self.shard = shard
        self.batch_size = batch_size
        self.state: WorkerState = method.new_worker_state(np.random.default_rng(seed))

    def _minibatch_rows(self) -> np.ndarray:
        # tau rows without replacement from this worker's stream, in increasing order.
        return np.sort(self.state.rng.choice(self.shard.n_rows, size=self.batch_size, replace=False))

    def round(self, x: np.ndarray, t: int, monitor: np.ndarray | None) -> Message:
        d = x.shape[0]
        if self.batch_size is None:
            if monitor is None:
                grad, loss = self.shard.grad(x), np.nan
            else:
                loss, grad = self.shard.loss_and_grad(x)
            full_grad = grad
        else:
            rows = self._minibatch_rows()
            grad = self.shard.grad(x) if len(rows) == self.shard.n_rows else self.shard.minibatch_grad(x, rows)
            loss, full_grad = self.shard.loss_and_grad(x) if monitor is not None else (np.nan, None)
        message = self.method.worker_round(self.state, grad, t)
        if monitor is not None:
            monitor[:d] = full_grad
            monitor[d] = loss
            monitor[d + 1] = _squared_distance(self.state.g_i, full_grad) if self.method.has_g else np.nan
        return message


def _squared_distance(a: np.ndarray, b: np.ndarray) -> float:
    diff = a - b
    return float(diff @ diff)


def summarise(monitors: np.ndarray, d: int) -> tuple[float, float, float]:
    """``(||mean_i grad_i||^2, mean_i f_i, mean_i ||g_i - grad_i||^2)`` from the n monitoring rows, in worker order."""
    n = monitors.shape[0]
    grad = monitors[:, :d].sum(axis=0) / n
    return float(grad @ grad), float(monitors[:, d].sum() / n), float(monitors[:, d + 1].sum() / n)
