"""Arguments shared by commands that work on a cluster: where it is and which table.

A command that only reads, or works on data that must already be there, opens an
existing data directory only: a mistyped ``--data-dir`` is refused instead of becoming
a new, empty store that the command then reports on.
"""

from __future__ import annotations

import argparse

from bigtable_lite.datadir import is_store

from .._client import DEFAULT_LOCK_TTL, Client
from .._transaction import Transaction
from ..cli import CommandError
from ..layout import DEFAULT_TABLE
from .arg_types import node_address, positive_int


def add_target_arguments(parser: argparse.ArgumentParser, *, create: bool = False,
                         table_option: bool = True) -> None:
    """``--connect`` or ``--data-dir`` (required, one of them), and ``--table``.

    ``create``: the command may create a new data directory (it writes data of its own).
    ``table_option`` False: the command names the table otherwise (it must set
    ``args.table`` itself, e.g. as a positional argument).
    """
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", type=node_address, metavar="HOST:PORT",
                       help="a running `percolator serve` node")
    where.add_argument("--data-dir", metavar="DIR",
                       help="open the data directory in this process (no server may own it;"
                       + (" created if missing)" if create else " it must exist)"))
    if table_option:
        parser.add_argument("--table", default=DEFAULT_TABLE.decode(), metavar="NAME",
                            help="Percolator table (default %(default)s)")


def add_snapshot_argument(parser: argparse.ArgumentParser) -> None:
    """``--at TS``: read the snapshot at timestamp TS instead of a fresh one."""
    parser.add_argument("--at", type=positive_int, default=None, metavar="TS",
                        help="read the snapshot at timestamp TS (default: a fresh one);"
                        " not above the oracle's newest timestamp")


def snapshot(client: Client, at: int | None) -> Transaction:
    """A transaction reading the snapshot at ``at`` (a fresh timestamp if None).

    A snapshot above every timestamp handed out is refused: a transaction could still
    commit below it, so reading it twice could give two answers.
    """
    if at is None:
        return client.begin()
    newest = client.timestamp()
    if at > newest:
        raise CommandError(f"--at {at} is above the newest timestamp, {newest}: that snapshot"
                           " is not fixed yet")
    return Transaction(client.ctx, at)


def open_client(args: argparse.Namespace, *, lock_ttl: float | None = None,
                create: bool = False) -> Client:
    """A client of ``--connect``'s node or of ``--data-dir`` (which must hold a store unless
    ``create``)."""
    table = str(args.table).encode()
    ttl = DEFAULT_LOCK_TTL if lock_ttl is None else lock_ttl
    if args.connect:
        return Client.connect(args.connect, table=table, lock_ttl=ttl)
    if not create and not is_store(args.data_dir):
        raise CommandError(f"{args.data_dir} is not a data directory (no store in it);"
                           " check --data-dir, or --connect to a node")
    return Client.embedded(args.data_dir, table=table, lock_ttl=ttl)
