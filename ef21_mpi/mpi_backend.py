"""The MPI backend: rank 0 is the master, ranks 1..n the workers. It only moves buffers.

Start-up (pickled messages are fine here): rank 0 validates, parses the data set once, computes the
constants, then sends every worker its shard as CSR arrays and the method's parameters; rank 0 keeps
no shard. A start-up error on rank 0 is broadcast so every rank exits with status 2.

Each round (buffers only, allocated once):
- ``Bcast`` of ``[x^t, control]`` (``d + 1`` float64; ``control = 2 t + logged``, -1 to stop, -2 to
  collect the workers' states for a checkpoint). The
  control word is not counted in ``bits_down``, which counts the ``d`` values of ``x``.
- ``Gatherv`` of every worker's message as raw bytes: values (float64), then indices (int32) for sparse
  messages, then the EF21+ branch flag (1 byte). Rank 0 contributes nothing. Each slot is 8-byte aligned
  in the receive buffer. ``bits_up`` is 8 x the byte count each worker handed to MPI.
- On logged rounds, ``Gatherv`` of each worker's monitoring row ``[grad_i, f_i, G_i]`` (not counted).
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
from .compressors import INDEX_DTYPE, VALUE_DTYPE
from .config import RunConfig
from .engine import RunFailed, run_master
from .errors import InputError
from .experiment import build
from .faults import FaultInjector
from .methods import Message, MessageSpec, Method, make_method
from .problems import make_shard
from .resume import ResumeRequest
from .runner import finish, prepare_master, resolve_config
from .worker import Worker

TAG_ERROR = 77
STOP = -1.0
CHECKPOINT = -2.0  # control word: every worker sends its state to rank 0 (pickled; rare, not in the hot path)


def _mpi():
    from mpi4py import MPI

    return MPI


def _aligned(nbytes: int) -> int:
    return (nbytes + 7) // 8 * 8


def pack(message: Message, spec: MessageSpec, out: np.ndarray) -> None:
    """Write ``message`` into the byte buffer ``out`` (length ``spec.nbytes``) in wire order."""
    nv = spec.n_values
    vbytes = nv * np.dtype(VALUE_DTYPE).itemsize
    out[:vbytes].view(VALUE_DTYPE)[:] = message.values
    if spec.has_indices:
        out[vbytes:vbytes + nv * np.dtype(INDEX_DTYPE).itemsize].view(INDEX_DTYPE)[:] = message.indices
    if spec.has_flag:
        out[spec.nbytes - 1] = message.flag


def unpack(chunk: np.ndarray, spec: MessageSpec) -> Message:
    """The `Message` whose bytes are ``chunk`` (views, no copies)."""
    nv = spec.n_values
    vbytes = nv * np.dtype(VALUE_DTYPE).itemsize
    values = chunk[:vbytes].view(VALUE_DTYPE)
    indices = chunk[vbytes:vbytes + nv * np.dtype(INDEX_DTYPE).itemsize].view(INDEX_DTYPE) if spec.has_indices else None
    flag = int(chunk[spec.nbytes - 1]) if spec.has_flag else None
    return Message(indices, values, flag)


class _Channels:
    """The preallocated buffers and ``Gatherv`` layouts shared by master and workers."""

    def __init__(self, method: Method, n: int, d: int):
        self.n, self.d = n, d
        self.xbuf = np.zeros(d + 1)
        self.specs = {0: method.message_spec(0), 1: method.message_spec(1)}
        self.slot = {key: _aligned(spec.nbytes) for key, spec in self.specs.items()}

    def spec(self, t: int) -> MessageSpec:
        return self.specs[min(t, 1)]

    def message_layout(self, t: int) -> tuple[list[int], list[int]]:
        key = min(t, 1)
        counts = [0] + [self.specs[key].nbytes] * self.n
        displs = [0] + [i * self.slot[key] for i in range(self.n)]
        return counts, displs


class MpiCluster:
    """The master's view of the workers: ``round`` = Bcast x, Gatherv messages (and monitors)."""

    def __init__(self, comm, method: Method, n: int, d: int):
        self.comm, self.MPI = comm, _mpi()
        self.ch = _Channels(method, n, d)
        self.recv = {key: np.zeros(max(n * slot, 1), dtype=np.uint8) for key, slot in self.ch.slot.items()}
        self.layout = {key: self.ch.message_layout(key) for key in (0, 1)}
        self.empty = np.zeros(0, dtype=np.uint8)
        self.monitors = np.zeros((n, d + 2))  # rank 0 only: every worker's monitoring row
        self.mon_counts = [0] + [d + 2] * n
        self.mon_displs = [0] + [i * (d + 2) for i in range(n)]

    def round(self, x: np.ndarray, t: int, logged: bool):
        MPI, ch = self.MPI, self.ch
        ch.xbuf[:-1] = x
        ch.xbuf[-1] = 2 * t + int(logged)
        self.comm.Bcast(ch.xbuf, root=0)
        key = min(t, 1)
        spec, recv = ch.spec(t), self.recv[key]
        counts, displs = self.layout[key]
        self.comm.Gatherv(self.empty, [recv, counts, displs, MPI.BYTE], root=0)
        if logged:
            self.comm.Gatherv(np.zeros(0), [self.monitors, self.mon_counts, self.mon_displs, MPI.DOUBLE], root=0)
        self._check_reports(t)
        slot = ch.slot[key]
        messages = [unpack(recv[i * slot:i * slot + spec.nbytes], spec) for i in range(ch.n)]
        wire_bytes = np.array(counts[1:], dtype=np.int64)
        if t == 0:
            self.recv[0] = self.empty  # the (possibly dense) round-0 slots are not needed again
        return messages, wire_bytes, (self.monitors if logged else None)

    def _check_reports(self, t: int) -> None:
        status = self.MPI.Status()
        if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_ERROR, status=status):
            failed_round, text = self.comm.recv(source=status.Get_source(), tag=TAG_ERROR)
            raise RunFailed(text, failed_round)

    def worker_snapshots(self) -> list[WorkerSnapshot]:
        self.ch.xbuf[-1] = CHECKPOINT
        self.comm.Bcast(self.ch.xbuf, root=0)
        return self.comm.gather(None, root=0)[1:]

    def stop(self) -> None:
        self.ch.xbuf[-1] = STOP
        self.comm.Bcast(self.ch.xbuf, root=0)


def _wait_quietly(comm) -> None:
    """Wait for rank 0 without busy-polling a core it needs (start-up can take seconds on rank 0)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.002)


def _worker_main(comm, header: dict) -> int:
    rank = comm.Get_rank()
    i = rank - 1
    sizes = np.zeros(3, dtype=np.int64)
    comm.Recv(sizes, source=0, tag=1)
    rows, nnz, d = (int(v) for v in sizes)
    indptr, indices = np.empty(rows + 1, dtype=np.int64), np.empty(nnz, dtype=np.int32)
    data, y = np.empty(nnz), np.empty(rows)
    for buf in (indptr, indices, data, y):
        comm.Recv(buf, source=0, tag=2)
    A = sp.csr_matrix((data, indices, indptr), shape=(rows, d))
    method = make_method(header["algorithm"], header["compressor"], header["gamma"], header["n"], d, header["init"])
    worker = Worker(method, make_shard(header["problem"], A, y, header["lam"]), header["seeds"][i], header["batch_size"])
    if header["restore"]:
        comm.recv(source=0, tag=3).restore(worker.state)
    faults = FaultInjector.from_environment(rank)
    ch = _Channels(method, header["n"], d)
    sendbuf = {key: np.zeros(spec.nbytes, dtype=np.uint8) for key, spec in ch.specs.items()}
    monitor = np.zeros(d + 2)
    failed = False
    while True:
        comm.Bcast(ch.xbuf, root=0)
        control = ch.xbuf[-1]
        if control == STOP:
            return 1 if failed else 0
        if control == CHECKPOINT:
            comm.gather(WorkerSnapshot.of(worker.state), root=0)
            continue
        t, logged = divmod(int(control), 2)
        key = min(t, 1)
        if not failed:
            try:
                faults.maybe_fail(t)
                message = worker.round(ch.xbuf[:-1], t, monitor if logged else None)
                pack(message, ch.specs[key], sendbuf[key])
            except Exception as err:  # noqa: BLE001 -- any failure is reported, then the collectives go on until rank 0 stops us
                failed = True
                text = f"worker {i} (rank {rank}) failed in round {t}: {type(err).__name__}: {err}"
                comm.send((t, text.replace("\n", " ")), dest=0, tag=TAG_ERROR)
        if failed:
            sendbuf[key][:] = 0
            monitor[:] = 0.0
        comm.Gatherv(sendbuf[key], None, root=0)
        if logged:
            comm.Gatherv(monitor, None, root=0)


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
