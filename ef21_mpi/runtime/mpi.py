"""The MPI backend: rank 0 is the master, ranks 1..R the workers. It only moves buffers.

By default each worker rank holds one worker (n = R); with ``--workers n`` > R, rank r holds a contiguous
block of workers as one `WorkerGroup`, which computes exactly what n ranks of one worker would.

Start-up (pickled messages are fine here): rank 0 validates, parses the data set once, computes the
constants, then sends every worker its shard as CSR arrays and the method's parameters; rank 0 keeps
no shard. A start-up error on rank 0 is broadcast so every rank exits with status 2.

Each round moves buffers allocated once, one collective per direction (`wire`): the
broadcast of ``[x^t, control]`` (``control = 2 t + logged``, -1 to stop, -2 to collect the workers'
states for a checkpoint; the control word is not counted in ``bits_down``, which counts the ``d`` values
of ``x``) and the gather of every worker's slot: its message as raw bytes, followed on logged rounds by
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
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from ef21_mpi.core.methods import Method, make_method
from ef21_mpi.core.problems import make_shards
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.checkpoint import WorkerSnapshot
from ef21_mpi.runtime.config import RunConfig
from ef21_mpi.runtime.experiment import build
from ef21_mpi.runtime.loop import RunFailed, run_master
from ef21_mpi.runtime.resume import ResumeRequest
from ef21_mpi.runtime.session import finish, prepare_master, resolve_config
from ef21_mpi.runtime.wire import Slots, pack, rank_workers, unpack
from ef21_mpi.runtime.worker import WorkerFailed, WorkerGroup

TAG_ERROR = 77
STOP = -1.0
CHECKPOINT = -2.0  # control word: every worker sends its state to rank 0 (pickled; rare, not in the hot path)


def _mpi():
    from mpi4py import MPI

    return MPI


class MpiCluster:
    """The master's view of the workers: ``round`` = broadcast ``x``, gather the messages (and monitors)."""

    def __init__(self, comm, method: Method, n: int, d: int, ranks: list[range]):
        self.comm, self.MPI = comm, _mpi()
        self.slots = Slots(method, n, d)
        self.xbuf = np.zeros(d + 1)
        self.recv = {key: np.zeros(max(n * self.slots.stride(key, True), 8), dtype=np.uint8) for key in (0, 1)}
        self.layouts = {(key, logged): self.slots.layout(key, logged, ranks) for key in (0, 1) for logged in (False, True)}
        self.empty = np.zeros(0, dtype=np.uint8)

    def round(self, x: np.ndarray, t: int, logged: bool):
        slots, key = self.slots, min(t, 1)
        self.xbuf[:-1] = x
        self.xbuf[-1] = 2 * t + int(logged)
        self.comm.Bcast(self.xbuf, root=0)
        recv = self.recv[key]
        counts, displs = self.layouts[key, logged]
        self.comm.Gatherv(self.empty, [recv, counts, displs, self.MPI.BYTE], root=0)
        self._check_reports(t)
        spec = slots.spec(t)
        messages = [unpack(slots.message(recv, key, logged, i), spec) for i in range(slots.n)]
        wire_bytes = np.full(slots.n, spec.nbytes, dtype=np.int64)
        monitors = slots.monitor_rows(recv, key, slots.n) if logged else None
        if t == 0:
            self.recv[0] = self.empty  # the (possibly dense) round-0 slots are not needed again
        return messages, wire_bytes, monitors

    def _check_reports(self, t: int) -> None:
        status = self.MPI.Status()
        if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_ERROR, status=status):
            failed_round, text = self.comm.recv(source=status.Get_source(), tag=TAG_ERROR)
            raise RunFailed(text, failed_round)

    def worker_snapshots(self) -> list[WorkerSnapshot]:
        self.xbuf[-1] = CHECKPOINT
        self.comm.Bcast(self.xbuf, root=0)
        return [snapshot for per_rank in self.comm.gather(None, root=0)[1:] for snapshot in per_rank]

    def stop(self) -> None:
        self.xbuf[-1] = STOP
        self.comm.Bcast(self.xbuf, root=0)


def _wait_quietly(comm) -> None:
    """Wait for rank 0 without busy-polling a core it needs (start-up can take seconds on rank 0)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.002)


def _receive_shard(comm) -> tuple[sp.csr_matrix, np.ndarray]:
    sizes = np.zeros(3, dtype=np.int64)
    comm.Recv(sizes, source=0, tag=1)
    rows, nnz, d = (int(v) for v in sizes)
    indptr, indices = np.empty(rows + 1, dtype=np.int64), np.empty(nnz, dtype=np.int32)
    data, y = np.empty(nnz), np.empty(rows)
    for buf in (indptr, indices, data, y):
        comm.Recv(buf, source=0, tag=2)
    return sp.csr_matrix((data, indices, indptr), shape=(rows, d)), y


def _worker_main(comm, header: dict) -> int:
    rank = comm.Get_rank()
    mine = header["ranks"][rank - 1]  # this rank's workers
    blocks = [_receive_shard(comm) for _ in mine]
    d = blocks[0][0].shape[1]
    method = make_method(header["algorithm"], header["compressor"], header["gamma"], header["n"], d, header["init"])
    group = WorkerGroup(method, make_shards(header["problem"], blocks, header["lam"]),
                        header["seeds"][mine.start:mine.stop], header["batch_size"], first=mine.start)
    if header["restore"]:
        for state, snapshot in zip(group.states, comm.recv(source=0, tag=3)):
            snapshot.restore(state)
    slots = Slots(method, header["n"], d)
    xbuf = np.zeros(d + 1)
    send = {key: np.zeros(len(mine) * slots.stride(key, True), dtype=np.uint8) for key in (0, 1)}
    monitors = {key: slots.monitor_rows(buf, key, len(mine)) for key, buf in send.items()}  # filled in place
    failed = False
    while True:
        comm.Bcast(xbuf, root=0)
        control = xbuf[-1]
        if control == STOP:
            return 1 if failed else 0
        if control == CHECKPOINT:
            comm.gather([WorkerSnapshot.of(state) for state in group.states], root=0)
            continue
        t, logged = divmod(int(control), 2)
        key, logged = min(t, 1), bool(logged)
        if not failed:
            try:
                messages = group.round(xbuf[:-1], t, monitors[key] if logged else None)
                for j, message in enumerate(messages):
                    pack(message, slots.specs[key], slots.message(send[key], key, logged, j))
            except Exception as err:  # noqa: BLE001 -- any failure is reported, then the collectives go on until rank 0 stops us
                failed = True
                who, detail = ((err.who, err.detail) if isinstance(err, WorkerFailed)
                               else (group.label, f"{type(err).__name__}: {err}"))
                text = f"{who} (rank {rank}) failed in round {t}: {detail}"
                comm.send((t, text.replace("\n", " ")), dest=0, tag=TAG_ERROR)
        if failed:
            send[key][:] = 0
        comm.Gatherv(send[key][:slots.block_nbytes(key, logged, len(mine))], None, root=0)


def _send_shards(comm, shards, ranks: list[range]) -> None:
    for dest, mine in enumerate(ranks, start=1):
        for i in mine:
            A, y = shards[i]
            comm.Send(np.array([A.shape[0], A.nnz, A.shape[1]], dtype=np.int64), dest=dest, tag=1)
            for buf in (A.indptr.astype(np.int64), A.indices.astype(np.int32), A.data.astype(np.float64), y):
                comm.Send(np.ascontiguousarray(buf), dest=dest, tag=2)


def resolve_workers(cfg: RunConfig, worker_ranks: int, resume: bool) -> RunConfig:
    """Under MPI, n defaults to one worker per rank; more workers than ranks are spread over them in blocks."""
    n = cfg.workers if cfg.workers is not None else worker_ranks
    if n < worker_ranks:
        where = f"--resume {cfg.out}: the run has " if resume else ""
        raise InputError(f"{where}--workers {n} leaves worker ranks idle: {worker_ranks} worker ranks were launched; "
                         f"launch at most n + 1 = {n + 1} ranks (mpiexec -n {n + 1})")
    return replace(cfg, workers=n)


def _master_main(comm, cfg: RunConfig | None, resume: ResumeRequest | None) -> int:
    MPI = _mpi()
    try:
        cfg = resolve_workers(resolve_config(cfg, resume), comm.Get_size() - 1, resume is not None)
        n = cfg.workers
        ranks = rank_workers(n, comm.Get_size() - 1)
        exp = build(cfg, n)
        method = exp.method()
        library = MPI.Get_library_version().splitlines()[0].strip()
        side = prepare_master(cfg, exp, method, "mpi", library, comm.Get_size(), resume is not None)
        header = {"ok": True, "algorithm": cfg.algorithm, "compressor": exp.compressor, "gamma": exp.gamma, "n": n,
                  "init": cfg.init, "problem": cfg.problem, "lam": cfg.lam, "seeds": exp.seeds, "ranks": ranks,
                  "batch_size": cfg.batch_size if cfg.algorithm == "ef21-sgd" else None,
                  "restore": side.snapshots is not None}
    except InputError as err:
        header, error = {"ok": False}, err
    comm.Ibarrier().Wait()
    comm.bcast(header, root=0)
    if not header["ok"]:
        raise error
    _send_shards(comm, exp.shards, ranks)
    if side.snapshots is not None:
        for dest, mine in enumerate(ranks, start=1):
            comm.send([side.snapshots[i] for i in mine], dest=dest, tag=3)
    del exp  # the master keeps no shard and no data set
    cluster = MpiCluster(comm, method, n, method.d, ranks)
    try:
        outcome = run_master(method, side.loop, cluster, side.log, side.options)
    except Exception as err:  # noqa: BLE001 -- whatever went wrong, mark the log before aborting the job
        side.log.flush(side.log.x, status="failed")
        print(f"ef21-mpi: error on rank 0: {type(err).__name__}: {err}".replace("\n", " "), file=sys.stderr)
        comm.Abort(1)
    cluster.stop()
    return finish(side, outcome)


def run_mpi(cfg: RunConfig | None, resume: ResumeRequest | None = None) -> int:
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        raise InputError("--backend mpi needs at least 2 ranks (1 master + n workers); launch with mpiexec -n N+1")
    install_abort_hook(comm)
    if comm.Get_rank() == 0:
        return _master_main(comm, cfg, resume)
    for signum in (signal.SIGINT, signal.SIGTERM):  # rank 0 decides when to stop, after a checkpoint
        signal.signal(signum, signal.SIG_IGN)
    _wait_quietly(comm)
    header = comm.bcast(None, root=0)
    if not header["ok"]:
        return 2
    return _worker_main(comm, header)


def install_abort_hook(comm) -> None:
    """Turn any uncaught exception on any rank into a one-line message and ``MPI_Abort`` (never a hang)."""

    def hook(exc_type, exc, tb):
        if "--debug" in sys.argv:
            traceback.print_exception(exc_type, exc, tb)
        print(f"ef21-mpi: error on rank {comm.Get_rank()}: {exc_type.__name__}: {exc}".replace("\n", " "),
              file=sys.stderr, flush=True)
        comm.Abort(1)

    sys.excepthook = hook
