"""``ef21-mpi rerun LOG``: the configuration a log stores, run again from its start into a new log.

Only the settings that change how a run is executed or stored (`RUNTIME_FIELDS`: the log's path, the backend,
the data folder, flushing, checkpoints, ...) and where the data set is may be given; everything else that
determines the numbers comes from the log, and the data set must be the one the log used (its sha256), so that
the new log holds the same numbers, bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ef21_mpi.core.datasets import REGISTRY
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import RUNTIME_FIELDS, RunConfig
from ef21_mpi.runtime.experiment import Experiment
from ef21_mpi.runtime.resume import read_attrs, stored_config

SUFFIX = ".rerun.h5"


def default_out(log: Path) -> Path:
    """Where a rerun of ``log`` goes unless told: beside it, ``run.h5`` -> ``run.rerun.h5``."""
    return log.with_name(log.stem + SUFFIX)


def rerun_config(log: str | os.PathLike, runtime: dict) -> tuple[RunConfig, Callable[[Experiment], None]]:
    """The log's configuration with the ``runtime`` settings given now, and a check for the experiment built
    from it (the data set must have the log's sha256)."""
    path = Path(log)
    command = "rerun"
    attrs = read_attrs(path, command)
    stored = stored_config(path, attrs["config"], command)
    other = sorted(set(runtime) - RUNTIME_FIELDS - {"dataset"})
    if other:
        flags = ", ".join("--" + name.replace("_", "-") for name in other)
        raise InputError(f"{command} {path}: {flags} cannot be changed; a rerun repeats the log's configuration "
                         "(for another one: ef21-mpi run)")
    out = Path(runtime.get("out") or default_out(path))
    if out.resolve() == path.resolve() or (out.exists() and os.path.samefile(out, path)):
        raise InputError(f"{command} {path}: --out {out} is the log itself; a rerun writes a new log")
    dataset = runtime.get("dataset", stored["dataset"])
    if dataset not in REGISTRY and not os.path.exists(dataset) and os.path.exists(str(attrs.get("dataset_path"))):
        dataset = str(attrs["dataset_path"])  # given as a path relative to another folder: the file it found then
    cfg = RunConfig(**{**stored, **runtime, "dataset": dataset, "out": str(out)})
    expected = str(attrs.get("dataset_sha256"))

    def same_data(exp: Experiment) -> None:
        if exp.dataset.sha256 != expected:
            raise InputError(f"{command} {path}: data set {exp.dataset.path} has sha256 {exp.dataset.sha256}, the "
                             f"original run used {expected}")

    return cfg, same_data
