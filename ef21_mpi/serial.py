"""The serial backend: all n workers in this process, called in worker order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .checkpoint import WorkerSnapshot
from .engine import RunFailed
from .faults import FaultInjector
from .methods import Message
from .worker import Worker


def message_nbytes(m: Message) -> int:
    """Bytes this message occupies on the wire: values, indices (if sparse) and a flag byte (if any)."""
    return m.values.nbytes + (m.indices.nbytes if m.indices is not None else 0) + (1 if m.flag is not None else 0)


class SerialCluster:
    """The n workers as objects in this process; ``round`` is a loop over them."""

    def __init__(self, workers: Sequence[Worker], d: int):
        self.workers = list(workers)
        self.monitors = np.empty((len(self.workers), d + 2))
        self.faults = [FaultInjector.from_environment(i + 1) for i in range(len(self.workers))]

    def round(self, x: np.ndarray, t: int, logged: bool) -> tuple[list[Message], np.ndarray, np.ndarray | None]:
        x_seen = x.copy()  # each worker gets its own copy, as over a wire
        messages = []
        for i, w in enumerate(self.workers):
            try:
                self.faults[i].maybe_fail(t)
                messages.append(w.round(x_seen, t, self.monitors[i] if logged else None))
            except Exception as err:
                raise RunFailed(f"worker {i} failed in round {t}: {type(err).__name__}: {err}", t) from err
        wire_bytes = np.array([message_nbytes(m) for m in messages], dtype=np.int64)
        return messages, wire_bytes, (self.monitors if logged else None)

    def worker_snapshots(self) -> list[WorkerSnapshot]:
        return [WorkerSnapshot.of(w.state) for w in self.workers]

    def stop(self) -> None:
        pass
