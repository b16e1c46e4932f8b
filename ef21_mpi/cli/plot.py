"""``ef21-mpi plot``: convergence curves from run logs, paper-like by default (x = bits/n, y = ||grad f||^2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ef21_mpi.analysis.figures import (
    DPI,
    LEGEND_CHOICES,
    PANEL_CHOICES,
    X_CHOICES,
    Y_CHOICES,
    check_output,
    make_figure,
    save,
)
from ef21_mpi.analysis.results import CONVENTIONS, load_run
from ef21_mpi.analysis.theory_figure import plot_theory
from ef21_mpi.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot convergence curves of run logs",
                       description="Plot run logs, one line per run, log-scale y. Defaults follow the paper: "
                                   "x = bits/n (32 bits per coordinate, initialisation not counted), "
                                   "y = ||grad f(x^t)||^2.")
    p.add_argument("logs", nargs="+", metavar="RUN.h5", help="HDF5 run log(s)")
    p.add_argument("-o", "--output", required=True, metavar="FIG", help="figure file (.png, .pdf or .svg)")
    p.add_argument("--y", default="grad_norm_sq", choices=Y_CHOICES, help="quantity on the y axis")
    p.add_argument("--x", default="bits", choices=X_CHOICES, help="bits/n, communication rounds or wall time")
    p.add_argument("--bits", default="paper", choices=CONVENTIONS,
                   help="bits/n convention: paper (32 bits/coordinate, no initialisation), wire, or total (wire uplink + downlink)")
    p.add_argument("--title", help="title over the whole figure")
    p.add_argument("--panels-by", default="dataset", choices=PANEL_CHOICES,
                   help="one panel per data set (default), per stepsize multiplier, or a single panel")
    p.add_argument("--xlim", type=_limits, metavar="LO,HI", help="x-axis range; either end may be empty (e.g. ',2e5')")
    p.add_argument("--ylim", type=_limits, metavar="LO,HI", help="y-axis range (e.g. 1e-8,1)")
    p.add_argument("--dpi", type=int, default=DPI, help="resolution of a .png (default %(default)s)")
    p.add_argument("--legend", default="outside", choices=LEGEND_CHOICES,
                   help="one legend right of the panels (default), one below them, one inside each panel, or none")
    p.add_argument("--no-bands", action="store_true",
                   help="one line per run even where runs differ only by --seed (default: median and min-max band)")
    p.add_argument("--theory", action="store_true", help="instead: each run's observed curve with its theorem's "
                   "bound overlaid (Theorem 2: running mean of grad_norm_sq; Theorem 3: the Lyapunov function)")
    p.set_defaults(handler=cmd_plot)


def _limits(text: str) -> tuple[float | None, float | None]:
    """``LO,HI`` with either end optional, as axis limits."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = (float(p) if p.strip() else None for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (numbers, either may be empty), got {text!r}") from None
    if lo is not None and hi is not None and not lo < hi:
        raise argparse.ArgumentTypeError(f"expected LO < HI, got {text!r}")
    return lo, hi


def cmd_plot(args: argparse.Namespace) -> int:
    output = Path(args.output)
    check_output(output)
    if args.theory:
        plot_theory(args.logs, output)
        print(f"wrote {output} (theory overlay, {len(args.logs)} run{'s' if len(args.logs) != 1 else ''})")
        return 0
    runs = [load_run(path) for path in args.logs]
    if not 10 <= args.dpi <= 1200:
        raise InputError(f"--dpi {args.dpi}: expected a resolution from 10 to 1200")
    fig = make_figure(runs, y=args.y, x=args.x, bits=args.bits, title=args.title, panels_by=args.panels_by,
                      legend=args.legend, xlim=args.xlim, ylim=args.ylim, dpi=args.dpi, bands=not args.no_bands)
    save(fig, output)
    print(f"wrote {output} ({len(fig.axes)} panel{'s' if len(fig.axes) != 1 else ''}, {len(runs)} run{'s' if len(runs) != 1 else ''})")
    return 0
