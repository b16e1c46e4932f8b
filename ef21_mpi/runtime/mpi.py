"""The MPI backend: rank 0 is the master, ranks 1..R the workers. It only moves buffers.

The session decides what to run; this module starts the worker ranks on it (`MpiCluster.start`), moves
the buffers of every round (`MpiCluster.round`) and runs the worker ranks' loop (`serve`).

By default each worker rank holds one worker (n = R); with ``--workers n`` > R, rank r holds a contiguous
block of workers as one `WorkerGroup`, which computes exactly what n ranks of one worker would. When a node
holds more ranks than cores, only as many take part as there are cores and the others park (`placement`);
the rounds then run on a communicator of the working ranks, and every rank meets the others in one last
nonblocking barrier on ``COMM_WORLD`` when the run ends.

Start-up (pickled messages are fine here): rank 0 sends every worker rank a `WorkerJob` (the method's
parameters, seeds and placement), then its shards as CSR arrays (or, from a prepared shard store, each
worker rank reads its own, `store.read_shard`); rank 0 keeps no shard. A start-up error
on rank 0 is broadcast instead (`refuse`) so every rank exits with status 2.

Each round moves buffers allocated once, one collective per direction (`wire`): the
broadcast of ``[control, downlink]`` (``control = 2 t + logged``, -1 to stop, -2 to collect the workers'
states for a checkpoint; the control word is not counted in ``bits_down``, which counts the method's
downlink, by default the ``d`` values of ``x``; both ends know its size from the round that comes next) and the gather of every worker's slot: its message as raw bytes, followed on logged rounds by
its monitoring row. ``bits_up`` is 8 x the message bytes each worker handed to MPI.
A worker that raises sends a one-line report to rank 0 on a separate tag, then answers every further
round with zeros until told to stop; rank 0 checks for reports after every round, drops the rows from
the failing round on, marks the log ``failed`` and stops everyone.
"""

from __future__ import annotations

import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ef21_mpi.core.compressors import Compressor
from ef21_mpi.core.methods import Messages, Method, make_method
from ef21_mpi.core.problems import make_shards
from ef21_mpi.errors import InputError, from_core
from ef21_mpi.runtime import faults, placement, store, watchdog
from ef21_mpi.runtime.checkpoint import concat_arrays, restore_workers, slice_arrays, worker_arrays
from ef21_mpi.runtime.loop import RunFailed
from ef21_mpi.runtime.wire import Slots, pack, unpack
from ef21_mpi.runtime.worker import WorkerFailed, WorkerGroup

TAG_ERROR = 77
STOP = -1.0
CHECKPOINT = -2.0  # control word: every worker sends its state to rank 0 (pickled; rare, not in the hot path)


def world():
    """``MPI.COMM_WORLD`` (importing mpi4py initialises MPI, so only when the MPI backend runs)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def library_version() -> str:
    """The MPI library's own name for itself, cleaned for the log (Open MPI's ends in a NUL byte)."""
    from mpi4py import MPI

    return placement.printable(MPI.Get_library_version())


@dataclass(frozen=True)
class WorkerJob:
    """What every worker rank needs to build its group: the method, the problem, seeds and placement.

    The method class and the compressor travel pickled, i.e. by reference for a class: a plug-in's module is
    imported on every worker rank, which is why it must be importable there.
    """

    method_class: type[Method]
    compressor: Compressor
    gamma: float
    n: int
    d: int
    init: str
    problem: str
    lam: float
    seeds: list  # one SeedSequence per worker
    ranks: list[range]  # the workers of each worker rank 1..R (empty: the rank parks)
    batch_size: int | None
    restore: bool  # worker states follow the shards
    options: dict = field(default_factory=dict)  # the method's own settings (`Method.options`)
    first_round: int = 0  # the round the loop starts with (after a checkpoint: its round + 1)
    report_progress: bool = False  # send rank 0 each computed round (for its stall watchdog)
    store: str | None = None  # a prepared shard store: each worker rank reads its own shards from it

    def method(self) -> Method:
        return make_method(self.method_class, self.compressor, self.gamma, self.n, self.d, self.init, **self.options)

    def working(self, comm):
        """The communicator of the rounds: ``comm`` itself, or, when some ranks park, a split of the working
        ranks in world order (``COMM_NULL`` on a parked rank). Collective over ``comm``."""
        if all(len(block) for block in self.ranks):
            return comm
        from mpi4py import MPI

        rank = comm.Get_rank()
        works = rank == 0 or len(self.ranks[rank - 1]) > 0
        return comm.Split(0 if works else MPI.UNDEFINED, rank)


class MpiCluster:
    """The master's view of the workers: ``round`` = broadcast ``x``, gather the messages (and monitors)."""

    def __init__(self, comm, method: Method, n: int, d: int, ranks: list[range], first_round: int = 0, world=None):
        from mpi4py import MPI

        self.comm, self.MPI = comm, MPI
        self.world = comm if world is None else world  # parked ranks wait on it for `stop`
        self.method = method
        self.slots = Slots(method, n, d)
        self.down = down_buffer(method)
        self.next_round = first_round  # both ends know the size of the next broadcast from it
        self.recv = {key: np.zeros(max(n * self.slots.stride(key, True), 8), dtype=np.uint8) for key in (0, 1)}
        self.layouts = {(key, logged): self.slots.layout(key, logged, ranks) for key in (0, 1) for logged in (False, True)}
        self.empty = np.zeros(0, dtype=np.uint8)
        self.problem: str | None = None  # a worker rank's start-up failure (the workers wait for `stop`)

    @classmethod
    def start(cls, comm, job: WorkerJob, shards, worker_states: dict | None) -> MpiCluster:
        """Release the waiting worker ranks with ``job``, send their shards (and states), return the cluster."""
        comm.Ibarrier().Wait()
        comm.bcast({"ok": True, "job": job}, root=0)
        work = job.working(comm)
        blocks = [block for block in job.ranks if len(block)]  # work's ranks 1, 2, ...
        for dest, mine in enumerate(blocks if job.store is None else [], start=1):
            for i in mine:
                _send_shard(work, shards[i], dest)
        cluster = cls(work, job.method(), job.n, job.d, blocks, job.first_round, world=comm)
        if job.store is not None:  # did every rank read (and check) its shards? If not, the caller cleans up, then stops
            cluster.problem = next((text for text in work.gather(None, root=0)[1:] if text), None)
            if cluster.problem is not None:
                return cluster
        if worker_states is not None:
            for dest, mine in enumerate(blocks, start=1):
                work.send(slice_arrays(worker_states, mine), dest=dest, tag=3)
        return cluster

    def _broadcast(self, control: float, payload: np.ndarray | None = None) -> None:
        nbytes = self.method.downlink_nbytes(self.next_round)
        self.down[:8].view(np.float64)[0] = control
        if payload is not None:
            self.down[8:8 + nbytes] = np.ascontiguousarray(payload).view(np.uint8)
        self.comm.Bcast(self.down[:8 + nbytes], root=0)

    def round(self, down: np.ndarray, t: int, logged: bool) -> tuple[Messages, np.ndarray | None]:
        slots, key = self.slots, min(t, 1)
        self._broadcast(2 * t + int(logged), down)
        self.next_round = t + 1
        recv = self.recv[key]
        counts, displs = self.layouts[key, logged]
        self.comm.Gatherv(self.empty, [recv, counts, displs, self.MPI.BYTE], root=0)
        self._check_reports()
        msgs = unpack(slots.rows(recv, key, logged, slots.n), slots.spec(t))
        monitors = slots.monitor_rows(recv, key, slots.n) if logged else None
        if t == 0:  # the (possibly dense) round-0 slots are not needed again; the views above keep them alive
            self.recv[0] = self.empty
        return msgs, monitors

    def _check_reports(self) -> None:
        status = self.MPI.Status()
        if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_ERROR, status=status):
            failed_round, text = self.comm.recv(source=status.Get_source(), tag=TAG_ERROR)
            raise RunFailed(text, failed_round)

    def worker_states(self) -> dict[str, np.ndarray]:
        self._broadcast(CHECKPOINT)
        return concat_arrays(self.comm.gather(None, root=0)[1:])

    def stop(self) -> None:
        self._broadcast(STOP)
        if self.world is not self.comm:
            placement.release(self.world)


def down_buffer(method: Method) -> np.ndarray:
    """The broadcast buffer: the control word (float64), then the largest downlink of any round.

    A method's downlink size may differ in round 0, round 1 and every later round, never beyond.
    """
    return np.zeros(8 + max(method.downlink_nbytes(t) for t in (0, 1, 2)), dtype=np.uint8)


def refuse(comm) -> None:
    """Tell the waiting worker ranks that start-up failed on rank 0 (they exit with status 2)."""
    comm.Ibarrier().Wait()
    comm.bcast({"ok": False}, root=0)


def _send_shard(comm, shard: tuple[sp.csr_matrix, np.ndarray], dest: int) -> None:
    A, y = shard
    comm.Send(np.array([A.shape[0], A.nnz, A.shape[1]], dtype=np.int64), dest=dest, tag=1)
    for buf in (A.indptr.astype(np.int64), A.indices.astype(np.int32), A.data.astype(np.float64), y):
        comm.Send(np.ascontiguousarray(buf), dest=dest, tag=2)


def _receive_shard(comm) -> tuple[sp.csr_matrix, np.ndarray]:
    sizes = np.zeros(3, dtype=np.int64)
    comm.Recv(sizes, source=0, tag=1)
    rows, nnz, d = (int(v) for v in sizes)
    indptr, indices = np.empty(rows + 1, dtype=np.int64), np.empty(nnz, dtype=np.int32)
    data, y = np.empty(nnz), np.empty(rows)
    for buf in (indptr, indices, data, y):
        comm.Recv(buf, source=0, tag=2)
    return sp.csr_matrix((data, indices, indptr), shape=(rows, d)), y


def _wait_quietly(comm) -> None:
    """Wait for rank 0 without busy-polling a core it needs (start-up can take seconds on rank 0)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.002)


def serve(comm, wrap_group: Callable | None = None) -> int:
    """A worker rank's whole life: wait for rank 0's job, build the group, answer rounds until told to stop.

    ``wrap_group`` (a hook for measurements) may wrap the group; returns the process's exit code.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):  # rank 0 decides when to stop, after a checkpoint
        signal.signal(signum, signal.SIG_IGN)
    _wait_quietly(comm)
    header = comm.bcast(None, root=0)
    if not header["ok"]:
        return 2
    job: WorkerJob = header["job"]
    rank = comm.Get_rank()
    mine = job.ranks[rank - 1]  # this rank's workers
    work = job.working(comm)
    if not len(mine):
        placement.park(comm)
        return 0
    if job.store is not None:  # every worker rank reads its own shards, all in parallel
        problem = None
        try:
            with from_core():
                blocks = [store.read_shard(job.store, i, job.d) for i in mine]
        except (InputError, OSError, KeyError) as err:
            problem = f"--dataset {job.store}: rank {rank} cannot read its shards: {err}"
        work.gather(problem, root=0)
        if problem is not None:  # rank 0 stops everyone and reports it
            method = job.method()  # answer rank 0's stop: its broadcast has the size of the round it would start
            work.Bcast(down_buffer(method)[:8 + method.downlink_nbytes(job.first_round)], root=0)
            if work is not comm:
                placement.release(comm)
            return 2
    else:
        blocks = [_receive_shard(work) for _ in mine]
    method = job.method()
    group = WorkerGroup(method, make_shards(job.problem, blocks, job.lam), job.seeds[mine.start:mine.stop],
                        job.batch_size, first=mine.start)
    if job.restore:
        restore_workers(group.state, work.recv(source=0, tag=3))
    group = faults.arm_group(group)
    if wrap_group is not None:
        group = wrap_group(group)
    code = _answer_rounds(work, group, method, Slots(method, job.n, job.d), len(mine), job.first_round, rank,
                          job.report_progress)
    if work is not comm:
        placement.release(comm)
    return code


def _answer_rounds(comm, group, method: Method, slots: Slots, m: int, next_round: int, rank: int,
                   progress: bool = False) -> int:
    down = down_buffer(method)
    progress_buf = np.zeros(1, dtype=np.int64)
    send = {key: np.zeros(m * slots.stride(key, True), dtype=np.uint8) for key in (0, 1)}
    monitors = {key: slots.monitor_rows(buf, key, m) for key, buf in send.items()}  # filled in place
    failed = False
    while True:
        nbytes = method.downlink_nbytes(next_round)
        comm.Bcast(down[:8 + nbytes], root=0)
        control = down[:8].view(np.float64)[0]
        if control == STOP:
            return 1 if failed else 0
        if control == CHECKPOINT:
            comm.gather(worker_arrays(group.state), root=0)
            continue
        t, logged = divmod(int(control), 2)
        key, logged, next_round = min(t, 1), bool(logged), t + 1
        if not failed:
            try:
                msgs = group.round(down[8:8 + nbytes], t, monitors[key] if logged else None)
                pack(msgs, slots.specs[key], slots.rows(send[key], key, logged, m))
            except Exception as err:  # noqa: BLE001 -- any failure is reported, then the collectives go on until rank 0 stops us
                failed = True
                who, detail = ((err.who, err.detail) if isinstance(err, WorkerFailed)
                               else (group.label, f"{type(err).__name__}: {err}"))
                text = f"{who} (rank {rank}) failed in round {t}: {detail}"
                comm.send((t, text.replace("\n", " ")), dest=0, tag=TAG_ERROR)
        if progress:
            watchdog.report_progress(comm, t, progress_buf)
        if failed:
            send[key][:] = 0
        comm.Gatherv(send[key][:slots.block_nbytes(key, logged, m)], None, root=0)


def install_abort_hook(comm) -> None:
    """Turn any uncaught exception on any rank into a one-line message and ``MPI_Abort`` (never a hang)."""

    def hook(exc_type, exc, tb):
        if "--debug" in sys.argv:
            traceback.print_exception(exc_type, exc, tb)
        print(f"ef21-mpi: error on rank {comm.Get_rank()}: {exc_type.__name__}: {exc}".replace("\n", " "),
              file=sys.stderr, flush=True)
        comm.Abort(1)

    sys.excepthook = hook
