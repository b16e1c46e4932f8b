"""``ef21-mpi rerun LOG``: run the configuration a log stores again, into a new log (`runtime.rerun`)."""

from __future__ import annotations

import argparse
import sys

from ef21_mpi.cli.run import add_runtime_options, given_options, option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rerun", help="run a log's stored configuration again, bit for bit, into a new log",
                       description="Rebuild the configuration LOG stores and run it from the start (serially, or "
                                   "under mpiexec on any number of ranks up to n+1): the new log holds the same "
                                   "numbers, bit for bit. Only how the run is executed or stored may be given; "
                                   "the data set must be the one LOG used (same sha256).")
    p.add_argument("log", metavar="LOG", help="the run log whose configuration to run again")
    option(p, "--out", "path of the new log; a missing folder is created", "LOG's name with .rerun.h5, beside it")
    add_runtime_options(p)
    p.set_defaults(handler=cmd_rerun)


def cmd_rerun(args: argparse.Namespace) -> int:
    from ef21_mpi.runtime.rerun import rerun_config
    from ef21_mpi.runtime.session import Hooks, mpi_rank, run

    cfg, check = rerun_config(args.log, given_options(args))
    if mpi_rank() == 0 and not cfg.quiet:
        print(f"ef21-mpi: rerunning {args.log} into {cfg.out}", file=sys.stderr, flush=True)
    return run(cfg, hooks=Hooks(check=check))
