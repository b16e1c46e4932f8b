"""The synthetic data generator: exact round trip through the LibSVM reader, shape, heterogeneity, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from ef21_mpi.cli.main import main as cli_main
from ef21_mpi.core import synth
from ef21_mpi.core.data import shard_bounds
from ef21_mpi.core.datasets import load


@pytest.mark.parametrize("suffix", [".svm", ".svm.bz2", ".svm.gz"])
def test_the_reader_gets_back_exactly_what_was_generated(tmp_path, suffix):
    data = synth.generate(rows=300, dim=1000, nnz_per_row=7, workers=6, seed=3)
    path = synth.write(data, tmp_path / f"s{suffix}")
    ds = load(str(path), None)  # d is inferred: the last row carries column d - 1
    assert ds.d == 1000 and ds.N == 300
    np.testing.assert_array_equal(ds.A.indptr, data.A.indptr)
    np.testing.assert_array_equal(ds.A.indices, data.A.indices)
    np.testing.assert_array_equal(ds.A.data, data.A.data)  # four decimals convert exactly
    np.testing.assert_array_equal(ds.y, data.y)


def test_rows_have_exactly_z_distinct_increasing_columns_in_range():
    data = synth.generate(rows=500, dim=50, nnz_per_row=12, workers=5, seed=1)
    A = data.A
    assert np.all(np.diff(A.indptr) == 12)
    cols = A.indices.reshape(500, 12)
    assert np.all(np.diff(cols, axis=1) > 0)
    assert cols.min() >= 0 and cols.max() == 49
    assert np.all(A.data > 0) and np.all(A.data < 10)
    assert np.all(np.rint(A.data * 1e4) / 1e4 == A.data)  # four decimals


def test_every_column_may_be_full():
    data = synth.generate(rows=4, dim=3, nnz_per_row=3, workers=2, seed=0)
    np.testing.assert_array_equal(data.A.toarray() > 0, np.ones((4, 3), bool))


def test_blocks_are_heterogeneous_and_hold_both_labels():
    rows, dim, n = 4000, 2000, 8
    data = synth.generate(rows=rows, dim=dim, nnz_per_row=10, workers=n, seed=0)
    popular, positive = [], []
    for lo, hi in shard_bounds(rows, n):
        block = data.A[lo:hi]
        popular.append(int(np.argmax(np.bincount(block.indices, minlength=dim))))
        y = data.y[lo:hi]
        assert set(np.unique(y)) == {-1.0, 1.0}
        positive.append(float(np.mean(y > 0)))
    assert len(set(popular)) == n  # each block has its own most popular feature
    assert max(positive) - min(positive) > 0.2  # and its own class balance


def test_one_row_blocks_still_give_two_labels():
    data = synth.generate(rows=4, dim=10, nnz_per_row=2, workers=4, seed=0)
    assert set(data.y) == {-1.0, 1.0}


def test_same_seed_same_bytes_other_seed_other_bytes():
    a = synth.libsvm_bytes(synth.generate(200, 100, 5, 4, seed=7))
    b = synth.libsvm_bytes(synth.generate(200, 100, 5, 4, seed=7))
    c = synth.libsvm_bytes(synth.generate(200, 100, 5, 4, seed=8))
    assert a == b and a != c


def test_text_format():
    data = synth.generate(rows=2, dim=100000, nnz_per_row=2, workers=1, seed=0)
    lines = synth.libsvm_bytes(data).decode().splitlines()
    assert len(lines) == 2
    for line, y, lo in zip(lines, data.y, data.A.indptr):
        label, *features = line.split(" ")
        assert label == ("+1" if y > 0 else "-1")
        for token, col, value in zip(features, data.A.indices[lo:lo + 2], data.A.data[lo:lo + 2]):
            assert token == f"{col + 1}:{value:.4f}"


def test_large_dimension_stays_sparse():
    data = synth.generate(rows=1000, dim=10**6, nnz_per_row=5, workers=20, seed=0)
    assert data.A.nnz == 5000 and data.d == 10**6
    assert len(synth.libsvm_bytes(data)) < 1000 * (3 + 5 * 15 + 1)


@pytest.mark.parametrize("kwargs, words", [
    ({"rows": 10, "dim": 5, "nnz_per_row": 6, "workers": 2}, "--nnz-per-row 6"),
    ({"rows": 3, "dim": 5, "nnz_per_row": 1, "workers": 4}, "workers"),
    ({"rows": 1, "dim": 5, "nnz_per_row": 1, "workers": 1}, "rows >= 2"),
])
def test_sizes_that_do_not_fit_are_input_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):  # the core's plain error
        synth.generate(**kwargs)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "synth.svm"
    args = ["data", "synth", "--rows", "100", "--dim", "40", "--nnz-per-row", "4", "--workers", "5", "--out", str(out)]
    assert cli_main(args) == 0
    assert "100 rows, d = 40, 400 nonzeros" in capsys.readouterr().out
    ds = load(str(out), None)
    expected = synth.generate(100, 40, 4, 5, seed=0)
    np.testing.assert_array_equal(ds.A.toarray(), expected.A.toarray())
    assert cli_main(args) == 2  # exists: refused without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert cli_main(args + ["--overwrite", "--seed", "1"]) == 0
