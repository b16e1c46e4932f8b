"""What the session plugs into the round loop: the log, checkpoints, the progress line and stop signals."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from ef21_mpi.runtime.logschema import RunLog
from ef21_mpi.runtime.loop import Cluster, LoopState, Observer, Outcome, Row


class LogWriter(Observer):
    """Appends every logged row to the run log, flushes it now and then, drops the rows a failure spoiled."""

    def __init__(self, log: RunLog, extra_series: Callable[[Row], dict] | None = None):
        self.log = log
        self.extra_series = extra_series
        self._logged = False  # a row was appended since the last chance to flush

    def on_row(self, row: Row, loop: LoopState) -> None:
        extra = self.extra_series(row) if self.extra_series else {}
        self.log.append(row.t, bits_up=row.bits_up, coords_up=row.coords_up, bits_down=row.bits_down,
                        grad_norm_sq=row.grad_norm_sq, loss=row.loss, distortion=row.distortion,
                        wall_time=row.wall_time, **extra)
        loop.log_rows = self.log.rows
        self._logged = True

    def after_round(self, t: int, loop: LoopState, cluster: Cluster) -> None:
        if self._logged:
            self.log.maybe_flush(loop.master.x)
            self._logged = False

    def on_end(self, outcome: Outcome, loop: LoopState) -> None:
        if outcome.status == "failed":
            self.log.truncate(int(np.searchsorted(self.log.column("round"), outcome.rounds_done)))


class StopSignal(Observer):
    """SIGINT/SIGTERM set a flag; the loop finishes the current round, checkpoints and stops.

    The handlers are installed only in the main thread, and the previous ones are put back at the end.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum

    def after_round(self, t: int, loop: LoopState, cluster: Cluster) -> None:
        if self.signum is not None:
            loop.stop_signal = self.signum

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_end(self, outcome: Outcome, loop: LoopState) -> None:
        self.restore()


class Checkpointer(Observer):
    """Every ``every`` rounds and/or every ``seconds``, and before a requested stop, saves the run's state.

    ``save(loop, worker_states)`` writes the file; ``before`` runs first (the session flushes the log there,
    so the log holds every row the checkpoint counts on).
    """

    def __init__(self, save: Callable[[LoopState, dict], None], before: Callable[[LoopState], None],
                 every: int | None = None, seconds: float | None = 60.0):
        self.save, self.before = save, before
        self.every, self.seconds = every, seconds
        self._last = time.monotonic()

    def due(self, t: int) -> bool:
        if self.every is not None and t > 0 and t % self.every == 0:
            return True
        return self.seconds is not None and time.monotonic() - self._last >= self.seconds

    def after_round(self, t: int, loop: LoopState, cluster: Cluster) -> None:
        if loop.stop_signal is None and not self.due(t):
            return
        self.before(loop)
        self.save(loop, cluster.worker_states())
        self._last = time.monotonic()


class Progress(Observer):
    """A progress line on rank 0 (rewritten in place on a terminal): round, grad_norm_sq, bits/n in the paper's
    convention and on the wire, rounds/s and the time left; the line is final when the loop ends."""

    BITS_PER_COORDINATE = 32  # the paper's count (SPEC 7)

    def __init__(self, total: int, initialises: bool, paper_so_far: float = 0.0, wire_so_far: float = 0.0,
                 interval: float = 0.5, stream=None):
        self.total = total
        self.initialises = initialises  # row 0 is g_i^0, which the paper does not count
        self.paper, self.wire = paper_so_far, wire_so_far  # means over workers, from rows already logged
        self.stream = stream or sys.stderr
        self.interval = interval if self.stream.isatty() else max(interval, 5.0)
        self._last = 0.0
        self._row: Row | None = None
        self._first_t: int | None = None

    def on_row(self, row: Row, loop: LoopState) -> None:
        self.wire += row.bits_up.mean()
        if not (row.t == 0 and self.initialises):
            self.paper += self.BITS_PER_COORDINATE * row.coords_up.mean()
        self._row = row
        if self._first_t is None:
            self._first_t = row.t
        if row.wall_time - self._last >= self.interval:
            self._show(row.t, row.grad_norm_sq, row.wall_time, final=False)

    def on_end(self, outcome: Outcome, loop: LoopState) -> None:
        last = self._row.grad_norm_sq if self._row is not None else float("nan")
        self._show(max(loop.t, 0), last, loop.wall_offset, final=True)

    def line(self, t: int, grad_norm_sq: float, elapsed: float, final: bool) -> str:
        rate = t / elapsed if elapsed > 0 else 0.0
        left = "" if final or rate <= 0 else f"  {_duration((self.total - t) / rate)} left"
        return (f"round {t}/{self.total}  grad_norm_sq {grad_norm_sq:.3e}  bits/n {self.paper:,.0f} (paper), "
                f"{self.wire:,.0f} (wire)  {rate:,.0f} rounds/s{left}")

    def _show(self, t: int, grad_norm_sq: float, elapsed: float, final: bool) -> None:
        self._last = elapsed
        text = self.line(t, grad_norm_sq, elapsed, final)
        if self.stream.isatty():
            self.stream.write("\r" + text + "\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
