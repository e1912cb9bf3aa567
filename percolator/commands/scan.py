"""Show a table's cells: committed values at a snapshot, or with --raw every stored record.

`percolator scan [TABLE]` prints what a transaction's scan sees (``row  column  value``),
at a fresh snapshot or ``--at TS``.  With ``--raw`` it prints every version of every
record of each cell instead, decoded (``percolator._inspection``): the lock slot
(owner's start_ts, put or delete, its primary, the TTL left by the backend's clock, an
inlined value), write records (commit_ts, start_ts, the value or where it is), data
versions, rollback markers, notifications, and the system cells of the layers above
(e.g. observers' acks); a record that does not decode is shown as such, with its bytes
in hex, and the scan goes on.  ``--raw`` reads the raw tablet store (a node's tablet
service: the ``read`` role), so it sees what no transaction can read.

Rows, columns and values print as text that maps back to their bytes (``\\xNN`` for a
byte that is not printable UTF-8, ``\\\\`` for a backslash: ``byte_text``); text cuts
long values, ``--json`` prints one JSON object per cell (per record with ``--raw``)
per line, values whole.
"""

from __future__ import annotations

import argparse
import json

from .._client import Client
from .._inspection import raw_rows
from ..cli import CommandError
from ..layout import DEFAULT_TABLE
from .arg_types import positive_int
from .byte_text import argument, show
from .client_args import add_snapshot_argument, add_target_arguments, open_client, snapshot
from .record_text import record_json, record_text, value_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", nargs="?", default=DEFAULT_TABLE.decode(), metavar="TABLE",
                        help="Percolator table (default %(default)s)")
    add_target_arguments(parser, table_option=False)
    parser.add_argument("--start", type=argument, default=None, metavar="ROW",
                        help="first row (default: the table's first)")
    parser.add_argument("--end", type=argument, default=None, metavar="ROW",
                        help="end of the range, not included (default: the table's end)")
    parser.add_argument("--columns", type=argument, nargs="+", default=None, metavar="COLUMN",
                        help="only these columns")
    parser.add_argument("--raw", action="store_true",
                        help="every stored version of every record, decoded (locks, write"
                        " records, data, rollback markers, notifications)")
    add_snapshot_argument(parser)
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="at most N rows")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line instead of text")


def run(args: argparse.Namespace) -> int:
    if args.raw and args.at is not None:
        raise CommandError("--at reads one snapshot; --raw shows every version")
    if args.start is not None and args.end is not None and args.start > args.end:
        raise CommandError("--start is after --end")
    client = open_client(args)
    try:
        if args.raw:
            _raw(client, args)
        else:
            _committed(client, args)
    finally:
        client.close()
    return 0


def _committed(client: Client, args: argparse.Namespace) -> None:
    txn = snapshot(client, args.at)
    try:
        rows = 0
        last: bytes | None = None
        for row, column, value in txn.scan(args.start, args.end, args.columns):
            if row != last:
                rows += 1
                if args.limit is not None and rows > args.limit:
                    break
                last = row
            if args.json:
                print(json.dumps({"row": show(row), "column": show(column),
                                  "value": show(value), "start_ts": txn.start_ts}))
            else:
                print(f"{show(row)}  {show(column)}  {value_text(value)}")
    finally:
        txn.rollback()


def _raw(client: Client, args: argparse.Namespace) -> None:
    now_ms = client.backend.now_ms()
    for row, found in raw_rows(client.store, client.table, start=args.start, end=args.end,
                               columns=args.columns, limit=args.limit or 0):
        if args.json:
            for record in found:
                print(json.dumps(record_json(record, now_ms)))
            continue
        print(show(row))
        for record in found:
            print(f"  {record_text(record, now_ms)}")
