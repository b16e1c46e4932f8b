"""A grid of run configurations: any ``run`` option as an axis, one predictable log name per configuration.

An axis is a `RunConfig` option (``dataset``, ``algorithm``, ``compressor``, ``k``, ``seed``, ``x0``, ``lam``,
``workers``, ``momentum``, ...) with a list of values; the grid is their product. Options a method does not use
(``k`` for GD, ``momentum`` for EF21, ``init`` for EF, ...) are dropped from its configurations, so each run
appears once. ``rounds``, ``tol`` and ``log_every`` (and the bits budget, which sets the rounds) are the same
for every configuration.
"""

from __future__ import annotations

import itertools
import json
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from ef21_mpi.analysis.results import BITS_PER_COORDINATE, method_facts
from ef21_mpi.core.datasets import REGISTRY
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import RUNTIME_FIELDS, RunConfig, validate_values

#: Shared by every configuration of a grid (the budget), not axes.
SCALARS = ("rounds", "tol", "log_every")
#: Every other option of ``run`` is an axis, in the order of `RunConfig` (the order of the name's parts).
AXES = tuple(f.name for f in fields(RunConfig) if f.name not in RUNTIME_FIELDS and f.name not in SCALARS + ("out",))
#: Plural spellings of axes (the flags and grid keys of earlier versions, and what reads naturally).
ALIASES = {"datasets": "dataset", "algorithms": "algorithm", "multipliers": "stepsize_multiplier",
           "multiplier": "stepsize_multiplier", "compressors": "compressor", "seeds": "seed", "lams": "lam",
           "problems": "problem", "inits": "init"}
#: Values an axis takes when the grid does not name it: the `run` defaults, except the paper's n = 20 workers.
DEFAULTS = {f.name: f.default for f in fields(RunConfig) if f.name in AXES and not callable(f.default_factory)}
DEFAULTS.update(workers=20, compressor_args={})
K_COMPRESSORS = ("top-k", "rand-k", "rand-k-unbiased")  # the registry's compressors with a k
NO_K_COMPRESSORS = ("identity", "natural", "dithering")
#: The name's first parts; every other option appears as ``flag-value`` when it differs from its default or varies.
HEAD = ("dataset", "algorithm", "compressor", "k", "stepsize_multiplier", "stepsize")


def axis_name(key: str) -> str:
    """The option an axis key names: ``seeds``, ``seed`` and ``--seed`` all name ``seed``."""
    key = key.lstrip("-").replace("-", "_")
    return ALIASES.get(key, key)


def _hints() -> dict:
    return typing.get_type_hints(RunConfig)


def axis_kinds(name: str) -> tuple[type, ...]:
    """The plain types an axis's values may have (``float`` also takes ints), from `RunConfig`'s annotation."""
    hint = _hints()[name]
    return tuple(k for k in (typing.get_args(hint) or (hint,)) if k in (int, float, str, bool, dict))


def parse_value(name: str, text: str):
    """One value of axis ``name`` from the command line (``none`` gives None where the option allows it)."""
    kinds = axis_kinds(name)
    flag = "--" + name.replace("_", "-")
    if text.lower() == "none" and type(None) in typing.get_args(_hints()[name]):
        return None
    if bool in kinds:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise InputError(f"sweep {flag} {text!r}: expected true or false")
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(text)
            except ValueError:
                raise InputError(f"sweep {flag} {text!r}: expected {'an integer' if kind is int else 'a number'}") from None
    return text


# -- one configuration ------------------------------------------------------------------------------------


def _number_text(value: float) -> str:
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, dict):
        return "-".join(f"{k}-{_value_text(v)}" for k, v in sorted(value.items())) or "none"
    if isinstance(value, str) and (value.endswith(".npy") or "/" in value):
        return Path(value).name.split(".")[0]
    return str(value).replace(":", "-").replace("/", "-")


def _compressor_part(compressor: str, k) -> str:
    if compressor in K_COMPRESSORS and k is not None:
        return compressor.replace("-k", f"-{k}", 1)  # top-4, rand-4, rand-4-unbiased
    return _value_text(compressor) + (f"-{k}" if k is not None and compressor not in NO_K_COMPRESSORS else "")


def log_name(options: dict, varied: Iterable[str] = ()) -> str:
    """The predictable file name of a run: ``a9a__ef21__top-1__x4.h5`` plus ``__seed-3`` (and so on) for every
    other option that differs from its default or is varied by the grid it belongs to.

    ``options`` are `RunConfig` option names (absent ones take their defaults); options the method does not use
    should be left out (`applicable` does that).
    """
    varied = set(varied)
    dataset = str(options["dataset"])
    parts = [dataset if dataset in REGISTRY else Path(dataset).name.split(".")[0]]
    algorithm = options.get("algorithm", DEFAULTS["algorithm"])
    parts.append(_value_text(algorithm))
    if method_facts(algorithm).compresses and "compressor" in options:
        parts.append(_compressor_part(options["compressor"], options.get("k")))
    if options.get("stepsize") is not None:
        parts.append(f"gamma-{_number_text(float(options['stepsize']))}")
    else:
        parts.append(f"x{_number_text(float(options.get('stepsize_multiplier', 1.0)))}")
    for name in AXES:
        if name in HEAD or name not in options:
            continue
        value = options[name]
        if name in varied or value != DEFAULTS.get(name):
            parts.append(f"{name.replace('_', '-')}-{_value_text(value)}")
    return "__".join(parts) + ".h5"


def applicable(options: dict) -> dict:
    """``options`` without those the method (or the compressor) does not use, so that each run appears once."""
    cls = method_facts(options["algorithm"])
    out = dict(options)
    compressor = out.get("compressor")
    if not cls.compresses:
        for name in ("compressor", "k", "compressor_args"):
            out.pop(name, None)
    elif compressor in NO_K_COMPRESSORS:
        out.pop("k", None)
    for name in ("participation", "down_compressor", "down_k", "momentum"):
        if name not in getattr(cls, "options", (name,)):
            out.pop(name, None)
    if out.get("down_compressor") in NO_K_COMPRESSORS + (None,):
        out.pop("down_k", None)
    if "dithering" not in (out.get("compressor"), out.get("down_compressor")):
        out.pop("levels", None)
    if not getattr(cls, "minibatch", True):
        out.pop("batch_size", None)
    if not getattr(cls, "initialises", True):
        out.pop("init", None)
    return out


@dataclass(frozen=True)
class Config:
    """One run of the grid: its options (those its method uses), the shared budget, and the grid's varied axes."""

    items: tuple[tuple[str, object], ...]
    rounds: int
    tol: float = 0.0
    log_every: int = 1
    varied: frozenset = frozenset()

    @classmethod
    def of(cls, rounds: int, *, tol: float = 0.0, log_every: int = 1, varied: Iterable[str] = (), **options) -> Config:
        """A configuration from option names; options the method does not use are dropped, defaults filled in."""
        full = {**DEFAULTS, **options}
        full = applicable(full)
        items = tuple((name, _freeze(full[name])) for name in AXES if name in full)
        return cls(items, rounds, float(tol), log_every, frozenset(varied))

    @property
    def options(self) -> dict:
        return {name: _thaw(value) for name, value in self.items}

    def get(self, name: str, default=None):
        return self.options.get(name, default)

    dataset = property(lambda self: self.get("dataset"))
    algorithm = property(lambda self: self.get("algorithm"))
    @property
    def k(self) -> int | None:
        """k of Top-k / Rand-k; for a method that sends dense vectors (GD), the data set's d."""
        if method_facts(self.algorithm).compresses:
            return self.get("k")
        return dimension(self.dataset)

    multiplier = property(lambda self: self.get("stepsize_multiplier"))
    workers = property(lambda self: self.get("workers"))
    seed = property(lambda self: self.get("seed"))

    @property
    def name(self) -> str:
        return log_name(self.options, self.varied)

    def run_args(self, out: Path, data_dir: str | None) -> list[str]:
        """Arguments of ``ef21-mpi run`` (after ``run``), without the backend."""
        args = ["--dataset", str(self.dataset)]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if name == "dataset" or value is None:
                continue
            if name == "compressor_args":
                for key, v in value.items():
                    args += ["--compressor-arg", f"{key}={_value_text(v) if isinstance(v, bool) else v}"]
            elif isinstance(value, bool):
                args += [flag] if value else []
            else:
                args += [flag, repr(float(value)) if isinstance(value, float) else str(value)]
        args += ["--rounds", str(self.rounds), "--tol", repr(float(self.tol)), "--log-every", str(self.log_every),
                 "--out", str(out), "--overwrite", "--quiet"]
        if data_dir:
            args += ["--data-dir", str(data_dir)]
        return args

    def run_config(self, out: Path, data_dir: str | None = None) -> RunConfig:
        """The run this configuration is, as ``ef21-mpi run`` reads `run_args`."""
        return RunConfig(**self.options, out=str(out), rounds=self.rounds, tol=float(self.tol),
                         log_every=self.log_every, data_dir=data_dir, overwrite=True, quiet=True)

    def matches(self, attrs: dict) -> bool:
        """Is an existing log's stored configuration exactly this one (its numbers, whatever the name shows)?"""
        try:
            stored = json.loads(attrs.get("config", "null"))
        except (TypeError, ValueError):
            return False
        return stored == json.loads(json.dumps(self.run_config(Path("x")).numbers(), sort_keys=True))


def _normal(name: str, value):
    """An integer given for a float option becomes a float, so that 1 and 1.0 are one value with one name."""
    kinds = axis_kinds(name)
    if isinstance(value, int) and not isinstance(value, bool) and float in kinds and int not in kinds:
        return float(value)
    return value


def _freeze(value):
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def _thaw(value):
    return dict(value) if isinstance(value, tuple) else value


# -- the grid ----------------------------------------------------------------------------------------------


def dimension(dataset: str) -> int | None:
    info = REGISTRY.get(dataset)
    return info.d if info else None


def _rounds(rounds: int | None, bits_budget: float | None, options: dict) -> int:
    """``floor(B / (32 k))`` messages (one of them in round 0 for a method whose round 0 is a step), capped."""
    if bits_budget is None:
        if rounds is None:
            raise InputError("give --rounds, --bits-budget, or both")
        return rounds
    cls = method_facts(options["algorithm"])
    k = options.get("k") if cls.compresses else dimension(options["dataset"])
    if k is None:
        what = "a compressor with k (top-k, rand-k)" if cls.compresses else "the data set's d (registered data sets)"
        raise InputError(f"--bits-budget needs {what}; give --rounds for {log_name(options)}")
    messages = math.floor(bits_budget / (BITS_PER_COORDINATE * k))
    by_budget = max(1, messages if cls.initialises else messages - 1)
    return by_budget if rounds is None else min(rounds, by_budget)


def expand(axes: dict, rounds: int | None = None, *, tol: float = 0.0, bits_budget: float | None = None,
           log_every: int = 1) -> list[Config]:
    """Every combination of the axes' values (the first axis outermost), each configuration once.

    ``axes`` maps option names (or their plurals) to a list of values or one value. ``bits_budget`` caps each
    configuration's rounds so that its messages fit in ``bits_budget`` paper bits/n; ``rounds`` caps further.
    A name part appears for every axis with more than one value.
    """
    named = {}
    for key, values in axes.items():
        name = axis_name(key)
        if name not in AXES:
            raise InputError(f"{key!r} is not a run option that can vary; expected one of {', '.join(AXES)}")
        values = list(values) if isinstance(values, list | tuple | range) else [values]
        named[name] = list(dict.fromkeys(_freeze(_normal(name, v)) for v in values))
    varied = {name for name, values in named.items() if len(values) > 1}
    configs: dict[Config, None] = {}
    for combo in itertools.product(*named.values()):
        options = applicable({**DEFAULTS, **{n: _thaw(v) for n, v in zip(named, combo, strict=True)}})
        n_rounds = _rounds(rounds, bits_budget, options)
        configs[Config.of(n_rounds, tol=tol, log_every=log_every, varied=varied & set(options), **options)] = None
    return list(configs)


def expand_grid(datasets: list[str], algorithms: list[str], multipliers: list[float], ks: list[int],
                rounds: int | None = None, *, tol: float = 0.0, bits_budget: float | None = None,
                log_every: int = 1, workers: int = 20, **axes) -> list[Config]:
    """`expand` with the four classic axes first (data set, algorithm, k, multiplier, in that nesting order)."""
    grid = {"dataset": datasets, "algorithm": algorithms, "k": ks, "stepsize_multiplier": [float(m) for m in multipliers],
            "workers": workers, **{axis_name(key): value for key, value in axes.items()}}
    return expand(grid, rounds, tol=tol, bits_budget=bits_budget, log_every=log_every)


# -- checking a grid ---------------------------------------------------------------------------------------

_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object"}


def _label(name: str) -> str:
    return "stepsize multiplier" if name == "stepsize_multiplier" else name.replace("_", " ")


def _check_axis_values(name: str, values: list) -> None:
    kinds = axis_kinds(name)
    nullable = type(None) in typing.get_args(_hints()[name])
    for value in values:
        if value is None and nullable:
            continue
        ok = any(isinstance(value, kind) and (kind is bool or not isinstance(value, bool)) for kind in kinds)
        ok = ok or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise InputError(f"{_label(name)} {value!r} must be {' or '.join(_KIND_WORDS[k] for k in kinds)}")


def split(grid: dict) -> tuple[dict, dict]:
    """A flat grid (axes and budget keys together) as ``(axes, budget)``; the budget's defaults filled in."""
    budget = {"rounds": None, "tol": 0.0, "bits_budget": None, "log_every": 1}
    axes = {}
    for key, value in grid.items():
        if key.replace("-", "_") in budget:
            budget[key.replace("-", "_")] = value
        else:
            axes[key] = value
    return axes, budget


def configs_of(grid: dict) -> list[Config]:
    """The configurations of a flat grid (checked first with `validate_grid`)."""
    axes, budget = split(grid)
    return expand(axes, budget["rounds"], tol=float(budget["tol"]), bits_budget=budget["bits_budget"],
                  log_every=budget["log_every"])


def validate_grid(grid: dict) -> None:
    """Check a grid (axes and budget keys in one dict) once, before anything runs.

    What only a grid has (its data sets, value types from JSON, the bits budget) is checked here; every
    configuration is then checked as the run it will be, by `runtime.config.validate_values`, so names and
    ranges are checked in one place for ``run`` and ``sweep`` alike.
    """
    axes, budget = split(grid)
    rounds, tol, bits_budget, log_every = (budget[k] for k in ("rounds", "tol", "bits_budget", "log_every"))
    axes = {axis_name(key): (list(v) if isinstance(v, list | tuple | range) else [v]) for key, v in axes.items()}
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise InputError(f"unknown grid key(s) {', '.join(unknown)}; expected any of {', '.join(AXES + SCALARS)}, "
                         "bits_budget")
    if not axes.get("dataset"):
        raise InputError("no data sets: give --datasets (or 'datasets' in --grid)")
    for dataset in axes["dataset"]:
        if not isinstance(dataset, str) or not dataset:
            raise InputError(f"data set {dataset!r} must be a non-empty string (a registered name or a file)")
        if dataset not in REGISTRY and not Path(dataset).is_file():
            raise InputError(f"data set {dataset!r} is neither a registered name ({', '.join(REGISTRY)}) nor a file")
    for name, values in axes.items():
        if not values:
            raise InputError(f"{_label(name)}: the grid gives no values")
        _check_axis_values(name, values)
    for key, value, kind in (("rounds", rounds, int), ("log_every", log_every, int), ("tol", tol, float),
                             ("bits_budget", bits_budget, float)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int if kind is int else int | float)):
            raise InputError(f"{key} must be {_KIND_WORDS[kind]}, got {value!r}")
    if rounds is not None and rounds < 0:
        raise InputError(f"--rounds must be non-negative, got {rounds}")
    if rounds is None and bits_budget is None:
        raise InputError("give --rounds N (or --bits-budget B, or 'rounds' in --grid)")
    if bits_budget is not None and not (math.isfinite(bits_budget) and bits_budget >= 0):
        raise InputError(f"bits_budget must be a non-negative number, got {bits_budget!r}")
    for config in expand(axes, 1 if rounds is None else rounds, tol=float(tol), log_every=log_every):
        d = dimension(config.dataset)
        if config.get("k") is not None and d is not None and config.get("k") > d:
            raise InputError(f"k = {config.get('k')} exceeds d = {d} of {config.dataset}")
        try:
            validate_values(config.run_config(Path(config.name)))
        except InputError as err:
            raise InputError(f"sweep configuration {config.name}: {err}") from None
    check_names(expand(axes, 1))
    if bits_budget is not None:
        expand(axes, rounds, tol=float(tol), bits_budget=bits_budget, log_every=log_every)


def check_names(configs: list[Config]) -> None:
    """Every configuration must get its own log: refuse a grid where two of them would share a file name."""
    seen: dict[str, Config] = {}
    for config in configs:
        other = seen.setdefault(config.name, config)
        if other != config:
            differ = [n for n in AXES if other.get(n) != config.get(n)]
            raise InputError(f"two configurations would share the log {config.name}: they differ in "
                             + ", ".join(f"{n} ({other.get(n)!r} and {config.get(n)!r})" for n in differ)
                             + "; rename a data file or sweep them in separate --out-dir folders")
