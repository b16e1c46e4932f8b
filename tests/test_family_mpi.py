"""The new methods and compressors under MPI: the same log as the serial backend, bit for bit, and a killed then
resumed run equal to an uninterrupted one (the master's sampler and EF21-BC's downlink state go through the
checkpoint). Small data, at most 5 ranks, every launch with a timeout."""

from __future__ import annotations

import pytest
from helpers import assert_same_log, ef21, read_log, write_libsvm

pytestmark = pytest.mark.mpi

METHODS = {
    "ef21-pp": ["--algorithm", "ef21-pp", "--participation", "0.5", "--compressor", "rand-k"],
    "ef21-bc": ["--algorithm", "ef21-bc", "--down-compressor", "rand-k", "--down-k", "3"],
    "ef21-hb": ["--algorithm", "ef21-hb", "--momentum", "0.7"],
    "ef21-sgdm": ["--algorithm", "ef21-sgdm", "--momentum", "0.4", "--batch-size", "5", "--compressor", "rand-k"],
    "natural": ["--algorithm", "ef21-plus", "--compressor", "natural"],
    "dithering": ["--algorithm", "ef21-bc", "--compressor", "dithering", "--levels", "3",
                  "--down-compressor", "natural"],
    "rand-k-unbiased": ["--algorithm", "dcgd", "--compressor", "rand-k-unbiased"],
}


@pytest.mark.parametrize("workers", [4, 5], ids=["one-per-rank", "blocks"])
@pytest.mark.parametrize("name", list(METHODS))
def test_mpi_equals_serial_bit_for_bit(name, workers, tmp_path):
    data = write_libsvm(tmp_path / "small.svm", N=70, d=12, seed=4)
    common = ["run", "--dataset", str(data), "--k", "2", "--rounds", "40", "--seed", "3", "--workers", str(workers),
              "--stepsize-multiplier", "4", "--log-every", "3", "--quiet", *METHODS[name]]
    serial = ef21([*common, "--backend", "serial", "--out", str(tmp_path / "s.h5")])
    assert serial.returncode == 0, serial.stderr
    mpi = ef21([*common, "--out", str(tmp_path / "m.h5")], ranks=5)
    assert mpi.returncode == 0, mpi.stderr
    assert_same_log(tmp_path / "s.h5", tmp_path / "m.h5")
    _, attrs = read_log(tmp_path / "m.h5")
    assert attrs["backend"] == "mpi" and attrs["n_workers"] == workers and attrs["status"] == "completed"


ARMED = {"EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}


@pytest.mark.parametrize("name", ["ef21-pp", "ef21-bc", "ef21-hb", "ef21-sgdm", "dithering"])
def test_kill_and_resume_is_bit_identical(name, tmp_path):
    data = write_libsvm(tmp_path / "small.svm", N=80, d=14, seed=9)
    common = ["run", "--dataset", str(data), "--k", "2", "--rounds", "90", "--seed", "3", "--checkpoint-every", "10",
              "--flush-every", "1", "--quiet", *METHODS[name]]
    ref = ef21([*common, "--backend", "serial", "--workers", "4", "--out", str(tmp_path / "ref.h5")])
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run.h5"
    fault = {"EF21_MPI_FAULT": "rank=2,round=37,action=kill", **ARMED}  # a worker rank dies in round 37
    crashed = ef21([*common, "--out", str(out)], ranks=5, env=fault, timeout=60)
    assert crashed.returncode != 0
    assert read_log(out)[1]["status"] == "running"
    resumed = ef21(["run", "--resume", str(out), "--quiet"], ranks=5)  # continues from round 30's checkpoint
    assert resumed.returncode == 0, resumed.stderr
    assert_same_log(tmp_path / "ref.h5", out)
    _, attrs = read_log(out)
    assert attrs["status"] == "completed" and '"round": 30' in attrs["resume_history"]
    # and serially: killed by the master's own fault, resumed in one process
    out2 = tmp_path / "run2.h5"
    crashed = ef21([*common, "--out", str(out2)], ranks=5, env={"EF21_MPI_FAULT": "rank=0,round=55,action=kill",
                                                                **ARMED}, timeout=60)
    assert crashed.returncode != 0
    resumed = ef21(["run", "--resume", str(out2), "--backend", "serial", "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_log(tmp_path / "ref.h5", out2)
