"""The MPI backend against the serial backend, bit for bit, plus failure handling. Every launch has a timeout."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import MPI_LIBRARY, assert_same_log, ef21, read_log, write_libsvm

pytestmark = pytest.mark.mpi

CONFIGS = [(alg, comp) for alg in ("ef21", "ef21-plus", "ef", "dcgd") for comp in ("top-k", "rand-k")] + [("gd", "top-k")]


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("algorithm,compressor", CONFIGS)
def test_mpi_equals_serial_bit_for_bit(algorithm, compressor, n, tmp_path):
    data = write_libsvm(tmp_path / "small.svm")
    common = ["run", "--dataset", str(data), "--algorithm", algorithm, "--compressor", compressor, "--k", "3",
              "--rounds", "60", "--stepsize-multiplier", "4", "--seed", "5", "--quiet"]
    serial = ef21([*common, "--backend", "serial", "--workers", str(n), "--out", str(tmp_path / "s.h5")])
    assert serial.returncode == 0, serial.stderr
    # one worker per rank (spread): every message crosses MPI; packing is tested in test_placement.py
    mpi = ef21([*common, "--backend", "mpi", "--placement", "spread", "--out", str(tmp_path / "m.h5")], ranks=n + 1)
    assert mpi.returncode == 0, mpi.stderr
    assert_same_log(tmp_path / "s.h5", tmp_path / "m.h5")
    data_m, attrs = read_log(tmp_path / "m.h5")
    assert attrs["backend"] == "mpi" and attrs["world_size"] == n + 1 and MPI_LIBRARY in attrs["mpi_library"]
    assert list(attrs["worker_rank"]) == list(range(1, n + 1))
    # top-k / rand-k messages: k float64 values + k int32 indices (+ the EF21+ flag byte) after round 0
    flag = 8 if algorithm == "ef21-plus" else 0
    per_round = 12 * 64 if algorithm == "gd" else 3 * (64 + 32) + flag
    assert (data_m["bits_up"][1:] == per_round).all()
    assert (data_m["coords_up"][1:] == (12 if algorithm == "gd" else 3)).all()


def test_mpi_log_every_and_init_variants(tmp_path):
    data = write_libsvm(tmp_path / "small.svm", N=50, d=10, seed=3)
    for init in ("compressed", "zero"):
        common = ["run", "--dataset", str(data), "--algorithm", "ef21", "--k", "2", "--rounds", "45", "--init", init,
                  "--log-every", "10", "--quiet"]
        serial = ef21([*common, "--backend", "serial", "--workers", "3", "--out", str(tmp_path / f"s{init}.h5")])
        mpi = ef21([*common, "--out", str(tmp_path / f"m{init}.h5")], ranks=4)  # --backend auto picks MPI
        assert serial.returncode == 0 and mpi.returncode == 0, serial.stderr + mpi.stderr
        assert_same_log(tmp_path / f"s{init}.h5", tmp_path / f"m{init}.h5")
        rounds = read_log(tmp_path / f"m{init}.h5")[0]["round"]
        assert list(rounds) == [0, 10, 20, 30, 40, 45]


@pytest.mark.slow
def test_21_ranks_on_phishing_bit_for_bit(tmp_path, data_dir):
    common = ["run", "--dataset", "phishing", "--data-dir", str(data_dir), "--algorithm", "ef21", "--k", "1",
              "--rounds", "300", "--quiet"]
    serial = ef21([*common, "--backend", "serial", "--workers", "20", "--out", str(tmp_path / "s.h5")])
    assert serial.returncode == 0, serial.stderr
    mpi = ef21([*common, "--out", str(tmp_path / "m.h5")], ranks=21)
    assert mpi.returncode == 0, mpi.stderr
    assert_same_log(tmp_path / "s.h5", tmp_path / "m.h5")
    data, attrs = read_log(tmp_path / "m.h5")
    assert attrs["n_workers"] == 20 and data["bits_up"].shape == (301, 20)


def test_worker_exception_fails_the_job_and_keeps_earlier_rows(tmp_path):
    data = write_libsvm(tmp_path / "small.svm")
    common = ["run", "--dataset", str(data), "--algorithm", "ef21", "--k", "2", "--rounds", "50", "--quiet"]
    reference = ef21([*common, "--backend", "serial", "--workers", "4", "--out", str(tmp_path / "ref.h5")])
    assert reference.returncode == 0
    fault = {"EF21_MPI_FAULT": "rank=3,round=17,action=raise", "EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}
    started = time.monotonic()
    failed = ef21([*common, "--placement", "spread", "--out", str(tmp_path / "f.h5")], ranks=5, env=fault, timeout=60)
    assert time.monotonic() - started < 30
    assert failed.returncode != 0
    assert "worker 2 (rank 3) failed in round 17" in failed.stderr
    logged, attrs = read_log(tmp_path / "f.h5")
    ref, _ = read_log(tmp_path / "ref.h5")
    assert attrs["status"] == "failed"
    assert list(logged["round"]) == list(range(17))
    for key in ("grad_norm_sq", "loss", "bits_up", "distortion"):
        np.testing.assert_array_equal(logged[key], ref[key][:17])


ARM = "yes, crash this run on purpose"  # faults.py's phrase, written out here
FAULT_SPEC = "rank=2,round=4,action=raise"  # worker 1 raises in round 4


def test_fault_needs_both_variables(tmp_path):
    """Both variables: the injector really fires (serial and under mpiexec). Either alone: the run is untouched."""
    data = write_libsvm(tmp_path / "small.svm")
    args = ["run", "--dataset", str(data), "--rounds", "10", "--k", "2", "--quiet"]
    serial = [*args, "--backend", "serial", "--workers", "2"]
    # "" rather than unset: helpers.ef21 can only add to the environment, and an empty spec is no spec
    unarmed = {"none": {"EF21_MPI_FAULT": "", "EF21_MPI_FAULT_ARMED": ""},
               "spec only": {"EF21_MPI_FAULT": FAULT_SPEC, "EF21_MPI_FAULT_ARMED": ""},
               "armed only": {"EF21_MPI_FAULT": "", "EF21_MPI_FAULT_ARMED": ARM},
               "wrong phrase": {"EF21_MPI_FAULT": FAULT_SPEC, "EF21_MPI_FAULT_ARMED": "yes"}}
    for name, env in unarmed.items():
        out = tmp_path / f"{name.replace(' ', '-')}.h5"
        done = ef21([*serial, "--out", str(out)], env=env)
        assert done.returncode == 0 and "error" not in done.stderr, f"{name}: {done.stderr}"
        logged, attrs = read_log(out)
        assert attrs["status"] == "completed" and list(logged["round"]) == list(range(11)), name
        if name != "none":
            assert_same_log(tmp_path / "none.h5", out)
    ref, _ = read_log(tmp_path / "none.h5")

    armed = {"EF21_MPI_FAULT": FAULT_SPEC, "EF21_MPI_FAULT_ARMED": ARM}
    launches = {"serial": (ef21([*serial, "--out", str(tmp_path / "s.h5")], env=armed, timeout=60),
                           "worker 1 failed in round 4", tmp_path / "s.h5"),
                "mpi": (ef21([*args, "--placement", "spread", "--out", str(tmp_path / "m.h5")], ranks=3, env=armed,
                             timeout=60),
                        "worker 1 (rank 2) failed in round 4", tmp_path / "m.h5")}
    for backend, (done, names, out) in launches.items():
        errors = [line for line in done.stderr.splitlines() if line.startswith("ef21-mpi:")]
        assert done.returncode == 1, f"{backend}: exit {done.returncode}\n{done.stderr}"
        assert len(errors) == 1 and names in errors[0] and "injected fault" in errors[0], f"{backend}: {done.stderr}"
        assert "Traceback" not in done.stderr, backend
        logged, attrs = read_log(out)
        assert attrs["status"] == "failed", backend
        assert list(logged["round"]) == [0, 1, 2, 3], backend  # round 4's row is dropped
        for key in ("grad_norm_sq", "loss", "distortion", "bits_up", "coords_up", "bits_down"):
            np.testing.assert_array_equal(logged[key], ref[key][:4], err_msg=f"{backend} {key}")


def test_world_size_one_under_mpi_backend_is_an_input_error(tmp_path):
    data = write_libsvm(tmp_path / "small.svm")
    out = ef21(["run", "--dataset", str(data), "--backend", "mpi", "--out", str(tmp_path / "x.h5")], ranks=1)
    assert out.returncode == 2
    assert "needs at least 2 ranks" in out.stderr and "Traceback" not in out.stderr


def test_more_workers_than_rows_is_an_input_error_on_every_rank(tmp_path):
    data = write_libsvm(tmp_path / "small.svm", N=3)
    started = time.monotonic()
    out = ef21(["run", "--dataset", str(data), "--out", str(tmp_path / "x.h5")], ranks=6, timeout=60)
    assert time.monotonic() - started < 30
    assert out.returncode == 2
    assert out.stderr.count("ef21-mpi: error:") == 1 and "Traceback" not in out.stderr
    assert "ef21-mpi: error: cannot split 3 rows among 5 workers; expected 1 <= workers <= 3" in out.stderr
    assert not (tmp_path / "x.h5").exists()


# --- several workers per rank ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm,extra", [("ef21", ["--compressor", "top-k"]),
                                             ("ef21-plus", ["--compressor", "rand-k"]),
                                             ("ef21-sgd", ["--batch-size", "4"])])
def test_ranks_holding_several_workers_equal_serial_bit_for_bit(algorithm, extra, tmp_path):
    """5 workers on 2 worker ranks (3 + 2), logged every 7th round: the same log as one process of 5."""
    data = write_libsvm(tmp_path / "small.svm", N=70, d=12, seed=4)
    common = ["run", "--dataset", str(data), "--algorithm", algorithm, "--k", "2", "--rounds", "40", *extra,
              "--log-every", "7", "--seed", "2", "--workers", "5", "--quiet"]
    serial = ef21([*common, "--backend", "serial", "--out", str(tmp_path / "s.h5")])
    assert serial.returncode == 0, serial.stderr
    mpi = ef21([*common, "--out", str(tmp_path / "m.h5")], ranks=3)
    assert mpi.returncode == 0, mpi.stderr
    assert_same_log(tmp_path / "s.h5", tmp_path / "m.h5")
    data_m, attrs = read_log(tmp_path / "m.h5")
    assert attrs["n_workers"] == 5 and attrs["world_size"] == 3
    assert list(data_m["round"]) == [0, 7, 14, 21, 28, 35, 40] and data_m["bits_up"].shape == (7, 5)
    flag = 8 if algorithm == "ef21-plus" else 0
    rounds_per_row = np.diff(data_m["round"])[:, None]
    assert (data_m["bits_up"][1:] == rounds_per_row * (2 * 96 + flag)).all()  # k = 2 entries per worker per round


def test_fault_in_a_rank_holding_several_workers_names_the_worker(tmp_path):
    data = write_libsvm(tmp_path / "small.svm")
    fault = {"EF21_MPI_FAULT": "rank=4,round=9,action=raise", "EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}
    failed = ef21(["run", "--dataset", str(data), "--rounds", "30", "--workers", "4", "--quiet", "--placement",
                   "spread", "--out", str(tmp_path / "f.h5")], ranks=3, env=fault, timeout=60)
    assert failed.returncode != 0
    assert "worker 3 (rank 2) failed in round 9" in failed.stderr  # workers 2-3 live on rank 2
    logged, attrs = read_log(tmp_path / "f.h5")
    assert attrs["status"] == "failed" and list(logged["round"]) == list(range(9))


def test_fewer_workers_than_worker_ranks_is_an_input_error_on_every_rank(tmp_path):
    data = write_libsvm(tmp_path / "small.svm")
    out = ef21(["run", "--dataset", str(data), "--workers", "2", "--out", str(tmp_path / "x.h5")], ranks=4, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("ef21-mpi: error:") == 1 and "--workers 2 leaves worker ranks idle" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x.h5").exists()
