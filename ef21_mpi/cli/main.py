"""The ``ef21-mpi`` command line (also ``python -m ef21_mpi``): the top parser, its commands, and error handling."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from ef21_mpi.cli import bench, data, inspect, plot, run, sweep, theory
from ef21_mpi.errors import InputError
from ef21_mpi.version import __version__

#: One module per command, in the order ``--help`` lists them; each has ``register(subparsers)``.
COMMANDS = (run, data, bench, inspect, plot, sweep, theory)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ef21-mpi", description="Simulate EF21 and other communication-compressed "
                                     "distributed methods with real message passing; results go to HDF5 logs.")
    parser.add_argument("--version", action="version", version=f"ef21-mpi {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # e.g. `ef21-mpi inspect ... | head`: the reader has gone, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except InputError as err:
        from ef21_mpi.runtime.session import mpi_rank, mpi_world_size

        if mpi_rank() == 0:  # under mpiexec every rank fails alike; one message is enough
            if args.debug:
                traceback.print_exc()
            if not err.reported:
                err.report()
        elif mpi_world_size() > 1:
            time.sleep(0.5)  # let rank 0's line out: Open MPI's launcher ends the job at the first non-zero exit
        return 2


if __name__ == "__main__":
    sys.exit(main())
