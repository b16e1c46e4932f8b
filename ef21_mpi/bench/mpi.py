"""The MPI side of ``ef21-mpi bench``: one ``mpiexec`` launch measures the communication floor, then real runs.

Launched by `ef21_mpi.bench.bench` as ``mpiexec -n N python -m mpi4py -m ef21_mpi.bench.mpi --spec FILE`` (``-m mpi4py``
turns an exception on any rank into an abort instead of a hang). In that one launch:

1. **Communication floor**, measured just before each run: the MPI backend's round pattern (the same
   `wire` objects, waited for the same way) with no computation: the broadcast of ``d + 1`` doubles from
   rank 0, then the gather of every worker's ``12 k``-byte slot, timed on rank 0 round by round; then the
   same with the ``d + 2``-double monitoring row that logged rounds append to each slot.
2. **Real runs**: what ``ef21-mpi run`` does under ``mpiexec`` (`ef21_mpi.runtime.session.run` on every rank), watched
   through the session's hooks: a wrapper around each rank's worker group times its computation (wall and CPU
   seconds), a loop observer on rank 0 takes the memory snapshot; the per-round time comes from the log's
   ``wall_time``.
3. **Isolated compute**: after a run, each worker in turn repeats its last round (plain and logged) while
   every other rank sleeps: what one round of that worker costs on an otherwise idle core.
4. Optionally (``"trace": true``) the run is repeated for a few rounds under ``tracemalloc`` on every rank,
   listing the live numpy blocks at least as large as an ``n x d`` float64 array.

Rank 0 writes everything to the JSON file named in the spec. Nothing here is used by a normal run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from ef21_mpi.core.compressors import TopK
from ef21_mpi.core.methods import make_method
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import RunConfig
from ef21_mpi.runtime.loop import Observer
from ef21_mpi.runtime.session import Hooks, mpi_rank
from ef21_mpi.runtime.session import run as run_session
from ef21_mpi.runtime.wire import Slots, rank_workers


def _quiet_barrier(comm, poll: float = 0.0005) -> None:
    """A barrier that sleeps instead of busy-polling a core that another rank needs."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll)


def communication_floor(comm, d: int, k: int, rounds: int, warmup: int, monitored: bool,
                        workers: int | None = None) -> list[float]:
    """Seconds per round on rank 0 of the backend's own round pattern with no computation (``workers`` over the ranks).

    The same `wire` layout as a run: ``Bcast`` of ``d + 1`` doubles, then ``Gatherv`` of every worker's
    ``12 k``-byte Top-k slot (with its ``d + 2``-double monitoring row when ``monitored``).
    """
    from mpi4py import MPI

    rank, worker_ranks = comm.Get_rank(), comm.Get_size() - 1
    n = workers or worker_ranks
    ranks = rank_workers(n, worker_ranks)
    slots = Slots(make_method("ef21", TopK(k, d), 1.0, n, d), n, d)
    xbuf = np.zeros(d + 1)
    send = np.zeros(slots.block_nbytes(1, monitored, len(ranks[rank - 1])) if rank else 0, dtype=np.uint8)
    recv = np.zeros(max(n * slots.stride(1, True), 8), dtype=np.uint8)
    counts, displs = slots.layout(1, monitored, ranks)
    empty = np.zeros(0, dtype=np.uint8)
    times = []
    _quiet_barrier(comm)
    for t in range(warmup + rounds):
        started = time.perf_counter()
        comm.Bcast(xbuf, root=0)
        if rank == 0:
            comm.Gatherv(empty, [recv, counts, displs, MPI.BYTE], root=0)
        else:
            comm.Gatherv(send, None, root=0)
        if t >= warmup:
            times.append(time.perf_counter() - started)
    return times


class WorkerTimer:
    """Times each round of the worker group a rank holds (wall and CPU seconds), through the session's
    ``Hooks.wrap_group``: the runtime builds the group, this wraps it from outside."""

    def __init__(self):
        self.calls: list[tuple[int, float, float]] = []  # (t, wall seconds, CPU seconds)
        self.group = None  # the wrapped group (for `isolated_compute`)
        self.last_x = None
        self.snapshot_at: int | None = None
        self.snapshot = None

    def wrap(self, group) -> _TimedGroup:
        self.group = group
        return _TimedGroup(group, self)

    def reset(self) -> None:
        self.calls, self.group, self.last_x, self.snapshot = [], None, None, None

    def median(self, column: int) -> float | None:
        values = [c[column] for c in self.calls if c[0] >= 1]
        return float(np.median(values)) if values else None


class _TimedGroup:
    """A worker group whose ``round`` reports to a `WorkerTimer`; everything else is the group's own."""

    def __init__(self, group, timer: WorkerTimer):
        self._group, self._timer = group, timer

    def __getattr__(self, name):
        return getattr(self._group, name)

    def round(self, x, t, monitors):
        timer = self._timer
        wall, cpu = time.perf_counter(), time.thread_time()
        msgs = self._group.round(x, t, monitors)
        timer.calls.append((t, time.perf_counter() - wall, time.thread_time() - cpu))
        timer.last_x = x
        if timer.snapshot_at is not None and t == timer.snapshot_at and tracemalloc.is_tracing():
            timer.snapshot = tracemalloc.take_snapshot()
        return msgs


class MasterSnapshot(Observer):
    """On rank 0, a loop observer: a ``tracemalloc`` snapshot once the row of round ``at`` is logged."""

    def __init__(self, at: int):
        self.at = at
        self.snapshot = None

    def on_row(self, row, loop) -> None:
        if row.t == self.at and tracemalloc.is_tracing():
            self.snapshot = tracemalloc.take_snapshot()


def large_blocks(snapshot, threshold: int) -> list[dict]:
    """Live blocks of at least ``threshold`` bytes, each with the innermost ef21_mpi line that allocated it."""
    if snapshot is None:
        return []
    found = []
    for trace in snapshot.traces:
        if trace.size < threshold:
            continue
        frames = list(trace.traceback)  # oldest first
        ours = [f for f in frames if "ef21_mpi" in f.filename and "bench" not in Path(f.filename).name]
        frame = ours[-1] if ours else frames[-1]
        found.append({"bytes": int(trace.size), "where": f"{Path(frame.filename).name}:{frame.lineno}"})
    return sorted(found, key=lambda b: -b["bytes"])


def isolated_compute(comm, timer: WorkerTimer, repeats: int) -> dict | None:
    """Each worker in turn repeats its round (plain, then logged) while the others sleep; median seconds."""
    rank, size = comm.Get_rank(), comm.Get_size()
    result = None
    for turn in range(1, size):
        _quiet_barrier(comm, poll=0.01)  # the waiting ranks wake rarely, so the measured one has a core
        if rank == turn and timer.group is not None and timer.last_x is not None:
            x = np.array(timer.last_x, copy=True).view(np.uint8)  # the broadcast's bytes: x^t, d float64
            result = {}
            for name, monitor in (("plain", None), ("logged", np.zeros((timer.group.m, x.shape[0] // 8 + 2)))):
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    timer.group.round(x, 1, monitor)
                    times.append(time.perf_counter() - started)
                result[name] = float(np.median(times))
    _quiet_barrier(comm, poll=0.01)
    return result


def run_config(spec: dict, run: dict, out: Path) -> RunConfig:
    """The configuration of one bench run (EF21 family, Top-k); the backend is chosen by the launch (MPI)."""
    return RunConfig(dataset=spec["dataset"], out=str(out), algorithm=run.get("algorithm", "ef21"),
                     compressor="top-k", k=run["k"], rounds=run["rounds"], log_every=run["log_every"],
                     data_dir=spec.get("data_dir") or None, workers=spec.get("workers") or None, overwrite=True,
                     quiet=True, placement="spread")  # the floors are per launched rank; part ranks times auto


def run_exit_code(cfg: RunConfig, hooks: Hooks) -> int:
    """`runtime.session.run` with the exit code ``ef21-mpi run`` gives: 2 and one message (rank 0) on bad input."""
    try:
        return run_session(cfg, hooks=hooks)
    except InputError as err:
        if mpi_rank() == 0:
            print(f"ef21-mpi: error: {err}", file=sys.stderr)
        return 2


def read_run_log(path: Path, n: int) -> dict:
    """Per-round time (median of wall_time steps, rounds >= 1) and uplink per worker per round from the log."""
    from ef21_mpi.runtime import logschema

    log = logschema.read_log(path, need=("wall_time", "bits_up", "coords_up"))
    rounds, wall, bits_up, coords_up = log["round"], log["wall_time"], log["bits_up"], log["coords_up"]
    status = str(log.attrs.get("status", ""))
    gamma = float(log.attrs.get("gamma", float("nan")))
    steps = np.diff(rounds)  # row r >= 1 covers rounds (round[r-1], round[r]]; row 0 is the initialisation
    per_round = np.diff(wall) / steps
    spent = max(int(rounds[-1] - rounds[0]), 1)
    return {
        "status": status,
        "gamma": gamma,
        "rows": int(rounds.size),
        "round_seconds_median": float(np.median(per_round)) if per_round.size else None,
        "round_seconds_all": per_round.tolist(),
        "bits_up_per_worker_round": sorted(set((bits_up[1:].sum(axis=0) / spent).tolist())),
        "coords_up_per_worker_round": sorted(set((coords_up[1:].sum(axis=0) / spent).tolist())),
        "n": n,
    }


def real_run(comm, spec: dict, run: dict, index: int, timer: WorkerTimer) -> dict:
    """One ``ef21-mpi run`` on every rank, timed; rank 0 returns the measurements."""
    rank, n = comm.Get_rank(), comm.Get_size() - 1
    out = Path(spec["workdir"]) / f"mpi-run-{index}.h5"
    trace = bool(run.get("trace"))
    timer.reset()
    master_snapshot = MasterSnapshot(at=2)
    if trace:
        timer.snapshot_at = 2
        tracemalloc.start(25)
    _quiet_barrier(comm)
    started = time.perf_counter()
    rc = run_exit_code(run_config(spec, run, out), Hooks(observers=[master_snapshot], wrap_group=timer.wrap))
    total = time.perf_counter() - started
    peak_traced = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
        timer.snapshot_at = None
    d = spec["dim"]
    threshold = int(0.9 * n * d * 8)
    snapshot = master_snapshot.snapshot if rank == 0 else timer.snapshot
    mine = {
        "rank": rank,
        "rc": rc,
        "compute_wall": timer.median(1),
        "compute_cpu": timer.median(2),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "traced_peak_mb": peak_traced / 2**20 if peak_traced is not None else None,
        "large_blocks": large_blocks(snapshot, threshold) if trace else None,
    }
    if not trace:
        mine["compute_isolated"] = isolated_compute(comm, timer, spec.get("isolated_repeats", 50))
    everyone = comm.gather(mine, root=0)
    if rank != 0:
        return {}
    result = {"run": run, "seconds_total": total, "ranks": everyone}
    if all(r["rc"] == 0 for r in everyone) and out.exists():
        result.update(read_run_log(out, n))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MPI side of ef21-mpi bench (see the module docstring)")
    parser.add_argument("--spec", required=True, help="JSON file: dataset, dim, k, floor_rounds, runs, workdir, out")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    report = {"library": MPI.Get_library_version().splitlines()[0].strip(), "ranks": comm.Get_size(),
              "mpi4py": __import__("mpi4py").__version__}
    timer = WorkerTimer()
    runs = []
    for i, run in enumerate(spec["runs"]):
        floors = {}
        if spec.get("floor_rounds") and not run.get("trace"):
            for name, monitored in (("floor", False), ("floor_logged", True)):
                times = communication_floor(comm, spec["dim"], run["k"], spec["floor_rounds"],
                                            spec.get("warmup", 20), monitored, spec.get("workers"))
                floors[name] = float(np.median(times))
        result = real_run(comm, spec, run, i, timer)
        if rank == 0:
            result.update(floors)
            runs.append(result)
    if rank == 0:
        report["runs"] = runs
        Path(spec["out"]).write_text(json.dumps(report))
    _quiet_barrier(comm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
