"""Which ranks hold the workers, and which park: the job's shape against the nodes' cores.

A waiting MPI rank busy-polls a core. When a node runs more ranks than it has cores, the waiting ranks
starve the computing ones (21 ranks on 2 cores ran 6-9x slower than one process). So, by default, when a
node is oversubscribed only as many of its ranks as it has cores take part in the rounds (rank 0, the
master, counts as one of them on its node), the ``n`` workers are spread over those in contiguous blocks
(`wire.rank_workers`: a rank's block is one `WorkerGroup`, each worker still with its own slot, bits
column and message), and the other ranks *park*: they sleep until the run ends, testing a nonblocking
barrier every 50 ms. ``--placement spread`` keeps one block per launched rank; ``pack`` packs even when
no node is oversubscribed (it then changes nothing); ``auto`` (default) packs only when some node is.

A node is the set of ranks that share memory (``MPI.COMM_TYPE_SHARED``); its cores are the union of its
ranks' CPU affinity sets (``os.sched_getaffinity``), so both bound (one core each) and unbound ranks count
the node's usable cores once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np

from ef21_mpi.runtime.wire import rank_workers

PARK_SECONDS = 0.05  # a parked rank tests its barrier this often: ~20 wake-ups a second, no spinning


def printable(text: str, limit: int = 200) -> str:
    """A library's string fit for a log attribute: up to the first NUL (C semantics), its first non-blank
    line, control characters dropped, runs of white space made one space, at most ``limit`` characters."""
    text = text.split("\x00", 1)[0]
    for line in text.splitlines():
        clean = " ".join("".join(ch if ch.isprintable() else " " for ch in line).split())
        if clean:
            return clean[:limit]
    return "unknown"


@dataclass(frozen=True)
class RankInfo:
    """What a rank says about itself at start-up."""

    node: int  # the lowest world rank on this rank's node: the same number for every rank there
    cpus: tuple[int, ...]  # the CPUs this process may run on
    host: str  # the processor name (printable)


def survey(comm) -> list[RankInfo] | None:
    """Every rank's `RankInfo`, gathered on rank 0 (None elsewhere). Collective over ``comm``."""
    from mpi4py import MPI

    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    node = node_comm.bcast(comm.Get_rank(), root=0)
    node_comm.Free()
    info = RankInfo(node, tuple(sorted(os.sched_getaffinity(0))), printable(MPI.Get_processor_name()))
    return comm.gather(info, root=0)


@dataclass(frozen=True)
class Placement:
    """The outcome: the workers of every world rank 1..R (an empty range: the rank parks)."""

    requested: str  # auto | pack | spread
    packed: bool  # whether any rank parks
    blocks: list[range]  # blocks[r - 1]: the workers of world rank r
    nodes: list[dict]  # per node: host, ranks, cores, active ranks

    @property
    def active(self) -> list[int]:
        """World ranks that take part in the rounds, rank 0 first."""
        return [0] + [r for r, block in enumerate(self.blocks, start=1) if len(block)]

    @property
    def parked(self) -> list[int]:
        return [r for r, block in enumerate(self.blocks, start=1) if not len(block)]

    def worker_rank(self) -> np.ndarray:
        """The world rank holding each worker (length n)."""
        return np.array([r for r, block in enumerate(self.blocks, start=1) for _ in block], dtype=np.int64)

    def attrs(self) -> dict:
        """The log's record of where the workers ran."""
        record = {"requested": self.requested, "packed": self.packed, "active_ranks": self.active,
                  "parked_ranks": len(self.parked), "nodes": self.nodes}
        return {"placement": json.dumps(record, sort_keys=True), "worker_rank": self.worker_rank()}

    def notice(self) -> str | None:
        """One line for the user when ranks park, None otherwise."""
        if not self.packed:
            return None
        where = ", ".join(f"{node['host']}: {node['ranks']} ranks on {node['cores']} cores" for node in self.nodes)
        return (f"ef21-mpi: more ranks than cores ({where}): the {sum(map(len, self.blocks))} workers run on "
                f"{_count(len(self.active) - 1, 'worker rank')}, {_count(len(self.parked), 'rank')} wait idle "
                f"(--placement spread: one block of workers per rank)")


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def plan(infos: list[RankInfo], n: int, requested: str) -> Placement:
    """Where ``n`` workers run on the ranks described by ``infos`` (world rank order; rank 0 the master)."""
    nodes: dict[int, list[int]] = {}
    for rank, info in enumerate(infos):
        nodes.setdefault(info.node, []).append(rank)
    cores = {node: len(set().union(*(infos[r].cpus for r in ranks))) for node, ranks in nodes.items()}
    oversubscribed = any(len(ranks) > cores[node] for node, ranks in nodes.items())
    pack = requested == "pack" or (requested == "auto" and oversubscribed)
    active = set(range(len(infos)))
    if pack:
        active = {r for node, ranks in nodes.items() for r in ranks[:max(cores[node], 1)]} | {0}
        if active == {0}:  # a one-core node holding the master: one worker rank all the same
            active.add(1)
    workers = sorted(active - {0})
    blocks = iter(rank_workers(n, len(workers)))
    per_rank = [next(blocks) if r in active else range(0) for r in range(1, len(infos))]
    summary = [{"host": infos[node].host, "ranks": len(ranks), "cores": cores[node],
                "active": sum(r in active for r in ranks)} for node, ranks in nodes.items()]
    return Placement(requested, len(active) < len(infos), per_rank, summary)


def park(comm) -> None:
    """A parked rank's life: sleep until every rank reaches `release` (an ``Ibarrier`` on ``comm``)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(PARK_SECONDS)


def release(comm) -> None:
    """The working ranks' side of `park`, called once their rounds are over."""
    comm.Ibarrier().Wait()
