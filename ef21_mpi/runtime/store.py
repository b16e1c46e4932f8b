"""A prepared shard store: one HDF5 file holding each worker's CSR block, so that no rank parses text at start-up.

``ef21-mpi data prepare DATASET --workers n --out STORE.h5`` reads the LibSVM file once, cuts it into the
sequential shards every run would cut (`core.data.shard_bounds`), and writes per shard its CSR arrays
(``indptr`` int64, ``indices`` int32, ``data`` float64) and labels, each shard with the sha256 of its
arrays' bytes; the file records the source's sha256, name, path and shape. It also keeps `core.smoothness.curvature`
for the problem it was prepared for (the eigenvalues behind ``L_i``, ``L``, ``L~`` and, for least squares, ``mu`` at
``lam > 0`` and at ``lam = 0``, computed exactly as a run computes them), so rank 0 derives the constants for any
``--lam`` without reading a shard; a run of another problem reads every shard on rank 0 and computes them (least
squares also needs ``f*``, a solve over all data).
Under MPI each worker rank then reads only its own shards, all ranks in parallel (`read_shard`), and checks
their digests; a run on the store is bit-identical to one on the LibSVM file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from ef21_mpi.core.data import shard_bounds
from ef21_mpi.core.datasets import load as load_dataset
from ef21_mpi.core.smoothness import curvature

FORMAT = "ef21-mpi shard store"
VERSION = 1


def digest(A: sp.csr_matrix, y: np.ndarray) -> str:
    """sha256 over a shard's shape and arrays, in the dtypes the store keeps."""
    h = hashlib.sha256(np.array([*A.shape, A.nnz], dtype=np.int64).tobytes())
    for array, dtype in ((A.indptr, np.int64), (A.indices, np.int32), (A.data, np.float64), (y, np.float64)):
        h.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return h.hexdigest()


def is_store(path: str) -> bool:
    """Whether ``path`` names a shard store (an HDF5 file with this format's mark), without reading its shards."""
    if not path.endswith((".h5", ".hdf5")) or not Path(path).is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False


@dataclass(frozen=True)
class StoreInfo:
    """What rank 0 needs from a store: the source's identity, the shard sizes and the stored curvature."""

    path: str
    name: str
    source_path: str
    source_sha256: str
    N: int
    d: int
    n: int
    sizes: np.ndarray
    problem: str
    eigs: dict


def prepare(dataset: str, data_dir: str | None, n: int, problem: str, out: Path) -> StoreInfo:
    """Read ``dataset``, cut it into ``n`` sequential shards and write the store to ``out`` (atomically)."""
    if problem not in ("logreg", "least-squares"):
        raise ValueError(f"--problem {problem!r}: expected logreg or least-squares")
    ds = load_dataset(dataset, data_dir)
    bounds = shard_bounds(ds.N, n)
    shards = [(sp.csr_matrix(ds.A[lo:hi]), np.ascontiguousarray(ds.y[lo:hi])) for lo, hi in bounds]
    eigs = curvature(problem, shards)
    tmp = out.with_name(f".{out.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs.update({"format": FORMAT, "version": VERSION, "name": ds.name, "source_path": ds.path,
                        "source_sha256": ds.sha256, "N": ds.N, "d": ds.d, "n_workers": n, "problem": problem,
                        "eig_i": eigs["eig_i"], "eig": eigs["eig"],
                        **{key: np.nan if eigs.get(key) is None else eigs[key]
                           for key in ("eig_min", "eig_min_positive")},
                        "shard_sizes": np.array([hi - lo for lo, hi in bounds], dtype=np.int64)})
        for i, (A, y) in enumerate(shards):
            g = f.create_group(f"shard/{i}")
            g.create_dataset("indptr", data=A.indptr.astype(np.int64))
            g.create_dataset("indices", data=A.indices.astype(np.int32))
            g.create_dataset("data", data=A.data.astype(np.float64))
            g.create_dataset("y", data=y.astype(np.float64))
            g.attrs["sha256"] = digest(A, y)
    tmp.replace(out)
    return info(str(out))


def info(path: str) -> StoreInfo:
    """The store's header (no shard is read); ValueError if it is not a store this version reads."""
    with h5py.File(path, "r", locking=False) as f:
        a = dict(f.attrs)
    if a.get("format") != FORMAT or a.get("version") != VERSION:
        raise ValueError(f"{path}: not an ef21-mpi shard store of version {VERSION}; write one with "
                         f"'ef21-mpi data prepare'")
    eigs = {"eig_i": np.asarray(a["eig_i"], dtype=np.float64), "eig": float(a["eig"])}
    for key in ("eig_min", "eig_min_positive"):  # (a store written before lam = 0 was PL has no eig_min_positive)
        value = float(a.get(key, np.nan))
        eigs[key] = None if np.isnan(value) else value
    return StoreInfo(path, str(a["name"]), str(a["source_path"]), str(a["source_sha256"]), int(a["N"]), int(a["d"]),
                     int(a["n_workers"]), np.asarray(a["shard_sizes"], dtype=np.int64), str(a["problem"]), eigs)


def read_shard(path: str, i: int, d: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Shard ``i`` as (CSR matrix, labels), checked against its stored sha256 (ValueError on a mismatch)."""
    with h5py.File(path, "r", locking=False) as f:
        g = f[f"shard/{i}"]
        indptr, indices, data, y = (g[k][()] for k in ("indptr", "indices", "data", "y"))
        expected = g.attrs["sha256"]
    A = sp.csr_matrix((data, indices, indptr), shape=(len(y), d))
    if digest(A, y) != expected:
        raise ValueError(f"{path}: shard {i} does not match its checksum; prepare the store again")
    return A, y
