"""``ef21-mpi sweep``: run a grid of configurations, one log each, resumable (the grid logic is `analysis.sweep`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ef21_mpi.analysis.sweep import (
    DEFAULTS,
    GRID_KEYS,
    check_launcher,
    expand_grid,
    log_state,
    run_sweep,
    validate_grid,
)
from ef21_mpi.core.methods import METHODS
from ef21_mpi.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of configurations (resumable), one log each",
                       description="Expand a grid (data sets x algorithms x k x multipliers) and run each "
                                   "configuration as its own `ef21-mpi run`, skipping those whose log already "
                                   "ends with status completed, converged or diverged. Exits non-zero only if "
                                   "a run failed (diverged is a result).")
    p.add_argument("--out-dir", required=True, help="folder for the logs (created if missing)")
    p.add_argument("--grid", help="JSON file with any of the keys " + ", ".join(GRID_KEYS)
                   + " (lists where the flag takes a list); flags given on the command line win")
    p.add_argument("--datasets", help="comma-separated data sets (registry names or LibSVM files)")
    p.add_argument("--algorithms", help="comma-separated, from " + ", ".join(METHODS) + " (default ef,ef21,ef21-plus)")
    p.add_argument("--multipliers", help="comma-separated stepsize multipliers (default 1)")
    p.add_argument("--k", help="comma-separated Top-k k values (default 1; GD ignores k and uses d)")
    p.add_argument("--rounds", type=int, help="rounds per configuration")
    p.add_argument("--bits-budget", type=float, help="give every configuration the same paper bits/n: rounds "
                   "such that floor(B / (32 k)) messages are sent (EF, GD, DCGD: one fewer round, as their round 0 is a step "
                   "that counts), capped by --rounds if also given")
    p.add_argument("--tol", type=float, help="stop a run once grad_norm_sq < TOL (default 0: never)")
    p.add_argument("--log-every", type=int, help="log every K-th round (default 1)")
    p.add_argument("--workers", type=int, help="number of workers n (default 20)")
    p.add_argument("--data-dir", help="folder holding the data sets (passed to each run)")
    p.add_argument("--jobs", type=int, help="runs at a time (default: number of cores)")
    p.add_argument("--launcher", help="command template to run each configuration under, e.g. "
                   "'mpiexec -n {n+1}' ({n} = workers); default: serial backend in a subprocess")
    p.add_argument("--dry-run", action="store_true", help="list the configurations and their state, run nothing")
    p.set_defaults(handler=cmd_sweep)


def _split(text: str, kind, flag: str) -> list:
    try:
        return [kind(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected a comma-separated list of {kind.__name__} values") from None


def read_grid(path: str) -> dict:
    """The JSON grid file as a dict of GRID_KEYS (hyphens or underscores); lists may also be scalars."""
    try:
        with open(path, encoding="utf-8") as f:
            grid = json.load(f)
    except FileNotFoundError:
        raise InputError(f"--grid {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"--grid {path} is a folder; expected a JSON file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"--grid {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"--grid {path}: not valid JSON ({err})") from None
    except (OSError, RecursionError) as err:
        raise InputError(f"--grid {path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    if not isinstance(grid, dict):
        raise InputError(f"--grid {path}: expected a JSON object with keys such as datasets, algorithms")
    grid = {key.replace("-", "_"): value for key, value in grid.items()}
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise InputError(f"--grid {path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(GRID_KEYS)}")
    for key in ("datasets", "algorithms", "multipliers", "k"):
        if key in grid and not isinstance(grid[key], list):
            grid[key] = [grid[key]]
    return grid


def grid_from_args(args: argparse.Namespace) -> dict:
    """Defaults, then the JSON grid, then the flags given on the command line."""
    grid = dict(DEFAULTS)
    if args.grid:
        grid.update(read_grid(args.grid))
    lists = {"datasets": (str, "--datasets"), "algorithms": (str, "--algorithms"),
             "multipliers": (float, "--multipliers"), "k": (int, "--k")}
    for key, (kind, flag) in lists.items():
        value = getattr(args, key)
        if value is not None:
            grid[key] = _split(value, kind, flag)
    for key in ("rounds", "bits_budget", "tol", "log_every", "workers"):
        if getattr(args, key) is not None:
            grid[key] = getattr(args, key)
    validate_grid(grid)
    return grid


def cmd_sweep(args: argparse.Namespace) -> int:
    grid = grid_from_args(args)
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    if args.launcher is not None:
        check_launcher(args.launcher)
    configs = expand_grid(grid["datasets"], grid["algorithms"], grid["multipliers"], grid["k"], grid.get("rounds"),
                          tol=float(grid["tol"]), bits_budget=grid.get("bits_budget"),
                          log_every=grid["log_every"], workers=grid["workers"])
    out_dir = Path(args.out_dir)
    if args.dry_run:
        for config in configs:
            state = log_state(out_dir / config.name, config)
            print(f"{config.name}  rounds {config.rounds}  [{state}]")
        print(f"{len(configs)} configurations")
        return 0
    try:
        results = run_sweep(configs, out_dir, jobs=args.jobs, data_dir=args.data_dir, launcher=args.launcher)
    except KeyboardInterrupt:
        print("sweep: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    failed = [r for r in results if r.status in ("failed", "interrupted")]
    for r in failed:
        print(f"sweep: {r.config.name} {r.status}: {r.message}", file=sys.stderr)
    return 1 if failed else 0
