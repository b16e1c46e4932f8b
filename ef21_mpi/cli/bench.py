"""``ef21-mpi bench``: the benchmark's flags (`bench.bench.build_parser`) as a subcommand."""

from __future__ import annotations

import argparse

from ef21_mpi.bench import bench


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time per round against this machine's limits, in one table",
                       description=bench.__doc__.split("\n\n")[0])
    bench.build_parser(p)
    p.set_defaults(handler=bench.cmd_bench)
