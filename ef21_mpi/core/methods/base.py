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

from ef21_mpi.core.compressors import INDEX_DTYPE, VALUE_DTYPE, Compressor, Identity

INITS = ("full", "compressed", "zero")


@dataclass
class Messages:
    """The uplink messages of a group: row ``j`` is worker ``j``'s ``values`` at ``indices`` (``None`` = dense).

    ``flags`` is EF21+'s branch per worker (``None`` for other methods).
    """

    indices: np.ndarray | None  # (m, n_values) int32
    values: np.ndarray  # (m, n_values) float64
    flags: np.ndarray | None = None  # (m,) uint8


@dataclass(frozen=True)
class MessageSpec:
    """The wire layout of a message: every worker's message in a given round has the same layout."""

    n_values: int
    has_indices: bool
    has_flag: bool = False

    @property
    def nbytes(self) -> int:
        index_bytes = np.dtype(INDEX_DTYPE).itemsize if self.has_indices else 0
        return self.n_values * (np.dtype(VALUE_DTYPE).itemsize + index_bytes) + (1 if self.has_flag else 0)


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


def add_messages(target: np.ndarray, msgs: Messages) -> None:
    """``target[j] += C_j`` for every row (indices are distinct within a row: one addition per entry)."""
    if msgs.indices is None:
        target += msgs.values
    else:
        target[worker_rows(len(target)), msgs.indices] += msgs.values


def subtract_messages(target: np.ndarray, msgs: Messages) -> None:
    if msgs.indices is None:
        target -= msgs.values
    else:
        target[worker_rows(len(target)), msgs.indices] -= msgs.values


def sum_messages(msgs: Messages, d: int) -> np.ndarray:
    """``sum_i C_i`` as a dense vector, adding in worker order (the same order on every backend)."""
    if msgs.indices is None:
        return msgs.values.sum(axis=0)  # row after row, as a loop over workers would add them
    # bincount adds in input order, i.e. worker after worker
    return np.bincount(msgs.indices.ravel(), weights=msgs.values.ravel(), minlength=d).astype(VALUE_DTYPE, copy=False)


def row_norms_sq(V: np.ndarray) -> np.ndarray:
    """``||V[j]||^2`` per row, each a dot product of its own (the same bits whatever the group size)."""
    return np.array([float(v @ v) for v in V])


def sends_indices(compressor) -> bool:
    """Whether a compressor's messages carry indices: all but the identity and plug-ins that say ``dense = True``."""
    return not (isinstance(compressor, Identity) or getattr(compressor, "dense", False))


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
    compresses = True  # False: always sends dense, whatever compressor is named
    has_g = False  # keeps g_i, so G^t (the log's "distortion") is defined

    def __init__(self, compressor: Compressor, gamma: float, n: int, d: int, init: str = "full"):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
        self.compressor = compressor if self.compresses else Identity(d)
        self.gamma = float(gamma)
        self.n, self.d, self.init = n, d, init

    # -- wire layout --------------------------------------------------------------------------
    def compressed_spec(self) -> MessageSpec:
        return MessageSpec(self.compressor.n_values, sends_indices(self.compressor))

    def message_spec(self, t: int) -> MessageSpec:
        return self.compressed_spec()

    # -- worker side --------------------------------------------------------------------------
    def init_workers(self, rngs: list[np.random.Generator]) -> Workers:
        return Workers(rngs=list(rngs))

    def compress(self, V: np.ndarray, state: Workers) -> Messages:
        """The compressed rows of ``V``, row ``j`` with worker ``j``'s generator (plug-ins may omit compress_group)."""
        if hasattr(self.compressor, "compress_group"):
            indices, values = self.compressor.compress_group(V, state.rngs)
        else:
            indices, values = compress_rows(self.compressor, V, state.rngs)
        return Messages(indices, values)

    def worker_step(self, state: Workers, grads: np.ndarray, t: int) -> Messages:
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
