"""Theoretical stepsizes (SPEC 5) against closed forms evaluated here in 40-digit decimal arithmetic."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest

from ef21_mpi.core.stepsizes import Theory, theory, theta_beta

getcontext().prec = 40


def exact_theta_beta(alpha: float) -> tuple[Decimal, Decimal]:
    a = Decimal(alpha)
    root = (1 - a).sqrt()
    theta = 1 - root
    return theta, (1 - a) / theta


def exact_gamma_nonconvex(alpha: float, L: float, L_tilde: float) -> float:
    if alpha == 1.0:
        return 1.0 / L
    theta, beta = exact_theta_beta(alpha)
    return float(1 / (Decimal(L) + Decimal(L_tilde) * (beta / theta).sqrt()))


def exact_gamma_pl(alpha: float, L: float, L_tilde: float, mu: float) -> float:
    theta, beta = exact_theta_beta(alpha)
    first = 1 / (Decimal(L) + Decimal(L_tilde) * (2 * beta / theta).sqrt())
    return float(min(first, theta / (2 * Decimal(mu))))


ALPHAS = [1e-4, 1 / 300, 1 / 123, 1 / 112, 1 / 68, 0.01, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_theta_beta_closed_forms(alpha: float) -> None:
    theta, beta = theta_beta(alpha)
    exact_theta, exact_beta = exact_theta_beta(alpha)
    assert theta == pytest.approx(float(exact_theta), rel=1e-11)
    assert beta == pytest.approx(float(exact_beta), rel=1e-11, abs=1e-300)
    # theta = 1 - sqrt(1 - alpha) is the root in (0, 1] of (1 - theta)^2 = 1 - alpha; beta theta = 1 - alpha.
    assert (1 - theta) ** 2 == pytest.approx(1 - alpha, rel=1e-12, abs=1e-15)
    assert beta * theta == pytest.approx(1 - alpha, rel=1e-12, abs=1e-15)
    assert 0 < theta <= 1 and beta >= 0


def test_theta_beta_at_the_ends() -> None:
    assert theta_beta(1.0) == (1.0, 0.0)
    theta, beta = theta_beta(0.75)  # sqrt(0.25) = 0.5 exactly
    assert theta == 0.5 and beta == 0.5
    # small alpha: theta = alpha/2 + alpha^2/8 + O(alpha^3), beta = 2/alpha - 5/2 + O(alpha)
    theta, beta = theta_beta(1e-6)
    assert theta == pytest.approx(5e-7 + 1.25e-13, rel=1e-8)
    assert beta == pytest.approx(2e6 - 2.5, rel=1e-8)


def test_no_compression_gives_one_over_L() -> None:
    # Theorem 2 with alpha = 1: theta = 1, beta = 0, gamma = 1/L (plain GD's stepsize).
    for L, L_tilde in [(1.0, 1.0), (1.771919799, 1.773067081), (0.3, 7.0), (12.5, 12.5)]:
        t = theory(1.0, L, L_tilde)
        assert t.gamma_theory == pytest.approx(1.0 / L, rel=1e-15)
        assert (t.theta, t.beta, t.alpha) == (1.0, 0.0, 1.0)


def test_nonconvex_formula_on_random_constants() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        alpha = float(rng.choice([rng.uniform(1e-3, 1.0), 1.0 / rng.integers(1, 1000)]))
        L = float(np.exp(rng.uniform(-3, 3)))
        L_tilde = L * float(np.exp(rng.uniform(0, 2)))  # L <= L~ always holds for real data
        t = theory(alpha, L, L_tilde)
        assert isinstance(t, Theory)
        assert t.alpha == alpha
        assert t.gamma_theory == pytest.approx(exact_gamma_nonconvex(alpha, L, L_tilde), rel=1e-10)
        assert 0 < t.gamma_theory <= 1.0 / L


def test_gamma_grows_with_alpha() -> None:
    alphas = np.linspace(0.01, 1.0, 50)
    gammas = [theory(float(a), 2.0, 3.0).gamma_theory for a in alphas]
    assert np.all(np.diff(gammas) > 0)


def test_pl_formula_each_branch() -> None:
    alpha, L, L_tilde = 0.1, 2.0, 2.5
    theta, beta = (float(v) for v in exact_theta_beta(alpha))
    first = 1.0 / (L + L_tilde * math.sqrt(2 * beta / theta))
    # small mu: the smoothness branch is the smaller one
    small_mu = 1e-3
    assert theta / (2 * small_mu) > first
    t = theory(alpha, L, L_tilde, mu=small_mu)
    assert t.gamma_theory == pytest.approx(first, rel=1e-12)
    # large mu: theta / (2 mu) is the smaller one
    large_mu = 1.9
    assert theta / (2 * large_mu) < first
    t = theory(alpha, L, L_tilde, mu=large_mu)
    assert t.gamma_theory == pytest.approx(theta / (2 * large_mu), rel=1e-12)
    # the PL stepsize never exceeds the non-convex one (sqrt(2 beta/theta) >= sqrt(beta/theta))
    assert t.gamma_theory <= theory(alpha, L, L_tilde).gamma_theory


def test_pl_formula_on_random_constants() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        alpha = float(rng.uniform(1e-3, 0.999))
        L = float(np.exp(rng.uniform(-3, 3)))
        L_tilde = L * float(np.exp(rng.uniform(0, 2)))
        mu = L * float(np.exp(rng.uniform(-8, 0)))
        t = theory(alpha, L, L_tilde, mu=mu)
        assert t.gamma_theory == pytest.approx(exact_gamma_pl(alpha, L, L_tilde, mu), rel=1e-10)
        theta, beta = theta_beta(alpha)
        assert (t.theta, t.beta) == (theta, beta)


def test_pl_without_compression() -> None:
    # alpha = 1: theta = 1, beta = 0, so gamma = min(1/L, 1/(2 mu)).
    assert theory(1.0, 4.0, 5.0, mu=0.1).gamma_theory == pytest.approx(0.25, rel=1e-15)
    assert theory(1.0, 4.0, 5.0, mu=3.0).gamma_theory == pytest.approx(1 / 6, rel=1e-15)


# SPEC 5 table: (name, d, L, L~, gamma for top-1).
REFERENCE = [
    ("phishing", 68, 0.3625502639, 0.3660851028, 0.0201611608),
    ("mushrooms", 112, 2.786412684, 3.493225975, 0.001282009738),
    ("a9a", 123, 1.771919799, 1.773067081, 0.002297345354),
    ("w8a", 300, 0.8611744443, 1.016118058, 0.00164201615),
]


@pytest.mark.parametrize(("name", "d", "L", "L_tilde", "gamma"), REFERENCE, ids=[r[0] for r in REFERENCE])
def test_reference_top_1_stepsizes(name: str, d: int, L: float, L_tilde: float, gamma: float) -> None:
    t = theory(1 / d, L, L_tilde)
    assert t.alpha == pytest.approx(1 / d, rel=1e-15)
    # the table's gammas are printed to 9-10 significant digits
    assert t.gamma_theory == pytest.approx(gamma, rel=1e-8)
    assert t.gamma_theory == pytest.approx(exact_gamma_nonconvex(1 / d, L, L_tilde), rel=1e-12)
