"""EF21-SGDM, momentum on the workers (Fatkhullin, Tyurin, Richtárik 2023; SPEC 8).

Each worker keeps ``v_i`` (``v_i^0 = g_i^0``, the full gradient under ``--init full``); round t: ``x^{t+1} = x^t - gamma g^t``;
``v_i^{t+1} = (1 - eta) v_i^t + eta grad_i(x^{t+1}; B_i^t)`` with a fresh minibatch ``B_i^t`` of ``tau`` rows
(as EF21-SGD); ``c_i = C(v_i^{t+1} - g_i^t)``, ``g_i += c_i``; the master as EF21. ``eta = 1`` with full
batches is EF21.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ef21_mpi.core.methods.base import EF21Workers, Messages, add_messages
from ef21_mpi.core.methods.paper import EF21


@dataclass
class SGDMWorkers(EF21Workers):
    v: np.ndarray = None  # (m, d): the momentum estimators v_i


class EF21SGDM(EF21):
    name, display_name, color = "ef21-sgdm", "EF21-SGDM", "C7"
    theorems = ()
    minibatch, full_gradient_init = True, True  # SPEC 8: starts like EF21, g_i^0 = v_i^0 = grad_i(x^0)
    options = required = ("momentum",)

    @classmethod
    def check_options(cls, momentum: float | None = None, **_) -> None:
        if momentum is not None and not (0 < momentum <= 1):
            raise ValueError(f"--momentum {momentum} is out of range for {cls.name}: expected 0 < eta <= 1")

    def __init__(self, compressor, gamma: float, n: int, d: int, init: str = "full", momentum: float = 1.0):
        super().__init__(compressor, gamma, n, d, init)
        self.check_options(momentum=momentum)
        self.momentum = float(momentum)

    def init_workers(self, rngs: list[np.random.Generator]) -> SGDMWorkers:
        m = len(rngs)
        return SGDMWorkers(rngs=list(rngs), g=np.zeros((m, self.d)), v=np.zeros((m, self.d)))

    def worker_step(self, state: SGDMWorkers, grads: np.ndarray, t: int) -> Messages:
        if t == 0:
            msgs = self._initial(state, grads)
            state.v[:] = state.g  # v_i^0 = g_i^0
            return msgs
        eta = self.momentum
        state.v[:] = (1.0 - eta) * state.v + eta * grads
        msgs = self.compress(state.v - state.g, state)
        add_messages(state.g, msgs)
        return msgs
