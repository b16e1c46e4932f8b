"""Registry of the result-handling subcommands; each module adds its parser here."""

from ef21_mpi.analysis.sweep import register as register_sweep
from ef21_mpi.bench.bench import register as register_bench  # also adds `data synth`
from ef21_mpi.cli.inspect import register as register_inspect
from ef21_mpi.cli.plot import register as register_plot
from ef21_mpi.cli.theory import register as register_theory

PARSERS: list = [register_bench, register_inspect, register_plot, register_sweep, register_theory]
