"""Read one cell's committed value at a snapshot.

`percolator get ROW COLUMN` prints the value a transaction reads, at a fresh snapshot
or ``--at TS``, as text that maps back to its bytes (``byte_text``); a cell with no
value there is an error (exit 1).  ``--json`` prints ``{"row", "column", "start_ts",
"value"}`` (value null when absent, exit 0).  ``percolator scan --raw --start ROW``
shows every stored version of the cell instead.
"""

from __future__ import annotations

import argparse
import json

from ..cli import CommandError
from .byte_text import argument, show
from .client_args import add_snapshot_argument, add_target_arguments, open_client, snapshot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("row", type=argument, metavar="ROW")
    parser.add_argument("column", type=argument, metavar="COLUMN")
    add_target_arguments(parser)
    add_snapshot_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object")


def run(args: argparse.Namespace) -> int:
    client = open_client(args)
    try:
        txn = snapshot(client, args.at)
        try:
            value = txn.get(args.row, args.column)
        except ValueError as exc:  # a row or column the transaction layer refuses
            raise CommandError(str(exc)) from exc
        finally:
            txn.rollback()
    finally:
        client.close()
    if args.json:
        print(json.dumps({"row": show(args.row), "column": show(args.column),
                          "start_ts": txn.start_ts,
                          "value": None if value is None else show(value)}))
        return 0
    if value is None:
        raise CommandError(f"({show(args.row)}, {show(args.column)}) has no value at"
                           f" {txn.start_ts}")
    print(show(value))
    return 0
