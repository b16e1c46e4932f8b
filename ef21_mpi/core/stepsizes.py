"""Theoretical stepsizes of the paper (SPEC 5): Theorem 2 (non-convex) and Theorem 3 (PL)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Theory:
    """The constants of Theorems 2 and 3 for one compressor ``alpha``."""

    alpha: float
    theta: float
    beta: float
    gamma_theory: float


def theta_beta(alpha: float) -> tuple[float, float]:
    """``theta = 1 - sqrt(1 - alpha)``, ``beta = (1 - alpha) / (1 - sqrt(1 - alpha))`` (Lemma 3 of the paper)."""
    theta = alpha / (1.0 + math.sqrt(1.0 - alpha))  # = 1 - sqrt(1 - alpha), without cancellation for small alpha
    return theta, (1.0 - alpha) / theta


def theory(alpha: float, L: float, L_tilde: float, mu: float | None = None) -> Theory:
    """Largest stepsize allowed by Theorem 2, or by Theorem 3 when ``mu`` (PL constant) is given."""
    theta, beta = theta_beta(alpha)
    if mu is None:
        gamma = 1.0 / (L + L_tilde * math.sqrt(beta / theta))  # Theorem 2
    else:
        pl_term = theta / (2.0 * mu) if mu > 0 else math.inf  # mu <= 0: not PL, no second constraint
        gamma = min(1.0 / (L + L_tilde * math.sqrt(2.0 * beta / theta)), pl_term)  # Theorem 3
    return Theory(alpha=alpha, theta=theta, beta=beta, gamma_theory=gamma)
