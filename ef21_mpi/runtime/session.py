"""One run from start to finish, written once for both backends.

Start-up: resolve the configuration (or the original run's, when resuming) and check it at the door,
build the experiment, open (or continue) the log under its writer lock; then hand the workers to a
cluster (serial: one `WorkerGroup` in this process; MPI: `mpi.MpiCluster` over the worker ranks), run the
round loop with its observers, and finish: final status, lock released, exit code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ef21_mpi.core.methods import Method
from ef21_mpi.errors import InputError
from ef21_mpi.runtime import checkpoint, faults, files, watchdog
from ef21_mpi.runtime.config import SERIAL_WORKERS, RunConfig, validate
from ef21_mpi.runtime.experiment import Experiment, build, log_attributes
from ef21_mpi.runtime.logschema import RunLog
from ef21_mpi.runtime.loop import LoopState, Observer, Outcome, fresh_loop, run_rounds
from ef21_mpi.runtime.observers import Checkpointer, LogWriter, Progress, StopSignal
from ef21_mpi.runtime.resume import ResumeRequest, read_attrs, restore, resume_config
from ef21_mpi.runtime.serial import SerialCluster
from ef21_mpi.runtime.worker import WorkerGroup

EXIT_CODES = {"completed": 0, "converged": 0, "failed": 1, "diverged": 3}


@dataclass
class Hooks:
    """Ways to watch a run from outside (the benchmark uses them): extra loop observers on the master, a
    wrapper around each process's `WorkerGroup` (its ``round``), and a check of the experiment (``rerun``)."""

    observers: Sequence[Observer] = ()
    wrap_group: Callable | None = None
    check: Callable[[Experiment], None] | None = None  # may refuse the experiment (InputError) before the log opens


def mpi_rank() -> int:
    """This process's rank as the launcher announced it (0 when not launched by MPI)."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def mpi_world_size() -> int:
    """Number of ranks this process was launched with, without initialising MPI when it is not needed."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def choose_backend(backend: str) -> str:
    if backend != "auto":
        return backend
    return "mpi" if mpi_world_size() > 1 else "serial"


def resolve_config(cfg: RunConfig | None, resume: ResumeRequest | None) -> RunConfig:
    """The configuration to run: the given one, or the original run's when resuming; checked at the door."""
    cfg = resume_config(resume) if resume is not None else cfg
    validate(cfg)
    return cfg


def resolve_workers(cfg: RunConfig, worker_ranks: int | None, resume: bool) -> RunConfig:
    """n: ``--workers``, else 20 in one process and one per worker rank under MPI (never fewer than ranks)."""
    if worker_ranks is None:
        return replace(cfg, workers=cfg.workers if cfg.workers is not None else SERIAL_WORKERS)
    n = cfg.workers if cfg.workers is not None else worker_ranks
    if n < worker_ranks:
        where = f"--resume {cfg.out}: the run has " if resume else ""
        raise InputError(f"{where}--workers {n} leaves worker ranks idle: {worker_ranks} worker ranks were launched; "
                         f"launch at most n + 1 = {n + 1} ranks (mpiexec -n {n + 1})")
    return replace(cfg, workers=n)


@dataclass
class Start:
    """Everything start-up produced on the master: the experiment, the log and the state to begin from."""

    cfg: RunConfig
    exp: Experiment
    method: Method
    log: RunLog
    loop: LoopState
    worker_states: dict | None  # from a checkpoint, or None for a fresh start
    lock: object
    started: float = field(default_factory=time.time)
    final: checkpoint.Checkpoint | None = None  # the state after the last round of a completed run (`final_state`)
    created: list[Path] = field(default_factory=list)  # folders made for the log (removed if start-up fails)


def lock_log(cfg: RunConfig):
    """The log's writer lock, taken before the data is loaded (see `files.lock_output`)."""
    out = Path(cfg.out)
    return files.lock_output(out, cfg.overwrite, (checkpoint.checkpoint_path(out),))


def check_not_an_input(cfg: RunConfig, exp: Experiment) -> None:
    """``--out`` must not be the data file or the ``--x0`` file (``--overwrite`` would destroy it)."""
    for flag, other in (("--dataset", exp.dataset.path), ("--x0", cfg.x0 if cfg.x0.endswith(".npy") else None)):
        if other and Path(cfg.out).exists() and Path(other).exists() and os.path.samefile(cfg.out, other):
            raise InputError(f"--out {cfg.out} is the {flag} file; choose another name for the log")


def start(cfg: RunConfig, exp: Experiment, backend: str, mpi_library: str, world_size: int, resume: bool,
          lock, placement: dict | None = None) -> Start:
    """Open (or continue) the log under its writer lock (held already); the loop state comes from the checkpoint
    if resuming. ``placement``: the MPI backend's record of which rank held which worker (log attributes)."""
    out = Path(cfg.out)
    check_not_an_input(cfg, exp)
    attrs = {**log_attributes(exp, backend, mpi_library, world_size), **(placement or {})}
    extra = ("loss_gap",) if exp.constants.f_star is not None else ()
    log = RunLog(out, attrs, exp.n, exp.d, extra_series=extra, flush_seconds=cfg.flush_seconds,
                 flush_every=cfg.flush_every)
    method = exp.method()
    loop, states = fresh_loop(method, exp.x0), None
    if not resume:
        checkpoint.checkpoint_path(out).unlink(missing_ok=True)  # a stale checkpoint of a replaced run
    else:
        old = read_attrs(out)
        loop, states = restore(cfg, exp, method, log, old)
        history = json.loads(old.get("resume_history", "[]"))
        history.append({"round": loop.t, "time": time.time(), "backend": backend, "world_size": world_size}
                       | ({"rounds": cfg.rounds} if cfg.rounds != old.get("rounds_requested") else {}))
        log.attrs["resume_history"] = json.dumps(history)
        log.attrs["command_line"] = old.get("command_line", log.attrs["command_line"])
    log.flush(loop.master.x)  # the log exists, with status "running", before the next round
    return Start(cfg, exp, method, log, loop, states, lock)


def observers(s: Start, hooks: Hooks) -> list[Observer]:
    """The loop's observers, in the order they act after a round: stop signal, checkpoint, log flush."""
    cfg, log = s.cfg, s.log
    f_star = s.exp.constants.f_star
    extra = (lambda row: {"loss_gap": row.loss - f_star}) if f_star is not None else None
    ckpt_file = checkpoint.checkpoint_path(log.path)
    config = json.loads(json.dumps(cfg.numbers(), sort_keys=True))
    kill = faults.checkpoint_hook()

    def save(loop: LoopState, worker_states: dict) -> None:
        ckpt = checkpoint.Checkpoint(loop, worker_states, config, s.exp.dataset.sha256)
        checkpoint.save(ckpt_file, ckpt, before_rename=(lambda: kill(loop.t)) if kill else None)

    paper, wire = logged_bits(log, s.method.initialises)
    chosen: list[Observer] = [Checkpointer(save, lambda loop: log.flush(loop.master.x),
                                           every=cfg.checkpoint_every, seconds=cfg.checkpoint_seconds),
                              LogWriter(log, extra)]
    if not cfg.quiet:
        chosen.append(Progress(cfg.rounds, s.method.initialises, paper, wire))
    return [StopSignal(), *chosen, *hooks.observers]  # the handlers are installed last: nothing can fail after it


def logged_bits(log: RunLog, initialises: bool) -> tuple[float, float]:
    """Bits/n already in the log (a resumed run): the paper's count (32 per coordinate, g_i^0 not counted for a
    method whose row 0 is an initialisation) and the wire's."""
    if not log.rows:
        return 0.0, 0.0
    coords = log.column("coords_up")[1:] if initialises else log.column("coords_up")
    return float(Progress.BITS_PER_COORDINATE * coords.sum(axis=0).mean()), float(
        log.column("bits_up").sum(axis=0).mean())


def finish(s: Start, outcome: Outcome) -> int:
    """Write the final status, release the lock and say how the run ended; returns the exit code."""
    log = s.log
    try:
        if s.final is not None:  # kept in the log, so that the run can be extended (`--resume LOG --rounds N`)
            log.groups[checkpoint.FINAL_GROUP] = lambda group: checkpoint.fill(group, s.final)
        log.flush(outcome.x, status=outcome.status, rounds_done=outcome.rounds_done,
                  elapsed_seconds=time.time() - s.started)
        if outcome.status in ("completed", "converged", "diverged"):
            checkpoint.checkpoint_path(log.path).unlink(missing_ok=True)  # nothing left to resume
    finally:
        release(s)
    if outcome.status in ("completed", "converged") and not s.cfg.quiet:
        print(f"ef21-mpi: run {outcome.status} after {outcome.rounds_done} rounds; {log.rows} rows in {log.path}",
              file=sys.stderr)
    if outcome.status in ("diverged", "failed", "interrupted"):
        hint = f"; continue with: ef21-mpi run --resume {log.path}" if outcome.status == "interrupted" else ""
        print(f"ef21-mpi: run {outcome.status} at round {outcome.rounds_done}: {outcome.message}; "
              f"{log.rows} rows kept in {log.path}{hint}", file=sys.stderr)
    if outcome.status == "interrupted":
        return 128 + int(outcome.signal or signal.SIGINT)
    return EXIT_CODES[outcome.status]


def release(s: Start) -> None:
    files.release_writer_lock(s.log.path, s.lock)


def locked_start(cfg: RunConfig, backend: str, mpi_library: str, world_size: int, resume: bool,
                 need_shards: bool = True, placement: dict | None = None,
                 check: Callable[[Experiment], None] | None = None) -> Start:
    """Make the log's folder if missing, lock the log, then load the data and open the log; the lock goes (and
    the folders made go) again if anything fails."""
    created = files.make_folders(Path(cfg.out).parent, f"--out {cfg.out}: ")
    try:
        lock = lock_log(cfg)
    except BaseException:
        files.remove_folders(created)
        raise
    try:
        exp = build(cfg, cfg.workers, need_shards)
        if check is not None:
            check(exp)
        s = start(cfg, exp, backend, mpi_library, world_size, resume, lock, placement)
    except BaseException:
        files.release_writer_lock(Path(cfg.out), lock, refused=True)
        files.remove_folders(created)
        raise
    s.created = created
    return s


def fail(s: Start) -> None:
    """Whatever happened after start-up, the log must not claim to be running, and the lock goes."""
    try:
        s.log.flush(s.log.x, status="failed")
    finally:
        release(s)


def abandon(s: Start, resume: bool) -> None:
    """Start-up failed after the log was opened: remove a new log; a resumed one stays resumable."""
    if resume:
        s.log.flush(s.log.x, status="interrupted")
    else:
        s.log.path.unlink(missing_ok=True)
    release(s)
    files.remove_folders(s.created)


def _loop(s: Start, cluster, hooks: Hooks) -> Outcome:
    cfg = s.cfg
    chosen = observers(s, hooks)
    try:
        outcome = run_rounds(s.method, s.loop, faults.arm_cluster(cluster), cfg.rounds,
                             log_every=cfg.log_every, tol=cfg.tol, observers=chosen)
        if outcome.status == "completed":
            s.final = final_state(s, cluster.worker_states())
        return outcome
    except BaseException as err:
        for observer in chosen:
            if isinstance(observer, StopSignal):
                observer.restore()
        full = storage_full(s, err)
        if full is None:
            s.log.flush(s.log.x, status="failed")  # whatever happened, the log must not claim to be running
        release(s)
        if full is not None:
            raise full from None
        raise


def final_state(s: Start, worker_states: dict) -> checkpoint.Checkpoint:
    """The state after the last round as a checkpoint taken there by a longer run would hold it: a last row that
    only the end of the run logged (``rounds`` not a multiple of ``--log-every``) is not counted, and its bits are
    carried as not yet logged."""
    loop, log, cfg = s.loop, s.log, s.cfg
    state = replace(loop, bits_up=loop.bits_up.copy(), coords_up=loop.coords_up.copy(), stop_signal=None)
    if cfg.rounds % cfg.log_every:
        last = log.rows - 1
        state = replace(state, bits_up=log.column("bits_up")[last].copy(),
                        coords_up=log.column("coords_up")[last].copy(),
                        bits_down=int(log.column("bits_down")[last]), log_rows=last)
    config = json.loads(json.dumps(cfg.numbers(), sort_keys=True))
    return checkpoint.Checkpoint(state, worker_states, config, s.exp.dataset.sha256)


def storage_full(s: Start, err: BaseException) -> files.StorageFull | None:
    """The one-line error for a log or checkpoint write that failed for lack of space (None for other errors).

    Nothing more is written: the last snapshot of the log (status running) and the last checkpoint stay as they
    were, no temporary file is left, and the run can be resumed once there is room."""
    if not (isinstance(err, OSError) and err.errno in files.FULL):
        return None
    ckpt = checkpoint.checkpoint_path(s.log.path)
    where = f"the checkpoint {ckpt} is kept" if ckpt.exists() else "no checkpoint was taken yet"
    return files.StorageFull(f"cannot write {s.log.path} or its checkpoint: {err.strerror}; the last snapshot of the "
                             f"log and {where}; make room, then continue with: ef21-mpi run --resume {s.log.path}")


def run_serial(cfg: RunConfig, resume: bool, hooks: Hooks) -> int:
    cfg = resolve_workers(cfg, None, resume)
    s = locked_start(cfg, "serial", "", 1, resume, check=hooks.check)
    exp = s.exp
    try:
        group = WorkerGroup(s.method, exp.make_shards(range(exp.n)), exp.seeds, cfg.batch_size, first=0)
        if s.worker_states is not None:
            checkpoint.restore_workers(group.state, s.worker_states)
        group = faults.arm_group(group)
        if hooks.wrap_group is not None:
            group = hooks.wrap_group(group)
    except BaseException:
        fail(s)
        raise
    return finish(s, _loop(s, SerialCluster(group, exp.d), hooks))


def run_mpi(cfg: RunConfig | None, resume: ResumeRequest | None, hooks: Hooks) -> int:
    from ef21_mpi.runtime import mpi, placement

    comm = mpi.world()
    if comm.Get_size() < 2:
        raise InputError("--backend mpi needs at least 2 ranks (1 master + n workers); launch with mpiexec -n N+1")
    mpi.install_abort_hook(comm)
    ranks_info = placement.survey(comm)
    if comm.Get_rank() != 0:
        return mpi.serve(comm, hooks.wrap_group)
    worker_ranks = comm.Get_size() - 1
    try:
        cfg = resolve_workers(resolve_config(cfg, resume), worker_ranks, resume is not None)
        where = placement.plan(ranks_info, cfg.workers, cfg.placement)
        s = locked_start(cfg, "mpi", mpi.library_version(), comm.Get_size(), resume is not None, need_shards=False,
                         placement=where.attrs(), check=hooks.check)  # from a store, the workers read their shards
        exp = s.exp
    except InputError as err:
        err.report()  # before the others exit: Open MPI's launcher ends the job at the first non-zero exit
        mpi.refuse(comm)
        raise
    if where.notice() and not cfg.quiet:
        print(where.notice(), file=sys.stderr, flush=True)
    job = mpi.WorkerJob(exp.method_class, exp.compressor, exp.gamma, exp.n, exp.d, cfg.init, cfg.problem, cfg.lam,
                        exp.seeds, where.blocks, cfg.batch_size, s.worker_states is not None, exp.options,
                        s.loop.t + 1, cfg.stall_timeout is not None, exp.store)
    try:
        cluster = mpi.MpiCluster.start(comm, job, exp.shards, s.worker_states)
    except BaseException as err:
        fail(s)
        print(f"ef21-mpi: error on rank 0: {type(err).__name__}: {err}".replace("\n", " "), file=sys.stderr)
        comm.Abort(1)
        raise
    if cluster.problem is not None:  # a worker rank could not read its shards: leave no half-made log
        abandon(s, resume is not None)
        err = InputError(cluster.problem)
        err.report()  # before the workers exit (see above)
        cluster.stop()
        raise err
    hooks = guard(cluster.comm, s, [block for block in where.blocks if len(block)], hooks)
    exp.release_data()  # the master keeps no shard and no data set
    try:
        outcome = _loop(s, cluster, hooks)
    except files.StorageFull:
        cluster.stop()  # the workers wait between rounds: let them go, then say it in one line
        raise
    except Exception as err:  # noqa: BLE001 -- the log is marked failed; abort the job rather than hang it
        print(f"ef21-mpi: error on rank 0: {type(err).__name__}: {err}".replace("\n", " "), file=sys.stderr)
        comm.Abort(1)
    cluster.stop()
    return finish(s, outcome)


def guard(comm, s: Start, ranks: list[range], hooks: Hooks) -> Hooks:
    """Rank 0's watchdog (`runtime.watchdog`): bounded shutdown after a stop signal, and the stall timeout."""
    dog = watchdog.Watchdog(comm, ranks, watchdog.end_job(comm, s.log, lambda: release(s)), s.cfg.stall_timeout)
    return replace(hooks, observers=[*hooks.observers, dog])


def run(cfg: RunConfig | None, resume: ResumeRequest | None = None, hooks: Hooks | None = None) -> int:
    """Run (or resume) one configuration on the backend it names; returns the process's exit code."""
    hooks = hooks or Hooks()
    backend = resume.explicit.get("backend", "auto") if resume is not None else cfg.backend
    if choose_backend(backend) == "mpi":
        return run_mpi(cfg, resume, hooks)  # rank 0 resolves and validates, and tells the others
    if mpi_world_size() > 1:
        raise InputError("--backend serial was launched under mpiexec with several ranks; run it as one process")
    return run_serial(resolve_config(cfg, resume), resume is not None, hooks)
