"""Checkpoints: the complete state of a run after round t, saved atomically beside its log.

A checkpoint holds the master's state (``x``, ``g`` and EF21+'s mirror of every ``g_i``), every worker's
memory (``g_i`` or ``e_i``) and generator state, the bits accumulated since the last logged row, the
round counter and how many log rows belong to it. Nothing depends on the backend, so a serial run can be
resumed under MPI and vice versa, and a resumed run is bit-identical to an uninterrupted one.

Atomicity: the file is written under a temporary name, synced, then renamed over the previous
checkpoint; a crash at any point leaves the previous checkpoint valid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ef21_mpi.core.methods import MasterState, WorkerState
from ef21_mpi.errors import InputError

FORMAT_VERSION = 1


def checkpoint_path(log_path: str | os.PathLike) -> Path:
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + ".ckpt")


@dataclass
class WorkerSnapshot:
    """One worker's memory vector (``g_i``, ``e_i`` or none) and its generator state (JSON)."""

    vector: np.ndarray | None
    rng_state: str

    @classmethod
    def of(cls, state: WorkerState) -> WorkerSnapshot:
        vector = state.g_i if state.g_i is not None else state.e_i
        return cls(None if vector is None else vector.copy(), json.dumps(state.rng.bit_generator.state))

    def restore(self, state: WorkerState) -> None:
        state.rng.bit_generator.state = json.loads(self.rng_state)
        target = state.g_i if state.g_i is not None else state.e_i
        if target is not None:
            target[:] = self.vector


@dataclass
class LoopState:
    """What the master's loop carries from round to round."""

    t: int  # the last completed round
    master: MasterState
    bits_up: np.ndarray  # accumulated since the last logged row (SPEC 7)
    coords_up: np.ndarray
    bits_down: int
    log_rows: int
    wall_offset: float = 0.0  # wall_time of the run before this process took over


@dataclass
class Checkpoint:
    loop: LoopState
    workers: list[WorkerSnapshot]
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
        f["x"], f["g"] = loop.master.x, loop.master.g
        if loop.master.G is not None:
            f["G"] = loop.master.G
        f["bits_up"], f["coords_up"] = loop.bits_up, loop.coords_up
        f["worker_rng"] = np.array([w.rng_state for w in ckpt.workers], dtype=h5py.string_dtype())
        if ckpt.workers and ckpt.workers[0].vector is not None:
            f["worker_vectors"] = np.stack([w.vector for w in ckpt.workers])
        f.flush()
        os.fsync(f.id.get_vfd_handle())
    if before_rename is not None:
        before_rename()
    os.replace(tmp, path)


def load(path: Path) -> Checkpoint:
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format_version") != FORMAT_VERSION:
                raise InputError(f"{path} is not an ef21-mpi checkpoint (format {FORMAT_VERSION})")
            vectors = f["worker_vectors"][()] if "worker_vectors" in f else None
            rngs = [s.decode() if isinstance(s, bytes) else s for s in f["worker_rng"][()]]
            workers = [WorkerSnapshot(None if vectors is None else vectors[i], r) for i, r in enumerate(rngs)]
            master = MasterState(x=f["x"][()], g=f["g"][()], G=f["G"][()] if "G" in f else None)
            loop = LoopState(t=int(f.attrs["round"]), master=master, bits_up=f["bits_up"][()],
                             coords_up=f["coords_up"][()], bits_down=int(f.attrs["bits_down"]),
                             log_rows=int(f.attrs["log_rows"]), wall_offset=float(f.attrs["wall_offset"]))
            return Checkpoint(loop, workers, json.loads(f.attrs["config"]), str(f.attrs["dataset_sha256"]))
    except (OSError, KeyError) as err:
        raise InputError(f"cannot read checkpoint {path}: {err}") from err
