"""Worker groups: holding n workers in one process must give exactly the numbers of n processes holding one each.

The serial backend evaluates all workers in one pass over stacked shards; an MPI rank evaluates its one
worker. These tests compare the two groupings bit for bit on awkward shards (uneven sizes, an empty worker,
sizes that are not multiples of the SIMD width), and each worker's gradient against a dense formula.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import scipy.sparse as sp

from ef21_mpi.core.compressors import Dithering, Natural, RandK, RandKUnbiased, TopK
from ef21_mpi.core.methods import EF, make_method
from ef21_mpi.core.methods.base import subtract_messages
from ef21_mpi.core.problems import LeastSquaresShards, LogisticShards
from ef21_mpi.core.stacked import matvec_into, row_block, stacked_transpose
from ef21_mpi.runtime import worker as worker_module
from ef21_mpi.runtime.worker import WorkerGroup

LAM = 0.1
SIZES = [7, 0, 13, 1, 29, 8]  # uneven, one empty worker


def shards(sizes=SIZES, d=11, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for N_i in sizes:
        A = sp.random(N_i, d, density=0.4, format="csr", rng=rng, data_rvs=rng.standard_normal)
        out.append((sp.csr_matrix(A), rng.choice([-1.0, 1.0], size=N_i)))
    return out


def dense_logistic(A, y, x):
    if len(y) == 0:
        return LAM * np.sum(x**2 / (1 + x**2)), 2 * LAM * x / (1 + x**2) ** 2
    m = y * (A @ x)
    loss = np.mean(np.log1p(np.exp(-m))) + LAM * np.sum(x**2 / (1 + x**2))
    return loss, -(A.T @ (y / (1 + np.exp(m)))) / len(y) + 2 * LAM * x / (1 + x**2) ** 2


@pytest.mark.parametrize("cls", [LogisticShards, LeastSquaresShards])
def test_one_group_equals_one_group_per_worker_bit_for_bit(cls):
    blocks = shards()
    together = cls(blocks, LAM)
    x = np.random.default_rng(1).standard_normal(11)
    losses, grads = together.losses_and_grads(x)
    assert grads.shape == (len(SIZES), 11)
    for i, block in enumerate(blocks):
        alone_losses, alone_grads = cls([block], LAM).losses_and_grads(x)
        assert alone_losses[0] == losses[i]
        np.testing.assert_array_equal(alone_grads[0], grads[i])
    _, plain = together.losses_and_grads(x, with_losses=False)
    np.testing.assert_array_equal(plain, grads)


def test_group_gradients_and_losses_match_the_dense_formula():
    blocks = shards()
    x = np.random.default_rng(2).standard_normal(11)
    losses, grads = LogisticShards(blocks, LAM).losses_and_grads(x)
    for i, (A, y) in enumerate(blocks):
        loss, grad = dense_logistic(A.toarray(), y, x)
        assert losses[i] == pytest.approx(loss, rel=1e-13)
        np.testing.assert_allclose(grads[i], grad, rtol=1e-12, atol=1e-15)


def test_minibatch_gradient_of_a_worker_in_a_group_uses_its_own_rows():
    blocks = shards()
    group = LogisticShards(blocks, LAM)
    x = np.random.default_rng(3).standard_normal(11)
    rows = np.array([2, 5, 20])
    A, y = blocks[4]
    expected = dense_logistic(A.toarray()[rows], y[rows], x)[1]
    np.testing.assert_allclose(group.minibatch_grad(x, rows, worker=4), expected, rtol=1e-12, atol=1e-15)
    alone = LogisticShards([blocks[4]], LAM).minibatch_grad(x, rows)
    np.testing.assert_array_equal(group.minibatch_grad(x, rows, worker=4), alone)


@pytest.mark.parametrize("problem", [LogisticShards, LeastSquaresShards])
def test_all_minibatch_gradients_in_one_pass_have_each_lone_workers_bits(problem):
    """The group's batched minibatch gradients against each worker's batch computed alone, with scipy's own
    ``A_S^T w`` (the formula a lone worker used): the same bits, for any batch sizes, a worker's whole shard
    included, and for a subset of the workers."""
    blocks = [(A, y) for A, y in shards(seed=5) if A.shape[0]]  # workers with rows (a batch needs one)
    group = problem(blocks, LAM)
    rng = np.random.default_rng(8)
    x = rng.standard_normal(11)
    rows = [np.sort(rng.choice(A.shape[0], size=min(tau, A.shape[0]), replace=False))
            for (A, _), tau in zip(blocks, [3, 1, 29, 2, 8])]
    with np.errstate(over="ignore"):
        lone = []
        for (A, y), r in zip(blocks, rows):
            S = sp.csr_matrix(A)[r]
            if problem is LogisticShards:
                S = sp.csr_matrix(sp.diags(y[r]) @ S)
                reg = x * (2.0 * LAM) / (x * x + 1.0) ** 2
                lone.append(reg + S.T @ (-1.0 / ((1.0 + np.exp(S @ x)) * len(r))))
            else:
                lone.append(S.T @ ((S @ x - y[r]) / len(r)) + LAM * x)
    assert group.minibatch_grads(x, rows).tobytes() == np.array(lone).tobytes()
    some = np.array([1, 3])
    assert group.minibatch_grads(x, [rows[j] for j in some], some).tobytes() == np.array(lone)[some].tobytes()


@pytest.mark.parametrize("algorithm", ["ef21", "ef21-plus", "ef", "dcgd", "ef21-sgd"])
@pytest.mark.parametrize("compressor", [TopK(2, 11), RandK(3, 11)])
def test_worker_group_rounds_equal_lone_workers(algorithm, compressor):
    """Messages, monitoring rows and states after 6 rounds: one group of all workers == one group per worker."""
    sizes = [7, 13, 5, 29, 8]
    blocks = shards(sizes)
    n, d = len(sizes), 11
    method = make_method(algorithm, compressor, 0.05, n, d)
    seeds = np.random.SeedSequence(5).spawn(n)
    batch = 3 if algorithm == "ef21-sgd" else None
    together = WorkerGroup(method, LogisticShards(blocks, LAM), seeds, batch)
    alone = [WorkerGroup(method, LogisticShards([b], LAM), [s], batch, first=i)
             for i, (b, s) in enumerate(zip(blocks, seeds))]
    x = np.random.default_rng(6).standard_normal(d)
    monitors, monitor = np.empty((n, d + 2)), np.empty((1, d + 2))
    for t in range(6):
        logged = t % 2 == 0
        messages = together.round(x, t, monitors if logged else None)
        for i, worker in enumerate(alone):
            mine = worker.round(x, t, monitor if logged else None)
            np.testing.assert_array_equal(mine.values[0], messages.values[i])
            assert (mine.indices is None) == (messages.indices is None)
            if mine.indices is not None:
                np.testing.assert_array_equal(mine.indices[0], messages.indices[i])
            assert (mine.flags is None) == (messages.flags is None)
            if mine.flags is not None:
                assert mine.flags[0] == messages.flags[i]
            if logged:
                np.testing.assert_array_equal(monitor[0], monitors[i])
        x = x - 0.05 * messages.values.sum() / n  # move x a little, the same for both
    for i, worker in enumerate(alone):
        for name in ("g", "e"):
            a, b = getattr(worker.state, name, None), getattr(together.state, name, None)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a[0], b[i])
        assert worker.state.rngs[0].bit_generator.state == together.state.rngs[i].bit_generator.state


def test_both_forms_of_the_stacked_transpose_give_the_same_bits():
    """CSR (row dot products) and CSC (scatter over the nonzeros) add each output's terms in the same order."""
    blocks = [A for A, _ in shards(sizes=[7, 0, 13, 1, 29, 8], d=11, seed=8)]
    M = sp.vstack(blocks, format="csr")
    bounds = np.concatenate([[0], np.cumsum([A.shape[0] for A in blocks])])
    s = np.random.default_rng(9).standard_normal(M.shape[0]) * 1e3  # large terms: rounding shows if the order differs
    as_csr = stacked_transpose(M, bounds, 11, "csr")
    as_csc = stacked_transpose(M, bounds, 11, "csc")
    assert as_csr.format == "csr" and as_csc.format == "csc"
    np.testing.assert_array_equal(as_csr @ s, as_csc @ s)
    expected = np.concatenate([A.toarray().T @ s[lo:hi] for A, lo, hi in zip(blocks, bounds[:-1], bounds[1:])])
    np.testing.assert_allclose(as_csc @ s, expected, rtol=1e-12, atol=1e-9)


def test_a_wide_group_uses_the_csc_form_and_agrees_with_lone_workers():
    """d larger than the nonzeros: the group (and each lone worker) takes the CSC form; still bit for bit."""
    rng = np.random.default_rng(10)
    blocks = [(sp.random(N_i, 400, density=0.005, format="csr", rng=rng, data_rvs=rng.standard_normal),
               rng.choice([-1.0, 1.0], size=N_i)) for N_i in (5, 9, 3)]  # 2 nonzeros per row on average
    together = LogisticShards(blocks, LAM)
    assert together.BT.format == "csc"
    x = np.random.default_rng(11).standard_normal(400)
    losses, grads = together.losses_and_grads(x)
    for i, block in enumerate(blocks):
        alone_losses, alone_grads = LogisticShards([block], LAM).losses_and_grads(x)
        assert alone_losses[0] == losses[i]
        np.testing.assert_array_equal(alone_grads[0], grads[i])


# --- blocks of workers: one group taken block after block computes what one block does ---------------------


class RebindingEF(EF):
    """Classic EF written the way a plug-in may write it: every step replaces ``state.e`` by a new array."""

    name = "rebinding-ef"

    def worker_step(self, state, grads, t):
        state.e = state.e + self.gamma * grads
        msgs = self.compress(state.e, state)
        e = state.e.copy()
        subtract_messages(e, msgs)
        state.e = e
        return msgs


def drive(group: WorkerGroup, method, x0: np.ndarray, rounds: int, d: int) -> list:
    """The master's side of ``rounds`` rounds over one group; everything the group sent and logged."""
    master = method.init_master(x0)
    seen = []
    for t in range(rounds):
        x = master.x if t == 0 else method.next_x(master)
        monitors = np.full((group.m, d + 2), -1.0) if t % 2 == 0 else None
        msgs = group.round(np.ascontiguousarray(method.downlink(master, t)).view(np.uint8).copy(), t, monitors)
        method.master_step(master, msgs, t)
        seen.append((msgs, None if monitors is None else monitors.copy(), x.copy()))
    return seen


BLOCK_CASES = [("ef21", TopK(1, 11), {}), ("ef21", TopK(3, 11), {}), ("ef21", RandK(2, 11), {}),
               ("ef21", Natural(11), {}), ("ef21", Dithering(3, 11), {}), ("ef21-plus", TopK(2, 11), {}),
               ("ef", TopK(1, 11), {}), ("gd", TopK(1, 11), {}), ("dcgd", RandKUnbiased(3, 11), {}),
               ("ef21-pp", TopK(1, 11), {"participation": 0.5}), ("ef21-hb", TopK(2, 11), {"momentum": 0.5}),
               ("ef21-bc", TopK(1, 11), {"down_compressor": "top-k", "down_k": 2}), (RebindingEF, TopK(2, 11), {})]


@pytest.mark.parametrize("algorithm,compressor,options", BLOCK_CASES,
                         ids=[f"{a if isinstance(a, str) else a.name}-{type(c).__name__}" for a, c, _ in BLOCK_CASES])
@pytest.mark.parametrize("problem", [LogisticShards, LeastSquaresShards])
def test_a_group_taken_in_blocks_equals_one_block_bit_for_bit(algorithm, compressor, options, problem, monkeypatch):
    """Messages, monitoring rows, iterates, states and generators after 7 rounds: blocks of 3 workers (the last
    of 2, one worker empty) == the whole group at once, for every method, including one that replaces its state
    arrays instead of updating them (the block's rows must be written back)."""
    sizes = [7, 13, 5, 29, 8, 0, 4, 11]
    blocks, n, d = shards(sizes), len(sizes), 11
    x0 = np.random.default_rng(12).standard_normal(d)
    runs = {}
    for label, entries in (("blocks", 3 * d), ("whole", 10**9)):
        monkeypatch.setattr(worker_module, "BLOCK_ENTRIES", entries)
        method = make_method(algorithm, compressor, 0.05, n, d, master_seed=3, **options)
        group = WorkerGroup(method, problem(blocks, LAM), np.random.SeedSequence(5).spawn(n))
        runs[label] = (group, drive(group, method, x0, 7, d))
    (blocked, seen_blocked), (whole, seen_whole) = runs["blocks"], runs["whole"]
    assert blocked.block == 3 and len(blocked._blocks()) == 3 and len(whole._blocks()) == 1
    for (a, mon_a, x_a), (b, mon_b, x_b) in zip(seen_blocked, seen_whole):
        np.testing.assert_array_equal(x_a, x_b)
        for name in ("indices", "values", "flags", "payload"):
            u, v = getattr(a, name), getattr(b, name)
            assert (u is None) == (v is None)
            if u is not None:
                assert u.dtype == v.dtype
                np.testing.assert_array_equal(u, v)
        assert (mon_a is None) == (mon_b is None)
        if mon_a is not None:
            np.testing.assert_array_equal(mon_a, mon_b)
    for f in fields(whole.state):
        if f.name == "rngs":
            assert [r.bit_generator.state for r in blocked.state.rngs] == [r.bit_generator.state for r in whole.state.rngs]
        else:
            np.testing.assert_array_equal(getattr(blocked.state, f.name), getattr(whole.state, f.name))


def test_product_into_a_buffer_and_row_blocks_give_the_bits_of_the_product():
    """`matvec_into` (scipy's kernel into our zeroed buffer) == ``M @ v``; a `row_block` of the stacked transpose
    (CSR: its rows; CSC: its columns, row indices shifted) times its part of ``s`` == those rows of ``M_T @ s``."""
    blocks = [A for A, _ in shards(sizes=[7, 0, 13, 1, 29, 8], d=11, seed=13)]
    M = sp.vstack(blocks, format="csr")
    bounds = np.concatenate([[0], np.cumsum([A.shape[0] for A in blocks])])
    s = np.random.default_rng(14).standard_normal(M.shape[0]) * 1e3
    out = np.full(M.shape[0], np.nan)
    x = np.random.default_rng(15).standard_normal(11)
    matvec_into(M, x, out)
    assert out.tobytes() == (M @ x).tobytes()
    for fmt in ("csr", "csc"):
        MT = stacked_transpose(M, bounds, 11, fmt)
        whole = MT @ s
        for lo, hi in ((0, 2), (2, 5), (5, 6), (1, 4)):
            block = row_block(MT, lo * 11, hi * 11, bounds[lo], bounds[hi])
            assert block.format == fmt and block.shape[0] == (hi - lo) * 11
            part = np.full(block.shape[0], np.nan)
            matvec_into(block, s[bounds[lo]:bounds[hi]] if fmt == "csc" else s, part)
            assert part.tobytes() == whole[lo * 11:hi * 11].tobytes()
