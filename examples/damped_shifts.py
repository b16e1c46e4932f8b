"""A plug-in method: EF21 whose shifts move by a damped step (DIANA's shift update, Mishchenko et al. 2019).

Worker i keeps a shift ``h_i`` and sends ``c_i = C(grad_i(x^{t+1}) - h_i^t)``; the master's direction is
DIANA's ``g^{t+1} = h^t + mean_i c_i`` and the shifts move by ``eta``:
``h_i^{t+1} = h_i^t + eta c_i``, ``h^{t+1} = h^t + eta mean_i c_i`` (so ``h = mean_i h_i`` throughout).
With ``eta = 1``, ``h_i`` is EF21's ``g_i`` and ``g = h``: the method is EF21, bit for bit. Round 0 sends
``h_i^0 = grad_i(x^0)`` dense (``--init full``) or nothing (``--init zero``). The stepsize is EF21's rule
(``gamma_theory`` from the compressor's alpha); no theorem here covers ``eta < 1`` with a biased compressor.

Use it with ``--algorithm damped_shifts:DampedShifts`` (module importable on every rank: PYTHONPATH=examples);
another ``eta`` is a subclass with another class attribute. Its own worker and master states are
dataclasses with a leading worker axis, which is all checkpoints need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ef21_mpi.core.methods import Master, Messages, MessageSpec, Method, Workers, add_messages, sum_messages


@dataclass
class ShiftWorkers(Workers):
    h: np.ndarray  # (m, d): the workers' shifts h_i


@dataclass
class ShiftMaster(Master):
    h: np.ndarray = field(default=None)  # (d,): the mean shift


class DampedShifts(Method):
    name, display_name, color = "damped-shifts", "EF21, damped shifts (eta 1/2)", "C6"
    initialises, has_g = True, True
    eta = 0.5

    def __init__(self, compressor, gamma, n, d, init="full"):
        if init == "compressed":
            raise ValueError("damped_shifts:DampedShifts supports --init full or zero")
        super().__init__(compressor, gamma, n, d, init)

    def message_spec(self, t: int) -> MessageSpec:
        if t > 0:
            return self.compressed_spec()
        return MessageSpec(self.d, False) if self.init == "full" else MessageSpec(0, True)

    def init_workers(self, rngs) -> ShiftWorkers:
        return ShiftWorkers(rngs=list(rngs), h=np.zeros((len(rngs), self.d)))

    def worker_step(self, state: ShiftWorkers, grads: np.ndarray, t: int) -> Messages:
        if t == 0:
            if self.init == "zero":
                return Messages(np.empty((len(grads), 0), dtype=np.int32), np.empty((len(grads), 0)))
            state.h[:] = grads
            return Messages(None, state.h.copy())
        msgs = self.compress(grads - state.h, state)  # c_i = C(grad_i - h_i)
        add_messages(state.h, Messages(msgs.indices, self.eta * msgs.values))  # h_i += eta c_i
        return msgs

    def distortion(self, state: ShiftWorkers, grads: np.ndarray) -> np.ndarray:
        return np.array([float((h - g) @ (h - g)) for h, g in zip(state.h, grads)])

    def init_master(self, x0: np.ndarray) -> ShiftMaster:
        return ShiftMaster(x=np.array(x0, dtype=np.float64, copy=True), g=np.zeros(self.d), h=np.zeros(self.d))

    def master_step(self, state: ShiftMaster, msgs: Messages, t: int) -> None:
        mean = sum_messages(msgs, self.d) / self.n
        if t == 0:
            state.h, state.g = mean, mean.copy()
            return
        state.g = state.h + mean  # DIANA's direction
        state.h = state.h + self.eta * mean


class DampedShiftsEta1(DampedShifts):
    """``eta = 1``: EF21 itself (the tests check it bit for bit)."""

    display_name = "EF21, damped shifts (eta 1)"
    eta = 1.0
