"""``ef21-mpi data``: list and fetch the registered data sets, or write a synthetic one (`core.synth`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ef21_mpi.errors import InputError, from_core


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, fetch or synthesise data sets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    lst = dsub.add_parser("list", help="known data sets, where they are, checksum status")
    lst.add_argument("--data-dir")
    lst.set_defaults(handler=cmd_list)
    fetch = dsub.add_parser("fetch", help="download a data set and verify its sha256")
    fetch.add_argument("name")
    fetch.add_argument("--data-dir")
    fetch.set_defaults(handler=cmd_fetch)
    syn = dsub.add_parser("synth", help="write a synthetic sparse heterogeneous LibSVM data set",
                          description="Sparse rows with exactly Z features each, generated in --workers blocks "
                                      "that match the sequential shards and differ in features, values and "
                                      "labels. Read it back with --dataset FILE.")
    syn.add_argument("--rows", type=int, required=True, help="number of rows N")
    syn.add_argument("--dim", type=int, required=True, help="dimension d")
    syn.add_argument("--nnz-per-row", type=int, default=20, help="features per row Z (default %(default)s)")
    syn.add_argument("--workers", type=int, default=20, help="number of heterogeneous blocks n (default %(default)s)")
    syn.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    syn.add_argument("--out", required=True, help="output file; .bz2, .gz or .xz compresses")
    syn.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    syn.set_defaults(handler=cmd_synth)
    prep = dsub.add_parser("prepare", help="cut a data set into the shards of n workers, in one binary HDF5 store",
                           description="Write each worker's CSR block of DATASET (sequential shards, as a run cuts "
                                       "them) into one HDF5 file, with the source's sha256, per-shard checksums and "
                                       "the curvature behind L_i, L, L~. Run on it with --dataset STORE.h5: under "
                                       "MPI every worker rank reads only its own shards, in parallel.")
    prep.add_argument("dataset", help="registry name or LibSVM file")
    prep.add_argument("--workers", type=int, required=True, help="number of workers n the runs will use")
    prep.add_argument("--out", required=True, help="the store to write (.h5)")
    prep.add_argument("--problem", default="logreg", choices=("logreg", "least-squares"),
                      help="problem whose constants are stored (default %(default)s; others are computed at run time)")
    prep.add_argument("--data-dir")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    prep.set_defaults(handler=cmd_prepare)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the registered data sets and their local state."""
    from ef21_mpi.core.datasets import data_dirs, list_datasets

    with from_core():
        rows = list_datasets(args.data_dir)
    print(f"{'name':<10} {'N':>6} {'d':>4}  {'checksum':<8}  path")
    for r in rows:
        print(f"{r['name']:<10} {r['N']:>6} {r['d']:>4}  {r['checksum']:<8}  {r['path'] or '-'}")
    print("searched: " + ", ".join(str(p) for p in data_dirs(args.data_dir)))
    if any(r["checksum"] == "missing" for r in rows):
        print("fetch a missing one with 'ef21-mpi data fetch NAME' (see data/README.md)")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download and verify one data set, print where it went."""
    from ef21_mpi.core.datasets import fetch

    with from_core():
        path = fetch(args.name, args.data_dir)
    print(f"{args.name}: {path} (sha256 ok)")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ef21_mpi.core import synth

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"--out {out} already exists; pass --overwrite to replace it")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    started = time.perf_counter()
    with from_core():
        data = synth.generate(args.rows, args.dim, args.nnz_per_row, args.workers, args.seed)
        synth.write(data, out)
    print(f"{out}: {data.A.shape[0]} rows, d = {data.d}, {data.A.nnz} nonzeros, "
          f"{int((data.y > 0).sum())} positive, {out.stat().st_size / 1e6:.1f} MB "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from ef21_mpi.runtime import store

    out = Path(args.out)
    if out.suffix not in (".h5", ".hdf5"):
        raise InputError(f"--out {out}: expected a .h5 file")
    if out.exists() and not args.overwrite:
        raise InputError(f"--out {out} already exists; pass --overwrite to replace it")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    started = time.perf_counter()
    with from_core():
        info = store.prepare(args.dataset, args.data_dir, args.workers, args.problem, out)
    print(f"{out}: {info.name} ({info.N} rows, d = {info.d}) in {info.n} shards, sha256 {info.source_sha256[:12]}..., "
          f"{out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
    return 0
