"""Deterministic fault injection for the crash tests: make one rank raise, exit or die at a given round.

Armed only when *both* environment variables are set, the second to an exact phrase, so that no
ordinary configuration can trigger it:

    EF21_MPI_FAULT="rank=R,round=T,action=raise|exit|kill|kill-in-checkpoint"
    EF21_MPI_FAULT_ARMED="yes, crash this run on purpose"

Rank 0 is the master, rank ``i + 1`` is worker ``i``, wherever that worker runs (the serial backend, its
own MPI rank, or a rank holding a block of workers). ``kill-in-checkpoint``
(rank 0 only) SIGKILLs the master after the checkpoint of round T is written but before it is renamed.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

ARM_PHRASE = "yes, crash this run on purpose"
ACTIONS = ("raise", "exit", "kill", "kill-in-checkpoint")


class InjectedFault(RuntimeError):
    """The exception an armed ``action=raise`` fault throws."""


@dataclass(frozen=True)
class FaultInjector:
    rank: int
    round: int | None = None
    action: str = "raise"

    @classmethod
    def from_environment(cls, rank: int) -> FaultInjector:
        spec = os.environ.get("EF21_MPI_FAULT")
        if not spec or os.environ.get("EF21_MPI_FAULT_ARMED") != ARM_PHRASE:
            return cls(rank)
        fields = dict(item.split("=", 1) for item in spec.split(","))
        if int(fields["rank"]) != rank:
            return cls(rank)
        action = fields.get("action", "raise")
        if action not in ACTIONS:
            raise ValueError(f"EF21_MPI_FAULT action {action!r}: expected one of {', '.join(ACTIONS)}")
        return cls(rank, int(fields["round"]), action)

    def maybe_fail(self, t: int) -> None:
        if self.round is None or t != self.round or self.action == "kill-in-checkpoint":
            return
        if self.action == "raise":
            raise InjectedFault(f"injected fault on rank {self.rank} at round {t}")
        if self.action == "exit":
            os._exit(17)
        os.kill(os.getpid(), signal.SIGKILL)

    def in_checkpoint(self, t: int) -> None:
        """Called between writing checkpoint ``t`` and renaming it into place."""
        if self.action == "kill-in-checkpoint" and self.round is not None and t >= self.round:
            os.kill(os.getpid(), signal.SIGKILL)
