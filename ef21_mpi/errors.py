"""The one exception type that means "the user gave us something we cannot use"."""


class InputError(Exception):
    """Bad input found at start-up; ``str(err)`` is a one-line message a person can act on.

    The CLI prints it as ``ef21-mpi: error: <message>`` and exits with status 2 (on every rank).
    """
