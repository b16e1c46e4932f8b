"""The bad-input table, round 2 (issue 17): every case ends with exit 2 and exactly one ``ef21-mpi: error:`` line,
no traceback, nothing left in the log folder (no lock either), serial and, for start-up errors, under mpiexec.

The harness (launch with a timeout, the one-line check, the empty-folder check) is `test_bad_input`'s.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import test_bad_input as first_table
from test_bad_input import COMMON, GOOD, RANKS, assert_input_error, ef21, run_expecting_error, snapshot

box = first_table.box  # the fixtures of the first table
locked_dir = first_table.locked_dir


def corrupt_deflate(path: Path) -> Path:
    """A .gz file whose deflate stream is broken (zlib.error 'invalid code lengths set'), not only its CRC."""
    packed = bytearray(gzip.compress(GOOD.encode() * 50))
    packed[12] ^= 0x55
    path.write_bytes(bytes(packed))
    return path


DATA = {  # data file content (or a maker) -> message fragments
    "values-overflow-the-constants": ("0 1:1e300 3:1e300\n1 2:1e300\n0 1:1e300\n1 3:1\n0 2:1\n1 1:1\n",
                                      ["smoothness constants", "rescale the data"]),
    "absurd-feature-index": ("0 1:1\n1 2147483000:1\n0 2:1\n1 1:1\n", ["d = 2147483000", "GiB"]),
    "index-too-long-to-parse": ("0 1:1\n1 99999999999999999999999999999999:1\n0 2:1\n1 1:1\n",
                                ["exceeds the maximum 2147483647"]),
    "cr-only-line-endings": ("0 1:1\r1 2:1\r0 1:1 2:1\r1 2:2\r", ["carriage return", "line feed"]),
    "corrupt-deflate-stream": (corrupt_deflate, ["cannot decompress", "expected a valid .gz file"]),
    "fifo": (lambda p: os.mkfifo(p), ["not a regular file"]),
    "symlink-loop": (lambda p: (p.symlink_to(p.with_name("other")), p.with_name("other").symlink_to(p)),
                     ["loop of symbolic links"]),
}
DATA_MPI = {"values-overflow-the-constants", "cr-only-line-endings", "fifo", "corrupt-deflate-stream"}


def make_data(box: Path, case: str) -> Path:
    content, _ = DATA[case]
    path = box / ("bad.svm.gz" if case == "corrupt-deflate-stream" else "bad.svm")
    if isinstance(content, str):
        path.write_text(content)
    else:
        content(path)
    return path


@pytest.mark.parametrize("case,ranks", [pytest.param(c, None, id=f"{c}-serial") for c in DATA] +
                         [pytest.param(c, RANKS, id=f"{c}-mpi") for c in DATA if c in DATA_MPI])
def test_bad_data_file(case, ranks, box):
    path = make_data(box, case)
    run_expecting_error(box, ["--dataset", str(path), *COMMON], DATA[case][1], ranks)


def test_corrupt_deflate_stream_in_data_list(box):
    corrupt_deflate(box / "empty-data" / "a9a.gz")
    out = ef21(["data", "list", "--data-dir", str(box / "empty-data")], cwd=box)
    assert out.code == 0 and "Traceback" not in out.stderr and "MISMATCH" in out.stdout, out.describe()


def x0_file(box: Path, case: str) -> Path:
    path = box / f"x0-{case}.npy"
    if case == "npz-archive":
        with open(path, "wb") as f:
            np.savez(f, x=np.zeros(4))
    elif case == "oversized-header":
        path.write_bytes(b"\x93NUMPY\x01\x00" + (60000).to_bytes(2, "little") + b" " * 60000)
    elif case == "complex":
        np.save(path, np.zeros(4, dtype=complex))
    return path


X0 = {"npz-archive": [".npz archive"], "oversized-header": ["cannot read it", "Header info length"],
      "complex": ["numeric vector of shape (4,)", "complex128"]}
HUGE = str(10**24)
FLAGS = {
    "lam-overflows-the-stepsize": (["--lam", "1e308"], ["cannot be computed in float64", "--lam 1e+308"]),
    "seed-beyond-int64": (["--seed", HUGE], [f"--seed {HUGE} is beyond the largest value"]),
    "rounds-beyond-int64": (["--rounds", HUGE], [f"--rounds {HUGE} is beyond the largest value"]),
    "k-beyond-int64": (["--k", HUGE], [f"--k {HUGE} is beyond the largest value"]),
    "stall-timeout-zero": (["--stall-timeout", "0"], ["--stall-timeout must be a positive finite number"]),
}
FLAGS_MPI = {"seed-beyond-int64", "lam-overflows-the-stepsize"}


@pytest.mark.parametrize("case,ranks", [pytest.param(c, None, id=f"{c}-serial") for c in X0] +
                         [pytest.param("npz-archive", RANKS, id="npz-archive-mpi")])
def test_bad_x0(case, ranks, box):
    path = x0_file(box, case)
    run_expecting_error(box, ["--dataset", str(box / "good.svm"), *COMMON, "--x0", str(path)], X0[case], ranks)


@pytest.mark.parametrize("case,ranks", [pytest.param(c, None, id=f"{c}-serial") for c in FLAGS] +
                         [pytest.param(c, RANKS, id=f"{c}-mpi") for c in FLAGS if c in FLAGS_MPI])
def test_flag_out_of_range(case, ranks, box):
    extra, fragments = FLAGS[case]
    run_expecting_error(box, ["--dataset", str(box / "good.svm"), *COMMON, *extra], fragments, ranks)


# --- paths ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [241 + 4, 255, 300])
@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_out_name_too_long(length, ranks, box):
    name = "r" * (length - 3) + ".h5"
    out = ef21(["run", "--dataset", str(box / "good.svm"), *COMMON, "--out", str(box / "out" / name)], cwd=box,
               ranks=ranks)
    assert_input_error(out, f"the file name is {length} bytes", "at most 241")
    assert not snapshot(box / "out")


def test_data_path_component_too_long(box):
    run_expecting_error(box, ["--dataset", str(box / ("d" * 300 + ".svm")), *COMMON], ["too long"], None)


def non_utf8(box: Path, name: bytes) -> str:
    return os.fsdecode(os.fsencode(str(box)) + b"/" + name)


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_non_utf8_out_path(ranks, box):
    out = ef21(["run", "--dataset", str(box / "good.svm"), *COMMON, "--out", non_utf8(box, b"out/caf\xe9.h5")],
               cwd=box, ranks=ranks)
    assert_input_error(out, "--out", "not valid UTF-8")
    assert not snapshot(box / "out")


def test_non_utf8_data_path(box):
    data = non_utf8(box, b"caf\xe9.svm")
    Path(data).write_text(GOOD)
    run_expecting_error(box, ["--dataset", data, *COMMON], ["--dataset", "not valid UTF-8"], None)


@pytest.mark.parametrize("which", ["dataset", "x0"])
def test_out_is_an_input_file_even_with_overwrite(which, box):
    np.save(box / "out" / "x0.npy", np.zeros(4))
    inputs = {"dataset": box / "good.svm", "x0": box / "out" / "x0.npy"}
    before = inputs[which].read_bytes()
    out = ef21(["run", "--dataset", str(box / "good.svm"), *COMMON, "--x0", str(inputs["x0"]), "--overwrite",
                "--out", str(inputs[which])], cwd=box)
    assert_input_error(out, f"is the --{which} file")
    assert inputs[which].read_bytes() == before
    assert sorted(p.name for p in (box / "out").iterdir()) == ["x0.npy"]


# --- other commands ---------------------------------------------------------------------------------------

def test_plot_into_a_folder_nobody_can_write(box, locked_dir):
    log = box / "out" / "run.h5"
    assert ef21(["run", "--dataset", str(box / "good.svm"), *COMMON, "--out", str(log)], cwd=box).code == 0
    out = ef21(["plot", str(log), "-o", str(locked_dir / "fig.png")], cwd=box)
    assert_input_error(out, str(locked_dir), "cannot write")
    assert not list(locked_dir.iterdir())


def grid_file(box: Path, case: str) -> Path:
    path = box / "grid.json"
    if case == "folder":
        return box / "empty-data"
    if case == "not-utf8":
        path.write_bytes(b'{"datasets": ["caf\xe9"]}')
    else:
        path.write_text(json.dumps({"non-string-data-set": {"datasets": [7]},
                                    "boolean-multiplier": {"datasets": ["a9a"], "multipliers": [True]},
                                    "boolean-rounds": {"datasets": ["a9a"], "rounds": True},
                                    "colliding-names": {"datasets": [str(box / "good.svm"), str(box / "out" / "good.t")],
                                                        "rounds": 3}}[case]))
        (box / "out" / "good.t").write_text(GOOD)
    return path


SWEEP = {"folder": ["is a folder"], "not-utf8": ["not UTF-8"], "non-string-data-set": ["7", "non-empty string"],
         "boolean-multiplier": ["True must be a number"], "boolean-rounds": ["rounds must be an integer"],
         "colliding-names": ["would share the log good__ef"]}


@pytest.mark.parametrize("case", SWEEP)
def test_sweep_grid(case, box):
    grid = grid_file(box, case)
    out = ef21(["sweep", "--out-dir", str(box / "runs"), "--grid", str(grid)], cwd=box)
    assert_input_error(out, *SWEEP[case])
    assert not (box / "runs").exists()


@pytest.mark.parametrize("launcher,fragments", [("no-such-launcher -n {n+1}", ["'no-such-launcher' not found"]),
                                                ("mpiexec -n '{n+1}", ["No closing quotation"]),
                                                ("mpiexec -n {m}", ["only {n} and {n+1}"])])
def test_sweep_launcher(launcher, fragments, box):
    out = ef21(["sweep", "--out-dir", str(box / "runs"), "--datasets", str(box / "good.svm"), "--rounds", "3",
                "--workers", "2", "--launcher", launcher], cwd=box)
    assert_input_error(out, "--launcher", *fragments)
    assert not (box / "runs").exists()


def test_no_stale_lock_after_a_refusal_found_after_the_lock(box):
    """Errors found once the data is read (the lock is already held) take the lock away with them."""
    (box / "bad.svm").write_text("0 1:1\r1 2:1\r")
    run_expecting_error(box, ["--dataset", str(box / "bad.svm"), *COMMON], ["carriage return"], None)
    listing = subprocess.run(["ls", "-a", str(box / "out")], capture_output=True, text=True, check=True).stdout
    assert ".run.h5.lock" not in listing
