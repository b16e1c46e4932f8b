"""The methods, as state updates for a group of workers and for the master; `METHODS` is the registry.

A new method is one module under ``core/methods/`` (a `Method` subclass stating its facts and its state
updates) plus one line here.
"""

from __future__ import annotations

from ef21_mpi.core.compressors import Compressor
from ef21_mpi.core.methods.base import (
    INITS,
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
)
from ef21_mpi.core.methods.ef21_bc import EF21BC
from ef21_mpi.core.methods.ef21_hb import EF21HB
from ef21_mpi.core.methods.ef21_pp import EF21PP
from ef21_mpi.core.methods.ef21_sgdm import EF21SGDM
from ef21_mpi.core.methods.paper import DCGD, EF, EF21, EF21SGD, GD, EF21Plus

__all__ = [
    "DCGD",
    "EF",
    "EF21",
    "EF21BC",
    "EF21HB",
    "EF21PP",
    "EF21SGD",
    "EF21SGDM",
    "GD",
    "INITS",
    "METHODS",
    "EF21Plus",
    "EF21PlusMaster",
    "EF21Workers",
    "EFWorkers",
    "Master",
    "MessageSpec",
    "Messages",
    "Method",
    "Workers",
    "add_messages",
    "make_method",
    "subtract_messages",
    "sum_messages",
]

#: The registry: command-line name -> method class.
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (EF21, EF21Plus, EF, GD, DCGD, EF21SGD, EF21PP, EF21BC,
                                                                EF21HB, EF21SGDM)}


def make_method(name: str | type[Method], compressor: Compressor, gamma: float, n: int, d: int, init: str = "full",
                **options) -> Method:
    """Build a method (a registered name, or a class: a plug-in); ``options`` may hold any settings, each method takes its own (`Method.options`).

    ValueError for an unknown name or an out-of-range option.
    """
    cls = name if isinstance(name, type) else METHODS.get(name)
    if cls is None:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {', '.join(METHODS)}")
    mine = {key: value for key, value in options.items() if key in cls.options and value is not None}
    return cls(compressor, gamma, n, d, init, **mine)
