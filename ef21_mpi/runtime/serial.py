"""The serial backend: all n workers in this process, as one group."""

from __future__ import annotations

import numpy as np

from ef21_mpi.core.methods import Message
from ef21_mpi.runtime.checkpoint import WorkerSnapshot
from ef21_mpi.runtime.loop import RunFailed
from ef21_mpi.runtime.worker import WorkerFailed, WorkerGroup


def message_nbytes(m: Message) -> int:
    """Bytes this message occupies on the wire: values, indices (if sparse) and a flag byte (if any)."""
    return m.values.nbytes + (m.indices.nbytes if m.indices is not None else 0) + (1 if m.flag is not None else 0)


class SerialCluster:
    """All n workers in this process, as one `WorkerGroup`; ``round`` computes them in one pass."""

    def __init__(self, group: WorkerGroup, d: int):
        self.group = group
        self.monitors = np.empty((group.m, d + 2))

    def round(self, x: np.ndarray, t: int, logged: bool) -> tuple[list[Message], np.ndarray, np.ndarray | None]:
        x_seen = x.copy()  # the workers get their own copy, as over a wire
        try:
            messages = self.group.round(x_seen, t, self.monitors if logged else None)
        except WorkerFailed as err:
            raise RunFailed(str(err), t) from err
        wire_bytes = np.array([message_nbytes(m) for m in messages], dtype=np.int64)
        return messages, wire_bytes, (self.monitors if logged else None)

    def worker_snapshots(self) -> list[WorkerSnapshot]:
        return [WorkerSnapshot.of(state) for state in self.group.states]

    def stop(self) -> None:
        pass
