"""``ef21-mpi run``: one configuration's flags, turned into a `RunConfig` for `runtime.session.run`."""

from __future__ import annotations

import argparse

from ef21_mpi.core import plugins
from ef21_mpi.core.compressors import COMPRESSORS
from ef21_mpi.core.methods import INITS, METHODS
from ef21_mpi.core.problems import PROBLEMS
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.config import BACKENDS, PLACEMENTS, RunConfig, from_options


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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one method on one data set and write its HDF5 log",
                       description="Run one configuration. Under mpiexec rank 0 is the master and the other "
                                   "ranks hold the workers (one each by default); otherwise --workers n run in "
                                   "this process.")
    d = RunConfig.__dataclass_fields__
    p.add_argument("--dataset", help="registry name (a9a, w8a, mushrooms, phishing) or a LibSVM file")
    p.add_argument("--data-dir", help="folder holding the data sets (default: $EF21_DATA_DIR, then data/)")
    p.add_argument("--out", help="path of the HDF5 run log to write")
    p.add_argument("--resume", metavar="RUN.h5", help="continue RUN.h5 from its last checkpoint (same launcher "
                   "or the other backend); flags given with it must agree with the original run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--algorithm", default=d["algorithm"].default, choices=NamesOrSpec(METHODS),
                   help="a method of the registry, or package.module:ClassName (a Method subclass importable on "
                        "every rank)")
    p.add_argument("--compressor", default=d["compressor"].default, choices=NamesOrSpec(COMPRESSORS),
                   help="a compressor of the registry, or package.module:ClassName (importable on every rank)")
    p.add_argument("--compressor-arg", action="append", metavar="NAME=VALUE",
                   help="argument of a plug-in compressor class (repeatable; int, float, true/false or text)")
    p.add_argument("--k", type=int, default=d["k"].default, help="coordinates kept by top-k / rand-k / rand-k-unbiased (default 1)")
    p.add_argument("--rounds", type=int, default=d["rounds"].default, help="communication rounds after the "
                   "initialisation (default %(default)s)")
    p.add_argument("--workers", type=int, default=d["workers"].default,
                   help="number of workers n (default: 20 in one process; under MPI one per worker rank, "
                        "or more, spread over the worker ranks in blocks)")
    p.add_argument("--problem", default=d["problem"].default, choices=list(PROBLEMS))
    p.add_argument("--lam", type=float, default=d["lam"].default, help="regularisation lambda (default 0.1)")
    p.add_argument("--init", default=d["init"].default, choices=INITS, help="g_i^0 for EF21/EF21+ (default full)")
    p.add_argument("--stepsize", type=float, help="absolute stepsize gamma (overrides the multiplier)")
    p.add_argument("--stepsize-multiplier", type=float, default=1.0, help="gamma = multiplier * gamma_theory")
    p.add_argument("--x0", default="zeros", help="zeros, normal (from --seed) or PATH.npy")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--tol", type=float, default=0.0, help="stop once grad_norm_sq < tol (status converged)")
    p.add_argument("--batch-size", type=int, help="EF21-SGD, EF21-SGDM: rows per minibatch (tau)")
    p.add_argument("--participation", type=float, help="EF21-PP: fraction p of the workers taking part in a round "
                   "(round(p n) of them, drawn by the master)")
    p.add_argument("--down-compressor", choices=list(COMPRESSORS), help="EF21-BC: the master's compressor C_M")
    p.add_argument("--down-k", type=int, help="EF21-BC: coordinates kept by C_M (top-k, rand-k, rand-k-unbiased)")
    p.add_argument("--momentum", type=float, help="EF21-HB (0 <= eta < 1), EF21-SGDM (0 < eta <= 1): eta")
    p.add_argument("--levels", type=int, help="dithering: levels s per sign")
    p.add_argument("--shuffle", action="store_true", help="permute rows (from --seed) before sharding")
    p.add_argument("--log-every", type=int, default=1, help="log every K-th round (bits stay exact)")
    p.add_argument("--flush-every", type=int, help="flush the log at least every K logged rows")
    p.add_argument("--flush-seconds", type=float, default=1.0, help="flush the log about this often (default 1 s)")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint every K rounds (in addition to --checkpoint-seconds)")
    p.add_argument("--checkpoint-seconds", type=float, default=60.0, help="checkpoint about this often (default 60 s)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto: MPI when launched with more than one rank")
    p.add_argument("--placement", default="auto", choices=PLACEMENTS,
                   help="MPI: auto = when a node has more ranks than cores, run the workers on as many ranks as "
                        "it has cores and let the others wait idle; spread = one block of workers per rank; "
                        "pack = as auto, even without oversubscription")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--stall-timeout", type=float, metavar="SECONDS", help="under MPI: end the job (status failed) "
                   "when no round completes for SECONDS, naming the worker rank that made no progress (default: off)")
    p.set_defaults(handler=cmd_run)
    p.set_defaults(defaults={a.dest: a.default for a in p._actions})


def cmd_run(args: argparse.Namespace) -> int:
    from ef21_mpi.runtime.resume import ResumeRequest
    from ef21_mpi.runtime.session import run

    values = {name: getattr(args, name) for name in RunConfig.field_names() if hasattr(args, name)}
    explicit = {k: v for k, v in values.items() if v != args.defaults.get(k)}
    if args.compressor_arg:
        values["compressor_args"] = explicit["compressor_args"] = compressor_args(args.compressor_arg)
    if args.resume is not None:
        return run(None, ResumeRequest(args.resume, explicit))
    return run(from_options(values))
