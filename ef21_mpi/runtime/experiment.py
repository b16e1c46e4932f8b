"""From a `RunConfig` to everything a run needs: shards, constants, stepsize, ``x^0`` and the log's attributes.

This is start-up work, done once by the serial process or by rank 0 (which then hands each worker its
shard). Everything is a pure function of the configuration and the data, so every backend agrees. A prepared
shard store (`store`) as ``--dataset`` gives the same experiment without parsing text; under MPI rank 0 then
reads no shard at all (the workers read their own).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from ef21_mpi.core import plugins
from ef21_mpi.core.compressors import COMPRESSORS, PARAMETERS, Compressor, Identity, as_contractive, is_unbiased
from ef21_mpi.core.data import Dataset, shard_bounds
from ef21_mpi.core.methods import Method, make_method
from ef21_mpi.core.problems import ShardGroup, make_shards
from ef21_mpi.core.smoothness import Constants, constants_from_curvature, smoothness_constants
from ef21_mpi.core.stepsizes import Theory, theory
from ef21_mpi.errors import InputError, from_core
from ef21_mpi.runtime import store
from ef21_mpi.runtime.config import RunConfig
from ef21_mpi.runtime.datacache import load_dataset
from ef21_mpi.version import __version__


@dataclass
class Experiment:
    """A fully specified run: what the master needs, plus the shards it will hand out."""

    cfg: RunConfig
    dataset: Dataset
    shards: list[tuple[sp.csr_matrix, np.ndarray]]
    constants: Constants
    theory: Theory
    gamma: float
    compressor: Compressor
    x0: np.ndarray
    seeds: list[np.random.SeedSequence]  # one independent stream per worker
    method_class: type[Method]  # from the registry or a plug-in (`core.plugins`)
    options: dict = field(default_factory=dict)  # the method's own settings (`Method.options`)
    sizes: list[int] | None = None  # rows per shard (None: from ``shards``)
    store: str | None = None  # the shard store the workers read, if ``--dataset`` is one

    @property
    def shard_sizes(self) -> np.ndarray:
        sizes = self.sizes if self.sizes is not None else [A.shape[0] for A, _ in self.shards]
        return np.array(sizes, dtype=np.int64)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def d(self) -> int:
        return self.dataset.d

    def make_shards(self, workers: Sequence[int]) -> ShardGroup:
        """The objective of the given workers, evaluated together (see `problems`)."""
        return make_shards(self.cfg.problem, [self.shards[i] for i in workers], self.cfg.lam)

    def method(self) -> Method:
        return make_method(self.method_class, self.compressor, self.gamma, self.n, self.d, self.cfg.init,
                           **self.options)

    def release_data(self) -> None:
        """Drop the rows (the MPI master keeps no shard once the workers have theirs)."""
        self.shards = []
        self.dataset = replace(self.dataset, A=sp.csr_matrix((0, self.d)), y=np.empty(0))


def make_x0(spec: str, d: int, rng: np.random.Generator) -> np.ndarray:
    """``--x0 zeros|normal|PATH.npy``; ``normal`` draws from the master's stream of ``--seed``."""
    if spec == "zeros":
        return np.zeros(d)
    if spec == "normal":
        return rng.standard_normal(d)
    try:
        x0 = np.load(spec, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = " ".join(str(err).split())  # numpy's messages run over several lines
        raise InputError(f"--x0 {spec}: cannot read it ({reason}); expected a numeric vector of shape ({d},)") from None
    if not isinstance(x0, np.ndarray):  # a .npz archive under a .npy name
        x0.close()
        raise InputError(f"--x0 {spec}: is a .npz archive, not a .npy array; expected a vector of shape ({d},)")
    if x0.shape != (d,) or x0.dtype.kind not in "fiu":
        raise InputError(f"--x0 {spec}: expected a numeric vector of shape ({d},), got {x0.dtype} {x0.shape}")
    x0 = x0.astype(np.float64)
    if not np.isfinite(x0).all():
        raise InputError(f"--x0 {spec}: contains NaN or infinite entries")
    return x0


def too_large(dataset, cfg: RunConfig, what: str) -> str:
    return (f"{dataset.path}: the smoothness constants and the stepsize cannot be computed in float64 with these "
            f"feature values and --lam {cfg.lam} ({what}); rescale the data or choose a smaller --lam")


def check_memory(name: str, n: int, d: int) -> None:
    """Refuse a dimension whose per-worker state (n x d float64, a few copies) cannot fit in this machine."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    need = 3 * 8 * n * d  # g_i (or e_i), the master's mirror (EF21+), a gradient block
    if need > physical:
        raise InputError(f"data set {name} has d = {d} features: {n} workers' state needs about {need / 2**30:.1f} "
                         f"GiB, more than this machine's {physical / 2**30:.1f} GiB; check the file's feature indices")


def build(cfg: RunConfig, n_workers: int, need_shards: bool = True) -> Experiment:
    """Load and shard the data, compute the constants and the stepsize (SPEC 1, 2, 5, 6).

    The second half of the door: what can only be checked against the data. The core's ValueErrors
    (a malformed file, too many workers, ...) become the one-line `InputError` the user sees.
    ``need_shards=False`` (the MPI master): from a shard store, read no shard unless the constants need them.
    """
    with from_core():
        return _build(cfg, n_workers, need_shards)


def _from_store(cfg: RunConfig, n_workers: int, need_shards: bool):
    """Dataset header, shards (or none), sizes and constants from a prepared store."""
    s = store.info(cfg.dataset)
    if cfg.shuffle:
        raise InputError(f"--shuffle: {cfg.dataset} holds the sequential shards; shuffle with the LibSVM file")
    if n_workers != s.n:
        raise InputError(f"--dataset {cfg.dataset} holds {s.n} shards but the run has {n_workers} workers; "
                         f"run with --workers {s.n} or prepare the store with --workers {n_workers}")
    stored = cfg.problem == s.problem == "logreg"  # least squares also needs f*, a solve over all the data
    shards = [store.read_shard(s.path, i, s.d) for i in range(s.n)] if need_shards or not stored else []
    constants = (constants_from_curvature(cfg.problem, s.eigs, cfg.lam) if stored
                 else smoothness_constants(cfg.problem, shards, cfg.lam))
    dataset = Dataset(s.name, s.source_path, sp.csr_matrix((0, s.d)), np.empty(0), s.d, s.source_sha256)
    return dataset, shards, [int(v) for v in s.sizes], constants


def _build(cfg: RunConfig, n_workers: int, need_shards: bool) -> Experiment:
    master_seed, *worker_seeds = np.random.SeedSequence(cfg.seed).spawn(n_workers + 1)
    master_rng = np.random.default_rng(master_seed)
    shard_store = cfg.dataset if store.is_store(cfg.dataset) else None
    if shard_store is not None:
        dataset, shards, sizes, constants = _from_store(cfg, n_workers, need_shards)
    else:
        dataset = load_dataset(cfg.dataset, cfg.data_dir)
        order = master_rng.permutation(dataset.N) if cfg.shuffle else None
        A, y = (dataset.A, dataset.y) if order is None else (dataset.A[order], dataset.y[order])
        bounds = shard_bounds(dataset.N, n_workers)
        shards = [(sp.csr_matrix(A[lo:hi]), np.ascontiguousarray(y[lo:hi])) for lo, hi in bounds]
        sizes = [hi - lo for lo, hi in bounds]
        check_memory(dataset.name, n_workers, dataset.d)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                constants = smoothness_constants(cfg.problem, shards, cfg.lam)
        except (np.linalg.LinAlgError, ZeroDivisionError, OverflowError, FloatingPointError) as err:
            raise InputError(too_large(dataset, cfg, f"{type(err).__name__}: {err}")) from None
    if constants.mu is not None and cfg.stepsize is None:
        check_mu(constants, cfg, dataset.path)
    method_class = plugins.resolve_method(cfg.algorithm)
    compressor = make_compressor(cfg, method_class, dataset.d)
    try:
        th = theory(as_contractive(compressor).alpha, constants.L, constants.L_tilde, constants.mu)  # alpha = 1/(omega+1)
    except (ZeroDivisionError, OverflowError, FloatingPointError) as err:
        raise InputError(too_large(dataset, cfg, f"{type(err).__name__}: {err}")) from None
    gamma = cfg.stepsize if cfg.stepsize is not None else cfg.stepsize_multiplier * th.gamma_theory
    numbers = {"L": constants.L, "L_tilde": constants.L_tilde, "gamma_theory": th.gamma_theory, "gamma": gamma}
    bad = [f"{k} = {v!r}" for k, v in numbers.items() if not (math.isfinite(v) and (k != "gamma" or v > 0))]
    if bad:
        raise InputError(too_large(dataset, cfg, ", ".join(bad)))
    if method_class.minibatch:
        smallest = min(sizes)
        if cfg.batch_size > smallest:
            raise InputError(f"--batch-size {cfg.batch_size} exceeds the smallest shard ({smallest} rows)")
    x0 = make_x0(cfg.x0, dataset.d, master_rng)
    # the master's own random choices in the round loop (EF21-PP's S^t, EF21-BC's C_M): a child of its seed
    options = {"participation": cfg.participation, "down_compressor": cfg.down_compressor, "down_k": cfg.down_k,
               "momentum": cfg.momentum, "levels": cfg.levels, "master_seed": master_seed.spawn(1)[0]}
    exp = Experiment(cfg, dataset, shards, constants, th, gamma, compressor, x0, worker_seeds, method_class, options,
                     sizes, shard_store)
    exp.method()  # an option that only the data can refute (round(p n) = 0, --down-k > d) fails here
    return exp


def check_mu(constants: Constants, cfg: RunConfig, where: str) -> None:
    """Theorem 3's stepsize needs ``mu > 0``: at ``lam = 0`` the PL constant is 0 only when every feature value is 0
    (f is then constant); at ``lam > 0``, ``lambda_min + lam`` must stand clear of the eigensolver's rounding."""
    if cfg.lam == 0 and not constants.mu > 0:
        raise InputError(f"--problem least-squares --lam 0: every feature value in {where} is zero, so f is constant "
                         f"and Theorem 3's stepsize is undefined (mu = 0)")
    if cfg.lam > 0 and not constants.mu > 1e-12 * constants.L:
        raise InputError(f"--problem least-squares: mu = lambda_min + lam = {constants.mu:.3g} on {where} with --lam "
                         f"{cfg.lam} is within rounding of 0 (at most 1e-12 L), so Theorem 3's stepsize is undefined; "
                         f"pass a larger --lam, --lam 0 (f is PL) or --stepsize")


def make_compressor(cfg: RunConfig, method_class: type[Method], d: int) -> Compressor:
    """The run's compressor (the identity for a method that does not compress), checked against ``d``.

    An unbiased compressor (``omega``, no ``alpha``) is kept as it is: DCGD uses it so, and a method that needs a
    contractive one uses ``Q / (omega + 1)`` (`core.compressors.as_contractive`).
    """
    if not method_class.compresses:
        return Identity(d)
    builtin = isinstance(cfg.compressor, str) and cfg.compressor in COMPRESSORS
    if builtin and "k" in PARAMETERS[COMPRESSORS[cfg.compressor]] and cfg.k is not None and not 1 <= cfg.k <= d:
        raise InputError(f"--k {cfg.k} is out of range for this data set: expected 1 <= k <= d = {d}")
    try:
        compressor = plugins.resolve_compressor(cfg.compressor, cfg.compressor_args, cfg.k, d, cfg.levels)
    except ValueError as err:
        raise InputError(f"--compressor {err}") from None
    alpha, omega = plugins.constants(compressor)
    if alpha is None and omega is None:
        raise InputError(f"--compressor {plugins.spec_of(cfg.compressor)} states neither alpha nor omega")
    return compressor


def log_attributes(exp: Experiment, backend: str, mpi_library: str, world_size: int) -> dict:
    """Root attributes of the run log (SPEC 7)."""
    cfg, c, th = exp.cfg, exp.constants, exp.theory
    attrs = {
        "algorithm": plugins.spec_of(cfg.algorithm),
        "compressor": "identity" if isinstance(exp.compressor, Identity) else plugins.spec_of(cfg.compressor),
        "k": int(getattr(exp.compressor, "k", exp.compressor.n_values)),
        "alpha": th.alpha,
        "theta": th.theta,
        "beta": th.beta,
        "gamma": exp.gamma,
        "gamma_theory": th.gamma_theory,
        "stepsize_multiplier": exp.gamma / th.gamma_theory,
        "stepsize_override": cfg.stepsize is not None,
        "problem": cfg.problem,
        "lam": cfg.lam,
        "dataset": exp.dataset.name,
        "dataset_path": exp.dataset.path,
        "dataset_sha256": exp.dataset.sha256,
        "N": int(exp.shard_sizes.sum()),
        "d": exp.d,
        "n_workers": exp.n,
        "shard_sizes": exp.shard_sizes,
        "L": c.L,
        "L_i": c.L_i,
        "L_tilde": c.L_tilde,
        "init": cfg.init,
        "x0": cfg.x0,
        "seed": cfg.seed,
        "shuffle": cfg.shuffle,
        "rounds_requested": cfg.rounds,
        "tol": cfg.tol,
        "log_every": cfg.log_every,
        "backend": backend,
        "mpi_library": mpi_library,
        "world_size": world_size,
        "package_version": __version__,
        "command_line": shlex.join(["ef21-mpi", *sys.argv[1:]]),
        "status": "running",
        "config": json.dumps(cfg.numbers(), sort_keys=True),
    }
    if c.mu is not None:
        attrs["mu"] = c.mu
        attrs["mu_kind"] = c.mu_kind
        attrs["f_star"] = c.f_star
    if cfg.batch_size is not None:
        attrs["batch_size"] = cfg.batch_size
    numbers = cfg.numbers()
    if "compressor_args" in numbers and not isinstance(exp.compressor, Identity):
        attrs["compressor_args"] = json.dumps(numbers["compressor_args"], sort_keys=True)
    theorem = "3" if c.mu is not None else "2"
    cls = exp.method_class
    # "theorem-2": gamma_theory is the method's own theorem; "ef21-theorem-2": EF21's, borrowed (SPEC 8)
    attrs["stepsize_rule"] = f"theorem-{theorem}" if theorem in cls.theorems else f"ef21-theorem-{theorem}"
    if is_unbiased(exp.compressor):
        attrs["omega"] = float(exp.compressor.omega)
        attrs["compressor_scaling"] = 1.0 / (exp.compressor.omega + 1.0) if cls.contractive else 1.0
    for name in ("participation", "down_compressor", "down_k", "momentum", "levels"):
        if getattr(cfg, name) is not None:
            attrs[name] = getattr(cfg, name)
    if exp.store is not None:
        attrs["shard_store"] = exp.store
    return attrs
