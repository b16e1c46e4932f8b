"""Registry of the result-handling subcommands; each module adds its parser here."""

PARSERS: list = []
