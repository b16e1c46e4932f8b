"""The round loop on the master's side, written once for every backend.

A backend supplies a *cluster*: ``round(down, t, logged)`` hands the master's broadcast of round ``t``
(`Method.downlink`, by default ``x^t``) to the n workers and returns their
`Messages` (in worker order) and, on logged rounds, their monitoring rows; ``worker_states()`` collects
every worker's state for a checkpoint; ``stop()`` releases them. The loop says what happens in a round;
everything else (the log, checkpoints, the progress line, stop signals) is an `Observer` that the session
plugs in, the way training loops take callbacks.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ef21_mpi.core.methods import Master, Messages, Method
from ef21_mpi.runtime.worker import summarise


class Cluster(Protocol):
    def round(self, down: np.ndarray, t: int, logged: bool) -> tuple[Messages, np.ndarray | None]: ...

    def worker_states(self) -> dict[str, np.ndarray]: ...

    def stop(self) -> None: ...


class RunFailed(Exception):
    """A worker reported an error in round ``t``; rows from ``t`` on cannot be trusted."""

    def __init__(self, message: str, t: int):
        super().__init__(message)
        self.t = t


@dataclass
class LoopState:
    """What the master's loop carries from round to round (and a checkpoint saves)."""

    t: int  # the last completed round
    master: Master
    bits_up: np.ndarray  # per worker, accumulated since the last logged row (SPEC 7)
    coords_up: np.ndarray
    bits_down: int
    log_rows: int
    wall_offset: float = 0.0  # wall_time of the run so far (carried over by a resumed run)
    stop_signal: int | None = None  # set by an observer: finish this round, then stop


def fresh_loop(method: Method, x0: np.ndarray) -> LoopState:
    """The loop state before round 0."""
    n = method.n
    return LoopState(t=-1, master=method.init_master(x0), bits_up=np.zeros(n, dtype=np.int64),
                     coords_up=np.zeros(n, dtype=np.int64), bits_down=0, log_rows=0)


@dataclass
class Row:
    """One logged round: what the log records (the bit counts are those since the previous row)."""

    t: int
    grad_norm_sq: float
    loss: float
    distortion: float
    wall_time: float
    bits_up: np.ndarray
    coords_up: np.ndarray
    bits_down: int
    x: np.ndarray


@dataclass
class Outcome:
    status: str
    rounds_done: int
    x: np.ndarray
    message: str = ""
    signal: int | None = None


class Observer:
    """Something the loop tells about its progress; every hook is optional."""

    def on_row(self, row: Row, loop: LoopState) -> None:
        """A logged round has been summarised."""

    def after_round(self, t: int, loop: LoopState, cluster: Cluster) -> None:
        """Round ``t`` is done (and was not the last); may set ``loop.stop_signal``."""

    def on_end(self, outcome: Outcome, loop: LoopState) -> None:
        """The loop is over, however it ended."""


def run_rounds(method: Method, loop: LoopState, cluster: Cluster, rounds: int, *, log_every: int = 1,
               tol: float = 0.0, observers: Sequence[Observer] = ()) -> Outcome:
    """Rounds ``loop.t + 1 .. rounds`` (row 0 = the initialisation at ``x^0``); returns how the run ended."""
    outcome = _rounds(method, loop, cluster, rounds, log_every, tol, observers)
    for observer in observers:
        observer.on_end(outcome, loop)
    return outcome


def _rounds(method: Method, loop: LoopState, cluster: Cluster, rounds: int, log_every: int, tol: float,
            observers: Sequence[Observer]) -> Outcome:
    d, state = method.d, loop.master
    started = time.perf_counter() - loop.wall_offset
    message_bits = [8 * method.message_spec(t).nbytes for t in (0, 1)]  # round 0's layout, every later round's
    try:
        for t in range(loop.t + 1, rounds + 1):
            x = state.x if t == 0 else method.next_x(state)
            if not np.isfinite(x).all():
                return Outcome("diverged", t, x, f"the iterate x^{t} is not finite")
            logged = t % log_every == 0 or t == rounds
            msgs, monitors = cluster.round(method.downlink(state, t), t, logged)
            method.master_step(state, msgs, t)
            loop.t = t
            senders = method.senders(state, t)  # None: every worker sent its message
            sent = 1 if senders is None else senders.astype(np.int64)
            loop.bits_up += message_bits[min(t, 1)] * sent
            loop.coords_up += msgs.values.shape[1] * sent
            loop.bits_down += 8 * method.downlink_nbytes(t)
            loop.wall_offset = time.perf_counter() - started
            if logged:
                grad_norm_sq, loss, distortion = summarise(monitors, d)
                row = Row(t, grad_norm_sq, loss, distortion, loop.wall_offset, loop.bits_up, loop.coords_up,
                          loop.bits_down, x)
                for observer in observers:
                    observer.on_row(row, loop)
                loop.bits_up[:], loop.coords_up[:], loop.bits_down = 0, 0, 0
                if not (math.isfinite(grad_norm_sq) and math.isfinite(loss)):
                    return Outcome("diverged", t, x, f"the loss or gradient at x^{t} is not finite")
                if grad_norm_sq < tol:
                    return Outcome("converged", t, x)
            if t == rounds:
                break
            for observer in observers:
                observer.after_round(t, loop, cluster)
            if loop.stop_signal is not None:
                name = signal.Signals(loop.stop_signal).name
                return Outcome("interrupted", t, state.x, f"{name} received", signal=loop.stop_signal)
        return Outcome("completed", rounds, state.x)
    except RunFailed as err:
        return Outcome("failed", err.t, state.x, str(err))
