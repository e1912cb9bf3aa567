"""Arguments shared by commands that work on a cluster: where it is and which table.

A command that only reads, or works on data that must already be there, opens an
existing data directory only: a mistyped ``--data-dir`` is refused instead of becoming
a new, empty store that the command then reports on.
"""

from __future__ import annotations

import argparse

from bigtable_lite.datadir import is_store

from .._client import DEFAULT_LOCK_TTL, Client
from .._gc import DEFAULT_GC_LIFE_TIME
from ..cli import CommandError
from ..layout import DEFAULT_TABLE
from .arg_types import node_address


def add_target_arguments(parser: argparse.ArgumentParser, *, create: bool = False) -> None:
    """``--connect`` or ``--data-dir`` (required, one of them), and ``--table``.

    ``create``: the command may create a new data directory (it writes data of its own).
    """
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", type=node_address, metavar="HOST:PORT",
                       help="a running `percolator serve` node")
    where.add_argument("--data-dir", metavar="DIR",
                       help="open the data directory in this process (no server may own it;"
                       + (" created if missing)" if create else " it must exist)"))
    parser.add_argument("--table", default=DEFAULT_TABLE.decode(), metavar="NAME",
                        help="Percolator table (default %(default)s)")


def open_client(args: argparse.Namespace, *, lock_ttl: float | None = None,
                create: bool = False, gc_life_time: float = DEFAULT_GC_LIFE_TIME,
                timeout: float = 30.0) -> Client:
    """A client of ``--connect``'s node (each call bounded by ``timeout`` seconds) or of
    ``--data-dir`` (which must hold a store unless ``create``; its garbage collection
    runs in the background with ``gc_life_time``)."""
    table = str(args.table).encode()
    ttl = DEFAULT_LOCK_TTL if lock_ttl is None else lock_ttl
    if args.connect:
        return Client.connect(args.connect, table=table, lock_ttl=ttl, timeout=timeout)
    if not create and not is_store(args.data_dir):
        raise CommandError(f"{args.data_dir} is not a data directory (no store in it);"
                           " check --data-dir, or --connect to a node")
    return Client.embedded(args.data_dir, table=table, lock_ttl=ttl, gc_life_time=gc_life_time)
