"""EF21-BC, bidirectional compression (EF21 with Bells & Whistles; SPEC 8).

Workers run EF21 with the uplink compressor. The master keeps ``w = mean_i g_i`` (EF21's ``g``) and its own
direction ``g``, updated with a downlink compressor ``C_M``: ``g^{t+1} = g^t + C_M(w^{t+1} - g^t)``, and
steps ``x^{t+1} = x^t - gamma g^t``. It broadcasts ``C_M(w - g)``, never ``x``: every worker keeps copies of
``x`` and ``g``, applies the broadcast to its ``g`` and takes the same step (the same floating-point
operations as the master, so the copies stay equal bit for bit).

Broadcasts: round 0 ``x^0`` (dense); round 1 ``g^0 = w^0`` (dense, SPEC 8's start); round ``t >= 2`` the
message of ``C_M`` (its (index, value) pairs, or its packed bytes). An identity ``C_M`` sends ``w`` itself
and the copies take it as ``g`` (``g + (w - g) = w`` exactly): that is EF21, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ef21_mpi.core.compressors import (
    COMPRESSORS,
    INDEX_DTYPE,
    VALUE_DTYPE,
    Identity,
    as_contractive,
    make_compressor,
)
from ef21_mpi.core.methods.base import EF21Workers, Master, Messages, sum_messages
from ef21_mpi.core.methods.paper import EF21

FLOAT, INDEX = np.dtype(VALUE_DTYPE).itemsize, np.dtype(INDEX_DTYPE).itemsize


@dataclass
class BCWorkers(EF21Workers):
    x: np.ndarray = None  # (m, d): each worker's copy of x^t
    gm: np.ndarray = None  # (m, d): each worker's copy of the master's direction g^t


@dataclass
class BCMaster(Master):
    w: np.ndarray = None  # mean_i g_i
    rng: np.random.Generator = None  # C_M's randomness (rand-k), the master's own stream
    down: np.ndarray = None  # the bytes the next round broadcasts


class EF21BC(EF21):
    name, display_name, color = "ef21-bc", "EF21-BC", "C8"
    theorems = ()
    options, required = ("down_compressor", "down_k", "levels", "master_seed"), ("down_compressor",)

    @classmethod
    def check_options(cls, down_compressor: str | None = None, down_k: int | None = None, **_) -> None:
        if down_compressor is not None and down_compressor not in COMPRESSORS:
            raise ValueError(f"--down-compressor {down_compressor!r} is not known; expected one of "
                             f"{', '.join(COMPRESSORS)}")
        if down_k is not None and down_k < 1:
            raise ValueError(f"--down-k must be at least 1, got {down_k}")

    def __init__(self, compressor, gamma: float, n: int, d: int, init: str = "full", down_compressor: str = "top-k",
                 down_k: int | None = None, levels: int | None = None, master_seed=None):
        super().__init__(compressor, gamma, n, d, init)
        self.down_compressor = as_contractive(make_compressor(down_compressor, down_k, d, levels))
        self.master_seed = master_seed

    # -- the downlink message as bytes ------------------------------------------------------------
    @property
    def _packed(self) -> bool:
        return getattr(self.down_compressor, "packed_nbytes", None) is not None

    def _message_nbytes(self) -> int:
        c = self.down_compressor
        if self._packed:
            return c.packed_nbytes
        return c.n_values * (FLOAT + (INDEX if getattr(c, "sparse", False) else 0))

    def downlink_nbytes(self, t: int) -> int:
        return FLOAT * self.d if t < 2 else self._message_nbytes()

    def _apply(self, g: np.ndarray, down: np.ndarray) -> None:
        """``g += C_M(...)`` from the broadcast bytes (rows of ``g`` are copies; one row on the master)."""
        c = self.down_compressor
        if isinstance(c, Identity):
            g[...] = np.array(down, copy=True).view(VALUE_DTYPE)  # w itself: g + (w - g) = w
        elif self._packed:
            g += c.decode(np.array(down, copy=True).reshape(1, -1))[0]
        else:
            k = c.n_values
            values = np.array(down[:k * FLOAT], copy=True).view(VALUE_DTYPE)
            indices = np.array(down[k * FLOAT:], copy=True).view(INDEX_DTYPE)
            g[..., indices] += values

    # -- master ------------------------------------------------------------------------------------
    def init_master(self, x0: np.ndarray) -> BCMaster:
        base = super().init_master(x0)
        return BCMaster(x=base.x, g=base.g, w=np.zeros(self.d), rng=np.random.default_rng(self.master_seed),
                        down=np.zeros(0, dtype=np.uint8))

    def master_step(self, state: BCMaster, msgs: Messages, t: int) -> None:
        state.w += sum_messages(msgs, self.d) / self.n  # EF21's g: w^{t+1} = w^t + mean c_i
        if t == 0:
            state.g = state.w.copy()  # g^0 = mean g_i^0, broadcast dense in round 1
            state.down = state.g.view(np.uint8).copy()
            return
        c = self.down_compressor
        if isinstance(c, Identity):
            state.down = state.w.view(np.uint8).copy()
        elif self._packed:
            state.down = c.encode_group((state.w - state.g)[None, :], [state.rng])[0]
        else:
            indices, values = c.compress(state.w - state.g, state.rng)
            state.down = np.concatenate([np.ascontiguousarray(values, dtype=VALUE_DTYPE).view(np.uint8),
                                         np.ascontiguousarray(indices, dtype=INDEX_DTYPE).view(np.uint8)])
        self._apply(state.g, state.down)  # the very operation every worker's copy performs

    def downlink(self, state: BCMaster, t: int) -> np.ndarray:
        return state.x if t == 0 else state.down

    # -- workers ------------------------------------------------------------------------------------
    def init_workers(self, rngs: list[np.random.Generator]) -> BCWorkers:
        m = len(rngs)
        return BCWorkers(rngs=list(rngs), g=np.zeros((m, self.d)), x=np.zeros((m, self.d)), gm=np.zeros((m, self.d)))

    def receive(self, state: BCWorkers, down: np.ndarray, t: int, rows: range) -> np.ndarray:
        if t == 0:
            state.x[:] = np.array(down, copy=True).view(VALUE_DTYPE)
            return state.x[0].copy()
        if t == 1:
            state.gm[:] = np.array(down, copy=True).view(VALUE_DTYPE)
        else:
            self._apply(state.gm, down)
        state.x -= self.step_size() * state.gm  # x^t = x^{t-1} - gamma g^{t-1}, as the master's next_x
        return state.x[0].copy()
