"""The run log (SPEC 7): one HDF5 file per run, written by one process (the serial process or rank 0).

Design: the rows live in memory and every flush writes a complete HDF5 file next to the log and
atomically renames it over the log. So at every instant the file on disk is a closed, consistent HDF5
file holding every row flushed so far: a reader can follow a run in progress with a plain
``h5py.File(path, "r")`` (no SWMR mode, no locking conflicts), and a run killed at any moment (SIGKILL
of the writer included) leaves the last flushed snapshot intact and readable. HDF5's SWMR mode was not
used because a killed SWMR writer leaves the file flagged so that a plain read-only open fails.

Flushes happen at most every ``flush_seconds`` (and at least every ``flush_every`` logged rows when
given), but never more often than ten times the duration of the previous write, so that writing a large
log can never take more than about a tenth of the run.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import h5py
import numpy as np

SERIES = ("grad_norm_sq", "loss", "distortion", "wall_time")
COUNTS = ("bits_up", "coords_up")

STATUSES = ("running", "completed", "converged", "diverged", "interrupted", "failed")


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def acquire_writer_lock(path: Path):
    """Hold an exclusive lock beside the log while a process writes it (released when the process dies).

    Returns the open lock file, or raises BlockingIOError when another live process holds it.
    """
    handle = open(lock_path(path), "a")  # noqa: SIM115 -- kept open for the life of the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise
    return handle


class RunLog:
    """Append rows, flush snapshots, set the final status."""

    def __init__(self, path: str | os.PathLike, attrs: dict, n: int, d: int, *, extra_series: tuple[str, ...] = (),
                 flush_seconds: float = 1.0, flush_every: int | None = None):
        self.path = Path(path)
        self.attrs = dict(attrs)
        self.n, self.d = n, d
        self.series_names = SERIES + tuple(extra_series)
        self.rows = 0
        self._capacity = 1024
        self._round = np.zeros(self._capacity, dtype=np.int64)
        self._bits_down = np.zeros(self._capacity, dtype=np.int64)
        self._series = {name: np.zeros(self._capacity) for name in self.series_names}
        self._counts = {name: np.zeros((self._capacity, n), dtype=np.int64) for name in COUNTS}
        self.x = np.zeros(d)
        self.flush_seconds = flush_seconds
        self.flush_every = flush_every
        self._last_flush = time.monotonic()
        self._last_write_cost = 0.0
        self._rows_at_flush = 0

    def _grow(self) -> None:
        self._capacity *= 2
        self._round = np.resize(self._round, self._capacity)
        self._bits_down = np.resize(self._bits_down, self._capacity)
        self._series = {k: np.resize(v, self._capacity) for k, v in self._series.items()}
        self._counts = {k: np.resize(v, (self._capacity, self.n)) for k, v in self._counts.items()}

    def append(self, t: int, *, bits_up: np.ndarray, coords_up: np.ndarray, bits_down: int, **series: float) -> None:
        """Add row ``t``; ``series`` holds a value for every name in ``series_names``."""
        if self.rows == self._capacity:
            self._grow()
        r = self.rows
        self._round[r] = t
        self._bits_down[r] = bits_down
        self._counts["bits_up"][r] = bits_up
        self._counts["coords_up"][r] = coords_up
        for name in self.series_names:
            self._series[name][r] = series[name]
        self.rows += 1

    def load_rows(self, path: Path, rows: int) -> None:
        """Take the first ``rows`` rows of an existing log (a resumed run continues its log)."""
        with h5py.File(path, "r") as f:
            columns = {name: f[name][:rows] for name in ("round", "bits_down", *COUNTS, *self.series_names)}
        while self._capacity < rows:
            self._grow()
        self._round[:rows] = columns["round"]
        self._bits_down[:rows] = columns["bits_down"]
        for name in COUNTS:
            self._counts[name][:rows] = columns[name]
        for name in self.series_names:
            self._series[name][:rows] = columns[name]
        self.rows = rows

    def truncate(self, rows: int) -> None:
        """Forget rows from ``rows`` on (rows a failed worker may have spoiled)."""
        self.rows = min(self.rows, rows)

    def column(self, name: str) -> np.ndarray:
        if name == "round":
            return self._round[: self.rows]
        if name == "bits_down":
            return self._bits_down[: self.rows]
        if name in self._counts:
            return self._counts[name][: self.rows]
        return self._series[name][: self.rows]

    def maybe_flush(self, x: np.ndarray) -> None:
        """Flush if enough time (or enough rows) has passed since the last snapshot."""
        now = time.monotonic()
        due_by_rows = self.flush_every is not None and self.rows - self._rows_at_flush >= self.flush_every
        due_by_time = now - self._last_flush >= max(self.flush_seconds, 10.0 * self._last_write_cost)
        if due_by_rows or due_by_time:
            self.flush(x)

    def flush(self, x: np.ndarray, status: str | None = None, **attrs) -> None:
        """Write a complete snapshot and rename it over the log."""
        started = time.monotonic()
        self.x = np.array(x, dtype=np.float64, copy=True)
        if status is not None:
            self.attrs["status"] = status
        self.attrs.update(attrs)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        with h5py.File(tmp, "w") as f:
            for key, value in self.attrs.items():
                f.attrs[key] = value
            f.attrs["rows"] = self.rows
            f.attrs["updated_at"] = time.time()
            f.create_dataset("round", data=self.column("round"))
            for name in self.series_names:
                f.create_dataset(name, data=self.column(name))
            for name in COUNTS:
                f.create_dataset(name, data=self.column(name))
            f.create_dataset("bits_down", data=self.column("bits_down"))
            f.create_dataset("x_final", data=self.x)
        try:
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self._last_flush = time.monotonic()
        self._last_write_cost = self._last_flush - started
        self._rows_at_flush = self.rows
