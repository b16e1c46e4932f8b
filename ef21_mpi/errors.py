"""The one exception type that means "the user gave us something we cannot use", and the door that makes it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class InputError(Exception):
    """Bad input found at start-up; ``str(err)`` is a one-line message a person can act on.

    The CLI prints it as ``ef21-mpi: error: <message>`` and exits with status 2 (on every rank).
    """


@contextmanager
def from_core() -> Iterator[None]:
    """The core (data, problems, compressors, methods) raises plain ValueErrors; at the door they become InputErrors."""
    try:
        yield
    except ValueError as err:
        raise InputError(str(err)) from None
