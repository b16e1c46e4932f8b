"""The MPI backend: rank 0 is the master, ranks 1..n the workers. It only moves buffers.

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

from .checkpoint import WorkerSnapshot
from .config import RunConfig
from .engine import RunFailed, run_master
from .errors import InputError
from .experiment import build
from .faults import FaultInjector
from .methods import Method, make_method
from .problems import make_shards
from .resume import ResumeRequest
from .runner import finish, prepare_master, resolve_config
from .wire import Slots, pack, unpack
from .worker import WorkerGroup

TAG_ERROR = 77
STOP = -1.0
CHECKPOINT = -2.0  # control word: every worker sends its state to rank 0 (pickled; rare, not in the hot path)


def _mpi():
    from mpi4py import MPI

    return MPI


class MpiCluster:
    """The master's view of the workers: ``round`` = broadcast ``x``, gather the messages (and monitors)."""

    def __init__(self, comm, method: Method, n: int, d: int):
        self.comm, self.MPI = comm, _mpi()
        self.slots = Slots(method, n, d)
        self.xbuf = np.zeros(d + 1)
        self.recv = {key: np.zeros(max(n * stride, 8), dtype=np.uint8) for key, stride in self.slots.stride.items()}
        self.layouts = {(key, logged): self.slots.layout(key, logged) for key in (0, 1) for logged in (False, True)}
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
        spec, stride = slots.spec(t), slots.stride[key]
        messages = [unpack(recv[i * stride:i * stride + spec.nbytes], spec) for i in range(slots.n)]
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
        return self.comm.gather(None, root=0)[1:]

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
    i = rank - 1
    A, y = _receive_shard(comm)
    d = A.shape[1]
    method = make_method(header["algorithm"], header["compressor"], header["gamma"], header["n"], d, header["init"])
    group = WorkerGroup(method, make_shards(header["problem"], [(A, y)], header["lam"]), [header["seeds"][i]],
                        header["batch_size"], first=i)
    state = group.states[0]
    if header["restore"]:
        comm.recv(source=0, tag=3).restore(state)
    faults = FaultInjector.from_environment(rank)
    slots = Slots(method, header["n"], d)
    xbuf = np.zeros(d + 1)
    send = {key: np.zeros(stride, dtype=np.uint8) for key, stride in slots.stride.items()}
    monitor = {key: slots.monitor_rows(buf, key, 1) for key, buf in send.items()}  # filled in place
    failed = False
    while True:
        comm.Bcast(xbuf, root=0)
        control = xbuf[-1]
        if control == STOP:
            return 1 if failed else 0
        if control == CHECKPOINT:
            comm.gather(WorkerSnapshot.of(state), root=0)
            continue
        t, logged = divmod(int(control), 2)
        key = min(t, 1)
        if not failed:
            try:
                faults.maybe_fail(t)
                (message,) = group.round(xbuf[:-1], t, monitor[key] if logged else None)
                pack(message, slots.specs[key], send[key])
            except Exception as err:  # noqa: BLE001 -- any failure is reported, then the collectives go on until rank 0 stops us
                failed = True
                text = f"worker {i} (rank {rank}) failed in round {t}: {type(err).__name__}: {err}"
                comm.send((t, text.replace("\n", " ")), dest=0, tag=TAG_ERROR)
        if failed:
            send[key][:] = 0
        comm.Gatherv(send[key][:slots.nbytes(key, bool(logged))], None, root=0)


def _send_shards(comm, shards) -> None:
    for i, (A, y) in enumerate(shards):
        dest = i + 1
        comm.Send(np.array([A.shape[0], A.nnz, A.shape[1]], dtype=np.int64), dest=dest, tag=1)
        for buf in (A.indptr.astype(np.int64), A.indices.astype(np.int32), A.data.astype(np.float64), y):
            comm.Send(np.ascontiguousarray(buf), dest=dest, tag=2)


def _master_main(comm, cfg: RunConfig | None, resume: ResumeRequest | None) -> int:
    MPI = _mpi()
    n = comm.Get_size() - 1
    try:
        cfg = replace(resolve_config(cfg, resume), workers=n)  # under MPI the world size sets n
        exp = build(cfg, n)
        method = exp.method()
        library = MPI.Get_library_version().splitlines()[0].strip()
        side = prepare_master(cfg, exp, method, "mpi", library, comm.Get_size(), resume is not None)
        header = {"ok": True, "algorithm": cfg.algorithm, "compressor": exp.compressor, "gamma": exp.gamma, "n": n,
                  "init": cfg.init, "problem": cfg.problem, "lam": cfg.lam, "seeds": exp.seeds,
                  "batch_size": cfg.batch_size if cfg.algorithm == "ef21-sgd" else None,
                  "restore": side.snapshots is not None}
    except InputError as err:
        header, error = {"ok": False}, err
    comm.Ibarrier().Wait()
    comm.bcast(header, root=0)
    if not header["ok"]:
        raise error
    _send_shards(comm, exp.shards)
    for i, snapshot in enumerate(side.snapshots or []):
        comm.send(snapshot, dest=i + 1, tag=3)
    del exp  # the master keeps no shard and no data set
    cluster = MpiCluster(comm, method, n, method.d)
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
