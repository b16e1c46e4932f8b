"""The logged ``distortion`` G^t (and ``grad_norm_sq``, ``loss``) at every logged round, against an independent
dense re-implementation of EF21 / EF21+ written here from SPEC 1.1, 2, 3 and 4.

Only stable interfaces are used: the real ``ef21-mpi run`` command (serial backend) on a small LibSVM file of
exactly representable values written by the test, and the HDF5 log read with h5py. Nothing of the package's
internals is imported, so a wrong factor in G^t at any round t >= 1 (not only at t = 0) fails here.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ef21, write_exact_libsvm

RTOL = 1e-10


# --- the reference, dense, from the SPEC -----------------------------------------------------------------------


def shards_of(A: np.ndarray, y: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """SPEC 2: sequential shards [i*m, (i+1)*m) with m = N // n; the last worker also gets the remainder."""
    m = len(y) // n
    return [(A[i * m:(i + 1) * m if i < n - 1 else len(y)], y[i * m:(i + 1) * m if i < n - 1 else len(y)])
            for i in range(n)]


def loss_i(A: np.ndarray, y: np.ndarray, x: np.ndarray, lam: float) -> float:
    """SPEC 1.1: mean log(1 + exp(-y a^T x)) + lam sum x_k^2 / (1 + x_k^2)."""
    return float(np.mean(np.logaddexp(0.0, -y * (A @ x))) + lam * np.sum(x**2 / (1.0 + x**2)))


def grad_i(A: np.ndarray, y: np.ndarray, x: np.ndarray, lam: float) -> np.ndarray:
    margins = y * (A @ x)
    sigma = 0.5 * (1.0 - np.tanh(0.5 * margins))  # 1 / (1 + exp(margin)), without overflow
    return -(A.T @ (y * sigma)) / len(y) + lam * 2.0 * x / (1.0 + x**2) ** 2


def top_k(v: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The k entries of largest magnitude; ties go to the lower index."""
    keep = np.lexsort((np.arange(len(v)), -np.abs(v)))[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def rand_k(v: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k uniform coordinates from the worker's generator, no rescaling."""
    keep = np.sort(rng.choice(len(v), k, replace=False))
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


COMPRESSORS = {"top-k": top_k, "rand-k": rand_k}


def reference(algorithm: str, compressor: str, k: int, init: str, A: np.ndarray, y: np.ndarray, n: int,
              gamma: float, lam: float, seed: int, rounds: int) -> dict[str, np.ndarray]:
    """Every round's G^t, ||grad f(x^t)||^2 and f(x^t) for EF21 / EF21+ (SPEC 4), x^0 = 0.

    Also ``plain``: per round t >= 1, how many EF21+ workers took the plain candidate C(s).
    """
    C = COMPRESSORS[compressor]
    shards = shards_of(A, y, n)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n + 1)[1:]]
    x = np.zeros(A.shape[1])
    grads = [grad_i(Ai, yi, x, lam) for Ai, yi in shards]
    if init == "full":
        g = [gr.copy() for gr in grads]
    elif init == "compressed":
        g = [C(gr, k, rngs[i]) for i, gr in enumerate(grads)]
    else:
        raise ValueError(init)
    out: dict[str, list[float]] = {"distortion": [], "grad_norm_sq": [], "loss": [], "plain": []}

    def record():
        out["distortion"].append(float(np.mean([np.sum((g[i] - grads[i]) ** 2) for i in range(n)])))
        mean_grad = np.mean(grads, axis=0)
        out["grad_norm_sq"].append(float(mean_grad @ mean_grad))
        out["loss"].append(float(np.mean([loss_i(Ai, yi, x, lam) for Ai, yi in shards])))

    record()
    for _ in range(rounds):
        x = x - gamma * np.mean(g, axis=0)
        grads = [grad_i(Ai, yi, x, lam) for Ai, yi in shards]
        plain_picks = 0  # EF21+ workers that took the plain candidate this round
        for i in range(n):
            s = grads[i]
            markov = g[i] + C(s - g[i], k, rngs[i])  # the Markov candidate draws first
            if algorithm == "ef21-plus":
                plain = C(s, k, rngs[i])
                take_plain = np.linalg.norm(plain - s) < np.linalg.norm(markov - s)  # strict
                g[i] = plain if take_plain else markov
                plain_picks += int(take_plain)
            else:
                g[i] = markov
        record()
        out["plain"].append(plain_picks)
    return {key: np.array(values) for key, values in out.items()}


# --- the runs --------------------------------------------------------------------------------------------------

CASES = [  # algorithm, compressor, k, init, n, log_every, stepsize flag
    ("ef21", "top-k", 2, "full", 3, 1, ["--stepsize", "0.75"]),
    ("ef21", "top-k", 1, "compressed", 4, 3, ["--stepsize-multiplier", "8"]),
    ("ef21", "rand-k", 2, "full", 4, 4, ["--stepsize", "0.5"]),
    ("ef21", "rand-k", 3, "compressed", 3, 1, ["--stepsize-multiplier", "4"]),
    ("ef21-plus", "top-k", 2, "full", 4, 1, ["--stepsize", "4"]),  # stepsizes at which both branches occur
    ("ef21-plus", "top-k", 1, "compressed", 3, 5, ["--stepsize", "4"]),
    ("ef21-plus", "rand-k", 3, "full", 3, 2, ["--stepsize-multiplier", "8"]),
    ("ef21-plus", "rand-k", 2, "compressed", 4, 1, ["--stepsize", "0.75"]),
]
N, D, ROUNDS, SEED = 50, 8, 25, 7


def run_log(tmp_path: Path, algorithm, compressor, k, init, n, log_every, step) -> tuple[dict, dict, np.ndarray,
                                                                                           np.ndarray]:
    data = tmp_path / "exact.svm"
    A, y = write_exact_libsvm(data, N=N, d=D, seed=n + k)
    out = tmp_path / "run.h5"
    done = ef21(["run", "--backend", "serial", "--dataset", str(data), "--algorithm", algorithm, "--compressor",
                 compressor, "--k", str(k), "--init", init, "--workers", str(n), "--rounds", str(ROUNDS),
                 "--log-every", str(log_every), "--seed", str(SEED), *step, "--quiet", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    with h5py.File(out, "r") as f:
        columns, attrs = {key: f[key][()] for key in f if isinstance(f[key], h5py.Dataset)}, dict(f.attrs)
    return columns, attrs, A, y


@pytest.mark.parametrize("algorithm,compressor,k,init,n,log_every,step", CASES,
                         ids=[f"{c[0]}-{c[1]}{c[2]}-{c[3]}-n{c[4]}-every{c[5]}" for c in CASES])
def test_logged_G_t_matches_dense_reference(algorithm, compressor, k, init, n, log_every, step, tmp_path):
    columns, attrs, A, y = run_log(tmp_path, algorithm, compressor, k, init, n, log_every, step)
    assert attrs["status"] == "completed"
    assert (attrs["algorithm"], attrs["compressor"], int(attrs["k"]), attrs["init"]) == (algorithm, compressor, k,
                                                                                        init)
    assert (int(attrs["n_workers"]), int(attrs["d"]), int(attrs["seed"])) == (n, D, SEED)
    assert list(attrs["shard_sizes"]) == [N // n] * (n - 1) + [N - (n - 1) * (N // n)]
    gamma, lam = float(attrs["gamma"]), float(attrs["lam"])
    assert lam == 0.1 and gamma > 0

    rounds = columns["round"]
    expected_rounds = sorted(set(range(0, ROUNDS + 1, log_every)) | {ROUNDS})
    assert list(rounds) == expected_rounds

    ref = reference(algorithm, compressor, k, init, A, y, n, gamma, lam, SEED, ROUNDS)
    for key in ("distortion", "grad_norm_sq", "loss"):
        np.testing.assert_allclose(columns[key], ref[key][rounds], rtol=RTOL, atol=0, err_msg=key)

    if algorithm == "ef21-plus":  # the comparison covers both EF21+ branches
        assert 0 < ref["plain"].sum() < n * ROUNDS
    G = columns["distortion"]
    later = rounds >= 1
    assert (G[later] > 0).all()  # the test compares non-trivial numbers after round 0
    if init == "full":
        assert G[0] == 0.0
    else:
        assert G[0] > 0
    # a log holding G^t / 2 (or 2 G^t) at the rounds t >= 1 would fail the comparison above
    for wrong in (0.5 * ref["distortion"][rounds], 2.0 * ref["distortion"][rounds]):
        assert not np.allclose(G[later], wrong[later], rtol=RTOL, atol=0)
        assert (np.abs(G[later] - wrong[later]) > 1e3 * RTOL * np.abs(G[later])).all()


@pytest.mark.parametrize("algorithm", ["ef", "gd", "dcgd"])
def test_methods_without_g_i_log_nan_distortion(algorithm, tmp_path):
    """SPEC 7: ``distortion`` is NaN where the method keeps no g_i (replaces the old in-process check)."""
    data = tmp_path / "exact.svm"
    A, y = write_exact_libsvm(data, N=N, d=D, seed=1)
    out = tmp_path / "run.h5"
    compressor = "identity" if algorithm == "gd" else "top-k"
    done = ef21(["run", "--backend", "serial", "--dataset", str(data), "--algorithm", algorithm, "--compressor",
                 compressor, "--k", "2", "--workers", "3", "--rounds", "6", "--quiet", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed" and list(f["round"][()]) == list(range(7))
        assert np.isnan(f["distortion"][()]).all()
        ref = reference("ef21", "top-k", 2, "full", A, y, 3, float(f.attrs["gamma"]), 0.1, 0, 0)  # x^0 only
        np.testing.assert_allclose(f["loss"][0], ref["loss"][0], rtol=RTOL)
        np.testing.assert_allclose(f["grad_norm_sq"][0], ref["grad_norm_sq"][0], rtol=RTOL)
