"""``ef21-mpi run --resume RUN.h5``: continue a run from its last checkpoint, refusing any change of numbers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ef21_mpi.core.methods import Method
from ef21_mpi.errors import InputError
from ef21_mpi.runtime import checkpoint, logschema
from ef21_mpi.runtime.config import RUNTIME_FIELDS, RunConfig
from ef21_mpi.runtime.experiment import Experiment
from ef21_mpi.runtime.logschema import FINAL_STATUSES, RunLog
from ef21_mpi.runtime.loop import LoopState, fresh_loop


@dataclass(frozen=True)
class ResumeRequest:
    """The log to continue and the flags the user gave explicitly (compared with the original run)."""

    path: str
    explicit: dict = field(default_factory=dict)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def read_attrs(path: Path) -> dict:
    """The attributes of the log to resume; it must hold the run's configuration and status."""
    try:  # the whole log is read (and checked against the schema), not only its attributes
        return logschema.read_log(path, need_attrs=("config", "status")).attrs
    except InputError as err:  # "{path}: no such file", "{path}: not an HDF5 file, ...", "{path}: not an ef21-mpi ..."
        raise InputError(f"--resume {err}") from None


def stored_config(path: Path, text: str) -> dict:
    """The configuration a log stores (JSON): known settings only, each of the type `RunConfig` gives it."""
    try:
        stored = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InputError(f"--resume {path}: its attribute config is not valid JSON") from None
    if not isinstance(stored, dict):
        raise InputError(f"--resume {path}: its attribute config is not a JSON object")
    types = {f.name: f.type for f in fields(RunConfig)}
    for name, value in stored.items():
        if name not in types or name in RUNTIME_FIELDS:
            raise InputError(f"--resume {path}: its configuration has an unknown setting {name!r}")
        # a class or an object (a plug-in given from Python) is stored as its package.module:ClassName spec
        allowed = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
                   "type": (str,), "object": (str,), "dict": (dict,)}
        kinds = tuple(t for word in types[name].split(" | ") for t in allowed[word])
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise InputError(f"--resume {path}: its configuration has {name} = {value!r}, expected {types[name]}")
    if "dataset" not in stored:
        raise InputError(f"--resume {path}: its configuration lacks the data set")
    return stored


def resume_config(request: ResumeRequest) -> RunConfig:
    """The original run's configuration, with the runtime settings the user gave now."""
    path = Path(request.path)
    attrs = read_attrs(path)
    status = attrs["status"]
    if status in FINAL_STATUSES:
        raise InputError(f"--resume {path}: the run is already {status}; there is nothing to resume")
    stored = stored_config(path, attrs["config"])
    for name, value in request.explicit.items():
        if name not in RUNTIME_FIELDS and name in stored and stored[name] != value:
            raise InputError(f"--resume {path}: {_flag(name)} {value} differs from the original run's "
                             f"{stored[name]}; a resumed run continues the same configuration")
    runtime = {k: v for k, v in request.explicit.items() if k in RUNTIME_FIELDS}
    return RunConfig(**{**stored, **runtime, "out": str(path), "overwrite": True})


def check_same_run(cfg: RunConfig, exp: Experiment, attrs: dict) -> None:
    """The data and the number of workers must be those of the original run."""
    if str(attrs.get("dataset_sha256")) != exp.dataset.sha256:
        raise InputError(f"--resume {cfg.out}: data set {exp.dataset.path} has sha256 {exp.dataset.sha256}, "
                         f"the original run used {attrs.get('dataset_sha256')}")
    if int(attrs.get("n_workers", -1)) != exp.n:
        raise InputError(f"--resume {cfg.out}: {exp.n} workers now, the original run had {attrs.get('n_workers')} "
                         "(under MPI launch n+1 ranks)")


def restore(cfg: RunConfig, exp: Experiment, method: Method, log: RunLog,
            attrs: dict) -> tuple[LoopState, dict | None]:
    """The loop state and worker states to start from; the log gets the rows the checkpoint counts on."""
    check_same_run(cfg, exp, attrs)
    path = checkpoint.checkpoint_path(cfg.out)
    fresh = fresh_loop(method, exp.x0)
    if not path.exists():  # killed before its first checkpoint: starting over gives the same result
        return fresh, None
    try:
        ckpt = checkpoint.load(path, fresh.master)
        checkpoint.check_shapes(path, ckpt, fresh, exp.n, cfg.rounds)
    except InputError as err:
        raise InputError(f"--resume {cfg.out}: {err}") from None
    if ckpt.config != json.loads(json.dumps(cfg.numbers(), sort_keys=True)) or ckpt.dataset_sha256 != exp.dataset.sha256:
        raise InputError(f"--resume {cfg.out}: checkpoint {path} belongs to a different configuration or data set")
    rows = int(attrs.get("rows", -1))
    if not 0 <= ckpt.loop.log_rows <= rows:
        raise InputError(f"--resume {cfg.out}: checkpoint {path} counts on {ckpt.loop.log_rows} log rows, "
                         f"the log holds {rows}")
    log.load_rows(Path(cfg.out), ckpt.loop.log_rows)
    expected = np.arange(0, ckpt.loop.t + 1, cfg.log_every)  # the rows logged up to the checkpoint's round
    if not np.array_equal(log.column("round"), expected):
        raise InputError(f"--resume {cfg.out}: checkpoint {path} is at round {ckpt.loop.t} with {ckpt.loop.log_rows} "
                         f"log rows, which does not fit the log's rows (every {cfg.log_every} rounds from 0)")
    return ckpt.loop, ckpt.workers
