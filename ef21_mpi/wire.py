"""What travels between the MPI ranks in a round, and how a rank waits for it.

One collective per direction per round:

- down: ``Bcast`` of ``[x^t, control]`` (``d + 1`` float64);
- up: ``Gatherv`` of one slot per worker. A slot holds the worker's message as raw bytes (float64 values,
  then int32 indices for sparse messages, then EF21+'s 1-byte branch flag); on logged rounds it continues,
  8-byte aligned, with the worker's monitoring row ``[grad_i, f_i, G_i]`` (``d + 2`` float64). ``bits_up``
  counts the message bytes only: monitoring is the simulator's, not the method's, traffic.

Waiting is MPI's own (busy polling). Sleeping between tests of nonblocking requests was measured and is
slower here even with 21 ranks on 2 cores (docs/performance.md): the sleepers' wake-ups cost more CPU than
their spinning did, and each hop of the broadcast tree waits for a sleeper to wake.
"""

from __future__ import annotations

import numpy as np

from .compressors import INDEX_DTYPE, VALUE_DTYPE
from .methods import Message, MessageSpec, Method


def aligned(nbytes: int) -> int:
    return (nbytes + 7) // 8 * 8


def pack(message: Message, spec: MessageSpec, out: np.ndarray) -> None:
    """Write ``message`` into the byte buffer ``out`` (at least ``spec.nbytes`` long) in wire order."""
    nv = spec.n_values
    vbytes = nv * np.dtype(VALUE_DTYPE).itemsize
    out[:vbytes].view(VALUE_DTYPE)[:] = message.values
    if spec.has_indices:
        out[vbytes:vbytes + nv * np.dtype(INDEX_DTYPE).itemsize].view(INDEX_DTYPE)[:] = message.indices
    if spec.has_flag:
        out[spec.nbytes - 1] = message.flag


def unpack(chunk: np.ndarray, spec: MessageSpec) -> Message:
    """The `Message` whose bytes are ``chunk`` (views, no copies)."""
    nv = spec.n_values
    vbytes = nv * np.dtype(VALUE_DTYPE).itemsize
    values = chunk[:vbytes].view(VALUE_DTYPE)
    indices = chunk[vbytes:vbytes + nv * np.dtype(INDEX_DTYPE).itemsize].view(INDEX_DTYPE) if spec.has_indices else None
    flag = int(chunk[spec.nbytes - 1]) if spec.has_flag else None
    return Message(indices, values, flag)


class Slots:
    """The layout of the upward slots: where each worker's message and monitoring row sit.

    ``key`` is 0 for round 0 (whose message may be dense) and 1 for every later round. Each worker's slot
    is ``stride`` bytes apart; the monitoring row starts ``monitor_offset`` bytes into it.
    """

    def __init__(self, method: Method, n: int, d: int):
        self.n, self.d = n, d
        self.specs = {0: method.message_spec(0), 1: method.message_spec(1)}
        self.monitor_offset = {key: aligned(spec.nbytes) for key, spec in self.specs.items()}
        self.stride = {key: offset + 8 * (d + 2) for key, offset in self.monitor_offset.items()}

    def spec(self, t: int) -> MessageSpec:
        return self.specs[min(t, 1)]

    def nbytes(self, key: int, logged: bool) -> int:
        """Bytes one worker sends: its message, plus (aligned) its monitoring row on logged rounds."""
        return self.stride[key] if logged else self.specs[key].nbytes

    def layout(self, key: int, logged: bool) -> tuple[list[int], list[int]]:
        """``Gatherv`` counts and displacements over all ranks (rank 0, the master, sends nothing)."""
        counts = [0] + [self.nbytes(key, logged)] * self.n
        displs = [0] + [i * self.stride[key] for i in range(self.n)]
        return counts, displs

    def monitor_rows(self, buffer: np.ndarray, key: int, rows: int) -> np.ndarray:
        """A ``rows x (d + 2)`` float64 view of the monitoring rows inside a byte buffer of ``rows`` slots."""
        per_slot = buffer[:rows * self.stride[key]].view(np.float64).reshape(rows, self.stride[key] // 8)
        first = self.monitor_offset[key] // 8
        return per_slot[:, first:first + self.d + 2]
