"""Subcommands of the `percolator` CLI, one module each (see ``percolator.cli.COMMANDS``)."""
