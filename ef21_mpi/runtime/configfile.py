"""``ef21-mpi run --config run.toml``: run options from a TOML file, checked key by key with one-line errors.

The keys are the ``run`` flags without their dashes (``stepsize-multiplier`` or ``stepsize_multiplier``), the
values of the types the flags take; ``compressor-arg`` (or ``compressor_args``) is a table of a plug-in
compressor's arguments. Paths in the file are taken as on the command line (relative to the current folder).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable

from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import RunConfig, kind_words, option_kinds

ALIASES = {"compressor_arg": "compressor_args"}  # the flag's name for the field
FLAGS = {field: flag for flag, field in ALIASES.items()}
ARG_KINDS = (bool, int, float, str)  # a plug-in compressor's argument, as --compressor-arg NAME=VALUE gives it


def read_document(path: str, flag: str, kind: str, parse: Callable[[str], object], invalid: type[Exception]):
    """A JSON or TOML file given as ``flag``, parsed; a one-line `InputError` for a missing, unreadable or
    non-UTF-8 file and for text ``parse`` refuses with ``invalid``."""
    where = f"{flag} {path}"
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read())
    except FileNotFoundError:
        raise InputError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{where} is a folder; expected a {kind} file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except invalid as err:
        raise InputError(f"{where}: not valid {kind} ({' '.join(str(err).split())})") from None
    except (OSError, RecursionError) as err:
        raise InputError(f"{where}: cannot be read ({getattr(err, 'strerror', None) or err})") from None


def read_config_file(path: str | os.PathLike) -> dict:
    """The options a TOML file sets, as `RunConfig` field names (`runtime.config.from_options` takes them).

    Integers where a number is expected become floats (as the command line would give them), so that a run
    from the file and the same run from flags store the same configuration."""
    path = os.fspath(path)
    where = f"--config {path}"
    table = read_document(path, "--config", "TOML", tomllib.loads, tomllib.TOMLDecodeError)
    known = RunConfig.field_names()
    options: dict = {}
    for key, value in table.items():
        name = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in known:
            keys = [FLAGS.get(n, n).replace("_", "-") for n in known]
            close = difflib.get_close_matches(key.replace("_", "-"), keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InputError(f"{where}: unknown key {key!r}{hint}; the keys are the flags of ef21-mpi run without "
                             f"--: {', '.join(keys)}")
        if name in options:
            raise InputError(f"{where}: key {key!r} sets {name.replace('_', '-')} a second time")
        options[name] = _checked(where, key, name, value)
    return options


def _checked(where: str, key: str, name: str, value):
    """``value`` if it has a type the option takes (ints as floats where a number is expected)."""
    if name == "compressor_args":
        if not isinstance(value, dict):
            raise InputError(f"{where}: key {key!r} expects a table of NAME = VALUE, got {value!r}")
        for arg, item in value.items():
            if not isinstance(item, ARG_KINDS):
                raise InputError(f"{where}: key {key}.{arg} expects an integer, a number, true/false or a string, "
                                 f"got {item!r}")
        return dict(value)
    kinds = [k for k in option_kinds(name) if k in ARG_KINDS]  # from a file: no class, no object, no None
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not any(type(value) is k for k in kinds):
        raise InputError(f"{where}: key {key!r} expects {kind_words(kinds)}, got {value!r}")
    return value
