"""Helpers shared by the tests that run the real command: small LibSVM files, launches with timeouts, log comparison."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from ef21_mpi.runtime import logschema

# the launcher that belongs to this Python (the MPICH and Open MPI wheels put it beside the interpreter)
MPIEXEC = str(Path(sys.executable).with_name("mpiexec")) if Path(sys.executable).with_name("mpiexec").exists() else "mpiexec"


def launcher_library(mpiexec: str = MPIEXEC) -> str:
    """Which MPI the launcher belongs to, from ``mpiexec --version``: "MPICH", "Open MPI" or "unknown"."""
    try:
        text = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if "Open MPI" in text or "OpenRTE" in text:
        return "Open MPI"
    return "MPICH" if "HYDRA" in text or "MPICH" in text else "unknown"


MPI_LIBRARY = launcher_library()
# Open MPI refuses more ranks than cores without --oversubscribe, and refuses root without both variables
MPI_ARGS = ["--oversubscribe"] if MPI_LIBRARY == "Open MPI" else []
if MPI_LIBRARY == "Open MPI" and os.geteuid() == 0:
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
# how each library turns shared memory off, so that the ranks talk over the network transport (TCP)
NETWORK_ONLY = {"MPICH": ([], {"MPIR_CVAR_NOLOCAL": "1", "UCX_TLS": "tcp", "FI_PROVIDER": "tcp"}),
                "Open MPI": (["--mca", "btl", "tcp,self", "--mca", "pml", "ob1", "--mca", "coll", "^sm"], {})}


def program_stderr(text: str) -> str:
    """``text`` without the launcher's own notices: Open MPI's launcher adds a multi-line block, framed by lines
    of dashes, whenever a rank exits with a non-zero status, and now and then a libevent ``[warn] Epoll ...``
    line (open-mpi/ompi#5520); the program's own lines are kept as they are."""
    if MPI_LIBRARY != "Open MPI":
        return text
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if set(line.strip()) == {"-"} and len(line.strip()) > 20:
            inside = not inside
        elif not inside and not line.startswith("[warn] Epoll"):
            kept.append(line)
    return "".join(kept)


def rank_zero_of(launcher_pid: int) -> int:
    """The pid of rank 0 among the launcher's descendants (its environment names world rank 0)."""
    children = {launcher_pid}
    for _ in range(100):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if parent in children:
                children.add(int(entry.name))
                if b"OMPI_COMM_WORLD_RANK=0" in environ or b"PMI_RANK=0" in environ:
                    return int(entry.name)
        time.sleep(0.1)
    raise RuntimeError(f"no rank 0 found under launcher {launcher_pid}")


def mpi_command(ranks: int, extra: list[str] | None = None) -> list[str]:
    """``mpiexec -n ranks`` with what this library needs (and ``extra`` launcher options)."""
    return [MPIEXEC, *MPI_ARGS, *(extra or []), "-n", str(ranks)]
TIMEOUT = 180  # seconds per launch; a hang fails the test instead of blocking CI
VOLATILE = {"wall_time"}  # the only dataset allowed to differ between backends
VOLATILE_ATTRS = {"backend", "mpi_library", "world_size", "command_line", "elapsed_seconds", "updated_at",
                  "resume_history", "placement", "worker_rank",
                  "final_state/wall_offset", "final_state/digest"}  # the final state's clock, and its digest


def write_libsvm(path: Path, N: int = 60, d: int = 12, seed: int = 0) -> Path:
    """A small random LibSVM file (labels 0/1, about a third of the features present per row)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(N):
        cols = np.flatnonzero(rng.random(d) < 0.35) + 1
        feats = " ".join(f"{c}:{rng.normal():.6g}" for c in cols)
        lines.append(f"{int(rng.random() < 0.4)} {feats}".rstrip())
    path.write_text("\n".join(lines) + "\n")
    return path


def write_exact_libsvm(path: Path, N: int = 60, d: int = 8, seed: int = 0,
                       density: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Random rows of short decimals (exact in binary), 0/1 labels; column d occurs, so the file's d is d.

    Returns the data as the package reads it: the dense matrix and the labels mapped to -1/+1.
    """
    rng = np.random.default_rng(seed)
    A = np.where(rng.random((N, d)) < density, rng.integers(-8, 9, size=(N, d)) * 0.25, 0.0)
    A[0, d - 1] = 1.0
    labels = rng.integers(0, 2, size=N)
    lines = [f"{labels[j]} " + " ".join(f"{c + 1}:{A[j, c]}" for c in np.flatnonzero(A[j])) for j in range(N)]
    path.write_text("\n".join(lines) + "\n")
    return A, 2.0 * labels - 1.0


def ef21(args: list[str], *, ranks: int | None = None, env: dict | None = None, timeout: float = TIMEOUT,
         mpi_args: list[str] | None = None, cwd: Path | None = None):
    """Run ``ef21-mpi`` (under ``mpiexec -n ranks`` when given, with ``mpi_args``, in ``cwd``); returns the
    CompletedProcess."""
    cmd = [sys.executable, "-m", "ef21_mpi", *args]
    if ranks is not None:
        cmd = [*mpi_command(ranks, mpi_args), *cmd]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, check=False, cwd=cwd)


def read_log(path: Path) -> tuple[dict, dict]:
    """A run log through the package's reader: {column or x_final: array}, {attribute: plain value}."""
    log = logschema.read_log(path, need=logschema.DATASETS)
    return {**log.columns, "x_final": log.x_final}, log.attrs


def read_file(path: Path, groups: bool = False) -> tuple[dict, dict]:
    """Every dataset and attribute of an HDF5 file exactly as stored, the schema aside (for bit-for-bit checks).

    ``groups``: also the datasets in groups (a completed log's ``final_state``: the method's own state, which
    runs of different methods with the same numbers do not share) by their paths, and the groups' attributes
    as ``group/attribute``."""
    datasets, attrs = {}, {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            datasets[name] = np.asarray(obj[()])
        else:
            attrs.update({f"{name}/{key}": value for key, value in obj.attrs.items()})

    with h5py.File(path, "r") as f:
        if groups:
            f.visititems(visit)
        else:
            datasets.update({k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)})
        return datasets, {**dict(f.attrs), **attrs}


def assert_same_log(a: Path, b: Path) -> None:
    """Two logs hold the same datasets and attributes, bit for bit, except the ones a backend may change (the
    final state of a completed run included)."""
    da, aa = read_file(a, groups=True)
    db, ab = read_file(b, groups=True)
    assert set(da) == set(db)
    for key in da:
        if key not in VOLATILE:
            assert da[key].dtype == db[key].dtype, key
            np.testing.assert_array_equal(da[key], db[key], err_msg=key)  # bit for bit, NaN == NaN
    for key in set(aa) | set(ab):
        if key not in VOLATILE_ATTRS:
            np.testing.assert_array_equal(aa[key], ab[key], err_msg=key)


def write_pm1_libsvm(path, N=120, d=8, seed=0):
    """A small random LibSVM file with +-1 labels and 4 nonzeros per row (used by the results-tool tests)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for _ in range(N):
            idx = np.sort(rng.choice(d, 4, replace=False))
            f.write(("1" if rng.random() < 0.5 else "-1") + " "
                    + " ".join(f"{j + 1}:{rng.normal():.4f}" for j in idx) + "\n")
    return path


def deficient_shards(rows: list[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shards of a 41-column matrix of rank 30: duplicated, zero, combined and scaled columns (SPEC 1.2's case)."""
    rng = np.random.default_rng(seed)
    N = sum(rows)
    base = np.where(rng.random((N, 30)) < 0.4, rng.integers(-8, 9, size=(N, 30)) * 0.25, 0.0)
    A = np.hstack([base, base[:, :5], np.zeros((N, 4)), base[:, [6]] + 2.0 * base[:, [7]], 3.0 * base[:, [8]]])
    A = A[:, rng.permutation(A.shape[1])]
    y = np.where(rng.random(N) < 0.5, -1.0, 1.0)
    bounds = np.cumsum([0, *rows])
    return [(A[lo:hi], y[lo:hi]) for lo, hi in itertools.pairwise(bounds)]


def write_deficient(path: Path, rows: list[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`deficient_shards` as a LibSVM file (0/1 labels); the shards as the package reads them (d = last column used)."""
    shards = deficient_shards(rows, seed)
    A, y = np.vstack([A for A, _ in shards]), np.concatenate([y for _, y in shards])
    d = int(np.flatnonzero(np.abs(A).sum(axis=0))[-1]) + 1
    lines = [f"{int(y[j] > 0)} " + " ".join(f"{c + 1}:{A[j, c]}" for c in np.flatnonzero(A[j])) for j in range(len(y))]
    path.write_text("\n".join(lines) + "\n")
    return [(B[:, :d], t) for B, t in shards]
