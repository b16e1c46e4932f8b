"""``ef21-mpi inspect`` on logs of short real runs: the block, the table, --json, bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from helpers import write_pm1_libsvm as write_libsvm

from ef21_mpi.cli.main import main


@pytest.fixture
def logs(tmp_path):
    write_libsvm(tmp_path / "syn.svm")
    paths = []
    for algorithm, multiplier in (("ef21", "2"), ("ef", "1")):
        out = tmp_path / f"{algorithm}.h5"
        assert main(["run", "--dataset", str(tmp_path / "syn.svm"), "--workers", "4", "--rounds", "40",
                     "--algorithm", algorithm, "--stepsize-multiplier", multiplier, "--out", str(out),
                     "--quiet", "--backend", "serial"]) == 0
        paths.append(out)
    return paths


def test_json_summaries(logs, capsys):
    assert main(["inspect", *map(str, logs), "--tol", "1e-4", "--json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [s["label"] for s in summaries] == ["EF21, top-1, 2x", "EF, top-1, 1x"]
    for s, path in zip(summaries, logs):
        with h5py.File(path, "r") as f:
            g, coords = f["grad_norm_sq"][()], f["coords_up"][()]
        below = g <= 1e-4
        assert s["tol_round"] == (int(np.argmax(below)) if below.any() else None)
        assert s["grad_norm_sq_last"] == g[-1]
        counted = coords[1:] if s["algorithm"] == "ef21" else coords  # EF21's row 0 is the initialisation
        assert s["bits_paper"] == pytest.approx(32 * counted.sum(axis=0).mean())
        assert s["status"] == "completed" and s["rounds_done"] == 40 and s["tol"] == 1e-4


def test_one_file_block(logs, capsys):
    assert main(["inspect", str(logs[0])]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == str(logs[0])
    assert "EF21, top-1 (k = 1)" in text and "completed after 40/40 rounds" in text
    assert "2 x gamma_theory" in text and "1,280 paper" in text  # 40 rounds x 32 bits


def test_several_files_table(logs, capsys):
    assert main(["inspect", *map(str, logs), "--tol", "1e-30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run") and "round@1e-30" in lines[0]
    assert lines[2].startswith("EF21, top-1, 2x") and lines[3].startswith("EF, top-1, 1x")
    assert [line.split()[-2] for line in lines[2:4]] == ["1,280", "1,312"]  # EF's row 0 is a step: 41 x 32


def test_bad_input(tmp_path, logs, capsys):
    assert main(["inspect", str(tmp_path / "missing.h5")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"ef21-mpi: error: {tmp_path / 'missing.h5'}: no such file\n" and captured.out == ""
    (tmp_path / "junk.h5").write_bytes(b"\x00" * 64)
    assert main(["inspect", str(logs[0]), str(tmp_path / "junk.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ef21-mpi: error:") and "junk.h5" in err and len(err.strip().splitlines()) == 1
