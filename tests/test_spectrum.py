"""The bottom of a Gram spectrum (core/spectrum.py): the zero threshold, the smallest positive eigenvalue and the
count of zero eigenvalues, on rank-deficient matrices with zero rows and columns, duplicated, scaled and combined
columns, on both of its paths (dense, Lanczos with deflation) and on both sides (``W^T W``, ``W W^T``).

The references are singular values of the dense matrix (``np.linalg.svd``), with numpy's ``matrix_rank`` rule for the
rank: no Gram matrix and no eigensolver, so the package's threshold is not used to check itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from ef21_mpi.core import spectrum


def svd_reference(W: np.ndarray) -> tuple[float, int]:
    """(smallest positive eigenvalue of W^T W, number of zero eigenvalues of the d x d W^T W) from singular values."""
    s = np.linalg.svd(W, compute_uv=False)
    rank = int(np.sum(s > s[0] * max(W.shape) * np.finfo(np.float64).eps)) if s.size and s[0] > 0 else 0
    return (float(s[rank - 1] ** 2) if rank else 0.0), W.shape[1] - rank


def deficient_matrix(N: int = 70, seed: int = 0) -> np.ndarray:
    """30 independent sparse columns, then 5 duplicates, 4 zero columns, a combination and a scaled copy, and 3 zero
    rows: 41 columns of rank 30, with 37 nonzero columns (so the Lanczos path has room)."""
    rng = np.random.default_rng(seed)
    base = np.where(rng.random((N, 30)) < 0.4, rng.standard_normal((N, 30)), 0.0)
    W = np.hstack([base, base[:, :5], np.zeros((N, 4)), base[:, [6]] + 2.0 * base[:, [7]], 3.0 * base[:, [8]]])
    W[[4, 20, 50]] = 0.0
    return W[:, rng.permutation(W.shape[1])]


def test_zero_tolerance_is_eps_times_rows_plus_columns_times_the_frobenius_norm():
    W = deficient_matrix()
    nonzero_rows, nonzero_cols = 67, 37
    expected = np.finfo(np.float64).eps * (nonzero_rows + nonzero_cols) * np.sum(W**2)
    assert spectrum.zero_tolerance(sp.csr_matrix(W)) == pytest.approx(expected, rel=1e-14)
    # explicit zeros stored in the sparse matrix are no entries
    stored_zero = sp.csr_matrix(W)
    stored_zero.data[:3] = 0.0
    assert spectrum.nonzero_part(stored_zero).nnz == sp.csr_matrix(W).nnz - 3
    assert stored_zero.nnz == sp.csr_matrix(W).nnz  # the caller's matrix is left as it was


@pytest.mark.parametrize("path", ["dense", "lanczos"])
@pytest.mark.parametrize("seed", [0, 1])
def test_smallest_positive_eigenvalue_of_a_rank_deficient_matrix(path, seed):
    W = deficient_matrix(seed=seed)
    mu, zeros = svd_reference(W)
    assert zeros == 11 and mu > 1e-3  # 41 columns, rank 30: the reference itself
    found = spectrum.smallest_positive_eig(sp.csr_matrix(W), 500 if path == "dense" else 0)
    assert found.value == pytest.approx(mu, rel=1e-10)
    assert found.singular
    assert found.zeros == (zeros if path == "dense" else None)
    # the dense Gram matrix's own spectrum: 11 values within the threshold, the 12th is mu
    eigs = np.linalg.eigvalsh(W.T @ W)
    assert (np.abs(eigs[:11]) <= found.tolerance).all() and eigs[11] == pytest.approx(mu, rel=1e-10)
    assert spectrum.positive_of(eigs, found.tolerance) == (pytest.approx(mu, rel=1e-10), 11, found.tolerance, True)


@pytest.mark.parametrize("path", ["dense", "lanczos"])
def test_wide_matrix_works_on_the_smaller_side(path):
    # 40 rows, 90 columns: W^T W has at least 50 zero eigenvalues; W W^T (40 x 40) is the side to work on
    rng = np.random.default_rng(3)
    W = np.where(rng.random((40, 90)) < 0.3, rng.standard_normal((40, 90)), 0.0)
    mu, zeros = svd_reference(W)
    assert zeros == 50
    found = spectrum.smallest_positive_eig(sp.csr_matrix(W), 100 if path == "dense" else 0)
    assert found.value == pytest.approx(mu, rel=1e-10) and found.singular
    assert found.zeros == (50 if path == "dense" else None)


def test_full_rank_has_no_zero_and_a_tiny_eigenvalue_is_not_zero():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((60, 30))
    W[:, 0] *= 1e-4  # curvature about 1e-8 lambda_max: far below lambda_max, far above rounding
    mu, zeros = svd_reference(W)
    assert zeros == 0 and mu < 1e-7 * np.linalg.norm(W, 2) ** 2
    for dense_max_d in (500, 0):
        found = spectrum.smallest_positive_eig(sp.csr_matrix(W), dense_max_d)
        assert found.value == pytest.approx(mu, rel=1e-8) and not found.singular
        assert mu > 1e3 * found.tolerance


def test_all_zero_data_has_no_positive_eigenvalue():
    found = spectrum.smallest_positive_eig(sp.csr_matrix((5, 7)), 500)
    assert found == (0.0, 7, 0.0, True)


@pytest.mark.parametrize("rank", [3, 10])
def test_lanczos_deflates_a_large_null_space(rank, monkeypatch):
    # 50 x 40 of rank 3 or 10: the Krylov space started in the range is exhausted at once, ARPACK continues with
    # random vectors, and the first passes find only null vectors; they are shifted away until mu shows up.
    rng = np.random.default_rng(rank)
    W = rng.standard_normal((50, rank)) @ rng.standard_normal((rank, 40))
    mu, zeros = svd_reference(W)
    assert zeros == 40 - rank
    passes = []

    def counting_eigsh(op, **kw):
        passes.append(kw["k"])
        return sla.eigsh(op, **kw)

    monkeypatch.setattr(spectrum, "eigsh", counting_eigsh)
    monkeypatch.setattr(spectrum, "FIRST_BLOCK", 2)
    found = spectrum.smallest_positive_eig(sp.csr_matrix(W), 0)
    assert found.value == pytest.approx(mu, rel=1e-10) and found.singular
    assert len(passes) >= 3 and passes[0] == 2  # measured: 4 passes each


def test_lanczos_gives_up_with_a_value_error(monkeypatch):
    monkeypatch.setattr(spectrum, "MAX_PASSES", 1)
    monkeypatch.setattr(spectrum, "FIRST_BLOCK", 2)
    rng = np.random.default_rng(3)
    W = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 40))
    with pytest.raises(ValueError, match="did not separate the smallest positive eigenvalue"):
        spectrum.smallest_positive_eig(sp.csr_matrix(W), 0)
