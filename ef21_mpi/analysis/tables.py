"""Comparing run summaries (`results.summary`): which columns tell them apart, sorting, the best run per method,
and repetitions that differ only by their seed folded into median and range."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from ef21_mpi.analysis.results import tuning_key

#: Properties shown as table columns only when the compared runs do not all share them.
DISTINGUISHING = ("n", "backend", "seed", "x0", "lam", "file")
#: What ``--sort`` accepts: a column, and how to order by it (missing values last).
SORT_KEYS = {
    "file": lambda s: s["file"],
    "label": lambda s: s["label"],
    "method": lambda s: (s["method"], s["label"]),
    "last": lambda s: _or_inf(s["grad_norm_sq_last"]),
    "best": lambda s: _or_inf(s["grad_norm_sq_best"]),
    "tol-round": lambda s: _or_inf(s["tol_round"]),
    "tol-bits": lambda s: _or_inf(s["tol_bits_paper"]),
    "tuning": tuning_key,
}
#: Numbers folded over seeds (median, min, max); the rest must agree or the runs are not repetitions.
FOLDED = ("grad_norm_sq_last", "grad_norm_sq_best", "tol_round", "tol_bits_paper", "bits_paper", "bits_wire",
          "wall_time", "rounds_done")
_PER_RUN = ("file", "seed", "status", "rows", "grad_norm_sq_first", "best_round", "tol_bits_wire", "tol_bits_total",
            "elapsed_seconds", "rounds_per_second", *FOLDED)


def _or_inf(value) -> float:
    return float("inf") if value is None else value


def differing(summaries: Sequence[dict]) -> list[str]:
    """The `DISTINGUISHING` properties whose values are not all the same; the file only when the rows would
    otherwise look alike."""
    keys = [key for key in DISTINGUISHING if key != "file" and len({str(s.get(key)) for s in summaries}) > 1]
    shown = [(s["label"], s["dataset"], *(str(s.get(k)) for k in keys)) for s in summaries]
    return keys + (["file"] if len(set(shown)) < len(shown) else [])


def sort(summaries: Sequence[dict], key: str) -> list[dict]:
    return sorted(summaries, key=SORT_KEYS[key])


def best_by_method(summaries: Sequence[dict]) -> list[dict]:
    """Per data set and method, the run that ranks first by the tuning rule (`results.tuning_key`)."""
    best: dict[tuple, dict] = {}
    for s in summaries:
        group = (s["dataset"], s["method"])
        if group not in best or tuning_key(s) < tuning_key(best[group]):
            best[group] = s
    return list(best.values())


def fold_seeds(summaries: Sequence[dict]) -> list[dict]:
    """Runs identical but for their seed become one row: the median of each `FOLDED` number, its range in
    ``spread`` and the number of seeds in ``seeds``; ``status`` lists the distinct outcomes."""
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        groups.setdefault(tuple(str(v) for k, v in sorted(s.items()) if k not in _PER_RUN), []).append(s)
    folded = []
    for members in groups.values():
        row = dict(members[0])
        row["seeds"] = len(members)
        row["file"] = ", ".join(m["file"] for m in members) if len(members) > 1 else members[0]["file"]
        row["seed"] = ",".join(str(m["seed"]) for m in members)
        row["status"] = "/".join(sorted({m["status"] for m in members}))
        row["spread"] = {}
        for key in FOLDED:
            values = [m[key] for m in members if m[key] is not None]
            # a tolerance reached by only some seeds has no median over all of them
            row[key] = statistics.median(values) if len(values) == len(members) else None
            row["spread"][key] = (min(values), max(values)) if values else None
        folded.append(row)
    return folded
