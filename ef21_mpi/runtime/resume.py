"""``ef21-mpi run --resume RUN.h5``: continue a run from its last checkpoint, refusing any change of numbers but
``--rounds`` (a completed run is extended from the final state its log keeps), and ``ef21-mpi rerun RUN.h5``:
the same configuration again, from its start, into a new log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ef21_mpi.core.methods import Method
from ef21_mpi.errors import InputError
from ef21_mpi.runtime import checkpoint, logschema
from ef21_mpi.runtime.config import RUNTIME_FIELDS, RunConfig
from ef21_mpi.runtime.experiment import Experiment
from ef21_mpi.runtime.logschema import RunLog
from ef21_mpi.runtime.loop import LoopState, fresh_loop


@dataclass(frozen=True)
class ResumeRequest:
    """The log to continue and the flags the user gave explicitly (compared with the original run)."""

    path: str
    explicit: dict = field(default_factory=dict)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def read_attrs(path: Path, command: str = "--resume") -> dict:
    """The attributes of the log to resume; it must hold the run's configuration and status."""
    try:  # the whole log is read (and checked against the schema), not only its attributes
        return logschema.read_log(path, need_attrs=("config", "status")).attrs
    except InputError as err:  # "{path}: no such file", "{path}: not an HDF5 file, ...", "{path}: not an ef21-mpi ..."
        raise InputError(f"{command} {err}") from None


def stored_config(path: Path, text: str, command: str = "--resume") -> dict:
    """The configuration a log stores (JSON): known settings only, each of the type `RunConfig` gives it."""
    try:
        stored = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InputError(f"{command} {path}: its attribute config is not valid JSON") from None
    if not isinstance(stored, dict):
        raise InputError(f"{command} {path}: its attribute config is not a JSON object")
    types = {f.name: f.type for f in fields(RunConfig)}
    for name, value in stored.items():
        if name not in types or name in RUNTIME_FIELDS:
            raise InputError(f"{command} {path}: its configuration has an unknown setting {name!r}")
        # a class or an object (a plug-in given from Python) is stored as its package.module:ClassName spec
        allowed = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
                   "type": (str,), "object": (str,), "dict": (dict,)}
        kinds = tuple(t for word in types[name].split(" | ") for t in allowed[word])
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise InputError(f"{command} {path}: its configuration has {name} = {value!r}, expected {types[name]}")
    if "dataset" not in stored:
        raise InputError(f"{command} {path}: its configuration lacks the data set")
    return stored


def resume_config(request: ResumeRequest) -> RunConfig:
    """The original run's configuration, with the runtime settings the user gave now and, to extend the run,
    more ``--rounds``: the only setting that may change, as rounds 0..R of a longer run are those of the R-round
    run (a completed run continues from the final state its log keeps, `checkpoint.FINAL_GROUP`)."""
    path = Path(request.path)
    attrs = read_attrs(path)
    stored = stored_config(path, attrs["config"])
    rounds = request.explicit.get("rounds", stored.get("rounds"))
    check_extension(path, attrs, stored.get("rounds"), rounds, "rounds" in request.explicit)
    for name, value in request.explicit.items():
        if name not in RUNTIME_FIELDS and name != "rounds" and name in stored and stored[name] != value:
            raise InputError(f"--resume {path}: {_flag(name)} {value} differs from the original run's "
                             f"{stored[name]}; a resumed run continues the same configuration (only --rounds "
                             "may grow)")
    runtime = {k: v for k, v in request.explicit.items() if k in RUNTIME_FIELDS}
    return RunConfig(**{**stored, **runtime, "rounds": rounds, "out": str(path), "overwrite": True})


def check_extension(path: Path, attrs: dict, old: int | None, new: int | None, given: bool) -> None:
    """May the run in ``path`` (status, ``old`` rounds) go on to ``new`` rounds? One line saying why not."""
    status, done = attrs["status"], attrs.get("rounds_done")
    if status == "converged":
        raise InputError(f"--resume {path}: the run converged at round {done} (grad_norm_sq < --tol "
                         f"{attrs.get('tol')}); a longer run stops there too. To go further, start a new run with "
                         "a smaller --tol")
    if status == "diverged":
        raise InputError(f"--resume {path}: the run diverged at round {done}; a longer run diverges there too")
    if not isinstance(new, int) or isinstance(new, bool) or not isinstance(old, int):
        raise InputError(f"--resume {path}: --rounds {new!r} is not a number of rounds")
    if status == "completed" and new <= old:
        more = f"--rounds {new} is not more than its {old}" if given else f"pass --rounds N > {old} to extend it"
        raise InputError(f"--resume {path}: the run is already completed ({old} rounds); {more}")
    if new < old:
        raise InputError(f"--resume {path}: --rounds {new} is fewer than the {old} rounds the run was started "
                         "with; a resumed run can only be extended")
    if status == "completed" and not checkpoint.has_final_state(path):
        raise InputError(f"--resume {path}: the log holds no final state to extend (it was written before runs "
                         f"could be extended); run the configuration again with --rounds {new}")


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
    """The loop state and worker states to start from; the log gets the rows the checkpoint counts on.

    A completed run (extended to more rounds) starts from the final state its log keeps; that state is first
    saved as the run's checkpoint, so that an extension stopped before its own first checkpoint resumes there."""
    check_same_run(cfg, exp, attrs)
    path = checkpoint.checkpoint_path(cfg.out)
    fresh = fresh_loop(method, exp.x0)
    final = attrs["status"] == "completed"
    if not final and not path.exists():  # killed before its first checkpoint: starting over gives the same result
        return fresh, None
    shown = Path(f"{cfg.out}/{checkpoint.FINAL_GROUP}") if final else path  # what the messages call it
    try:
        ckpt = checkpoint.load(Path(cfg.out), fresh.master, checkpoint.FINAL_GROUP) if final else \
            checkpoint.load(path, fresh.master)
        checkpoint.check_shapes(shown, ckpt, fresh, exp.n, cfg.rounds)
    except InputError as err:
        raise InputError(f"--resume {cfg.out}: {err}") from None
    current = json.loads(json.dumps(cfg.numbers(), sort_keys=True))
    if without_rounds(ckpt.config) != without_rounds(current) or ckpt.dataset_sha256 != exp.dataset.sha256:
        raise InputError(f"--resume {cfg.out}: checkpoint {shown} belongs to a different configuration or data set")
    rows = int(attrs.get("rows", -1))
    if not 0 <= ckpt.loop.log_rows <= rows:
        raise InputError(f"--resume {cfg.out}: checkpoint {shown} counts on {ckpt.loop.log_rows} log rows, "
                         f"the log holds {rows}")
    log.load_rows(Path(cfg.out), ckpt.loop.log_rows)
    expected = np.arange(0, ckpt.loop.t + 1, cfg.log_every)  # the rows logged up to the checkpoint's round
    if not np.array_equal(log.column("round"), expected):
        raise InputError(f"--resume {cfg.out}: checkpoint {shown} is at round {ckpt.loop.t} with {ckpt.loop.log_rows} "
                         f"log rows, which does not fit the log's rows (every {cfg.log_every} rounds from 0)")
    if final:
        checkpoint.save(checkpoint.checkpoint_path(cfg.out), replace(ckpt, config=current))
    return ckpt.loop, ckpt.workers


def without_rounds(config: dict) -> dict:
    """A stored configuration less ``rounds``, which a resumed run may raise (see `resume_config`)."""
    return {key: value for key, value in config.items() if key != "rounds"}
