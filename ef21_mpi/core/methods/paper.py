"""The methods of the EF21 paper (SPEC 4): EF21 (Algorithm 2), EF21+, EF, GD, DCGD and EF21-SGD."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ef21_mpi.core.compressors import INDEX_DTYPE
from ef21_mpi.core.compressors.base import row_norms_sq
from ef21_mpi.core.methods.base import (
    EF21PlusMaster,
    EF21Workers,
    EFWorkers,
    Master,
    Messages,
    MessageSpec,
    Method,
    Workers,
    add_messages,
    subtract_messages,
    sum_messages,
    worker_rows,
)


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
            state.g[worker_rows(m) if msgs.indices is not None else slice(None), msgs.indices
                    if msgs.indices is not None else slice(None)] = msgs.values
            return msgs
        return Messages(np.empty((m, 0), dtype=INDEX_DTYPE), np.empty((m, 0)))  # g_i^0 = 0: empty messages

    def worker_step(self, state: EF21Workers, grads: np.ndarray, t: int) -> Messages:
        if t == 0:
            return self._initial(state, grads)
        msgs = self.compress(np.subtract(grads, state.g, out=grads), state)  # Alg. 2 line 5 (grads is scratch)
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
        return replace(self.compressed_spec(), has_flag=True)

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
            np.where(take_plain, self.PLAIN, self.MARKOV).astype(np.uint8),
            None if markov.payload is None else np.where(take_plain[:, None], plain.payload, markov.payload))
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
    contractive = False  # an unbiased compressor is used as it is

    def worker_step(self, state: Workers, grads: np.ndarray, t: int) -> Messages:
        return self.compress(grads, state)


class EF21SGD(EF21):
    """EF21 on minibatch gradients (Section 4.7): the worker group hands it ``tau``-row gradients."""

    name, display_name, color = "ef21-sgd", "EF21-SGD", "C5"
    minibatch = True  # theory reports say that Theorems 2 and 3 assume full gradients
