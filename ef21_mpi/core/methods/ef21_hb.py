"""EF21-HB, heavy-ball momentum on the master (EF21 with Bells & Whistles; SPEC 8).

``v^0 = g^0``; round t: ``x^{t+1} = x^t - gamma v^t``, the workers as EF21, then ``v^{t+1} = eta v^t + g^{t+1}``.
The wire is EF21's. ``eta = 0`` is EF21.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ef21_mpi.core.methods.base import Master, Messages
from ef21_mpi.core.methods.paper import EF21


@dataclass
class HBMaster(Master):
    v: np.ndarray = None  # the heavy-ball direction


class EF21HB(EF21):
    name, display_name, color = "ef21-hb", "EF21-HB", "C9"
    theorems = ()
    options = required = ("momentum",)

    @classmethod
    def check_options(cls, momentum: float | None = None, **_) -> None:
        if momentum is not None and not (0 <= momentum < 1):
            raise ValueError(f"--momentum {momentum} is out of range for {cls.name}: expected 0 <= eta < 1")

    def __init__(self, compressor, gamma: float, n: int, d: int, init: str = "full", momentum: float = 0.0):
        super().__init__(compressor, gamma, n, d, init)
        self.check_options(momentum=momentum)
        self.momentum = float(momentum)

    def init_master(self, x0: np.ndarray) -> HBMaster:
        base = super().init_master(x0)
        return HBMaster(x=base.x, g=base.g, v=np.zeros(self.d))

    def next_x(self, state: HBMaster) -> np.ndarray:
        state.x -= self.step_size() * state.v
        return state.x

    def master_step(self, state: HBMaster, msgs: Messages, t: int) -> None:
        super().master_step(state, msgs, t)  # g^{t+1} = g^t + mean c_i
        state.v = state.g.copy() if t == 0 else self.momentum * state.v + state.g
