"""Least squares (SPEC 1.2, the PL setting of Theorem 3): constants, optimum, stepsize and the logged loss gap.

The references are computed here by other means than the package's where it matters: L and mu from the singular
values of the stacked, scaled data matrix (not eigenvalues of a Gram matrix), x* from a least-squares solve of the
stacked system (not the normal equations).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import deficient_shards, mpi_command, write_deficient, write_exact_libsvm

from ef21_mpi.core import smoothness, spectrum
from ef21_mpi.core.data import shard
from ef21_mpi.core.datasets import load
from ef21_mpi.core.problems import LeastSquaresShards
from ef21_mpi.core.smoothness import least_squares_optimum, smoothness_constants

TIMEOUT = 180


def ef21(args: list[str], ranks: int | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m ef21_mpi ARGS``, under ``mpiexec -n ranks`` when given, with a timeout."""
    cmd = [sys.executable, "-m", "ef21_mpi", *args]
    if ranks is not None:
        cmd = [*mpi_command(ranks), *cmd]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def dense_reference(shards: list[tuple[np.ndarray, np.ndarray]], lam: float) -> dict:
    """L_i, L, L~, mu, x*, f* from dense arrays: singular values and a stacked least-squares solve.

    ``mu_pl``: the smallest positive eigenvalue of the mean Hessian, the square of the smallest singular value above
    numpy's ``matrix_rank`` threshold (``rank`` of them), with its right singular vector ``v_pl``; at ``lam = 0`` the
    stacked solve gives the minimum-norm least-squares solution.
    """
    n = len(shards)
    L_i = np.array([np.linalg.eigvalsh(A.T @ A / len(y))[-1] + lam for A, y in shards])  # (cheaper than 20 SVDs)
    # f(x) = (1/2) ||W x - z||^2 + (lam/2) ||x||^2 with the rows of shard i scaled by 1/sqrt(n N_i)
    W = np.vstack([A / math.sqrt(n * len(y)) for A, y in shards])
    z = np.concatenate([y / math.sqrt(n * len(y)) for _, y in shards])
    d = W.shape[1]
    _, sigma, Vt = np.linalg.svd(W, full_matrices=False)
    sigma_min = sigma[-1] if W.shape[0] >= d else 0.0  # fewer rows than columns: W^T W is singular
    rank = int(np.sum(sigma > sigma[0] * max(W.shape) * np.finfo(np.float64).eps))
    stacked = np.vstack([W, math.sqrt(lam) * np.eye(d)])
    x_star = np.linalg.lstsq(stacked, np.concatenate([z, np.zeros(d)]), rcond=None)[0]
    f_star = np.mean([np.sum((A @ x_star - y) ** 2) / (2 * len(y)) for A, y in shards]) + lam / 2 * x_star @ x_star
    return {"L_i": L_i, "L": sigma[0] ** 2 + lam, "L_tilde": math.sqrt(np.mean(L_i**2)),
            "mu": sigma_min**2 + lam, "x_star": x_star, "f_star": float(f_star), "rank": rank,
            "mu_pl": float(sigma[rank - 1] ** 2), "v_pl": Vt[rank - 1]}


def random_shards(rows: list[int], d: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(np.where(rng.random((N_i, d)) < 0.5, rng.standard_normal((N_i, d)), 0.0),
             np.where(rng.random(N_i) < 0.5, -1.0, 1.0)) for N_i in rows]


def check_against_dense(dense_shards, lam: float) -> None:
    sparse_shards = [(sp.csr_matrix(A), y) for A, y in dense_shards]
    ref = dense_reference(dense_shards, lam)
    c = smoothness_constants("least-squares", sparse_shards, lam)
    x_star, f_star = least_squares_optimum(sparse_shards, lam)
    np.testing.assert_allclose(c.L_i, ref["L_i"], rtol=1e-10)
    assert c.L == pytest.approx(ref["L"], rel=1e-10)
    assert c.L_tilde == pytest.approx(ref["L_tilde"], rel=1e-10)
    assert c.mu == pytest.approx(ref["mu"], rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(x_star, ref["x_star"], rtol=1e-8, atol=1e-10)
    assert f_star == pytest.approx(ref["f_star"], rel=1e-12) and c.f_star == f_star
    # x* is stationary: the mean of the package's shard gradients vanishes there
    grad = np.mean([LeastSquaresShards([(A, y)], lam).grad(x_star) for A, y in sparse_shards], axis=0)
    assert np.linalg.norm(grad) < 1e-10


@pytest.mark.parametrize("eigensolver", ["dense", "lanczos"])
@pytest.mark.parametrize("rows,d", [([9, 11, 14, 17], 6), ([3, 4], 8)])  # full rank; fewer rows than columns
def test_constants_and_optimum_against_a_dense_solve(rows, d, eigensolver, monkeypatch):
    if eigensolver == "lanczos":  # the large-d path (eigsh on the operator, conjugate gradients for x*)
        monkeypatch.setattr(smoothness, "DENSE_EIG_MAX_D", 0)
    shards = random_shards(rows, d, seed=len(rows))
    check_against_dense(shards, lam=0.1)
    if sum(rows) < d:
        assert smoothness_constants("least-squares", [(sp.csr_matrix(A), y) for A, y in shards], 0.1).mu == \
            pytest.approx(0.1, rel=1e-9)  # singular data part: mu is lam


@pytest.mark.parametrize("dataset", ["phishing", "mushrooms"])
def test_constants_and_optimum_on_real_data(dataset, data_dir):
    ds = load(dataset, data_dir)
    dense_shards = [(A.toarray(), y) for A, y in shard(ds, 20)]
    check_against_dense(dense_shards, lam=0.1)
    check_pl_against_dense(dense_shards)


# --- lam = 0: PL with the smallest positive eigenvalue (SPEC 1.2) ------------------------------------------------


def check_pl_against_dense(dense_shards) -> smoothness.Constants:
    """At lam = 0 on rank-deficient data: mu, f*, x* against singular values and the minimum-norm lstsq solution,
    and mu is the PL constant: ||grad f||^2 >= 2 mu (f - f*) everywhere, with equality along its eigenvector."""
    sparse_shards = [(sp.csr_matrix(A), y) for A, y in dense_shards]
    ref = dense_reference(dense_shards, 0.0)
    d = dense_shards[0][0].shape[1]
    assert ref["rank"] < d and ref["mu"] < 1e-12 * ref["L"]  # rank deficient: lambda_min is 0 (to rounding)
    c = smoothness_constants("least-squares", sparse_shards, 0.0)
    assert c.mu_kind == smoothness.MU_PL
    assert c.mu == pytest.approx(ref["mu_pl"], rel=1e-9)
    assert c.L == pytest.approx(ref["L"], rel=1e-10)
    assert c.f_star == pytest.approx(ref["f_star"], rel=1e-12)
    x_star, f_star = least_squares_optimum(sparse_shards, 0.0)
    assert f_star == c.f_star
    np.testing.assert_allclose(x_star, ref["x_star"], rtol=1e-7, atol=1e-8 * np.abs(ref["x_star"]).max())
    workers = [LeastSquaresShards([(A, y)], 0.0) for A, y in sparse_shards]

    def f_and_grad(x):
        return (np.mean([w.loss(x) for w in workers]), np.mean([w.grad(x) for w in workers], axis=0))

    rng = np.random.default_rng(7)
    for x in [x_star + rng.standard_normal(d) for _ in range(5)]:
        value, grad = f_and_grad(x)
        assert grad @ grad >= 2.0 * c.mu * (value - c.f_star) * (1 - 1e-9)
    value, grad = f_and_grad(x_star + ref["v_pl"])  # f - f* = mu/2, ||grad f||^2 = mu^2: the PL bound is tight
    assert grad @ grad == pytest.approx(2.0 * c.mu * (value - c.f_star), rel=1e-6)
    return c


@pytest.mark.parametrize("eigensolver", ["dense", "lanczos"])
def test_lam_zero_on_rank_deficient_data_is_pl(eigensolver, monkeypatch):
    if eigensolver == "lanczos":  # zero columns removed, Lanczos with deflation, conjugate gradients for x*
        monkeypatch.setattr(smoothness, "DENSE_EIG_MAX_D", 0)
    check_pl_against_dense(deficient_shards([23, 31, 40], seed=5))


@pytest.mark.parametrize("eigensolver", ["dense", "lanczos"])
def test_logs_keep_their_numbers_where_mu_was_defined(eigensolver, monkeypatch):
    """lam > 0 on any data and lam = 0 on full-rank data: mu, f* and mu's kind as before lam = 0 was PL."""
    if eigensolver == "lanczos":
        monkeypatch.setattr(smoothness, "DENSE_EIG_MAX_D", 0)
    for shards, lam in ((deficient_shards([23, 31, 40], seed=5), 0.1), (random_shards([30, 40, 50], 26, seed=6), 0.0)):
        sparse_shards = [(sp.csr_matrix(A), y) for A, y in shards]
        n = len(shards)
        W = sp.vstack([A * np.sqrt(1.0 / (n * A.shape[0])) for A, _ in sparse_shards], format="csr")
        c = smoothness_constants("least-squares", sparse_shards, lam)
        assert c.mu == smoothness._extreme_eig(W, "SA") + lam and c.mu_kind == smoothness.MU_STRONG  # the very bits
        if eigensolver == "dense":  # the normal equations, solved as they were
            Wn = sp.vstack([A / np.sqrt(n * A.shape[0]) for A, _ in sparse_shards], format="csr")
            rhs = sum(A.T @ y / A.shape[0] for A, y in sparse_shards) / n
            x_star = np.linalg.solve((Wn.T @ Wn).toarray() + lam * np.eye(W.shape[1]), rhs)
            assert c.f_star == LeastSquaresShards(sparse_shards, lam).loss(x_star)
        assert c.mu == pytest.approx(dense_reference(shards, lam)["mu"], rel=1e-9)


def test_lam_zero_when_lanczos_cannot_find_the_positive_eigenvalue(monkeypatch):
    """Full-rank data still get lambda_min as before; rank-deficient data get the error, not a wrong mu."""
    monkeypatch.setattr(smoothness, "DENSE_EIG_MAX_D", 0)
    monkeypatch.setattr(spectrum, "MAX_PASSES", 0)
    full = [(sp.csr_matrix(A), y) for A, y in random_shards([30, 40, 50], 26, seed=6)]
    W = sp.vstack([A * np.sqrt(1.0 / (3 * A.shape[0])) for A, _ in full], format="csr")
    c = smoothness_constants("least-squares", full, 0.0)
    assert c.mu == smoothness._extreme_eig(W, "SA") and c.mu_kind == smoothness.MU_STRONG
    deficient = [(sp.csr_matrix(A), y) for A, y in deficient_shards([23, 31, 40], seed=5)]
    with pytest.raises(ValueError, match="did not separate the smallest positive eigenvalue"):
        smoothness_constants("least-squares", deficient, 0.0)


# --- runs ------------------------------------------------------------------------------------------------


def write_problem(path: Path, N: int = 60, d: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return write_exact_libsvm(path, N, d, seed, density=0.5)


def run_least_squares(tmp_path: Path, name: str, *extra: str) -> tuple[dict, dict]:
    out = tmp_path / f"{name}.h5"
    done = ef21(["run", "--backend", "serial", "--dataset", str(tmp_path / "small.svm"), "--problem", "least-squares",
                 "--workers", "3", "--quiet", "--out", str(out), *extra])
    assert done.returncode == 0, done.stderr
    with h5py.File(out, "r") as f:
        return {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}, dict(f.attrs)


def test_the_run_logs_loss_gap(tmp_path):
    A, y = write_problem(tmp_path / "small.svm")
    ref = dense_reference([(A[i * 20:(i + 1) * 20], y[i * 20:(i + 1) * 20]) for i in range(3)], 0.1)
    # rounds chosen so the gap stays far above rounding (GD reaches 3e-11 at round 20, EF21 top-2 5e-9 at 200)
    for algorithm, rounds in (("gd", "20"), ("ef21", "200")):
        data, attrs = run_least_squares(tmp_path, algorithm, "--algorithm", algorithm, "--k", "2", "--rounds", rounds)
        assert attrs["f_star"] == pytest.approx(ref["f_star"], rel=1e-12)
        assert attrs["mu"] == pytest.approx(ref["mu"], rel=1e-10)
        gap = data["loss_gap"]
        np.testing.assert_array_equal(gap, data["loss"] - attrs["f_star"])  # the very definition, bit for bit
        assert (gap > 0).all() and gap[-1] < 0.5 * gap[0]
        if algorithm == "gd":  # gamma <= 1/L: f decreases at every round
            assert (np.diff(gap) < 0).all()
        else:  # EF21 decreases the Lyapunov function of Theorem 3 at every round (top-k is deterministic)
            theta = 1.0 - math.sqrt(1.0 - attrs["alpha"])
            psi = gap + attrs["gamma"] / theta * data["distortion"]
            assert (np.diff(psi) < 0).all()
            assert (np.diff(gap) <= 0).all()  # observed here too, though Theorem 3 does not promise it


@pytest.mark.parametrize("lam,k", [(0.1, 1), (0.1, 7), (10.0, 1), (10.0, 7)])
def test_pl_stepsize_is_theorem_3(lam, k, tmp_path):
    A, y = write_problem(tmp_path / "small.svm", seed=1)
    ref = dense_reference([(A[i * 20:(i + 1) * 20], y[i * 20:(i + 1) * 20]) for i in range(3)], lam)
    compressor = ["--compressor", "top-k", "--k", str(k)]
    _, attrs = run_least_squares(tmp_path, f"lam{lam}k{k}", "--lam", str(lam), *compressor, "--rounds", "5")
    alpha = k / 7
    theta = 1.0 - math.sqrt(1.0 - alpha)
    beta = (1.0 - alpha) / theta if alpha < 1 else 0.0
    first = 1.0 / (ref["L"] + ref["L_tilde"] * math.sqrt(2.0 * beta / theta))
    second = theta / (2.0 * ref["mu"])
    assert attrs["gamma_theory"] == pytest.approx(min(first, second), rel=1e-10)
    assert attrs["gamma"] == attrs["gamma_theory"]
    # lam = 10 makes f well conditioned (mu close to L), so theta/(2 mu) is the smaller term: both branches run
    assert (second < first) == (lam == 10.0)


def test_a_run_at_lam_zero_uses_theorem_3_with_the_pl_constant(tmp_path):
    shards = write_deficient(tmp_path / "small.svm", [20, 20, 21], seed=8)
    ref = dense_reference(shards, 0.0)
    assert ref["rank"] < shards[0][0].shape[1]
    data, attrs = run_least_squares(tmp_path, "lam0", "--lam", "0", "--algorithm", "ef21", "--k", "3",
                                    "--rounds", "100")
    assert attrs["mu_kind"] == "PL: smallest positive eigenvalue"
    assert attrs["mu"] == pytest.approx(ref["mu_pl"], rel=1e-9)
    assert attrs["f_star"] == pytest.approx(ref["f_star"], rel=1e-12)
    alpha = 3 / attrs["d"]
    theta = 1.0 - math.sqrt(1.0 - alpha)
    beta = (1.0 - alpha) / theta
    gamma = min(1.0 / (ref["L"] + ref["L_tilde"] * math.sqrt(2.0 * beta / theta)), theta / (2.0 * ref["mu_pl"]))
    assert attrs["gamma_theory"] == pytest.approx(gamma, rel=1e-9) and attrs["gamma"] == attrs["gamma_theory"]
    np.testing.assert_array_equal(data["loss_gap"], data["loss"] - attrs["f_star"])
    psi = data["loss_gap"] + attrs["gamma"] / theta * data["distortion"]  # Theorem 3's Lyapunov function
    assert (data["loss_gap"] > 0).all() and (np.diff(psi) < 0).all() and psi[-1] < 0.8 * psi[0]


def test_lam_zero_is_refused_only_on_all_zero_data(tmp_path):
    (tmp_path / "zero.svm").write_text("1 1:0 3:0\n0 2:0\n1 3:0\n0 1:0\n")
    done = ef21(["run", "--backend", "serial", "--dataset", str(tmp_path / "zero.svm"), "--problem", "least-squares",
                 "--lam", "0", "--workers", "2", "--quiet", "--out", str(tmp_path / "zero.h5")])
    assert done.returncode == 2 and not (tmp_path / "zero.h5").exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ef21-mpi: error: --problem least-squares --lam 0: every feature")
    assert "zero.svm is zero" in lines[0] and "(mu = 0)" in lines[0]


@pytest.mark.mpi
def test_mpi_least_squares_log_has_the_same_loss_gap(tmp_path):
    write_problem(tmp_path / "small.svm")
    args = ["run", "--dataset", str(tmp_path / "small.svm"), "--problem", "least-squares", "--rounds", "10", "--quiet"]
    serial = ef21([*args, "--backend", "serial", "--workers", "2", "--out", str(tmp_path / "s.h5")])
    mpi = ef21([*args, "--backend", "mpi", "--out", str(tmp_path / "m.h5")], ranks=3)
    assert serial.returncode == 0 and mpi.returncode == 0, serial.stderr + mpi.stderr
    with h5py.File(tmp_path / "s.h5", "r") as s, h5py.File(tmp_path / "m.h5", "r") as m:
        np.testing.assert_array_equal(s["loss_gap"][()], m["loss_gap"][()])
