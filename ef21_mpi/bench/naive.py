"""The bench's naive baseline: EF21 as a typical research script writes it (dense shards, a loop over workers).

It exists to be measured against (`ef21_mpi.bench.bench`, part 2) and is checked against the package's iterates
in ``tests/test_bench.py``; nothing else uses it.
"""

from __future__ import annotations

import time

import numpy as np

N_WORKERS = 20  # the paper's n

def naive_shards(A, y: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Dense ``(A_i, y_i)`` numpy arrays of the package's sequential shards."""
    from ef21_mpi.core.data import shard_bounds

    return [(A[lo:hi].toarray(), y[lo:hi].copy()) for lo, hi in shard_bounds(A.shape[0], n)]


def naive_loss_grad(A_i: np.ndarray, y_i: np.ndarray, x: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    """Logistic loss with the non-convex regulariser and its gradient, in plain dense numpy."""
    margins = y_i * (A_i @ x)
    loss = np.mean(np.log1p(np.exp(-margins))) + lam * np.sum(x**2 / (1 + x**2))
    grad = -(A_i.T @ (y_i / (1 + np.exp(margins)))) / len(y_i) + 2 * lam * x / (1 + x**2) ** 2
    return loss, grad


def naive_top_k(v: np.ndarray, k: int) -> np.ndarray:
    """Dense Top-k by a full sort; the stable sort of ``-|v|`` breaks ties towards the lower index, as the package."""
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def naive_ef21(shards, lam: float, gamma: float, rounds: int, k: int = 1):
    """EF21 (init full, ``x^0 = 0``) as a research script: returns ``x``, per-round ``||grad f||^2`` and seconds."""
    n, d = len(shards), shards[0][0].shape[1]
    x = np.zeros(d)
    grads = [naive_loss_grad(A_i, y_i, x, lam)[1] for A_i, y_i in shards]
    g_i = [gr.copy() for gr in grads]
    g = np.mean(g_i, axis=0)
    grad_norm_sq = [float(np.sum(np.mean(grads, axis=0) ** 2))]
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        x = x - gamma * g
        losses, grads, c = [], [], []
        for i, (A_i, y_i) in enumerate(shards):
            loss, grad = naive_loss_grad(A_i, y_i, x, lam)
            c_i = naive_top_k(grad - g_i[i], k)
            g_i[i] = g_i[i] + c_i
            losses.append(loss)
            grads.append(grad)
            c.append(c_i)
        g = g + np.sum(c, axis=0) / n
        grad_norm_sq.append(float(np.sum(np.mean(grads, axis=0) ** 2)))
        seconds.append(time.perf_counter() - started)
    return x, np.array(grad_norm_sq), np.array(seconds)


def dense_floor(shards: list[tuple[np.ndarray, np.ndarray]], reps: int) -> float:
    """Seconds for the naive baseline's unavoidable work: ``A_i x`` and ``A_i^T s_i`` on every dense shard.

    Per shard, as the baseline does: one product over the whole dense matrix is large enough for OpenBLAS to
    go multi-threaded, which on a loaded 2-core machine is several times slower, not faster.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shards[0][0].shape[1]) * 0.01
    s = [rng.standard_normal(A_i.shape[0]) for A_i, _ in shards]
    return median_seconds(lambda: [(A_i @ x, A_i.T @ s_i) for (A_i, _), s_i in zip(shards, s)], reps)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))
