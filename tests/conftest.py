"""Shared fixtures: where the real data sets are, small random problems, and a direct serial run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ef21_mpi.core.compressors import Compressor
from ef21_mpi.core.methods import make_method
from ef21_mpi.core.problems import LogisticShards
from ef21_mpi.runtime.logschema import RunLog
from ef21_mpi.runtime.loop import fresh_loop, run_rounds
from ef21_mpi.runtime.observers import LogWriter
from ef21_mpi.runtime.serial import SerialCluster
from ef21_mpi.runtime.worker import WorkerGroup

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "data" / "fixtures"


def real_data_dir() -> Path | None:
    """The folder with the paper's data sets: $EF21_DATA_DIR, else ../shared/data/libsvm next to the repo."""
    env = os.environ.get("EF21_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "libsvm")
    for folder in candidates:
        if (folder / "a9a.bz2").exists() or (folder / "a9a").exists():
            return folder
    return None


@pytest.fixture
def data_dir() -> Path:
    folder = real_data_dir()
    if folder is None:
        pytest.skip("the paper's data sets are not available (set EF21_DATA_DIR)")
    return folder


def random_shards(n: int, d: int, rows: list[int] | None = None, density: float = 0.3, seed: int = 0):
    """n random sparse shards with +-1 labels (unequal sizes by default)."""
    rng = np.random.default_rng(seed)
    rows = rows or [5 + 3 * i for i in range(n)]
    shards = []
    for N_i in rows:
        A = sp.random(N_i, d, density=density, random_state=rng, format="csr") * 2.0
        y = np.where(rng.random(N_i) < 0.5, -1.0, 1.0)
        shards.append((sp.csr_matrix(A), y))
    return shards


def run_serial_direct(algorithm: str, compressor: Compressor, shards, gamma: float, rounds: int, tmp_path: Path, *,
                      lam: float = 0.1, init: str = "full", seed: int = 0, x0=None, log_every: int = 1,
                      batch_size: int | None = None):
    """Run the package's serial engine in-process; returns (log, outcome)."""
    n, d = len(shards), shards[0][0].shape[1]
    method = make_method(algorithm, compressor, gamma, n, d, init)
    seeds = np.random.SeedSequence(seed).spawn(n + 1)[1:]
    group = WorkerGroup(method, LogisticShards(shards, lam), seeds, batch_size)
    log = RunLog(tmp_path / f"{algorithm}.h5", {}, n, d, flush_seconds=1e9)
    x0 = np.zeros(d) if x0 is None else x0
    outcome = run_rounds(method, fresh_loop(method, x0), SerialCluster(group, d), rounds, log_every=log_every,
                         observers=[LogWriter(log)])
    return log, outcome
