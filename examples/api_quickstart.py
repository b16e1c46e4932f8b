# %% [markdown]
# # ef21-mpi from Python
#
# Run configurations with `ef21_mpi.simulate`, read their logs back as one table with `ef21_mpi.load_runs`
# (needs pandas: `pip install 'ef21-mpi[analysis]'`). Each `# %%` is a notebook cell; as a script:
# `PYTHONPATH=examples python examples/api_quickstart.py [DATASET] [ROUNDS]` (defaults: a9a, 200).

# %%
import sys
import tempfile
from pathlib import Path

from block_top_k import BlockTopK  # a plug-in compressor (examples/block_top_k.py)
from damped_shifts import DampedShifts  # a plug-in method (examples/damped_shifts.py)

import ef21_mpi

dataset = sys.argv[1] if len(sys.argv) > 1 else "a9a"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
folder = Path(tempfile.mkdtemp(prefix="ef21-quickstart-"))

# %% EF21 with Top-1 at 1x and 4x its theoretical stepsize, 20 workers in this process
runs = [ef21_mpi.simulate(dataset=dataset, k=1, rounds=rounds, stepsize_multiplier=m, quiet=True,
                          out=folder / f"ef21-top1-x{m}.h5") for m in (1, 4)]
print({run.path.name: f"{run.status}, grad_norm_sq {run.grad_norm_sq[-1]:.3e}" for run in runs})

# %% A compressor object (here a plug-in class instance), and a plug-in method passed as its class
d = int(runs[0].attrs["d"])
block = ef21_mpi.simulate(dataset=dataset, compressor=BlockTopK(d=d, block=2), rounds=rounds, stepsize_multiplier=4,
                          quiet=True, out=folder / "ef21-block2-x4.h5")
damped = ef21_mpi.simulate(dataset=dataset, algorithm=DampedShifts, k=1, rounds=rounds, stepsize_multiplier=4,
                           quiet=True, out=folder / "damped-top1-x4.h5")

# %% No `out`: the log goes to a temporary folder, and the Run says where
scratch = ef21_mpi.simulate(dataset=dataset, algorithm="gd", rounds=20, quiet=True)
print("GD log:", scratch.path)

# %% All of them as one tidy table: one row per logged round per run, the configuration as columns
table = ef21_mpi.load_runs(folder / "*.h5")
last = table.groupby("path").tail(1)
print(last[["algorithm", "compressor", "k", "stepsize_multiplier", "round", "grad_norm_sq", "bits_n_paper"]]
      .to_string(index=False))
