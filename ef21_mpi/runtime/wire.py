"""What travels between the MPI ranks in a round, and how a rank waits for it.

One collective per direction per round:

- down: ``Bcast`` of ``[control, payload]``: the control word as float64, then the method's broadcast of
  the round (`Method.downlink`: ``x^t`` as ``d`` float64 by default), ``downlink_nbytes(t)`` bytes;
- up: ``Gatherv`` of one slot per worker. A slot holds the worker's message as raw bytes (float64 values,
  then int32 indices for sparse messages; or a packed compressor's own bytes), then EF21+'s 1-byte branch
  flag; on logged rounds it continues,
  8-byte aligned, with the worker's monitoring row ``[grad_i, f_i, G_i]`` (``d + 2`` float64). ``bits_up``
  counts the message bytes only: monitoring is the simulator's, not the method's, traffic.

Waiting is MPI's own (busy polling). Sleeping between tests of nonblocking requests was measured and is
slower here even with 21 ranks on 2 cores (docs/performance.md): the sleepers' wake-ups cost more CPU than
their spinning did, and each hop of the broadcast tree waits for a sleeper to wake.
"""

from __future__ import annotations

import numpy as np

from ef21_mpi.core.compressors import INDEX_DTYPE, VALUE_DTYPE
from ef21_mpi.core.methods import Messages, MessageSpec, Method


def aligned(nbytes: int) -> int:
    return (nbytes + 7) // 8 * 8


def pack(msgs: Messages, spec: MessageSpec, slots: np.ndarray) -> None:
    """Write the group's messages into ``slots`` (an m x stride byte array, one row per worker) in wire order."""
    m = msgs.values.shape[0]
    if spec.codec is not None:  # a packed compressor's own bytes
        slots[:, :spec.message_nbytes] = msgs.payload
    else:
        nv = msgs.values.shape[1]
        vbytes = nv * np.dtype(VALUE_DTYPE).itemsize
        slots[:, :vbytes] = np.ascontiguousarray(msgs.values, dtype=VALUE_DTYPE).view(np.uint8).reshape(m, vbytes)
        if spec.has_indices:
            ibytes = nv * np.dtype(INDEX_DTYPE).itemsize
            slots[:, vbytes:vbytes + ibytes] = np.ascontiguousarray(msgs.indices, dtype=INDEX_DTYPE).view(
                np.uint8).reshape(m, ibytes)
    if spec.has_flag:
        slots[:, spec.nbytes - 1] = msgs.flags


def unpack(slots: np.ndarray, spec: MessageSpec) -> Messages:
    """The `Messages` whose bytes are the rows of ``slots`` (an n x stride byte array; views, no copies, except
    a packed compressor's values, which are decoded from its bytes exactly as the worker decoded them)."""
    flags = slots[:, spec.nbytes - 1] if spec.has_flag else None
    if spec.codec is not None:
        payload = slots[:, :spec.message_nbytes]
        return Messages(None, spec.codec.decode(payload), flags, payload)
    nv = spec.n_values
    vbytes = nv * np.dtype(VALUE_DTYPE).itemsize
    values = slots[:, :vbytes].view(VALUE_DTYPE)
    indices = slots[:, vbytes:vbytes + nv * np.dtype(INDEX_DTYPE).itemsize].view(INDEX_DTYPE) if spec.has_indices \
        else None
    return Messages(indices, values, flags)


def rank_workers(n: int, ranks: int) -> list[range]:
    """The workers of each worker rank: ``n`` workers in contiguous, balanced blocks over ``ranks`` ranks."""
    base, extra = divmod(n, ranks)
    blocks, start = [], 0
    for r in range(ranks):
        size = base + (1 if r < extra else 0)
        blocks.append(range(start, start + size))
        start += size
    return blocks


class Slots:
    """The layout of the upward slots: where each worker's message and monitoring row sit.

    ``key`` is 0 for round 0 (whose message may be dense) and 1 for every later round. Worker ``i``'s slot
    starts at ``i * stride(key, logged)``: the message, then (on logged rounds, from ``monitor_offset``) the
    monitoring row. A rank holding workers ``lo .. hi - 1`` sends their slots as one contiguous block.
    """

    def __init__(self, method: Method, n: int, d: int):
        self.n, self.d = n, d
        self.specs = {0: method.message_spec(0), 1: method.message_spec(1)}
        self.monitor_offset = {key: aligned(spec.nbytes) for key, spec in self.specs.items()}

    def spec(self, t: int) -> MessageSpec:
        return self.specs[min(t, 1)]

    def stride(self, key: int, logged: bool) -> int:
        return self.monitor_offset[key] + (8 * (self.d + 2) if logged else 0)

    def block_nbytes(self, key: int, logged: bool, m: int) -> int:
        """Bytes a rank holding ``m`` workers sends: their slots, up to the end of the last message or row."""
        last = self.stride(key, True) if logged else self.specs[key].nbytes
        return (m - 1) * self.stride(key, logged) + last

    def layout(self, key: int, logged: bool, ranks: list[range]) -> tuple[list[int], list[int]]:
        """``Gatherv`` counts and displacements over all ranks (rank 0, the master, sends nothing)."""
        counts = [0] + [self.block_nbytes(key, logged, len(r)) for r in ranks]
        displs = [0] + [r.start * self.stride(key, logged) for r in ranks]
        return counts, displs

    def rows(self, buffer: np.ndarray, key: int, logged: bool, m: int) -> np.ndarray:
        """The first ``m`` slots of a byte buffer as an m x stride array (one row per worker)."""
        stride = self.stride(key, logged)
        return buffer[:m * stride].reshape(m, stride)

    def monitor_rows(self, buffer: np.ndarray, key: int, rows: int) -> np.ndarray:
        """A ``rows x (d + 2)`` float64 view of the monitoring rows inside a byte buffer of ``rows`` logged slots."""
        stride = self.stride(key, True)
        per_slot = buffer[:rows * stride].view(np.float64).reshape(rows, stride // 8)
        first = self.monitor_offset[key] // 8
        return per_slot[:, first:first + self.d + 2]
