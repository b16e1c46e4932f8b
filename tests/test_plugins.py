"""Plug-ins from the command line: the examples' compressor and method against dense re-implementations written
here, serial == MPI bit for bit, kill/resume with a plug-in's own state types, and one-line errors for bad specs.

The plug-in modules live in ``examples/``; every launch puts that folder on PYTHONPATH (as a user must, on
every rank).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_log, ef21, program_stderr, read_file, read_log, write_exact_libsvm

from ef21_mpi.core.data import shard_bounds

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {"PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
BLOCK = ["--compressor", "block_top_k:BlockTopK", "--compressor-arg", "block=3"]
DAMPED = ["--algorithm", "damped_shifts:DampedShifts"]
LAM = 0.1


def run(args, out, ranks=None, env=None):
    done = ef21(["run", *args, "--out", str(out), "--quiet"], ranks=ranks, env={**ENV, **(env or {})})
    return done


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "exact.svm"
    A, y = write_exact_libsvm(path, N=48, d=10, seed=4)
    return path, A, y


def common(data_path, workers=4, rounds=30):
    return ["--dataset", str(data_path), "--workers", str(workers), "--rounds", str(rounds), "--seed", "2"]


# --- dense re-implementations ---------------------------------------------------------------------------------


def dense_grad(A, y, x):
    """grad of mean log(1 + exp(-y a^T x)) + LAM sum x^2/(1 + x^2) (SPEC 1), dense."""
    margins = y * (A @ x)
    return -(A.T @ (y / (1.0 + np.exp(margins)))) / len(y) + LAM * 2 * x / (1 + x**2) ** 2


def dense_block_top_k(v, block):
    """The window of `block` coordinates with the largest sum of squares (windows at 0, b, 2b, ..., the last
    ending at d; the first best wins), as a dense vector."""
    d = len(v)
    starts = sorted({min(s, d - block) for s in range(0, d, block)})
    best = max(starts, key=lambda s: (sum(v[j] ** 2 for j in range(s, s + block)), -s))
    out = np.zeros(d)
    out[best:best + block] = v[best:best + block]
    return out


def dense_top_k(v, k):
    keep = np.lexsort((np.arange(len(v)), -np.abs(v)))[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def dense_shifted(shards, gamma, rounds, C, eta):
    """Damped shifts (examples/damped_shifts.py): h_i += eta C(grad_i - h_i), g = h + mean C(...), per worker."""
    d = shards[0][0].shape[1]
    x = np.zeros(d)
    h_i = [dense_grad(A, y, x) for A, y in shards]
    h = np.mean(h_i, axis=0)
    g = h.copy()
    norms = [np.linalg.norm(g) ** 2]
    for _ in range(rounds):
        x = x - gamma * g
        c = [C(dense_grad(A, y, x) - h_i[i]) for i, (A, y) in enumerate(shards)]
        h_i = [h_i[i] + eta * c[i] for i in range(len(shards))]
        g = h + np.mean(c, axis=0)
        h = h + eta * np.mean(c, axis=0)
        norms.append(np.linalg.norm(np.mean([dense_grad(A, y, x) for A, y in shards], axis=0)) ** 2)
    return np.array(norms), x


def split(A, y, n):
    return [(A[lo:hi], y[lo:hi]) for lo, hi in shard_bounds(len(y), n)]


# --- the examples' definitions ----------------------------------------------------------------------------------


def test_block_top_k_is_the_best_window_and_contractive_with_its_alpha():
    import sys

    sys.path.insert(0, str(EXAMPLES))
    try:
        from block_top_k import BlockTopK
    finally:
        sys.path.remove(str(EXAMPLES))
    rng = np.random.default_rng(0)
    for d, block in [(10, 3), (12, 4), (7, 7), (9, 1)]:
        C = BlockTopK(d=d, block=block)
        assert C.alpha == 1 / math.ceil(d / block) and C.n_values == block
        for _ in range(200):
            v = rng.standard_normal(d) * rng.choice([1e-3, 1.0, 1e3], size=d)
            idx, vals = C.compress(v, None)
            dense = np.zeros(d)
            dense[idx] = vals
            np.testing.assert_array_equal(dense, dense_block_top_k(v, block))
            assert np.sum((dense - v) ** 2) <= (1 - C.alpha) * np.sum(v**2) * (1 + 1e-12)


# --- runs through the command line ------------------------------------------------------------------------------


def test_block_top_k_plugin_run_matches_dense_ef21(tmp_path, data):
    path, A, y = data
    out = tmp_path / "serial.h5"
    done = run([*common(path), *BLOCK, "--stepsize", "0.5"], out)
    assert done.returncode == 0, done.stderr
    cols, attrs = read_log(out)
    assert attrs["compressor"] == "block_top_k:BlockTopK" and attrs["compressor_args"] == '{"block": 3}'
    assert attrs["alpha"] == 1 / 4 and attrs["k"] == 3
    shards = split(A, y, 4)
    # EF21 = damped shifts with eta = 1 (h = g), so the same dense loop serves both
    norms, x = dense_shifted(shards, 0.5, 30, lambda v: dense_block_top_k(v, 3), eta=1.0)
    np.testing.assert_allclose(cols["grad_norm_sq"], norms, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cols["x_final"], x, rtol=1e-12, atol=1e-14)
    assert (cols["coords_up"][1:] == 3).all() and (cols["bits_up"][1:] == 3 * (64 + 32)).all()


def test_damped_shifts_plugin_run_matches_dense_reimplementation(tmp_path, data):
    path, A, y = data
    out = tmp_path / "serial.h5"
    done = run([*common(path), *DAMPED, "--k", "2", "--stepsize", "0.5"], out)
    assert done.returncode == 0, done.stderr
    cols, attrs = read_log(out)
    assert attrs["algorithm"] == "damped_shifts:DampedShifts"
    norms, x = dense_shifted(split(A, y, 4), 0.5, 30, lambda v: dense_top_k(v, 2), eta=0.5)
    np.testing.assert_allclose(cols["grad_norm_sq"], norms, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cols["x_final"], x, rtol=1e-12, atol=1e-14)
    # and eta = 0.5 is not EF21: the dense loop with eta = 1 gives other numbers
    assert not np.allclose(dense_shifted(split(A, y, 4), 0.5, 30, lambda v: dense_top_k(v, 2), eta=1.0)[0], norms)


def test_damped_shifts_with_eta_1_is_ef21_bit_for_bit(tmp_path, data):
    path = data[0]
    assert run([*common(path), "--k", "2"], tmp_path / "ef21.h5").returncode == 0
    done = run([*common(path), "--k", "2", "--algorithm", "damped_shifts:DampedShiftsEta1"], tmp_path / "eta1.h5")
    assert done.returncode == 0, done.stderr
    a, _ = read_file(tmp_path / "ef21.h5")
    b, _ = read_file(tmp_path / "eta1.h5")
    for key in set(a) - {"wall_time"}:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.mpi
@pytest.mark.parametrize("plugin", [BLOCK + ["--k", "2"], DAMPED + ["--k", "2"], DAMPED + BLOCK],
                         ids=["compressor", "method", "both"])
@pytest.mark.parametrize("workers", [2, 4])
def test_plugins_serial_equals_mpi_bit_for_bit(plugin, workers, tmp_path, data):
    path = data[0]
    serial, parallel = tmp_path / "serial.h5", tmp_path / "mpi.h5"
    assert run([*common(path, workers), *plugin, "--backend", "serial"], serial).returncode == 0
    done = run([*common(path, workers), *plugin], parallel, ranks=3)
    assert done.returncode == 0, done.stderr
    assert read_file(parallel)[1]["world_size"] == 3
    assert_same_log(serial, parallel)


@pytest.mark.mpi
def test_plugin_method_kill_and_resume_is_bit_identical(tmp_path, data):
    """The plug-in's own worker state (h_i) and master state (h) go through the generic checkpoint code."""
    path = data[0]
    args = [*common(path, 4, rounds=60), *DAMPED, *BLOCK, "--checkpoint-every", "10", "--flush-every", "1"]
    reference = tmp_path / "reference.h5"
    assert run([*args, "--backend", "serial"], reference).returncode == 0
    out = tmp_path / "run.h5"
    fault = {"EF21_MPI_FAULT": "rank=0,round=35,action=kill", "EF21_MPI_FAULT_ARMED": "yes, crash this run on purpose"}
    crashed = run([*args, "--backend", "serial"], out, env=fault)
    assert crashed.returncode != 0
    with __import__("h5py").File(Path(str(out) + ".ckpt"), "r") as f:
        assert set(f["workers"]) == {"rngs", "h"} and set(f["master"]) == {"x", "g", "h"}
        assert f.attrs["round"] == 30
    resumed = ef21(["run", "--resume", str(out), "--quiet"], ranks=3, env=ENV)  # and on the other backend
    assert resumed.returncode == 0, resumed.stderr
    assert_same_log(reference, out)


# --- bad specs: one line, exit 2, every rank ----------------------------------------------------------------------

BAD = {
    "no-module": (["--compressor", "no_such_module:X"], "cannot import module 'no_such_module'"),
    "no-class": (["--compressor", "block_top_k:Nope"], "module block_top_k has no class Nope"),
    "not-a-compressor": (["--compressor", "damped_shifts:ShiftWorkers"], "lacks compress"),
    "bad-arg": (["--compressor", "block_top_k:BlockTopK", "--compressor-arg", "block=0"],
                "raised ValueError: block must be in 1..d = 10, got 0"),
    "unknown-arg": (["--compressor", "block_top_k:BlockTopK", "--compressor-arg", "size=3"],
                    "unexpected keyword argument 'size'"),
    "malformed-arg": (["--compressor", "block_top_k:BlockTopK", "--compressor-arg", "block"],
                      "--compressor-arg 'block': expected NAME=VALUE"),
    "arg-for-builtin": (["--compressor-arg", "block=2"], "top-k takes no --compressor-arg (block)"),
    "method-not-a-method": (["--algorithm", "block_top_k:BlockTopK"], "is not a subclass of ef21_mpi.core.methods"),
    "method-no-module": (["--algorithm", "nowhere.deep:M"], "cannot import module 'nowhere'"),
    "no-alpha": (["--compressor", "badplug:NoAlpha"], "badplug:NoAlpha lacks alpha (or omega)"),
    "wrong-shape": (["--compressor", "badplug:WrongShape"], "returned values of shape (3,), expected (2,)"),
    "raises": (["--compressor", "badplug:Raises"], "compress(v, rng) raised ZeroDivisionError"),
    "import-raises": (["--algorithm", "badimport:M"], "importing badimport raised RuntimeError: broken on import"),
}

BADPLUG = """
import numpy as np

class NoAlpha:
    n_values = 2
    def compress(self, v, rng):
        return np.arange(2, dtype=np.int32), v[:2]

class WrongShape(NoAlpha):
    alpha = 0.5
    def compress(self, v, rng):
        return np.arange(2, dtype=np.int32), v[:3]

class Raises(WrongShape):
    def compress(self, v, rng):
        return 1 / 0
"""


@pytest.mark.parametrize("ranks", [None, pytest.param(3, marks=pytest.mark.mpi)], ids=["serial", "mpi"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_plugin_specs_are_one_line_errors(case, ranks, tmp_path, data):
    extra, fragment = BAD[case]
    folder, modules = tmp_path / "out", tmp_path / "modules"
    folder.mkdir()
    modules.mkdir()
    (modules / "badplug.py").write_text(BADPLUG)
    (modules / "badimport.py").write_text("raise RuntimeError('broken on import')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(modules), ENV["PYTHONPATH"]])}
    done = ef21(["run", *common(data[0]), *extra, "--out", str(folder / "run.h5"), "--quiet"], ranks=ranks, env=env)
    lines = [line for line in (done.stdout + program_stderr(done.stderr)).splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("ef21-mpi: error: ") and fragment in lines[0], lines
    assert not list(folder.iterdir())  # no log, no lock, no temporary file


def test_analysis_knows_a_plugin_method_from_its_spec(tmp_path, data, monkeypatch):
    """The paper's bits convention skips row 0 of a method that initialises: the plug-in's class says so."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from damped_shifts import DampedShifts

    from ef21_mpi.analysis.results import UnknownMethod, bits_per_worker, load_run, method_facts

    assert method_facts("damped_shifts:DampedShifts") is DampedShifts
    assert method_facts("nowhere_at_all:Method") == UnknownMethod("nowhere_at_all:Method")
    out = tmp_path / "damped.h5"
    assert run([*common(data[0]), *DAMPED, "--k", "2"], out).returncode == 0
    logged = load_run(out)
    assert bits_per_worker(logged, "paper")[0] == 0.0 and bits_per_worker(logged, "paper")[-1] == 30 * 2 * 32
