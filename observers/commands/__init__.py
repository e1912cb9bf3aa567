"""The observers' subcommands of `percolator`: ``worker``, ``status``, ``notifications``.

Contributed through the entry-point group ``percolator.commands`` (pyproject.toml;
:mod:`percolator.cli`): applications above the observers library, which never
imports them.
"""
