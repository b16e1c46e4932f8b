"""Hostile or odd HDF5 files (issue 17, item 7): ``inspect``, ``plot``, ``theory`` and ``run --resume`` answer
with one line or work, never a traceback; links are refused, not followed; nothing larger than the file is read."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ef21, write_libsvm

from ef21_mpi.cli.main import main

WRONG_ATTRS = {  # attribute -> a value of the wrong type or shape
    "status": 7, "algorithm": np.array([1, 2]), "alpha": "half", "gamma": np.array([0.1, 0.2]), "d": "six",
    "n_workers": 2.5, "k": "one", "L_i": "big", "shard_sizes": np.array([[1, 2]]), "config": 3,
    "rounds_requested": np.array([5, 6]), "stepsize_override": "yes", "problem": 1.5, "lam": "x",
    "L": np.array([b"a", b"b"]), "command_line": np.array([1.0]), "rows": "many",
}


def _replace(f, name, make):
    del f[name]
    make(f, name)


def _loop(f, name):
    f[name] = h5py.SoftLink("/loop_b")
    f["loop_b"] = h5py.SoftLink("/" + name)


DATASETS = {  # name -> how to spoil the file
    "round-as-strings": lambda f, d: _replace(f, "round", lambda f, n: f.create_dataset(
        n, data=np.array([b"a"] * 4), dtype=h5py.string_dtype())),
    "loss-as-strings": lambda f, d: _replace(f, "loss", lambda f, n: f.create_dataset(
        n, data=np.array(["a"] * 4, dtype=object), dtype=h5py.string_dtype())),
    "extra-string-column": lambda f, d: f.create_dataset("notes", data=np.array(["a"] * 4, dtype=object),
                                                         dtype=h5py.string_dtype()),
    "group-for-loss": lambda f, d: _replace(f, "loss", lambda f, n: f.create_group(n)),
    "group-for-round": lambda f, d: _replace(f, "round", lambda f, n: f.create_group(n)),
    "soft-link-loop": lambda f, d: _replace(f, "loss", _loop),
    "soft-link-loop-extra": lambda f, d: _loop(f, "loop_a"),
    "external-link": lambda f, d: _replace(f, "loss", lambda f, n: f.__setitem__(
        n, h5py.ExternalLink(str(d / "other.h5"), "/secret"))),
    "huge-declared-dataset": lambda f, d: _replace(f, "grad_norm_sq", lambda f, n: f.create_dataset(
        n, shape=(4 * 10**9,), dtype=np.float64)),
    "huge-extra-dataset": lambda f, d: f.create_dataset("big", shape=(10**10,), dtype=np.float64),
    "x-final-matrix": lambda f, d: _replace(f, "x_final", lambda f, n: f.create_dataset(n, data=np.zeros((2, 3)))),
    "x-final-strings": lambda f, d: _replace(f, "x_final", lambda f, n: f.create_dataset(
        n, data=np.array(["a"] * 6, dtype=object), dtype=h5py.string_dtype())),
    "config-not-json": lambda f, d: f.attrs.__setitem__("config", "{not json"),
    "config-wrong-types": lambda f, d: f.attrs.__setitem__("config", '{"rounds": "many", "k": [1]}'),
    "config-unknown-key": lambda f, d: f.attrs.__setitem__("config", '{"colour": "red"}'),
}


@pytest.fixture(scope="module")
def good_log(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    data = write_libsvm(folder / "small.svm", N=30, d=6, seed=1)
    log = folder / "good.h5"
    done = ef21(["run", "--dataset", str(data), "--workers", "2", "--rounds", "3", "--quiet", "--out", str(log)])
    assert done.returncode == 0, done.stderr
    with h5py.File(folder / "other.h5", "w") as f:
        f["secret"] = np.arange(4.0)
    return log


def spoiled(good_log: Path, tmp_path: Path, change) -> Path:
    log = tmp_path / "bad.h5"
    shutil.copy(good_log, log)
    shutil.copy(good_log.parent / "other.h5", tmp_path / "other.h5")
    with h5py.File(log, "r+") as f:
        f.attrs["status"] = "interrupted"  # so that --resume reads on
        change(f, tmp_path)
    return log


def answer(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)  # anything but an InputError escapes and fails the test with its traceback
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("ef21-mpi: error: "), err
    else:
        assert code == 0, err
    return code, err


COMMANDS = {"inspect": lambda log, tmp: ["inspect", str(log)], "plot": lambda log, tmp: ["plot", str(log), "-o",
                                                                                           str(tmp / "f.png")],
            "theory": lambda log, tmp: ["theory", str(log)], "inspect-theory": lambda log, tmp: ["inspect", "--theory",
                                                                                                   str(log)]}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("key", WRONG_ATTRS)
def test_attribute_of_the_wrong_type(command, key, good_log, tmp_path, capsys):
    log = spoiled(good_log, tmp_path, lambda f, d: f.attrs.__setitem__(key, WRONG_ATTRS[key]))
    code, err = answer(COMMANDS[command](log, tmp_path), capsys)
    assert code == 2 and f"attribute {key}" in err


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", DATASETS)
def test_odd_datasets(command, case, good_log, tmp_path, capsys):
    log = spoiled(good_log, tmp_path, DATASETS[case])
    code, err = answer(COMMANDS[command](log, tmp_path), capsys)
    if "link" in case or "huge" in case or "strings" in case and "extra" not in case or "x-final" in case:
        assert code == 2, err
    if "external" in case:
        assert "ExternalLink" in err and "secret" not in err


@pytest.mark.parametrize("case", ["soft-link-loop", "external-link", "huge-declared-dataset", "config-not-json",
                                  "config-wrong-types", "config-unknown-key", "group-for-round"])
def test_resume_of_an_odd_log(case, good_log, tmp_path):
    log = spoiled(good_log, tmp_path, DATASETS[case])
    done = ef21(["run", "--resume", str(log), "--quiet"], timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("ef21-mpi: error: "), done.stderr


@pytest.mark.parametrize("kind", ["fifo", "loop", "folder"])
def test_a_log_path_that_is_not_a_file_is_named_for_what_it_is(kind, tmp_path, capsys):
    path = tmp_path / "odd.h5"
    if kind == "fifo":
        import os
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(tmp_path / "odd2.h5")
        (tmp_path / "odd2.h5").symlink_to(path)
    else:
        path.mkdir()
    code, err = answer(["inspect", str(path)], capsys)
    assert code == 2 and "no such file" not in err
    assert {"fifo": "not a regular file", "loop": "loop of symbolic links", "folder": "is a folder"}[kind] in err
