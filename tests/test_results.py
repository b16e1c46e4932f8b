"""results.py on logs of short real runs: loading, bits/n conventions, the summary's numbers, labels."""

from __future__ import annotations

import os
import shutil
import threading

import h5py
import numpy as np
import pytest
from helpers import write_pm1_libsvm as write_libsvm

from ef21_mpi.analysis.results import Run, bits_per_worker, label, load_run, outcome, summary, tuning_key
from ef21_mpi.cli.main import main
from ef21_mpi.errors import InputError


def run_log(tmp_path, name="run.h5", *extra):
    data = tmp_path / "syn.svm"
    if not data.exists():
        write_libsvm(data)
    out = tmp_path / name
    code = main(["run", "--dataset", str(data), "--workers", "4", "--rounds", "60", "--out", str(out),
                 "--overwrite", "--quiet", "--backend", "serial", *extra])
    return out, code


@pytest.fixture
def ef21_log(tmp_path):
    out, code = run_log(tmp_path, "ef21.h5", "--algorithm", "ef21", "--k", "2", "--stepsize-multiplier", "4")
    assert code == 0
    return out


def test_load_run_reads_every_dataset(ef21_log):
    run = load_run(ef21_log)
    with h5py.File(ef21_log, "r") as f:
        for name in ("round", "grad_norm_sq", "loss", "distortion", "wall_time", "bits_up", "coords_up", "bits_down"):
            np.testing.assert_array_equal(getattr(run, name), f[name][()])
        np.testing.assert_array_equal(run.x_final, f["x_final"][()])
        assert run.attrs["status"] == f.attrs["status"] == "completed"
    assert run.rows == 61 and run.bits_up.shape == (61, 4)
    assert isinstance(run.attrs["k"], int) and isinstance(run.attrs["algorithm"], str)


def test_bits_per_worker_conventions(ef21_log):
    run = load_run(ef21_log)
    with h5py.File(ef21_log, "r") as f:
        coords, bits = f["coords_up"][()], f["bits_up"][()]
    paper = 32.0 * np.cumsum(coords[1:], axis=0).mean(axis=1)
    np.testing.assert_allclose(bits_per_worker(run, "paper"), np.concatenate([[0.0], paper]))
    np.testing.assert_allclose(bits_per_worker(run, "wire"), np.cumsum(bits, axis=0).mean(axis=1))
    assert bits_per_worker(run, "paper")[-1] == 60 * 2 * 32  # top-2: 2 coordinates a round
    # total: the wire uplink plus EF21's broadcast of x (d = 8 float64 values, 512 bits) in every row 0..60
    np.testing.assert_allclose(bits_per_worker(run, "total") - bits_per_worker(run, "wire"), 512.0 * np.arange(1, 62))
    s = summary(run, tol=1e-3)
    assert s["tol_bits_total"] == bits_per_worker(run, "total")[list(run.grad_norm_sq <= 1e-3).index(True)]
    with pytest.raises(InputError):
        bits_per_worker(run, "bytes")


def test_paper_bits_count_row_0_of_methods_without_initialisation(tmp_path):
    """EF's and GD's row 0 is their first step (no g_i^0 to send), so the paper's count includes it."""
    for algorithm, per_round in (("ef", 32 * 2), ("gd", 32 * 8)):
        out, code = run_log(tmp_path, f"{algorithm}.h5", "--algorithm", algorithm, "--k", "2")
        assert code == 0
        run = load_run(out)
        with h5py.File(out, "r") as f:
            coords = f["coords_up"][()]
        np.testing.assert_allclose(bits_per_worker(run, "paper"), 32.0 * np.cumsum(coords, axis=0).mean(axis=1))
        assert bits_per_worker(run, "paper")[0] == per_round and bits_per_worker(run, "paper")[-1] == 61 * per_round


def test_summary_numbers_match_the_log(ef21_log):
    run = load_run(ef21_log)
    with h5py.File(ef21_log, "r") as f:
        g, rounds, coords, bits = f["grad_norm_sq"][()], f["round"][()], f["coords_up"][()], f["bits_up"][()]
        gamma, gamma_theory = f.attrs["gamma"], f.attrs["gamma_theory"]
    tol = float(np.sqrt(g[0] * g[-1]))  # somewhere in the middle of the curve
    s = summary(run, tol=tol)
    row = int(np.argmax(g <= tol))
    assert g[row] <= tol and (row == 0 or g[row - 1] > tol)
    assert s["tol_round"] == rounds[row]
    assert s["tol_bits_paper"] == pytest.approx(32 * coords[1:row + 1].sum(axis=0).mean())
    assert s["tol_bits_wire"] == pytest.approx(bits[:row + 1].sum(axis=0).mean())
    assert s["bits_paper"] == pytest.approx(32 * coords[1:].sum() / 4)
    assert s["bits_wire"] == pytest.approx(bits.sum() / 4)
    assert s["grad_norm_sq_first"] == g[0] and s["grad_norm_sq_last"] == g[-1]
    assert s["grad_norm_sq_best"] == g.min() and s["best_round"] == rounds[np.argmin(g)]
    assert s["multiplier"] == pytest.approx(gamma / gamma_theory) == pytest.approx(4.0)
    assert (s["method"], s["compressor"], s["k"], s["dataset"], s["n"]) == ("EF21", "top-2", 2, "syn", 4)
    assert (s["status"], s["rounds_done"]) == ("completed", 60)
    assert s["rounds_per_second"] == pytest.approx(60 / s["wall_time"])
    assert summary(run)["tol"] is None and summary(run)["tol_round"] is None  # the run had --tol 0


def test_summary_uses_the_runs_tol(tmp_path):
    out, code = run_log(tmp_path, "tol.h5", "--tol", "1e-3")
    assert code == 0
    run = load_run(out)
    s = summary(run)
    assert s["status"] == "converged" and s["tol"] == 1e-3
    assert s["tol_round"] == s["rounds_done"] == run.round[-1]  # the run stops at the first row below tol
    assert summary(run, tol=1e-30)["tol_round"] is None


def test_labels(tmp_path, ef21_log):
    assert label(load_run(ef21_log)) == "EF21, top-2, 4x"
    out, _ = run_log(tmp_path, "half.h5", "--algorithm", "ef21-plus", "--stepsize-multiplier", "0.5")
    assert label(load_run(out)) == "EF21+, top-1, 0.5x"
    out, _ = run_log(tmp_path, "abs.h5", "--algorithm", "ef", "--stepsize", "0.01")
    assert label(load_run(out)) == "EF, top-1, gamma=0.01"
    out, _ = run_log(tmp_path, "gd.h5", "--algorithm", "gd")
    assert label(load_run(out)) == "GD, 1x"


def test_load_run_while_the_log_is_replaced(ef21_log, tmp_path):
    """A writer keeps renaming fresh snapshots over the log; every read sees one whole file."""
    copy = tmp_path / "copy.h5"
    shutil.copy(ef21_log, copy)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            shutil.copy(ef21_log, tmp_path / "next.h5")
            os.replace(tmp_path / "next.h5", copy)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        rows = [load_run(copy).rows for _ in range(30)]
    finally:
        stop.set()
        thread.join()
    assert rows == [61] * 30


def test_load_run_rejects_what_is_not_a_run_log(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_run(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="cannot be read"):
        load_run(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(InputError, match="not an ef21-mpi run log"):
        load_run(tmp_path / "other.h5")


def test_tuning_key_orders_reached_then_final_value_then_diverged():
    def s(bits, last, status="completed"):
        return {"tol_bits_paper": bits, "tol_round": None if bits is None else int(bits // 32),
                "grad_norm_sq_last": last, "status": status}

    candidates = {"slow": s(9000.0, 1e-8), "fast": s(3000.0, 1e-8), "close": s(None, 2e-7),
                  "far": s(None, 1e-3), "blown": s(None, None, "diverged")}
    assert sorted(candidates, key=lambda name: tuning_key(candidates[name])) == ["fast", "slow", "close", "far",
                                                                                  "blown"]


def _synthetic_run(g):
    g = np.asarray(g, dtype=float)
    R = len(g)
    zeros = np.zeros((R, 1), dtype=np.int64)
    return Run(path="synthetic", attrs={"status": "completed"}, round=np.arange(R), grad_norm_sq=g, loss=g,
               distortion=g, wall_time=np.arange(R, dtype=float), bits_up=zeros, coords_up=zeros,
               bits_down=np.zeros(R, dtype=np.int64), x_final=np.zeros(1))


def test_outcome_words():
    t = np.arange(40)
    assert outcome(_synthetic_run(0.5 * 0.5 ** t), 1e-7) == "reached 1e-07 at round 23"  # 0.5^24 < 1e-7 < 0.5^23
    plateau = np.maximum(0.5 ** t, 1e-4) * (1 + 0.3 * np.sin(t))
    assert outcome(_synthetic_run(plateau), 1e-7).startswith("stalls at ~")
    assert outcome(_synthetic_run(1.0 / (1 + t)), 1e-7) == "still decreasing (2.5e-02)"
    assert outcome(_synthetic_run(np.exp(t)), 1e-7) == "diverged"


def test_outcome_erratic_and_unstable():
    t = np.arange(40)
    jumpy = np.where(t % 3 == 0, 1e-2, 1e-6) + 0 * t
    assert outcome(_synthetic_run(jumpy), 1e-9) == "erratic (1e-06 to 1e-02)"
    dip = np.concatenate([0.5 ** t[:30], np.full(10, 1e-3)])
    assert outcome(_synthetic_run(dip), 1e-7) == "reached 1e-07 at round 24, then unstable (final 1.0e-03)"
