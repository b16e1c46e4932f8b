"""The prepared shard store (runtime/store.py, ``ef21-mpi data prepare``): its content against the source file,
runs on it against runs on the LibSVM file bit for bit (serial and MPI), and its refusals."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import VOLATILE, VOLATILE_ATTRS, ef21, read_file, write_deficient, write_exact_libsvm

from ef21_mpi.core.smoothness import curvature
from ef21_mpi.runtime import store as shard_store

STORE_ATTRS = VOLATILE_ATTRS | {"shard_store", "config"}  # config is compared below, --dataset aside


def assert_same_run(libsvm_log, store_log) -> None:
    """Bit for bit, except how the data was named: the store's run records the store beside the source."""
    da, aa = read_file(libsvm_log)
    db, ab = read_file(store_log)
    assert set(da) == set(db)
    for key in set(da) - VOLATILE:
        np.testing.assert_array_equal(da[key], db[key], err_msg=key)
    assert set(aa) - STORE_ATTRS == set(ab) - STORE_ATTRS
    for key in set(aa) - STORE_ATTRS:
        np.testing.assert_array_equal(aa[key], ab[key], err_msg=key)
    ca, cb = json.loads(aa["config"]), json.loads(ab["config"])
    assert cb.pop("dataset") == str(ab["shard_store"])
    ca.pop("dataset")
    assert ca == cb


@pytest.fixture
def source(tmp_path):
    A, y = write_exact_libsvm(tmp_path / "src.svm", N=47, d=9, seed=11)
    return tmp_path / "src.svm", A, y


def prepare(source_path, out, workers=3, *extra):
    done = ef21(["data", "prepare", str(source_path), "--workers", str(workers), "--out", str(out), *extra])
    assert done.returncode == 0, done.stderr
    return out


def test_store_holds_the_sequential_shards_and_their_checksums(source, tmp_path):
    path, A, y = source
    store = prepare(path, tmp_path / "s.h5", 3)
    with h5py.File(store, "r") as f:
        assert f.attrs["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert list(f.attrs["shard_sizes"]) == [15, 15, 17]  # SPEC: the remainder goes to the last worker
        starts = [0, 15, 30, 47]
        for i in range(3):
            g = f[f"shard/{i}"]
            rows = slice(starts[i], starts[i + 1])
            dense = np.zeros((starts[i + 1] - starts[i], 9))
            indptr, indices, data = g["indptr"][()], g["indices"][()], g["data"][()]
            for r in range(dense.shape[0]):
                dense[r, indices[indptr[r]:indptr[r + 1]]] = data[indptr[r]:indptr[r + 1]]
            np.testing.assert_array_equal(dense, A[rows])
            np.testing.assert_array_equal(g["y"][()], y[rows])
            h = hashlib.sha256(np.array([dense.shape[0], 9, len(data)], dtype=np.int64).tobytes())
            for array in (indptr.astype(np.int64), indices.astype(np.int32), data, g["y"][()]):
                h.update(array.tobytes())
            assert g.attrs["sha256"] == h.hexdigest()
        # the stored curvature: L_i - lam-part = largest eigenvalue of A_i^T A_i / (4 N_i), from a dense eigensolver
        blocks = [A[starts[i]:starts[i + 1]] for i in range(3)]
        expected = [np.linalg.eigvalsh(B.T @ B / (4 * B.shape[0]))[-1] for B in blocks]
        np.testing.assert_allclose(f.attrs["eig_i"], expected, rtol=1e-12)
        mean = sum(B.T @ B / (4 * B.shape[0]) for B in blocks) / 3
        np.testing.assert_allclose(f.attrs["eig"], np.linalg.eigvalsh(mean)[-1], rtol=1e-12)


RUN = ["run", "--algorithm", "ef21", "--k", "2", "--rounds", "30", "--log-every", "4", "--lam", "0.05", "--quiet"]


@pytest.mark.parametrize("problem", ["logreg", "least-squares"])
def test_serial_run_on_the_store_equals_the_run_on_the_file(problem, source, tmp_path):
    """logreg: constants from the stored curvature; least squares: computed from the shards at start-up."""
    path, _, _ = source
    store = prepare(path, tmp_path / "s.h5", 3)
    args = [*RUN, "--problem", problem, "--backend", "serial", "--workers", "3"]
    a = ef21([*args, "--dataset", str(path), "--out", str(tmp_path / "a.h5")])
    b = ef21([*args, "--dataset", str(store), "--out", str(tmp_path / "b.h5")])
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert_same_run(tmp_path / "a.h5", tmp_path / "b.h5")


def test_least_squares_store_keeps_both_ends_of_the_bottom_of_the_spectrum(tmp_path):
    """lambda_min (for lam > 0) and the smallest positive eigenvalue (for lam = 0), as a run computes them; a run at
    lam = 0 on the store equals the run on the file; a store written before lam = 0 was PL still reads."""
    shards = write_deficient(tmp_path / "def.svm", [15, 15, 17], seed=3)
    store = prepare(tmp_path / "def.svm", tmp_path / "s.h5", 3, "--problem", "least-squares")
    W = np.vstack([A / np.sqrt(3 * A.shape[0]) for A, _ in shards])
    sigma = np.linalg.svd(W, compute_uv=False)
    rank = int(np.sum(sigma > sigma[0] * max(W.shape) * np.finfo(np.float64).eps))
    assert rank < W.shape[1]
    with h5py.File(store, "r") as f:
        assert f.attrs["eig_min_positive"] == pytest.approx(sigma[rank - 1] ** 2, rel=1e-10)
        assert abs(f.attrs["eig_min"]) < 1e-12 * f.attrs["eig"]
        for lam, key in ((0.0, "eig_min_positive"), (0.1, "eig_min")):  # what a run at that lam computes
            computed = curvature("least-squares", [(sp.csr_matrix(A), y) for A, y in shards], lam)[key]
            assert f.attrs[key] == computed
    args = [*RUN, "--problem", "least-squares", "--lam", "0", "--backend", "serial", "--workers", "3"]
    a = ef21([*args, "--dataset", str(tmp_path / "def.svm"), "--out", str(tmp_path / "a.h5")])
    b = ef21([*args, "--dataset", str(store), "--out", str(tmp_path / "b.h5")])
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert_same_run(tmp_path / "a.h5", tmp_path / "b.h5")
    assert read_file(tmp_path / "b.h5")[1]["mu_kind"] == "PL: smallest positive eigenvalue"
    with h5py.File(store, "r+") as f:
        del f.attrs["eig_min_positive"]
    assert shard_store.info(str(store)).eigs["eig_min_positive"] is None


@pytest.mark.mpi
@pytest.mark.parametrize("placement", ["spread", "pack"])
def test_mpi_run_on_the_store_equals_the_serial_run_on_the_file(placement, source, tmp_path):
    path, _, _ = source
    store = prepare(path, tmp_path / "s.h5", 4)
    a = ef21([*RUN, "--backend", "serial", "--workers", "4", "--dataset", str(path), "--out", str(tmp_path / "a.h5")])
    b = ef21([*RUN, "--placement", placement, "--dataset", str(store), "--out", str(tmp_path / "b.h5")], ranks=5)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert_same_run(tmp_path / "a.h5", tmp_path / "b.h5")


@pytest.mark.mpi
def test_a_corrupted_shard_stops_the_job(source, tmp_path):
    path, _, _ = source
    store = prepare(path, tmp_path / "s.h5", 2)
    with h5py.File(store, "r+") as f:
        f["shard/1/data"][0] += 1.0
    out = ef21([*RUN, "--dataset", str(store), "--placement", "spread", "--out", str(tmp_path / "b.h5")], ranks=3,
               timeout=60)
    assert out.returncode != 0
    assert out.returncode == 2 and out.stderr.count("ef21-mpi: error:") == 1, out.stderr
    assert "rank 2 cannot read its shards" in out.stderr and "shard 1 does not match its checksum" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "b.h5").exists()
    serial = ef21([*RUN, "--dataset", str(store), "--backend", "serial", "--workers", "2",
                   "--out", str(tmp_path / "c.h5")])
    assert serial.returncode == 2 and "ef21-mpi: error:" in serial.stderr and "checksum" in serial.stderr


def test_store_refuses_another_worker_count_and_shuffle(source, tmp_path):
    path, _, _ = source
    store = prepare(path, tmp_path / "s.h5", 3)
    for extra, message in ((["--workers", "4"], "holds 3 shards but the run has 4 workers"),
                           (["--workers", "3", "--shuffle"], "holds the sequential shards")):
        out = ef21([*RUN, "--backend", "serial", "--dataset", str(store), *extra, "--out", str(tmp_path / "x.h5")])
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert not (tmp_path / "x.h5").exists()
    again = ef21(["data", "prepare", str(path), "--workers", "3", "--out", str(store)])
    assert again.returncode == 2 and "already exists" in again.stderr
