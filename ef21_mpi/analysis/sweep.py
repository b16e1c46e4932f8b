"""Sweeps: a grid of configurations, run one log each, resumable (``ef21-mpi sweep`` is its command line).

Each configuration is one ``ef21-mpi run`` in a subprocess (serial backend, or under a launcher such as
``mpiexec -n {n+1}``) writing a log with a predictable name, so a sweep that is stopped and started again
skips every configuration whose log already holds a final status and reruns the others.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ef21_mpi.analysis.results import BITS_PER_COORDINATE, load_run, method_facts
from ef21_mpi.core.datasets import REGISTRY
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import RunConfig, validate_values
from ef21_mpi.runtime.logschema import FINAL_STATUSES

GRID_KEYS = ("datasets", "algorithms", "multipliers", "k", "rounds", "tol", "bits_budget", "log_every", "workers")
DEFAULTS = {"algorithms": ["ef", "ef21", "ef21-plus"], "multipliers": [1.0], "k": [1], "tol": 0.0,
            "log_every": 1, "workers": 20}


@dataclass(frozen=True)
class Config:
    """One run of the grid: what ``ef21-mpi run`` is told, and the name of its log."""

    dataset: str
    algorithm: str
    k: int | None  # None: the data set's d (GD on an unregistered file)
    multiplier: float
    rounds: int
    tol: float = 0.0
    log_every: int = 1
    workers: int = 20
    compressor: str = "top-k"

    @property
    def name(self) -> str:
        """``a9a__ef21__top-1__x4.h5``; GD, which ignores k, is ``a9a__gd__x4.h5``."""
        stem = Path(self.dataset).name.split(".")[0] if self.dataset not in REGISTRY else self.dataset
        parts = [stem, self.algorithm]
        if method_facts(self.algorithm).compresses:
            parts.append(f"{self.compressor[:-2]}-{self.k}")
        short = f"{self.multiplier:g}"
        parts.append(f"x{short if float(short) == self.multiplier else repr(float(self.multiplier))}")
        return "__".join(parts) + ".h5"

    def run_args(self, out: Path, data_dir: str | None) -> list[str]:
        """Arguments of ``ef21-mpi run`` (after ``run``), without the backend."""
        args = ["--dataset", self.dataset, "--algorithm", self.algorithm, "--stepsize-multiplier",
                repr(float(self.multiplier)), "--rounds", str(self.rounds), "--tol", repr(float(self.tol)),
                "--log-every", str(self.log_every), "--out", str(out), "--overwrite", "--quiet"]
        if method_facts(self.algorithm).compresses:
            args += ["--compressor", self.compressor, "--k", str(self.k)]
        if data_dir:
            args += ["--data-dir", str(data_dir)]
        return args

    def run_config(self, out: Path, data_dir: str | None = None) -> RunConfig:
        """The run this configuration is, as ``ef21-mpi run`` reads `run_args` (GD keeps the default compressor)."""
        compressed = {"compressor": self.compressor, "k": self.k} if method_facts(self.algorithm).compresses else {}
        return RunConfig(dataset=self.dataset, out=str(out), algorithm=self.algorithm,
                         stepsize_multiplier=float(self.multiplier), rounds=self.rounds, tol=float(self.tol),
                         log_every=self.log_every, workers=self.workers, data_dir=data_dir, overwrite=True,
                         quiet=True, **compressed)

    def matches(self, attrs: dict) -> bool:
        """Does an existing log's configuration equal this one in everything the file name does not show?"""
        return (int(attrs.get("rounds_requested", -1)) == self.rounds
                and math.isclose(float(attrs.get("tol", -1.0)), self.tol, rel_tol=1e-12, abs_tol=0.0)
                and int(attrs.get("log_every", 1)) == self.log_every
                and int(attrs.get("n_workers", -1)) == self.workers)


def dimension(dataset: str) -> int | None:
    info = REGISTRY.get(dataset)
    return info.d if info else None


def expand_grid(datasets: list[str], algorithms: list[str], multipliers: list[float], ks: list[int],
                rounds: int | None = None, *, tol: float = 0.0, bits_budget: float | None = None,
                log_every: int = 1, workers: int = 20) -> list[Config]:
    """Every (data set, algorithm, k, multiplier), in that nesting order; GD gets one k (= d).

    ``bits_budget`` caps each configuration's rounds so that its messages fit in ``bits_budget`` paper
    bits/n: ``floor(bits_budget / (32 k))`` messages (one of them in round 0 for EF, GD and DCGD, whose
    round 0 is a step); ``rounds`` (if also given) caps it further.
    """
    if rounds is None and bits_budget is None:
        raise InputError("give --rounds, --bits-budget, or both")
    configs: list[Config] = []
    for dataset in datasets:
        d = dimension(dataset)
        for algorithm in algorithms:
            algorithm_ks = list(dict.fromkeys(ks)) if method_facts(algorithm).compresses else [d]
            for k in algorithm_ks:
                for m in dict.fromkeys(float(m) for m in multipliers):
                    configs.append(Config(dataset, algorithm, k, m, _rounds(rounds, bits_budget, algorithm, k),
                                          tol, log_every, workers))
    return configs


def _rounds(rounds: int | None, bits_budget: float | None, algorithm: str, k: int | None) -> int:
    if bits_budget is None or k is None:
        if rounds is None:
            raise InputError("--bits-budget needs the data set's d for GD; give --rounds for unregistered files")
        return rounds
    messages = math.floor(bits_budget / (BITS_PER_COORDINATE * k))
    by_budget = max(1, messages if method_facts(algorithm).initialises else messages - 1)
    return by_budget if rounds is None else min(rounds, by_budget)


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
        return run + ["--backend", "serial", "--workers", str(config.workers)]
    prefix = shlex.split(launcher.format(**{"n": config.workers, "n+1": config.workers + 1}))
    return prefix + run + ["--backend", "mpi"]


EXIT_STATUS = {0: FINAL_STATUSES[:2], 3: ("diverged",)}  # exit code of `ef21-mpi run` -> the log statuses it means


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
    if proc.returncode not in EXIT_STATUS:
        status = "interrupted" if proc.returncode in (130, 143) else "failed"
        return Result(config, status, seconds, message or f"exit code {proc.returncode}")
    try:
        run = load_run(out)
    except InputError:
        return Result(config, "failed", seconds, message or f"exit code {proc.returncode}, no log written")
    if run.status not in EXIT_STATUS[proc.returncode]:
        return Result(config, "failed", seconds, f"exit code {proc.returncode} but the log says {run.status}")
    rounds_done = int(run.attrs.get("rounds_done", run.round[-1] if run.rows else 0))
    last = float(run.grad_norm_sq[-1]) if run.rows else None
    return Result(config, run.status, seconds, "", rounds_done, last)


def check_names(configs: list[Config]) -> None:
    """Every configuration must get its own log: refuse a grid where two of them would share a file name."""
    seen: dict[str, Config] = {}
    for config in configs:
        other = seen.setdefault(config.name, config)
        if other is not config:
            raise InputError(f"two configurations would share the log {config.name}: data sets {other.dataset!r} "
                             f"and {config.dataset!r}, multipliers {other.multiplier!r} and {config.multiplier!r}; "
                             "rename a data file or sweep them in separate --out-dir folders")


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
              launcher: str | None = None, out=None) -> list[Result]:
    """Run every configuration without a final log (``jobs`` at a time); print a line per run."""
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
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(run_config, c, out_dir, data_dir, launcher) for c in todo]
        for future in as_completed(futures):
            results.append(future.result())
            elapsed = time.monotonic() - started
            print(f"[{len(results)}/{total}] {describe(results[-1])}  (sweep {elapsed:.0f} s)", file=out, flush=True)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    counts = Counter("skipped" if r.status.startswith("skipped:") else r.status for r in results)
    print(f"sweep: finished in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{counts[s]} {s}" for s in sorted(counts)), file=out, flush=True)
    order = {c: i for i, c in enumerate(configs)}
    return sorted(results, key=lambda r: order[r.config])


# -- checking a grid ----------------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_grid(grid: dict) -> None:
    """Check a grid once, before anything runs.

    What only a grid has (its data sets, value types from JSON, the bits budget) is checked here; every
    configuration of the grid is then checked as the run it will be, by `runtime.config.validate_values`,
    so algorithm names and value ranges are checked in one place for ``run`` and ``sweep`` alike.
    """
    if not grid.get("datasets"):
        raise InputError("no data sets: give --datasets (or 'datasets' in --grid)")
    for dataset in grid["datasets"]:
        if not isinstance(dataset, str) or not dataset:
            raise InputError(f"data set {dataset!r} must be a non-empty string (a registered name or a file)")
        if dataset not in REGISTRY and not Path(dataset).is_file():
            raise InputError(f"data set {dataset!r} is neither a registered name ({', '.join(REGISTRY)}) nor a file")
    if "ef21-sgd" in grid["algorithms"]:
        raise InputError("sweep does not run ef21-sgd (it needs --batch-size); run it with `ef21-mpi run`")
    for m in grid["multipliers"]:
        if not _is_number(m):
            raise InputError(f"stepsize multiplier {m!r} must be a number")
    for k in grid["k"]:
        if not _is_integer(k):
            raise InputError(f"k {k!r} must be an integer")
    for key in ("rounds", "log_every", "workers"):
        value = grid.get(key)
        if value is not None and not _is_integer(value):
            raise InputError(f"{key} must be an integer, got {value!r}")
    for key in ("tol", "bits_budget"):
        value = grid.get(key)
        if value is not None and not _is_number(value):
            raise InputError(f"{key} must be a number, got {value!r}")
    if grid.get("rounds") is None and grid.get("bits_budget") is None:
        raise InputError("give --rounds N (or --bits-budget B, or 'rounds' in --grid)")
    budget = grid.get("bits_budget")
    if budget is not None and not (math.isfinite(budget) and budget >= 0):
        raise InputError(f"bits_budget must be a non-negative number, got {budget!r}")
    # every configuration as the run it will be (rounds as given: a budget only ever yields rounds >= 1)
    rounds = grid.get("rounds")
    for config in expand_grid(grid["datasets"], grid["algorithms"], grid["multipliers"], grid["k"],
                              1 if rounds is None else rounds, tol=float(grid.get("tol", 0.0)),
                              log_every=grid.get("log_every", 1), workers=grid.get("workers", 20)):
        try:
            validate_values(config.run_config(Path(config.name)))
        except InputError as err:
            raise InputError(f"sweep configuration {config.name}: {err}") from None
    check_names(expand_grid(grid["datasets"], grid["algorithms"], grid["multipliers"], grid["k"], 1))
    for k in grid["k"]:
        for dataset in grid["datasets"]:
            d = dimension(dataset)
            if d is not None and k > d and any(method_facts(a).compresses for a in grid["algorithms"]):
                raise InputError(f"k = {k} exceeds d = {d} of {dataset}")
