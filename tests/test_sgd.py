"""EF21-SGD (SPEC 4, paper Section 4.7): the minibatch estimator, the worker's draws, and the runs they make."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import VOLATILE, VOLATILE_ATTRS, mpi_command, read_file, read_log

from ef21_mpi.core.compressors import TopK
from ef21_mpi.core.methods import make_method
from ef21_mpi.core.problems import LeastSquaresShards, LogisticShards
from ef21_mpi.runtime.worker import WorkerGroup

LAM = 0.1
TIMEOUT = 180  # seconds per launch


def ef21(args: list[str], ranks: int | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m ef21_mpi ARGS``, under ``mpiexec -n ranks`` when given, with a timeout."""
    cmd = [sys.executable, "-m", "ef21_mpi", *args]
    if ranks is not None:
        cmd = [*mpi_command(ranks), *cmd]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def random_problem(N: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense rows with short decimal values (exact in binary) and 0/1 labels; column d occurs in row 0."""
    rng = np.random.default_rng(seed)
    A = np.where(rng.random((N, d)) < 0.4, rng.integers(-8, 9, size=(N, d)) * 0.25, 0.0)
    A[0, d - 1] = 1.0
    return A, rng.integers(0, 2, size=N).astype(np.float64)


def write_libsvm(path: Path, A: np.ndarray, labels: np.ndarray) -> Path:
    lines = [f"{int(labels[j])} " + " ".join(f"{c + 1}:{A[j, c]}" for c in np.flatnonzero(A[j]))
             for j in range(A.shape[0])]
    path.write_text("\n".join(lines) + "\n")
    return path


def dense_logistic_grad(A: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """grad of mean_j log(1 + exp(-y_j a_j^T x)) + LAM sum_k x_k^2/(1 + x_k^2), written out densely."""
    margins = y * (A @ x)
    return -(A.T @ (y / (1.0 + np.exp(margins)))) / len(y) + LAM * 2.0 * x / (1.0 + x**2) ** 2


def dense_logistic_loss(A: np.ndarray, y: np.ndarray, x: np.ndarray) -> float:
    return float(np.mean(np.log1p(np.exp(-y * (A @ x)))) + LAM * np.sum(x**2 / (1.0 + x**2)))


# --- the estimator and the draws -------------------------------------------------------------------------


@pytest.mark.parametrize("shard_class", [LogisticShards, LeastSquaresShards])
def test_minibatch_gradient_is_exactly_unbiased_over_all_subsets(shard_class):
    """Uniform tau-subsets without replacement: the mean over all C(N_i, tau) subsets is the full gradient."""
    A, labels = random_problem(7, 5, seed=1)
    y = 2.0 * labels - 1.0
    shard = shard_class([(sp.csr_matrix(A), y)], LAM)
    x = np.random.default_rng(2).standard_normal(5)
    subsets = [np.array(s) for s in itertools.combinations(range(7), 3)]
    grads = np.array([shard.minibatch_grad(x, rows) for rows in subsets])
    np.testing.assert_allclose(grads.mean(axis=0), shard.grad(x), rtol=1e-13, atol=1e-15)
    rows = subsets[10]
    if shard_class is LogisticShards:  # one minibatch against the dense formula on its rows
        np.testing.assert_allclose(grads[10], dense_logistic_grad(A[rows], y[rows], x), rtol=1e-13, atol=1e-15)
    else:
        expected = A[rows].T @ (A[rows] @ x - y[rows]) / 3 + LAM * x
        np.testing.assert_allclose(grads[10], expected, rtol=1e-13, atol=1e-15)


class RecordingShard(LogisticShards):
    """A logistic shard that remembers which rows each minibatch gradient used, and its value."""

    def __init__(self, *args):
        super().__init__(*args)
        self.rows_seen: list[np.ndarray] = []
        self.grads_seen: list[np.ndarray] = []

    def minibatch_grads(self, x, rows, workers=None, out=None):
        g = super().minibatch_grads(x, rows, workers, out)
        assert len(rows) == 1  # one worker
        self.rows_seen.append(np.array(rows[0], copy=True))
        self.grads_seen.append(g[0].copy())
        return g


def worker_draws(seed: np.random.SeedSequence, rounds: int, N: int = 12, tau: int = 4, d: int = 5):
    A, labels = random_problem(N, d, seed=3)
    shard = RecordingShard([(sp.csr_matrix(A), 2.0 * labels - 1.0)], LAM)
    method = make_method("ef21-sgd", TopK(1, d), 0.1, 1, d)
    worker = WorkerGroup(method, shard, [seed], batch_size=tau)
    x = np.linspace(-1.0, 1.0, d)
    for t in range(rounds):
        worker.round(x, t, None)
    return shard, x


def test_worker_draws_uniform_rows_without_replacement_and_an_unbiased_mean():
    M, N, tau = 4000, 12, 4
    shard, x = worker_draws(np.random.SeedSequence(7), M, N, tau)
    rows = np.array(shard.rows_seen)
    assert rows.shape == (M, tau)
    assert (np.diff(rows, axis=1) > 0).all()  # sorted and distinct: without replacement
    assert rows.min() >= 0 and rows.max() < N
    # each row is in a minibatch with probability tau/N: within 5 standard errors of M Bernoulli draws
    p = tau / N
    frequency = np.bincount(rows.ravel(), minlength=N) / M
    assert np.abs(frequency - p).max() < 5 * np.sqrt(p * (1 - p) / M)
    # the mean of the M minibatch gradients approaches the full gradient: within 5 standard errors per coordinate
    grads = np.array(shard.grads_seen)
    standard_error = grads.std(axis=0, ddof=1) / np.sqrt(M)
    assert (standard_error > 0).all()  # every coordinate has data: the test is not vacuous
    assert (np.abs(grads.mean(axis=0) - shard.grad(x)) < 5 * standard_error).all()


def test_worker_draws_are_a_function_of_the_seed():
    seed = np.random.SeedSequence(11).spawn(3)[1]
    first, _ = worker_draws(seed, 30)
    again, _ = worker_draws(np.random.SeedSequence(11).spawn(3)[1], 30)
    other, _ = worker_draws(np.random.SeedSequence(11).spawn(3)[2], 30)
    np.testing.assert_array_equal(np.array(first.rows_seen), np.array(again.rows_seen))
    assert not np.array_equal(np.array(first.rows_seen), np.array(other.rows_seen))
    # the worker's own stream: tau rows of np.random.Generator.choice without replacement, sorted
    rng = np.random.default_rng(np.random.SeedSequence(11).spawn(3)[1])
    expected = [np.sort(rng.choice(12, size=4, replace=False)) for _ in range(30)]
    np.testing.assert_array_equal(np.array(first.rows_seen), np.array(expected))


# --- runs ---------------------------------------------------------------------------------------------------


def assert_same_log(a: Path, b: Path, attrs_allowed_to_differ: set[str] = frozenset()) -> None:
    da, aa = read_file(a)
    db, ab = read_file(b)
    assert set(da) == set(db)
    for key in set(da) - VOLATILE:
        assert da[key].dtype == db[key].dtype, key
        np.testing.assert_array_equal(da[key], db[key], err_msg=key)  # bit for bit
    for key in (set(aa) | set(ab)) - VOLATILE_ATTRS - set(attrs_allowed_to_differ):
        np.testing.assert_array_equal(aa[key], ab[key], err_msg=key)


@pytest.mark.parametrize("log_every", [1, 7])
def test_full_batch_ef21_sgd_is_ef21_bit_for_bit(log_every, tmp_path):
    A, labels = random_problem(60, 9, seed=4)
    data = write_libsvm(tmp_path / "small.svm", A, labels)
    common = ["run", "--backend", "serial", "--dataset", str(data), "--workers", "3", "--compressor", "top-k",
              "--k", "2", "--rounds", "80", "--stepsize-multiplier", "4", "--log-every", str(log_every), "--quiet"]
    sgd = ef21([*common, "--algorithm", "ef21-sgd", "--batch-size", "20", "--out", str(tmp_path / "sgd.h5")])
    plain = ef21([*common, "--algorithm", "ef21", "--out", str(tmp_path / "ef21.h5")])
    assert sgd.returncode == 0 and plain.returncode == 0, sgd.stderr + plain.stderr
    assert_same_log(tmp_path / "sgd.h5", tmp_path / "ef21.h5", {"algorithm", "batch_size", "config"})
    logged, attrs = read_log(tmp_path / "sgd.h5")
    assert attrs["algorithm"] == "ef21-sgd" and attrs["batch_size"] == 20
    assert np.isfinite(logged["grad_norm_sq"]).all() and logged["grad_norm_sq"][-1] < logged["grad_norm_sq"][0]


def test_monitoring_logs_the_full_gradient_and_distortion(tmp_path):
    """With tau < N_i the log still holds ||grad f(x^t)||^2, f(x^t) and G^t of the FULL gradients."""
    N, d, n, tau, seed = 60, 9, 3, 4, 5
    A, labels = random_problem(N, d, seed=6)
    y = 2.0 * labels - 1.0
    data = write_libsvm(tmp_path / "small.svm", A, labels)
    out = ef21(["run", "--backend", "serial", "--dataset", str(data), "--workers", str(n), "--algorithm", "ef21-sgd",
                "--batch-size", str(tau), "--k", "3", "--rounds", "30", "--seed", str(seed), "--quiet",
                "--out", str(tmp_path / "sgd.h5")])
    assert out.returncode == 0, out.stderr
    logged, _ = read_log(tmp_path / "sgd.h5")
    shards = [(A[i * 20:(i + 1) * 20], y[i * 20:(i + 1) * 20]) for i in range(n)]

    def full(x):
        grads = [dense_logistic_grad(A_i, y_i, x) for A_i, y_i in shards]
        return grads, float(np.linalg.norm(np.mean(grads, axis=0)) ** 2), np.mean([dense_logistic_loss(*s, x)
                                                                                    for s in shards])

    grads0, norm0, loss0 = full(np.zeros(d))
    _, norm_final, loss_final = full(logged["x_final"])
    assert logged["grad_norm_sq"][0] == pytest.approx(norm0, rel=1e-12)
    assert logged["loss"][0] == pytest.approx(loss0, rel=1e-13)
    assert logged["grad_norm_sq"][-1] == pytest.approx(norm_final, rel=1e-10)
    assert logged["loss"][-1] == pytest.approx(loss_final, rel=1e-13)
    # G^0: g_i^0 is the minibatch gradient of worker i's first draw (--init full), measured against the full one
    worker_seeds = np.random.SeedSequence(seed).spawn(n + 1)[1:]
    G0 = 0.0
    for (A_i, y_i), grad_i, s in zip(shards, grads0, worker_seeds):
        rows = np.sort(np.random.default_rng(s).choice(20, size=tau, replace=False))
        G0 += np.sum((dense_logistic_grad(A_i[rows], y_i[rows], np.zeros(d)) - grad_i) ** 2) / n
    assert logged["distortion"][0] == pytest.approx(G0, rel=1e-12) and G0 > 0


@pytest.mark.mpi
@pytest.mark.parametrize("compressor", ["top-k", "rand-k"])
def test_ef21_sgd_under_mpi_equals_serial_bit_for_bit(compressor, tmp_path):
    A, labels = random_problem(41, 10, seed=8)  # shards of 20 and 21 rows
    data = write_libsvm(tmp_path / "small.svm", A, labels)
    common = ["run", "--dataset", str(data), "--algorithm", "ef21-sgd", "--batch-size", "5", "--compressor",
              compressor, "--k", "3", "--rounds", "60", "--stepsize-multiplier", "2", "--seed", "9", "--quiet"]
    serial = ef21([*common, "--backend", "serial", "--workers", "2", "--out", str(tmp_path / "s.h5")])
    assert serial.returncode == 0, serial.stderr
    mpi = ef21([*common, "--backend", "mpi", "--out", str(tmp_path / "m.h5")], ranks=3)
    assert mpi.returncode == 0, mpi.stderr
    assert_same_log(tmp_path / "s.h5", tmp_path / "m.h5")
    _, attrs = read_log(tmp_path / "m.h5")
    assert attrs["backend"] == "mpi" and attrs["n_workers"] == 2 and attrs["batch_size"] == 5
