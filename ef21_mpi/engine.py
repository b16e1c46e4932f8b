"""The round loop on the master's side, written once for every backend.

A backend supplies a *cluster*: ``round(x, t, logged)`` hands ``x^t`` to the n workers and returns their
messages (in worker order), the bytes each put on the wire, and (on logged rounds) their monitoring
rows; ``stop()`` releases them. The serial backend's cluster is a loop over `Worker` objects; the MPI
backend's moves the same bytes through ``Bcast``/``Gatherv``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .methods import Message, Method
from .runlog import RunLog
from .worker import summarise

BITS_PER_FLOAT64 = 64


class Cluster(Protocol):
    def round(self, x: np.ndarray, t: int, logged: bool) -> tuple[Sequence[Message], np.ndarray, np.ndarray | None]: ...

    def stop(self) -> None: ...


class RunFailed(Exception):
    """A worker reported an error in round ``t``; rows from ``t`` on cannot be trusted."""

    def __init__(self, message: str, t: int):
        super().__init__(message)
        self.t = t


@dataclass
class Outcome:
    status: str
    rounds_done: int
    x: np.ndarray
    message: str = ""


class Progress:
    """A one-line progress display on a terminal: round, grad_norm_sq, bits/n, rounds/s."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.total = total
        self._last = 0.0

    def update(self, t: int, grad_norm_sq: float, bits_per_worker: float, elapsed: float, final: bool = False) -> None:
        if not self.enabled or (not final and elapsed - self._last < 0.5):
            return
        self._last = elapsed
        rate = t / elapsed if elapsed > 0 else 0.0
        line = (f"\rround {t}/{self.total}  grad_norm_sq {grad_norm_sq:.3e}  bits/n {bits_per_worker:.3e}"
                f"  {rate:,.0f} rounds/s ")
        sys.stderr.write(line + ("\n" if final else ""))
        sys.stderr.flush()


def run_master(method: Method, x0: np.ndarray, rounds: int, cluster: Cluster, log: RunLog, *,
               log_every: int = 1, tol: float = 0.0, progress: Progress | None = None,
               extra_series=None) -> Outcome:
    """Rounds ``0..rounds`` (row 0 = the initialisation at ``x^0``); returns how the run ended.

    ``extra_series(x, grad_norm_sq, loss) -> dict`` adds problem-specific columns to logged rows.
    """
    n, d = method.n, method.d
    progress = progress or Progress(False, rounds)
    state = method.master_init(x0)
    bits_up = np.zeros(n, dtype=np.int64)  # accumulated since the last logged row (SPEC 7)
    coords_up = np.zeros(n, dtype=np.int64)
    bits_down = 0
    total_bits = 0.0
    started = time.perf_counter()
    t = 0
    try:
        for t in range(rounds + 1):
            x = state.x if t == 0 else method.next_x(state)
            if not np.isfinite(x).all():
                return Outcome("diverged", t, x, f"the iterate x^{t} is not finite")
            logged = t % log_every == 0 or t == rounds
            messages, wire_bytes, monitors = cluster.round(x, t, logged)
            method.master_absorb(state, messages, t)
            bits_up += 8 * wire_bytes
            coords_up += [m.values.shape[0] for m in messages]
            bits_down += BITS_PER_FLOAT64 * d
            if not logged:
                continue
            grad_norm_sq, loss, distortion = summarise(monitors, d)
            elapsed = time.perf_counter() - started
            extra = extra_series(x, grad_norm_sq, loss) if extra_series else {}
            log.append(t, bits_up=bits_up, coords_up=coords_up, bits_down=bits_down, grad_norm_sq=grad_norm_sq,
                       loss=loss, distortion=distortion, wall_time=elapsed, **extra)
            total_bits += bits_up.mean()
            bits_up[:] = 0
            coords_up[:] = 0
            bits_down = 0
            progress.update(t, grad_norm_sq, total_bits, elapsed)
            if not (np.isfinite(grad_norm_sq) and np.isfinite(loss)):
                log.flush(x)
                return Outcome("diverged", t, x, f"the loss or gradient at x^{t} is not finite")
            if grad_norm_sq < tol:
                return Outcome("converged", t, x)
            log.maybe_flush(x)
        return Outcome("completed", rounds, state.x)
    except RunFailed as err:
        log.truncate(_rows_before(log, err.t))
        return Outcome("failed", err.t, state.x, str(err))
    finally:
        progress.update(t, log.column("grad_norm_sq")[-1] if log.rows else float("nan"), total_bits,
                        time.perf_counter() - started, final=True)


def _rows_before(log: RunLog, t: int) -> int:
    return int(np.searchsorted(log.column("round"), t))
