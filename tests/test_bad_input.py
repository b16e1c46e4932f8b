"""Every bad input answered (issue 5): the real ``ef21-mpi run`` command, serial and under ``mpiexec``.

Each case must end promptly with exit status 2 and exactly one line ``ef21-mpi: error: ...`` naming what was
wrong, where and what was expected: no traceback, not repeated per rank, no log or temporary file left behind,
and an existing log untouched. Every launch has a timeout and a hang fails the test.

Not reachable from the command line, so checked on the reader only: an index beyond a data set's declared ``d``
(a registry-named file is checksummed before it is parsed, and a plain path's ``d`` is its largest index).
"""

from __future__ import annotations

import bz2
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import mpi_command, program_stderr

from ef21_mpi.core.data import parse_libsvm
from ef21_mpi.core.datasets import REGISTRY

TIMEOUT = 90  # seconds per launch before it counts as a hang
PROMPT = 30  # seconds an input error may take, start-up of every rank included
RANKS = 3  # master + 2 workers
ERROR = "ef21-mpi: error: "

# Six rows, labels 0/1, largest index 4 (so d = 4 for a plain path).
GOOD = "0 1:1 3:2\n1 2:1\n0 1:0.5 4:1\n1 3:1\n0 2:2\n1 1:1 4:1\n"
COMMON = ["--workers", "2", "--rounds", "3", "--quiet"]
HUGE_ROUNDS = str(10**9)


@dataclass
class Outcome:
    command: str
    code: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return (f"$ {self.command}\nexit {self.code} after {self.seconds:.1f} s\n"
                f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}")


def ef21(args: list[str], *, cwd: Path, ranks: int | None = None, env: dict | None = None) -> Outcome:
    """Run ``python -m ef21_mpi ARGS`` (under ``mpiexec -n ranks`` when given) in its own process group."""
    cmd = [sys.executable, "-m", "ef21_mpi", *args]
    if ranks is not None:
        cmd = [*mpi_command(ranks), *cmd]
    env = {**{k: v for k, v in os.environ.items() if k not in ("EF21_DATA_DIR", "EF21_MPI_FAULT", "EF21_MPI_FAULT_ARMED")},
           **(env or {})}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we started: mpiexec and every rank
        stdout, stderr = proc.communicate()
        pytest.fail(f"hang: still running after {TIMEOUT} s\n$ {shlex.join(cmd)}\n--- stderr ---\n{stderr}")
    return Outcome(shlex.join(cmd), proc.returncode, stdout, stderr, time.monotonic() - started)


def assert_input_error(out: Outcome, *fragments: str) -> None:
    """Exit 2, promptly, with one ``ef21-mpi: error:`` line holding every fragment and nothing else printed."""
    lines = [line for line in (out.stdout + program_stderr(out.stderr)).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ef21-mpi: error")]
    problems = []
    if out.code != 2:
        problems.append(f"exit status {out.code}, expected 2")
    if out.seconds > PROMPT:
        problems.append(f"took {out.seconds:.1f} s, expected under {PROMPT} s")
    if "Traceback" in out.stderr + out.stdout:
        problems.append("printed a traceback")
    if len(errors) != 1:
        problems.append(f"{len(errors)} 'ef21-mpi: error' lines, expected exactly one")
    elif not errors[0].startswith(ERROR):
        problems.append(f"error line does not start with {ERROR!r}")
    else:
        problems += [f"message lacks {f!r}" for f in fragments if f not in errors[0]]
    if len(lines) != len(errors):
        problems.append("printed lines besides the error line")
    assert not problems, "; ".join(problems) + "\n" + out.describe()


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry of ``folder`` (hidden ones too) with size, mtime and content hash."""
    entries = {}
    for p in sorted(folder.iterdir()):
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        entries[p.name] = (p.stat().st_size, p.stat().st_mtime_ns, digest)
    return entries


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A workspace: ``good.svm``, an empty ``out/`` folder for logs, an empty ``empty-data/`` folder."""
    (tmp_path / "good.svm").write_text(GOOD)
    (tmp_path / "out").mkdir()
    (tmp_path / "empty-data").mkdir()
    return tmp_path


def run_expecting_error(box: Path, args: list[str], fragments: list[str], ranks: int | None) -> Outcome:
    """Run with ``--out out/run.h5`` and check the error and that ``out/`` is still empty."""
    out = ef21(["run", *args, "--out", str(box / "out" / "run.h5")], cwd=box, ranks=ranks)
    assert_input_error(out, *fragments)
    left = snapshot(box / "out")
    assert not left, f"left behind in the log folder: {sorted(left)}\n{out.describe()}"
    return out


# --- the data file ------------------------------------------------------------------------------------------

def line3(bad: str) -> str:
    """GOOD with ``bad`` inserted as line 3."""
    lines = GOOD.splitlines()
    return "\n".join([*lines[:2], bad, *lines[2:]]) + "\n"


MALFORMED = {  # line 3 of the file -> what the message must say besides "FILE:3"
    "label-not-numeric": ("abc 1:1", ["label 'abc' is not a number"]),
    "label-nan": ("nan 1:1", ["label 'nan' is not finite"]),
    "label-inf": ("-inf 1:1", ["label '-inf' is not finite"]),
    "value-not-numeric": ("1 1:x", ["value of index 1 'x' is not a number"]),
    "value-python-underscore": ("1 1:1_0", ["'1_0' is not a number"]),
    "value-empty": ("1 2:", ["value of index 2 '' is not a number"]),
    "value-nan": ("1 2:nan", ["value of index 2 'nan' is not finite"]),
    "value-inf": ("1 2:inf", ["value of index 2 'inf' is not finite"]),
    "value-minus-inf": ("0 2:-inf", ["'-inf' is not finite"]),
    "value-overflows-to-inf": ("1 2:1e400", ["'1e400' is not finite"]),
    "index-zero": ("1 0:1", ["index '0' is not a positive integer", "1-based"]),
    "index-negative": ("1 -2:1", ["index '-2' is not a positive integer"]),
    "index-signed": ("1 +2:1", ["index '+2' is not a positive integer"]),
    "index-decreasing": ("1 3:1 2:1", ["strictly increasing", "2 follows 3"]),
    "index-repeated": ("1 2:1 2:5", ["strictly increasing", "2 follows 2"]),
    "index-beyond-int32": ("1 3000000000:1", ["index 3000000000 exceeds the maximum 2147483647"]),
    "feature-without-colon": ("1 5", ["'5' is not of the form index:value"]),
    "feature-two-colons": ("1 1:2:3", ["'1:2:3' is not of the form index:value"]),
}
WHOLE_FILE = {  # file content -> what the message must say besides the path
    "three-labels": (GOOD + "2 1:1\n", ["expected exactly two distinct labels", "found 3: 0, 1, 2"]),
    "one-label": ("1 1:1\n1 2:1\n1 3:1\n", ["expected exactly two distinct labels", "found 1: 1"]),
    "empty-file": ("", ["no data rows", "label index:value"]),
    "only-comments-and-blanks": ("# header\n\n   \n# more\n", ["no data rows"]),
    "no-row-has-a-feature": ("0\n1\n0\n", ["no row has any feature"]),
}
MPI_TOO = {"label-not-numeric", "value-nan", "index-decreasing", "three-labels", "one-label", "empty-file"}


def with_mpi(ids):
    return [pytest.param(i, None, id=f"{i}-serial") for i in ids] + \
        [pytest.param(i, RANKS, id=f"{i}-mpi") for i in ids if i in MPI_TOO]


@pytest.mark.parametrize("case,ranks", with_mpi(MALFORMED))
def test_malformed_line_names_file_line_and_reason(case, ranks, box):
    bad, fragments = MALFORMED[case]
    data = box / "bad.svm"
    data.write_text(line3(bad))
    run_expecting_error(box, ["--dataset", str(data), *COMMON], [f"{data}:3: ", *fragments], ranks)


@pytest.mark.parametrize("case,ranks", with_mpi(WHOLE_FILE))
def test_unusable_file_content(case, ranks, box):
    content, fragments = WHOLE_FILE[case]
    data = box / "bad.svm"
    data.write_text(content)
    run_expecting_error(box, ["--dataset", str(data), *COMMON], [str(data), *fragments], ranks)


def test_line_with_only_a_label_is_a_row_of_zeros(box):
    data = box / "label-only.svm"
    data.write_text(line3("1") + "0   # a comment after a label\n")
    log = box / "out" / "run.h5"
    out = ef21(["run", "--dataset", str(data), *COMMON, "--out", str(log)], cwd=box)
    assert out.code == 0, out.describe()
    assert "error" not in out.stderr, out.describe()
    with h5py.File(log, "r") as f:
        assert (f.attrs["N"], f.attrs["d"], f.attrs["status"]) == (8, 4, "completed")
        assert list(f["round"][()]) == [0, 1, 2, 3]


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_missing_data_file(ranks, box):
    missing = box / "missing.svm"
    run_expecting_error(box, ["--dataset", str(missing), *COMMON], [str(missing), "no such file"], ranks)


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_registered_data_set_not_in_data_folder(ranks, box):
    folder = box / "empty-data"
    run_expecting_error(box, ["--dataset", "a9a", "--data-dir", str(folder), *COMMON],
                        ["data set a9a not found", str(folder), "ef21-mpi data fetch a9a"], ranks)


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_unknown_data_set_name(ranks, box):
    run_expecting_error(box, ["--dataset", "a9b", "--data-dir", str(box / "empty-data"), *COMMON],
                        ["unknown data set 'a9b'", "phishing, mushrooms, a9a, w8a"], ranks)


def test_data_set_path_is_a_directory(box):
    run_expecting_error(box, ["--dataset", str(box / "empty-data"), *COMMON],
                        [str(box / "empty-data"), "directory", "expected a LibSVM file"], None)


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_checksum_mismatch_of_a_tampered_registry_file(ranks, box):
    folder = box / "data"
    folder.mkdir()
    tampered = folder / "a9a.bz2"
    tampered.write_bytes(bz2.compress(GOOD.encode()))
    got = hashlib.sha256(GOOD.encode()).hexdigest()
    run_expecting_error(box, ["--dataset", "a9a", "--data-dir", str(folder), *COMMON],
                        ["checksum mismatch for a9a", str(tampered), f"expected {REGISTRY['a9a'].sha256}",
                         f"got {got}"], ranks)


@pytest.mark.parametrize("name", ["a9a", "plain"])
def test_corrupt_compressed_file(name, box):
    folder = box / "data"
    folder.mkdir()
    corrupt = folder / f"{name}.bz2"
    corrupt.write_text(GOOD)  # plain text under a .bz2 name
    dataset = name if name == "a9a" else str(corrupt)
    run_expecting_error(box, ["--dataset", dataset, "--data-dir", str(folder), *COMMON],
                        [f"cannot decompress {corrupt}", "expected a valid .bz2 file"], None)


def test_index_beyond_declared_d_on_the_reader():
    """Not reachable from the CLI (see the module docstring), so the reader's ``d`` is checked directly."""
    with pytest.raises(ValueError, match=r"^x\.svm:3: index 5 exceeds the declared dimension d=4$"):
        parse_libsvm(b"0 1:1\n1 4:1\n0 2:1 5:1\n", "x.svm", d=4)
    assert parse_libsvm(b"0 1:1\n1 4:1\n", "x.svm", d=4).d == 4


# --- flags --------------------------------------------------------------------------------------------------

FLAGS = {  # extra flags -> message fragments (all rejected before or right after reading the data)
    "k-zero": (["--k", "0"], ["--k must be at least 1, got 0"]),
    "k-negative": (["--k=-3"], ["--k must be at least 1, got -3"]),
    "k-above-d": (["--k", "5"], ["--k 5 is out of range", "1 <= k <= d = 4"]),
    "workers-zero": (["--workers", "0"], ["--workers must be at least 1, got 0"]),
    "workers-above-rows": (["--workers", "7"], ["cannot split 6 rows among 7 workers", "1 <= workers <= 6"]),
    "lam-negative": (["--lam=-1"], ["--lam must be a non-negative finite number"]),
    "lam-nan": (["--lam", "nan"], ["--lam must be a non-negative finite number"]),
    "tol-negative": (["--tol=-1"], ["--tol must be a non-negative finite number"]),
    "rounds-negative": (["--rounds=-1"], ["--rounds must be non-negative, got -1"]),
    "log-every-zero": (["--log-every", "0"], ["--log-every must be at least 1, got 0"]),
    "sgd-without-batch-size": (["--algorithm", "ef21-sgd"], ["ef21-sgd needs --batch-size"]),
    "batch-size-above-shard": (["--algorithm", "ef21-sgd", "--batch-size", "4"],
                               ["--batch-size 4 exceeds the smallest shard (3 rows)"]),
}
for _flag in ("--stepsize", "--stepsize-multiplier"):
    for _value in ("0", "-1", "nan", "inf", "-inf"):
        FLAGS[f"{_flag[2:]}={_value}"] = ([f"{_flag}={_value}"],
                                          [f"{_flag} must be a positive finite number, got {float(_value)!r}"])


@pytest.mark.parametrize("case", FLAGS)
def test_bad_flag_value(case, box):
    extra, fragments = FLAGS[case]
    run_expecting_error(box, ["--dataset", str(box / "good.svm"), *COMMON, *extra], fragments, None)


@pytest.mark.parametrize("case", ["k-above-d"])
def test_bad_size_flag_under_mpi(case, box):
    extra, fragments = FLAGS[case]
    run_expecting_error(box, ["--dataset", str(box / "good.svm"), *COMMON, *extra], fragments, RANKS)


def write_x0(box: Path, case: str) -> Path:
    path = box / f"x0-{case}.npy"
    if case == "wrong-length":
        np.save(path, np.zeros(3))
    elif case == "matrix":
        np.save(path, np.zeros((4, 1)))
    elif case == "strings":
        np.save(path, np.array(["a", "b", "c", "d"]))
    elif case == "nan":
        np.save(path, np.array([0.0, np.nan, 0.0, 0.0]))
    elif case == "object-array":
        np.save(path, np.array([0.0, None, 0.0, 0.0], dtype=object), allow_pickle=True)
    elif case == "not-npy-content":
        path.write_text("0 0 0 0\n")
    return path


X0 = {
    "missing": ["--x0 file not found", "x0-missing.npy"],
    "wrong-length": ["x0-wrong-length.npy", "shape (4,)", "(3,)"],
    "matrix": ["x0-matrix.npy", "shape (4,)", "(4, 1)"],
    "strings": ["x0-strings.npy", "numeric vector"],
    "nan": ["x0-nan.npy", "NaN or infinite"],
    "object-array": ["x0-object-array.npy", "numeric vector"],
    "not-npy-content": ["x0-not-npy-content.npy"],
}


@pytest.mark.parametrize("case,ranks", [pytest.param(c, None, id=f"{c}-serial") for c in X0] +
                         [pytest.param("wrong-length", RANKS, id="wrong-length-mpi")])
def test_bad_x0_file(case, ranks, box):
    path = write_x0(box, case)
    run_expecting_error(box, ["--dataset", str(box / "good.svm"), *COMMON, "--x0", str(path)], X0[case], ranks)


def test_x0_that_is_not_a_npy_path(box):
    run_expecting_error(box, ["--dataset", str(box / "good.svm"), *COMMON, "--x0", "start.txt"],
                        ["--x0 'start.txt'", "expected zeros, normal or a path to a .npy file"], None)


ARGPARSE = {
    "unknown-algorithm": (["--algorithm", "ef22"], "argument --algorithm: invalid choice: 'ef22'"),
    "unknown-compressor": (["--compressor", "top-z"], "argument --compressor: invalid choice: 'top-z'"),
    "k-not-an-integer": (["--k", "1.5"], "argument --k: invalid int value: '1.5'"),
    "stepsize-not-a-number": (["--stepsize", "fast"], "argument --stepsize: invalid float value: 'fast'"),
}


@pytest.mark.parametrize("case", ARGPARSE)
def test_argparse_rejects_with_usage_and_status_2(case, box):
    extra, message = ARGPARSE[case]
    out = ef21(["run", "--dataset", str(box / "good.svm"), *COMMON, *extra, "--out", str(box / "out" / "run.h5")],
               cwd=box)
    assert out.code == 2 and message in out.stderr and "Traceback" not in out.stderr, out.describe()
    assert out.seconds < PROMPT and not snapshot(box / "out"), out.describe()


def test_debug_flag_shows_the_traceback(box):
    out = ef21(["--debug", "run", "--dataset", str(box / "missing.svm"), *COMMON, "--out", str(box / "out" / "r.h5")],
               cwd=box)
    assert out.code == 2 and "Traceback" in out.stderr and "InputError" in out.stderr, out.describe()
    assert out.stderr.count(ERROR) == 1, out.describe()


# --- the log path -------------------------------------------------------------------------------------------

@pytest.fixture
def locked_dir(tmp_path: Path):
    """A folder nobody can create files in, root included (``chattr +i``; plain permissions for other users)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    made = chattr is not None and subprocess.run([chattr, "+i", str(folder)], capture_output=True,
                                                 timeout=10, check=False).returncode == 0
    if not made:
        pytest.skip("this file system cannot make a folder unwritable for root (chattr +i); see the /proc case")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], capture_output=True, timeout=10, check=False)


def run_out_error(box: Path, out_path: Path, fragments: list[str], ranks: int | None, *extra: str) -> Outcome:
    """A run that would last for ever (10**9 rounds) whose ``--out`` is bad: it must fail before any work."""
    args = ["run", "--dataset", str(box / "good.svm"), "--workers", "2", "--rounds", HUGE_ROUNDS, "--quiet",
            "--out", str(out_path), *extra]
    out = ef21(args, cwd=box, ranks=ranks)
    assert_input_error(out, *fragments)
    return out


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_out_in_missing_folder_is_created(ranks, box):
    """``mkdir -p``: the folders are made (by rank 0) and the run writes its log there."""
    folder = box / "new" / "deeper"
    out = ef21(["run", "--dataset", str(box / "good.svm"), *COMMON, "--out", str(folder / "run.h5")], cwd=box,
               ranks=ranks)
    assert out.code == 0 and ERROR not in out.stderr, out.describe()
    assert sorted(p.name for p in folder.iterdir()) == ["run.h5"]
    with h5py.File(folder / "run.h5", "r") as f:
        assert f.attrs["status"] == "completed" and list(f["round"][()]) == [0, 1, 2, 3]


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_folders_made_for_a_refused_run_are_removed(ranks, box):
    """A run refused after its folder was made (the data set is bad) leaves no folder behind."""
    (box / "bad.svm").write_text("0 1:1\nnot a row\n")
    folder = box / "made" / "for-it"
    out = ef21(["run", "--dataset", str(box / "bad.svm"), *COMMON, "--out", str(folder / "run.h5")], cwd=box,
               ranks=ranks)
    assert_input_error(out, "bad.svm")
    assert not (box / "made").exists()


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_out_under_a_regular_file(ranks, box):
    parent = box / "a-file"
    parent.write_text("not a folder\n")
    run_out_error(box, parent / "run.h5", ["--out", str(parent), "is not a folder"], ranks)
    run_out_error(box, parent / "deeper" / "run.h5", ["--out", str(parent), "is not a folder"], ranks)
    assert parent.read_text() == "not a folder\n"


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_out_folder_that_cannot_be_created(ranks, box, locked_dir):
    run_out_error(box, locked_dir / "sub" / "run.h5", ["--out", str(locked_dir), "not writable"], ranks)
    assert not list(locked_dir.iterdir())


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_out_in_unwritable_folder(ranks, box, locked_dir):
    run_out_error(box, locked_dir / "run.h5", ["--out", str(locked_dir), "not writable"], ranks)
    assert not list(locked_dir.iterdir())


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_out_in_folder_that_refuses_new_files_even_to_root(ranks, box):
    """/proc passes ``os.access(W_OK)`` for root, yet no file can be created there."""
    target = Path("/proc/ef21-bad-input.h5")
    run_out_error(box, target, ["--out", str(target)], ranks)
    assert not target.exists()


def test_out_is_checked_before_the_data_is_read(box):
    parent = box / "a-file"
    parent.write_text("not a folder\n")
    out = ef21(["run", "--dataset", str(box / "missing.svm"), *COMMON, "--out", str(parent / "run.h5")], cwd=box)
    assert_input_error(out, "--out", "is not a folder")


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_existing_out_without_overwrite_is_untouched(ranks, box):
    log = box / "out" / "run.h5"
    log.write_bytes(b"an earlier run's log\n")
    before = snapshot(box / "out")
    time.sleep(0.01)
    run_out_error(box, log, ["--out", str(log), "already exists", "--overwrite"], ranks)
    assert snapshot(box / "out") == before


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "with-overwrite"])
def test_out_is_an_existing_directory(overwrite, box):
    target = box / "out" / "a-folder"
    target.mkdir()
    before = snapshot(box / "out")
    run_out_error(box, target, ["--out", str(target)], None, *(["--overwrite"] if overwrite else []))
    assert snapshot(box / "out") == before and not list(target.iterdir())


# --- world size ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ranks", [None, 1], ids=["no-mpiexec", "mpiexec-n-1"])
def test_mpi_backend_with_world_size_one(ranks, box):
    run_expecting_error(box, ["--dataset", str(box / "good.svm"), *COMMON, "--backend", "mpi"],
                        ["--backend mpi needs at least 2 ranks", "mpiexec -n N+1"], ranks)


def test_serial_backend_under_mpiexec(box):
    run_expecting_error(box, ["--dataset", str(box / "good.svm"), *COMMON, "--backend", "serial"],
                        ["--backend serial", "several ranks"], RANKS)


def test_more_ranks_than_rows(box):
    data = box / "three-rows.svm"
    data.write_text("0 1:1\n1 2:1\n0 1:1 2:1\n")
    run_expecting_error(box, ["--dataset", str(data), "--rounds", "3", "--quiet"],
                        ["cannot split 3 rows among 4 workers", "1 <= workers <= 3"], 5)


# --- required flags and --resume ----------------------------------------------------------------------------

def test_run_without_dataset(box):
    """(Without --out, a run writes runs/<name>.h5: see test_config.)"""
    out = ef21(["run", "--out", str(box / "out" / "run.h5"), *COMMON], cwd=box)
    assert_input_error(out, "--dataset is required", "--resume RUN.h5")
    assert not (box / "runs").exists()
    assert not snapshot(box / "out")


FAULT = {"EF21_MPI_FAULT": "rank=0,round=2,action=kill", "EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}


@pytest.fixture
def unfinished(box: Path) -> Path:
    """``out/run.h5`` of a serial run (2 workers) whose master was SIGKILLed at round 2, checkpointed every round."""
    log = box / "out" / "run.h5"
    out = ef21(["run", "--dataset", str(box / "good.svm"), *COMMON, "--rounds", "6", "--checkpoint-every", "1",
                "--flush-every", "1", "--out", str(log)], cwd=box, env=FAULT)
    assert out.code == -signal.SIGKILL, out.describe()
    with h5py.File(log, "r") as f:
        assert f.attrs["status"] == "running"
    return log


@pytest.fixture
def completed(box: Path) -> Path:
    log = box / "out" / "run.h5"
    out = ef21(["run", "--dataset", str(box / "good.svm"), *COMMON, "--out", str(log)], cwd=box)
    assert out.code == 0, out.describe()
    return log


def resume_expecting_error(box: Path, log: Path, fragments: list[str], ranks: int | None, *extra: str) -> None:
    """``run --resume LOG`` must be refused and leave every file beside the log as it was."""
    before = snapshot(box / "out")
    out = ef21(["run", "--resume", str(log), *extra], cwd=box, ranks=ranks)
    assert_input_error(out, f"--resume {log}", *fragments)
    after = snapshot(box / "out")
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}\n{out.describe()}"


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_resume_of_missing_file(ranks, box):
    resume_expecting_error(box, box / "out" / "never-written.h5", ["no such file"], ranks)


def test_resume_of_a_file_that_is_not_hdf5(box):
    log = box / "out" / "run.h5"
    log.write_text("just text\n")
    resume_expecting_error(box, log, ["not an HDF5 file"], None)


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_resume_of_an_hdf5_file_that_is_not_a_run_log(ranks, box):
    log = box / "out" / "other.h5"
    with h5py.File(log, "w") as f:
        f["numbers"] = np.arange(3)
        f.attrs["status"] = "running"
    resume_expecting_error(box, log, ["not an ef21-mpi run log"], ranks)


@pytest.mark.parametrize("ranks", [None, RANKS], ids=["serial", "mpi"])
def test_resume_of_a_completed_run(ranks, box, completed):
    resume_expecting_error(box, completed, ["already completed", "pass --rounds N > 3 to extend it"], ranks)


def test_resume_with_a_different_number_setting(box, unfinished):
    resume_expecting_error(box, unfinished, ["--k 2 differs from the original run's 1"], None, "--quiet", "--k", "2")


def test_resume_after_the_data_changed(box, unfinished):
    (box / "good.svm").write_text(GOOD.replace("1 3:1", "1 3:2"))
    resume_expecting_error(box, unfinished, ["has sha256", "the original run used"], None, "--quiet")


def test_resume_under_mpi_with_more_worker_ranks_than_workers(box, unfinished):
    resume_expecting_error(box, unfinished, ["--workers 2 leaves worker ranks idle", "mpiexec -n 3"], 4, "--quiet")
