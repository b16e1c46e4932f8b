"""The Python API: run one configuration from a script, a notebook or a thread, and read run logs back.

It sits above the runtime and the analysis and adds no second validation: `simulate` turns its keywords
into a `RunConfig` exactly as ``ef21-mpi run`` turns its flags (`runtime.config.from_options`) and runs it
through the same session (`runtime.session.run`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ef21_mpi.analysis.frames import load_runs
from ef21_mpi.analysis.results import Run, load_run
from ef21_mpi.runtime.config import from_options
from ef21_mpi.runtime.configfile import read_config_file
from ef21_mpi.runtime.session import run

__all__ = ["Run", "load_run", "load_runs", "simulate"]

PATH_OPTIONS = ("dataset", "data_dir", "out", "x0")  # may be given as pathlib.Path


def simulate(config: str | os.PathLike | None = None, **options) -> Run:
    """Run one configuration and return its log as a `Run` (``run.path`` is the log's file).

    Keywords are the ``ef21-mpi run`` flags with ``-`` as ``_`` (``dataset``, ``algorithm``, ``compressor``,
    ``k``, ``workers``, ``rounds``, ``stepsize_multiplier``, ``seed``, ...), with the same defaults, except
    that the backend is ``serial`` and ``out=None`` writes the log to a new temporary folder.
    ``compressor`` may be a compressor object or class, ``algorithm`` a `Method` subclass. ``config``: a TOML
    file of options, as ``ef21-mpi run --config`` reads it; the keywords win over it.

    Raises TypeError for an unknown keyword and `ef21_mpi.errors.InputError` for a bad value (nothing is
    written then); RuntimeError if the run failed (its log says ``failed``) and KeyboardInterrupt if it was
    interrupted by Ctrl-C (after a checkpoint: the log can be resumed). A diverged run is returned like a
    completed one (``run.status`` says which). The process's signal handlers are as before afterwards.
    """
    options = {k: os.fspath(v) if k in PATH_OPTIONS and isinstance(v, os.PathLike) else v
               for k, v in options.items()}
    if config is not None:
        options = {**read_config_file(config), **options}
    options.setdefault("backend", "serial")
    temporary = options.get("out") is None
    if temporary:
        options["out"] = str(Path(tempfile.mkdtemp(prefix="ef21-mpi-")) / "run.h5")
    try:
        code = run(from_options(options))
    except BaseException:
        if temporary and not Path(options["out"]).exists():
            shutil.rmtree(Path(options["out"]).parent, ignore_errors=True)
        raise
    result = load_run(options["out"])
    if result.status == "interrupted":
        raise KeyboardInterrupt(f"run interrupted at round {result.attrs.get('rounds_done')}; "
                                f"continue with: ef21-mpi run --resume {result.path}")
    if code != 0 and result.status != "diverged":
        raise RuntimeError(f"run {result.status}: see {result.path}")
    return result
