"""``ef21-mpi run --resume LOG --rounds N``: a completed (or interrupted) R-round run extended to N rounds must
give the log of an N-round run from scratch, bit for bit (every dataset, the final state, the attributes but
times and the command line), and every run that cannot be extended is refused with one line, its log untouched."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from helpers import assert_same_log, ef21, program_stderr, read_file, write_libsvm

from ef21_mpi.runtime.checkpoint import FINAL_GROUP, checkpoint_path

ARMED = {"EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}
# methods whose state differs in kind: deterministic (Top-k), random compressor and x^0, minibatches, a master
# with its own generator (EF21-PP's sampler)
CASES = {
    "ef21-top-k": ["--algorithm", "ef21"],
    "ef21-rand-k-x0-normal": ["--algorithm", "ef21", "--compressor", "rand-k", "--x0", "normal"],
    "ef21-sgd": ["--algorithm", "ef21-sgd", "--batch-size", "3"],
    "ef21-pp": ["--algorithm", "ef21-pp", "--participation", "0.5", "--compressor", "rand-k"],
}


@pytest.fixture
def data(tmp_path):
    return write_libsvm(tmp_path / "small.svm", N=80, d=14, seed=9)


def args(data, case: str, rounds: int, out, *extra: str) -> list[str]:
    # 37 is not a multiple of --log-every 5: the short run logs round 37, a longer one does not
    return ["run", "--dataset", str(data), *CASES[case], "--k", "2", "--workers", "4", "--seed", "3",
            "--log-every", "5", "--rounds", str(rounds), "--out", str(out), "--quiet", "--backend", "serial", *extra]


def run_ok(command: list[str], **kw) -> None:
    done = ef21(command, **kw)
    assert done.returncode == 0, done.stderr


def extend(log, rounds: int, *extra: str, **kw) -> None:
    run_ok(["run", "--resume", str(log), "--rounds", str(rounds), "--quiet", *extra], **kw)


@pytest.mark.parametrize("case", sorted(CASES))
def test_extending_a_completed_run_equals_the_longer_run(case, data, tmp_path):
    short, full = tmp_path / "short.h5", tmp_path / "full.h5"
    run_ok(args(data, case, 37, short))
    with h5py.File(short, "r") as f:
        assert f.attrs["status"] == "completed" and FINAL_GROUP in f and f["round"][-1] == 37
    extend(short, 60)
    run_ok(args(data, case, 60, full))
    assert_same_log(full, short)  # rows, x_final, final state, rounds_requested, config, status, rounds_done
    extend(short, 80)  # an extended run extends again
    run_ok(args(data, case, 80, full, "--overwrite"))
    assert_same_log(full, short)
    with h5py.File(short, "r") as f:
        history = json.loads(f.attrs["resume_history"])
        assert [(h["round"], h["rounds"]) for h in history] == [(37, 60), (60, 80)]
        assert f.attrs["rounds_requested"] == 80 and f.attrs["rows"] == 17
    assert not checkpoint_path(short).exists()


@pytest.mark.parametrize("case", ["ef21-top-k", "ef21-rand-k-x0-normal"])
def test_final_state_is_the_state_a_longer_run_checkpoints(case, data, tmp_path):
    """The final state of a 40-round run equals the checkpoint a 60-round run takes after round 40."""
    short, full = tmp_path / "short.h5", tmp_path / "full.h5"
    run_ok(args(data, case, 40, short))
    env = {"EF21_MPI_FAULT": "rank=0,round=41,action=kill", **ARMED}  # dies in round 41, after checkpoint 40
    done = ef21(args(data, case, 60, full, "--checkpoint-every", "40"), env=env)
    assert done.returncode != 0
    final, _ = read_file(short, groups=True)
    ckpt, _ = read_file(checkpoint_path(full), groups=True)
    stored = {key[len(FINAL_GROUP) + 1:]: value for key, value in final.items() if key.startswith(FINAL_GROUP)}
    assert stored.keys() == ckpt.keys() and len(stored) >= 5
    for key in ckpt:
        np.testing.assert_array_equal(stored[key], ckpt[key], err_msg=key)


def test_extending_an_interrupted_run_equals_the_longer_run(data, tmp_path):
    out, full = tmp_path / "run.h5", tmp_path / "full.h5"
    env = {"EF21_MPI_FAULT": "rank=0,round=23,action=kill", **ARMED}
    crashed = ef21(args(data, "ef21-rand-k-x0-normal", 37, out, "--checkpoint-every", "10"), env=env)
    assert crashed.returncode != 0
    extend(out, 60)
    run_ok(args(data, "ef21-rand-k-x0-normal", 60, full))
    assert_same_log(full, out)


def test_an_extension_killed_before_its_first_checkpoint_resumes_from_the_final_state(data, tmp_path):
    """Extending saves the final state as the run's checkpoint before the log loses it: killed in round 45, the
    extension resumes from round 37 (not from round 0) and still ends as the 60-round run."""
    out, full = tmp_path / "run.h5", tmp_path / "full.h5"
    run_ok(args(data, "ef21-sgd", 37, out))
    env = {"EF21_MPI_FAULT": "rank=0,round=45,action=kill", **ARMED}
    killed = ef21(["run", "--resume", str(out), "--rounds", "60", "--quiet"], env=env)
    assert killed.returncode != 0
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "running" and FINAL_GROUP not in f
    run_ok(["run", "--resume", str(out), "--quiet"])
    run_ok(args(data, "ef21-sgd", 60, full))
    assert_same_log(full, out)
    with h5py.File(out, "r") as f:
        assert [h["round"] for h in json.loads(f.attrs["resume_history"])] == [37, 37]


@pytest.mark.mpi
def test_a_serial_run_extended_under_mpi_equals_the_longer_serial_run(data, tmp_path):
    short, full = tmp_path / "short.h5", tmp_path / "full.h5"
    run_ok(args(data, "ef21-pp", 37, short))
    extend(short, 60, "--backend", "mpi", ranks=3)  # 4 workers on 2 worker ranks
    run_ok(args(data, "ef21-pp", 60, full))
    assert_same_log(full, short)
    with h5py.File(short, "r") as f:
        assert json.loads(f.attrs["resume_history"])[0]["backend"] == "mpi"


def refused(command: list[str], log, *fragments: str) -> None:
    before = log.read_bytes()
    done = ef21(command)
    lines = [line for line in program_stderr(done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("ef21-mpi: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert log.read_bytes() == before and not checkpoint_path(log).exists()


def test_runs_that_cannot_be_extended_are_refused(data, tmp_path):
    log = tmp_path / "run.h5"
    run_ok(args(data, "ef21-top-k", 20, log))
    resume = ["run", "--resume", str(log), "--quiet"]
    refused(resume, log, "already completed (20 rounds)", "pass --rounds N > 20")
    refused([*resume, "--rounds", "20"], log, "--rounds 20 is not more than its 20")
    refused([*resume, "--rounds", "30", "--k", "3"], log, "--k 3 differs from the original run's 2")
    refused([*resume, "--rounds", "30", "--seed", "4"], log, "--seed 4 differs")

    old = tmp_path / "old.h5"  # a log written before runs could be extended
    shutil.copy(log, old)
    with h5py.File(old, "a") as f:
        del f[FINAL_GROUP]
    refused(["run", "--resume", str(old), "--rounds", "30"], old, "holds no final state")

    damaged = tmp_path / "damaged.h5"
    shutil.copy(log, damaged)
    with h5py.File(damaged, "a") as f:
        g = f[f"{FINAL_GROUP}/workers/g"]
        g[0, 0] = np.nextafter(g[0, 0], 1.0)
    refused(["run", "--resume", str(damaged), "--rounds", "30"], damaged, "fails its digest check")

    diverged = tmp_path / "diverged.h5"
    shutil.copy(log, diverged)
    with h5py.File(diverged, "a") as f:
        f.attrs["status"] = "diverged"
    refused(["run", "--resume", str(diverged), "--rounds", "30"], diverged, "diverged at round 20")


def test_a_converged_run_is_not_extended(data, tmp_path):
    log = tmp_path / "run.h5"
    run_ok(args(data, "ef21-top-k", 50, log, "--tol", "1e9"))  # converged at round 0
    with h5py.File(log, "r") as f:
        assert f.attrs["status"] == "converged" and FINAL_GROUP not in f
    refused(["run", "--resume", str(log), "--rounds", "80"], log, "converged at round 0", "smaller --tol")


def test_an_interrupted_run_is_not_shortened(data, tmp_path):
    log = tmp_path / "run.h5"
    env = {"EF21_MPI_FAULT": "rank=0,round=23,action=kill", **ARMED}
    assert ef21(args(data, "ef21-top-k", 37, log, "--checkpoint-every", "10"), env=env).returncode != 0
    ckpt = checkpoint_path(log).read_bytes()
    before = log.read_bytes()
    done = ef21(["run", "--resume", str(log), "--rounds", "30", "--quiet"])
    assert done.returncode == 2 and "--rounds 30 is fewer than the 37 rounds" in done.stderr
    assert log.read_bytes() == before and checkpoint_path(log).read_bytes() == ckpt
