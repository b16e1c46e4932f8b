"""``ef21-mpi theory``: hold run logs against Theorems 2 and 3 (report, JSON, or a figure of bound vs observed)."""

from __future__ import annotations

import argparse
import json
import math

from ef21_mpi.analysis.figures import check_output
from ef21_mpi.analysis.theory import format_report, theory_report
from ef21_mpi.analysis.theory_figure import plot_theory
from ef21_mpi.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("theory", help="check run logs against the paper's Theorems 2 and 3",
                       description="For EF21-family runs: the constants, whether gamma <= gamma_theory, and "
                                   "Theorem 2's bound (logistic regression) or Theorem 3's (least squares, PL) "
                                   "against what the run did.")
    p.add_argument("logs", nargs="+", metavar="RUN.h5", help="HDF5 run log(s)")
    p.add_argument("--f-inf", type=float, default=0.0,
                   help="lower bound f_inf of f for Theorem 2 (default 0, valid for the logistic loss)")
    p.add_argument("--json", action="store_true", help="print a JSON list of the reports (without the curves)")
    p.add_argument("--plot", metavar="FIG", help="also draw bound and observed curve per run (.png, .pdf, .svg)")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 if a bound that must hold for a run does not")
    p.set_defaults(handler=cmd_theory)


def cmd_theory(args: argparse.Namespace) -> int:
    if not math.isfinite(args.f_inf):
        raise InputError(f"--f-inf must be a finite number, got {args.f_inf!r}")
    if args.plot:
        check_output(args.plot, "--plot")
    reports = [theory_report(path, f_inf=args.f_inf) for path in args.logs]
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print("\n\n".join(format_report(r) for r in reports))
    if args.plot:
        plot_theory(args.logs, args.plot, f_inf=args.f_inf)
    return 1 if args.check and any(r["violation"] for r in reports) else 0
