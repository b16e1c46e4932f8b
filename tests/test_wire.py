"""The MPI wire layout without MPI: a gather is simulated by copying each worker's bytes to its displacement."""

from __future__ import annotations

import numpy as np
import pytest

from ef21_mpi.compressors import Identity, RandK, TopK
from ef21_mpi.methods import Message, make_method
from ef21_mpi.wire import Slots, pack, unpack


def gather(slots: Slots, key: int, logged: bool, sends: list[np.ndarray]) -> np.ndarray:
    """What rank 0's receive buffer holds after a ``Gatherv`` with ``slots.layout(key, logged)``."""
    counts, displs = slots.layout(key, logged)
    recv = np.full(slots.n * slots.stride[key], 0xAB, dtype=np.uint8)  # garbage where nothing is written
    for count, displ, send in zip(counts[1:], displs[1:], sends):
        assert send.nbytes == count
        recv[displ:displ + count] = send
    return recv


@pytest.mark.parametrize("algorithm,compressor,t", [
    ("ef21", TopK(3, 10), 1), ("ef21-plus", RandK(2, 10), 1), ("gd", Identity(10), 1), ("ef21", TopK(3, 10), 0),
])
@pytest.mark.parametrize("logged", [False, True])
def test_messages_and_monitoring_rows_survive_the_gather(algorithm, compressor, t, logged):
    n, d = 3, 10
    method = make_method(algorithm, compressor, 0.1, n, d)
    slots, key = Slots(method, n, d), min(t, 1)
    spec = slots.spec(t)
    rng = np.random.default_rng(0)
    sent, rows, sends = [], [], []
    for i in range(n):
        indices = np.sort(rng.choice(d, spec.n_values, replace=False)).astype(np.int32) if spec.has_indices else None
        message = Message(indices, rng.standard_normal(spec.n_values), flag=i % 2 if spec.has_flag else None)
        buf = np.zeros(slots.stride[key], dtype=np.uint8)
        pack(message, spec, buf)
        row = rng.standard_normal(d + 2)
        slots.monitor_rows(buf, key, 1)[0] = row  # a worker fills its row in place
        sends.append(buf[:slots.nbytes(key, logged)])
        sent.append(message)
        rows.append(row)
    recv = gather(slots, key, logged, sends)
    stride = slots.stride[key]
    for i, message in enumerate(sent):
        got = unpack(recv[i * stride:i * stride + spec.nbytes], spec)
        np.testing.assert_array_equal(got.values, message.values)
        if spec.has_indices:
            np.testing.assert_array_equal(got.indices, message.indices)
        assert got.flag == message.flag
    if logged:
        np.testing.assert_array_equal(slots.monitor_rows(recv, key, n), np.array(rows))
    # the method's traffic is the message alone, whatever rides along
    assert slots.nbytes(key, False) == spec.nbytes == 8 * spec.n_values + (4 * spec.n_values if spec.has_indices else 0) + (
        1 if spec.has_flag else 0)
    assert slots.monitor_offset[key] % 8 == 0 and slots.monitor_offset[key] >= spec.nbytes
