"""Files beside a log (issue 17, items 3 and 4): one run never touches another's files, the lock is taken
before the data is loaded, predictable names are never followed through a symbolic link, modes are kept."""

from __future__ import annotations

import fcntl
import os
import stat

import numpy as np
import pytest
from helpers import ef21, write_libsvm

from ef21_mpi.core.methods import Master
from ef21_mpi.runtime import checkpoint, session
from ef21_mpi.runtime.config import RunConfig
from ef21_mpi.runtime.logschema import RunLog
from ef21_mpi.runtime.loop import LoopState


@pytest.fixture
def data(tmp_path):
    return write_libsvm(tmp_path / "small.svm", N=40, d=6, seed=2)


def run(data, out, *extra):
    done = ef21(["run", "--dataset", str(data), "--workers", "2", "--rounds", "3", "--quiet", "--out", str(out),
                 *extra], timeout=120)
    return done


def test_a_run_does_not_remove_another_runs_temporary_files(tmp_path, data):
    """``--out c/live`` must not take ``c/live.h5``'s snapshot in progress for a stale file of its own."""
    folder = tmp_path / "c"
    folder.mkdir()
    others = [folder / ".live.h5.tmp-k2j4x_9a", folder / ".live.h5.tmp12345", folder / ".live.tmp-abc.tmp-x"]
    for other in others:
        other.write_bytes(b"another run's snapshot being written")
    done = run(data, folder / "live")
    assert done.returncode == 0, done.stderr
    assert all(other.exists() for other in others)
    mine = folder / ".live.tmp-zz9_stale"  # a killed writer of c/live left this: it goes
    mine.write_bytes(b"stale")
    done = run(data, folder / "live", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert not mine.exists() and all(other.exists() for other in others)


def test_glob_characters_in_out_are_plain_characters(tmp_path, data):
    out = tmp_path / "r[1]*?.h5"
    stale = tmp_path / ".r[1]*?.h5.tmp-abc123"
    stale.write_bytes(b"stale")
    neighbour = tmp_path / ".r1x.h5.tmp-abc123"  # matches the glob pattern, not the name
    neighbour.write_bytes(b"someone else's")
    done = run(data, out)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and not stale.exists() and neighbour.exists()


def test_the_lock_is_held_while_the_data_is_loaded(tmp_path, data, monkeypatch):
    """A run that loads slowly must already own the log: another run cannot complete the same log meanwhile."""
    out = tmp_path / "run.h5"
    seen = {}
    real_build = session.build

    def slow_build(cfg, n, *rest):
        with open(tmp_path / ".run.h5.lock", "a") as other:  # a second job trying to write the same log
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen["other job got the lock"] = True
                fcntl.flock(other, fcntl.LOCK_UN)
            except BlockingIOError:
                seen["other job got the lock"] = False
        return real_build(cfg, n, *rest)

    monkeypatch.setattr(session, "build", slow_build)
    cfg = RunConfig(dataset=str(data), out=str(out), workers=2, rounds=2, quiet=True, backend="serial")
    assert session.run(cfg) == 0
    assert seen == {"other job got the lock": False}


def test_a_symlink_at_the_lock_name_is_not_followed(tmp_path, data):
    victim = tmp_path / "victim.txt"
    (tmp_path / ".run.h5.lock").symlink_to(victim)
    done = run(data, tmp_path / "run.h5")
    assert not victim.exists(), "the lock was created through the symbolic link"
    assert done.returncode == 2 and done.stderr.count("ef21-mpi: error:") == 1 and "Traceback" not in done.stderr
    assert "lock" in done.stderr and not (tmp_path / "run.h5").exists()


def _plant(tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / name).symlink_to(victim)
    return victim


def test_snapshot_temp_file_is_not_opened_through_a_planted_link(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # the name the old code would have used is predictable
    victim = _plant(tmp_path, ".run.h5.tmp4242")
    log = RunLog(tmp_path / "run.h5", {"algorithm": "ef21", "status": "running"}, n=2, d=3)
    log.append(0, bits_up=np.zeros(2), coords_up=np.zeros(2), bits_down=0, grad_norm_sq=1.0, loss=1.0,
               distortion=0.0, wall_time=0.0)
    log.flush(np.zeros(3))
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "run.h5").is_file() and not (tmp_path / "run.h5").is_symlink()


def test_checkpoint_temp_file_is_not_opened_through_a_planted_link(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    victim = _plant(tmp_path, ".run.h5.ckpt.tmp4242")
    loop = LoopState(t=3, master=Master(np.zeros(3), np.zeros(3)), bits_up=np.zeros(2, dtype=np.int64),
                     coords_up=np.zeros(2, dtype=np.int64), bits_down=0, log_rows=4)
    ckpt = checkpoint.Checkpoint(loop, {"g": np.zeros((2, 3))}, {"seed": 0}, "abc")
    checkpoint.save(tmp_path / "run.h5.ckpt", ckpt)
    assert victim.read_text() == "precious\n"
    loaded = checkpoint.load(tmp_path / "run.h5.ckpt", Master(np.zeros(3), np.zeros(3)))
    assert loaded.loop.t == 3 and loaded.config == {"seed": 0}


@pytest.mark.parametrize("how", ["overwrite", "resume"])
def test_the_log_keeps_its_permission_bits(tmp_path, data, how):
    out = tmp_path / "run.h5"
    if how == "overwrite":
        assert run(data, out).returncode == 0
        out.chmod(0o640)
        done = run(data, out, "--overwrite")
    else:
        env = {"EF21_MPI_FAULT": "rank=0,round=2,action=kill", "EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}
        killed = ef21(["run", "--dataset", str(data), "--workers", "2", "--rounds", "5", "--quiet", "--out", str(out),
                       "--checkpoint-every", "1", "--flush-every", "1", "--backend", "serial"], env=env, timeout=120)
        assert killed.returncode != 0 and out.exists()
        out.chmod(0o640)
        done = ef21(["run", "--resume", str(out), "--quiet"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
