"""Objectives and smoothness constants (SPEC 1) against dense numpy computations made here, not by the package."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from ef21_mpi.core import smoothness
from ef21_mpi.core.problems import LeastSquaresShards, LogisticShards
from ef21_mpi.core.smoothness import least_squares_optimum, smoothness_constants

LAM = 0.1


# --- independent reference formulas ---------------------------------------------------------------


def random_csr(rng: np.random.Generator, n_rows: int, d: int, density: float = 0.3) -> sp.csr_matrix:
    """A small random sparse matrix with signed entries, plus one guaranteed non-zero per row."""
    A = sp.random(n_rows, d, density=density, format="lil", rng=rng, data_rvs=rng.standard_normal)
    for j in range(n_rows):
        A[j, rng.integers(d)] = rng.standard_normal() + 2.0
    return sp.csr_matrix(A)


def random_labels(rng: np.random.Generator, n_rows: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=n_rows)


def random_shards(rng: np.random.Generator, sizes: list[int], d: int) -> list[tuple[sp.csr_matrix, np.ndarray]]:
    return [(random_csr(rng, N_i, d), random_labels(rng, N_i)) for N_i in sizes]


def dense_logistic_loss(A: np.ndarray, y: np.ndarray, x: np.ndarray, lam: float) -> float:
    margins = y * (A @ x)
    data = np.mean(np.log1p(np.exp(-margins))) if len(y) else 0.0
    return float(data + lam * np.sum(x**2 / (1.0 + x**2)))


def dense_logistic_grad(A: np.ndarray, y: np.ndarray, x: np.ndarray, lam: float) -> np.ndarray:
    margins = y * (A @ x)
    weights = -y / (1.0 + np.exp(margins)) / len(y)
    return A.T @ weights + 2.0 * lam * x / (1.0 + x**2) ** 2


def dense_least_squares_loss(A: np.ndarray, y: np.ndarray, x: np.ndarray, lam: float) -> float:
    r = A @ x - y
    return float(r @ r / (2.0 * len(y)) + 0.5 * lam * x @ x)


def central_differences(f, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    g = np.empty_like(x)
    for k in range(len(x)):
        e = np.zeros_like(x)
        e[k] = h
        g[k] = (f(x + e) - f(x - e)) / (2.0 * h)
    return g


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def lam_max(M: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(M)[-1])


def lam_min(M: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(M)[0])


# --- logistic regression: values and gradients ----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_loss_matches_dense_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    A = random_csr(rng, 25, 9)
    y = random_labels(rng, 25)
    shard = LogisticShards([(A, y)], LAM)
    for scale in (0.0, 0.1, 1.0, 3.0):
        x = scale * rng.standard_normal(9)
        assert shard.loss(x) == pytest.approx(dense_logistic_loss(A.toarray(), y, x, LAM), rel=1e-13, abs=1e-15)
    assert shard.loss(np.zeros(9)) == pytest.approx(np.log(2.0), rel=1e-15)


@pytest.mark.parametrize("lam", [0.0, LAM, 2.5])
def test_logistic_grad_matches_central_differences(lam: float) -> None:
    # lam = 0 isolates the data term; the other values add the regulariser on top of it.
    rng = np.random.default_rng(10)
    A = random_csr(rng, 30, 8)
    y = random_labels(rng, 30)
    shard = LogisticShards([(A, y)], lam)
    for scale in (0.3, 1.0, 2.0, 4.0):
        x = scale * rng.standard_normal(8)
        g = shard.grad(x)
        assert rel_err(g, central_differences(shard.loss, x)) < 1e-6
        assert rel_err(g, dense_logistic_grad(A.toarray(), y, x, lam)) < 1e-12


def test_logistic_regulariser_alone_with_zero_data() -> None:
    # A zero matrix makes every margin 0: data term log 2 everywhere, data gradient 0, so the regulariser shows alone.
    rng = np.random.default_rng(11)
    d, N = 7, 5
    shard = LogisticShards([(sp.csr_matrix((N, d)), random_labels(rng, N))], LAM)
    for scale in (0.1, 1.0, 5.0):
        x = scale * rng.standard_normal(d)
        assert shard.loss(x) == pytest.approx(np.log(2.0) + LAM * np.sum(x**2 / (1 + x**2)), rel=1e-14)
        expected = 2.0 * LAM * x / (1.0 + x**2) ** 2
        np.testing.assert_allclose(shard.grad(x), expected, rtol=1e-14, atol=0)
        assert rel_err(shard.grad(x), central_differences(shard.loss, x)) < 1e-6


def test_logistic_empty_shard_is_regulariser_only() -> None:
    d = 4
    shard = LogisticShards([(sp.csr_matrix((0, d)), np.zeros(0))], LAM)
    x = np.array([0.5, -1.0, 2.0, 0.0])
    expected_value = LAM * np.sum(x**2 / (1 + x**2))
    expected_grad = 2.0 * LAM * x / (1.0 + x**2) ** 2
    assert shard.loss(x) == pytest.approx(expected_value, rel=1e-15)
    np.testing.assert_allclose(shard.grad(x), expected_grad, rtol=1e-15)
    value, g = shard.loss_and_grad(x)
    assert value == pytest.approx(expected_value, rel=1e-15)
    np.testing.assert_allclose(g, expected_grad, rtol=1e-15)


def test_logistic_loss_and_grad_agree_with_loss_and_grad() -> None:
    rng = np.random.default_rng(12)
    A = random_csr(rng, 40, 10)
    shard = LogisticShards([(A, random_labels(rng, 40))], LAM)
    for _ in range(5):
        x = 2.0 * rng.standard_normal(10)
        value, g = shard.loss_and_grad(x)
        assert value == pytest.approx(shard.loss(x), rel=1e-15)
        np.testing.assert_allclose(g, shard.grad(x), rtol=1e-14, atol=1e-17)


def test_logistic_grad_does_not_alias_between_calls() -> None:
    rng = np.random.default_rng(13)
    A = random_csr(rng, 10, 5)
    shard = LogisticShards([(A, random_labels(rng, 10))], LAM)
    x = rng.standard_normal(5)
    g1 = shard.grad(x)
    g1_copy = g1.copy()
    g1 += 100.0
    np.testing.assert_array_equal(shard.grad(x), g1_copy)


def test_logistic_row_losses_bit_for_bit_with_the_scalar_formula() -> None:
    """The per-row losses take min(m, 0) against an array of zeros (numpy's vector loop); every value, the
    special ones included, must be the bits of log1p(exp(-|m|)) - min(m, 0) with the scalar 0."""
    rng = np.random.default_rng(31)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-310, -1e-310, 745.0, -745.0, 1e300, -1e300])
    margins = np.concatenate([special, rng.standard_normal(1000) * 10, rng.standard_normal(37) * 1e3])
    shard = LogisticShards([(random_csr(rng, len(margins), 4), random_labels(rng, len(margins)))], LAM)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.log1p(np.exp(-np.abs(margins))) - np.minimum(margins, 0.0)
        got = shard._row_losses(margins)
    assert got.tobytes() == expected.tobytes()


def test_group_gradients_into_a_buffer_are_the_gradients() -> None:
    """``losses_and_grads(x, out=buf)`` writes the gradients into ``buf`` (the same bits as a fresh array), and
    the next evaluation at another x does not change the arrays an earlier call returned."""
    rng = np.random.default_rng(32)
    blocks = [(random_csr(rng, n_rows, 6), random_labels(rng, n_rows)) for n_rows in (4, 9, 1)]
    for cls in (LogisticShards, LeastSquaresShards):
        group = cls(blocks, LAM)
        x, other = rng.standard_normal(6), rng.standard_normal(6)
        losses, grads = group.losses_and_grads(x)
        kept = (losses.copy(), grads.copy())
        buf = np.full((3, 6), np.nan)
        losses_buf, into = group.losses_and_grads(x, out=buf)
        assert into is buf and buf.tobytes() == grads.tobytes() and losses_buf.tobytes() == losses.tobytes()
        group.losses_and_grads(other)
        assert losses.tobytes() == kept[0].tobytes() and grads.tobytes() == kept[1].tobytes()


@pytest.mark.parametrize("lam", [0.0, LAM])
def test_logistic_huge_margins_hand_made(lam: float) -> None:
    # Rows chosen so the label-scaled margins are +1000, -1000, -1000, -2000.
    A = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]]))
    y = np.array([1.0, -1.0, 1.0, -1.0])
    x = np.array([1000.0, 1000.0, -1000.0])
    shard = LogisticShards([(A, y)], lam)
    reg_value = lam * 3 * (1e6 / (1e6 + 1.0))
    reg_grad = 2.0 * lam * x / (1.0 + x**2) ** 2
    # log(1+e^-m) -> 0 for m -> +inf and -> -m for m -> -inf; exp(-1000) is far below double resolution.
    expected_value = (0.0 + 1000.0 + 1000.0 + 2000.0) / 4 + reg_value
    # grad = -(1/N) sum_j sigmoid(-m_j) y_j a_j with sigmoid(-m_j) = 0, 1, 1, 1.
    expected_grad = -0.25 * (-np.array([0, 1.0, 0]) + np.array([0, 0, 1.0]) - np.array([1.0, 1.0, 0])) + reg_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, g = shard.loss_and_grad(x)
        assert shard.loss(x) == pytest.approx(expected_value, rel=1e-15)
        np.testing.assert_allclose(shard.grad(x), expected_grad, rtol=1e-15)
    assert value == pytest.approx(expected_value, rel=1e-15)
    np.testing.assert_allclose(g, expected_grad, rtol=1e-15)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_logistic_huge_margins_random(sign: float) -> None:
    # Every label-scaled margin is sign * (1000..3000): the loss tends to 0 (sign +) or to mean(-m) (sign -).
    rng = np.random.default_rng(14)
    N, d = 20, 6
    A = random_csr(rng, N, d)
    x = rng.standard_normal(d)
    y = sign * np.sign(A @ x)
    y[y == 0] = 1.0
    margins = y * (A @ x)
    x = x * (1000.0 / np.min(np.abs(margins)))
    margins = y * (A @ x)
    assert np.all(sign * margins >= 1000.0 - 1e-9)
    shard = LogisticShards([(A, y)], LAM)
    reg = LAM * np.sum(x**2 / (1 + x**2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, g = shard.loss_and_grad(x)
    assert np.isfinite(value) and np.all(np.isfinite(g))
    data_limit = np.mean(np.maximum(-margins, 0.0))
    assert value == pytest.approx(data_limit + reg, rel=1e-13)
    weights = np.where(margins < 0, 1.0, 0.0)  # sigmoid(-m) saturated
    expected_grad = -(A.T @ (weights * y)) / N + 2.0 * LAM * x / (1 + x**2) ** 2
    np.testing.assert_allclose(g, expected_grad, rtol=1e-12, atol=1e-15)


def test_logistic_small_tail_keeps_precision() -> None:
    # margin 40: log(1 + e^-40) = 4.25e-18, which a naive log(1 + exp(.)) rounds to 0.
    A = sp.csr_matrix(np.array([[1.0], [2.0]]))
    y = np.array([1.0, 1.0])
    shard = LogisticShards([(A, y)], 0.0)
    x = np.array([40.0])
    expected = (np.log1p(np.exp(-40.0)) + np.log1p(np.exp(-80.0))) / 2
    assert shard.loss(x) == pytest.approx(expected, rel=1e-14)
    assert shard.grad(x)[0] == pytest.approx(-(1 / (1 + np.exp(40.0)) + 2 / (1 + np.exp(80.0))) / 2, rel=1e-14)


def test_logistic_minibatch_all_rows_equals_full_gradient() -> None:
    rng = np.random.default_rng(15)
    A = random_csr(rng, 33, 9)
    shard = LogisticShards([(A, random_labels(rng, 33))], LAM)
    for _ in range(3):
        x = rng.standard_normal(9)
        full = shard.grad(x)
        np.testing.assert_allclose(shard.minibatch_grad(x, np.arange(33)), full, rtol=1e-12, atol=1e-14)
        # the order of the rows does not matter
        np.testing.assert_allclose(shard.minibatch_grad(x, rng.permutation(33)), full, rtol=1e-12, atol=1e-14)


def test_logistic_minibatch_subset_matches_dense_formula() -> None:
    rng = np.random.default_rng(16)
    A = random_csr(rng, 40, 7)
    y = random_labels(rng, 40)
    shard = LogisticShards([(A, y)], LAM)
    dense = A.toarray()
    for tau in (1, 5, 17):
        rows = rng.choice(40, size=tau, replace=False)
        x = rng.standard_normal(7)
        # data term on the chosen rows only (mean over tau) plus the full regulariser
        expected = dense_logistic_grad(dense[rows], y[rows], x, LAM)
        np.testing.assert_allclose(shard.minibatch_grad(x, rows), expected, rtol=1e-12, atol=1e-15)


# --- logistic regression: smoothness constants -----------------------------------------------------


def dense_logistic_constants(shards, lam):
    grams = [A.toarray().T @ A.toarray() / (4.0 * A.shape[0]) for A, _ in shards]
    L_i = np.array([lam_max(G) + 2 * lam for G in grams])
    L = lam_max(sum(grams) / len(grams)) + 2 * lam
    return L_i, L, float(np.sqrt(np.mean(L_i**2)))


SIZES = [7, 13, 20, 31, 3]


def test_logistic_constants_match_dense_eigenvalues() -> None:
    rng = np.random.default_rng(20)
    shards = random_shards(rng, SIZES, 12)
    c = smoothness_constants("logreg", shards, LAM)
    L_i, L, L_tilde = dense_logistic_constants(shards, LAM)
    np.testing.assert_allclose(c.L_i, L_i, rtol=1e-12)
    assert c.L == pytest.approx(L, rel=1e-12)
    assert c.L_tilde == pytest.approx(L_tilde, rel=1e-12)
    assert c.mu is None and c.f_star is None
    # L is the smoothness of the mean: never above the mean of the L_i (triangle inequality); L~ is an RMS.
    assert L <= np.mean(L_i) + 1e-12
    assert L_tilde >= np.mean(L_i) - 1e-12


def test_logistic_constants_lanczos_path_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    # d = 60 exceeds ARPACK's default Krylov space (20) and the shards have full rank, so Lanczos really iterates.
    rng = np.random.default_rng(21)
    shards = random_shards(rng, [70, 130, 90, 110, 45], 60)
    dense = smoothness_constants("logreg", shards, LAM)
    monkeypatch.setattr(smoothness, "DENSE_EIG_MAX_D", 4)
    lanczos = smoothness_constants("logreg", shards, LAM)
    np.testing.assert_allclose(lanczos.L_i, dense.L_i, rtol=1e-9)
    assert lanczos.L == pytest.approx(dense.L, rel=1e-9)
    assert lanczos.L_tilde == pytest.approx(dense.L_tilde, rel=1e-9)
    L_i, L, _ = dense_logistic_constants(shards, LAM)
    np.testing.assert_allclose(lanczos.L_i, L_i, rtol=1e-9)
    assert lanczos.L == pytest.approx(L, rel=1e-9)


def test_logistic_gradients_are_L_i_lipschitz() -> None:
    rng = np.random.default_rng(22)
    d = 10
    shards = random_shards(rng, SIZES, d)
    c = smoothness_constants("logreg", shards, LAM)
    workers = [LogisticShards([(A, y)], LAM) for A, y in shards]

    def full_grad(x: np.ndarray) -> np.ndarray:
        return np.mean([w.grad(x) for w in workers], axis=0)

    for scale in (0.01, 0.3, 1.0, 3.0, 30.0, 1000.0):
        for _ in range(25):
            x = scale * rng.standard_normal(d)
            y = x + scale * rng.standard_normal(d) * rng.choice([1e-3, 1.0])
            dist = np.linalg.norm(x - y)
            for w, L_i in zip(workers, c.L_i):
                assert np.linalg.norm(w.grad(x) - w.grad(y)) <= L_i * dist * (1 + 1e-10)
            assert np.linalg.norm(full_grad(x) - full_grad(y)) <= c.L * dist * (1 + 1e-10)


def test_logistic_L_i_is_attained_at_the_origin() -> None:
    # At x = 0 the Hessian of f_i is exactly A^T A/(4 N) + 2 lam I, so the bound is tight along its top eigenvector.
    rng = np.random.default_rng(23)
    d = 9
    shards = random_shards(rng, SIZES, d)
    c = smoothness_constants("logreg", shards, LAM)
    for (A, y), L_i in zip(shards, c.L_i):
        dense = A.toarray()
        top = np.linalg.eigh(dense.T @ dense)[1][:, -1]
        w = LogisticShards([(A, y)], LAM)
        eps = 1e-5
        ratio = np.linalg.norm(w.grad(eps * top) - w.grad(-eps * top)) / (2 * eps)
        assert ratio == pytest.approx(L_i, rel=1e-8)


# --- least squares ---------------------------------------------------------------------------------


def test_least_squares_loss_and_grad() -> None:
    rng = np.random.default_rng(30)
    A = random_csr(rng, 20, 8)
    y = random_labels(rng, 20)
    shard = LeastSquaresShards([(A, y)], LAM)
    dense = A.toarray()
    for scale in (0.1, 1.0, 10.0):
        x = scale * rng.standard_normal(8)
        assert shard.loss(x) == pytest.approx(dense_least_squares_loss(dense, y, x, LAM), rel=1e-13)
        expected_grad = dense.T @ (dense @ x - y) / 20 + LAM * x
        np.testing.assert_allclose(shard.grad(x), expected_grad, rtol=1e-12, atol=1e-14)
        assert rel_err(shard.grad(x), central_differences(shard.loss, x, h=1e-4 * scale)) < 1e-6
        value, g = shard.loss_and_grad(x)
        assert value == pytest.approx(shard.loss(x), rel=1e-15)
        np.testing.assert_allclose(g, shard.grad(x), rtol=1e-15)
    rows = np.array([3, 0, 17, 9])
    x = rng.standard_normal(8)
    expected = dense[rows].T @ (dense[rows] @ x - y[rows]) / 4 + LAM * x
    np.testing.assert_allclose(shard.minibatch_grad(x, rows), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(shard.minibatch_grad(x, np.arange(20)), shard.grad(x), rtol=1e-12, atol=1e-14)


def dense_least_squares_reference(shards, lam):
    grams = [A.toarray().T @ A.toarray() / A.shape[0] for A, _ in shards]
    n, d = len(shards), shards[0][0].shape[1]
    H = sum(grams) / n
    rhs = sum(A.toarray().T @ y / A.shape[0] for A, y in shards) / n
    x_star = np.linalg.solve(H + lam * np.eye(d), rhs)
    f_star = np.mean([dense_least_squares_loss(A.toarray(), y, x_star, lam) for A, y in shards])
    L_i = np.array([lam_max(G) + lam for G in grams])
    return L_i, lam_max(H) + lam, lam_min(H) + lam, x_star, float(f_star)


@pytest.mark.parametrize("lanczos", [False, True], ids=["dense", "lanczos"])
@pytest.mark.parametrize("d", [6, 14, 60])
def test_least_squares_constants_and_optimum(monkeypatch: pytest.MonkeyPatch, lanczos: bool, d: int) -> None:
    # Shards of 3..31 rows: in d = 14 and d = 60 some shards are rank deficient but the 74 rows together are not.
    rng = np.random.default_rng(31 + d)
    shards = random_shards(rng, SIZES, d)
    if lanczos:
        monkeypatch.setattr(smoothness, "DENSE_EIG_MAX_D", 3)
    L_i, L, mu, x_star, f_star = dense_least_squares_reference(shards, LAM)
    c = smoothness_constants("least-squares", shards, LAM)
    np.testing.assert_allclose(c.L_i, L_i, rtol=1e-9)
    assert c.L == pytest.approx(L, rel=1e-9)
    assert c.mu == pytest.approx(mu, rel=1e-9)
    assert c.L_tilde == pytest.approx(np.sqrt(np.mean(L_i**2)), rel=1e-9)
    assert c.f_star == pytest.approx(f_star, rel=1e-9)
    assert c.mu <= c.L
    got_x, got_f = least_squares_optimum(shards, LAM)
    np.testing.assert_allclose(got_x, x_star, rtol=1e-8, atol=1e-10)
    assert got_f == pytest.approx(f_star, rel=1e-10)
    workers = [LeastSquaresShards([(A, y)], LAM) for A, y in shards]
    grad_at_opt = np.mean([w.grad(got_x) for w in workers], axis=0)
    assert np.linalg.norm(grad_at_opt) < 1e-9
    # f* is the minimum: any perturbation raises the mean loss by at least mu/2 ||dx||^2.
    for _ in range(10):
        dx = rng.standard_normal(d)
        f_dx = np.mean([w.loss(got_x + dx) for w in workers])
        assert f_dx - got_f >= 0.5 * mu * (dx @ dx) * (1 - 1e-9)


@pytest.mark.parametrize("lanczos", [False, True], ids=["dense", "lanczos"])
def test_least_squares_mu_is_lam_when_rank_deficient(monkeypatch: pytest.MonkeyPatch, lanczos: bool) -> None:
    # 3 + 4 rows in 12 dimensions: the mean Gram matrix is singular, so mu = lam exactly.
    rng = np.random.default_rng(32)
    shards = random_shards(rng, [3, 4], 12)
    if lanczos:
        monkeypatch.setattr(smoothness, "DENSE_EIG_MAX_D", 3)
    c = smoothness_constants("least-squares", shards, LAM)
    assert c.mu == pytest.approx(LAM, rel=1e-9)
    L_i, L, mu, x_star, f_star = dense_least_squares_reference(shards, LAM)
    assert mu == pytest.approx(LAM, rel=1e-12)
    np.testing.assert_allclose(c.L_i, L_i, rtol=1e-9)
    assert c.L == pytest.approx(L, rel=1e-9)
    assert c.f_star == pytest.approx(f_star, rel=1e-9)
    np.testing.assert_allclose(least_squares_optimum(shards, LAM)[0], x_star, rtol=1e-8, atol=1e-10)


def test_least_squares_gradients_are_lipschitz() -> None:
    rng = np.random.default_rng(33)
    d = 8
    shards = random_shards(rng, SIZES, d)
    c = smoothness_constants("least-squares", shards, LAM)
    workers = [LeastSquaresShards([(A, y)], LAM) for A, y in shards]
    for scale in (0.01, 1.0, 100.0):
        for _ in range(20):
            x = scale * rng.standard_normal(d)
            y = scale * rng.standard_normal(d)
            dist = np.linalg.norm(x - y)
            for w, L_i in zip(workers, c.L_i):
                assert np.linalg.norm(w.grad(x) - w.grad(y)) <= L_i * dist * (1 + 1e-10)
            gx = np.mean([w.grad(x) for w in workers], axis=0)
            gy = np.mean([w.grad(y) for w in workers], axis=0)
            assert np.linalg.norm(gx - gy) <= c.L * dist * (1 + 1e-10)
            # strong convexity: <grad f(x) - grad f(y), x - y> >= mu ||x - y||^2
            assert (gx - gy) @ (x - y) >= c.mu * dist**2 * (1 - 1e-10)
