"""ef21-mpi: communication-compressed distributed optimisation (EF21 and friends) with real message passing.

The Python API (`simulate`, `load_run`, `load_runs`, `Run`) is imported on first use, so that
``import ef21_mpi`` stays light and sets the BLAS defaults below before anything imports numpy.
"""

import os

from ef21_mpi.version import __version__

# One BLAS thread per process: the parallelism of a run is its processes (21 ranks on a laptop would
# otherwise start hundreds of threads), and a fixed thread count keeps BLAS reductions in one order, so
# the serial and MPI backends stay bit-identical. Only a default: a user's setting wins. Takes effect when
# ef21_mpi is imported before numpy (always the case for the ef21-mpi command).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

__all__ = ["Run", "__version__", "load_run", "load_runs", "simulate"]
API = ("Run", "load_run", "load_runs", "simulate")  # from ef21_mpi.api, on first use


def __getattr__(name: str):
    if name in API:
        from ef21_mpi import api

        return getattr(api, name)
    raise AttributeError(f"module 'ef21_mpi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
