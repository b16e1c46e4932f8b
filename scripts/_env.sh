# Shared by scripts/test and scripts/demo: make sure a Python environment with ef21-mpi (and its MPI,
# test and plot extras) is active, and point EF21_DATA_DIR at the data sets when it is not set.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! python -c "import ef21_mpi, mpi4py, h5py, pytest, matplotlib" >/dev/null 2>&1; then
  if [ ! -x "$root/.venv/bin/python" ]; then
    echo "setting up $root/.venv (first run only)" >&2
    python3 -m venv "$root/.venv"
    "$root/.venv/bin/pip" install -q --upgrade pip
    "$root/.venv/bin/pip" install -q -e "$root[mpi,test,plot]"
  fi
  # shellcheck disable=SC1091
  . "$root/.venv/bin/activate"
fi
if [ -z "${EF21_DATA_DIR:-}" ] && [ -d "$root/../shared/data/libsvm" ]; then
  EF21_DATA_DIR="$(cd "$root/../shared/data/libsvm" && pwd)"
  export EF21_DATA_DIR
fi
