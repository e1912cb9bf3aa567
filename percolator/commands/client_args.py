"""Arguments shared by commands that work on a cluster: where it is and which table."""

from __future__ import annotations

import argparse

from .._client import DEFAULT_LOCK_TTL, Client
from ..layout import DEFAULT_TABLE


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="HOST:PORT",
                       help="a running `percolator serve` node")
    where.add_argument("--data-dir", metavar="DIR",
                       help="open the data directory in this process (no server may own it)")
    parser.add_argument("--table", default=DEFAULT_TABLE.decode(), metavar="NAME",
                        help="Percolator table (default %(default)s)")


def open_client(args: argparse.Namespace, *, lock_ttl: float | None = None) -> Client:
    table = str(args.table).encode()
    ttl = DEFAULT_LOCK_TTL if lock_ttl is None else lock_ttl
    if args.connect:
        return Client.connect(args.connect, table=table, lock_ttl=ttl)
    return Client.embedded(args.data_dir, table=table, lock_ttl=ttl)
