"""The round loop on the master's side, written once for every backend.

A backend supplies a *cluster*: ``round(x, t, logged)`` hands ``x^t`` to the n workers and returns their
messages (in worker order), the bytes each put on the wire, and (on logged rounds) their monitoring
rows; ``worker_snapshots()`` collects every worker's state for a checkpoint; ``stop()`` releases them.
The serial backend's cluster is one `WorkerGroup` of all n workers; the MPI backend's moves the same bytes
through ``Bcast``/``Gatherv``.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ef21_mpi.core.methods import Message, Method
from ef21_mpi.runtime.checkpoint import Checkpoint, LoopState, WorkerSnapshot
from ef21_mpi.runtime.faults import FaultInjector
from ef21_mpi.runtime.logschema import RunLog
from ef21_mpi.runtime.worker import summarise

BITS_PER_FLOAT64 = 64


class Cluster(Protocol):
    def round(self, x: np.ndarray, t: int, logged: bool) -> tuple[Sequence[Message], np.ndarray, np.ndarray | None]: ...

    def worker_snapshots(self) -> list[WorkerSnapshot]: ...

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
    signal: int | None = None


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes the current round, checkpoints and stops."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> StopRequest:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum


@dataclass
class Checkpointer:
    """Decides when to checkpoint (every ``every`` rounds and/or every ``seconds``) and writes the file."""

    write: Callable[[Checkpoint], None]
    config: dict
    dataset_sha256: str
    every: int | None = None
    seconds: float | None = 60.0
    _last: float = field(default_factory=time.monotonic)

    def due(self, t: int) -> bool:
        if self.every is not None and t > 0 and t % self.every == 0:
            return True
        return self.seconds is not None and time.monotonic() - self._last >= self.seconds

    def save(self, loop: LoopState, cluster: Cluster) -> None:
        self.write(Checkpoint(loop, cluster.worker_snapshots(), self.config, self.dataset_sha256))
        self._last = time.monotonic()


class Progress:
    """A progress line on rank 0: round, grad_norm_sq, bits/n, rounds/s (rewritten in place on a terminal)."""

    def __init__(self, enabled: bool, total: int, interval: float = 0.5):
        self.enabled = enabled
        self.total = total
        self.interval = interval if sys.stderr.isatty() else max(interval, 5.0)
        self._last = 0.0

    def update(self, t: int, grad_norm_sq: float, bits_per_worker: float, elapsed: float, final: bool = False) -> None:
        if not self.enabled or (not final and elapsed - self._last < self.interval):
            return
        self._last = elapsed
        rate = t / elapsed if elapsed > 0 else 0.0
        line = (f"round {t}/{self.total}  grad_norm_sq {grad_norm_sq:.3e}  bits/n {bits_per_worker:.3e}"
                f"  {rate:,.0f} rounds/s")
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def fresh_loop(method: Method, x0: np.ndarray) -> LoopState:
    """The loop state before round 0."""
    n = method.n
    return LoopState(t=-1, master=method.master_init(x0), bits_up=np.zeros(n, dtype=np.int64),
                     coords_up=np.zeros(n, dtype=np.int64), bits_down=0, log_rows=0)


@dataclass
class LoopOptions:
    rounds: int
    log_every: int = 1
    tol: float = 0.0
    progress: Progress | None = None
    extra_series: Callable | None = None  # (x, grad_norm_sq, loss) -> dict of extra logged columns
    checkpointer: Checkpointer | None = None
    stop: StopRequest | None = None
    faults: FaultInjector | None = None


def run_master(method: Method, loop: LoopState, cluster: Cluster, log: RunLog, opts: LoopOptions) -> Outcome:
    """Rounds ``loop.t + 1 .. opts.rounds`` (row 0 = the initialisation at ``x^0``); returns how the run ended."""
    d = method.d
    state = loop.master
    progress = opts.progress or Progress(False, opts.rounds)
    started = time.perf_counter() - loop.wall_offset
    bits_so_far = float(log.column("bits_up").sum(axis=0).mean()) if log.rows else 0.0
    t = loop.t
    try:
        for t in range(loop.t + 1, opts.rounds + 1):
            if opts.faults is not None:
                opts.faults.maybe_fail(t)
            x = state.x if t == 0 else method.next_x(state)
            if not np.isfinite(x).all():
                return Outcome("diverged", t, x, f"the iterate x^{t} is not finite")
            logged = t % opts.log_every == 0 or t == opts.rounds
            messages, wire_bytes, monitors = cluster.round(x, t, logged)
            method.master_absorb(state, messages, t)
            loop.t = t
            loop.bits_up += 8 * wire_bytes
            loop.coords_up += [m.values.shape[0] for m in messages]
            loop.bits_down += BITS_PER_FLOAT64 * d
            if logged:
                grad_norm_sq, loss, distortion = summarise(monitors, d)
                elapsed = time.perf_counter() - started
                extra = opts.extra_series(x, grad_norm_sq, loss) if opts.extra_series else {}
                log.append(t, bits_up=loop.bits_up, coords_up=loop.coords_up, bits_down=loop.bits_down,
                           grad_norm_sq=grad_norm_sq, loss=loss, distortion=distortion, wall_time=elapsed, **extra)
                bits_so_far += loop.bits_up.mean()
                loop.bits_up[:], loop.coords_up[:], loop.bits_down = 0, 0, 0
                loop.log_rows = log.rows
                progress.update(t, grad_norm_sq, bits_so_far, elapsed)
                if not (np.isfinite(grad_norm_sq) and np.isfinite(loss)):
                    return Outcome("diverged", t, x, f"the loss or gradient at x^{t} is not finite")
                if grad_norm_sq < opts.tol:
                    return Outcome("converged", t, x)
            if t == opts.rounds:
                break
            stop_signal = opts.stop.signum if opts.stop is not None else None
            if opts.checkpointer is not None and (stop_signal is not None or opts.checkpointer.due(t)):
                loop.wall_offset = time.perf_counter() - started
                log.flush(state.x)  # the log holds every row the checkpoint counts on, before it is written
                opts.checkpointer.save(loop, cluster)
            if stop_signal is not None:
                name = signal.Signals(stop_signal).name
                return Outcome("interrupted", t, state.x, f"{name} received", signal=stop_signal)
            if logged:
                log.maybe_flush(state.x)
        return Outcome("completed", opts.rounds, state.x)
    except RunFailed as err:
        log.truncate(int(np.searchsorted(log.column("round"), err.t)))
        return Outcome("failed", err.t, state.x, str(err))
    finally:
        last = log.column("grad_norm_sq")[-1] if log.rows else float("nan")
        progress.update(t, last, bits_so_far, time.perf_counter() - started, final=True)
