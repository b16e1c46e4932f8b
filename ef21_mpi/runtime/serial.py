"""The serial backend: all n workers in this process, as one group."""

from __future__ import annotations

import numpy as np

from ef21_mpi.core.methods import Messages
from ef21_mpi.runtime.checkpoint import worker_arrays
from ef21_mpi.runtime.loop import RunFailed
from ef21_mpi.runtime.worker import WorkerFailed, WorkerGroup


class SerialCluster:
    """All n workers in this process, as one `WorkerGroup`; ``round`` computes them in one pass."""

    def __init__(self, group: WorkerGroup, d: int):
        self.group = group
        self.monitors = np.empty((group.m, d + 2))

    def round(self, down: np.ndarray, t: int, logged: bool) -> tuple[Messages, np.ndarray | None]:
        seen = np.ascontiguousarray(down).view(np.uint8).copy()  # the workers get their own bytes, as over a wire
        monitors = self.monitors if logged else None
        try:
            return self.group.round(seen, t, monitors), monitors
        except WorkerFailed as err:
            raise RunFailed(str(err), t) from err

    def worker_states(self) -> dict[str, np.ndarray]:
        return worker_arrays(self.group.state)

    def stop(self) -> None:
        pass
