"""Checkpoints prove themselves (issue 17, item 6): a digest over their contents and their run's identity, and
checks of shapes, dtypes and the round counter against the run; anything off is refused with one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ef21, program_stderr, write_libsvm

from ef21_mpi.runtime import checkpoint

ARMED = {"EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}


@pytest.fixture
def unfinished(tmp_path) -> Path:
    """A serial run of 8 rounds (2 workers) whose master was SIGKILLed at round 4, checkpointed every round."""
    data = write_libsvm(tmp_path / "small.svm", N=40, d=6, seed=4)
    out = tmp_path / "run.h5"
    killed = ef21(["run", "--dataset", str(data), "--workers", "2", "--rounds", "8", "--quiet", "--out", str(out),
                   "--checkpoint-every", "1", "--flush-every", "1", "--backend", "serial", "--k", "2"],
                  env={"EF21_MPI_FAULT": "rank=0,round=4,action=kill", **ARMED}, timeout=120)
    assert killed.returncode != 0
    with h5py.File(checkpoint.checkpoint_path(out), "r") as f:
        assert f.attrs["round"] == 3
    return out


def redigest(path: Path) -> None:
    """Make an edited checkpoint's digest match again (what a careful forger would do)."""
    attrs, arrays, _ = checkpoint.read_contents(path)
    with h5py.File(path, "r+") as f:
        f.attrs["digest"] = checkpoint.digest(attrs, arrays)


def files(folder: Path) -> dict[str, str]:
    """Every file but the lock (the killed run left its lock; a refused run may tidy it away)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.endswith(".lock")}


def refused(log: Path, *fragments: str) -> None:
    before = files(log.parent)
    done = ef21(["run", "--resume", str(log), "--quiet"], timeout=120)
    lines = [line for line in program_stderr(done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("ef21-mpi: error: "), done.stderr
    assert "Traceback" not in done.stderr and all(f in lines[0] for f in fragments), lines[0]
    assert files(log.parent) == before


def edit(path: Path, change) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def replace_dataset(f, name, value):
    del f[name]
    f[name] = value


EDITS = {  # edit -> (redigest after it?, message fragments)
    "one-flipped-bit": (lambda f: replace_dataset(f, "workers/g", np.nextafter(f["workers/g"][()], 1.0)), False,
                        ["fails its digest check"]),
    "round-counter": (lambda f: f.attrs.__setitem__("round", 6), False, ["fails its digest check"]),
    "round-counter-redigested": (lambda f: f.attrs.__setitem__("round", 6), True, ["does not fit the log's rows"]),
    "round-beyond-rounds-redigested": (lambda f: f.attrs.__setitem__("round", 40), True, ["round 40 is outside"]),
    "worker-shape": (lambda f: replace_dataset(f, "workers/g", np.zeros((2, 7))), True, ["worker state g"]),
    "master-dtype": (lambda f: replace_dataset(f, "master/x", f["master/x"][()].astype(np.float32)), True,
                     ["master x is float32"]),
    "counter-shape": (lambda f: replace_dataset(f, "bits_up", np.zeros(3, dtype=np.int64)), True, ["bits_up"]),
    "configuration": (lambda f: f.attrs.__setitem__("config", json.dumps({**json.loads(f.attrs["config"]),
                                                                            "seed": 5}, sort_keys=True)),
                      True, ["different configuration"]),
    "data-set": (lambda f: f.attrs.__setitem__("dataset_sha256", "0" * 64), True, ["different configuration"]),
    "no-digest": (lambda f: f.attrs.__delitem__("digest"), False, ["cannot read checkpoint", "digest"]),
    "a-link-inside": (lambda f: f.__setitem__("extra", h5py.SoftLink("/bits_up")), False, ["is a link"]),
}


@pytest.mark.parametrize("case", EDITS)
def test_an_edited_checkpoint_is_refused(case, unfinished):
    change, again, fragments = EDITS[case]
    ckpt = checkpoint.checkpoint_path(unfinished)
    edit(ckpt, change)
    if again:
        redigest(ckpt)
    refused(unfinished, f"--resume {unfinished}", *fragments)


def test_an_untouched_checkpoint_resumes(unfinished):
    done = ef21(["run", "--resume", str(unfinished), "--quiet"], timeout=120)
    assert done.returncode == 0, done.stderr
    with h5py.File(unfinished, "r") as f:
        assert f.attrs["status"] == "completed" and list(f["round"][()]) == list(range(9))


def test_the_digest_covers_every_attribute_and_array():
    loop_attrs = {"format_version": 2, "round": 3, "log_rows": 4, "bits_down": 0, "wall_offset": 0.5,
                  "config": "{}", "dataset_sha256": "ab"}
    arrays = {"bits_up": np.arange(2), "workers/rngs": np.array(["{}", "{}"], dtype=object)}
    base = checkpoint.digest(loop_attrs, arrays)
    assert base == checkpoint.digest(dict(reversed(loop_attrs.items())), arrays)  # order does not matter
    for key, value in loop_attrs.items():
        changed = {**loop_attrs, key: value + 1 if not isinstance(value, str) else "x"}
        assert checkpoint.digest(changed, arrays) != base, key
    assert checkpoint.digest(loop_attrs, {**arrays, "bits_up": np.arange(2.0)}) != base  # dtype counts
    assert checkpoint.digest(loop_attrs, {**arrays, "bits_up": np.arange(2).reshape(1, 2)}) != base  # shape too
    assert checkpoint.digest(loop_attrs, {**arrays, "workers/rngs": np.array(["{}", "{ }"], dtype=object)}) != base
