"""The MPI wire layout without MPI: a gather is simulated by copying each rank's bytes to its displacement."""

from __future__ import annotations

import numpy as np
import pytest

from ef21_mpi.core.compressors import Identity, RandK, TopK
from ef21_mpi.core.methods import Messages, make_method
from ef21_mpi.runtime.wire import Slots, pack, rank_workers, unpack


def test_rank_workers_are_balanced_contiguous_blocks():
    assert rank_workers(5, 2) == [range(3), range(3, 5)]
    assert rank_workers(4, 4) == [range(i, i + 1) for i in range(4)]
    blocks = rank_workers(20, 3)
    assert [len(b) for b in blocks] == [7, 7, 6]
    assert [i for b in blocks for i in b] == list(range(20))


def gather(slots: Slots, key: int, logged: bool, ranks: list[range], sends: list[np.ndarray]) -> np.ndarray:
    """What rank 0's receive buffer holds after a ``Gatherv`` with ``slots.layout(key, logged, ranks)``."""
    counts, displs = slots.layout(key, logged, ranks)
    recv = np.full(slots.n * slots.stride(key, True), 0xAB, dtype=np.uint8)  # garbage where nothing is written
    for count, displ, send in zip(counts[1:], displs[1:], sends):
        assert send.nbytes == count
        recv[displ:displ + count] = send
    return recv


@pytest.mark.parametrize("algorithm,compressor,t", [
    ("ef21", TopK(3, 10), 1), ("ef21-plus", RandK(2, 10), 1), ("gd", Identity(10), 1), ("ef21", TopK(3, 10), 0),
])
@pytest.mark.parametrize("logged", [False, True])
@pytest.mark.parametrize("n_ranks", [5, 2])
def test_messages_and_monitoring_rows_survive_the_gather(algorithm, compressor, t, logged, n_ranks):
    n, d = 5, 10
    method = make_method(algorithm, compressor, 0.1, n, d)
    slots, key, ranks = Slots(method, n, d), min(t, 1), rank_workers(n, n_ranks)
    spec = slots.spec(t)
    rng = np.random.default_rng(0)
    sent, rows, sends = [], [], []
    for mine in ranks:  # each rank packs its workers' messages and fills their rows in place, as serve() does
        m = len(mine)
        buf = np.zeros(m * slots.stride(key, True), dtype=np.uint8)
        monitors = slots.monitor_rows(buf, key, m)
        indices = (np.stack([np.sort(rng.choice(d, spec.n_values, replace=False)) for _ in mine]).astype(np.int32)
                   if spec.has_indices else None)
        msgs = Messages(indices, rng.standard_normal((m, spec.n_values)),
                        np.array([i % 2 for i in mine], dtype=np.uint8) if spec.has_flag else None)
        block_rows = rng.standard_normal((m, d + 2))
        monitors[:] = block_rows
        pack(msgs, spec, slots.rows(buf, key, logged, m))
        sent.append(msgs)
        rows.extend(block_rows)
        sends.append(buf[:slots.block_nbytes(key, logged, m)])
    recv = gather(slots, key, logged, ranks, sends)
    got = unpack(slots.rows(recv, key, logged, n), spec)
    np.testing.assert_array_equal(got.values, np.concatenate([s.values for s in sent]))
    if spec.has_indices:
        np.testing.assert_array_equal(got.indices, np.concatenate([s.indices for s in sent]))
    if spec.has_flag:
        np.testing.assert_array_equal(got.flags, np.concatenate([s.flags for s in sent]))
    if logged:
        np.testing.assert_array_equal(slots.monitor_rows(recv, key, n), np.array(rows))
    # one worker per rank sends exactly its message on unlogged rounds: what bits_up counts
    expected = 8 * spec.n_values + (4 * spec.n_values if spec.has_indices else 0) + (1 if spec.has_flag else 0)
    assert slots.block_nbytes(key, False, 1) == spec.nbytes == expected
    assert slots.monitor_offset[key] % 8 == 0 and slots.monitor_offset[key] >= spec.nbytes
