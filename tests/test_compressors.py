"""Compressors (SPEC 3): exact messages, the contraction inequality, and rand-k's randomness."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ef21_mpi.core.compressors import Identity, RandK, TopK, densify, make_compressor

# Upper 1e-6 quantiles of chi-square with 10 and 9 degrees of freedom (scipy.stats.chi2.ppf(1 - 1e-6, dof)),
# written out so the test does not pay for importing scipy.stats.
CHI2_10_DOF_1E6 = 46.863
CHI2_9_DOF_1E6 = 44.811


def reference_top_k(v: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest |v_i|, ties to the lower index: a stable sort on -|v|, done the slow way."""
    order = sorted(range(len(v)), key=lambda i: (-abs(float(v[i])), i))
    return np.array(sorted(order[:k]), dtype=np.int64)


def check_message(indices: np.ndarray, values: np.ndarray, v: np.ndarray, k: int) -> None:
    assert indices.dtype == np.int32
    assert values.dtype == np.float64
    assert indices.shape == (k,) and values.shape == (k,)
    assert np.all(np.diff(indices) > 0)  # strictly increasing, hence unique
    assert indices.min() >= 0 and indices.max() < len(v)
    np.testing.assert_array_equal(values, v[indices])


# --- top-k: exact outputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v", "k", "indices", "values"),
    [
        # |3| at 2 ties with |-3| at 3: the lower index wins
        ([1.0, -5.0, 3.0, -3.0, 0.0], 2, [1, 2], [-5.0, 3.0]),
        ([1.0, -5.0, 3.0, -3.0, 0.0], 3, [1, 2, 3], [-5.0, 3.0, -3.0]),
        ([1.0, -5.0, 3.0, -3.0, 0.0], 1, [1], [-5.0]),
        # all equal: the first k
        ([2.0, 2.0, 2.0, 2.0, 2.0], 3, [0, 1, 2], [2.0, 2.0, 2.0]),
        ([2.0, -2.0, 2.0, -2.0, 2.0], 2, [0, 1], [2.0, -2.0]),
        ([-7.0, -7.0, -7.0], 1, [0], [-7.0]),
        # zeros
        ([0.0, 0.0, 0.0, 0.0], 2, [0, 1], [0.0, 0.0]),
        ([0.0, 0.0, 0.0, 0.0], 1, [0], [0.0]),
        # k = 1 with ties, the winner not first
        ([0.0, -4.0, 4.0, 1.0], 1, [1], [-4.0]),
        ([0.5, 4.0, -4.0, 4.0], 1, [1], [4.0]),
        # negative values only
        ([-1.0, -2.0, -3.0, -4.0, -5.0], 2, [3, 4], [-4.0, -5.0]),
        # ties at the threshold after strictly larger entries
        ([1.0, 3.0, -3.0, 3.0, 2.0, -9.0], 2, [1, 5], [3.0, -9.0]),
        ([1.0, 3.0, -3.0, 3.0, 2.0, -9.0], 3, [1, 2, 5], [3.0, -3.0, -9.0]),
        ([1.0, 3.0, -3.0, 3.0, 2.0, -9.0], 4, [1, 2, 3, 5], [3.0, -3.0, 3.0, -9.0]),
        ([1.0, 3.0, -3.0, 3.0, 2.0, -9.0], 5, [1, 2, 3, 4, 5], [3.0, -3.0, 3.0, 2.0, -9.0]),
        # k = d keeps everything in order
        ([3.0, -1.0, 0.0, 2.0], 4, [0, 1, 2, 3], [3.0, -1.0, 0.0, 2.0]),
        # one survivor among zeros, and a tiny entry beating exact zeros
        ([0.0, 0.0, 0.0, 1e-300, 0.0], 1, [3], [1e-300]),
        ([0.0, 0.0, 0.0, 1e-300, 0.0], 2, [0, 3], [0.0, 1e-300]),
    ],
)
def test_top_k_exact_messages(v: list[float], k: int, indices: list[int], values: list[float]) -> None:
    v_arr = np.array(v)
    got_indices, got_values = TopK(k, len(v)).compress(v_arr, None)
    check_message(got_indices, got_values, v_arr, k)
    np.testing.assert_array_equal(got_indices, indices)
    np.testing.assert_array_equal(got_values, values)
    dense = densify(got_indices, got_values, len(v))
    expected = np.zeros(len(v))
    expected[indices] = values
    np.testing.assert_array_equal(dense, expected)


def test_top_k_matches_reference_on_random_vectors_with_ties() -> None:
    rng = np.random.default_rng(0)
    for trial in range(400):
        d = int(rng.integers(1, 40))
        k = int(rng.integers(1, d + 1))
        if trial % 2:
            v = rng.integers(-3, 4, size=d).astype(np.float64)  # many ties, zeros, both signs
        else:
            v = rng.standard_normal(d) * rng.choice([1e-200, 1.0, 1e200])
        indices, values = TopK(k, d).compress(v, None)
        check_message(indices, values, v, k)
        np.testing.assert_array_equal(indices, reference_top_k(v, k))


def test_top_k_is_deterministic_and_leaves_input_alone() -> None:
    rng = np.random.default_rng(1)
    v = rng.integers(-2, 3, size=50).astype(np.float64)
    v_before = v.copy()
    compressor = TopK(7, 50)
    first = compressor.compress(v, np.random.default_rng(1))
    second = compressor.compress(v, np.random.default_rng(2))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    first[1][:] = 99.0
    np.testing.assert_array_equal(v, v_before)


# --- contraction: ||C(v) - v||^2 <= (1 - alpha) ||v||^2 -----------------------------------------------


def adversarial_vectors(rng: np.random.Generator, d: int) -> list[np.ndarray]:
    one_hot = np.zeros(d)
    one_hot[d // 2] = -3.0
    sparse = np.zeros(d)
    sparse[rng.choice(d, size=max(1, d // 5), replace=False)] = rng.standard_normal(max(1, d // 5))
    alternating = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
    return [
        np.zeros(d),
        np.ones(d),
        -2.5 * np.ones(d),
        alternating,
        one_hot,
        sparse,
        rng.integers(-1, 2, size=d).astype(np.float64),
        np.exp(rng.uniform(-30, 30, size=d)),  # widely spread magnitudes
        rng.standard_normal(d) * 1e150,
    ]


def distortion(compressor, v: np.ndarray, rng: np.random.Generator | None) -> float:
    indices, values = compressor.compress(v, rng)
    r = densify(indices, values, len(v)) - v
    return float(r @ r)


@pytest.mark.parametrize("d", [1, 2, 7, 30])
def test_top_k_and_identity_contract_deterministically(d: int) -> None:
    rng = np.random.default_rng(2 + d)
    vectors = adversarial_vectors(rng, d) + [rng.standard_normal(d) for _ in range(100)]
    for k in range(1, d + 1):
        compressor = TopK(k, d)
        assert compressor.alpha == k / d
        for v in vectors:
            assert distortion(compressor, v, None) <= (1 - k / d) * (v @ v) * (1 + 1e-12)
    identity = Identity(d)
    for v in vectors:
        assert distortion(identity, v, None) == 0.0


def test_top_k_contraction_is_tight_on_constant_vectors() -> None:
    # For v with equal |v_i| the distortion is exactly (1 - k/d) ||v||^2.
    d = 12
    v = np.where(np.arange(d) % 3 == 0, -2.0, 2.0)
    for k in range(1, d + 1):
        assert distortion(TopK(k, d), v, None) == pytest.approx((1 - k / d) * (v @ v), rel=1e-15)


@pytest.mark.parametrize(("k", "d"), [(1, 5), (2, 7), (5, 20), (7, 7)])
def test_rand_k_contracts_in_expectation(k: int, d: int) -> None:
    rng = np.random.default_rng(100 * k + d)
    compressor = RandK(k, d)
    assert compressor.alpha == k / d
    vectors = [v for v in adversarial_vectors(rng, d) if v @ v > 0] + [rng.standard_normal(d) for _ in range(2)]
    draws = 500
    for v in vectors:
        norm_sq = float(v @ v)
        ratios = np.array([distortion(compressor, v, rng) for _ in range(draws)]) / norm_sq
        # deterministic: dropping coordinates never increases the norm
        assert np.all(ratios <= 1 + 1e-12)
        # E||C(v) - v||^2 = (1 - k/d) ||v||^2 exactly for uniform k-subsets; allow 5 standard errors
        standard_error = ratios.std() / np.sqrt(draws)
        assert abs(ratios.mean() - (1 - k / d)) <= 5 * standard_error + 1e-12


# --- rand-k: randomness -----------------------------------------------------------------------------------


def test_rand_k_reproducible_from_seed() -> None:
    compressor = RandK(4, 30)
    v = np.arange(30, dtype=np.float64) - 10.0

    def sequence(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [compressor.compress(v, rng)[0] for _ in range(50)]

    a, b, c = sequence(7), sequence(7), sequence(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))
    # successive draws from one generator are not all the same
    assert len({tuple(x) for x in a}) > 40
    for indices in a:
        assert indices.dtype == np.int32
        assert np.all(np.diff(indices) > 0)
        assert indices.min() >= 0 and indices.max() < 30


def test_rand_k_message_shape_and_values() -> None:
    rng = np.random.default_rng(3)
    for d, k in [(1, 1), (5, 5), (9, 1), (50, 13)]:
        v = rng.standard_normal(d)
        indices, values = RandK(k, d).compress(v, rng)
        check_message(indices, values, v, k)


def test_rand_k_coordinates_uniform() -> None:
    # Each coordinate is kept with probability k/d; counts are Binomial(draws, k/d).
    d, k, draws = 10, 3, 8000
    rng = np.random.default_rng(4)
    compressor = RandK(k, d)
    v = np.ones(d)
    counts = np.zeros(d)
    for _ in range(draws):
        counts[compressor.compress(v, rng)[0]] += 1
    assert counts.sum() == k * draws
    p = k / d
    z = (counts - draws * p) / np.sqrt(draws * p * (1 - p))
    assert np.max(np.abs(z)) < 4.5
    assert np.sum(z**2) < CHI2_10_DOF_1E6


def test_rand_k_subsets_uniform() -> None:
    # Without replacement and unweighted: every one of the C(d, k) subsets equally likely.
    d, k, draws = 5, 2, 6000
    rng = np.random.default_rng(5)
    compressor = RandK(k, d)
    subsets = {s: i for i, s in enumerate(itertools.combinations(range(d), k))}
    counts = np.zeros(len(subsets))
    v = np.zeros(d)
    for _ in range(draws):
        counts[subsets[tuple(int(i) for i in compressor.compress(v, rng)[0])]] += 1
    expected = draws / len(subsets)
    assert np.sum((counts - expected) ** 2 / expected) < CHI2_9_DOF_1E6


# --- identity, densify, alpha, make_compressor ------------------------------------------------------------


def test_identity_sends_a_dense_copy() -> None:
    v = np.array([1.5, -2.0, 0.0, 3.0])
    indices, values = Identity(4).compress(v, None)
    assert indices is None
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, v)
    values[0] = 100.0
    assert v[0] == 1.5
    np.testing.assert_array_equal(densify(None, np.array([1.0, 2.0]), 2), [1.0, 2.0])


def test_densify_places_values() -> None:
    out = densify(np.array([0, 3, 4], dtype=np.int32), np.array([1.0, -2.0, 5.0]), 6)
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.0, -2.0, 5.0, 0.0])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(densify(np.array([], dtype=np.int32), np.array([]), 3), np.zeros(3))


def test_alpha_and_n_values() -> None:
    assert TopK(1, 123).alpha == pytest.approx(1 / 123, rel=1e-15)
    assert RandK(5, 300).alpha == pytest.approx(5 / 300, rel=1e-15)
    assert TopK(68, 68).alpha == 1.0
    assert Identity(112).alpha == 1.0
    assert TopK(3, 10).n_values == 3
    assert RandK(4, 10).n_values == 4
    assert Identity(10).n_values == 10


def test_make_compressor_builds_each_kind() -> None:
    assert make_compressor("top-k", 3, 10) == TopK(3, 10)
    assert make_compressor("rand-k", 10, 10) == RandK(10, 10)
    assert make_compressor("top-k", 1, 1) == TopK(1, 1)
    identity = make_compressor("identity", None, 7)
    assert isinstance(identity, Identity) and identity.d == 7 and identity.alpha == 1.0


@pytest.mark.parametrize(
    ("name", "k", "d"),
    [
        ("top-k", 0, 10),
        ("top-k", -1, 10),
        ("top-k", 11, 10),
        ("rand-k", 0, 10),
        ("rand-k", 124, 123),
        ("top-k", None, 10),
        ("rand-k", None, 10),
        ("topk", 1, 10),
        ("sign", 1, 10),
        ("", 1, 10),
    ],
)
def test_make_compressor_rejects_bad_input(name: str, k: int | None, d: int) -> None:
    with pytest.raises(ValueError) as err:  # the core's plain error; the CLI's door words it for the user
        make_compressor(name, k, d)
    assert str(err.value) and "--" not in str(err.value)


def test_topk_always_sends_k_entries_even_with_nan():
    """A diverging run can hand Top-k a NaN; the message must keep its fixed size (NaN ranks first, like argmax)."""
    idx, vals = TopK(2, 4).compress(np.array([np.nan, 1.0, 2.0, 3.0]))
    assert list(idx) == [0, 3] and np.isnan(vals[0]) and vals[1] == 3.0
    idx, _ = TopK(3, 5).compress(np.array([np.nan, 1.0, np.nan, 3.0, 0.0]))
    assert list(idx) == [0, 2, 3]


@pytest.mark.parametrize("d,k", [(10, 1), (10, 3), (50, 7), (8, 8), (6, 5), (300, 20)])
def test_group_compression_is_row_by_row_compression(d, k):
    """``compress_group`` over an m x d array == ``compress`` of each row with that row's own generator, bit for
    bit: many ties (small integers), NaN rows and a row half NaN included."""
    rng = np.random.default_rng(d * 100 + k)
    for V in (rng.integers(-3, 4, (40, d)).astype(float), rng.standard_normal((40, d))):
        V[3, 2], V[5, :], V[7, : d // 2] = np.nan, np.nan, np.nan
        seeds = np.random.SeedSequence(k).spawn(40)
        for compressor in (TopK(k, d), RandK(k, d)):
            group_rngs = [np.random.default_rng(s) for s in seeds]
            row_rngs = [np.random.default_rng(s) for s in seeds]
            idx, vals = compressor.compress_group(V, group_rngs)
            assert idx.shape == vals.shape == (40, k) and idx.dtype == np.int32
            for j in range(40):
                i, v = compressor.compress(V[j], row_rngs[j])
                np.testing.assert_array_equal(idx[j], i)
                np.testing.assert_array_equal(vals[j], v)


@pytest.mark.parametrize("count", [1, 2, 7, 123, 2**20 + 3, 2**33 + 1])
def test_single_draw_is_numpys_choice_and_leaves_the_same_generator_state(count):
    """Rand-1 and one-row minibatches draw with ``integers(0, count)``: the number ``choice(count, 1,
    replace=False)`` gives and the same generator state after it, draw after draw, between other draws too."""
    from ef21_mpi.core.compressors.base import sample_without_replacement

    for seed in range(300):
        ours, numpys = np.random.default_rng(seed), np.random.default_rng(seed)
        for _ in range(4):
            assert sample_without_replacement(ours, count, 1).tolist() == numpys.choice(count, 1, replace=False).tolist()
            ours.random(3), numpys.random(3)  # a packed compressor's uniforms in between
        assert ours.bit_generator.state == numpys.bit_generator.state
    several = sample_without_replacement(np.random.default_rng(5), 123, 4)
    assert several.tolist() == sorted(np.random.default_rng(5).choice(123, 4, replace=False).tolist())
