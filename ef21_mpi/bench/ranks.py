"""Bench parts ``ranks`` and ``startup``: many ranks on a small machine against one process, under each MPI
library at hand, and start-up from a prepared shard store against start-up from LibSVM text.

Every figure comes from the real command (``python -m ef21_mpi run`` in a subprocess, under ``mpiexec`` for
MPI), repeats are interleaved (serial, MPI ``-n R`` with the default placement, ``-n R --placement spread``,
for each library in turn) and each ratio divides medians taken in this one invocation. ms per round is read
from the run log (`round_seconds`: median over the logged intervals of wall time per round).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT_VARS = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def library_of(mpiexec: str) -> str:
    """"MPICH" or "Open MPI" (or "unknown"), from ``mpiexec --version``."""
    try:
        text = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if "Open MPI" in text or "OpenRTE" in text:
        return "Open MPI"
    return "MPICH" if "HYDRA" in text or "MPICH" in text else "unknown"


def launchers(opts) -> list[tuple[str, str, str]]:
    """(library, python, mpiexec) for the default launcher and, if given, the Open MPI environment's python."""
    found = [(library_of(opts.mpiexec), sys.executable, opts.mpiexec)]
    if opts.openmpi_python:
        mpiexec = str(Path(opts.openmpi_python).with_name("mpiexec"))
        found.append((library_of(mpiexec), opts.openmpi_python, mpiexec))
    return found


def command(python: str, mpiexec: str | None, library: str, ranks: int, args: list[str]) -> tuple[list[str], dict]:
    cmd = [python, "-m", "ef21_mpi", "run", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    if mpiexec is not None:
        extra = ["--oversubscribe"] if library == "Open MPI" else []
        cmd = [mpiexec, *extra, "-n", str(ranks), *cmd]
        if library == "Open MPI" and os.geteuid() == 0:
            env.update(ROOT_VARS)
    return cmd, env


def timed(cmd: list[str], env: dict, timeout: float) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}: {done.stderr.strip()[-1500:]}")
    return time.perf_counter() - started


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def round_seconds(path: Path) -> float:
    """Median over the logged intervals of wall time per round."""
    import numpy as np

    from ef21_mpi.runtime import logschema

    log = logschema.read_log(path, need=("wall_time",))
    return float(np.median(np.diff(log["wall_time"]) / np.diff(log["round"])))


def part_ranks(opts, workdir: Path) -> dict:
    """ms per round: serial backend, ``mpiexec -n R`` (default placement) and ``--placement spread`` per library."""
    n = opts.ranks - 1
    base = ["--dataset", opts.dataset, "--algorithm", "ef21", "--k", "1", "--rounds", str(opts.mpi_rounds),
            "--log-every", str(opts.sparse_log_every), "--quiet", "--overwrite"]
    if opts.data_dir:
        base += ["--data-dir", opts.data_dir]
    cases = [("serial", sys.executable, None, "", ["--backend", "serial", "--workers", str(n)])]
    for library, python, mpiexec in launchers(opts):
        cases.append((f"{library} -n {opts.ranks}", python, mpiexec, library, []))
        cases.append((f"{library} -n {opts.ranks} spread", python, mpiexec, library, ["--placement", "spread"]))
    seconds: dict[str, list[float]] = {name: [] for name, *_ in cases}
    for repeat in range(opts.repeats):
        for name, python, mpiexec, library, extra in cases:
            out = workdir / f"ranks-{repeat}-{len(seconds[name])}.h5"
            cmd, env = command(python, mpiexec, library, opts.ranks, [*base, *extra, "--out", str(out)])
            timed(cmd, env, opts.timeout)
            seconds[name].append(round_seconds(out))
            out.unlink()
    serial = statistics.median(seconds["serial"])
    return {"load": os.getloadavg(), "rounds": opts.mpi_rounds, "ranks": opts.ranks,
            "rows": {name: {**spread(v), "ratio": statistics.median(v) / serial} for name, v in seconds.items()}}


def part_startup(opts, workdir: Path) -> dict:
    """Seconds to a run's end with ``--rounds 0`` (start-up, one flush, finish) from LibSVM text and from a store."""
    from ef21_mpi.core import synth
    from ef21_mpi.runtime import store

    n = opts.ranks - 1
    text = workdir / f"startup-{opts.startup_rows}x{opts.startup_dim}.svm"
    if not text.exists():
        synth.write(synth.generate(opts.startup_rows, opts.startup_dim, opts.scale_nnz, n, 0), text)
    prepared = workdir / "startup-store.h5"
    started = time.perf_counter()
    store.prepare(str(text), None, n, "logreg", prepared)
    prepare_s = time.perf_counter() - started
    library, python, mpiexec = launchers(opts)[0]
    seconds: dict[str, list[float]] = {"text": [], "store": []}
    for repeat in range(opts.repeats):
        for name, dataset in (("text", text), ("store", prepared)):
            out = workdir / f"startup-{name}-{repeat}.h5"
            cmd, env = command(python, mpiexec, library, opts.ranks, ["--dataset", str(dataset), "--rounds", "0",
                                                                      "--quiet", "--overwrite", "--out", str(out)])
            seconds[name].append(timed(cmd, env, opts.timeout))
    return {"rows": opts.startup_rows, "dim": opts.startup_dim, "ranks": opts.ranks, "library": library,
            "prepare_s": prepare_s, "text": spread(seconds["text"]), "store": spread(seconds["store"]),
            "speedup": statistics.median(seconds["text"]) / statistics.median(seconds["store"]), "load": os.getloadavg()}


def format_ranks(result: dict) -> str:
    lines = []
    if "ranks" in result:
        r = result["ranks"]
        lines += [(f"\n### {r['ranks']} ranks against one process (EF21 Top-1, {r['rounds']} rounds; load "
                  f"{', '.join(f'{v:.1f}' for v in r['load'])})"), "", "| how | ms / round (median, min-max) | x serial |",
                  "|---|---|---|"]
        for name, row in r["rows"].items():
            lines.append(f"| {name} | {1e3 * row['median']:.2f} ({1e3 * row['min']:.2f}-{1e3 * row['max']:.2f}) | "
                         f"{row['ratio']:.2f}x |")
    if "startup" in result:
        s = result["startup"]
        lines += [(f"\n### start-up, {s['rows']} rows, d = {s['dim']}, {s['ranks']} ranks ({s['library']}; prepare "
                  f"took {s['prepare_s']:.1f} s once)"), "", "| from | seconds (median, min-max) |", "|---|---|"]
        for name in ("text", "store"):
            lines.append(f"| {name} | {s[name]['median']:.1f} ({s[name]['min']:.1f}-{s[name]['max']:.1f}) |")
        lines.append(f"\nstore is {s['speedup']:.1f}x faster")
    return "\n".join(lines)
