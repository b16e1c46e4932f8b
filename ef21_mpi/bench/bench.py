"""``ef21-mpi bench`` (also ``scripts/bench``): time per round against the limits of this machine, in one table.

Everything in the table is measured in one invocation, and every ratio compares figures measured side by
side (the machine is shared and noisy: each in-process figure is measured ``--repeats`` times, interleaved,
and the table shows medians):

1. the serial backend (EF21, Top-1, a9a, 20 workers, through `runtime.session.run`, as
   ``ef21-mpi run`` runs it, in this process) against the
   *compute floor*: one ``A x`` plus one ``A^T s`` over the whole data set held as one CSR matrix;
2. a *naive baseline* written here as a typical research script is: dense shard matrices, a Python loop
   over workers, Top-k by ``np.argsort`` (`ef21_mpi.bench.naive`);
3. the MPI backend under ``mpiexec`` (`ef21_mpi.bench.mpi`) against the *communication floor* measured in
   the same launch (the same ``Bcast``/``Gatherv`` with no computation) plus each rank's own compute;
4. scale: synthetic data (`ef21_mpi.core.synth`) at several ``d``: start-up, time per round, peak memory per
   rank, uplink bits per worker per round, and the live blocks as large as an ``n x d`` array.

The bench asserts nothing about time; it prints. ``--quick`` runs every part at toy sizes (for the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ef21_mpi.bench import ranks, workers
from ef21_mpi.bench.naive import N_WORKERS, dense_floor, median_seconds, naive_ef21, naive_shards
from ef21_mpi.bench.report import format_report, ms
from ef21_mpi.errors import InputError, from_core
from ef21_mpi.runtime.config import RunConfig

PARTS = {"serial", "mpi", "scale", "workers", "ranks", "startup"}  # ranks, startup: bench/ranks.py
DEFAULT_DIMS = (10**3, 10**4, 10**5, 10**6)
BITS_PER_ENTRY = 64 + 32  # a Top-k entry on the wire: float64 value + int32 index


# --- floors and package runs in this process -------------------------------------------------------


def compute_floor(A, reps: int) -> float:
    """Seconds for ``A x`` (CSR) plus ``A^T s`` (CSR of ``A^T``, the form the package keeps) over the whole data set."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    x, s = rng.standard_normal(A.shape[1]) * 0.01, rng.standard_normal(A.shape[0])
    AT = sp.csr_matrix(A.T)
    return median_seconds(lambda: (A @ x, AT @ s), reps)


def read_log(path: Path) -> dict:
    """Seconds per round (median of ``wall_time`` steps over rounds >= 1) and uplink figures from a run log."""
    from ef21_mpi.runtime import logschema

    log = logschema.read_log(path, need=("wall_time", "bits_up", "coords_up", "grad_norm_sq", "x_final"))
    rounds, wall, bits_up, coords_up = log["round"], log["wall_time"], log["bits_up"], log["coords_up"]
    x_final, grad_norm_sq, attrs = log.x_final, log["grad_norm_sq"], log.attrs
    spent = max(int(rounds[-1] - rounds[0]), 1)
    return {
        "round_seconds": float(np.median(np.diff(wall) / np.diff(rounds))) if rounds.size > 1 else None,
        "bits_up_per_worker_round": sorted(set((bits_up[1:].sum(axis=0) / spent).tolist())),
        "coords_up_per_worker_round": sorted(set((coords_up[1:].sum(axis=0) / spent).tolist())),
        "loop_s": float(wall[-1]),
        "gamma": float(attrs.get("gamma", np.nan)),
        "status": str(attrs.get("status", "")),
        "x_final": x_final,
        "grad_norm_sq": grad_norm_sq,
    }


def run_config(dataset: str, out: Path, rounds: int, log_every: int, k: int, workers: int = N_WORKERS,
               data_dir: str | None = None, algorithm: str = "ef21") -> RunConfig:
    """One EF21 Top-k configuration of the bench, on the serial backend."""
    return RunConfig(dataset=dataset, out=str(out), algorithm=algorithm, compressor="top-k", k=k, rounds=rounds,
                     workers=workers, log_every=log_every, data_dir=data_dir, overwrite=True, quiet=True,
                     backend="serial")


def serial_run(cfg: RunConfig, hooks=None) -> dict:
    """One run in this process (the package's real serial engine, as ``ef21-mpi run``); the figures from its log."""
    from ef21_mpi.runtime.session import run

    started = time.perf_counter()
    rc = run(cfg, hooks=hooks)
    total = time.perf_counter() - started
    if rc != 0:
        raise RuntimeError(f"the serial run of {cfg.dataset} into {cfg.out} ended with exit status {rc}")
    return {**read_log(Path(cfg.out)), "total_s": total}


# --- MPI launches ----------------------------------------------------------------------------------


def find_mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else (shutil.which("mpiexec") or "mpiexec")


def launch_mpi(spec: dict, ranks: int, mpiexec: str, timeout: float, workdir: Path) -> dict:
    """Run `ef21_mpi.bench.mpi` under ``mpiexec -n ranks``; the whole job is ended if it outlives ``timeout``."""
    spec_path = workdir / f"mpi-spec-{time.monotonic_ns()}.json"
    spec = {**spec, "workdir": str(workdir), "out": str(spec_path.with_suffix(".out.json"))}
    spec_path.write_text(json.dumps(spec))
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "ef21_mpi.bench.mpi", "--spec",
           str(spec_path)]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        job.terminate()  # hydra forwards SIGTERM to the ranks
        try:
            job.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)  # the session this launch started, and only it
            job.communicate()
        raise RuntimeError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from None
    if job.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {job.returncode}: {stderr.strip()[-2000:]}")
    return json.loads(Path(spec["out"]).read_text())


# --- the machine -----------------------------------------------------------------------------------


def machine() -> dict:
    """CPU model, cores, load and library versions, for the table's header."""
    import scipy

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import mpi4py

        mpi4py_version = mpi4py.__version__
    except ImportError:
        mpi4py_version = "not installed"
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "load_average": os.getloadavg(), "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "mpi4py": mpi4py_version,
            "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"}


# --- the four parts --------------------------------------------------------------------------------


def part_serial_and_naive(opts, workdir: Path) -> dict:
    """Parts 1 and 2: compute floor, serial backend (two log intervals) and the naive baseline, interleaved."""
    from ef21_mpi.core.datasets import load

    ds = load(opts.dataset, opts.data_dir)
    shards = naive_shards(ds.A, ds.y, N_WORKERS)
    rows = []
    for repeat in range(opts.repeats):
        floor = compute_floor(ds.A, opts.floor_reps)
        every = serial_run(run_config(opts.dataset, workdir / "serial-log1.h5", opts.rounds, 1, 1,
                                    data_dir=opts.data_dir))
        sparse = serial_run(run_config(opts.dataset, workdir / "serial-sparse-log.h5", 2 * opts.rounds,
                                     opts.sparse_log_every, 1, data_dir=opts.data_dir))
        _, _, naive_seconds = naive_ef21(shards, 0.1, every["gamma"], opts.naive_rounds, 1)
        rows.append({"floor": floor, "serial_log1": every["round_seconds"], "serial_sparse": sparse["round_seconds"],
                     "naive": float(np.median(naive_seconds)), "dense_floor": dense_floor(shards, opts.floor_reps),
                     "bits": every["bits_up_per_worker_round"], "coords": every["coords_up_per_worker_round"]})
        print(f"  repeat {repeat + 1}: floor {ms(floor)}, serial {ms(every['round_seconds'])} / "
              f"{ms(sparse['round_seconds'])}, naive {ms(rows[-1]['naive'])}", file=sys.stderr)
    out = {key: float(np.median([r[key] for r in rows])) for key in rows[0] if key not in ("bits", "coords")}
    for ratio, (num, den) in {"serial_log1_over_floor": ("serial_log1", "floor"),
                              "serial_sparse_over_floor": ("serial_sparse", "floor"),
                              "naive_over_serial_log1": ("naive", "serial_log1"),
                              "naive_over_serial_sparse": ("naive", "serial_sparse"),
                              "dense_floor_over_floor": ("dense_floor", "floor")}.items():
        out[ratio] = float(np.median([r[num] / r[den] for r in rows]))
    out.update(repeats=len(rows), N=ds.N, d=ds.d, nnz=int(ds.A.nnz), bits=rows[0]["bits"], coords=rows[0]["coords"],
               per_repeat=rows)
    return out


def part_mpi(opts, workdir: Path, d: int) -> dict:
    """Part 3: floor and real runs (every round logged, and every ``--sparse-log-every``), ``--repeats`` pairs.

    Once with one worker per rank (``--ranks``), once with the same workers held in blocks by ``--grouped-ranks``.
    """
    runs = []
    for _ in range(opts.repeats):
        runs.append({"k": 1, "rounds": opts.mpi_rounds, "log_every": 1})
        runs.append({"k": 1, "rounds": 2 * opts.mpi_rounds, "log_every": opts.sparse_log_every})
    spec = {"dataset": opts.dataset, "data_dir": opts.data_dir, "dim": d, "floor_rounds": opts.mpi_rounds,
            "runs": runs, "isolated_repeats": 50}
    report = launch_mpi(spec, opts.ranks, opts.mpiexec, opts.timeout, workdir)
    out = {"library": report["library"], "ranks": report["ranks"], **_summarise_mpi(report)}
    if opts.grouped_ranks:
        print(f"part 3: the same {opts.ranks - 1} workers on {opts.grouped_ranks} ranks", file=sys.stderr)
        grouped = launch_mpi({**spec, "workers": opts.ranks - 1}, opts.grouped_ranks, opts.mpiexec, opts.timeout,
                             workdir)
        out["grouped"] = {"ranks": grouped["ranks"], **_summarise_mpi(grouped)}
    return out


def _summarise_mpi(report: dict) -> dict:
    """Medians over the repeats of each mode (every round logged, sparse log) of one launch."""
    out = {}
    for mode, logged in (("log1", True), ("sparse", False)):
        rows = []
        for run in report["runs"]:
            if (run["run"]["log_every"] == 1) != logged:
                continue
            workers = [r for r in run["ranks"] if r["rank"] > 0]
            iso = [w["compute_isolated"]["logged" if logged else "plain"] for w in workers]
            floor = run["floor_logged" if logged else "floor"]
            compute_max, compute_sum = max(iso), sum(iso)
            cores = os.cpu_count() or 1
            rows.append({"round": run["round_seconds_median"], "floor": floor, "compute_max": compute_max,
                         "compute_sum": compute_sum, "compute_in_run_cpu": float(np.median([w["compute_cpu"]
                                                                                            for w in workers])),
                         "model": floor + compute_max, "model_shared": floor + max(compute_max, compute_sum / cores),
                         "bits": run["bits_up_per_worker_round"], "coords": run["coords_up_per_worker_round"]})
        med = {key: float(np.median([r[key] for r in rows])) for key in rows[0] if key not in ("bits", "coords")}
        med["overhead"] = float(np.median([r["round"] / r["model"] - 1 for r in rows]))
        med["overhead_shared"] = float(np.median([r["round"] / r["model_shared"] - 1 for r in rows]))
        med["bits"], med["coords"] = rows[0]["bits"], rows[0]["coords"]
        out[mode] = med
    return out


def part_scale(opts, workdir: Path) -> list[dict]:
    """Part 4: per ``d``, a synthetic file, then serial and MPI runs for ``k = 1`` and ``k = d/1000``.

    Start-up is what a user waits for before round 0 of ``ef21-mpi run``: the run's whole duration minus
    its round loop (the log's last ``wall_time``), i.e. load, sharding, every ``L_i`` and ``L``, workers, log.
    """
    from ef21_mpi.core import synth
    from ef21_mpi.core.datasets import load

    results = []
    for d in opts.scale_dims:
        path = workdir / f"synth-r{opts.scale_rows}-d{d}-z{opts.scale_nnz}-n{N_WORKERS}.svm"
        started = time.perf_counter()
        if not path.exists():
            synth.write(synth.generate(opts.scale_rows, d, opts.scale_nnz, N_WORKERS, seed=0), path)
        generated = time.perf_counter() - started
        started = time.perf_counter()
        nnz = int(load(str(path), None).A.nnz)
        loaded = time.perf_counter() - started
        ks = sorted({1, max(d // 1000, 1)})
        runs = []
        for k in ks:
            serial = serial_run(run_config(str(path), workdir / f"scale-serial-{d}-{k}.h5", opts.scale_rounds,
                                         opts.scale_log_every, k))
            runs.append({"k": k, "serial": serial, "startup_s": serial["total_s"] - serial["loop_s"]})
        mpi_runs = [{"k": k, "rounds": opts.scale_rounds, "log_every": opts.scale_log_every} for k in ks]
        if d == opts.trace_dim:  # EF21+ keeps every g_i on the master by design: the audit should show it
            mpi_runs += [{"k": 1, "rounds": 3, "log_every": 1, "trace": True, "algorithm": a}
                         for a in ("ef21", "ef21-plus")]
        report = launch_mpi({"dataset": str(path), "dim": d, "floor_rounds": max(opts.scale_rounds, 5),
                             "runs": mpi_runs, "isolated_repeats": 5}, opts.scale_ranks, opts.mpiexec,
                            opts.timeout, workdir)
        for r, mpi in zip(runs, report["runs"]):
            ranks = mpi["ranks"]
            results.append({
                "d": d, "k": r["k"], "rows": opts.scale_rows, "nnz": nnz, "generate_s": generated, "load_s": loaded,
                "startup_s": r["startup_s"], "serial_round": r["serial"]["round_seconds"],
                "mpi_round": mpi["round_seconds_median"], "mpi_floor": mpi.get("floor"),
                "rss_master_mb": ranks[0]["maxrss_mb"], "rss_worker_mb": max(x["maxrss_mb"] for x in ranks[1:]),
                "bits": mpi["bits_up_per_worker_round"], "coords": mpi["coords_up_per_worker_round"],
                "serial_bits": r["serial"]["bits_up_per_worker_round"], "expected_bits": r["k"] * BITS_PER_ENTRY,
            })
        for mpi in report["runs"][len(ks):]:
            results.append({"d": d, "algorithm": mpi["run"].get("algorithm", "ef21"),
                            "trace": [{"rank": x["rank"], "traced_peak_mb": x["traced_peak_mb"],
                                       "large_blocks": x["large_blocks"]} for x in mpi["ranks"]]})
        print(f"  scale d={d}: start-up {min(r['startup_s'] for r in runs):.1f} s", file=sys.stderr)
    return results


# --- the table -------------------------------------------------------------------------------------


# --- the command -----------------------------------------------------------------------------------


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="ef21-mpi bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes everywhere (seconds, for tests)")
    p.add_argument("--parts", default="serial,mpi,scale,workers",
                   help="comma list of serial, mpi, scale, workers, ranks, startup (default: the first four)")
    p.add_argument("--dataset", default="a9a", help="data set of parts 1-3 (default a9a)")
    p.add_argument("--data-dir", help="folder holding the data sets (default: $EF21_DATA_DIR, then data/)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each measurement (default 3)")
    p.add_argument("--rounds", type=int, default=1000, help="serial rounds with every round logged (default 1000)")
    p.add_argument("--sparse-log-every", type=int, default=100, help="the sparse log interval (default 100)")
    p.add_argument("--naive-rounds", type=int, default=200, help="rounds of the naive baseline (default 200)")
    p.add_argument("--floor-reps", type=int, default=300, help="repetitions of the floor products (default 300)")
    p.add_argument("--ranks", type=int, default=N_WORKERS + 1, help="MPI ranks for part 3 (default 21)")
    p.add_argument("--grouped-ranks", type=int, default=3,
                   help="part 3 again with the same workers held in blocks by this many ranks (default 3; 0: skip)")
    p.add_argument("--mpi-rounds", type=int, default=1000, help="MPI rounds per run and floor (default 1000)")
    p.add_argument("--scale-dims", default=",".join(str(d) for d in DEFAULT_DIMS), help="dimensions of part 4")
    p.add_argument("--scale-rows", type=int, default=200_000, help="rows of the synthetic data (default 200000)")
    p.add_argument("--scale-nnz", type=int, default=20, help="nonzeros per synthetic row (default 20)")
    p.add_argument("--scale-rounds", type=int, default=20, help="rounds per scale run (default 20)")
    p.add_argument("--scale-log-every", type=int, default=5, help="log interval of scale runs (default 5)")
    p.add_argument("--scale-ranks", type=int, default=N_WORKERS + 1, help="MPI ranks for part 4 (default 21)")
    p.add_argument("--trace-dim", type=int, default=10**5, help="d of the tracemalloc allocation audit (1e5)")
    workers.add_worker_arguments(p)
    p.add_argument("--mpiexec", default=find_mpiexec(), help="MPI launcher (default: the one beside python)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per mpiexec launch (default 1800)")
    p.add_argument("--workdir", help="folder for logs and synthetic data (default: a temporary folder)")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument("--openmpi-python", help="part ranks: also run under the Open MPI of this python's environment")
    p.add_argument("--startup-rows", type=int, default=2_000_000, help="rows of the start-up part (default 2e6)")
    p.add_argument("--startup-dim", type=int, default=10**6, help="d of the start-up part (default 1e6)")
    return p


def apply_quick(opts: argparse.Namespace) -> None:
    """Toy sizes: every part runs end to end in well under a minute."""
    opts.repeats, opts.rounds, opts.naive_rounds, opts.floor_reps = 1, 30, 10, 20
    opts.ranks, opts.mpi_rounds, opts.scale_ranks, opts.grouped_ranks = 3, 30, 3, 2
    opts.scale_dims, opts.scale_rows, opts.scale_nnz, opts.scale_rounds, opts.scale_log_every = "100,200", 400, 5, 6, 2
    opts.trace_dim, opts.sparse_log_every = 200, 5
    workers.quick_workers(opts)
    opts.startup_rows, opts.startup_dim = 400, 100


def cmd_bench(opts: argparse.Namespace) -> int:
    if opts.quick:
        apply_quick(opts)
    parts = set(opts.parts.split(","))
    if not parts <= PARTS:
        raise InputError(f"--parts {opts.parts}: expected a comma list of {', '.join(sorted(PARTS))}")
    try:
        opts.scale_dims = [int(d) for d in str(opts.scale_dims).split(",") if d]
    except ValueError:
        raise InputError(f"--scale-dims {opts.scale_dims}: expected a comma list of integers") from None
    workers.parse_worker_counts(opts)
    minimums = {"--repeats": (opts.repeats, 1), "--rounds": (opts.rounds, 1),
                "--naive-rounds": (opts.naive_rounds, 1), "--ranks": (opts.ranks, 2),
                "--scale-ranks": (opts.scale_ranks, 2), "--mpi-rounds": (opts.mpi_rounds, 1),
                "--scale-rounds": (opts.scale_rounds, 1), "--sparse-log-every": (opts.sparse_log_every, 1)}
    for flag, (value, minimum) in minimums.items():
        if value < minimum:
            raise InputError(f"{flag} must be at least {minimum}, got {value}")
    if opts.grouped_ranks and not 2 <= opts.grouped_ranks <= opts.ranks:
        raise InputError(f"--grouped-ranks {opts.grouped_ranks}: expected 0 or 2 .. --ranks ({opts.ranks})")
    result = {"machine": machine(), "command": " ".join(["ef21-mpi bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"]
              else " ".join(sys.argv), "dataset": opts.dataset, "sparse_log_every": opts.sparse_log_every,
              "scale_ranks": opts.scale_ranks, "scale_log_every": opts.scale_log_every}
    with tempfile.TemporaryDirectory(prefix="ef21-bench-") as tmp, from_core():
        workdir = Path(opts.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if "serial" in parts:
            print("part 1-2: serial backend, compute floor, naive baseline", file=sys.stderr)
            result["serial"] = part_serial_and_naive(opts, workdir)
        if "mpi" in parts:
            from ef21_mpi.core.datasets import load

            print(f"part 3: MPI backend, {opts.ranks} ranks", file=sys.stderr)
            result["mpi"] = part_mpi(opts, workdir, load(opts.dataset, opts.data_dir).d)
        if "scale" in parts:
            print("part 4: scale", file=sys.stderr)
            result["scale"] = part_scale(opts, workdir)
        if "workers" in parts:
            print("part 5: worker count", file=sys.stderr)
            result["workers"] = workers.part_workers(opts, workdir, serial_run, run_config, compute_floor)
        for part in ("ranks", "startup"):
            if part in parts:
                print(f"part {part}", file=sys.stderr)
                result[part] = getattr(ranks, f"part_{part}")(opts, workdir)
    print(format_report(result) + ("\n".join(workers.format_workers(result["workers"])) if "workers" in result else ""))
    if parts & {"ranks", "startup"}:
        print(ranks.format_ranks(result))
    if opts.json:
        Path(opts.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cmd_bench(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
