"""``ef21-mpi run``: choose the backend, build the experiment, run the loop, close the log."""

from __future__ import annotations

import sys
import time

from .config import RunConfig, validate
from .engine import Outcome, Progress, run_master
from .errors import InputError
from .experiment import Experiment, build, log_attributes
from .runlog import RunLog
from .serial import SerialCluster
from .worker import Worker

EXIT_CODES = {"completed": 0, "converged": 0, "failed": 1, "diverged": 3, "interrupted": 130}


def mpi_world_size() -> int:
    """Number of ranks this process was launched with, without initialising MPI when it is not needed."""
    import os

    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def choose_backend(cfg: RunConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "mpi" if mpi_world_size() > 1 else "serial"


def open_log(exp: Experiment, backend: str, mpi_library: str, world_size: int) -> RunLog:
    attrs = log_attributes(exp, backend, mpi_library, world_size)
    extra = ("loss_gap",) if exp.constants.f_star is not None else ()
    log = RunLog(exp.cfg.out, attrs, exp.n, exp.d, extra_series=extra,
                 flush_seconds=exp.cfg.flush_seconds, flush_every=exp.cfg.flush_every)
    log.flush(exp.x0)  # the log exists, with status "running", before the first round
    return log


def extra_series(exp: Experiment):
    """Columns beyond SPEC 7's that a problem defines: ``loss_gap = f(x^t) - f*`` for least squares."""
    f_star = exp.constants.f_star
    if f_star is None:
        return None
    return lambda x, grad_norm_sq, loss: {"loss_gap": loss - f_star}


def finish(log: RunLog, outcome: Outcome, started: float) -> int:
    """Write the final status and say how the run ended; returns the exit code."""
    elapsed = time.time() - started
    log.flush(outcome.x, status=outcome.status, rounds_done=outcome.rounds_done, elapsed_seconds=elapsed)
    if outcome.status in ("diverged", "failed", "interrupted"):
        print(f"ef21-mpi: run {outcome.status} at round {outcome.rounds_done}: {outcome.message}; "
              f"{log.rows} rows kept in {log.path}", file=sys.stderr)
    return EXIT_CODES[outcome.status]


def run_serial(cfg: RunConfig) -> int:
    exp = build(cfg, cfg.workers)
    method = exp.method()
    batch = cfg.batch_size if cfg.algorithm == "ef21-sgd" else None
    workers = [Worker(method, exp.make_shard(i), exp.seeds[i], batch) for i in range(exp.n)]
    log = open_log(exp, "serial", "", 1)
    started = time.time()
    progress = Progress(not cfg.quiet and sys.stderr.isatty(), cfg.rounds)
    outcome = run_master(method, exp.x0, cfg.rounds, SerialCluster(workers, exp.d), log,
                         log_every=cfg.log_every, tol=cfg.tol, progress=progress, extra_series=extra_series(exp))
    return finish(log, outcome, started)


def run(cfg: RunConfig) -> int:
    if choose_backend(cfg) == "mpi":
        from .mpi_backend import run_mpi

        return run_mpi(cfg)  # rank 0 validates and tells the others
    if mpi_world_size() > 1:
        raise InputError("--backend serial was launched under mpiexec with several ranks; run it as one process")
    validate(cfg)
    return run_serial(cfg)
