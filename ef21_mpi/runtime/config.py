"""A run's configuration: plain values from the command line, checked once at the door."""

from __future__ import annotations

import math
import os
import tempfile
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from ef21_mpi.core import plugins
from ef21_mpi.core.compressors import COMPRESSORS, PARAMETERS
from ef21_mpi.core.methods import INITS, METHODS
from ef21_mpi.core.problems import PROBLEMS
from ef21_mpi.errors import InputError, from_core

BACKENDS = ("auto", "serial", "mpi")
INT64_MAX = 2**63 - 1  # integers are stored as int64 in the log
NAME_MAX = 255  # bytes in one file name (Linux, macOS)
TEMP_EXTRA = len(".") + len(".tmp-") + 8  # the longest name beside a log: its temporary files
PLACEMENTS = ("auto", "pack", "spread")  # runtime.placement: where the workers run under MPI
SERIAL_WORKERS = 20  # the paper's n

#: Settings that change how a run is executed or stored, but none of its numbers; a resumed run may change them.
RUNTIME_FIELDS = frozenset({"out", "overwrite", "data_dir", "backend", "quiet", "flush_every", "flush_seconds",
                            "checkpoint_every", "checkpoint_seconds", "stall_timeout", "placement"})


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (and where its log goes)."""

    dataset: str
    out: str
    algorithm: str | type = "ef21"  # a registry name, package.module:ClassName, or (from Python) a Method subclass
    compressor: str | object = "top-k"  # a registry name, package.module:ClassName, or a class or instance
    compressor_args: dict = field(default_factory=dict)  # --compressor-arg NAME=VALUE, for a plug-in class
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
    participation: float | None = None  # EF21-PP: p, the fraction of workers taking part in a round
    down_compressor: str | None = None  # EF21-BC: the master's compressor C_M
    down_k: int | None = None  # EF21-BC: C_M's k
    momentum: float | None = None  # EF21-HB, EF21-SGDM: eta
    levels: int | None = None  # dithering: s
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
    stall_timeout: float | None = None  # MPI: end the job if no round completes for this many seconds

    def numbers(self) -> dict:
        """The settings that determine the run's numbers (compared when a run is resumed), as JSON-ready values.

        A class or instance appears as its ``module:Class`` spec (and a dataclass instance's fields as its
        ``compressor_args``); ``compressor_args`` is left out when empty, as in logs written before plug-ins.
        """
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUNTIME_FIELDS}
        values["algorithm"] = plugins.spec_of(self.algorithm)
        values["compressor"] = plugins.spec_of(self.compressor)
        values["compressor_args"] = dict(self.compressor_args) or plugins.args_of(self.compressor)
        if not values["compressor_args"]:
            del values["compressor_args"]
        return values

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _positive_finite(value: float | None, flag: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(f"{flag} must be a positive finite number, got {value!r}")


def from_options(options: dict) -> RunConfig:
    """A `RunConfig` from option names (the ``run`` flags with ``-`` as ``_``): the CLI's and `simulate`'s one way in.

    TypeError names an unknown option and the valid ones; ``dataset`` and ``out`` are required.
    """
    known = RunConfig.field_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                        f"valid options: {', '.join(known)}")
    for name in ("dataset", "out"):
        if options.get(name) is None:
            raise InputError(f"--{name} is required (or --resume RUN.h5)")
    return RunConfig(**options)


_PLAIN = {int: "an integer", float: "a number", str: "a string", bool: "True or False", dict: "a dict"}


def _is(value, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def option_kinds(name: str) -> tuple[type, ...]:
    """The types a `RunConfig` field takes (``NoneType`` among them when it may be unset)."""
    hint = typing.get_type_hints(RunConfig)[name]
    return typing.get_args(hint) or (hint,)


def kind_words(kinds) -> str:
    """"an integer or a number", ... for the plain types among ``kinds``."""
    return " or ".join(_PLAIN[k] for k in kinds if k in _PLAIN)


def _check_types(cfg: RunConfig) -> None:
    """Options given from Python have the types the command line would have given them."""
    for f in fields(cfg):
        options = option_kinds(f.name)
        kinds = [k for k in options if k is not type(None)]
        value = getattr(cfg, f.name)
        if any(k not in _PLAIN for k in kinds) or (value is None and type(None) in options):
            continue  # a class or an instance is checked by the plug-in resolution
        if not any(_is(value, k) for k in kinds):
            raise InputError(f"--{f.name.replace('_', '-')} expects {kind_words(kinds)}, got {value!r}")


def _choice(value: str, allowed, flag: str) -> None:
    if value not in allowed:
        raise InputError(f"{flag} {value!r} is not known; expected one of {', '.join(allowed)}")


def validate(cfg: RunConfig) -> None:
    """Reject everything that can be rejected before any data is read."""
    validate_values(cfg)
    check_output_path(cfg.out, cfg.overwrite)


def validate_values(cfg: RunConfig) -> None:
    """The checks of `validate` that do not touch the file system's output side (a sweep checks its grid with them)."""
    _check_types(cfg)
    try:
        method = plugins.resolve_method(cfg.algorithm)
    except ValueError as err:
        raise InputError(f"--algorithm {err}") from None
    try:
        plugins.check_compressor_spec(cfg.compressor, cfg.compressor_args)
    except ValueError as err:
        raise InputError(f"--compressor {err}") from None
    _choice(cfg.init, INITS, "--init")
    _choice(cfg.problem, PROBLEMS, "--problem")
    _choice(cfg.backend, BACKENDS, "--backend")
    _choice(cfg.placement, PLACEMENTS, "--placement")
    _positive_finite(cfg.stepsize, "--stepsize")
    _positive_finite(cfg.stepsize_multiplier, "--stepsize-multiplier")
    _positive_finite(cfg.flush_seconds, "--flush-seconds")
    _positive_finite(cfg.checkpoint_seconds, "--checkpoint-seconds")
    _positive_finite(cfg.stall_timeout, "--stall-timeout")
    if not (math.isfinite(cfg.lam) and cfg.lam >= 0):
        raise InputError(f"--lam must be a non-negative finite number, got {cfg.lam!r}")
    if not (math.isfinite(cfg.tol) and cfg.tol >= 0):
        raise InputError(f"--tol must be a non-negative finite number, got {cfg.tol!r}")
    if cfg.k is not None and cfg.k < 1:
        raise InputError(f"--k must be at least 1, got {cfg.k}")
    for flag, value in (("--rounds", cfg.rounds), ("--seed", cfg.seed)):
        if value < 0:
            raise InputError(f"{flag} must be non-negative, got {value}")
    for flag, value in (("--rounds", cfg.rounds), ("--seed", cfg.seed), ("--k", cfg.k), ("--workers", cfg.workers),
                        ("--log-every", cfg.log_every), ("--flush-every", cfg.flush_every),
                        ("--batch-size", cfg.batch_size), ("--checkpoint-every", cfg.checkpoint_every)):
        if value is not None and value > INT64_MAX:
            raise InputError(f"{flag} {value} is beyond the largest value a log can hold ({INT64_MAX})")
    for flag, path in (("--dataset", cfg.dataset), ("--out", cfg.out), ("--x0", cfg.x0), ("--data-dir", cfg.data_dir)):
        _utf8_path(path, flag)
    for flag, value in (("--workers", cfg.workers), ("--log-every", cfg.log_every), ("--flush-every", cfg.flush_every),
                        ("--batch-size", cfg.batch_size), ("--checkpoint-every", cfg.checkpoint_every)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    if method.minibatch and cfg.batch_size is None:
        raise InputError(f"--algorithm {cfg.algorithm} needs --batch-size TAU (rows per minibatch)")
    validate_method_options(cfg, method)
    if cfg.x0 not in ("zeros", "normal") and not cfg.x0.endswith(".npy"):
        raise InputError(f"--x0 {cfg.x0!r}: expected zeros, normal or a path to a .npy file")
    if cfg.x0.endswith(".npy") and not Path(cfg.x0).is_file():
        raise InputError(f"--x0 file not found: {cfg.x0}")


METHOD_OPTIONS = ("participation", "down_compressor", "down_k", "momentum")  # RunConfig fields a method may take


def validate_method_options(cfg: RunConfig, cls) -> None:
    """Each method's own flags (``cls`` is the method's class): given where used, present where required, in range."""
    for name in METHOD_OPTIONS:
        value = getattr(cfg, name)
        users = [m for m, c in METHODS.items() if name in c.options]
        if value is not None and name not in cls.options:
            raise InputError(f"{_flag(name)} is only used by --algorithm {', '.join(users)}, not {cfg.algorithm}")
        if value is None and name in cls.required:
            raise InputError(f"--algorithm {cfg.algorithm} needs {_flag(name)}")
    with from_core():
        cls.check_options(**{name: getattr(cfg, name) for name in METHOD_OPTIONS})
    dithering = "dithering" in (cfg.compressor, cfg.down_compressor)
    if cfg.levels is not None and not dithering:
        raise InputError("--levels is only used by the dithering compressor")
    if dithering and cfg.levels is None:
        raise InputError("the dithering compressor needs --levels s (levels per sign, s >= 1)")
    if cfg.levels is not None and cfg.levels < 1:
        raise InputError(f"--levels must be at least 1, got {cfg.levels}")
    if cfg.down_k is not None and cfg.down_compressor in ("identity", "natural", "dithering"):
        raise InputError(f"--down-k is not used by --down-compressor {cfg.down_compressor}")


def _flag(name: str) -> str:
    return "--compressor-arg" if name == "compressor_args" else "--" + name.replace("_", "-")


MPI_ONLY = ("placement", "stall_timeout")  # options only the MPI backend uses


def ignored_options(cfg: RunConfig, given, backend: str) -> list[str]:
    """Why each option in ``given`` (the names the user set) has no effect on this run, one sentence each.

    ``backend`` is the one the run will use (serial or mpi). Options that validation refuses are not listed:
    they are errors. Uses the method's facts (``compresses``, ``initialises``, ``minibatch``)."""
    try:
        method = plugins.resolve_method(cfg.algorithm)
    except ValueError:
        return []
    name = plugins.spec_of(cfg.algorithm)
    said = []
    if not method.compresses:
        said += [f"{_flag(o)} is ignored by --algorithm {name}: it sends uncompressed vectors"
                 for o in ("compressor", "compressor_args", "k", "levels") if o in given]
    elif "k" in given and isinstance(cfg.compressor, str) and cfg.compressor in COMPRESSORS \
            and "k" not in PARAMETERS[COMPRESSORS[cfg.compressor]]:
        said.append(f"--k is ignored by --compressor {cfg.compressor}: it takes no k")
    if "init" in given and not method.initialises:
        said.append(f"--init is ignored by --algorithm {name}: it does not initialise g_i")
    if "batch_size" in given and not method.minibatch:
        said.append(f"--batch-size is ignored by --algorithm {name}: its workers use full gradients")
    if "stepsize_multiplier" in given and cfg.stepsize is not None:
        said.append("--stepsize-multiplier is ignored when --stepsize is given")
    if backend == "serial":
        said += [f"{_flag(o)} is ignored by the serial backend (it is for MPI runs)" for o in MPI_ONLY if o in given]
    return said


def _utf8_path(path: str | None, flag: str) -> None:
    """Paths go into the log as text: they must be valid UTF-8 (a name with other bytes arrives as surrogates)."""
    if path is None:
        return
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "backslashreplace").decode()
        raise InputError(f"{flag} {shown}: the path is not valid UTF-8; rename it") from None


def check_output_path(out: str, overwrite: bool) -> None:
    """The log's folder must exist, or be creatable (the session creates it), and accept a new file; an existing
    log is only replaced on request."""
    path = Path(out)
    size = len(path.name.encode("utf-8", "surrogateescape"))
    if size > NAME_MAX - TEMP_EXTRA:
        raise InputError(f"--out {out}: the file name is {size} bytes; at most {NAME_MAX - TEMP_EXTRA} are allowed "
                         f"(its temporary files add {TEMP_EXTRA} to it, and the file system allows {NAME_MAX})")
    folder = path.parent if str(path.parent) else Path(".")
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent  # a missing folder is created in its nearest existing ancestor: test that one
    if not folder.is_dir():
        raise InputError(f"--out {out}: {folder} is not a folder")
    if path.is_dir():
        raise InputError(f"--out {out} is a folder; expected the path of a log file")
    if path.exists() and not overwrite:
        raise InputError(f"--out {out} already exists; pass --overwrite to replace it")
    try:  # os.access says yes to root everywhere; creating a file is the real test
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ef21-probe"):
            pass
    except OSError as err:
        raise InputError(f"--out {out}: folder {folder} is not writable ({err.strerror})") from None
