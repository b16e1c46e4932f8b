"""Tests for the LibSVM reader and the sequential sharding (SPEC section 2)."""

import bz2
import gzip
import hashlib
import lzma
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ef21_mpi.core import data
from ef21_mpi.core.data import parse_libsvm, read_libsvm, shard, shard_bounds

TINY = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "tiny.svm"

# tiny.svm written out by hand: rows in file order, label-only row 4 is all zeros
TINY_DENSE = np.array(
    [
        [0.5, 0, 1, 0, 0, 2],
        [0, -1.25, 0, 3, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0.25, 0],
        [-0.5, 0, 0, 0, 0, 4],
        [0, 0, 7, 0, 0, 0],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 0, -2, 0, 0],
        [10, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0.125],
        [0, 0, 3, 3, 0, 0],
    ]
)
TINY_Y = np.array([1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1], dtype=float)

# SOURCES.md: rows, declared d, (count of smaller label, count of larger label), nonzeros, sha256
REAL = {
    "a9a": (32561, 123, (24720, 7841), 451592, "f5d5ffd8d865ff41328e7ee043e4b020816914ff6843ff15b98905ddbedce906"),
    "w8a": (49749, 300, (48270, 1479), 579586, "6a9fa8fd5f524303240a5db07d4b3d4a51e8b7b4b20a914105d8e3e8c81640f2"),
    "mushrooms": (8124, 112, (3916, 4208), 170604, "f39a4eb628dc61a7d43760815b061c9e497aa728ce1ad8bde57a09ef6043b538"),
    "phishing": (11055, 68, (4898, 6157), 331650, "0cf66ef36604c393da9359b2e5d894a2df8aee31fd184633cefa138add2ef08a"),
}


def test_tiny_fixture_matches_hand_written_matrix():
    ds = read_libsvm(TINY)
    assert (ds.name, ds.path, ds.N, ds.d) == ("tiny", str(TINY), 12, 6)
    assert ds.A.shape == (12, 6) and ds.A.nnz == 22
    np.testing.assert_array_equal(ds.A.toarray(), TINY_DENSE)
    np.testing.assert_array_equal(ds.y, TINY_Y)
    assert ds.A.dtype == np.float64 and ds.y.dtype == np.float64
    assert ds.A.indices.dtype == np.int32 and ds.A.indptr.dtype == np.int32
    assert ds.A.has_sorted_indices and ds.A.has_canonical_format
    assert isinstance(ds.A, sp.csr_matrix)
    assert ds.sha256 == hashlib.sha256(TINY.read_bytes()).hexdigest()


def test_tiny_fixture_takes_the_fast_path_and_both_parsers_agree():
    raw = TINY.read_bytes()
    fast = data._parse_fast(data._COMMENT.sub(b"", raw), None)
    slow = data._parse_slow(raw, "tiny.svm", None)
    assert fast is not None
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)


def test_declared_dimension_pads_columns():
    ds = read_libsvm(TINY, d=10, name="t")
    assert ds.name == "t" and ds.d == 10 and ds.A.shape == (12, 10)
    np.testing.assert_array_equal(ds.A.toarray()[:, :6], TINY_DENSE)
    assert ds.A[:, 6:].nnz == 0


@pytest.mark.parametrize("suffix, compress", [(".bz2", bz2.compress), (".gz", gzip.compress), (".xz", lzma.compress)])
def test_compressed_variants_parse_identically(tmp_path, suffix, compress):
    raw = TINY.read_bytes()
    path = tmp_path / ("tiny.svm" + suffix)
    path.write_bytes(compress(raw))
    ds = read_libsvm(path)
    assert ds.name == "tiny" and ds.d == 6
    np.testing.assert_array_equal(ds.A.toarray(), TINY_DENSE)
    np.testing.assert_array_equal(ds.y, TINY_Y)
    assert ds.sha256 == hashlib.sha256(raw).hexdigest()


def test_corrupt_compressed_file(tmp_path):
    path = tmp_path / "bad.bz2"
    path.write_bytes(b"this is not bzip2")
    with pytest.raises(ValueError, match="cannot decompress .*bad.bz2"):
        read_libsvm(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.svm"
    with pytest.raises(ValueError) as err:
        read_libsvm(path)
    assert str(err.value) == f"data file not found: {path}"


GOOD_HEAD = "# header comment\n+1 1:1 3:0.5\n\n-1 2:1\n"  # the bad line goes on line 5
BAD_LINES = {
    "non-numeric label": ("abc 1:1", "label 'abc' is not a number"),
    "label with colon": ("1:1 2:1", "label '1:1' is not a number"),
    "non-numeric value": ("1 1:x", "'x' is not a number"),
    "underscore value": ("1 1:1_0", "'1_0' is not a number"),
    "non-ascii digit": ("1 1:\uff11", "is not a number"),
    "double point": ("1 1:1.2.3", "'1.2.3' is not a number"),
    "token without colon": ("1 1:1 7", "feature '7' is not of the form index:value"),
    "two colons": ("1 1:2:3", "feature '1:2:3' is not of the form index:value"),
    "empty index": ("1 :1", "index '' is not a positive integer"),
    "empty value": ("1 1:", "'' is not a number"),
    "index zero": ("1 0:1", "index '0' is not a positive integer"),
    "negative index": ("1 -2:1", "index '-2' is not a positive integer"),
    "fractional index": ("1 1.5:1", "index '1.5' is not a positive integer"),
    "decreasing": ("1 3:1 2:1", "strictly increasing within a line, but 2 follows 3"),
    "repeated": ("1 2:1 2:1", "strictly increasing within a line, but 2 follows 2"),
    "nan value": ("1 1:nan", "'nan' is not finite"),
    "inf value": ("1 1:-inf", "'-inf' is not finite"),
    "overflowing value": ("1 1:1e400", "'1e400' is not finite"),
    "nan label": ("nan 1:1", "label 'nan' is not finite"),
    "inf label": ("inf 1:1", "label 'inf' is not finite"),
    "huge index": ("1 99999999999:1", "index 99999999999 exceeds the maximum"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_malformed_line_names_file_and_line(tmp_path, case):
    line, expected = BAD_LINES[case]
    path = tmp_path / "bad.svm"
    path.write_text(GOOD_HEAD + line + "\n-1 1:1\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_libsvm(path)
    message = str(err.value)
    assert message.startswith(f"{path}:5: ")
    assert expected in message
    assert "\n" not in message


def test_index_beyond_declared_dimension(tmp_path):
    path = tmp_path / "wide.svm"
    path.write_text("1 1:1\n-1 2:1 7:1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"wide.svm:2: index 7 exceeds the declared dimension d=6$"):
        read_libsvm(path, d=6)
    assert read_libsvm(path).d == 7


def test_line_numbers_count_crlf_lines_and_comments(tmp_path):
    path = tmp_path / "crlf.svm"
    path.write_bytes(b"# c\r\n1 1:1\r\n\r\n-1 2:1 1:1\r\n")
    with pytest.raises(ValueError, match=r"crlf.svm:4: indices must be strictly increasing"):
        read_libsvm(path)


def test_more_than_two_labels_are_named(tmp_path):
    path = tmp_path / "multi.svm"
    path.write_text("0 1:1\n1 1:1\n2 2:1\n1 1:1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"multi.svm: expected exactly two distinct labels .*found 3: 0, 1, 2$"):
        read_libsvm(path)


def test_single_label_is_rejected(tmp_path):
    path = tmp_path / "one.svm"
    path.write_text("1 1:1\n1 2:1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="found 1: 1$"):
        read_libsvm(path)


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n\n# another\n"])
def test_file_without_rows_is_rejected(tmp_path, content):
    path = tmp_path / "empty.svm"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="empty.svm: no data rows"):
        read_libsvm(path)


def test_label_only_rows_need_a_declared_dimension(tmp_path):
    path = tmp_path / "bare.svm"
    path.write_text("1\n-1\n1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="dimension cannot be inferred"):
        read_libsvm(path)
    ds = read_libsvm(path, d=3)
    assert ds.A.shape == (3, 3) and ds.A.nnz == 0
    np.testing.assert_array_equal(ds.y, [1, -1, 1])


@pytest.mark.parametrize("d", [0, -3, 1.5, True, "6"])
def test_bad_declared_dimension(d):
    with pytest.raises(ValueError, match="declared dimension d must be a positive integer"):
        read_libsvm(TINY, d=d)


@pytest.mark.parametrize(
    "labels, expected",
    [(("1", "2"), (-1, 1)), (("0", "1"), (-1, 1)), (("+1", "-1"), (1, -1)), (("2.5", "-7"), (1, -1))],
)
def test_smaller_label_maps_to_minus_one(labels, expected):
    text = f"{labels[0]} 1:1\n{labels[1]} 2:1\n{labels[0]} 1:2\n".encode()
    ds = parse_libsvm(text, "mem.svm")
    np.testing.assert_array_equal(ds.y, [expected[0], expected[1], expected[0]])


def _random_decimal(rng: np.random.Generator) -> str:
    digits = "".join(rng.choice(list("0123456789"), size=rng.integers(1, 20)))
    point = int(rng.integers(0, len(digits) + 1))
    text = rng.choice(["", "-", "+"]) + digits[:point] + rng.choice([".", ""]) + digits[point:]
    if rng.random() < 0.2:
        text += rng.choice(["e", "E"]) + rng.choice(["", "-", "+"]) + str(rng.integers(0, 250))
    return text


def test_bulk_decimal_conversion_equals_float():
    rng = np.random.default_rng(7)
    tokens = [_random_decimal(rng) for _ in range(5000)] + ["0.18257", "-0", "5.", ".5", "007.50"]
    raw = " ".join(tokens).encode()
    b = np.frombuffer(raw, np.uint8)
    ends = np.cumsum([len(t) + 1 for t in tokens]) - 1
    starts = ends - [len(t) for t in tokens]
    got = data._parse_decimals(raw, b, starts, ends)
    want = np.array([float(t) for t in tokens])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_fast_and_slow_parsers_agree_on_random_files():
    rng = np.random.default_rng(11)
    for _ in range(20):
        lines = []
        for _ in range(int(rng.integers(1, 30))):
            cols = np.sort(rng.choice(np.arange(1, 40), size=rng.integers(0, 8), replace=False))
            feats = [f"{c}:{_random_decimal(rng)}" for c in cols]
            sep = str(rng.choice([" ", "  ", "\t"]))
            end = str(rng.choice(["", " ", "\r"]))
            lines.append(sep.join([str(rng.choice(["-1", "+1", "1"]))] + feats) + end)
            if rng.random() < 0.1:
                lines.append("")
        raw = ("\n".join(lines) + "\n").encode()
        fast = data._parse_fast(raw, None)
        slow = data._parse_slow(raw, "r.svm", None)
        assert fast is not None
        for a, b in zip(fast, slow, strict=True):
            np.testing.assert_array_equal(a, b)


def test_shard_bounds_a9a_with_twenty_workers():
    bounds = shard_bounds(32561, 20)
    sizes = [hi - lo for lo, hi in bounds]
    assert sizes == [1628] * 19 + [1629]
    assert bounds[0][0] == 0 and bounds[-1][1] == 32561
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(19))


@pytest.mark.parametrize("N, n", [(5, 6), (5, 0), (5, -1), (0, 1)])
def test_shard_bounds_rejects_bad_worker_counts(N, n):
    with pytest.raises(ValueError, match=f"cannot split {N} rows among {n} workers"):
        shard_bounds(N, n)


def test_shard_slices_rows_in_order():
    ds = read_libsvm(TINY)
    parts = shard(ds, 5)
    assert [Ai.shape for Ai, _ in parts] == [(2, 6)] * 4 + [(4, 6)]
    np.testing.assert_array_equal(sp.vstack([Ai for Ai, _ in parts]).toarray(), TINY_DENSE)
    np.testing.assert_array_equal(np.concatenate([yi for _, yi in parts]), TINY_Y)
    assert all(isinstance(Ai, sp.csr_matrix) and Ai.indices.dtype == np.int32 for Ai, _ in parts)
    assert len(shard(ds, 12)) == 12
    with pytest.raises(ValueError):
        shard(ds, 13)


# the real data sets: the conftest's data_dir fixture skips without them, or fails under EF21_REQUIRE_DATA=1


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_data_sets_match_sources(name, data_dir):
    N, d, label_counts, nnz, sha256 = REAL[name]
    path = data_dir / f"{name}.bz2"
    ds = read_libsvm(path, d=d)
    assert (ds.name, ds.N, ds.d, ds.A.shape, ds.A.nnz, ds.sha256) == (name, N, d, (N, d), nnz, sha256)
    assert (int((ds.y == -1).sum()), int((ds.y == 1).sum())) == label_counts
    assert int(ds.A.indices.max()) + 1 == d  # the largest index is the declared dimension in all four
    # the bulk parser accepts the real files (the line-by-line one is ~5x slower)
    assert data._parse_fast(data.read_uncompressed(path), d) is not None


def test_w8a_label_only_rows(data_dir):
    ds = read_libsvm(data_dir / "w8a.bz2", d=300)
    assert int((np.diff(ds.A.indptr) == 0).sum()) == 4203
