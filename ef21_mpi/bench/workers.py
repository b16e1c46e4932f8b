"""Part 5 of ``ef21-mpi bench``: the cost of a round as the number of simulated workers grows.

The same data split n ways (a9a with n = 20, 200, 1000, 10000, and n = 1000 on a synthetic d = 10^5 file),
EF21 Top-1 on the serial backend, rounds logged every ``--sparse-log-every``: the compute floor does not
depend on n, so the ratio to n = 20 is what the batched worker steps cost on top. Repeats are interleaved
over n. The peak memory of a whole ``ef21-mpi run`` with the largest n is its process's maximum RSS.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKER_COUNTS = (20, 200, 1000, 10000)
SYNTH_WORKERS = 1000
SYNTH_DIM = 10**5


def _round_seconds(serial_run, run_config, dataset: str, out: Path, n: int, rounds: int, log_every: int,
                   data_dir: str | None) -> float:
    return serial_run(run_config(dataset, out, rounds, log_every, 1, workers=n, data_dir=data_dir))["round_seconds"]


def peak_rss_mb(dataset: str, n: int, rounds: int, log_every: int, data_dir: str | None, out: Path) -> float:
    """Maximum resident memory of one ``ef21-mpi run`` process (start-up included), in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = [sys.executable, "-m", "ef21_mpi", "run", "--dataset", dataset, "--workers", str(n), "--rounds", str(rounds),
           "--log-every", str(log_every), "--out", str(out), "--overwrite", "--quiet", "--backend", "serial"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    subprocess.run(cmd, check=True, capture_output=True, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024  # ru_maxrss is in kB; the largest child so far


def part_workers(opts, workdir: Path, serial_run, run_config) -> dict:
    """Per-round seconds for each n (medians of interleaved repeats) and their ratio to the first n on that data."""
    from ef21_mpi.core import synth

    counts = list(opts.worker_counts)
    rounds, log_every = opts.worker_rounds, opts.sparse_log_every
    cases = [(opts.dataset, n, opts.data_dir) for n in counts]
    if opts.synth_workers:
        path = workdir / f"synth-r{opts.scale_rows}-d{opts.synth_dim}-z{opts.scale_nnz}-n{opts.synth_workers}.svm"
        if not path.exists():
            synth.write(synth.generate(opts.scale_rows, opts.synth_dim, opts.scale_nnz, opts.synth_workers, seed=0),
                        path)
        cases += [(str(path), counts[0], None), (str(path), opts.synth_workers, None)]
    seconds: dict[tuple[str, int], list[float]] = {(ds, n): [] for ds, n, _ in cases}
    for repeat in range(opts.repeats):
        for ds, n, data_dir in cases:
            out = workdir / f"workers-{Path(ds).stem}-{n}.h5"
            seconds[ds, n].append(_round_seconds(serial_run, run_config, ds, out, n, rounds, log_every, data_dir))
        print(f"  repeat {repeat + 1}: " + ", ".join(f"n={n} {1e3 * seconds[ds, n][-1]:.2f} ms"
                                                  for ds, n, _ in cases), file=sys.stderr)
    rows = []
    for ds, n, _ in cases:
        base = float(np.median(seconds[ds, counts[0]]))
        median = float(np.median(seconds[ds, n]))
        rows.append({"dataset": Path(ds).name, "n": n, "round": median, "ratio": median / base,
                     "spread": [min(seconds[ds, n]), max(seconds[ds, n])]})
    started = time.perf_counter()
    peak = peak_rss_mb(opts.dataset, max(counts), log_every, log_every, opts.data_dir, workdir / "workers-peak.h5")
    return {"rows": rows, "rounds": rounds, "log_every": log_every, "peak_rss_mb": peak, "peak_n": max(counts),
            "peak_run_s": time.perf_counter() - started}


def format_workers(result: dict) -> list[str]:
    lines = ["", (f"[5] worker count: EF21 Top-1, serial backend, {result['rounds']} rounds logged every "
                  f"{result['log_every']}; ratio to n = {result['rows'][0]['n']} on the same data")]
    lines.append(f"    {'data set':<36} {'n':>6}  {'ms/round':>9}  {'ratio':>6}  spread (ms)")
    for r in result["rows"]:
        lo, hi = r["spread"]
        lines.append(f"    {r['dataset']:<36} {r['n']:>6}  {1e3 * r['round']:>9.3f}  {r['ratio']:>5.2f}x  "
                     f"{1e3 * lo:.3f}-{1e3 * hi:.3f}")
    lines.append(f"    peak RSS of one whole run with n = {result['peak_n']}: {result['peak_rss_mb']:.0f} MB "
                 f"(start-up included)")
    return lines


def add_worker_arguments(p) -> None:
    p.add_argument("--worker-counts", default=",".join(str(n) for n in WORKER_COUNTS),
                   help="numbers of workers of part 5 (default 20,200,1000,10000)")
    p.add_argument("--worker-rounds", type=int, default=300, help="rounds per part-5 run (default 300)")
    p.add_argument("--synth-workers", type=int, default=SYNTH_WORKERS,
                   help="part 5 also runs this many workers on a synthetic d = --synth-dim file (default 1000; 0: skip)")
    p.add_argument("--synth-dim", type=int, default=SYNTH_DIM, help="d of that synthetic file (default 1e5)")


def quick_workers(opts) -> None:
    opts.worker_counts, opts.worker_rounds, opts.synth_workers, opts.synth_dim = "2,4,8", 12, 4, 300


def parse_worker_counts(opts) -> None:
    from ef21_mpi.errors import InputError

    try:
        opts.worker_counts = [int(n) for n in str(opts.worker_counts).split(",") if n]
    except ValueError:
        raise InputError(f"--worker-counts {opts.worker_counts}: expected a comma list of integers") from None
    if not opts.worker_counts or min(opts.worker_counts) < 1:
        raise InputError(f"--worker-counts {opts.worker_counts}: expected positive integers")
