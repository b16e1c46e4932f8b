"""A full disk (issue 17, item 5): the run ends with one line, the last snapshot and checkpoint intact, no temporary
file, and ``--resume`` (once there is room) gives the uninterrupted run's log bit for bit.

Two real ways to run out of room: a file size limit (RLIMIT_FSIZE, as ``ulimit -f``; writes fail with EFBIG, any
user) and, as root, a 300 KiB tmpfs (writes fail with ENOSPC)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from helpers import assert_same_log, ef21, write_libsvm

LIMIT = 300 * 1024  # bytes: the log outgrows it after about 1500 rounds of 4 workers


def args(data: Path, out: Path) -> list[str]:
    return ["run", "--dataset", str(data), "--workers", "4", "--rounds", "4000", "--flush-every", "50",
            "--checkpoint-every", "100", "--quiet", "--seed", "1", "--k", "2", "--out", str(out)]


def limited(cmd: list[str]) -> subprocess.CompletedProcess:
    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, preexec_fn=cap, check=False)


@pytest.fixture
def tmpfs(tmp_path):
    """A 300 KiB tmpfs mounted at tmp_path/full (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the RLIMIT_FSIZE cases cover everyone")
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={LIMIT}", "tmpfs", str(mount)], capture_output=True,
                          timeout=30, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)


def check_stopped_cleanly(done, out: Path) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("ef21-mpi: error: cannot write"), done.stderr[-3000:]
    assert "--resume" in lines[0]
    with h5py.File(out, "r") as f:  # the last good snapshot: a complete file, resumable
        assert f.attrs["status"] == "running" and f.attrs["rows"] == len(f["round"]) > 100
    with h5py.File(str(out) + ".ckpt", "r") as f:
        assert f.attrs["round"] >= 100
    assert not [p.name for p in out.parent.iterdir() if ".tmp" in p.name or p.name.endswith(".lock")]


def test_file_size_limit_stops_the_serial_run_cleanly_and_it_resumes(tmp_path):
    """(Under mpiexec a file size limit already stops MPI's start-up, in its shared-memory files; see the tmpfs.)"""
    data = write_libsvm(tmp_path / "small.svm", N=80, d=14, seed=9)
    ref = tmp_path / "ref.h5"
    done = ef21([*args(data, ref), "--backend", "serial"])
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run.h5"
    check_stopped_cleanly(limited([sys.executable, "-m", "ef21_mpi", *args(data, out), "--backend", "serial"]), out)
    resumed = ef21(["run", "--resume", str(out), "--quiet"])  # no limit now
    assert resumed.returncode == 0, resumed.stderr
    assert_same_log(ref, out)


@pytest.mark.parametrize("ranks", [None, 3], ids=["serial", "mpi"])
def test_full_tmpfs_stops_the_run_cleanly_and_it_resumes(ranks, tmp_path, tmpfs):
    data = write_libsvm(tmp_path / "small.svm", N=80, d=14, seed=9)
    ref = tmp_path / "ref.h5"
    assert ef21([*args(data, ref), "--backend", "serial"]).returncode == 0
    out = tmpfs / "run.h5"
    backend = ["--backend", "serial"] if ranks is None else []
    check_stopped_cleanly(ef21([*args(data, out), *backend], ranks=ranks), out)
    grown = subprocess.run(["mount", "-o", "remount,size=8m", str(tmpfs)], capture_output=True, timeout=30, check=False)
    assert grown.returncode == 0, grown.stderr
    resumed = ef21(["run", "--resume", str(out), "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_log(ref, out)
