"""The methods of SPEC 4 as worker-side and master-side state updates.

A method never sees how messages travel: a worker turns its gradient and state into a `Message`, the
master turns the n messages (in worker order) into its next iterate. The serial backend calls these in
a loop; the MPI backend calls the same functions on each rank and only moves the buffers.

Round 0 is the initialisation at ``x^0``; round ``t >= 1`` starts with the master forming ``x^t``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ef21_mpi.core.compressors import INDEX_DTYPE, VALUE_DTYPE, Compressor, Identity
from ef21_mpi.errors import InputError

METHODS = ("ef21", "ef21-plus", "ef", "gd", "dcgd", "ef21-sgd")
INITS = ("full", "compressed", "zero")

#: Display names used in logs, tables and plot legends.
DISPLAY_NAMES = {"ef21": "EF21", "ef21-plus": "EF21+", "ef": "EF", "gd": "GD", "dcgd": "DCGD", "ef21-sgd": "EF21-SGD"}


@dataclass
class Message:
    """One worker's uplink message: ``values`` at ``indices`` (``None`` = dense), plus EF21+'s branch flag."""

    indices: np.ndarray | None
    values: np.ndarray
    flag: int | None = None


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

    @property
    def bits(self) -> int:
        return 8 * self.nbytes


@dataclass
class WorkerState:
    """Everything a worker needs to continue: its generator and its memory (``g_i`` or ``e_i``)."""

    rng: np.random.Generator
    g_i: np.ndarray | None = None  # EF21 family: the worker's gradient estimate
    e_i: np.ndarray | None = None  # EF: the accumulated compression error


@dataclass
class MasterState:
    """The master's iterate, its search direction ``g`` and, for EF21+, every worker's ``g_i``."""

    x: np.ndarray
    g: np.ndarray
    G: np.ndarray | None = field(default=None)


def sum_messages(messages: Sequence[Message], d: int) -> np.ndarray:
    """``sum_i C_i`` as a dense vector, adding in worker order (the same order on every backend)."""
    if all(m.indices is not None for m in messages):  # one pass; bincount adds in input (= worker) order
        indices = np.concatenate([m.indices for m in messages])
        return np.bincount(indices, weights=np.concatenate([m.values for m in messages]), minlength=d).astype(
            VALUE_DTYPE, copy=False)
    total = np.zeros(d, dtype=VALUE_DTYPE)
    for m in messages:
        if m.indices is None:
            total += m.values
        else:
            total[m.indices] += m.values
    return total


class Method:
    """Shared shape of every method; subclasses fill in the four state updates."""

    name = ""
    has_g = False  # does the worker keep g_i (so G^t, the "distortion", is defined)?

    def __init__(self, compressor: Compressor, gamma: float, n: int, d: int):
        self.compressor = compressor
        self.gamma = float(gamma)
        self.n = n
        self.d = d

    # -- wire layout --------------------------------------------------------------------------
    def compressed_spec(self) -> MessageSpec:
        return MessageSpec(self.compressor.n_values, not isinstance(self.compressor, Identity))

    def dense_spec(self) -> MessageSpec:
        return MessageSpec(self.d, False)

    def message_spec(self, t: int) -> MessageSpec:
        return self.compressed_spec()

    # -- worker side --------------------------------------------------------------------------
    def new_worker_state(self, rng: np.random.Generator) -> WorkerState:
        return WorkerState(rng=rng)

    def compress(self, v: np.ndarray, state: WorkerState) -> Message:
        indices, values = self.compressor.compress(v, state.rng)
        return Message(indices, values)

    def worker_round(self, state: WorkerState, grad: np.ndarray, t: int) -> Message:
        raise NotImplementedError

    # -- master side --------------------------------------------------------------------------
    def step_size(self) -> float:
        """Multiplier of ``g`` in ``x^{t+1} = x^t - step * g``."""
        return self.gamma

    def master_init(self, x0: np.ndarray) -> MasterState:
        return MasterState(x=np.array(x0, dtype=np.float64, copy=True), g=np.zeros(self.d))

    def next_x(self, state: MasterState) -> np.ndarray:
        state.x -= self.step_size() * state.g
        return state.x

    def master_absorb(self, state: MasterState, messages: Sequence[Message], t: int) -> None:
        """Default (GD, DCGD, EF): the new direction is the mean of the messages."""
        state.g = sum_messages(messages, self.d) / self.n


class EF21(Method):
    """Algorithm 2: ``c_i = C(grad_i(x^{t+1}) - g_i^t)``, ``g_i += c_i``, ``g += mean c_i``."""

    name = "ef21"
    has_g = True

    def __init__(self, compressor: Compressor, gamma: float, n: int, d: int, init: str = "full"):
        super().__init__(compressor, gamma, n, d)
        if init not in INITS:
            raise InputError(f"unknown --init {init!r}; expected one of {', '.join(INITS)}")
        self.init = init

    def message_spec(self, t: int) -> MessageSpec:
        if t > 0 or self.init == "compressed":
            return self.compressed_spec()
        return self.dense_spec() if self.init == "full" else MessageSpec(0, True)

    def new_worker_state(self, rng: np.random.Generator) -> WorkerState:
        return WorkerState(rng=rng, g_i=np.zeros(self.d))

    def _initial_message(self, state: WorkerState, grad: np.ndarray) -> Message:
        if self.init == "full":  # g_i^0 = grad_i(x^0), sent dense
            state.g_i[:] = grad
            return Message(None, state.g_i.copy())
        if self.init == "compressed":  # g_i^0 = C(grad_i(x^0)), Algorithm 2 as printed
            m = self.compress(grad, state)
            state.g_i[m.indices if m.indices is not None else slice(None)] = m.values
            return m
        return Message(np.empty(0, dtype=INDEX_DTYPE), np.empty(0))  # g_i^0 = 0: an empty message

    def worker_round(self, state: WorkerState, grad: np.ndarray, t: int) -> Message:
        if t == 0:
            return self._initial_message(state, grad)
        m = self.compress(grad - state.g_i, state)  # Alg. 2 line 5
        _add_message(state.g_i, m)  # line 6
        return m

    def master_absorb(self, state: MasterState, messages: Sequence[Message], t: int) -> None:
        state.g += sum_messages(messages, self.d) / self.n  # Alg. 2 line 8


class EF21Plus(EF21):
    """Section 4.6: each worker sends the better of the Markov candidate ``g_i + C(s - g_i)`` and ``C(s)``."""

    name = "ef21-plus"
    MARKOV, PLAIN = 0, 1

    def message_spec(self, t: int) -> MessageSpec:
        if t == 0:
            return super().message_spec(t)
        spec = self.compressed_spec()
        return MessageSpec(spec.n_values, spec.has_indices, has_flag=True)

    def worker_round(self, state: WorkerState, grad: np.ndarray, t: int) -> Message:
        if t == 0:
            return self._initial_message(state, grad)
        s = grad
        markov = self.compress(s - state.g_i, state)
        plain = self.compress(s, state)
        markov_error = s - state.g_i  # m - s = C(s - g_i) - (s - g_i)
        _subtract_message(markov_error, markov)
        plain_error = s.copy()  # p - s = C(s) - s
        _subtract_message(plain_error, plain)
        if float(plain_error @ plain_error) < float(markov_error @ markov_error):  # strict, SPEC 4
            plain.flag = self.PLAIN
            state.g_i[:] = 0.0
            _add_message(state.g_i, plain)
            return plain
        markov.flag = self.MARKOV
        _add_message(state.g_i, markov)
        return markov

    def master_init(self, x0: np.ndarray) -> MasterState:
        state = super().master_init(x0)
        state.G = np.zeros((self.n, self.d))  # the master mirrors every g_i: n x d, EF21+ only
        return state

    def master_absorb(self, state: MasterState, messages: Sequence[Message], t: int) -> None:
        for G_i, m in zip(state.G, messages):
            if m.flag == self.PLAIN:
                G_i[:] = 0.0
            _add_message(G_i, m)
        state.g = state.G.sum(axis=0) / self.n


class EF(Method):
    """Classic error feedback: ``v_i = C(e_i + gamma grad_i(x^t))``, ``e_i += gamma grad_i - v_i``, ``x -= mean v_i``."""

    name = "ef"

    def new_worker_state(self, rng: np.random.Generator) -> WorkerState:
        return WorkerState(rng=rng, e_i=np.zeros(self.d))

    def worker_round(self, state: WorkerState, grad: np.ndarray, t: int) -> Message:
        state.e_i += self.gamma * grad  # e_i + gamma grad_i(x^t)
        m = self.compress(state.e_i, state)
        _subtract_message(state.e_i, m)
        return m

    def step_size(self) -> float:
        return 1.0  # v_i already carries gamma


class GD(Method):
    """Distributed gradient descent: every worker sends its full gradient, dense."""

    name = "gd"

    def message_spec(self, t: int) -> MessageSpec:
        return self.dense_spec()

    def worker_round(self, state: WorkerState, grad: np.ndarray, t: int) -> Message:
        return Message(None, grad.copy())


class DCGD(Method):
    """Naive compressed gradient descent, eq. (7): ``x^{t+1} = x^t - gamma mean_i C(grad_i(x^t))``."""

    name = "dcgd"

    def worker_round(self, state: WorkerState, grad: np.ndarray, t: int) -> Message:
        return self.compress(grad, state)


class EF21SGD(EF21):
    """EF21 on minibatch gradients (Section 4.7); the engine supplies the minibatch gradient."""

    name = "ef21-sgd"


def _add_message(target: np.ndarray, m: Message) -> None:
    if m.indices is None:
        target += m.values
    else:  # the indices are distinct, so this is target[indices] += values (ufunc.at is 2x faster than fancy +=)
        np.add.at(target, m.indices, m.values)


def _subtract_message(target: np.ndarray, m: Message) -> None:
    if m.indices is None:
        target -= m.values
    else:
        np.subtract.at(target, m.indices, m.values)


def make_method(name: str, compressor: Compressor, gamma: float, n: int, d: int, init: str = "full") -> Method:
    """Build a method from its CLI name."""
    if name in ("ef21", "ef21-plus", "ef21-sgd"):
        cls = {"ef21": EF21, "ef21-plus": EF21Plus, "ef21-sgd": EF21SGD}[name]
        return cls(compressor, gamma, n, d, init)
    classes = {"ef": EF, "gd": GD, "dcgd": DCGD}
    if name not in classes:
        raise InputError(f"unknown --algorithm {name!r}; expected one of {', '.join(METHODS)}")
    return classes[name](compressor, gamma, n, d)
