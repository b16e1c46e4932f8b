"""Deterministic fault injection for the crash tests: make one rank raise, exit or die at a given round.

Armed only when *both* environment variables are set, the second to an exact phrase, so that no
ordinary configuration can trigger it:

    EF21_MPI_FAULT="rank=R,round=T,action=raise|exit|kill|kill-in-checkpoint"
    EF21_MPI_FAULT_ARMED="yes, crash this run on purpose"

Rank 0 is the master, rank ``i + 1`` is worker ``i``, wherever that worker runs (the serial backend, its
own MPI rank, or a rank holding a block of workers). ``kill-in-checkpoint``
(rank 0 only) SIGKILLs the master after the checkpoint of round T is written but before it is renamed.

An armed fault wraps the worker group (or the master's cluster) from outside; when nothing is armed the
wrappers are not there at all, so the round loop pays nothing for them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from ef21_mpi.runtime.worker import WorkerFailed

ARM_PHRASE = "yes, crash this run on purpose"
ACTIONS = ("raise", "exit", "kill", "kill-in-checkpoint")


class InjectedFault(RuntimeError):
    """The exception an armed ``action=raise`` fault throws."""


@dataclass(frozen=True)
class Fault:
    rank: int  # 0: the master; i + 1: worker i
    round: int
    action: str = "raise"

    def strike(self, t: int) -> None:
        if t != self.round or self.action == "kill-in-checkpoint":
            return
        if self.action == "raise":
            raise InjectedFault(f"injected fault on rank {self.rank} at round {t}")
        if self.action == "exit":
            os._exit(17)
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> Fault | None:
    """The fault the environment arms, if both variables are set (the second to the exact phrase)."""
    spec = os.environ.get("EF21_MPI_FAULT")
    if not spec or os.environ.get("EF21_MPI_FAULT_ARMED") != ARM_PHRASE:
        return None
    fields = dict(item.split("=", 1) for item in spec.split(","))
    action = fields.get("action", "raise")
    if action not in ACTIONS:
        raise ValueError(f"EF21_MPI_FAULT action {action!r}: expected one of {', '.join(ACTIONS)}")
    return Fault(int(fields["rank"]), int(fields["round"]), action)


class _FaultyGroup:
    """A worker group one of whose workers fails at the armed round; otherwise the group itself."""

    def __init__(self, group, fault: Fault):
        self._group, self._fault = group, fault

    def __getattr__(self, name):
        return getattr(self._group, name)

    def round(self, x, t, monitors):
        worker = self._fault.rank - 1
        try:
            self._fault.strike(t)
        except InjectedFault as err:
            raise WorkerFailed(f"worker {worker}", t, f"{type(err).__name__}: {err}") from err
        return self._group.round(x, t, monitors)


class _FaultyCluster:
    """The master's cluster, failing on the master's side at the armed round."""

    def __init__(self, cluster, fault: Fault):
        self._cluster, self._fault = cluster, fault

    def __getattr__(self, name):
        return getattr(self._cluster, name)

    def round(self, x, t, logged):
        self._fault.strike(t)
        return self._cluster.round(x, t, logged)


def arm_group(group):
    """``group`` wrapped when the armed fault names one of its workers; ``group`` itself otherwise."""
    fault = armed()
    if fault is None or not group.first + 1 <= fault.rank <= group.first + group.m:
        return group
    return _FaultyGroup(group, fault)


def arm_cluster(cluster):
    """``cluster`` wrapped when the armed fault is the master's (rank 0); ``cluster`` itself otherwise."""
    fault = armed()
    return _FaultyCluster(cluster, fault) if fault is not None and fault.rank == 0 else cluster


def checkpoint_hook():
    """For ``kill-in-checkpoint``: a function ``(t) -> None`` that SIGKILLs the master between writing
    checkpoint ``t >= round`` and renaming it; ``None`` when that fault is not armed."""
    fault = armed()
    if fault is None or fault.rank != 0 or fault.action != "kill-in-checkpoint":
        return None
    return lambda t: os.kill(os.getpid(), signal.SIGKILL) if t >= fault.round else None
