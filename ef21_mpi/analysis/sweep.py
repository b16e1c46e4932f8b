"""Sweeps: a grid of configurations, run one log each, resumable (``ef21-mpi sweep`` is its command line).

Each configuration is one ``ef21-mpi run`` in a subprocess (serial backend, or under a launcher such as
``mpiexec -n {n+1}``) writing a log with a predictable name, so a sweep that is stopped and started again
skips every configuration whose log already holds a final status and reruns the others.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

from ef21_mpi.analysis.grid import Config
from ef21_mpi.analysis.results import load_run
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.logschema import FINAL_STATUSES

# -- running -----------------------------------------------------------------------------------

@dataclass
class Result:
    config: Config
    status: str  # a log status, "failed" when the run left no usable log, or "skipped:<status>"
    seconds: float = 0.0
    message: str = ""
    rounds_done: int | None = None
    grad_norm_sq: float | None = None


def log_state(path: Path, config: Config) -> str:
    """``missing``, ``unreadable``, ``changed`` (final log of another configuration) or the log's status."""
    if not path.exists():
        return "missing"
    try:
        run = load_run(path)
    except InputError:
        return "unreadable"
    if run.status in FINAL_STATUSES and not config.matches(run.attrs):
        return "changed"
    return run.status


def command(config: Config, out: Path, data_dir: str | None, launcher: str | None) -> list[str]:
    run = [sys.executable, "-m", "ef21_mpi", "run", *config.run_args(out, data_dir)]
    if launcher is None:
        return run + ["--backend", "serial"]
    prefix = shlex.split(launcher.format(**{"n": config.workers, "n+1": config.workers + 1}))
    return prefix + run + ["--backend", "mpi"]


EXIT_STATUS = {0: FINAL_STATUSES[:2], 3: ("diverged",)}  # exit code of `ef21-mpi run` -> the log statuses it means


def _outcome(config: Config, out: Path, code: int, seconds: float, message: str) -> Result:
    """How a run ended, from its exit code and its log: both must say the same final status."""
    if code not in EXIT_STATUS:
        status = "interrupted" if code in (130, 143) else "failed"
        return Result(config, status, seconds, message or f"exit code {code}")
    try:
        run = load_run(out)
    except InputError:
        return Result(config, "failed", seconds, message or f"exit code {code}, no log written")
    if run.status not in EXIT_STATUS[code]:
        return Result(config, "failed", seconds, f"exit code {code} but the log says {run.status}")
    rounds_done = int(run.attrs.get("rounds_done", run.round[-1] if run.rows else 0))
    last = float(run.grad_norm_sq[-1]) if run.rows else None
    return Result(config, run.status, seconds, "", rounds_done, last)


def run_here(config: Config, out_dir: Path, data_dir: str | None = None) -> Result:
    """Run one configuration in this process (serial backend): what a pool worker of `run_sweep` does.

    The same run as the subprocess of `run_config`, through the same session, without starting Python and
    parsing the data set again for every configuration (`runtime.datacache` keeps the parsed files).
    """
    from ef21_mpi.runtime.session import run

    out = out_dir / config.name
    started = time.monotonic()
    cfg = replace(config.run_config(out, data_dir), backend="serial")
    try:
        code = run(cfg)
        message = ""
    except InputError as err:
        code, message = 2, str(err)
    except KeyboardInterrupt:
        code, message = 130, "interrupted"
    except Exception as err:  # noqa: BLE001 -- one failed configuration is a result of the sweep, not its end
        code, message = 1, f"{type(err).__name__}: {err}"
    return _outcome(config, out, code, time.monotonic() - started, message)


def run_config(config: Config, out_dir: Path, data_dir: str | None = None, launcher: str | None = None) -> Result:
    """Run one configuration to the end and report how it ended.

    The child's exit status decides: only a run that exited 0 (or 3, diverged) and left a log with the
    matching final status counts as done; a refused run (bad input, a log locked by another job) is failed
    whatever log is on disk.
    """
    out = out_dir / config.name
    started = time.monotonic()
    try:
        proc = subprocess.run(command(config, out, data_dir, launcher), capture_output=True, text=True,
                              check=False, errors="replace")
    except OSError as err:
        return Result(config, "failed", time.monotonic() - started, f"cannot start the run ({err.strerror})")
    seconds = time.monotonic() - started
    message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    return _outcome(config, out, proc.returncode, seconds, message)


def check_launcher(launcher: str) -> list[str]:
    """A launcher template must parse, use only {n} and {n+1}, and name a program that exists."""
    try:
        prefix = shlex.split(launcher.format(**{"n": 1, "n+1": 2}))
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(f"--launcher {launcher!r}: expected a command using only {{n}} and {{n+1}} ({err})") from None
    if not prefix:
        raise InputError("--launcher is empty; give a command such as 'mpiexec -n {n+1}'")
    if shutil.which(prefix[0]) is None:
        raise InputError(f"--launcher {launcher!r}: program {prefix[0]!r} not found")
    return prefix


def describe(result: Result) -> str:
    if result.status.startswith("skipped:"):
        return f"{result.config.name}: skipped, log exists ({result.status.split(':', 1)[1]})"
    text = f"{result.config.name}: {result.status} in {result.seconds:.1f} s"
    if result.rounds_done is not None:
        text += f", {result.rounds_done} rounds"
    if result.grad_norm_sq is not None:
        text += f", grad_norm_sq {result.grad_norm_sq:.3e}"
    if result.status in ("failed", "interrupted") and result.message:
        text += f" -- {result.message}"
    return text


def run_sweep(configs: list[Config], out_dir: Path, *, jobs: int | None = None, data_dir: str | None = None,
              launcher: str | None = None, out=None, pool: bool = False) -> list[Result]:
    """Run every configuration without a final log (``jobs`` at a time); print a line per run.

    Each run is its own ``ef21-mpi run`` process, or, with ``pool``, a call of `run_here` in one of ``jobs``
    long-lived worker processes (no launcher then): the same logs, without a Python start-up and a parse of
    the data set per run.
    """
    out = out or sys.stdout
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    results: list[Result] = []
    todo: list[Config] = []
    for config in configs:
        state = log_state(out_dir / config.name, config)
        if state in FINAL_STATUSES:
            results.append(Result(config, f"skipped:{state}"))
        else:
            todo.append(config)
    total = len(configs)
    print(f"sweep: {total} configurations in {out_dir}: {len(results)} done already, {len(todo)} to run, "
          f"{jobs} at a time", file=out, flush=True)
    for i, result in enumerate(results, 1):
        print(f"[{i}/{total}] {describe(result)}", file=out, flush=True)
    started = time.monotonic()
    if pool:
        executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
        futures = [executor.submit(run_here, c, out_dir, data_dir) for c in todo]
    else:
        executor = ThreadPoolExecutor(max_workers=jobs)
        futures = [executor.submit(run_config, c, out_dir, data_dir, launcher) for c in todo]
    try:
        configs_of = dict(zip(futures, todo, strict=True))
        for future in as_completed(futures):
            try:
                results.append(future.result())
            except BrokenProcessPool:  # a pool worker was killed (signal, out of memory): its runs failed
                results.append(Result(configs_of[future], "failed", 0.0, "the pool's worker process died "
                                      "(killed, or out of memory); run the sweep again to resume"))
            elapsed = time.monotonic() - started
            print(f"[{len(results)}/{total}] {describe(results[-1])}  (sweep {elapsed:.0f} s)", file=out, flush=True)
    except KeyboardInterrupt:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()
    counts = Counter("skipped" if r.status.startswith("skipped:") else r.status for r in results)
    print(f"sweep: finished in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{counts[s]} {s}" for s in sorted(counts)), file=out, flush=True)
    order = {c: i for i, c in enumerate(configs)}
    return sorted(results, key=lambda r: order[r.config])
