"""What every method shares: messages, their wire layout, state types and the `Method` base class.

A method never sees how messages travel. Its worker side takes the gradients of the ``m`` workers one
process holds (an ``m x d`` array, one row per worker) and their explicit state, and returns their
`Messages`; its master side turns the ``n`` messages (in worker order) into the next direction. The
serial backend calls the worker side once for all ``n`` workers, an MPI rank once for its own block: the
rows never interact, so the grouping never changes a number.

Each method class is also the single source of its facts: command-line name, display name, plot colour,
whether row 0 of its log is an initialisation, which theorems cover it. Round 0 is the initialisation at
``x^0``; round ``t >= 1`` starts with the master forming ``x^t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ef21_mpi.core.compressors import INDEX_DTYPE, VALUE_DTYPE, Compressor, Identity, as_contractive

INITS = ("full", "compressed", "zero")


@dataclass
class Messages:
    """The uplink messages of a group: row ``j`` is worker ``j``'s ``values`` at ``indices`` (``None`` = dense).

    ``flags`` is EF21+'s branch per worker (``None`` for other methods). ``payload`` holds the packed bytes of
    a packed compressor's messages (``values`` is their decoding); ``None`` for (index, float64) messages.
    """

    indices: np.ndarray | None  # (m, n_values) int32
    values: np.ndarray  # (m, n_values) float64
    flags: np.ndarray | None = None  # (m,) uint8
    payload: np.ndarray | None = None  # (m, packed_nbytes) uint8


@dataclass(frozen=True)
class MessageSpec:
    """The wire layout of a message: every worker's message in a given round has the same layout."""

    n_values: int
    has_indices: bool
    has_flag: bool = False
    codec: object = None  # a packed compressor (``packed_nbytes``, ``decode``); None: float64 values, int32 indices

    @property
    def message_nbytes(self) -> int:
        """Bytes of the message itself (without EF21+'s flag)."""
        if self.codec is not None:
            return self.codec.packed_nbytes
        index_bytes = np.dtype(INDEX_DTYPE).itemsize if self.has_indices else 0
        return self.n_values * (np.dtype(VALUE_DTYPE).itemsize + index_bytes)

    @property
    def nbytes(self) -> int:
        return self.message_nbytes + (1 if self.has_flag else 0)


# --- state: one small type per method, every array with a leading worker axis ----------------------


@dataclass
class Workers:
    """What every group of workers carries: one generator per worker (Rand-k, minibatches)."""

    rngs: list[np.random.Generator]


@dataclass
class EF21Workers(Workers):
    g: np.ndarray  # (m, d): g_i, the workers' gradient estimates


@dataclass
class EFWorkers(Workers):
    e: np.ndarray  # (m, d): e_i, the accumulated compression errors


@dataclass
class Master:
    """The master's iterate ``x`` and direction ``g``."""

    x: np.ndarray
    g: np.ndarray


@dataclass
class EF21PlusMaster(Master):
    G: np.ndarray = field(default=None)  # (n, d): the master's mirror of every g_i


# --- helpers on messages ------------------------------------------------------------------------


def worker_rows(m: int) -> np.ndarray:
    return np.arange(m)[:, None]


def _positions(target: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(target as one flat view, the flat positions of row j's indices)``; a copy-free view needs a C-contiguous
    target, otherwise ``(target, (rows, indices))`` for a 2-D fancy index."""
    if target.flags.c_contiguous:
        return target.reshape(-1), np.arange(0, target.size, target.shape[1])[:, None] + indices
    return target, (worker_rows(len(target)), indices)


def add_messages(target: np.ndarray, msgs: Messages) -> None:
    """``target[j] += C_j`` for every row (indices are distinct within a row: one addition per entry)."""
    if msgs.indices is None:
        target += msgs.values
    else:
        flat, where = _positions(target, msgs.indices)
        flat[where] += msgs.values


def subtract_messages(target: np.ndarray, msgs: Messages) -> None:
    if msgs.indices is None:
        target -= msgs.values
    else:
        flat, where = _positions(target, msgs.indices)
        flat[where] -= msgs.values


def sum_messages(msgs: Messages, d: int) -> np.ndarray:
    """``sum_i C_i`` as a dense vector, adding in worker order (the same order on every backend)."""
    if msgs.indices is None:
        return msgs.values.sum(axis=0)  # row after row, as a loop over workers would add them
    # bincount adds in input order, i.e. worker after worker
    return np.bincount(msgs.indices.ravel(), weights=msgs.values.ravel(), minlength=d).astype(VALUE_DTYPE, copy=False)


def sends_indices(compressor) -> bool:
    """Whether a compressor's messages carry indices: its ``sparse`` flag (the package's compressors state it);
    a plug-in without one is sparse unless it says ``dense = True``."""
    if hasattr(compressor, "sparse"):
        return bool(compressor.sparse)
    return not getattr(compressor, "dense", False)


def compress_rows(compressor, V: np.ndarray, rngs) -> tuple[np.ndarray | None, np.ndarray]:
    """``compress_group`` for a compressor without one: ``compress(V[j], rngs[j])`` row by row, stacked."""
    m, n_values = len(V), compressor.n_values
    values = np.empty((m, n_values), dtype=VALUE_DTYPE)
    indices = np.empty((m, n_values), dtype=INDEX_DTYPE) if sends_indices(compressor) else None
    for j in range(m):
        idx, values[j] = compressor.compress(V[j], rngs[j])
        if indices is not None:
            indices[j] = idx
    return indices, values


class Method:
    """Shared shape of every method; a subclass states its facts and fills in its state updates."""

    name = ""  # command-line name
    display_name = ""  # tables and legends
    color = "C7"  # plot colour, the same in every figure
    initialises = False  # row 0 of the log is an initialisation (g_i^0), not a step
    theorems: tuple[str, ...] = ()  # the paper's theorems that speak about it
    minibatch = False  # workers use minibatch gradients (--batch-size)
    full_gradient_init = False  # a minibatch method whose round 0 uses full gradients (g_i^0 = grad_i(x^0))
    compresses = True  # False: always sends dense, whatever compressor is named
    contractive = True  # needs a contractive compressor: an unbiased Q is used as Q / (omega + 1)
    has_g = False  # keeps g_i, so G^t (the log's "distortion") is defined
    options: tuple[str, ...] = ()  # the method's own settings (keyword arguments of __init__), as RunConfig names
    required: tuple[str, ...] = ()  # options without a default

    def __init__(self, compressor: Compressor, gamma: float, n: int, d: int, init: str = "full"):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
        if not self.compresses:
            compressor = Identity(d)
        self.compressor = as_contractive(compressor) if self.contractive else compressor
        self.gamma = float(gamma)
        self.n, self.d, self.init = n, d, init

    @classmethod
    def check_options(cls, **options) -> None:
        """ValueError for an option out of range (called at start-up, before any data is read)."""

    # -- wire layout --------------------------------------------------------------------------
    def compressed_spec(self) -> MessageSpec:
        c = self.compressor
        packed = getattr(c, "packed_nbytes", None) is not None
        return MessageSpec(c.n_values, sends_indices(c), codec=c if packed else None)

    def message_spec(self, t: int) -> MessageSpec:
        return self.compressed_spec()

    def senders(self, master: Master, t: int) -> np.ndarray | None:
        """Which workers sent a message in round ``t`` (bool per worker); ``None``: all of them."""
        return None

    # -- downlink: what the master broadcasts, and how the workers read it -------------------------
    def downlink_nbytes(self, t: int) -> int:
        """Bytes the master broadcasts in round ``t`` (default: ``x^t``, dense float64)."""
        return np.dtype(VALUE_DTYPE).itemsize * self.d

    def downlink(self, master: Master, t: int) -> np.ndarray:
        """The broadcast of round ``t`` (any dtype; its ``downlink_nbytes(t)`` bytes go over the wire)."""
        return master.x

    def receive(self, state: Workers, down: np.ndarray, t: int, rows: range) -> np.ndarray:
        """Worker side of the broadcast (``down``: its bytes): update the group's state, return ``x^t``.

        ``rows`` are the workers the group holds (of the ``n``).
        """
        return np.array(down, dtype=np.uint8, copy=True).view(VALUE_DTYPE)

    # -- worker side --------------------------------------------------------------------------
    def init_workers(self, rngs: list[np.random.Generator]) -> Workers:
        return Workers(rngs=list(rngs))

    def compress(self, V: np.ndarray, state: Workers, rngs: list | None = None) -> Messages:
        """The group's compressed messages, row ``j`` with worker ``j``'s generator; a packed compressor draws
        bytes and its values are their decoding; a plug-in without ``compress_group`` goes row by row."""
        rngs = state.rngs if rngs is None else rngs
        if getattr(self.compressor, "packed_nbytes", None) is not None:
            payload = self.compressor.encode_group(V, rngs)
            return Messages(None, self.compressor.decode(payload), payload=payload)
        if hasattr(self.compressor, "compress_group"):
            indices, values = self.compressor.compress_group(V, rngs)
        else:
            indices, values = compress_rows(self.compressor, V, rngs)
        return Messages(indices, values)

    def worker_step(self, state: Workers, grads: np.ndarray, t: int) -> Messages:
        """The messages of the group's workers from their gradients (``m x d``), updating ``state``.

        ``grads`` is the worker group's scratch buffer: the step may overwrite it (EF21 forms ``grad_i - g_i``
        in place); the group has kept what it needs from it beforehand.
        """
        raise NotImplementedError

    def distortion(self, state: Workers, grads: np.ndarray) -> np.ndarray | None:
        """``||g_i - grad_i(x)||^2`` per worker (``None`` for methods without ``g_i``)."""
        return None

    # -- master side --------------------------------------------------------------------------
    def step_size(self) -> float:
        """Multiplier of ``g`` in ``x^{t+1} = x^t - step * g``."""
        return self.gamma

    def init_master(self, x0: np.ndarray) -> Master:
        return Master(x=np.array(x0, dtype=np.float64, copy=True), g=np.zeros(self.d))

    def next_x(self, state: Master) -> np.ndarray:
        state.x -= self.step_size() * state.g
        return state.x

    def master_step(self, state: Master, msgs: Messages, t: int) -> None:
        """Default (GD, DCGD, EF): the new direction is the mean of the messages."""
        state.g = sum_messages(msgs, self.d) / self.n
