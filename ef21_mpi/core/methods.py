"""The methods of SPEC 4 as state updates for a group of workers and for the master.

A method never sees how messages travel. Its worker side takes the gradients of the ``m`` workers one
process holds (an ``m x d`` array, one row per worker) and their explicit state, and returns their
`Messages`; its master side turns the ``n`` messages (in worker order) into the next direction. The
serial backend calls the worker side once for all ``n`` workers, an MPI rank once for its own block: the
rows never interact, so the grouping never changes a number.

Each class is also the single source of its facts (`METHODS` is the registry): command-line name,
display name, plot colour, whether row 0 of its log is an initialisation, which theorems cover it.
Round 0 is the initialisation at ``x^0``; round ``t >= 1`` starts with the master forming ``x^t``.
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


def _rows(m: int) -> np.ndarray:
    return np.arange(m)[:, None]


def add_messages(target: np.ndarray, msgs: Messages) -> None:
    """``target[j] += C_j`` for every row (indices are distinct within a row: one addition per entry)."""
    if msgs.indices is None:
        target += msgs.values
    else:
        target[_rows(len(target)), msgs.indices] += msgs.values


def subtract_messages(target: np.ndarray, msgs: Messages) -> None:
    if msgs.indices is None:
        target -= msgs.values
    else:
        target[_rows(len(target)), msgs.indices] -= msgs.values


def sum_messages(msgs: Messages, d: int) -> np.ndarray:
    """``sum_i C_i`` as a dense vector, adding in worker order (the same order on every backend)."""
    if msgs.indices is None:
        return msgs.values.sum(axis=0)  # row after row, as a loop over workers would add them
    # bincount adds in input order, i.e. worker after worker
    return np.bincount(msgs.indices.ravel(), weights=msgs.values.ravel(), minlength=d).astype(VALUE_DTYPE, copy=False)


def row_norms_sq(V: np.ndarray) -> np.ndarray:
    """``||V[j]||^2`` per row, each a dot product of its own (the same bits whatever the group size)."""
    return np.array([float(v @ v) for v in V])


# --- the methods ---------------------------------------------------------------------------------


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
        return MessageSpec(self.compressor.n_values, not isinstance(self.compressor, Identity))

    def message_spec(self, t: int) -> MessageSpec:
        return self.compressed_spec()

    # -- worker side --------------------------------------------------------------------------
    def init_workers(self, rngs: list[np.random.Generator]) -> Workers:
        return Workers(rngs=list(rngs))

    def compress(self, V: np.ndarray, state: Workers) -> Messages:
        indices, values = self.compressor.compress_group(V, state.rngs)
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


class EF21(Method):
    """Algorithm 2: ``c_i = C(grad_i(x^{t+1}) - g_i^t)``, ``g_i += c_i``, ``g += mean c_i``."""

    name, display_name, color = "ef21", "EF21", "C0"
    initialises, theorems, has_g = True, ("2", "3"), True

    def message_spec(self, t: int) -> MessageSpec:
        if t > 0 or self.init == "compressed":
            return self.compressed_spec()
        return MessageSpec(self.d, False) if self.init == "full" else MessageSpec(0, True)

    def init_workers(self, rngs: list[np.random.Generator]) -> EF21Workers:
        return EF21Workers(rngs=list(rngs), g=np.zeros((len(rngs), self.d)))

    def _initial(self, state: EF21Workers, grads: np.ndarray) -> Messages:
        m = len(grads)
        if self.init == "full":  # g_i^0 = grad_i(x^0), sent dense
            state.g[:] = grads
            return Messages(None, state.g.copy())
        if self.init == "compressed":  # g_i^0 = C(grad_i(x^0)), Algorithm 2 as printed
            msgs = self.compress(grads, state)
            state.g[_rows(m) if msgs.indices is not None else slice(None), msgs.indices
                    if msgs.indices is not None else slice(None)] = msgs.values
            return msgs
        return Messages(np.empty((m, 0), dtype=INDEX_DTYPE), np.empty((m, 0)))  # g_i^0 = 0: empty messages

    def worker_step(self, state: EF21Workers, grads: np.ndarray, t: int) -> Messages:
        if t == 0:
            return self._initial(state, grads)
        msgs = self.compress(grads - state.g, state)  # Alg. 2 line 5
        add_messages(state.g, msgs)  # line 6
        return msgs

    def distortion(self, state: EF21Workers, grads: np.ndarray) -> np.ndarray:
        return row_norms_sq(state.g - grads)

    def master_step(self, state: Master, msgs: Messages, t: int) -> None:
        state.g += sum_messages(msgs, self.d) / self.n  # Alg. 2 line 8


class EF21Plus(EF21):
    """Section 4.6: each worker sends the better of the Markov candidate ``g_i + C(s - g_i)`` and ``C(s)``."""

    name, display_name, color = "ef21-plus", "EF21+", "C1"
    MARKOV, PLAIN = 0, 1

    def message_spec(self, t: int) -> MessageSpec:
        if t == 0:
            return super().message_spec(t)
        spec = self.compressed_spec()
        return MessageSpec(spec.n_values, spec.has_indices, has_flag=True)

    def worker_step(self, state: EF21Workers, grads: np.ndarray, t: int) -> Messages:
        if t == 0:
            return self._initial(state, grads)
        s = grads
        markov = self.compress(s - state.g, state)  # each worker draws for the Markov candidate first
        plain = self.compress(s, state)
        markov_error = s - state.g  # m - s = C(s - g_i) - (s - g_i)
        subtract_messages(markov_error, markov)
        plain_error = s.copy()  # p - s = C(s) - s
        subtract_messages(plain_error, plain)
        take_plain = row_norms_sq(plain_error) < row_norms_sq(markov_error)  # strict, SPEC 4
        chosen = Messages(
            None if markov.indices is None else np.where(take_plain[:, None], plain.indices, markov.indices),
            np.where(take_plain[:, None], plain.values, markov.values),
            np.where(take_plain, self.PLAIN, self.MARKOV).astype(np.uint8))
        state.g[take_plain] = 0.0  # the plain branch replaces g_i by C(s)
        add_messages(state.g, chosen)
        return chosen

    def init_master(self, x0: np.ndarray) -> EF21PlusMaster:
        base = super().init_master(x0)
        return EF21PlusMaster(x=base.x, g=base.g, G=np.zeros((self.n, self.d)))  # n x d, EF21+ only

    def master_step(self, state: EF21PlusMaster, msgs: Messages, t: int) -> None:
        if msgs.flags is not None:
            state.G[msgs.flags == self.PLAIN] = 0.0
        add_messages(state.G, msgs)
        state.g = state.G.sum(axis=0) / self.n


class EF(Method):
    """Classic error feedback: ``v_i = C(e_i + gamma grad_i(x^t))``, ``e_i += gamma grad_i - v_i``, ``x -= mean v_i``."""

    name, display_name, color = "ef", "EF", "C2"

    def init_workers(self, rngs: list[np.random.Generator]) -> EFWorkers:
        return EFWorkers(rngs=list(rngs), e=np.zeros((len(rngs), self.d)))

    def worker_step(self, state: EFWorkers, grads: np.ndarray, t: int) -> Messages:
        state.e += self.gamma * grads  # e_i + gamma grad_i(x^t)
        msgs = self.compress(state.e, state)
        subtract_messages(state.e, msgs)
        return msgs

    def step_size(self) -> float:
        return 1.0  # v_i already carries gamma


class GD(Method):
    """Distributed gradient descent: every worker sends its full gradient, dense."""

    name, display_name, color = "gd", "GD", "C3"
    theorems, compresses = ("2", "3"), False  # EF21 with the identity compressor: G^t = 0

    def worker_step(self, state: Workers, grads: np.ndarray, t: int) -> Messages:
        return Messages(None, grads.copy())


class DCGD(Method):
    """Naive compressed gradient descent, eq. (7): ``x^{t+1} = x^t - gamma mean_i C(grad_i(x^t))``."""

    name, display_name, color = "dcgd", "DCGD", "C4"

    def worker_step(self, state: Workers, grads: np.ndarray, t: int) -> Messages:
        return self.compress(grads, state)


class EF21SGD(EF21):
    """EF21 on minibatch gradients (Section 4.7): the worker group hands it ``tau``-row gradients."""

    name, display_name, color = "ef21-sgd", "EF21-SGD", "C5"
    minibatch = True  # theory reports say that Theorems 2 and 3 assume full gradients


#: The registry: command-line name -> method class.
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (EF21, EF21Plus, EF, GD, DCGD, EF21SGD)}


def make_method(name: str, compressor: Compressor, gamma: float, n: int, d: int, init: str = "full") -> Method:
    """Build a registered method; ValueError for an unknown name."""
    cls = METHODS.get(name)
    if cls is None:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(METHODS)}")
    return cls(compressor, gamma, n, d, init)
