"""The one exception type that means "the user gave us something we cannot use", and the door that makes it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class InputError(Exception):
    """Bad input found at start-up; ``str(err)`` is a one-line message a person can act on.

    The CLI prints it as ``ef21-mpi: error: <message>`` and exits with status 2 (on every rank). ``reported`` is
    set once it has been printed (rank 0 of an MPI job prints before releasing the other ranks).
    """

    reported = False

    def report(self) -> None:
        """Print the one line now (to stderr) and remember that it was printed."""
        import sys

        print(f"ef21-mpi: error: {self}", file=sys.stderr, flush=True)
        self.reported = True


@contextmanager
def from_core() -> Iterator[None]:
    """The core (data, problems, compressors, methods) raises plain ValueErrors; at the door they become InputErrors."""
    try:
        yield
    except ValueError as err:
        raise InputError(str(err)) from None
