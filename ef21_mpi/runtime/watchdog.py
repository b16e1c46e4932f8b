"""Rank 0's guard against worker ranks that stop answering (a stopped, swapped-out or wedged process).

Two promises, both kept by a thread on rank 0 while its main thread may be blocked in a collective:

- **Bounded shutdown.** After SIGINT/SIGTERM the run normally finishes its round, checkpoints and stops. If it
  has not ended ``SHUTDOWN_GRACE`` seconds later (a worker rank is stopped and the round cannot finish), the
  watchdog marks the log ``interrupted`` (its last checkpoint stays valid: ``--resume`` continues from there),
  prints one line and aborts the job (``MPI_Abort`` kills every rank, a stopped one included).
- **Stall timeout** (``--stall-timeout S``, off by default). Every worker rank reports each round it has
  computed (an 8-byte message to rank 0). If no round completes for S seconds, the watchdog names the worker
  rank(s) that did not report the round in flight, marks the log ``failed`` and aborts the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from ef21_mpi.runtime.loop import Cluster, LoopState, Observer

SHUTDOWN_GRACE = 5.0  # seconds between a stop signal and the job's end, at most (plus MPI_Abort's own time)
TAG_PROGRESS = 78  # worker rank -> rank 0: "I have computed round t" (int64)


def report_progress(comm, t: int, buf: np.ndarray) -> None:
    """A worker rank's report that it has computed round ``t`` (sent only when a stall timeout is set)."""
    buf[0] = t
    comm.Send(buf, dest=0, tag=TAG_PROGRESS)


class Watchdog(Observer):
    """Watches the round loop on rank 0; ``give_up(status, message, code)`` ends the job from the thread."""

    def __init__(self, comm, ranks: list[range], give_up: Callable[[str, str, int], None],
                 stall_timeout: float | None = None, grace: float = SHUTDOWN_GRACE):
        self.comm, self.ranks, self.give_up = comm, ranks, give_up
        self.stall_timeout, self.grace = stall_timeout, grace
        self.round = -1  # the last completed round
        self.progress = time.monotonic()
        self.heard = dict.fromkeys(range(1, len(ranks) + 1), -1)  # worker rank -> last round it reported
        self.ended = threading.Event()
        if stall_timeout is not None:
            threading.Thread(target=self._watch_stalls, name="ef21-stall-watchdog", daemon=True).start()
        self._wakeup = self._listen_for_signals()

    def _listen_for_signals(self) -> tuple[int, int] | None:
        """Hear SIGINT/SIGTERM even while the main thread is blocked in MPI (where Python runs no signal handler):
        the interpreter writes each signal's number to a wake-up pipe, which a thread reads."""
        if threading.current_thread() is not threading.main_thread():
            return None
        read, write = os.pipe()
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        threading.Thread(target=self._read_signals, args=(read,), name="ef21-signal-watchdog", daemon=True).start()
        return previous, write

    def _read_signals(self, read: int) -> None:
        try:
            while not self.ended.is_set():
                got = os.read(read, 1)
                if not got:  # the write end was closed: the loop is over
                    return
                if got[0] in (signal.SIGINT, signal.SIGTERM):
                    self.signalled(got[0])
                    return
        except OSError:
            return
        finally:
            os.close(read)

    # -- the loop's side (main thread) --

    def after_round(self, t: int, loop: LoopState, cluster: Cluster) -> None:
        self.round, self.progress = t, time.monotonic()

    def on_end(self, outcome, loop: LoopState) -> None:
        self.ended.set()
        if self._wakeup is not None:
            previous, write = self._wakeup
            signal.set_wakeup_fd(previous)
            os.close(write)  # the reading thread sees the end of the pipe

    def signalled(self, signum: int) -> None:
        """A stop signal arrived: end the job in ``grace`` seconds unless the loop has ended by then."""
        threading.Thread(target=self._shutdown_after_grace, args=(signum,), name="ef21-shutdown-watchdog",
                         daemon=True).start()

    # -- the watchdog's side (its own threads) --

    def _shutdown_after_grace(self, signum: int) -> None:
        if self.ended.wait(self.grace):
            return
        name = signal.Signals(signum).name
        self.give_up("interrupted", f"{name} received, but the round in flight did not finish within {self.grace:g} s "
                     f"(a worker rank is stopped or not answering); ending the job", 128 + signum)

    def _drain(self) -> None:
        from mpi4py import MPI

        status, buf = MPI.Status(), np.zeros(1, dtype=np.int64)
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_PROGRESS, status=status):
            self.comm.Recv(buf, source=status.Get_source(), tag=TAG_PROGRESS)
            self.heard[status.Get_source()] = max(self.heard[status.Get_source()], int(buf[0]))

    def _watch_stalls(self) -> None:
        period = min(1.0, self.stall_timeout / 4)
        while not self.ended.wait(period):
            self._drain()
            if time.monotonic() - self.progress < self.stall_timeout:
                continue
            self._drain()
            in_flight = self.round + 1
            silent = [rank for rank, t in self.heard.items() if t < in_flight]
            if not silent:  # every rank computed its part: the master itself is slow (a long write); keep waiting
                continue
            who = ", ".join(f"worker rank {r} (workers {self.ranks[r - 1].start}..{self.ranks[r - 1].stop - 1})"
                            for r in silent)
            self.give_up("failed", f"{who} made no progress for {self.stall_timeout:g} s (--stall-timeout) in "
                         f"round {in_flight}", 1)
            return


def end_job(comm, log, release: Callable[[], None]) -> Callable[[str, str, int], None]:
    """What the watchdog does when it gives up: the log's final status (if a snapshot can be written within a
    second; the previous one stays otherwise), the lock released, one line, and MPI_Abort of the whole job."""

    def give_up(status: str, message: str, code: int) -> None:
        if log.writing.acquire(timeout=1.0):
            log.writing.release()
            with contextlib.suppress(Exception):  # the job ends anyway; the previous snapshot stays
                log.flush(log.x, status=status)
        with contextlib.suppress(OSError):
            release()
        print(f"ef21-mpi: error: run {status} at round {log.column('round')[-1] if log.rows else 0}: {message}; "
              f"{log.rows} rows kept in {log.path}; continue from the last checkpoint with: ef21-mpi run --resume "
              f"{log.path}", file=sys.stderr, flush=True)
        comm.Abort(code)

    return give_up
