"""Reading run logs (SPEC 7): load a log, derive bits/n, summarise a run, label it for a legend.

A log on disk is always a complete HDF5 file (the writer renames a fresh snapshot over it), so these
functions work on a run that is still going. The file is read by `ef21_mpi.runtime.logschema.read_log`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ef21_mpi.core import plugins
from ef21_mpi.core.methods import METHODS
from ef21_mpi.errors import InputError
from ef21_mpi.runtime.logschema import COLUMNS, LogData, read_log

BITS_PER_COORDINATE = 32  # the paper's convention (SPEC 7)
CONVENTIONS = ("paper", "wire", "total")


# --- facts about methods: the one place analysis asks about a method ---------------------------------------


@dataclass(frozen=True)
class UnknownMethod:
    """The facts of a logged method this version does not know: its own name, no colour, no theorem."""

    display_name: str
    initialises: bool = False
    theorems: tuple[str, ...] = ()
    color: str | None = None
    compresses: bool = True
    has_g: bool = False


def method_facts(algorithm: str):
    """The method's class (``display_name``, ``initialises``, ``theorems``, ``color``): from the registry, or the
    plug-in class a ``package.module:ClassName`` names if it imports here; otherwise only its name is known."""
    if algorithm in METHODS:
        return METHODS[algorithm]
    if plugins.is_spec(algorithm):
        try:
            return plugins.resolve_method(algorithm)
        except ValueError:
            pass
    return UnknownMethod(algorithm)


# --- one run log in memory ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One run log in memory: its root attributes and its datasets as numpy arrays."""

    path: Path
    attrs: dict
    round: np.ndarray
    grad_norm_sq: np.ndarray
    loss: np.ndarray
    distortion: np.ndarray
    wall_time: np.ndarray
    bits_up: np.ndarray  # [R, n]
    coords_up: np.ndarray  # [R, n]
    bits_down: np.ndarray
    x_final: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # problem-specific columns (loss_gap)

    @property
    def status(self) -> str:
        return str(self.attrs.get("status", "unknown"))

    @property
    def rows(self) -> int:
        return len(self.round)

    def series(self, name: str) -> np.ndarray:
        """A per-row column by name (``grad_norm_sq``, ``loss``, ``distortion``, ``loss_gap``, ...)."""
        if name in COLUMNS:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        raise InputError(f"{self.path}: the log has no column {name!r}")


    @classmethod
    def from_log(cls, log: LogData) -> Run:
        x_final = log.x_final if log.x_final is not None else np.zeros(0)
        return cls(log.path, log.attrs, x_final=x_final, extra=log.extra, **{name: log[name] for name in COLUMNS})


def load_run(path: str | Path) -> Run:
    """Read a run log, finished or still being written; InputError if it is missing or not a run log."""
    return Run.from_log(read_log(path))


def bits_per_worker(run: Run, convention: str = "paper") -> np.ndarray:
    """Cumulative bits sent per worker (mean over workers) at each row.

    ``paper``: 32 bits per sent coordinate, the initialisation not counted (row 0 of EF21, EF21+ and
    EF21-SGD, which send ``g_i^0`` there; row 0 of EF, GD and DCGD is their first step and counts).
    ``wire``: the bits actually put on the wire, the initialisation included.
    ``total``: ``wire`` plus the master's broadcasts, which every worker receives (uplink and downlink).
    """
    if convention == "paper":
        per_row = BITS_PER_COORDINATE * run.coords_up.mean(axis=1)
        if len(per_row) and method_facts(str(run.attrs.get("algorithm", "?"))).initialises:
            per_row[0] = 0.0
    elif convention in ("wire", "total"):
        per_row = run.bits_up.mean(axis=1).astype(np.float64)
        if convention == "total":
            per_row = per_row + run.bits_down
    else:
        raise InputError(f"unknown bits convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    return np.cumsum(per_row)


def method_name(run: Run) -> str:
    return method_facts(str(run.attrs.get("algorithm", "?"))).display_name


def compressor_name(run: Run) -> str:
    """``top-1``, ``rand-4`` or ``identity``."""
    compressor = str(run.attrs.get("compressor", "?"))
    if compressor in ("top-k", "rand-k") and "k" in run.attrs:
        return f"{compressor[:-2]}-{int(run.attrs['k'])}"
    return compressor


def multiplier(run: Run) -> float:
    """``gamma / gamma_theory``."""
    gamma_theory = float(run.attrs.get("gamma_theory", float("nan")))
    return float(run.attrs.get("gamma", float("nan"))) / gamma_theory if gamma_theory else float("nan")


def stepsize_label(run: Run) -> str:
    """``4x`` (a multiple of the theoretical stepsize) or ``gamma=0.01`` (an absolute ``--stepsize``)."""
    if bool(run.attrs.get("stepsize_override", False)):
        return f"gamma={float(run.attrs['gamma']):.3g}"
    return f"{multiplier(run):.6g}x"


def label(run: Run, omit: tuple[str, ...] = (), with_dataset: bool = False) -> str:
    """Legend label such as ``EF21, top-1, 4x``; ``omit`` drops parts (``compressor``, ``stepsize``)."""
    parts = [method_name(run)]
    if "compressor" not in omit and compressor_name(run) != "identity":
        parts.append(compressor_name(run))
    if "stepsize" not in omit:
        parts.append(stepsize_label(run))
    if with_dataset:
        parts.append(str(run.attrs.get("dataset", "?")))
    return ", ".join(parts)


def resolve_tol(run: Run, tol: float | None) -> float | None:
    """The tolerance a summary uses: the given one, else the run's ``--tol`` if it was positive."""
    if tol is not None:
        return tol
    run_tol = float(run.attrs.get("tol", 0.0) or 0.0)
    return run_tol if run_tol > 0 else None


def first_below(run: Run, tol: float) -> int | None:
    """Index of the first row with ``grad_norm_sq <= tol``, or None."""
    hits = np.flatnonzero(run.grad_norm_sq <= tol)
    return int(hits[0]) if len(hits) else None


def _number(value) -> float | None:
    """A float for JSON: NaN and infinities become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summary(run: Run, tol: float | None = None) -> dict:
    """The numbers a person asks about a run first (see ``ef21-mpi inspect``); JSON-ready."""
    a = run.attrs
    g = run.grad_norm_sq
    finite = np.isfinite(g)
    best_row = int(np.argmin(np.where(finite, g, np.inf))) if finite.any() else None
    paper = bits_per_worker(run, "paper")
    wire = bits_per_worker(run, "wire")
    total = bits_per_worker(run, "total")
    tol = resolve_tol(run, tol)
    tol_row = first_below(run, tol) if tol is not None else None
    last_round = int(run.round[-1]) if run.rows else 0
    loop_time = float(run.wall_time[-1]) if run.rows else 0.0
    return {
        "file": str(run.path),
        "label": label(run),
        "method": method_name(run),
        "algorithm": a.get("algorithm"),
        "compressor": compressor_name(run),
        "k": int(a["k"]) if "k" in a else None,
        "dataset": a.get("dataset"),
        "n": int(a["n_workers"]) if "n_workers" in a else int(run.bits_up.shape[1]),
        "d": int(a["d"]) if "d" in a else None,
        "backend": a.get("backend"),
        "seed": int(a["seed"]) if "seed" in a else None,
        "x0": a.get("x0"),
        "lam": _number(a.get("lam")),
        "gamma": _number(a.get("gamma")),
        "gamma_theory": _number(a.get("gamma_theory")),
        "multiplier": _number(multiplier(run)),
        "stepsize_override": bool(a.get("stepsize_override", False)),
        "status": run.status,
        "rounds_requested": int(a["rounds_requested"]) if "rounds_requested" in a else None,
        "rounds_done": int(a.get("rounds_done", last_round)),
        "rows": run.rows,
        "grad_norm_sq_first": _number(g[0]) if run.rows else None,
        "grad_norm_sq_last": _number(g[-1]) if run.rows else None,
        "grad_norm_sq_best": _number(g[best_row]) if best_row is not None else None,
        "best_round": int(run.round[best_row]) if best_row is not None else None,
        "tol": tol,
        "tol_round": int(run.round[tol_row]) if tol_row is not None else None,
        "tol_bits_paper": float(paper[tol_row]) if tol_row is not None else None,
        "tol_bits_wire": float(wire[tol_row]) if tol_row is not None else None,
        "tol_bits_total": float(total[tol_row]) if tol_row is not None else None,
        "bits_paper": float(paper[-1]) if run.rows else 0.0,
        "bits_wire": float(wire[-1]) if run.rows else 0.0,
        "wall_time": loop_time,
        "elapsed_seconds": _number(a.get("elapsed_seconds")),
        "rounds_per_second": _number(last_round / loop_time) if loop_time > 0 else None,
    }


def tuning_key(s: dict, bits: str = "paper") -> tuple:
    """Order in which summaries rank when tuning (smaller is better).

    Runs that reach the summary's tol come first, by fewest paper bits/n to reach it; the others follow
    by lowest final grad_norm_sq (diverged or non-finite runs last). Give every candidate the same bits/n
    budget, or the second group compares unequal budgets.
    """
    if s[f"tol_bits_{bits}"] is not None:
        return (0, s[f"tol_bits_{bits}"], s["tol_round"])
    last = s["grad_norm_sq_last"]
    if s["status"] == "diverged" or last is None:
        return (2, math.inf, 0)
    return (1, last, 0)


def outcome(run: Run, tol: float) -> str:
    """A few words on how a run ended relative to ``tol``: reached, stalled, erratic, still decreasing, diverged."""
    g = run.grad_norm_sq
    finite = g[np.isfinite(g)]
    row = first_below(run, tol)
    if row is not None:
        text = f"reached {tol:.0e} at round {int(run.round[row])}"
        if run.status != "converged" and np.isfinite(g[-1]) and g[-1] > 100 * tol:
            text += f", then unstable (final {g[-1]:.1e})"
        return text
    if run.status == "diverged" or len(finite) < len(g) or (len(g) and g[-1] > g[0]):
        return "diverged"
    if len(finite) < 8:
        return f"not reached ({finite[-1]:.1e})" if len(finite) else "no data"
    quarter = len(finite) // 4
    tail = finite[-quarter:]
    if tail.max() > 100 * tail.min():  # jumps over two orders of magnitude near the end
        return f"erratic ({tail.min():.0e} to {tail.max():.0e})"
    previous, last = finite[-2 * quarter:-quarter].min(), tail.min()
    steady = last < previous and finite[-1] <= 1.01 * finite.min()  # slow but still making new lows
    if last > 0.5 * previous and not steady:  # under a factor 2 in the last quarter, no new lows: a plateau
        return f"stalls at ~{np.median(tail):.1e}"
    return f"still decreasing ({finite[-1]:.1e})"
