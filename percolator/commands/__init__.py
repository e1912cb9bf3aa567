"""percolator's own subcommands and the helpers every package's commands share.

A command module is named by an entry point of group ``percolator.commands``
(pyproject.toml; see :mod:`percolator.cli`): ``serve`` and ``dev-secrets`` live here, the observers'
and the citation example's commands in ``observers.commands`` and
``observers.citations.commands``, above the libraries they use.  ``arg_types`` and
``client_args`` are shared by all of them.
"""
