"""Registry of the result-handling subcommands; each module adds its parser here."""

from .bench import register as register_bench  # also adds `data synth`
from .inspect_cmd import register as register_inspect
from .plot_cmd import register as register_plot
from .sweep import register as register_sweep
from .theory_cmd import register as register_theory

PARSERS: list = [register_bench, register_inspect, register_plot, register_sweep, register_theory]
