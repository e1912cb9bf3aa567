"""The `percolator` command line: a table of subcommands, each in its own module.

Each entry of :data:`COMMANDS` names a module providing ``add_arguments(parser)`` and
``run(args) -> int``.  Only the chosen command's module is imported, so a command's
dependencies cost nothing to the others and ``percolator --help`` stays fast.

Expected failures (a data directory in use, a port taken, a store or oracle error)
end as one line on stderr and exit status 1, never a traceback; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from bigtable_lite.errors import StorageError

from .errors import PercolatorError

__all__ = ["COMMANDS", "Command", "CommandError", "main"]

COMMANDS: tuple[tuple[str, str, str], ...] = (
    # (name, module, one-line summary)
    ("serve", "percolator.commands.serve",
     "run a node: the tablet store and the timestamp oracle over gRPC"),
    ("worker", "percolator.commands.worker",
     "run observers on the notifications of a cluster (or a data directory)"),
    ("status", "percolator.commands.status",
     "show observer workers' counters, pending and parked notifications"),
    ("notifications", "percolator.commands.notifications",
     "list or replay parked notifications; compact the notify table"),
    ("cluster", "percolator.commands.cluster",
     "run the demo cluster of docker-compose.yml as local processes"),
    ("demo", "percolator.commands.demo",
     "citation counts end to end, embedded: load, count, verify, edit, compare with batch"),
    ("citations", "percolator.commands.citations",
     "load citation data into a cluster, or verify its counts against a batch recount"),
    ("dev-secrets", "percolator.commands.dev_secrets",
     "make a CA, a node certificate and tokens for a development cluster"),
)

EXIT_FAILURE = 1


class CommandError(Exception):
    """An expected failure of a command: printed as one line, exit status 1."""


class Command(Protocol):
    """What a command module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CommandError, StorageError, PercolatorError, OSError)


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only ``chosen``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="percolator",
        description="Transactional, incremental processing after Google's Percolator.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_path, summary in COMMANDS:
        command_parser = sub.add_parser(name, help=summary, description=summary)
        if name == chosen:
            command = cast(Command, importlib.import_module(module_path))
            command.add_arguments(command_parser)
            command_parser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    args = build_parser(chosen).parse_args(args_list)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except EXPECTED_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"percolator {args.command}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"percolator {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130
