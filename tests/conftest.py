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


PAPER_DATA_SETS = ("a9a", "w8a", "mushrooms", "phishing")  # SPEC 2: the four the tests read
REQUIRE_DATA_VAR = "EF21_REQUIRE_DATA"  # set to 1 by .ci/run and scripts/test: a missing data set is a failure


def data_candidates() -> list[Path]:
    """Where the tests look for the paper's data sets: $EF21_DATA_DIR, else ../shared/data/libsvm next to the repo."""
    env = os.environ.get("EF21_DATA_DIR")
    return [Path(env)] if env else [REPO.parent / "shared" / "data" / "libsvm"]


def _missing(folder: Path) -> list[str]:
    return [name for name in PAPER_DATA_SETS if not ((folder / f"{name}.bz2").is_file() or (folder / name).is_file())]


def real_data_dir() -> Path | None:
    """The folder that holds all four of the paper's data sets (see ``data_candidates``), or None."""
    for folder in data_candidates():
        if not _missing(folder):
            return folder
    return None


def data_required() -> bool:
    return os.environ.get(REQUIRE_DATA_VAR, "") not in ("", "0")


def missing_data_message() -> str:
    where = "; ".join(f"{folder}: missing {', '.join(_missing(folder))}" for folder in data_candidates())
    return f"the paper's data sets ({', '.join(PAPER_DATA_SETS)}; name or name.bz2) are not available ({where})"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the paper's data sets, for every test that reads them.

    Missing data: a skip for a developer running pytest by hand, but a failure under ``EF21_REQUIRE_DATA=1``
    (exported by .ci/run and scripts/test), so the real-data tests cannot go quietly green in CI.
    Session-scoped, so it is resolved before any test's monkeypatching of the environment.
    """
    folder = real_data_dir()
    if folder is None:
        message = missing_data_message()
        if data_required():
            pytest.fail(f"{REQUIRE_DATA_VAR}=1 but {message}", pytrace=False)
        pytest.skip(f"{message}; set EF21_DATA_DIR")
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
