"""EF21-PP, partial participation (EF21 with Bells & Whistles; SPEC 8).

Round t >= 1: ``x^{t+1} = x^t - gamma g^t``; the master draws ``S^t``, ``round(p n)`` workers uniformly without
replacement from its own stream; each ``i in S^t`` sends ``c_i = C(grad_i(x^{t+1}) - g_i^t)`` and sets
``g_i += c_i``; the others send nothing and keep ``g_i``; ``g^{t+1} = g^t + (1/n) sum_{i in S^t} c_i``.
Round 0 is EF21's initialisation, every worker taking part. The broadcast is ``x`` plus, when ``p n < n``,
the participation mask packed one bit per worker (counted in ``bits_down``). ``p = 1`` is EF21, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ef21_mpi.core.compressors import INDEX_DTYPE, VALUE_DTYPE
from ef21_mpi.core.methods.base import EF21Workers, Master, Messages, add_messages, sum_messages
from ef21_mpi.core.methods.paper import EF21


@dataclass
class PPWorkers(EF21Workers):
    active: np.ndarray = None  # (m,) bool: the group's workers that take part in the current round


@dataclass
class PPMaster(Master):
    rng: np.random.Generator = None  # the master's sampler of S^t
    active: np.ndarray = field(default=None)  # (n,) bool: S^t of the current round


def rows_of(msgs: Messages, rows: np.ndarray) -> Messages:
    """The messages of some rows only (a boolean or integer row selection)."""
    pick = (lambda a: None if a is None else a[rows])
    return Messages(pick(msgs.indices), msgs.values[rows], pick(msgs.flags), pick(msgs.payload))


class EF21PP(EF21):
    name, display_name, color = "ef21-pp", "EF21-PP", "C6"
    theorems = ()
    options, required = ("participation", "master_seed"), ("participation",)

    def __init__(self, compressor, gamma: float, n: int, d: int, init: str = "full", participation: float = 1.0,
                 master_seed=None):
        super().__init__(compressor, gamma, n, d, init)
        self.check_options(participation=participation)
        self.n_active = round(participation * n)
        if self.n_active < 1:
            raise ValueError(f"participation p = {participation} selects round(p n) = 0 of the {n} workers; "
                             f"expected p >= {0.5 / n:.3g}")
        self.participation, self.master_seed = participation, master_seed

    @classmethod
    def check_options(cls, participation: float | None = None, **_) -> None:
        if participation is not None and not 0 < participation <= 1:
            raise ValueError(f"--participation {participation} is out of range: expected 0 < p <= 1")

    @property
    def partial(self) -> bool:
        return self.n_active < self.n

    # -- master ------------------------------------------------------------------------------------
    def init_master(self, x0: np.ndarray) -> PPMaster:
        base = super().init_master(x0)
        return PPMaster(x=base.x, g=base.g, rng=np.random.default_rng(self.master_seed),
                        active=np.ones(self.n, dtype=bool))

    def next_x(self, state: PPMaster) -> np.ndarray:
        x = super().next_x(state)
        if self.partial:  # S^t, drawn once per round from the master's stream
            state.active = np.zeros(self.n, dtype=bool)
            state.active[state.rng.choice(self.n, size=self.n_active, replace=False)] = True
        return x

    def master_step(self, state: PPMaster, msgs: Messages, t: int) -> None:
        if t == 0 or not self.partial:
            return super().master_step(state, msgs, t)
        state.g += sum_messages(rows_of(msgs, state.active), self.d) / self.n  # absent workers' slots are ignored

    def senders(self, master: PPMaster, t: int) -> np.ndarray | None:
        return master.active.copy() if self.partial and t > 0 else None

    # -- downlink: x, then the mask ------------------------------------------------------------------
    def _mask_nbytes(self, t: int) -> int:
        return (self.n + 7) // 8 if self.partial and t > 0 else 0

    def downlink_nbytes(self, t: int) -> int:
        return 8 * self.d + self._mask_nbytes(t)

    def downlink(self, master: PPMaster, t: int) -> np.ndarray:
        if not self._mask_nbytes(t):
            return master.x
        return np.concatenate([master.x.view(np.uint8), np.packbits(master.active)])

    def receive(self, state: PPWorkers, down: np.ndarray, t: int, rows: range) -> np.ndarray:
        x = np.array(down[:8 * self.d], copy=True).view(VALUE_DTYPE)
        if self._mask_nbytes(t):
            state.active[:] = np.unpackbits(down[8 * self.d:], count=self.n).astype(bool)[rows.start:rows.stop]
        else:
            state.active[:] = True
        return x

    # -- workers ------------------------------------------------------------------------------------
    def init_workers(self, rngs: list[np.random.Generator]) -> PPWorkers:
        m = len(rngs)
        return PPWorkers(rngs=list(rngs), g=np.zeros((m, self.d)), active=np.ones(m, dtype=bool))

    def worker_step(self, state: PPWorkers, grads: np.ndarray, t: int) -> Messages:
        if t == 0 or state.active.all():
            return super().worker_step(state, grads, t)
        here = np.flatnonzero(state.active)
        sent = self.compress(grads[here] - state.g[here], state, [state.rngs[j] for j in here])
        g_here = state.g[here]
        add_messages(g_here, sent)
        state.g[here] = g_here
        m, nv = len(grads), sent.values.shape[1]
        out = Messages(None if sent.indices is None else np.zeros((m, nv), dtype=INDEX_DTYPE), np.zeros((m, nv)),
                       None, None if sent.payload is None else np.zeros((m, sent.payload.shape[1]), dtype=np.uint8))
        for name in ("indices", "values", "payload"):  # the absent workers' rows stay zero: they send nothing
            if getattr(out, name) is not None:
                getattr(out, name)[here] = getattr(sent, name)
        return out
