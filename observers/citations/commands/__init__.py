"""The citation example's subcommands of `percolator`: ``citations``, ``demo``, ``cluster``.

Contributed through the entry-point group ``percolator.commands`` (pyproject.toml;
:mod:`percolator.cli`), like the observers' own commands.
"""
