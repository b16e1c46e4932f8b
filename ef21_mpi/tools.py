"""Registry of the result-handling subcommands; each module adds its parser here."""

from .theory_cmd import register as register_theory

PARSERS: list = [register_theory]
