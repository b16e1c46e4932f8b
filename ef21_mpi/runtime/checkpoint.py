"""Checkpoints: the complete state of a run after round t, saved atomically beside its log.

A checkpoint holds the loop state (round counter, bits accumulated since the last logged row, how many
log rows belong to it), the master's state and every worker's state, each saved field by field from the
method's own state types (`core.methods`): nothing is guessed. Worker states travel as a dict of arrays
with a leading worker axis (generators as their JSON state), so a serial run can be resumed under MPI and
vice versa, and a resumed run is bit-identical to an uninterrupted one.

Atomicity: the file is written under a private temporary name (created exclusively, see `files`), synced,
then renamed over the previous checkpoint; a crash at any point leaves the previous checkpoint valid.

Integrity: the file carries a sha256 ``digest`` of every attribute (its run's identity: the configuration and
the data set's sha256, the round counter) and every array; a checkpoint whose digest does not match, or whose
shapes, dtypes or round counter do not fit the run, is refused with one line (`load`, `check_shapes`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import h5py
import numpy as np

from ef21_mpi.core.methods import Master, Workers
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.files import hdf5_image, write_atomically
from ef21_mpi.runtime.loop import LoopState

FORMAT_VERSION = 2
RNG_FIELD = "rngs"
FINAL_GROUP = "final_state"  # a completed run's log keeps its final state there, so that it can be extended


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


def _contents(ckpt: Checkpoint) -> tuple[dict, dict[str, np.ndarray]]:
    """The attributes and datasets a checkpoint file holds (the digest covers exactly these)."""
    loop = ckpt.loop
    attrs = {"format_version": FORMAT_VERSION, "round": int(loop.t), "log_rows": int(loop.log_rows),
             "bits_down": int(loop.bits_down), "wall_offset": float(loop.wall_offset),
             "config": json.dumps(ckpt.config, sort_keys=True), "dataset_sha256": str(ckpt.dataset_sha256)}
    arrays = {"bits_up": np.asarray(loop.bits_up), "coords_up": np.asarray(loop.coords_up)}
    arrays |= {f"master/{key}": value for key, value in master_arrays(loop.master).items()}
    arrays |= {f"workers/{key}": np.asarray(value) for key, value in ckpt.workers.items()}
    return attrs, arrays


def digest(attrs: dict, arrays: dict[str, np.ndarray]) -> str:
    """sha256 of every attribute (the run's identity: configuration and data set) and every array (dtype, shape,
    bytes; text arrays as their strings), in a fixed order."""
    h = hashlib.sha256()
    for key in sorted(attrs):
        h.update(f"{key}={attrs[key]!r}\n".encode())
    for key in sorted(arrays):
        value = arrays[key]
        if value.dtype.kind in "OSU":
            body = "\0".join(v.decode() if isinstance(v, bytes) else str(v) for v in value.ravel()).encode()
            kind = "text"
        else:
            body, kind = np.ascontiguousarray(value).tobytes(), value.dtype.str
        h.update(f"{key}:{kind}:{value.shape}:{len(body)}\n".encode())
        h.update(body)
    return h.hexdigest()


def fill(group: h5py.Group, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` with its digest into ``group``: a checkpoint file's root, or a run log's `FINAL_GROUP`."""
    attrs, arrays = _contents(ckpt)
    group.attrs.update(attrs)
    group.attrs["digest"] = digest(attrs, arrays)
    for key, value in arrays.items():
        group[key] = value.astype(h5py.string_dtype()) if value.dtype.kind in "OU" else value


def save(path: Path, ckpt: Checkpoint, before_rename: Callable[[], None] | None = None) -> None:
    """Write ``ckpt`` to ``path`` atomically, with its digest (``before_rename``: the fault-injection hook)."""
    write_atomically(path, hdf5_image(lambda f: fill(f, ckpt)), sync=True, before_rename=before_rename)


def _read_arrays(f: h5py.Group, path: Path) -> dict[str, np.ndarray]:
    """Every dataset of the file (links refused, sizes bounded by the file's), strings decoded."""
    arrays = {}

    def visit(name: str, group: h5py.Group, prefix: str) -> None:
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise InputError(f"checkpoint {path}: {prefix}{name} is a link; a checkpoint holds no links")
        obj = group[name]
        if isinstance(obj, h5py.Group):
            for child in obj:
                visit(child, obj, f"{prefix}{name}/")
            return
        if obj.size * obj.dtype.itemsize > os.path.getsize(path):
            raise InputError(f"checkpoint {path}: {prefix}{name} declares more data than the file holds")
        value = obj[()]
        if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype) is not None:
            value = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(value)],
                             dtype=object).reshape(obj.shape)
        arrays[f"{prefix}{name}"] = np.asarray(value)

    for name in f:
        visit(name, f, "")
    return arrays


def read_contents(path: Path, group: str | None = None) -> tuple[dict, dict[str, np.ndarray], str]:
    """A checkpoint's attributes, arrays and stored digest, as `digest` takes them (nothing checked yet): the
    file's root, or the group ``group`` of the file (a run log's `FINAL_GROUP`)."""
    try:
        with h5py.File(path, "r") as f:
            root = f if group is None else _group(f, path, group)
            if root.attrs.get("format_version") != FORMAT_VERSION:
                raise InputError(f"{path} is not an ef21-mpi checkpoint (format {FORMAT_VERSION})")
            raw = {key: root.attrs[key] for key in root.attrs}
            arrays = _read_arrays(root, path)
        attrs = {"format_version": int(raw["format_version"]), "round": int(raw["round"]),
                 "log_rows": int(raw["log_rows"]), "bits_down": int(raw["bits_down"]),
                 "wall_offset": float(raw["wall_offset"]), "config": _text(raw["config"]),
                 "dataset_sha256": _text(raw["dataset_sha256"])}
        return attrs, arrays, _text(raw["digest"])
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise InputError(f"cannot read checkpoint {path}: {' '.join(str(err).split())}") from None


def _group(f: h5py.File, path: Path, name: str) -> h5py.Group:
    link = f.get(name, getlink=True)
    if link is None:
        raise InputError(f"{path} holds no {name} group")
    if not isinstance(link, h5py.HardLink) or not isinstance(f[name], h5py.Group):
        raise InputError(f"{path}: {name} is not a group of the file itself")
    return f[name]


def has_final_state(path: str | os.PathLike) -> bool:
    """Whether a run log holds its run's final state (`FINAL_GROUP`, written when a run completes)."""
    try:
        with h5py.File(path, "r") as f:
            return f.get(FINAL_GROUP, getlink=True) is not None
    except (OSError, ValueError):
        return False


def load(path: Path, master_template: Master, group: str | None = None) -> Checkpoint:
    """Read a checkpoint (a file, or the group ``group`` of a run log) and check its digest; the master state
    comes back in the type of ``master_template``."""
    attrs, arrays, stored = read_contents(path, group)
    if digest(attrs, arrays) != stored:
        raise InputError(f"checkpoint {path} fails its digest check (its contents were changed or damaged)")
    try:
        master = restore_master(master_template, {k[7:]: v for k, v in arrays.items() if k.startswith("master/")})
        workers = {k[8:]: v for k, v in arrays.items() if k.startswith("workers/")}
        loop = LoopState(t=attrs["round"], master=master, bits_up=arrays["bits_up"], coords_up=arrays["coords_up"],
                         bits_down=attrs["bits_down"], log_rows=attrs["log_rows"], wall_offset=attrs["wall_offset"])
        return Checkpoint(loop, workers, json.loads(attrs["config"]), attrs["dataset_sha256"])
    except (KeyError, ValueError) as err:
        raise InputError(f"cannot read checkpoint {path}: {' '.join(str(err).split())}") from None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if not isinstance(value, str):
        raise TypeError(f"expected a text attribute, got {type(value).__name__}")
    return value


def check_shapes(path: Path, ckpt: Checkpoint, template: LoopState, n: int, rounds: int) -> None:
    """Refuse a checkpoint whose state does not fit the run: shapes and dtypes of the master's and the workers'
    state, the per-worker counters, and the round counter."""
    problems = []
    for f in fields(template.master):
        want, got = np.asarray(getattr(template.master, f.name)), np.asarray(getattr(ckpt.loop.master, f.name))
        if want.size == 0 and want.ndim == got.ndim and want.dtype == got.dtype:
            continue  # empty before round 0: a buffer the run sizes itself (EF21-BC's next broadcast)
        if want.shape != got.shape or want.dtype != got.dtype:
            problems.append(f"master {f.name} is {got.dtype} {got.shape}, expected {want.dtype} {want.shape}")
    for key in ("bits_up", "coords_up"):
        got = np.asarray(getattr(ckpt.loop, key))
        if got.shape != (n,) or got.dtype.kind != "i":
            problems.append(f"{key} is {got.dtype} {got.shape}, expected int64 ({n},)")
    d = np.asarray(template.master.x).shape
    for key, value in ckpt.workers.items():
        if key == RNG_FIELD:
            ok = value.shape == (n,) and value.dtype == object
        elif value.dtype.kind == "f":
            ok = value.shape == (n, *d) and value.dtype == np.float64
        else:
            ok = value.ndim >= 1 and value.shape[0] == n
        if not ok:
            problems.append(f"worker state {key} is {value.dtype} {value.shape}, expected {n} workers")
    if not 0 <= ckpt.loop.t < rounds:  # a checkpoint follows a round before the last
        problems.append(f"round {ckpt.loop.t} is outside 0..{rounds - 1}")
    if ckpt.loop.log_rows < 0 or ckpt.loop.bits_down < 0:
        problems.append("negative counters")
    if problems:
        raise InputError(f"checkpoint {path} does not fit this run: {'; '.join(problems)}")
