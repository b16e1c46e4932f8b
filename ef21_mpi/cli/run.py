"""``ef21-mpi run``: one configuration's flags (and ``--config`` file), turned into a `RunConfig` for
`runtime.session.run`; and ``ef21-mpi rerun LOG``, which takes the run's runtime flags only (`runtime.rerun`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from ef21_mpi.core import plugins
from ef21_mpi.core.compressors import COMPRESSORS
from ef21_mpi.core.methods import INITS, METHODS
from ef21_mpi.core.problems import PROBLEMS
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import (
    BACKENDS,
    PLACEMENTS,
    RUNTIME_FIELDS,
    RunConfig,
    from_options,
    ignored_options,
    validate_values,
)

#: The defaults the help shows: `RunConfig`'s own.
DEFAULTS = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}
RUNS = "runs"  # the folder of the logs written without --out


class NamesOrSpec(tuple):
    """argparse ``choices``: the registry's names, or any ``package.module:ClassName`` (checked at the door)."""

    def __contains__(self, value) -> bool:
        return plugins.is_spec(value) or tuple.__contains__(self, value)


def compressor_args(texts: list[str] | None) -> dict:
    """``--compressor-arg NAME=VALUE`` (repeatable) as a dict of ints, floats, bools, None or strings."""
    found = {}
    for text in texts or ():
        try:
            name, value = plugins.parse_arg(text)
        except ValueError as err:
            raise InputError(f"--compressor-arg {err}") from None
        found[name] = value
    return found


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def option(p: argparse.ArgumentParser, flag: str, text: str, default: str | None = None, *, note: str | None = None,
           hidden: bool = False, **kw) -> None:
    """A flag whose value is left out of the namespace unless given (so that a ``--config`` file, then
    `RunConfig`'s default, fill it in), with its default in the help: ``default`` or `RunConfig`'s (or ``note``
    in its place); ``hidden``: accepted but not in the help."""
    name = kw.get("dest", flag[2:].replace("-", "_"))
    note = note or f"default: {default if default is not None else _shown(DEFAULTS[name])}"
    shown = argparse.SUPPRESS if hidden else f"{text} ({note})".replace("%", "%%")
    p.add_argument(flag, default=argparse.SUPPRESS, help=shown, **kw)


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """The flags that change how a run is executed or stored, not its numbers (`RUNTIME_FIELDS` less ``out``)."""
    option(p, "--data-dir", "folder holding the data sets", "$EF21_DATA_DIR, then data/")
    option(p, "--overwrite", "replace an existing --out", action="store_true")
    option(p, "--flush-every", "flush the log at least every K logged rows", "by time only", type=int)
    option(p, "--flush-seconds", "flush the log about this often, in seconds", type=float)
    option(p, "--checkpoint-every", "checkpoint every K rounds (in addition to --checkpoint-seconds)",
           "by time only", type=int)
    option(p, "--checkpoint-seconds", "checkpoint about this often, in seconds", type=float)
    option(p, "--backend", "auto: MPI when launched with more than one rank", choices=BACKENDS)
    option(p, "--placement", "MPI: auto = when a node has more ranks than cores, run the workers on as many ranks "
           "as it has cores and let the others wait idle; spread = one block of workers per rank; pack = as auto, "
           "even without oversubscription", choices=PLACEMENTS)
    option(p, "--quiet", "no progress line", action="store_true")
    option(p, "--stall-timeout", "under MPI: end the job (status failed) when no round completes for SECONDS, "
           "naming the worker rank that made no progress", "off", type=float, metavar="SECONDS")


def add_number_options(p: argparse.ArgumentParser, hidden: bool = False) -> None:
    """The flags that determine a run's numbers (``hidden``: accepted, not shown; ``rerun`` refuses them)."""

    def add(flag: str, text: str, default: str | None = None, **kw) -> None:
        option(p, flag, text, default, hidden=hidden, **kw)

    add("--algorithm", "a method of the registry, or package.module:ClassName (a Method subclass importable "
        "on every rank)", choices=NamesOrSpec(METHODS))
    add("--compressor", "a compressor of the registry, or package.module:ClassName (importable on every "
        "rank)", choices=NamesOrSpec(COMPRESSORS))
    add("--compressor-arg", "argument of a plug-in compressor class (repeatable; int, float, true/false or "
        "text)", "none", action="append", metavar="NAME=VALUE", dest="compressor_arg")
    add("--k", "coordinates kept by top-k / rand-k / rand-k-unbiased", type=int)
    add("--rounds", "communication rounds after the initialisation", type=int)
    add("--workers", "number of workers n", "20 in one process; under MPI one per worker rank, or more, "
        "spread over the worker ranks in blocks", type=int)
    add("--problem", "the objective", choices=list(PROBLEMS))
    add("--lam", "regularisation lambda", type=float)
    add("--init", "g_i^0 of the methods that initialise g_i (EF21 and its family)", choices=INITS)
    add("--stepsize", "absolute stepsize gamma (overrides the multiplier)", "unset: gamma from the multiplier",
        type=float)
    add("--stepsize-multiplier", "gamma = multiplier * gamma_theory", type=float)
    add("--x0", "zeros, normal (from --seed) or PATH.npy")
    add("--seed", "seed of every random choice", type=int)
    add("--tol", "stop once grad_norm_sq < tol (status converged); 0: never", type=float)
    add("--batch-size", "EF21-SGD, EF21-SGDM: rows per minibatch (tau)", "none; required by those methods",
        type=int)
    add("--participation", "EF21-PP: fraction p of the workers taking part in a round (round(p n) of "
        "them, drawn by the master)", "none; required by EF21-PP", type=float)
    add("--down-compressor", "EF21-BC: the master's compressor C_M", "none; required by EF21-BC",
        choices=list(COMPRESSORS))
    add("--down-k", "EF21-BC: coordinates kept by C_M (top-k, rand-k, rand-k-unbiased)", "none; required "
        "by those", type=int)
    add("--momentum", "EF21-HB (0 <= eta < 1), EF21-SGDM (0 < eta <= 1): eta", "none; required by those "
        "methods", type=float)
    add("--levels", "dithering: levels s per sign", "none; required by dithering", type=int)
    add("--shuffle", "permute rows (from --seed) before sharding", action="store_true")
    add("--log-every", "log every K-th round (bits stay exact)", type=int)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one method on one data set and write its HDF5 log",
                       description="Run one configuration. Under mpiexec rank 0 is the master and the other "
                                   "ranks hold the workers (one each by default); otherwise --workers n run in "
                                   "this process. Options may also come from a TOML file (--config); flags "
                                   "given on the command line win over it.")
    p.add_argument("--config", metavar="RUN.toml", help="TOML file of run options: keys are the flags without "
                   "--, e.g. dataset = \"a9a\", stepsize-multiplier = 4, compressor-arg = {block = 4}")
    option(p, "--dataset", "registry name (a9a, w8a, mushrooms, phishing) or a LibSVM file",
           note="required, here or in --config")
    option(p, "--out", "path of the HDF5 run log to write; a missing folder is created",
           f"{RUNS}/ and the sweep's name for the run, e.g. {RUNS}/a9a__ef21__top-1__x1.h5")
    p.add_argument("--resume", metavar="RUN.h5", help="continue RUN.h5 from its last checkpoint (same launcher "
                   "or the other backend), or extend it to more --rounds (a completed run too); other flags "
                   "given with it must agree with the original run")
    add_number_options(p)
    add_runtime_options(p)
    p.set_defaults(handler=cmd_run)
    register_rerun(sub)


def register_rerun(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rerun", help="run a log's stored configuration again, bit for bit, into a new log",
                       description="Rebuild the configuration LOG stores and run it from the start (serially, or "
                                   "under mpiexec on any number of ranks up to n+1): the new log holds the same "
                                   "numbers, bit for bit. Only how the run is executed or stored may be given; "
                                   "the data set must be the one LOG used (same sha256).")
    p.add_argument("log", metavar="LOG", help="the run log whose configuration to run again")
    option(p, "--out", "path of the new log; a missing folder is created", "LOG's name with .rerun.h5, beside it")
    option(p, "--dataset", "the data set, if not where LOG says (it must have the same sha256)", "the one LOG names")
    add_runtime_options(p)
    add_number_options(p, hidden=True)  # refused with one line by `runtime.rerun`
    p.set_defaults(handler=cmd_rerun)


def given_options(args: argparse.Namespace) -> dict:
    """The `RunConfig` fields the command line set (flags not given are not in the namespace)."""
    given = {name: getattr(args, name) for name in RunConfig.field_names() if hasattr(args, name)}
    if hasattr(args, "compressor_arg"):
        given["compressor_args"] = compressor_args(args.compressor_arg)
    return given


def warn_ignored(cfg: RunConfig, given) -> None:
    """One ``ef21-mpi: warning:`` line on rank 0 for each option given that the run does not use (a
    configuration that validation refuses gets its error from the run instead)."""
    from ef21_mpi.runtime.session import choose_backend, mpi_rank

    if mpi_rank() != 0:
        return
    try:
        validate_values(cfg)
    except InputError:
        return
    for text in ignored_options(cfg, set(given), choose_backend(cfg.backend)):
        print(f"ef21-mpi: warning: {text}", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from ef21_mpi.runtime.configfile import read_config_file
    from ef21_mpi.runtime.resume import ResumeRequest
    from ef21_mpi.runtime.session import mpi_rank, run

    given = given_options(args)
    if args.resume is not None:
        if args.config is not None:
            raise InputError("--config cannot be used with --resume: a resumed run keeps its own configuration")
        return run(None, ResumeRequest(args.resume, given))
    options = read_config_file(args.config) if args.config is not None else {}
    if "compressor_args" in options and "compressor_args" in given:  # one table: the flags' entries win
        given["compressor_args"] = {**options["compressor_args"], **given["compressor_args"]}
    options.update(given)
    if options.get("out") is None and options.get("dataset") is not None:
        options["out"] = default_out(options)
        if not options.get("quiet") and mpi_rank() == 0:
            print(f"ef21-mpi: writing the log to {options['out']} (no --out given)", file=sys.stderr, flush=True)
    cfg = from_options(options)
    warn_ignored(cfg, options)
    return run(cfg)


def default_out(options: dict) -> str:
    """``runs/<name>``: the name a sweep gives the run (`analysis.grid.log_name`: data set, method, compressor,
    multiplier, then every option that differs from its default), from the options that determine its numbers."""
    from ef21_mpi.analysis.grid import applicable, log_name
    from ef21_mpi.runtime.session import choose_backend, mpi_world_size

    numbers = {name: value for name, value in options.items() if name not in RUNTIME_FIELDS}
    named = {name: DEFAULTS[name] for name in ("algorithm", "compressor", "k")} | numbers
    if "workers" not in named and choose_backend(options.get("backend", "auto")) == "mpi" and mpi_world_size() > 1:
        named["workers"] = mpi_world_size() - 1  # n under MPI: one worker per worker rank
    try:
        name = log_name(applicable(named))
    except (ValueError, TypeError, KeyError):  # a value the name cannot show; the run's own checks will say
        name = "run.h5"
    return str(Path(RUNS) / name)


def cmd_rerun(args: argparse.Namespace) -> int:
    from ef21_mpi.runtime.rerun import rerun_config
    from ef21_mpi.runtime.session import Hooks, mpi_rank, run

    cfg, check = rerun_config(args.log, given_options(args))
    if mpi_rank() == 0 and not cfg.quiet:
        print(f"ef21-mpi: rerunning {args.log} into {cfg.out}", file=sys.stderr, flush=True)
    return run(cfg, hooks=Hooks(check=check))
