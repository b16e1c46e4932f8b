"""Part 5 of ``ef21-mpi bench``: the cost of a round as the number of simulated workers grows.

The same data split n ways (a9a with n = 20, 200, 1000, 10000, and n = 1000 on a synthetic d = 10^5 file),
EF21 Top-1 on the serial backend, rounds logged every ``--sparse-log-every``: the compute floor does not
depend on n, so the ratio to n = 20 is what the batched worker steps cost on top. In the same repeats, the
serial backend with the first n against the *compute floor* (``A x + A^T s`` over the whole data set, as
part 1 measures it), once with every round logged and once logged every ``--sparse-log-every``. Repeats are
interleaved; the table shows medians. The peak memory of a whole ``ef21-mpi run`` with the largest n is that
process's own high-water mark (``VmHWM``: a child forked from this large process would otherwise be charged
with the bench's own pages).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKER_COUNTS = (20, 200, 1000, 10000)
SYNTH_WORKERS = 1000
SYNTH_DIM = 10**5
RATIO_TARGETS = {1000: 1.5, 10000: 3.0}  # per-round time over the first n's, on the main data set
FLOOR_TARGETS = {"log1": 1.3, "sparse": 1.15}  # the first n's per-round time over the compute floor
PEAK_MARK = "ef21-bench-peak-kB"
#: The other compressors and the minibatch method at the same worker counts: ``(label, RunConfig options)``. Their
#: remaining per-worker cost is the draws from each worker's own generator.
VARIANTS = (("EF21 Rand-1", {"compressor": "rand-k", "k": 1}),
            ("EF21 natural", {"compressor": "natural"}),
            ("EF21 dithering s=4", {"compressor": "dithering", "levels": 4}),
            ("EF21-SGD Top-1, tau=2", {"algorithm": "ef21-sgd", "compressor": "top-k", "k": 1, "batch_size": 2}))


#: What the child runs: ``ef21-mpi`` itself (``python -m ef21_mpi``), then a line with its own peak memory in kB
#: (``VmHWM``; ``ru_maxrss`` where there is no /proc).
PEAK_CHILD = f"""
import resource, runpy, sys
try:
    runpy.run_module("ef21_mpi", run_name="__main__", alter_sys=True)
finally:
    try:
        peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("{PEAK_MARK}", peak, file=sys.stderr)
"""


def peak_rss_mb(dataset: str, n: int, rounds: int, log_every: int, data_dir: str | None, out: Path) -> float:
    """Peak resident memory of one ``ef21-mpi run`` process (start-up included), in MB, as it reports it itself."""
    cmd = [sys.executable, "-c", PEAK_CHILD, "run", "--dataset", dataset, "--workers", str(n), "--rounds", str(rounds),
           "--log-every", str(log_every), "--out", str(out), "--overwrite", "--quiet", "--backend", "serial"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)
    marks = [line.split()[1] for line in done.stderr.splitlines() if line.startswith(PEAK_MARK)]
    return int(marks[-1]) / 1024


class CpuClock:
    """A loop observer noting this process's CPU time at every logged row (the log has only wall time)."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float]] = []

    def on_row(self, row, loop) -> None:
        self.marks.append((row.t, time.process_time()))

    def after_round(self, t, loop, cluster) -> None:
        pass

    def on_end(self, outcome, loop) -> None:
        pass

    def round_seconds(self) -> float:
        """Median CPU seconds per round between logged rows (as the wall figure is taken from the log)."""
        t, cpu = np.array(self.marks).T
        return float(np.median(np.diff(cpu) / np.diff(t)))


def _round_seconds(serial_run, run_config, dataset: str, out: Path, n: int, rounds: int, log_every: int,
                   data_dir: str | None) -> tuple[float, float]:
    """``(wall, CPU)`` seconds per round: medians over the steps between logged rows."""
    from ef21_mpi.runtime.session import Hooks

    clock = CpuClock()
    figures = serial_run(run_config(dataset, out, rounds, log_every, 1, workers=n, data_dir=data_dir),
                         hooks=Hooks(observers=[clock]))
    return figures["round_seconds"], clock.round_seconds()


def _variant_seconds(serial_run, run_config, opts, options: dict, n: int, out: Path) -> float:
    """Per-round wall seconds of one variant (EF21 unless it says otherwise) on the main data set."""
    from dataclasses import replace

    cfg = run_config(opts.dataset, out, opts.variant_rounds, max(1, opts.variant_rounds // 3), 1, workers=n,
                     data_dir=opts.data_dir)
    return serial_run(replace(cfg, **options))["round_seconds"]


def part_variants(opts, workdir: Path, serial_run, run_config) -> list[dict]:
    """Each `VARIANTS` entry at every worker count, medians of interleaved repeats, with its ratio to the first n."""
    counts = list(opts.worker_counts)
    seconds: dict[tuple[str, int], list[float]] = {(label, n): [] for label, _ in VARIANTS for n in counts}
    for repeat in range(opts.repeats):
        for label, options in VARIANTS:
            for n in counts:
                out = workdir / f"variant-{options.get('algorithm', 'ef21')}-{options['compressor']}-{n}.h5"
                seconds[label, n].append(_variant_seconds(serial_run, run_config, opts, options, n, out))
        print(f"  variants, repeat {repeat + 1}: " + "; ".join(
            f"{label} " + " ".join(f"{1e3 * seconds[label, n][-1]:.2f}" for n in counts) for label, _ in VARIANTS)
              + " ms", file=sys.stderr)
    rows = []
    for label, _ in VARIANTS:
        base = float(np.median(seconds[label, counts[0]]))
        for n in counts:
            median = float(np.median(seconds[label, n]))
            rows.append({"variant": label, "n": n, "round": median, "ratio": median / base,
                         "spread": [min(seconds[label, n]), max(seconds[label, n])]})
    return rows


def part_workers(opts, workdir: Path, serial_run, run_config, compute_floor) -> dict:
    """Per-round seconds for each n (medians of interleaved repeats), their ratio to the first n on that data, and
    the first n's against the compute floor (every round logged, and logged every ``--sparse-log-every``)."""
    from ef21_mpi.core import synth
    from ef21_mpi.core.datasets import load

    counts = list(opts.worker_counts)
    rounds, log_every = opts.worker_rounds, opts.sparse_log_every
    cases = [(opts.dataset, n, opts.data_dir) for n in counts]
    if opts.synth_workers:
        path = workdir / f"synth-r{opts.scale_rows}-d{opts.synth_dim}-z{opts.scale_nnz}-n{opts.synth_workers}.svm"
        if not path.exists():
            synth.write(synth.generate(opts.scale_rows, opts.synth_dim, opts.scale_nnz, opts.synth_workers, seed=0),
                        path)
        cases += [(str(path), counts[0], None), (str(path), opts.synth_workers, None)]
    A = load(opts.dataset, opts.data_dir).A
    seconds: dict[tuple[str, int], list[float]] = {(ds, n): [] for ds, n, _ in cases}
    cpu: dict[tuple[str, int], list[float]] = {(ds, n): [] for ds, n, _ in cases}
    floors = []
    for repeat in range(opts.repeats):
        floor = compute_floor(A, opts.floor_reps)
        every, every_cpu = _round_seconds(serial_run, run_config, opts.dataset, workdir / "workers-log1.h5", counts[0],
                                          rounds, 1, opts.data_dir)
        for ds, n, data_dir in cases:
            out = workdir / f"workers-{Path(ds).stem}-{n}.h5"
            wall, used = _round_seconds(serial_run, run_config, ds, out, n, rounds, log_every, data_dir)
            seconds[ds, n].append(wall)
            cpu[ds, n].append(used)
        sparse, sparse_cpu = seconds[opts.dataset, counts[0]][-1], cpu[opts.dataset, counts[0]][-1]
        floors.append({"floor": floor, "log1": every, "sparse": sparse, "log1_cpu": every_cpu, "sparse_cpu": sparse_cpu})
        print(f"  repeat {repeat + 1}: floor {1e3 * floor:.3f} ms, n={counts[0]} every round logged "
              f"{1e3 * every:.3f} ms; " + ", ".join(f"n={n} {1e3 * seconds[ds, n][-1]:.2f} ms" for ds, n, _ in cases),
              file=sys.stderr)
    rows = []
    for ds, n, _ in cases:
        base, base_cpu = float(np.median(seconds[ds, counts[0]])), float(np.median(cpu[ds, counts[0]]))
        median, median_cpu = float(np.median(seconds[ds, n])), float(np.median(cpu[ds, n]))
        target = RATIO_TARGETS.get(n) if ds == opts.dataset else None
        rows.append({"dataset": Path(ds).name, "n": n, "round": median, "ratio": median / base, "target": target,
                     "spread": [min(seconds[ds, n]), max(seconds[ds, n])], "round_cpu": median_cpu,
                     "ratio_cpu": median_cpu / base_cpu})
    floor_figures = {key: float(np.median([f[key] for f in floors]))
                     for key in ("floor", "log1", "sparse", "log1_cpu", "sparse_cpu")}
    for key in ("log1", "sparse", "log1_cpu", "sparse_cpu"):
        floor_figures[f"{key}_over_floor"] = float(np.median([f[key] / f["floor"] for f in floors]))
    variants = part_variants(opts, workdir, serial_run, run_config) if opts.variant_rounds else []
    load_after = os.getloadavg()
    started = time.perf_counter()
    peak = peak_rss_mb(opts.dataset, max(counts), log_every, log_every, opts.data_dir, workdir / "workers-peak.h5")
    return {"rows": rows, "variants": variants, "variant_rounds": opts.variant_rounds, "rounds": rounds,
            "log_every": log_every, "repeats": opts.repeats, "floor": floor_figures,
            "floor_n": counts[0], "peak_rss_mb": peak, "peak_n": max(counts), "peak_run_s": time.perf_counter() - started,
            "load_average_after": load_after}


def _verdict(value: float, target: float | None) -> tuple[str, str]:
    if target is None:
        return "", ""
    return f"<= {target:g}x", "MET" if value <= target else "NOT MET"


def format_workers(result: dict) -> list[str]:
    n0 = result["rows"][0]["n"]
    lines = ["", (f"[5] worker count: EF21 Top-1, serial backend, {result['rounds']} rounds logged every "
                  f"{result['log_every']}; ratio to n = {n0} on the same data; medians of {result['repeats']} "
                  f"interleaved repeats")]
    lines.append("    (wall: from the log's wall_time; CPU: this process's CPU time over the same steps, which a loaded "
                 "machine disturbs less)")
    lines.append(f"    {'data set':<36} {'n':>6}  {'ms/round':>9}  {'ratio':>6}  {'target':>7}  {'verdict':>7}  "
                 f"{'spread (ms)':>15}  {'CPU ms':>8}  {'ratio':>6}")
    for r in result["rows"]:
        lo, hi = r["spread"]
        target, verdict = _verdict(r["ratio"], r.get("target"))
        lines.append(f"    {r['dataset']:<36} {r['n']:>6}  {1e3 * r['round']:>9.3f}  {r['ratio']:>5.2f}x  {target:>7}  "
                     f"{verdict:>7}  {f'{1e3 * lo:.3f}-{1e3 * hi:.3f}':>15}  {1e3 * r['round_cpu']:>8.3f}  "
                     f"{r['ratio_cpu']:>5.2f}x")
    f = result["floor"]
    lines.append(f"    compute floor (A x + A^T s, the whole data set as one CSR): {1e3 * f['floor']:.3f} ms")
    for key, label in (("log1", "every round logged"), ("sparse", f"--log-every {result['log_every']}")):
        target, verdict = _verdict(f[f"{key}_over_floor"], FLOOR_TARGETS[key])
        lines.append(f"    serial n = {result['floor_n']}, {label}: {1e3 * f[key]:.3f} ms = "
                     f"{f[f'{key}_over_floor']:.2f}x floor (target {target}): {verdict}; CPU {1e3 * f[f'{key}_cpu']:.3f} ms "
                     f"= {f[f'{key}_cpu_over_floor']:.2f}x floor")
    if result.get("variants"):
        counts, rounds = sorted({r["n"] for r in result["variants"]}), result["variant_rounds"]
        lines.append(f"    other compressors and EF21-SGD on {result['rows'][0]['dataset']}, {rounds} rounds logged "
                     f"every {max(1, rounds // 3)}: ms/round (ratio to n = {counts[0]}); what remains per worker is "
                     "the draws from its own generator")
        lines.append(f"    {'':<24}" + "".join(f"{f'n = {n}':>20}" for n in counts))
        for label in dict.fromkeys(r["variant"] for r in result["variants"]):
            cells = [f"{1e3 * r['round']:.3f} ({r['ratio']:.1f}x)" for r in result["variants"] if r["variant"] == label]
            lines.append(f"    {label:<24}" + "".join(f"{c:>20}" for c in cells))
    lines.append(f"    peak RSS of one whole run with n = {result['peak_n']}: {result['peak_rss_mb']:.0f} MB "
                 f"(its own high-water mark, start-up included)")
    load = " ".join(f"{v:.1f}" for v in result["load_average_after"])
    lines.append(f"    load average at the end of part 5: {load}")
    return lines


def add_worker_arguments(p) -> None:
    p.add_argument("--worker-counts", default=",".join(str(n) for n in WORKER_COUNTS),
                   help="numbers of workers of part 5 (default 20,200,1000,10000)")
    p.add_argument("--worker-rounds", type=int, default=300, help="rounds per part-5 run (default 300)")
    p.add_argument("--synth-workers", type=int, default=SYNTH_WORKERS,
                   help="part 5 also runs this many workers on a synthetic d = --synth-dim file (default 1000; 0: skip)")
    p.add_argument("--synth-dim", type=int, default=SYNTH_DIM, help="d of that synthetic file (default 1e5)")
    p.add_argument("--variant-rounds", type=int, default=60,
                   help="rounds of part 5's other compressors and EF21-SGD at every worker count (default 60; 0: skip)")


def quick_workers(opts) -> None:
    opts.worker_counts, opts.worker_rounds, opts.synth_workers, opts.synth_dim = "2,4,8", 12, 4, 300
    opts.variant_rounds = 6


def parse_worker_counts(opts) -> None:
    from ef21_mpi.errors import InputError

    try:
        opts.worker_counts = [int(n) for n in str(opts.worker_counts).split(",") if n]
    except ValueError:
        raise InputError(f"--worker-counts {opts.worker_counts}: expected a comma list of integers") from None
    if not opts.worker_counts or min(opts.worker_counts) < 1:
        raise InputError(f"--worker-counts {opts.worker_counts}: expected positive integers")
