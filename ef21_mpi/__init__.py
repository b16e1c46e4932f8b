"""ef21-mpi: communication-compressed distributed optimisation (EF21 and friends) with real message passing."""

import os

__version__ = "0.1.0"

# One BLAS thread per process: the parallelism of a run is its processes (21 ranks on a laptop would
# otherwise start hundreds of threads), and a fixed thread count keeps BLAS reductions in one order, so
# the serial and MPI backends stay bit-identical. Only a default: a user's setting wins. Takes effect when
# ef21_mpi is imported before numpy (always the case for the ef21-mpi command).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
