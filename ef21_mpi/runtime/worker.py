"""The workers one process holds: their shards, their method state, and what they do in a round.

The serial backend holds all n workers in one group; an MPI rank holds a block of them (often one). The
gradients of a group come from one pass over its stacked shards (`core.problems`), and the method's
worker side updates the whole group in one call (every array has a leading worker axis). Each row is
computed exactly as for a lone worker, so the grouping never changes a number.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import fields

import numpy as np

from ef21_mpi.core.compressors.base import sample_without_replacement
from ef21_mpi.core.methods import Messages, Method, Workers
from ef21_mpi.core.problems import ShardGroup


class WorkerFailed(Exception):
    """A round of the group raised: ``who`` is the worker (or, for the shared pass, the group), ``detail`` the error."""

    def __init__(self, who: str, t: int, detail: str):
        super().__init__(f"{who} failed in round {t}: {detail}")
        self.who, self.detail = who, detail


#: The group takes its workers in blocks of about this many gradient entries (1 MB of float64), one block at a
#: time from the product A_i^T s_i to the messages, so that its arrays are still in cache from one pass to the next
#: (a9a, n = 10^4: 10 blocks, about 1.5x faster than all workers at once).
BLOCK_ENTRIES = 1 << 17


class WorkerGroup:
    """Workers ``first .. first + m - 1``: their gradients at the broadcast ``x``, state updates and messages.

    On a logged round the group also fills its monitoring rows ``[grad_i(x), f_i(x), ||g_i - grad_i(x)||^2]``
    (the last NaN for methods without ``g_i``), which travel on a channel not counted as the method's traffic.
    With full gradients the workers are taken in blocks (`BLOCK_ENTRIES`): each block is a group of its own, with
    its rows of every state array as views, which changes no number (the rows never interact). A block's
    gradients go into a buffer allocated once, which the method's step may overwrite (`Method.worker_step`).
    """

    def __init__(self, method: Method, shards: ShardGroup, seeds: Sequence[np.random.SeedSequence],
                 batch_size: int | None = None, first: int = 0):
        self.method = method
        self.shards = shards
        self.batch_size = batch_size if method.minibatch else None
        self.first = first
        self.state: Workers = method.init_workers([np.random.default_rng(s) for s in seeds])
        self.block = max(1, BLOCK_ENTRIES // max(shards.d, 1))
        self._grads = np.empty((min(self.block, self.m), shards.d))  # one block's gradients, reused block after block
        self._reg_rows = np.empty_like(self._grads)
        self._views: list[tuple[int, int, Workers, dict]] = []
        self._views_of: tuple = ()

    @property
    def m(self) -> int:
        return len(self.state.rngs)

    @property
    def label(self) -> str:
        last = self.first + self.m - 1
        return f"worker {self.first}" if self.m == 1 else f"workers {self.first}-{last}"

    def _blocks(self) -> list[tuple[int, int, Workers, dict]]:
        """``(lo, hi, state of workers lo .. hi - 1, its fields)``; the views are rebuilt if a field was replaced."""
        m = self.m
        if m <= self.block:
            return [(0, m, self.state, {})]
        names = [f.name for f in fields(self.state)]
        values = [getattr(self.state, name) for name in names]
        if not all(isinstance(v, (list, np.ndarray)) and len(v) == m for v in values):
            return [(0, m, self.state, {})]  # a state that is not rows of workers: one block
        if self._views_of != tuple(map(id, values)):
            self._views = []
            for lo in range(0, m, self.block):
                hi = min(lo + self.block, m)
                part = copy.copy(self.state)
                for name, value in zip(names, values):
                    setattr(part, name, value[lo:hi])
                self._views.append((lo, hi, part, {name: getattr(part, name) for name in names}))
            self._views_of = tuple(map(id, values))
        return self._views

    def _scratch(self, rows: int) -> np.ndarray:
        """The gradient buffer's first ``rows`` rows (it grows for a group that runs as one block of more)."""
        if len(self._grads) < rows:
            self._grads = np.empty((rows, self._grads.shape[1]))
        return self._grads[:rows]

    def _minibatch_rows(self, j: int) -> np.ndarray:
        # tau rows without replacement from worker j's stream, in increasing order; tau = N_i needs no draw.
        n_rows = self.shards.n_rows[j]
        if self.batch_size >= n_rows:
            return np.arange(n_rows)
        return sample_without_replacement(self.state.rngs[j], n_rows, self.batch_size)

    def _minibatch_gradients(self, x: np.ndarray, logged: bool,
                             t: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(what the method step uses, full gradients, losses)``; the last two only on logged rounds."""
        if t == 0 and self.method.full_gradient_init:
            losses, grads = self.shards.losses_and_grads(x, with_losses=logged)
            return grads, grads, losses
        rows = [self._minibatch_rows(j) for j in range(self.m)]  # each worker draws from its own generator
        whole = np.array([len(r) for r in rows]) == self.shards.n_rows  # tau = N_i: the full gradient, exactly
        losses, full = self.shards.losses_and_grads(x, with_losses=logged) if logged or whole.any() else (None, None)
        used = np.empty((self.m, x.shape[0]))
        batched = np.flatnonzero(~whole)  # the others' gradients in one pass over all their batches
        if batched.size == self.m:
            self.shards.minibatch_grads(x, rows, out=used)
        elif batched.size:
            used[batched] = self.shards.minibatch_grads(x, [rows[j] for j in batched], batched)
        if whole.any():
            used[whole] = full[whole]
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
        logged = monitors is not None
        if self.batch_size is not None:
            used, full, losses = self._minibatch_gradients(x, logged, t)
            return self._step(self.state, used, full, losses, t, monitors)
        s, losses = self.shards.row_pass(x, logged)
        reg = self.shards.regulariser_grad(x)
        blocks = self._blocks()
        if len(blocks) > 1:  # added row by row without a broadcast
            self._reg_rows[:] = reg
            reg = self._reg_rows
        msgs = None
        for lo, hi, state, views in blocks:
            grads = self.shards.grads_into(s, reg, lo, hi, self._scratch(hi - lo))
            part = self._step(state, grads, grads, None if losses is None else losses[lo:hi], t,
                              None if monitors is None else monitors[lo:hi])
            for name, view in views.items():  # a step that replaced a field: its rows go back into the group's
                if getattr(state, name) is not view:
                    getattr(self.state, name)[lo:hi] = getattr(state, name)
                    setattr(state, name, view)
            if len(blocks) == 1:
                return part
            if msgs is None:
                msgs = _allocate(part, self.m)
            for name in ("indices", "values", "flags", "payload"):
                if getattr(part, name) is not None:
                    getattr(msgs, name)[lo:hi] = getattr(part, name)
        return msgs

    def _step(self, state: Workers, used: np.ndarray, full: np.ndarray | None, losses: np.ndarray | None, t: int,
              monitors: np.ndarray | None) -> Messages:
        """The method's step on ``used`` (which it may overwrite); the monitoring rows from ``full``, kept first."""
        d = used.shape[1]
        if monitors is not None:
            monitors[:, :d] = full
            monitors[:, d] = losses
        msgs = self.method.worker_step(state, used, t)
        if monitors is not None:
            distortion = self.method.distortion(state, monitors[:, :d])
            monitors[:, d + 1] = np.nan if distortion is None else distortion
        return msgs


def _allocate(part: Messages, m: int) -> Messages:
    """Room for the messages of all ``m`` workers, shaped like one block's ``part``."""
    def rows(name: str) -> np.ndarray | None:
        a = getattr(part, name)
        return None if a is None else np.empty((m, *a.shape[1:]), dtype=a.dtype)

    return Messages(rows("indices"), rows("values"), rows("flags"), rows("payload"))


def summarise(monitors: np.ndarray, d: int) -> tuple[float, float, float]:
    """``(||mean_i grad_i||^2, mean_i f_i, mean_i ||g_i - grad_i||^2)`` from the n monitoring rows, in worker order."""
    n, total = monitors.shape[0], np.add.reduce  # ``.sum()`` without its Python wrapper: the same reduction
    grad = total(monitors[:, :d], axis=0) / n
    return float(grad @ grad), float(total(monitors[:, d]) / n), float(total(monitors[:, d + 1]) / n)
