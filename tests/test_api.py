"""The Python API (`ef21_mpi.simulate`, `load_run`, `load_runs`): same logs as the command line, from any thread,
the process's signal handlers as they were, no lock file left, Python exceptions for bad options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_log, ef21, read_file, read_log, write_libsvm

import ef21_mpi
from ef21_mpi.core.compressors import TopK
from ef21_mpi.core.methods import EF21
from ef21_mpi.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = {"workers": 3, "rounds": 25, "k": 2, "seed": 1, "quiet": True}


@pytest.fixture
def data(tmp_path):
    (tmp_path / "data").mkdir()
    return write_libsvm(tmp_path / "data" / "small.svm", N=60, d=10, seed=3)


def leftovers(folder: Path) -> list[str]:
    """Everything beside the logs: lock files, checkpoints, temporary snapshots."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and (p.suffix != ".h5" or p.name.startswith(".")))


class FailsInRound(EF21):
    """EF21 whose master raises in round 3 (an error outside the workers, which the loop does not catch)."""

    def master_step(self, state, msgs, t):
        if t == 3:
            raise ZeroDivisionError("master broke in round 3")
        super().master_step(state, msgs, t)


def test_import_is_light():
    code = "import sys, ef21_mpi; print(sorted(m for m in ('numpy', 'h5py', 'scipy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
    assert callable(ef21_mpi.simulate) and ef21_mpi.load_run is ef21_mpi.api.load_run
    with pytest.raises(AttributeError):
        ef21_mpi.nothing_here  # noqa: B018


def test_simulate_writes_the_log_the_command_line_writes(tmp_path, data):
    cli = tmp_path / "cli.h5"
    done = ef21(["run", "--backend", "serial", "--dataset", str(data), "--workers", "3", "--rounds", "25", "--k", "2",
                 "--seed", "1", "--quiet", "--out", str(cli)])
    assert done.returncode == 0, done.stderr
    run = ef21_mpi.simulate(dataset=data, out=tmp_path / "api.h5", **SMALL)
    assert run.path == tmp_path / "api.h5" and run.status == "completed" and run.rows == 26
    assert_same_log(cli, run.path)
    assert leftovers(tmp_path) == []


def test_out_none_writes_a_complete_log_in_a_temporary_folder(tmp_path, data):
    reference = ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "ref.h5"), **SMALL)
    run = ef21_mpi.simulate(dataset=str(data), **SMALL)
    try:
        assert run.path.name == "run.h5" and run.path.parent != tmp_path
        assert run.status == "completed" and int(run.attrs["rounds_done"]) == 25 and run.rows == 26
        assert_same_log(reference.path, run.path)
        assert leftovers(run.path.parent) == []
    finally:
        run.path.unlink()
        run.path.parent.rmdir()


def test_simulate_from_a_thread_leaves_the_signal_handlers_alone(tmp_path, data):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, mine)
    try:
        results, errors = {}, []

        def work():
            try:
                results["run"] = ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "thread.h5"), **SMALL)
            except BaseException as err:  # noqa: BLE001 -- reported to the main thread below
                errors.append(err)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(120)
        assert not errors and not thread.is_alive()
        assert results["run"].status == "completed" and results["run"].rows == 26
        assert signal.getsignal(signal.SIGINT) is mine
        assert leftovers(tmp_path) == []
    finally:
        signal.signal(signal.SIGINT, previous)


def test_signal_handlers_are_restored_after_success_and_after_errors(tmp_path, data):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, mine)
    term = signal.getsignal(signal.SIGTERM)
    try:
        ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "ok.h5"), **SMALL)
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is term
        with pytest.raises(ZeroDivisionError, match="master broke in round 3"):  # raised inside the round loop
            ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "broken.h5"), algorithm=FailsInRound, **SMALL)
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is term
        _, attrs = read_log(tmp_path / "broken.h5")
        assert attrs["status"] == "failed"
        with pytest.raises(InputError):  # refused at start-up
            ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "k.h5"), **{**SMALL, "k": 0})
        assert signal.getsignal(signal.SIGINT) is mine
        assert leftovers(tmp_path) == []  # no lock file after success or after either failure
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_the_main_thread_stops_the_run_and_raises_keyboard_interrupt(tmp_path, data):
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt, match="--resume"):
            ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "long.h5"), **{**SMALL, "rounds": 10**7})
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGINT) is before
    _, attrs = read_log(tmp_path / "long.h5")
    assert attrs["status"] == "interrupted" and 0 < attrs["rounds_done"] < 10**7
    assert leftovers(tmp_path) == ["long.h5.ckpt"]  # the checkpoint to resume from; no lock


def test_a_failed_worker_round_raises_runtime_error_and_keeps_the_log(tmp_path, data):
    class Breaks:
        alpha, n_values, calls = 0.2, 2, 0

        def compress(self, v, rng):
            type(self).calls += 1
            if type(self).calls > 10:
                raise ValueError("compressor broke")
            return np.arange(2, dtype=np.int32), v[:2]

    with pytest.raises(RuntimeError, match="run failed"):
        ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "r.h5"), compressor=Breaks(), **SMALL)
    _, attrs = read_log(tmp_path / "r.h5")
    assert attrs["status"] == "failed" and attrs["compressor"].endswith("Breaks")
    assert leftovers(tmp_path) == []


def test_bad_options_raise_python_exceptions(tmp_path, data):
    with pytest.raises(TypeError, match=r"unknown option stepsize_mult; valid options: dataset, out, algorithm"):
        ef21_mpi.simulate(dataset=str(data), stepsize_mult=2)
    with pytest.raises(InputError, match=r"--k expects an integer, got '2'"):
        ef21_mpi.simulate(dataset=str(data), k="2")
    with pytest.raises(InputError, match=r"--compressor 'top-z' is not known"):
        ef21_mpi.simulate(dataset=str(data), compressor="top-z")
    with pytest.raises(InputError, match=r"--algorithm .*pass the Method subclass, not an instance"):
        ef21_mpi.simulate(dataset=str(data), algorithm=EF21(TopK(1, 10), 1.0, 3, 10))
    with pytest.raises(InputError, match="--dataset is required"):
        ef21_mpi.simulate(rounds=3)
    (tmp_path / "exists.h5").write_bytes(b"")
    with pytest.raises(InputError, match="already exists"):
        ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "exists.h5"))


def test_objects_and_names_give_the_same_numbers(tmp_path, data, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from block_top_k import BlockTopK
    from damped_shifts import DampedShifts

    by_name = ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "names.h5"), algorithm="damped_shifts:DampedShifts",
                                compressor="block_top_k:BlockTopK", compressor_args={"block": 3}, **SMALL)
    by_object = ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "objects.h5"), algorithm=DampedShifts,
                                  compressor=BlockTopK(d=10, block=3), **SMALL)
    a, attrs_a = read_file(by_name.path)
    b, attrs_b = read_file(by_object.path)
    for key in set(a) - {"wall_time"}:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert attrs_a["algorithm"] == attrs_b["algorithm"] == "damped_shifts:DampedShifts"
    assert attrs_a["compressor"] == attrs_b["compressor"] == "block_top_k:BlockTopK"
    assert json.loads(attrs_b["compressor_args"]) == {"d": 10, "block": 3}  # an instance records its fields
    top = ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "top.h5"), compressor=TopK(2, 10), **SMALL)
    name = ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "top-name.h5"), **SMALL)
    np.testing.assert_array_equal(top.grad_norm_sq, name.grad_norm_sq)
    np.testing.assert_array_equal(top.x_final, name.x_final)


def test_load_runs_is_one_row_per_logged_round_with_the_configuration(tmp_path, data):
    pd = pytest.importorskip("pandas")
    paths = [ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "a_ef21.h5"), **SMALL).path,
             ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "b_dcgd.h5"), algorithm="dcgd",
                               stepsize_multiplier=2.0, log_every=4, **SMALL).path]
    table = ef21_mpi.load_runs(str(tmp_path / "*.h5"))
    assert isinstance(table, pd.DataFrame)
    assert ef21_mpi.load_runs(tmp_path).equals(table) and ef21_mpi.load_runs(paths).equals(table)
    cols = [read_log(p) for p in paths]
    assert len(table) == sum(len(c["round"]) for c, _ in cols) == 26 + 8  # dcgd logs rounds 0, 4, ..., 24, 25
    for path, (c, attrs) in zip(paths, cols):
        rows = table[table["path"] == str(path)]
        np.testing.assert_array_equal(rows["round"], c["round"])
        for name in ("grad_norm_sq", "loss", "distortion", "wall_time", "bits_down"):
            np.testing.assert_array_equal(rows[name], c[name], err_msg=name)
        np.testing.assert_array_equal(rows["bits_up_mean"], c["bits_up"].mean(axis=1))
        np.testing.assert_array_equal(rows["bits_n_wire"], np.cumsum(c["bits_up"].mean(axis=1)))
        paper = 32.0 * c["coords_up"].mean(axis=1)
        if attrs["algorithm"] == "ef21":
            paper[0] = 0.0  # EF21's row 0 is the initialisation, not counted in the paper's bits
        np.testing.assert_array_equal(rows["bits_n_paper"], np.cumsum(paper))
        for name in ("algorithm", "compressor", "k", "seed", "n_workers", "gamma", "gamma_theory", "status",
                     "log_every", "stepsize_multiplier"):
            assert (rows[name] == attrs[name]).all(), name
    assert set(table["algorithm"]) == {"ef21", "dcgd"}
    with pytest.raises(InputError, match="no run logs match"):
        ef21_mpi.load_runs(str(tmp_path / "none-*.h5"))


def test_the_quickstart_example_runs(tmp_path, data):
    pytest.importorskip("pandas")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(EXAMPLES / "api_quickstart.py"), str(data), "30"], capture_output=True,
                          text=True, timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()[-5:]  # the header and one line per run of the last cell
    assert table[0].split()[:3] == ["algorithm", "compressor", "k"]
    assert sorted(line.split()[0] for line in table[1:]) == ["damped_shifts:DampedShifts", "ef21", "ef21", "ef21"]
    assert all(line.split()[4] == "30" for line in table[1:])  # every run reached its last round


def test_load_runs_says_what_mu_is_for_least_squares(tmp_path, data):
    pytest.importorskip("pandas")
    import h5py

    from ef21_mpi.core.smoothness import MU_PL, MU_STRONG

    paths = [ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / f"ls-{lam}.h5"), problem="least-squares",
                               lam=lam, **SMALL).path for lam in (0.0, 0.1)]
    paths.append(ef21_mpi.simulate(dataset=str(data), out=str(tmp_path / "logreg.h5"), **SMALL).path)
    table = ef21_mpi.load_runs(paths)
    for path in paths[:2]:
        with h5py.File(path, "r") as f:
            stored = f.attrs["mu_kind"]
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        assert stored in (MU_PL, MU_STRONG)
        assert set(table[table["path"] == str(path)]["mu_kind"]) == {stored}
    assert table[table["path"] == str(paths[2])]["mu_kind"].isna().all()  # logistic regression has no mu
