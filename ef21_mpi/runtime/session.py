"""``ef21-mpi run``: choose the backend, build the experiment, run the loop, close the log.

The master's side of start-up and shut-down lives here and is shared by both backends: the log and its
writer lock, resuming from a checkpoint, the loop's options (checkpoints, signals, fault injection), and
the final status with its exit code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ef21_mpi.core.methods import Method
from ef21_mpi.errors import InputError
from ef21_mpi.runtime import checkpoint
from ef21_mpi.runtime.checkpoint import LoopState, WorkerSnapshot
from ef21_mpi.runtime.config import SERIAL_WORKERS, RunConfig, validate
from ef21_mpi.runtime.experiment import Experiment, build, log_attributes
from ef21_mpi.runtime.faults import FaultInjector
from ef21_mpi.runtime.logschema import RunLog, acquire_writer_lock, lock_path
from ef21_mpi.runtime.loop import Checkpointer, LoopOptions, Outcome, Progress, StopRequest, fresh_loop, run_master
from ef21_mpi.runtime.resume import ResumeRequest, read_attrs, restore, resume_config
from ef21_mpi.runtime.serial import SerialCluster
from ef21_mpi.runtime.worker import WorkerGroup

EXIT_CODES = {"completed": 0, "converged": 0, "failed": 1, "diverged": 3}


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


@dataclass
class MasterSide:
    """What the master needs besides its cluster: the log, the loop state to start from, the loop's options."""

    log: RunLog
    loop: LoopState
    snapshots: list[WorkerSnapshot] | None
    options: LoopOptions
    lock: object
    started: float


def prepare_master(cfg: RunConfig, exp: Experiment, method: Method, backend: str, mpi_library: str,
                   world_size: int, resume: bool) -> MasterSide:
    """Open (or continue) the log under its writer lock and set up checkpoints, signals and faults."""
    out = Path(cfg.out)
    try:
        lock = acquire_writer_lock(out)
    except BlockingIOError:
        raise InputError(f"{out} is being written by a running job (lock {lock_path(out)} is held)") from None
    except OSError as err:
        raise InputError(f"--out {out}: cannot create files beside it ({err.strerror})") from None
    for stale in out.parent.glob(f".{out.name}*.tmp*"):  # half-written snapshots of a killed writer
        stale.unlink(missing_ok=True)
    attrs = log_attributes(exp, backend, mpi_library, world_size)
    extra = ("loss_gap",) if exp.constants.f_star is not None else ()
    log = RunLog(out, attrs, exp.n, exp.d, extra_series=extra, flush_seconds=cfg.flush_seconds,
                 flush_every=cfg.flush_every)
    loop, snapshots = fresh_loop(method, exp.x0), None
    if not resume:
        checkpoint.checkpoint_path(out).unlink(missing_ok=True)  # a stale checkpoint of a replaced run
    else:
        old = read_attrs(out)
        loop, snapshots = restore(cfg, exp, method, log, old)
        history = json.loads(old.get("resume_history", "[]"))
        history.append({"round": loop.t, "time": time.time(), "backend": backend, "world_size": world_size})
        log.attrs["resume_history"] = json.dumps(history)
        log.attrs["command_line"] = old.get("command_line", log.attrs["command_line"])
    log.flush(loop.master.x)  # the log exists, with status "running", before the next round
    faults = FaultInjector.from_environment(0)
    ckpt_file = checkpoint.checkpoint_path(out)
    checkpointer = Checkpointer(
        write=lambda ckpt: checkpoint.save(ckpt_file, ckpt, before_rename=lambda: faults.in_checkpoint(ckpt.loop.t)),
        config=json.loads(json.dumps(cfg.numbers(), sort_keys=True)), dataset_sha256=exp.dataset.sha256,
        every=cfg.checkpoint_every, seconds=cfg.checkpoint_seconds)
    options = LoopOptions(rounds=cfg.rounds, log_every=cfg.log_every, tol=cfg.tol,
                          progress=Progress(not cfg.quiet, cfg.rounds), extra_series=extra_series(exp),
                          checkpointer=checkpointer, stop=StopRequest().install(), faults=faults)
    return MasterSide(log, loop, snapshots, options, lock, time.time())


def extra_series(exp: Experiment):
    """Columns beyond SPEC 7's that a problem defines: ``loss_gap = f(x^t) - f*`` for least squares."""
    f_star = exp.constants.f_star
    if f_star is None:
        return None
    return lambda x, grad_norm_sq, loss: {"loss_gap": loss - f_star}


def finish(side: MasterSide, outcome: Outcome) -> int:
    """Write the final status, release the lock and say how the run ended; returns the exit code."""
    log = side.log
    log.flush(outcome.x, status=outcome.status, rounds_done=outcome.rounds_done,
              elapsed_seconds=time.time() - side.started)
    if outcome.status in ("completed", "converged", "diverged"):
        checkpoint.checkpoint_path(log.path).unlink(missing_ok=True)  # nothing left to resume
    lock_path(log.path).unlink(missing_ok=True)
    side.lock.close()
    if outcome.status in ("diverged", "failed", "interrupted"):
        hint = f"; continue with: ef21-mpi run --resume {log.path}" if outcome.status == "interrupted" else ""
        print(f"ef21-mpi: run {outcome.status} at round {outcome.rounds_done}: {outcome.message}; "
              f"{log.rows} rows kept in {log.path}{hint}", file=sys.stderr)
    if outcome.status == "interrupted":
        return 128 + int(outcome.signal or signal.SIGINT)
    return EXIT_CODES[outcome.status]


def run_serial(cfg: RunConfig, resume: bool) -> int:
    cfg = replace(cfg, workers=cfg.workers if cfg.workers is not None else SERIAL_WORKERS)
    exp = build(cfg, cfg.workers)
    method = exp.method()
    batch = cfg.batch_size if cfg.algorithm == "ef21-sgd" else None
    group = WorkerGroup(method, exp.make_shards(range(exp.n)), exp.seeds, batch)
    side = prepare_master(cfg, exp, method, "serial", "", 1, resume)
    for state, snapshot in zip(group.states, side.snapshots or []):
        snapshot.restore(state)
    try:
        outcome = run_master(method, side.loop, SerialCluster(group, exp.d), side.log, side.options)
    except BaseException:
        side.log.flush(side.log.x, status="failed")  # whatever happened, the log must not claim to be running
        raise
    return finish(side, outcome)


def resolve_config(cfg: RunConfig | None, resume: ResumeRequest | None) -> RunConfig:
    """The configuration to run: the given one, or the original run's when resuming; validated."""
    cfg = resume_config(resume) if resume is not None else cfg
    validate(cfg)
    return cfg


def run(cfg: RunConfig | None, resume: ResumeRequest | None = None) -> int:
    backend = resume.explicit.get("backend", "auto") if resume is not None else cfg.backend
    if choose_backend(backend) == "mpi":
        from ef21_mpi.runtime.mpi import run_mpi

        return run_mpi(cfg, resume)  # rank 0 resolves and validates, and tells the others
    if mpi_world_size() > 1:
        raise InputError("--backend serial was launched under mpiexec with several ranks; run it as one process")
    return run_serial(resolve_config(cfg, resume), resume is not None)
