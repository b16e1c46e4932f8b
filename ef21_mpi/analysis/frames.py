"""Many run logs as one tidy table (pandas): one row per logged round per run, the configuration as columns."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ef21_mpi.analysis.results import Run, bits_per_worker, load_run
from ef21_mpi.errors import InputError

#: Attributes of the log that describe the run (beside its stored configuration), one column each when present.
RUN_ATTRS = ("algorithm", "compressor", "k", "dataset", "status", "gamma", "gamma_theory", "alpha", "omega",
             "n_workers", "N", "d", "L", "L_tilde", "mu", "mu_kind", "f_star", "rounds_done", "backend", "world_size")
#: Per-row columns, in order (the log's extra series such as ``loss_gap`` follow them).
ROW_COLUMNS = ("round", "grad_norm_sq", "loss", "distortion", "wall_time", "bits_up_mean", "coords_up_mean",
               "bits_down", "bits_n_paper", "bits_n_wire")


def expand(paths_or_glob: str | Path | Iterable[str | Path]) -> list[Path]:
    """Log paths from a path, a folder (its ``*.h5``), a glob pattern, or a list of any of these."""
    items = [paths_or_glob] if isinstance(paths_or_glob, str | Path) else list(paths_or_glob)
    found: list[Path] = []
    for item in items:
        text = str(item)
        if glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"no run logs match {text}")
            found += matches
        elif Path(text).is_dir():
            found += sorted(Path(text).glob("*.h5"))
        else:
            found.append(Path(text))
    if not found:
        raise InputError(f"no run logs in {paths_or_glob}")
    return found


def run_columns(run: Run) -> dict:
    """The configuration of one run as scalar columns: its stored ``config``, then what the log says it used."""
    config = json.loads(str(run.attrs.get("config", "{}")))
    config.pop("dataset", None)  # the argument as typed (maybe a path); the log's `dataset` names the data set
    if "compressor_args" in config:
        config["compressor_args"] = json.dumps(config["compressor_args"], sort_keys=True)
    columns = {"path": str(run.path), **config}
    for name in RUN_ATTRS:
        if name in run.attrs:
            value = run.attrs[name]
            columns[name] = value.item() if isinstance(value, np.generic) else value
    return columns


def row_columns(run: Run) -> dict[str, np.ndarray]:
    """The per-row series of one run; bits are means over workers, ``bits_n_*`` cumulative (SPEC 7 conventions)."""
    columns = {"round": run.round, "grad_norm_sq": run.grad_norm_sq, "loss": run.loss, "distortion": run.distortion,
               "wall_time": run.wall_time, "bits_up_mean": run.bits_up.mean(axis=1),
               "coords_up_mean": run.coords_up.mean(axis=1), "bits_down": run.bits_down,
               "bits_n_paper": bits_per_worker(run, "paper"), "bits_n_wire": bits_per_worker(run, "wire")}
    return {**columns, **run.extra}


def load_runs(paths_or_glob: str | Path | Iterable[str | Path]):
    """A `pandas.DataFrame` with one row per logged round of every run (in the order of the paths)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("load_runs needs pandas: pip install 'ef21-mpi[analysis]'") from None
    frames = []
    for path in expand(paths_or_glob):
        run = load_run(path)
        rows = pd.DataFrame(row_columns(run))
        config = run_columns(run)
        frames.append(pd.concat([pd.DataFrame({k: [v] * run.rows for k, v in config.items()}, index=rows.index),
                                 rows], axis=1))
    return pd.concat(frames, ignore_index=True)
