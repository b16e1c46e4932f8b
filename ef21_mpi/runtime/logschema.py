"""The run log (SPEC 7): its schema, its one writer (`RunLog`) and its one reader (`read_log`, `read_attrs`).

Every name, dtype and shape of the log is defined here and nowhere else; the analysis tools, the benchmark,
``--resume`` and the tests read logs through `read_log` / `read_attrs`, never with h5py by hand.

Writing: the rows live in memory and every flush writes a complete HDF5 file next to the log and
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

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ef21_mpi.errors import InputError
from ef21_mpi.runtime.files import hdf5_image, write_atomically

# --- the schema (SPEC 7) -------------------------------------------------------------------------------

SERIES = ("grad_norm_sq", "loss", "distortion", "wall_time")  # float64 [R]
COUNTS = ("bits_up", "coords_up")  # int64 [R, n]
COLUMNS = ("round", *SERIES, *COUNTS, "bits_down")  # every per-row dataset; row r is round round[r]
DATASETS = (*COLUMNS, "x_final")  # x_final: float64 [d]
#: Dimension scales: the row axis (``round`` itself), the worker axis of ``bits_up``/``coords_up`` and the
#: coordinate axis of ``x_final``.
AXES = ("round", "worker", "coordinate")
UNITS = {"round": "round", "wall_time": "s", "bits_up": "bit", "bits_down": "bit", "coords_up": "coordinate",
         "grad_norm_sq": "1", "loss": "1", "distortion": "1", "loss_gap": "1"}
DTYPES = {"round": np.int64, **dict.fromkeys(SERIES, np.float64), **dict.fromkeys(COUNTS, np.int64),
          "bits_down": np.int64, "x_final": np.float64}
#: Optional float64 [R] columns a run may add (``RunLog(extra_series=...)``); readers find any such column by shape.
EXTRA_SERIES = ("loss_gap",)  # f(x^t) - f*, on problems with a known f* (least squares)

REQUIRED_ATTRS = (
    "algorithm", "compressor", "k", "alpha", "theta", "beta", "gamma", "gamma_theory", "stepsize_multiplier",
    "problem", "lam", "dataset", "dataset_sha256", "N", "d", "n_workers", "shard_sizes", "L", "L_i", "L_tilde",
    "init", "x0", "seed", "rounds_requested", "tol", "backend", "mpi_library", "package_version", "command_line",
    "status",
)
PL_ATTRS = ("mu", "f_star")  # also required when the problem is PL (least squares)
IDENTITY_ATTRS = ("algorithm",)  # what a reader asks of a file before calling it a run log

#: The type every known root attribute must have (a reader refuses a file where one has another).
ATTR_KINDS = {
    **dict.fromkeys(("algorithm", "compressor", "problem", "dataset", "dataset_path", "dataset_sha256", "init", "x0",
                     "backend", "mpi_library", "package_version", "command_line", "status", "config",
                     "resume_history", "mu_kind"), "text"),
    **dict.fromkeys(("k", "N", "d", "n_workers", "seed", "rounds_requested", "log_every", "world_size", "rows",
                     "rounds_done", "batch_size"), "int"),
    **dict.fromkeys(("alpha", "theta", "beta", "gamma", "gamma_theory", "stepsize_multiplier", "lam", "L", "L_tilde",
                     "tol", "mu", "f_star", "elapsed_seconds", "updated_at"), "real"),
    **dict.fromkeys(("stepsize_override", "shuffle"), "bool"),
    "shard_sizes": "ints", "L_i": "reals",
}
_KIND_TEST = {
    "text": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "real": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)),
    "ints": lambda v: isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "iu",
    "reals": lambda v: isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "fiu",
}
_KIND_WORDS = {"text": "a string", "int": "an integer", "real": "a number", "bool": "a boolean",
               "ints": "a vector of integers", "reals": "a vector of numbers"}

STATUSES = ("running", "completed", "converged", "diverged", "interrupted", "failed")
FINAL_STATUSES = ("completed", "converged", "diverged")  # a run with one of these has nothing left to do


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
        self._round = np.zeros(self._capacity, dtype=DTYPES["round"])
        self._bits_down = np.zeros(self._capacity, dtype=DTYPES["bits_down"])
        self._series = {name: np.zeros(self._capacity, dtype=np.float64) for name in self.series_names}
        self._counts = {name: np.zeros((self._capacity, n), dtype=DTYPES[name]) for name in COUNTS}
        self.x = np.zeros(d, dtype=DTYPES["x_final"])
        self.flush_seconds = flush_seconds
        self.flush_every = flush_every
        self._last_flush = time.monotonic()
        self._last_write_cost = 0.0
        self._rows_at_flush = 0
        self.writing = threading.Lock()  # held while a snapshot is written (a shutdown watchdog waits for it)
        self.groups: dict[str, Callable[[h5py.Group], None]] = {}  # extra groups a snapshot holds (name: filler)

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
        names = ("round", "bits_down", *COUNTS, *self.series_names)
        log = read_log(path, need=names)
        if log.rows < rows or any(log[name].dtype.kind != "f" for name in self.series_names) \
                or log["bits_up"].shape[1:] != (self.n,):
            raise InputError(f"--resume {path}: the log's columns do not fit its checkpoint ({rows} rows of "
                             f"{self.n} workers expected)")
        columns = {name: log[name][:rows] for name in names}
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

    def _write_snapshot(self) -> None:
        """Build the snapshot in memory, then put it over the log atomically (`files.write_atomically`): on any
        failure, a full disk included, no temporary file stays and the previous snapshot is as it was."""
        def fill(f: h5py.File) -> None:
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
            label_axes(f, self.series_names, self.n, self.d)
            for name, fill_group in self.groups.items():
                fill_group(f.create_group(name))

        write_atomically(self.path, hdf5_image(fill))

    def flush(self, x: np.ndarray, status: str | None = None, **attrs) -> None:
        """Write a complete snapshot and rename it over the log."""
        started = time.monotonic()
        self.x = np.array(x, dtype=DTYPES["x_final"], copy=True)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"run log status {status!r} is not one of {', '.join(STATUSES)}")
            self.attrs["status"] = status
        self.attrs.update(attrs)
        with self.writing:
            self._write_snapshot()
        self._last_flush = time.monotonic()
        self._last_write_cost = self._last_flush - started
        self._rows_at_flush = self.rows


def label_axes(f: h5py.File, series: tuple[str, ...], n: int, d: int) -> None:
    """Name every axis with an HDF5 dimension scale (``round``, ``worker``, ``coordinate``) and give units, so
    that netCDF tools (xarray with h5netcdf) see named dimensions with ``round`` as a coordinate."""
    f.create_dataset("worker", data=np.arange(n, dtype=np.int64))
    f.create_dataset("coordinate", data=np.arange(d, dtype=np.int64))
    for axis in AXES:
        f[axis].make_scale(axis)
    for name in (*series, *COUNTS, "bits_down"):
        f[name].dims[0].attach_scale(f["round"])
    for name in COUNTS:
        f[name].dims[1].attach_scale(f["worker"])
    f["x_final"].dims[0].attach_scale(f["coordinate"])
    for name, unit in UNITS.items():
        if name in f:
            f[name].attrs["units"] = unit


# --- reading ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogData:
    """A run log in memory: root attributes as plain Python values, every per-row column, the last iterate."""

    path: Path
    attrs: dict
    columns: dict[str, np.ndarray]  # the schema's columns present, then extra [R] series such as loss_gap
    x_final: np.ndarray | None = None  # None when the file has no x_final

    def __getitem__(self, name: str) -> np.ndarray:
        if name == "x_final" and self.x_final is not None:
            return self.x_final
        return self.columns[name]

    @property
    def rows(self) -> int:
        return len(self.columns["round"])

    @property
    def extra(self) -> dict[str, np.ndarray]:
        """The per-row columns the schema does not name (``loss_gap``, ...)."""
        return {name: values for name, values in self.columns.items() if name not in COLUMNS}


def read_log(path: str | os.PathLike, *, need: Sequence[str] = COLUMNS,
             need_attrs: Sequence[str] = IDENTITY_ATTRS) -> LogData:
    """Read a run log, finished or still being written.

    ``round`` and the datasets in ``need`` must be present (``x_final`` may be listed), as must the attributes in
    ``need_attrs``; otherwise, and for a missing or unreadable file, an `InputError` with a one-line message.
    """
    return _open(Path(path), lambda f, p: _read(f, p, need, need_attrs))


def read_attrs(path: str | os.PathLike, *, need: Sequence[str] = ()) -> dict:
    """The root attributes of a run log as plain Python values (the datasets are not read)."""
    return _open(Path(path), lambda f, p: _attributes(f, p, (), need))


def plain(value):
    """An HDF5 attribute value as a plain Python value: bytes decoded, numpy scalars unwrapped, arrays kept."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU" and value.ndim == 0:
        return plain(value[()])
    return value


def _open(path: Path, read: Callable[[h5py.File, Path], object]):
    problem = not_a_plain_file(path)
    if problem:
        raise InputError(f"{path}: {problem}")
    try:
        with h5py.File(path, "r") as f:
            return read(f, path)
    except OSError:
        time.sleep(0.05)  # the writer may have been renaming a new snapshot over the file: try once more
    except (KeyError, TypeError, ValueError, RuntimeError, MemoryError, RecursionError) as err:
        raise InputError(f"{path}: not a readable run log ({_one_line(err)})") from None
    try:
        with h5py.File(path, "r") as f:
            return read(f, path)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, MemoryError, RecursionError) as err:
        raise InputError(f"{path}: not an HDF5 file, or it cannot be read ({_one_line(err)})") from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__  # one line, whatever HDF5 says


def not_a_plain_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (missing, a folder, a FIFO, a link loop, ...), or None if it can."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a loop of symbolic links"
        if err.errno == errno.ENAMETOOLONG:
            return "the name is too long for the file system"
        return "no such file" if err.errno == errno.ENOENT else f"cannot be read ({err.strerror})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device)"
    return None


def _attributes(f: h5py.File, path: Path, missing_datasets: Sequence[str], need_attrs: Sequence[str]) -> dict:
    attrs = {key: plain(value) for key, value in f.attrs.items()}
    missing_attrs = [key for key in need_attrs if key not in attrs]
    if missing_datasets or missing_attrs:
        parts = ([f"datasets {', '.join(missing_datasets)}"] if missing_datasets else []) + (
            [f"attributes {', '.join(missing_attrs)}"] if missing_attrs else [])
        raise InputError(f"{path}: not an ef21-mpi run log (missing {'; '.join(parts)})")
    for key, value in attrs.items():
        kind = ATTR_KINDS.get(key)
        if kind is not None and not _KIND_TEST[kind](value):
            shown = repr(value) if len(repr(value)) < 60 else f"{type(value).__name__} of {np.size(value)} values"
            raise InputError(f"{path}: attribute {key} is {shown}; a run log has {_KIND_WORDS[kind]} there")
    if "status" in attrs and attrs["status"] not in STATUSES:
        raise InputError(f"{path}: status {attrs['status']!r} is not one of {', '.join(STATUSES)}")
    return attrs


def _dataset(f: h5py.File, path: Path, name: str) -> h5py.Dataset | None:
    """The dataset ``name`` stored in the file itself; soft and external links are refused, not followed."""
    link = f.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise InputError(f"{path}: {name} is an HDF5 {type(link).__name__}; a run log's datasets are not links")
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        return None
    declared = obj.size * obj.dtype.itemsize
    if declared > os.path.getsize(path):  # a run log's datasets are stored uncompressed
        raise InputError(f"{path}: dataset {name} declares {declared} bytes, more than the file's "
                         f"{os.path.getsize(path)}; not a run log")
    return obj


def _read(f: h5py.File, path: Path, need: Sequence[str], need_attrs: Sequence[str]) -> LogData:
    found = {name: _dataset(f, path, name) for name in f}
    found = {name: ds for name, ds in found.items() if ds is not None}
    attrs = _attributes(f, path, [name for name in dict.fromkeys(("round", *need)) if name not in found], need_attrs)
    R = found["round"].shape[0] if found["round"].ndim == 1 else -1
    for name in (name for name in COLUMNS if name in found):
        ds, ndim, kind = found[name], 2 if name in COUNTS else 1, np.dtype(DTYPES[name]).kind
        if ds.ndim != ndim or ds.shape[0] != R or ds.dtype.kind != kind:
            expected = f"{np.dtype(DTYPES[name])} [{'R, n' if ndim == 2 else 'R'}]"
            raise InputError(f"{path}: dataset {name} is {ds.dtype} {list(ds.shape)}, a run log has {expected} "
                             f"with R = {max(R, 0)} rows (the length of round)")
    extra = sorted(name for name, ds in found.items()
                   if name not in (*DATASETS, *AXES) and ds.shape == (R,) and ds.dtype.kind == "f")
    columns = {name: found[name][()] for name in (*COLUMNS, *extra) if name in found}
    x_final = found["x_final"][()] if "x_final" in found else None
    if x_final is not None and (x_final.ndim != 1 or x_final.dtype.kind != "f"):
        raise InputError(f"{path}: dataset x_final is {x_final.dtype} {list(x_final.shape)}, a run log has float64 [d]")
    return LogData(path, attrs, columns, x_final)


def schema_problems(log: LogData) -> list[str]:
    """Where a log falls short of SPEC 7 in full (exact dtypes and shapes, every required attribute); [] if nowhere.

    The readers ask less of a file (see `read_log`'s ``need``); this is the writer's contract, for the tests.
    """
    a = log.attrs
    problems = [f"no attribute {key}" for key in REQUIRED_ATTRS if key not in a]
    if a.get("problem") == "least-squares":
        problems += [f"no attribute {key} (PL problem)" for key in PL_ATTRS if key not in a]
    n, d, R = a.get("n_workers"), a.get("d"), log.rows
    shapes = {name: (R, n) if name in COUNTS else (R,) for name in COLUMNS} | {"x_final": (d,)}
    for name in DATASETS:
        values = log.x_final if name == "x_final" else log.columns.get(name)
        if values is None:
            problems.append(f"no dataset {name}")
        elif values.dtype != DTYPES[name] or values.shape != shapes[name]:
            problems.append(f"dataset {name} is {values.dtype} {values.shape}, SPEC 7 says "
                            f"{np.dtype(DTYPES[name])} {shapes[name]}")
    problems += [f"extra column {name} is {values.dtype}, not float64"
                 for name, values in log.extra.items() if values.dtype != np.float64]
    if a.get("rows", R) != R:
        problems.append(f"attribute rows = {a['rows']} but the columns have {R} rows")
    return problems
