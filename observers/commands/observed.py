"""Register, unregister and list observed columns, with no worker running.

`percolator observers register COLUMN` makes every commit from now on leave
notifications for COLUMN, and queues the cells committed before (the backfill, which
runs where the data is and shows its progress in ``list`` and ``percolator status``);
a worker started later finds them all.  ``unregister`` stops new notifications and
says how many are still pending (they stay, and are delivered to any worker that
observes the column).  ``list`` shows every observed column (and columns with
notifications left), with its backfill progress, pending notifications and live
workers.  Works on a node (``--connect``) and on a data directory (``--data-dir``).
"""

from __future__ import annotations

import argparse

from observers import format_column
from percolator.cli import CommandError
from percolator.commands.client_args import add_target_arguments, open_client


def column_bytes(value: str) -> bytes:
    """A column or prefix given as text: UTF-8, with backslash escapes (``\\x00cq/``)."""
    try:
        return value.encode("utf-8").decode("unicode_escape").encode("latin-1")
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value!r}: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("register", "unregister", "list"),
                        help="register or unregister a column, or list the observed ones")
    parser.add_argument("column", nargs="?", type=column_bytes, default=None,
                        help="the column (with register and unregister); backslash escapes"
                        " allowed")
    add_target_arguments(parser, create=True)
    parser.add_argument("--partition-prefix", type=column_bytes, default=b"", metavar="TEXT",
                        help="with register: rows starting with it are assigned to the worker"
                        " of the same row without it (the observer's partition_prefix)")
    parser.add_argument("--no-backfill", action="store_true",
                        help="with register: do not queue the cells committed before")


def run(args: argparse.Namespace) -> int:
    if (args.column is None) != (args.action == "list"):
        raise CommandError("register and unregister take a column; list takes none")
    client = open_client(args, create=args.action == "register")
    try:
        n = client.notifications
        table = client.table
        if args.action == "register":
            try:
                done = n.register(table, args.column, args.partition_prefix,
                                  not args.no_backfill)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            how = "registered" if done.new else "already registered"
            text = args.column.decode("utf-8", "backslashreplace")
            backfill = "" if args.no_backfill or not done.new else \
                "; cells committed before are being queued (see `percolator observers list`)"
            print(f"{text}: {how} at {done.at}{backfill}", flush=True)
        elif args.action == "unregister":
            at, pending = n.unregister(table, args.column)
            text = args.column.decode("utf-8", "backslashreplace")
            print(f"{text}: unregistered at {at}; {pending:,} notifications still pending"
                  f"{' (delivered to any worker that observes it)' if pending else ''}",
                  flush=True)
        else:
            columns = n.columns(table)
            print("observed columns:" if columns else "observed columns: none", flush=True)
            for c in columns:
                print(format_column(c), flush=True)
    finally:
        client.close()
    return 0
