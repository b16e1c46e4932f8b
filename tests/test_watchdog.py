"""A stopped worker does not block shutdown (issue 17, item 9): after SIGTERM to ``mpiexec`` the job ends within a
bounded time whatever a worker rank is doing, and ``--stall-timeout`` names the worker rank that made no progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from helpers import MPI_LIBRARY, mpi_command, rank_zero_of, write_libsvm

from ef21_mpi.runtime.watchdog import SHUTDOWN_GRACE

pytestmark = pytest.mark.mpi
BOUND = SHUTDOWN_GRACE + 10  # seconds: the grace, then MPI_Abort and the launcher's own clean-up


def parent(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parent(pid)
    return False


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the ef21-mpi process of MPI rank ``rank`` started by the launcher ``launcher``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"ef21_mpi" not in (entry / "cmdline").read_bytes() or not descends_from(int(entry.name), launcher):
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if f"PMI_RANK={rank}".encode() in env or f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def start_job(tmp_path: Path, *extra: str):
    data = write_libsvm(tmp_path / "small.svm", N=80, d=14, seed=9)
    out = tmp_path / "run.h5"
    cmd = [*mpi_command(3), sys.executable, "-m", "ef21_mpi", "run", "--dataset", str(data), "--rounds",
           "100000000", "--flush-every", "1", "--checkpoint-every", "20", "--quiet", "--out", str(out),
           "--placement", "spread", *extra]  # one worker per rank: rank 2 holds worker 1
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for _ in range(600):
        time.sleep(0.1)
        if out.exists() and (tmp_path / "run.h5.ckpt").exists():
            break
    victim = rank_pid(proc.pid, 2)
    assert victim is not None, "cannot find the process of rank 2"
    return proc, out, victim


def finish(proc, seconds: float) -> tuple[float, str]:
    started = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"the job was still running {seconds:.0f} s later\n{stderr[-2000:]}")
    return time.monotonic() - started, stderr


def test_sigterm_ends_the_job_although_a_worker_is_stopped(tmp_path):
    proc, out, victim = start_job(tmp_path)
    os.kill(victim, signal.SIGSTOP)
    time.sleep(0.5)
    if MPI_LIBRARY == "Open MPI":  # its launcher SIGKILLs the ranks 0.5 s after forwarding a SIGTERM: tell rank 0
        os.kill(rank_zero_of(proc.pid), signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    took, stderr = finish(proc, 60)
    assert took < BOUND, f"took {took:.1f} s"
    assert proc.returncode != 0 and "SIGTERM received" in stderr and "did not finish within" in stderr, stderr
    assert "Traceback" not in stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "interrupted" and f.attrs["rows"] == len(f["round"]) > 0
    with h5py.File(str(out) + ".ckpt", "r") as f:  # resumable from here (the run itself would last for ever)
        assert f.attrs["round"] >= 20


def test_stall_timeout_names_the_worker_that_made_no_progress(tmp_path):
    proc, out, victim = start_job(tmp_path, "--stall-timeout", "3")
    os.kill(victim, signal.SIGSTOP)
    took, stderr = finish(proc, 60)
    assert took < 3 + BOUND
    assert proc.returncode != 0 and "worker rank 2 (workers 1..1) made no progress for 3 s" in stderr, stderr
    assert "worker rank 1 " not in stderr and "Traceback" not in stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed"
    assert not (tmp_path / ".run.h5.lock").exists()
