"""A run's configuration: plain values from the command line, checked once at the door."""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ef21_mpi.core.compressors import COMPRESSORS
from ef21_mpi.core.methods import INITS, METHODS
from ef21_mpi.core.problems import PROBLEMS
from ef21_mpi.errors import InputError

BACKENDS = ("auto", "serial", "mpi")
PLACEMENTS = ("auto", "pack", "spread")  # runtime.placement: where the workers run under MPI
SERIAL_WORKERS = 20  # the paper's n

#: Settings that change how a run is executed or stored, but none of its numbers; a resumed run may change them.
RUNTIME_FIELDS = frozenset({"out", "overwrite", "data_dir", "backend", "quiet", "flush_every", "flush_seconds",
                            "checkpoint_every", "checkpoint_seconds", "placement"})


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (and where its log goes)."""

    dataset: str
    out: str
    algorithm: str = "ef21"
    compressor: str = "top-k"
    k: int | None = 1
    rounds: int = 1000
    workers: int | None = None  # None: SERIAL_WORKERS in one process, one per worker rank under MPI
    problem: str = "logreg"
    lam: float = 0.1
    init: str = "full"
    stepsize: float | None = None
    stepsize_multiplier: float = 1.0
    x0: str = "zeros"
    seed: int = 0
    tol: float = 0.0
    batch_size: int | None = None
    shuffle: bool = False
    log_every: int = 1
    flush_every: int | None = None
    flush_seconds: float = 1.0
    checkpoint_every: int | None = None
    checkpoint_seconds: float = 60.0
    data_dir: str | None = None
    overwrite: bool = False
    backend: str = "auto"
    placement: str = "auto"
    quiet: bool = False

    def numbers(self) -> dict:
        """The settings that determine the run's numbers (compared when a run is resumed)."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _positive_finite(value: float | None, flag: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(f"{flag} must be a positive finite number, got {value!r}")


def _choice(value: str, allowed, flag: str) -> None:
    if value not in allowed:
        raise InputError(f"{flag} {value!r} is not known; expected one of {', '.join(allowed)}")


def validate(cfg: RunConfig) -> None:
    """Reject everything that can be rejected before any data is read."""
    validate_values(cfg)
    check_output_path(cfg.out, cfg.overwrite)


def validate_values(cfg: RunConfig) -> None:
    """The checks of `validate` that do not touch the file system's output side (a sweep checks its grid with them)."""
    _choice(cfg.algorithm, METHODS, "--algorithm")
    _choice(cfg.compressor, COMPRESSORS, "--compressor")
    _choice(cfg.init, INITS, "--init")
    _choice(cfg.problem, PROBLEMS, "--problem")
    _choice(cfg.backend, BACKENDS, "--backend")
    _choice(cfg.placement, PLACEMENTS, "--placement")
    _positive_finite(cfg.stepsize, "--stepsize")
    _positive_finite(cfg.stepsize_multiplier, "--stepsize-multiplier")
    _positive_finite(cfg.flush_seconds, "--flush-seconds")
    _positive_finite(cfg.checkpoint_seconds, "--checkpoint-seconds")
    if not (math.isfinite(cfg.lam) and cfg.lam >= 0):
        raise InputError(f"--lam must be a non-negative finite number, got {cfg.lam!r}")
    if not (math.isfinite(cfg.tol) and cfg.tol >= 0):
        raise InputError(f"--tol must be a non-negative finite number, got {cfg.tol!r}")
    if cfg.k is not None and cfg.k < 1:
        raise InputError(f"--k must be at least 1, got {cfg.k}")
    for flag, value in (("--rounds", cfg.rounds), ("--seed", cfg.seed)):
        if value < 0:
            raise InputError(f"{flag} must be non-negative, got {value}")
    for flag, value in (("--workers", cfg.workers), ("--log-every", cfg.log_every), ("--flush-every", cfg.flush_every),
                        ("--batch-size", cfg.batch_size), ("--checkpoint-every", cfg.checkpoint_every)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    if METHODS[cfg.algorithm].minibatch and cfg.batch_size is None:
        raise InputError("--algorithm ef21-sgd needs --batch-size TAU (rows per minibatch)")
    if cfg.x0 not in ("zeros", "normal") and not cfg.x0.endswith(".npy"):
        raise InputError(f"--x0 {cfg.x0!r}: expected zeros, normal or a path to a .npy file")
    if cfg.x0.endswith(".npy") and not Path(cfg.x0).is_file():
        raise InputError(f"--x0 file not found: {cfg.x0}")


def check_output_path(out: str, overwrite: bool) -> None:
    """The log's folder must exist and accept a new file, and an existing log is only replaced on request."""
    path = Path(out)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise InputError(f"--out {out}: folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"--out {out}: {folder} is not a folder")
    if path.is_dir():
        raise InputError(f"--out {out} is a folder; expected the path of a log file")
    if path.exists() and not overwrite:
        raise InputError(f"--out {out} already exists; pass --overwrite to replace it")
    try:  # os.access says yes to root everywhere; creating a file is the real test
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.probe"):
            pass
    except OSError as err:
        raise InputError(f"--out {out}: folder {folder} is not writable ({err.strerror})") from None
