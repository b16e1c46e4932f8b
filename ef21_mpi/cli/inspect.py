"""``ef21-mpi inspect``: what a run log says, as a readable block, a comparison table, or JSON."""

from __future__ import annotations

import argparse
import json

from ef21_mpi.analysis import tables
from ef21_mpi.analysis.results import load_run, summary
from ef21_mpi.analysis.theory import format_report, theory_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarise one run log, or compare several",
                       description="Summarise run logs (also while a run is still writing its log). One file: "
                                   "a readable block; several: a comparison table.")
    p.add_argument("logs", nargs="+", metavar="RUN.h5", help="HDF5 run log(s)")
    p.add_argument("--tol", type=float, help="report the first round with grad_norm_sq <= TOL "
                   "(default: the run's own --tol, if positive)")
    p.add_argument("--json", action="store_true", help="print a JSON list of the summaries")
    p.add_argument("--theory", action="store_true", help="also hold each run against Theorem 2 or 3 "
                   "(the report of `ef21-mpi theory`)")
    p.add_argument("--f-inf", type=float, default=0.0, help="with --theory: lower bound on f (default 0)")
    p.add_argument("--sort", choices=tuple(tables.SORT_KEYS), help="order of the table's rows (default: as given); "
                   "tuning = the Figure 2 rule: reached tol with the fewest bits/n first")
    p.add_argument("--best-by", choices=("method",), help="keep the best run of each method per data set "
                   "(the Figure 2 tuning rule: fewest bits/n to reach --tol, else lowest final grad_norm_sq)")
    p.add_argument("--seeds", action="store_true", help="fold runs that differ only by --seed into one row: "
                   "medians, with [min-max] beside them")
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    summaries = [summary(load_run(path), tol=args.tol) for path in args.logs]
    if args.best_by:
        summaries = tables.best_by_method(summaries)
    if args.seeds:
        summaries = tables.fold_seeds(summaries)
    if args.sort:
        summaries = tables.sort(summaries, args.sort)
    reports = [theory_report(path, f_inf=args.f_inf) for path in args.logs] if args.theory else []
    if args.json:
        for s, r in zip(summaries, reports):
            s["theory"] = r
        print(json.dumps(summaries, indent=2))
        return 0
    print(format_block(summaries[0]) if len(summaries) == 1 and "seeds" not in summaries[0]
          else format_table(summaries))
    for r in reports:
        print("\n" + format_report(r))
    return 0


def _g(value: float | None, spec: str = ".3e") -> str:
    return "-" if value is None else format(value, spec)


def _bits(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_block(s: dict) -> str:
    """One run, one field per line."""
    rounds = f"{s['rounds_done']}" + (f"/{s['rounds_requested']}" if s["rounds_requested"] is not None else "")
    stepsize = (f"gamma = {_g(s['gamma'], '.6g')} (absolute; gamma_theory = {_g(s['gamma_theory'], '.6g')})"
                if s["stepsize_override"] else
                f"gamma = {_g(s['gamma'], '.6g')} = {_g(s['multiplier'], '.3g')} x gamma_theory "
                f"({_g(s['gamma_theory'], '.6g')})")
    lines = [
        s["file"],
        f"  method         {s['method']}, {s['compressor']} (k = {s['k']})",
        f"  data set       {s['dataset']}, n = {s['n']} workers, d = {s['d']}",
        f"  stepsize       {stepsize}",
        f"  status         {s['status']} after {rounds} rounds ({s['rows']} rows logged)",
        (f"  grad_norm_sq   first {_g(s['grad_norm_sq_first'])}, last {_g(s['grad_norm_sq_last'])}, "
         f"best {_g(s['grad_norm_sq_best'])} (round {s['best_round']})"),
    ]
    if s["tol"] is not None:
        reached = (f"round {s['tol_round']}, bits/n {_bits(s['tol_bits_paper'])} (paper) / "
                   f"{_bits(s['tol_bits_wire'])} (wire)" if s["tol_round"] is not None else "not reached")
        lines.append(f"  <= tol {s['tol']:.0e}   {reached}")
    lines += [
        (f"  bits/n         {_bits(s['bits_paper'])} paper (32 bits/coordinate, initialisation not counted); "
         f"{_bits(s['bits_wire'])} wire (initialisation included)"),
        (f"  time           {_g(s['wall_time'], '.2f')} s in the round loop, "
         f"{_g(s['rounds_per_second'], ',.0f')} rounds/s"),
    ]
    return "\n".join(lines)


def _spread(s: dict, key: str, fmt) -> str:
    """A number, with the range over seeds beside it when the row folds several."""
    text = fmt(s[key])
    low_high = s.get("spread", {}).get(key) if s.get("seeds", 1) > 1 else None
    if low_high is not None and low_high[0] != low_high[1]:
        text += f" [{fmt(low_high[0])}-{fmt(low_high[1])}]"
    return text


def format_table(summaries: list[dict]) -> str:
    """Several runs, one row each; bits/n in the paper's convention; n, backend, seed, x0, lam and the file only
    where the runs differ in them."""
    tols = {s["tol"] for s in summaries}
    tol_head = f"round@{tols.pop():.0e}" if len(tols) == 1 and None not in tols else "round@tol"
    extra = [key for key in tables.differing(summaries) if not (key in ("file", "seed") and "seeds" in summaries[0])]
    folded = "seeds" in summaries[0]
    header = ["run", "data set", *extra, *(["seeds"] if folded else []), "status", "rounds", "last g^2", "best g^2",
              tol_head, "bits/n@tol", "bits/n", "wall s"]
    rows = [[s["label"], str(s["dataset"]), *(str(s[key]) for key in extra),
             *([str(s["seeds"])] if folded else []), s["status"], _spread(s, "rounds_done", str),
             _spread(s, "grad_norm_sq_last", _g), _spread(s, "grad_norm_sq_best", _g),
             _spread(s, "tol_round", lambda v: "-" if v is None else f"{v:g}"),
             _spread(s, "tol_bits_paper", _bits), _spread(s, "bits_paper", _bits),
             _g(s["wall_time"], ".1f")] for s in summaries]
    left = 3 + len(extra) + folded
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("bits/n: paper convention (32 bits per sent coordinate, initialisation not counted)"
                 + ("; folded rows: median over seeds [min-max]" if folded else ""))
    return "\n".join(lines)
