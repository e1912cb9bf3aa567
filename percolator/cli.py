"""The `percolator` command line: subcommands found through the entry-point group
``percolator.commands``, each in its own module.

Each entry point names a module (``serve = "percolator.commands.serve"``) that provides
``add_arguments(parser)`` and ``run(args) -> int``; the first line of its docstring is
the summary ``percolator --help`` shows.  Every package contributes its own commands
(pyproject.toml): percolator its node (``serve``), observers the workers' commands
(``worker``, ``status``, ``notifications``), the citations example its own
(``citations``, ``demo``, ``cluster``).  So a command sits above the library it uses
and this module imports none of them by name.

Only the chosen command's module is imported; the others' summaries are read from
their source (not imported: ``observers.x`` would import all of ``observers``), so
``percolator --help`` stays fast.

Expected failures (a data directory in use, a port taken, a store or oracle error)
end as one line on stderr and exit status 1, never a traceback; usage errors exit 2.
Diagnostics go through :mod:`logging` to stderr (``--log-level``); a command's own
output goes to stdout.

gRPC's C core logs to stderr by itself (``WARNING: All log messages before
absl::InitializeLog() ...``, ``fork_posix.cc`` lines) unless ``GRPC_VERBOSITY`` says
otherwise, and reads it once, when grpc is imported: :func:`main` sets quiet defaults
first, so nothing imported before it runs may import grpc (tests/test_cli.py checks).
Set ``GRPC_VERBOSITY=error`` (or ``debug``) to see them.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

from bigtable_lite.errors import StorageError

from .errors import PercolatorError

__all__ = ["ENTRY_POINT_GROUP", "Command", "CommandError", "installed_commands", "main"]

ENTRY_POINT_GROUP = "percolator.commands"
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
GRPC_QUIET = {"GRPC_VERBOSITY": "NONE", "GRPC_TRACE": ""}
"""Environment defaults set before grpc is imported; values already set are kept."""

class CommandError(Exception):
    """An expected failure of a command: printed as one line, exit status 1."""


class Command(Protocol):
    """What a command module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CommandError, StorageError, PercolatorError, OSError)


def installed_commands() -> dict[str, str]:
    """Command name -> module of every installed entry point of ``percolator.commands``.

    Raises CommandError if two installed packages claim one name.
    """
    found: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name] != ep.value:
            raise CommandError(f"command {ep.name!r} is installed twice ({found[ep.name]} and"
                               f" {ep.value}); uninstall one")
        found[ep.name] = ep.value
    return found


def summary(module: str) -> str:
    """The first line of ``module``'s docstring, read from its source without importing it
    ("" if there is no source to read: choosing the command then says what is wrong)."""
    path = _source_path(module)
    if path is None:
        return ""
    try:
        with open(path, "rb") as source:
            return _first_line(ast.get_docstring(ast.parse(source.read(), path)) or "")
    except (OSError, SyntaxError, ValueError):
        return ""


def _first_line(doc: str) -> str:
    lines = doc.strip().splitlines()
    return lines[0].rstrip(".") if lines else ""


def _source_path(module: str) -> str | None:
    """Where ``module``'s source is, found package by package without importing any.

    (``importlib.util.find_spec("a.b")`` would import ``a``.)
    """
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    name = top
    for part in rest:
        if spec is None or spec.submodule_search_locations is None:
            return None
        name = f"{name}.{part}"
        spec = importlib.machinery.PathFinder.find_spec(name,
                                                        list(spec.submodule_search_locations))
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return spec.origin


def load_command(module: str) -> Command:
    """The command module ``module`` (an entry point's value), imported."""
    if ":" in module:
        raise CommandError(f"a {ENTRY_POINT_GROUP} entry point names a module, not {module!r}")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise CommandError(f"cannot import command module {module}: {exc}") from exc
    if not callable(getattr(loaded, "add_arguments", None)) or not callable(
            getattr(loaded, "run", None)):
        raise CommandError(f"command module {module} lacks add_arguments() or run()")
    return cast(Command, loaded)


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        dists = importlib.metadata.packages_distributions().get(__package__ or "percolator")
        if not dists:
            parser.exit(EXIT_FAILURE, "percolator: no package metadata; install the package"
                        " (pip install -e .)\n")
        print(f"percolator {importlib.metadata.version(dists[0])}", flush=True)
        parser.exit()


def _add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default=default,
                        help="diagnostics at this level and above go to stderr (default"
                        " warning; gRPC's own C-core log stays off unless GRPC_VERBOSITY is"
                        " set)")


def build_parser(commands: Mapping[str, str], chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only ``chosen``'s module is imported, to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="percolator",
        description="Transactional, incremental processing after Google's Percolator.")
    parser.add_argument("--version", action=_Version)
    _add_log_level(parser, "warning")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in sorted(commands):
        if name != chosen:
            # Summaries only matter to `percolator --help` (no command chosen).
            line = summary(commands[name]) if chosen is None else ""
            sub.add_parser(name, help=line, description=line)
            continue
        command = load_command(commands[name])
        line = _first_line(cast(Any, command).__doc__ or "")
        command_parser = sub.add_parser(name, help=line, description=line)
        # Also after the command; SUPPRESS keeps the value given before it.
        _add_log_level(command_parser, argparse.SUPPRESS)
        command.add_arguments(command_parser)
        command_parser.set_defaults(run=command.run)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The first argument that is not an option or the value of ``--log-level``."""
    args = iter(argv)
    for arg in args:
        if arg == "--log-level":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    for key, value in GRPC_QUIET.items():
        os.environ.setdefault(key, value)
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = chosen_command(args_list)
    try:
        commands = installed_commands()
        if not commands:
            raise CommandError(f"no commands installed (entry-point group {ENTRY_POINT_GROUP}"
                               " is empty); reinstall the package: pip install -e .")
        parser = build_parser(commands, chosen if chosen in commands else None)
    except CommandError as exc:
        print(f"percolator: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    args = parser.parse_args(args_list)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    try:
        return int(args.run(args))
    except EXPECTED_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"percolator {args.command}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"percolator {args.command}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
