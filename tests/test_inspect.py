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


@pytest.fixture(scope="module")
def repeats(tmp_path_factory):
    """EF21 and EF21+ with Rand-2 over seeds 0..2 (n = 4), and EF21 with n = 5."""
    folder = tmp_path_factory.mktemp("repeats")
    write_libsvm(folder / "syn.svm", seed=5)
    paths = {}
    for algorithm in ("ef21", "ef21-plus"):
        for seed in range(3):
            out = folder / f"{algorithm}-{seed}.h5"
            assert main(["run", "--dataset", str(folder / "syn.svm"), "--workers", "4", "--rounds", "60",
                         "--algorithm", algorithm, "--compressor", "rand-k", "--k", "2", "--seed", str(seed),
                         "--stepsize-multiplier", "4", "--out", str(out), "--quiet", "--backend", "serial"]) == 0
            paths[algorithm, seed] = out
    out = folder / "n5.h5"
    assert main(["run", "--dataset", str(folder / "syn.svm"), "--workers", "5", "--rounds", "60", "--out", str(out),
                 "--quiet", "--backend", "serial"]) == 0
    paths["n5"] = out
    return paths


def _table(capsys, *args):
    assert main(["inspect", *map(str, args)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    return header, [line for line in lines[2:] if not line.startswith("bits/n")]


def test_table_shows_n_seed_and_file_only_where_runs_differ(repeats, capsys):
    header, rows = _table(capsys, repeats["ef21", 1], repeats["n5"])
    assert header[:6] == ["run", "data", "set", "n", "seed", "status"]
    assert rows[0].split()[3:6] == ["syn", "4", "1"] and rows[1].split()[3:6] == ["syn", "5", "0"]
    header, _ = _table(capsys, repeats["ef21", 0], repeats["ef21-plus", 0])
    assert header[:4] == ["run", "data", "set", "status"]  # same n, seed, backend: no such columns
    header, rows = _table(capsys, repeats["ef21", 0], repeats["ef21", 0])  # rows alike but for the file
    assert header[:4] == ["run", "data", "set", "file"] and rows[0].split()[4] == str(repeats["ef21", 0])


def test_seeds_fold_into_median_and_range(repeats, capsys):
    assert main(["inspect", *(str(repeats[a, s]) for a in ("ef21", "ef21-plus") for s in range(3)),
                 "--seeds", "--json", "--tol", "1e-3"]) == 0
    folded = json.loads(capsys.readouterr().out)
    assert [(row["method"], row["seeds"]) for row in folded] == [("EF21", 3), ("EF21+", 3)]
    for row, algorithm in zip(folded, ("ef21", "ef21-plus")):
        last = []
        for seed in range(3):
            with h5py.File(repeats[algorithm, seed], "r") as f:
                last.append(float(f["grad_norm_sq"][-1]))
        assert len(set(last)) == 3  # the seeds really give different runs
        assert row["grad_norm_sq_last"] == float(np.median(last))
        assert row["spread"]["grad_norm_sq_last"] == [min(last), max(last)]


def test_best_by_method_takes_the_fewest_bits_to_tol_and_sort_orders(repeats, capsys):
    paths = [repeats[a, s] for a in ("ef21", "ef21-plus") for s in range(3)]
    assert main(["inspect", *map(str, paths), "--best-by", "method", "--json", "--tol", "1e-3"]) == 0
    best = json.loads(capsys.readouterr().out)
    for row, algorithm in zip(best, ("ef21", "ef21-plus")):
        needed = {}
        for seed in range(3):  # independent: the first row at or below tol, and the paper's bits/n there
            with h5py.File(repeats[algorithm, seed], "r") as f:
                g, coords = f["grad_norm_sq"][()], f["coords_up"][()]
            hit = np.flatnonzero(g <= 1e-3)
            if hit.size:
                needed[seed] = 32 * coords[1:hit[0] + 1].sum(axis=0).mean()
        assert needed and row["tol_bits_paper"] == pytest.approx(min(needed.values()))
    assert main(["inspect", *map(str, paths), "--sort", "last", "--json"]) == 0
    lasts = [row["grad_norm_sq_last"] for row in json.loads(capsys.readouterr().out)]
    assert lasts == sorted(lasts)


def test_every_number_that_differs_between_seeds_is_folded_or_per_run(repeats):
    """Runs alike but for their seed must fold into one row at any tolerance: every summary key on which they can
    differ is folded or kept per run (a key missing there, such as a new bits convention, splits the group)."""
    from ef21_mpi.analysis.results import load_run, summary
    from ef21_mpi.analysis.tables import _PER_RUN, fold_seeds

    runs = [load_run(repeats["ef21", s]) for s in range(3)]
    for tol in (1e-1, 1e-2, 1e-3, 1e-4):
        summaries = [summary(r, tol=tol) for r in runs]
        differ = {k for k in summaries[0] if len({str(s[k]) for s in summaries}) > 1}
        assert differ <= set(_PER_RUN), differ - set(_PER_RUN)
        assert len(fold_seeds(summaries)) == 1
