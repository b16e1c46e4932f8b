"""Plug-ins: the one place where a ``--compressor`` or ``--algorithm`` value becomes what a run uses.

A value is a registry name (``top-k``, ``ef21``), a ``package.module:ClassName`` spec naming a class
importable on every rank, or (from Python) the class or, for a compressor, the instance itself.

A compressor is any object with ``compress(v, rng) -> (indices, values)``, ``n_values`` (values per
message) and its constant: ``alpha`` (contractive, ``||C(v) - v||^2 <= (1 - alpha) ||v||^2``) or ``omega``
(unbiased). ``compress_group`` is optional (the methods fall back to one ``compress`` per worker row), and
``dense = True`` says its messages carry no indices (``indices`` is ``None``). A plug-in compressor class
is constructed with the ``--compressor-arg`` values, plus ``d`` (the data's dimension) and ``k`` (``--k``)
when its constructor takes parameters of those names and they were not given.

A method is a `Method` subclass; the run constructs it as every method: ``cls(compressor, gamma, n, d, init)``.
Errors are plain ValueErrors naming what is wrong (a wrong type included: the door catches ValueErrors and
words them for the user).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import numpy as np

from ef21_mpi.core.compressors import COMPRESSORS, make_compressor
from ef21_mpi.core.methods import METHODS, Method
from ef21_mpi.core.methods.base import sends_indices

SPEC_HINT = "package.module:ClassName"
ARG_TYPES = (bool, int, float, str, type(None))  # what a --compressor-arg value may be (it goes into the log as JSON)


def is_spec(value) -> bool:
    """A ``package.module:ClassName`` string (anything else that is a string is a registry name)."""
    return isinstance(value, str) and ":" in value


def spec_of(value) -> str:
    """The string that names ``value`` in a log: the name or spec itself, or ``module:QualName`` of a class/instance."""
    if isinstance(value, str):
        return value
    cls = value if isinstance(value, type) else type(value)
    return f"{cls.__module__}:{cls.__qualname__}"


def args_of(value) -> dict:
    """The scalar constructor arguments of a compressor instance that is a dataclass (recorded in the log, enough
    to rebuild it from its spec when they are all scalars), else ``{}``."""
    if isinstance(value, type) or not dataclasses.is_dataclass(value):
        return {}
    found = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
    found = {k: v.item() if isinstance(v, np.generic) else v for k, v in found.items()}
    return {k: v for k, v in found.items() if isinstance(v, ARG_TYPES)}


def load_class(spec: str) -> type:
    """Import ``package.module:ClassName`` (a dotted name after the colon reaches a nested class)."""
    module_name, _, qualname = spec.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"{spec!r}: expected {SPEC_HINT}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ValueError(f"{spec!r}: cannot import module {err.name or module_name!r}; a plug-in's module must be "
                         "importable on every rank (install it, or put its folder on PYTHONPATH)") from None
    except Exception as err:  # noqa: BLE001 -- whatever the user's module raises, one line for the door
        raise ValueError(f"{spec!r}: importing {module_name} raised {type(err).__name__}: {err}".replace("\n", " ")) \
            from None
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ValueError(f"{spec!r}: module {module_name} has no class {qualname}")
    if not isinstance(found, type):
        raise ValueError(f"{spec!r}: {qualname} in {module_name} is not a class")  # noqa: TRY004 -- see below
    return found


# --- methods -----------------------------------------------------------------------------------------------


def resolve_method(value) -> type[Method]:
    """The method class of a registry name, a spec or a `Method` subclass; ValueError otherwise."""
    if isinstance(value, str) and not is_spec(value):
        if value not in METHODS:
            raise ValueError(f"{value!r} is not known; expected one of {', '.join(METHODS)}, or {SPEC_HINT}")
        return METHODS[value]
    if isinstance(value, Method):
        raise ValueError(f"{spec_of(value)}: pass the Method subclass, not an instance (the run constructs it "  # noqa: TRY004
                         "with its compressor, gamma, n, d and init)")
    cls = load_class(value) if isinstance(value, str) else value
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"{spec_of(value)} is not a subclass of ef21_mpi.core.methods.Method")  # noqa: TRY004
    if cls.worker_step is Method.worker_step:
        raise ValueError(f"{spec_of(value)} lacks worker_step (a Method subclass must define its worker-side update)")
    return cls


# --- compressors -------------------------------------------------------------------------------------------


def _missing_attributes(obj) -> list[str]:
    missing = [name for name in ("compress", "n_values") if not hasattr(obj, name)]
    if not (hasattr(obj, "alpha") or hasattr(obj, "omega")):
        missing.append("alpha (or omega)")
    return missing


def check_compressor_spec(value, args: dict) -> None:
    """What can be checked before the data is read: the name is known or the class imports and has ``compress``."""
    for name, arg in args.items():
        if not isinstance(arg, ARG_TYPES):
            raise ValueError(f"argument {name}={arg!r} is not a number, bool or string")  # noqa: TRY004
    if isinstance(value, str) and not is_spec(value):
        if value not in COMPRESSORS:
            raise ValueError(f"{value!r} is not known; expected one of {', '.join(COMPRESSORS)}, or {SPEC_HINT}")
        if args:
            raise ValueError(f"{value} takes no --compressor-arg ({', '.join(args)}); they are for plug-in classes")
        return
    if not isinstance(value, str | type) and args:
        raise ValueError(f"{spec_of(value)} is an instance; --compressor-arg ({', '.join(args)}) only applies to a class")
    cls = load_class(value) if isinstance(value, str) else value
    missing = [name for name in ("compress",) if not callable(getattr(cls, name, None))]
    if missing:
        raise ValueError(f"{spec_of(value)} lacks {', '.join(missing)} (a compressor needs compress(v, rng), "
                         "n_values and alpha or omega)")


def _construct(cls: type, args: dict, k: int | None, d: int):
    kwargs = dict(args)
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    for name, value in (("d", d), ("k", k)):
        if name in params and name not in kwargs and value is not None:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except Exception as err:  # noqa: BLE001 -- the user's constructor: any error is a bad argument
        shown = ", ".join(f"{key}={val!r}" for key, val in kwargs.items())
        raise ValueError(f"{spec_of(cls)}({shown}) raised {type(err).__name__}: {err}".replace("\n", " ")) from None


def resolve_compressor(value, args: dict, k: int | None, d: int, levels: int | None = None):
    """The compressor a run uses, built and checked against the data's dimension ``d``; ValueError otherwise."""
    check_compressor_spec(value, args)
    if isinstance(value, str) and not is_spec(value):
        return make_compressor(value, k, d, levels)
    if isinstance(value, str | type):
        compressor = _construct(load_class(value) if isinstance(value, str) else value, args, k, d)
    else:
        compressor = value
    check_compressor(compressor, d)
    return compressor


def check_compressor(compressor, d: int) -> None:
    """Attributes, constants and the shape of one message (on a fixed test vector, with its own generator)."""
    name = spec_of(compressor)
    missing = _missing_attributes(compressor)
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)} (a compressor needs compress(v, rng), n_values and "
                         "alpha or omega)")
    n_values = compressor.n_values
    if isinstance(n_values, bool) or not isinstance(n_values, int | np.integer) or not 0 <= n_values <= d:
        raise ValueError(f"{name}: n_values must be an integer in 0..d = {d}, got {n_values!r}")
    alpha = getattr(compressor, "alpha", None)
    if alpha is not None and not (isinstance(alpha, float | int) and 0 < alpha <= 1):
        raise ValueError(f"{name}: alpha must be in (0, 1], got {alpha!r}")
    omega = getattr(compressor, "omega", None)
    if omega is not None and not (isinstance(omega, float | int) and omega >= 0):
        raise ValueError(f"{name}: omega must be a non-negative number, got {omega!r}")
    v = np.random.default_rng(20211).standard_normal(d)
    try:
        indices, values = compressor.compress(v, np.random.default_rng(0))
    except Exception as err:  # noqa: BLE001 -- the user's code, tried once at start-up
        raise ValueError(f"{name}: compress(v, rng) raised {type(err).__name__}: {err}".replace("\n", " ")) from None
    dense = not sends_indices(compressor)
    if np.shape(values) != (n_values,):
        raise ValueError(f"{name}: compress(v, rng) returned values of shape {np.shape(values)}, expected "
                         f"({n_values},) (n_values)")
    if dense and (indices is not None or n_values != d):
        raise ValueError(f"{name} says dense = True: compress must return (None, d values)")
    if not dense and (indices is None or np.shape(indices) != (n_values,)):
        got = "None" if indices is None else f"shape {np.shape(indices)}"
        raise ValueError(f"{name}: compress(v, rng) returned indices {got}, expected ({n_values},) "
                         "(set dense = True for a message without indices)")


def constants(compressor) -> tuple[float | None, float | None]:
    """``(alpha, omega)`` of a compressor, ``None`` where it states none."""
    alpha, omega = getattr(compressor, "alpha", None), getattr(compressor, "omega", None)
    return (None if alpha is None else float(alpha)), (None if omega is None else float(omega))


def parse_arg(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` with VALUE an int, a float, true/false, none or else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise ValueError(f"{text!r}: expected NAME=VALUE with NAME a Python identifier")
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    if lowered in ("none", "null"):
        return name, None
    for kind in (int, float):
        try:
            return name, kind(raw)
        except ValueError:
            pass
    return name, raw
