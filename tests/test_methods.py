"""Each method against a dense re-implementation written here from SPEC 4 / the paper's algorithms."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_shards, run_serial_direct

from ef21_mpi.core.compressors import Identity, RandK, TopK
from ef21_mpi.core.methods import MessageSpec, make_method

LAM = 0.1


def dense_grad(A, y, x):
    """grad of mean log(1+exp(-y a^T x)) + LAM sum x^2/(1+x^2), dense."""
    A = A.toarray()
    m = y * (A @ x)
    return -(A.T @ (y / (1.0 + np.exp(m)))) / len(y) + LAM * 2 * x / (1 + x**2) ** 2


def dense_topk(v, k):
    order = np.lexsort((np.arange(len(v)), -np.abs(v)))  # by magnitude, ties to the lower index
    out = np.zeros_like(v)
    keep = order[:k]
    out[keep] = v[keep]
    return out


def dense_randk(v, k, rng):
    out = np.zeros_like(v)
    keep = np.sort(rng.choice(len(v), size=k, replace=False))
    out[keep] = v[keep]
    return out


def reference(algorithm, shards, gamma, rounds, C, init="full", seed=0):
    """Dense re-implementation; returns the list of ||grad f(x^t)||^2 and the final x."""
    n, d = len(shards), shards[0][0].shape[1]
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n + 1)[1:]]
    x = np.zeros(d)
    grads = [dense_grad(A, y, x) for A, y in shards]
    norms = [np.linalg.norm(np.mean(grads, axis=0)) ** 2]
    if algorithm in ("ef21", "ef21-plus"):
        if init == "full":
            g_i = [gr.copy() for gr in grads]
        elif init == "zero":
            g_i = [np.zeros(d) for _ in grads]
        else:
            g_i = [C(gr, rngs[i]) for i, gr in enumerate(grads)]
        for _ in range(rounds):
            x = x - gamma * np.mean(g_i, axis=0)
            for i, (A, y) in enumerate(shards):
                s = dense_grad(A, y, x)
                markov = g_i[i] + C(s - g_i[i], rngs[i])
                if algorithm == "ef21-plus":
                    plain = C(s, rngs[i])
                    g_i[i] = plain if np.linalg.norm(plain - s) < np.linalg.norm(markov - s) else markov
                else:
                    g_i[i] = markov
            norms.append(np.linalg.norm(np.mean([dense_grad(A, y, x) for A, y in shards], axis=0)) ** 2)
        return norms, x
    e_i = [np.zeros(d) for _ in shards]
    for t in range(rounds):
        if algorithm == "ef":
            v = [C(e_i[i] + gamma * grads[i], rngs[i]) for i in range(n)]
            e_i = [e_i[i] + gamma * grads[i] - v[i] for i in range(n)]
            x = x - np.mean(v, axis=0)
        elif algorithm == "gd":
            x = x - gamma * np.mean(grads, axis=0)
        elif algorithm == "dcgd":
            x = x - gamma * np.mean([C(grads[i], rngs[i]) for i in range(n)], axis=0)
        grads = [dense_grad(A, y, x) for A, y in shards]
        norms.append(np.linalg.norm(np.mean(grads, axis=0)) ** 2)
    return norms, x


D = 9
CASES = {
    "top-3": (TopK(3, D), lambda v, rng: dense_topk(v, 3)),
    "rand-2": (RandK(2, D), lambda v, rng: dense_randk(v, 2, rng)),
}


@pytest.mark.parametrize("algorithm", ["ef21", "ef21-plus", "ef", "gd", "dcgd"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_method_matches_dense_reimplementation(algorithm, case, tmp_path):
    shards = random_shards(4, D, seed=3)
    compressor, C = CASES[case]
    if algorithm == "gd":
        compressor = Identity(D)
    gamma, rounds = 0.3, 40
    log, outcome = run_serial_direct(algorithm, compressor, shards, gamma, rounds, tmp_path)
    norms, x = reference(algorithm, shards, gamma, rounds, C)
    assert outcome.status == "completed"
    np.testing.assert_allclose(log.column("grad_norm_sq"), norms, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(outcome.x, x, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("init", ["full", "compressed", "zero"])
def test_ef21_init_variants(init, tmp_path):
    shards = random_shards(3, D, seed=5)
    log, outcome = run_serial_direct("ef21", TopK(2, D), shards, 0.2, 30, tmp_path, init=init)
    norms, x = reference("ef21", shards, 0.2, 30, lambda v, rng: dense_topk(v, 2), init=init)
    np.testing.assert_allclose(log.column("grad_norm_sq"), norms, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(outcome.x, x, rtol=1e-12, atol=1e-14)


class FixedMask:
    """A linear compressor (keep a fixed set of coordinates): Theorem 1's hypothesis. Test-only, not contractive."""

    def __init__(self, keep, d):
        self.keep, self.d, self.k = np.asarray(keep, dtype=np.int32), d, len(keep)
        self.alpha = self.k / d
        self.n_values = self.k

    def compress(self, v, rng=None):
        return self.keep.copy(), v[self.keep]


def test_theorem1_ef_equals_ef21_for_linear_compressor(tmp_path):
    shards = random_shards(4, D, seed=7)
    mask = FixedMask([0, 2, 3, 7], D)
    # Theorem 1 compares Algorithm 3 (EF) with EF21 started from g_i^0 = C(grad_i(x^0)).
    ef21_log, ef21 = run_serial_direct("ef21", mask, shards, 0.25, 50, tmp_path, init="compressed")
    ef_log, ef = run_serial_direct("ef", mask, shards, 0.25, 50, tmp_path)
    assert ef.status == ef21.status == "completed"  # FixedMask has no compress_group: the row-by-row fallback ran
    np.testing.assert_allclose(ef.x, ef21.x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ef_log.column("grad_norm_sq"), ef21_log.column("grad_norm_sq"), rtol=1e-11)
    # and for Top-k (not additive) they differ, so the test can tell
    _, ef21_top = run_serial_direct("ef21", TopK(2, D), shards, 0.25, 50, tmp_path, init="compressed")
    _, ef_top = run_serial_direct("ef", TopK(2, D), shards, 0.25, 50, tmp_path)
    assert np.max(np.abs(ef21_top.x - ef_top.x)) > 1e-6


def test_ef21_with_k_equal_d_is_gd(tmp_path):
    shards = random_shards(3, D, seed=11)
    ef21_log, ef21 = run_serial_direct("ef21", TopK(D, D), shards, 0.5, 60, tmp_path)
    gd_log, gd = run_serial_direct("gd", Identity(D), shards, 0.5, 60, tmp_path)
    np.testing.assert_allclose(ef21.x, gd.x, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ef21_log.column("grad_norm_sq"), gd_log.column("grad_norm_sq"), rtol=1e-10)


@pytest.mark.parametrize("algorithm,compressor,first,later", [
    ("ef21", TopK(2, D), MessageSpec(D, False), MessageSpec(2, True)),
    ("ef21-plus", TopK(2, D), MessageSpec(D, False), MessageSpec(2, True, True)),
    ("ef", RandK(3, D), MessageSpec(3, True), MessageSpec(3, True)),
    ("gd", Identity(D), MessageSpec(D, False), MessageSpec(D, False)),
    ("dcgd", TopK(1, D), MessageSpec(1, True), MessageSpec(1, True)),
])
def test_bits_and_coords_per_round(algorithm, compressor, first, later, tmp_path):
    shards = random_shards(3, D, seed=1)
    method = make_method(algorithm, compressor, 0.1, 3, D)
    assert method.message_spec(0) == first and method.message_spec(5) == later
    log, _ = run_serial_direct(algorithm, compressor, shards, 0.1, 6, tmp_path)
    bits, coords = log.column("bits_up"), log.column("coords_up")
    # float64 values (64 bits) + int32 indices (32 bits) per sparse coordinate, + an 8-bit flag for EF21+
    expected_first = first.n_values * (64 + 32 * first.has_indices) + 8 * first.has_flag
    expected_later = later.n_values * (64 + 32 * later.has_indices) + 8 * later.has_flag
    assert (bits[0] == expected_first).all() and (bits[1:] == expected_later).all()
    assert (coords[0] == first.n_values).all() and (coords[1:] == later.n_values).all()
    assert (log.column("bits_down") == 64 * D).all()


def test_log_every_keeps_bits_exact(tmp_path):
    shards = random_shards(3, D, seed=4)
    full, _ = run_serial_direct("ef21", TopK(1, D), shards, 0.3, 20, tmp_path)
    thin, _ = run_serial_direct("ef21", TopK(1, D), shards, 0.3, 20, tmp_path, log_every=7)
    assert list(thin.column("round")) == [0, 7, 14, 20]
    cumulative = np.cumsum(full.column("bits_up"), axis=0)[[0, 7, 14, 20]]
    assert (np.cumsum(thin.column("bits_up"), axis=0) == cumulative).all()
    np.testing.assert_array_equal(thin.column("grad_norm_sq"), full.column("grad_norm_sq")[[0, 7, 14, 20]])


def test_message_spec_counts_values_indices_and_flag():
    assert MessageSpec(3, True, True).nbytes == 3 * (8 + 4) + 1
    assert MessageSpec(5, False).nbytes == 5 * 8
    assert MessageSpec(0, True).nbytes == 0


def test_row_norms_sq_is_each_rows_own_dot_product():
    """``||V[j]||^2`` per row (EF21+'s choice and the distortion) has the bits of ``float(v @ v)`` row by row, for
    contiguous rows and for rows of a wider array (the monitoring rows), at lengths around the SIMD widths."""
    from ef21_mpi.core.compressors.base import row_norms_sq

    rng = np.random.default_rng(21)
    for d in (1, 3, 8, 11, 16, 17, 33, 123, 1000):
        V = rng.standard_normal((7, d)) * 10.0 ** rng.integers(-8, 8, size=(7, 1))
        wide = np.zeros((7, d + 2))
        wide[:, :d] = V
        expected = np.array([float(v @ v) for v in V])
        assert row_norms_sq(V).tobytes() == expected.tobytes()
        assert row_norms_sq(wide[:, :d]).tobytes() == expected.tobytes()
