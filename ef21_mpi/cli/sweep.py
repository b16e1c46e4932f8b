"""``ef21-mpi sweep``: run a grid of configurations, one log each, resumable (the grid is `analysis.grid`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ef21_mpi.analysis.grid import ALIASES, AXES, SCALARS, axis_name, configs_of, parse_value, validate_grid
from ef21_mpi.analysis.sweep import check_launcher, log_state, run_sweep
from ef21_mpi.core.methods import METHODS
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.configfile import read_document

#: What a sweep runs when the grid does not say otherwise.
SWEEP_DEFAULTS = {"algorithm": ["ef", "ef21", "ef21-plus"], "stepsize_multiplier": [1.0], "k": [1], "workers": [20]}
BUDGET = SCALARS + ("bits_budget",)
LIST_AXES = tuple(name for name in AXES if name != "compressor_args")  # a dict per value: only in a --grid file


def _flags(name: str) -> list[str]:
    plural = [alias for alias, target in ALIASES.items() if target == name and alias.endswith("s")]
    return ["--" + flag.replace("_", "-") for flag in (*plural, name)]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of configurations (resumable), one log each",
                       description="Expand a grid (the product of comma-separated values of any `run` option) and "
                                   "run each configuration as its own `ef21-mpi run`, skipping those whose log already "
                                   "ends with status completed, converged or diverged. Each log is named after the "
                                   "configuration: data set, method, compressor and k, multiplier, then every other "
                                   "option that is varied or differs from its default (a9a__ef21__top-1__x4__seed-3.h5). "
                                   "Options a method does not use (k for GD, --momentum for EF21) are dropped from its "
                                   "runs. Exits non-zero only if a run failed (diverged is a result).")
    p.add_argument("--out-dir", required=True, help="folder for the logs (created if missing)")
    p.add_argument("--grid", help="JSON file whose keys are run options (or their plurals: datasets, algorithms, "
                   "multipliers, compressors, seeds, lams) with a value or a list of values, and "
                   + ", ".join(BUDGET) + "; flags given on the command line win")
    axes = p.add_argument_group("axes", "comma-separated values of the `ef21-mpi run` option of the same name")
    for name in LIST_AXES:
        default = SWEEP_DEFAULTS.get(name)
        shown = f" (default {','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in default)})" if default else ""
        extra = ", from " + ", ".join(METHODS) if name == "algorithm" else ""
        axes.add_argument(*_flags(name), dest=name, metavar="V[,V...]", help=f"{name.replace('_', ' ')}{extra}{shown}")
    p.add_argument("--rounds", type=int, help="rounds per configuration")
    p.add_argument("--bits-budget", type=float, help="give every configuration the same paper bits/n: rounds "
                   "such that floor(B / (32 k)) messages are sent (EF, GD, DCGD: one fewer round, as their round 0 is a "
                   "step that counts), capped by --rounds if also given")
    p.add_argument("--tol", type=float, help="stop a run once grad_norm_sq < TOL (default 0: never)")
    p.add_argument("--log-every", type=int, help="log every K-th round (default 1)")
    p.add_argument("--data-dir", help="folder holding the data sets (passed to each run)")
    p.add_argument("--jobs", type=int, help="runs at a time (default: number of cores)")
    p.add_argument("--launcher", help="command template to run each configuration under, e.g. "
                   "'mpiexec -n {n+1}' ({n} = workers); default: serial backend in a subprocess")
    p.add_argument("--pool", action="store_true", help="run the configurations in --jobs long-lived Python "
                   "processes instead of one `ef21-mpi run` process each (serial backend; the same logs, without a "
                   "Python start-up and a data set parse per run: much faster for many short runs)")
    p.add_argument("--dry-run", action="store_true", help="list the configurations and their state, run nothing")
    p.set_defaults(handler=cmd_sweep)


def read_grid(path: str) -> dict:
    """The JSON grid file as a dict of option names (hyphens or underscores, plurals allowed)."""
    grid = read_document(path, "--grid", "JSON", json.loads, json.JSONDecodeError)
    if not isinstance(grid, dict):
        raise InputError(f"--grid {path}: expected a JSON object with keys such as datasets, algorithms")
    named = {}
    for key, value in grid.items():
        name = key.replace("-", "_") if key.replace("-", "_") in BUDGET else axis_name(key)
        if name not in AXES and name not in BUDGET:
            raise InputError(f"--grid {path}: unknown key {key!r}; expected a run option ({', '.join(AXES)}) "
                             f"or {', '.join(BUDGET)}")
        if name in named:
            raise InputError(f"--grid {path}: {key!r} names {name} a second time")
        named[name] = value
    return named


def _split(text: str, name: str) -> list:
    return [parse_value(name, item.strip()) for item in text.split(",") if item.strip()]


def grid_from_args(args: argparse.Namespace) -> dict:
    """Defaults, then the JSON grid, then the flags given on the command line (axes and budget in one dict)."""
    grid = dict(SWEEP_DEFAULTS)
    if args.grid:
        grid.update(read_grid(args.grid))
    for name in LIST_AXES:
        value = getattr(args, name)
        if value is not None:
            grid[name] = _split(value, name)
    for key in BUDGET:
        if getattr(args, key) is not None:
            grid[key] = getattr(args, key)
    validate_grid(grid)
    return grid


def cmd_sweep(args: argparse.Namespace) -> int:
    grid = grid_from_args(args)
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    if args.launcher is not None:
        if args.pool:
            raise InputError("--pool runs the configurations in this machine's Python processes; drop --launcher or --pool")
        check_launcher(args.launcher)
    configs = configs_of(grid)
    out_dir = Path(args.out_dir)
    if args.dry_run:
        for config in configs:
            state = log_state(out_dir / config.name, config)
            print(f"{config.name}  rounds {config.rounds}  [{state}]")
        print(f"{len(configs)} configurations")
        return 0
    try:
        results = run_sweep(configs, out_dir, jobs=args.jobs, data_dir=args.data_dir, launcher=args.launcher,
                            pool=args.pool)
    except KeyboardInterrupt:
        print("sweep: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    failed = [r for r in results if r.status in ("failed", "interrupted")]
    for r in failed:
        print(f"sweep: {r.config.name} {r.status}: {r.message}", file=sys.stderr)
    return 1 if failed else 0
