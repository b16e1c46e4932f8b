"""The bench's own pieces: the naive baseline computes what the package computes, and the bench runs end to end.

No timing is asserted anywhere: the bench prints figures, the tests check that they are about the right thing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ef21_mpi.bench import bench
from ef21_mpi.bench import naive as bench_naive
from ef21_mpi.core import synth
from ef21_mpi.core.compressors import TopK
from ef21_mpi.core.datasets import load

BENCH_TIMEOUT = 900  # seconds for the whole --quick bench on a loaded machine; a hang fails instead of blocking


@pytest.fixture
def small_file(tmp_path):
    return synth.write(synth.generate(rows=240, dim=30, nnz_per_row=6, workers=4, seed=2), tmp_path / "small.svm")


def test_naive_top_k_keeps_the_package_tie_rule():
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.integers(-3, 4, size=9).astype(float)  # many ties
        k = int(rng.integers(1, 9))
        indices, values = TopK(k, 9).compress(v)
        expected = np.zeros(9)
        expected[indices] = values
        np.testing.assert_array_equal(bench_naive.naive_top_k(v, k), expected)


@pytest.mark.parametrize("k", [1, 3])
def test_naive_ef21_follows_the_package_iterates(tmp_path, small_file, k):
    out = tmp_path / "run.h5"
    package = bench.serial_run(bench.run_config(str(small_file), out, rounds=40, log_every=1, k=k, workers=4))
    ds = load(str(small_file), None)
    x, grad_norm_sq, seconds = bench_naive.naive_ef21(bench_naive.naive_shards(ds.A, ds.y, 4), 0.1, package["gamma"], 40, k)
    assert seconds.shape == (40,)
    # dense BLAS and CSR sum in different orders: equal to rounding, not bit for bit
    np.testing.assert_allclose(x, package["x_final"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grad_norm_sq, package["grad_norm_sq"], rtol=1e-9)
    assert np.linalg.norm(x) > 0


def test_naive_loss_and_gradient_are_the_logistic_problem():
    rng = np.random.default_rng(1)
    A, y, x = rng.standard_normal((7, 4)), np.array([1, -1, 1, 1, -1, -1, 1.0]), rng.standard_normal(4)
    loss, grad = bench_naive.naive_loss_grad(A, y, x, 0.1)
    reference = np.mean(np.log(1 + np.exp(-y * (A @ x)))) + 0.1 * np.sum(x**2 / (1 + x**2))
    assert loss == pytest.approx(reference, rel=1e-13)
    h = 1e-6

    def loss(z):
        return bench_naive.naive_loss_grad(A, y, z, 0.1)[0]

    numeric = [(loss(x + h * e) - loss(x - h * e)) / (2 * h) for e in np.eye(4)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6)


def test_log_reader_counts_uplink_per_round(tmp_path, small_file):
    out = tmp_path / "run.h5"
    figures = bench.serial_run(bench.run_config(str(small_file), out, rounds=12, log_every=5, k=2, workers=4))
    assert figures["bits_up_per_worker_round"] == [2 * bench.BITS_PER_ENTRY]
    assert figures["coords_up_per_worker_round"] == [2.0]
    assert figures["round_seconds"] > 0


def _mpi_available() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def test_bench_quick_runs_end_to_end(tmp_path, small_file):
    parts = "serial,mpi,scale,workers" if _mpi_available() else "serial,workers"
    report = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "ef21_mpi", "bench", "--quick", "--dataset", str(small_file), "--parts", parts,
           "--workdir", str(tmp_path / "work"), "--json", str(report)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=BENCH_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    for words in ("compute floor", "serial backend, every round logged", "naive / serial", "machine:"):
        assert words in table
    result = json.loads(report.read_text())
    serial = result["serial"]
    assert serial["bits"] == [96.0] and serial["coords"] == [1.0]  # Top-1: one value and one index per round
    for key in ("floor", "serial_log1", "serial_sparse", "naive", "dense_floor"):
        assert serial[key] > 0
    # the per-round time of the last repeat, recomputed from the log it left in the workdir, read here with h5py
    with h5py.File(tmp_path / "work" / "serial-log1.h5", "r") as f:
        rounds, wall, bits_up = f["round"][()], f["wall_time"][()], f["bits_up"][()]
    assert serial["per_repeat"][-1]["serial_log1"] == pytest.approx(float(np.median(np.diff(wall) / np.diff(rounds))))
    assert (bits_up[1:] == 96).all()  # every worker, every round after the initialisation: 8 + 4 bytes
    ratio = serial["serial_log1_over_floor"]
    assert np.isfinite(ratio) and min(r["serial_log1"] / r["floor"] for r in serial["per_repeat"]) <= ratio
    workers = result["workers"]
    assert [r["n"] for r in workers["rows"] if r["dataset"] == small_file.name] == [2, 4, 8]  # --quick's counts
    for r in workers["rows"]:
        stem = Path(r["dataset"]).stem
        with h5py.File(tmp_path / "work" / f"workers-{stem}-{r['n']}.h5", "r") as f:  # the last repeat's log
            assert f["bits_up"].shape[1] == r["n"] and f.attrs["n_workers"] == r["n"]
            assert r["round"] == pytest.approx(float(np.median(np.diff(f["wall_time"][()]) / np.diff(f["round"][()]))))
    assert workers["peak_rss_mb"] > 10 and "[5] worker count" in table
    variants = {(r["variant"], r["n"]): r for r in workers["variants"]}
    assert len(variants) == 4 * 3 and "EF21-SGD Top-1, tau=2" in table
    for name, algorithm, compressor in (("EF21 Rand-1", "ef21", "rand-k"), ("EF21 natural", "ef21", "natural"),
                                        ("EF21 dithering s=4", "ef21", "dithering"),
                                        ("EF21-SGD Top-1, tau=2", "ef21-sgd", "top-k")):
        for n in (2, 4, 8):
            with h5py.File(tmp_path / "work" / f"variant-{algorithm}-{compressor}-{n}.h5", "r") as f:
                assert (f.attrs["algorithm"], f.attrs["compressor"], f.attrs["n_workers"]) == (algorithm, compressor, n)
                per_round = float(np.median(np.diff(f["wall_time"][()]) / np.diff(f["round"][()])))
            assert variants[name, n]["round"] == pytest.approx(per_round)  # --quick: one repeat, the figure is its own
            assert variants[name, n]["ratio"] == pytest.approx(per_round / variants[name, 2]["round"])
    floor = workers["floor"]
    assert floor["floor"] > 0 and floor["log1_over_floor"] > 0 and floor["sparse_over_floor"] > 0
    with h5py.File(tmp_path / "work" / "workers-log1.h5", "r") as f:  # every round logged, the last repeat
        assert f["round"][()].tolist() == list(range(13)) and f.attrs["n_workers"] == 2
        assert floor["log1"] == pytest.approx(float(np.median(np.diff(f["wall_time"][()]))))
    assert "serial n = 2, every round logged" in table and "x floor (target <= 1.3x)" in table
    if "mpi" in result:
        assert "MPI backend, every round logged" in table
        for mode in ("log1", "sparse"):
            assert result["mpi"][mode]["bits"] == [96.0]
            assert result["mpi"][mode]["floor"] > 0 and result["mpi"][mode]["compute_max"] > 0
        scale = [r for r in result["scale"] if "trace" not in r]
        assert {r["d"] for r in scale} == {100, 200}
        for r in scale:
            assert r["bits"] == [float(r["k"] * bench.BITS_PER_ENTRY)] == r["serial_bits"]
        traces = [r for r in result["scale"] if "trace" in r]
        assert traces and all(rank["traced_peak_mb"] > 0 for rank in traces[0]["trace"])
