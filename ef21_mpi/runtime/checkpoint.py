"""Checkpoints: the complete state of a run after round t, saved atomically beside its log.

A checkpoint holds the loop state (round counter, bits accumulated since the last logged row, how many
log rows belong to it), the master's state and every worker's state, each saved field by field from the
method's own state types (`core.methods`): nothing is guessed. Worker states travel as a dict of arrays
with a leading worker axis (generators as their JSON state), so a serial run can be resumed under MPI and
vice versa, and a resumed run is bit-identical to an uninterrupted one.

Atomicity: the file is written under a temporary name, synced, then renamed over the previous
checkpoint; a crash at any point leaves the previous checkpoint valid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import h5py
import numpy as np

from ef21_mpi.core.methods import Master, Workers
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.loop import LoopState

FORMAT_VERSION = 2
RNG_FIELD = "rngs"


def checkpoint_path(log_path: str | os.PathLike) -> Path:
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + ".ckpt")


# --- worker states as arrays with a leading worker axis -----------------------------------------


def worker_arrays(state: Workers) -> dict[str, np.ndarray]:
    """Every field of a group's state as an array with one row per worker (generators as JSON strings)."""
    out = {}
    for f in fields(state):
        value = getattr(state, f.name)
        if f.name == RNG_FIELD:
            value = np.array([json.dumps(rng.bit_generator.state) for rng in value], dtype=object)
        out[f.name] = np.array(value, copy=True)
    return out


def concat_arrays(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The states of consecutive groups as one (the groups' workers in order)."""
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def slice_arrays(arrays: dict[str, np.ndarray], workers: range) -> dict[str, np.ndarray]:
    return {key: value[workers.start:workers.stop] for key, value in arrays.items()}


def restore_workers(state: Workers, arrays: dict[str, np.ndarray]) -> None:
    """Put saved arrays back into a group's state (same method, same number of workers)."""
    for f in fields(state):
        if f.name not in arrays:
            raise InputError(f"checkpoint lacks the worker state {f.name!r}")
        if f.name == RNG_FIELD:
            for rng, text in zip(state.rngs, arrays[f.name]):
                rng.bit_generator.state = json.loads(text)
        else:
            getattr(state, f.name)[:] = arrays[f.name]


def master_arrays(state: Master) -> dict[str, np.ndarray]:
    """Every field of the master's state as an array (a generator, e.g. EF21-PP's sampler, as its JSON state)."""
    out = {}
    for f in fields(state):
        value = getattr(state, f.name)
        if isinstance(value, np.random.Generator):
            value = json.dumps(value.bit_generator.state)
        out[f.name] = np.array(value, copy=True)
    return out


def restore_master(template: Master, arrays: dict[str, np.ndarray]) -> Master:
    missing = [f.name for f in fields(template) if f.name not in arrays]
    if missing:
        raise InputError(f"checkpoint lacks the master state {', '.join(missing)}")
    restored = {}
    for f in fields(template):
        value = arrays[f.name]
        if isinstance(getattr(template, f.name), np.random.Generator):
            text = value.item() if isinstance(value, np.ndarray) else value
            rng = np.random.default_rng()
            rng.bit_generator.state = json.loads(text.decode() if isinstance(text, bytes) else text)
            value = rng
        restored[f.name] = value
    return replace(template, **restored)


# --- the file ----------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    loop: LoopState
    workers: dict[str, np.ndarray]
    config: dict
    dataset_sha256: str


def save(path: Path, ckpt: Checkpoint, before_rename: Callable[[], None] | None = None) -> None:
    """Write ``ckpt`` to ``path`` atomically (``before_rename`` is the fault-injection hook for tests)."""
    loop = ckpt.loop
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        f.attrs.update({"format_version": FORMAT_VERSION, "round": loop.t, "log_rows": loop.log_rows,
                        "bits_down": loop.bits_down, "wall_offset": loop.wall_offset,
                        "config": json.dumps(ckpt.config, sort_keys=True), "dataset_sha256": ckpt.dataset_sha256})
        f["bits_up"], f["coords_up"] = loop.bits_up, loop.coords_up
        for key, value in master_arrays(loop.master).items():
            f[f"master/{key}"] = value.astype(h5py.string_dtype()) if value.dtype.kind in "OU" else value
        for key, value in ckpt.workers.items():
            f[f"workers/{key}"] = value.astype(h5py.string_dtype()) if value.dtype == object else value
        f.flush()
        os.fsync(f.id.get_vfd_handle())
    if before_rename is not None:
        before_rename()
    os.replace(tmp, path)


def load(path: Path, master_template: Master) -> Checkpoint:
    """Read a checkpoint; the master state comes back in the type of ``master_template``."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format_version") != FORMAT_VERSION:
                raise InputError(f"{path} is not an ef21-mpi checkpoint (format {FORMAT_VERSION})")
            master = restore_master(master_template, {key: f["master"][key][()] for key in f["master"]})
            workers = {key: f["workers"][key][()] for key in f["workers"]}
            if RNG_FIELD in workers:
                workers[RNG_FIELD] = np.array([s.decode() if isinstance(s, bytes) else s for s in workers[RNG_FIELD]],
                                              dtype=object)
            loop = LoopState(t=int(f.attrs["round"]), master=master, bits_up=f["bits_up"][()],
                             coords_up=f["coords_up"][()], bits_down=int(f.attrs["bits_down"]),
                             log_rows=int(f.attrs["log_rows"]), wall_offset=float(f.attrs["wall_offset"]))
            return Checkpoint(loop, workers, json.loads(f.attrs["config"]), str(f.attrs["dataset_sha256"]))
    except (OSError, KeyError) as err:
        raise InputError(f"cannot read checkpoint {path}: {err}") from err
