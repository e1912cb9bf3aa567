"""Remove the records of one cell that cannot be decoded (admin), after a confirmation.

`percolator repair ROW COLUMN` shows every stored record of the cell (as
``percolator scan --raw`` does) and marks those that do not decode -- a lock slot, a
write record or a notification whose bytes are not a record of their format, e.g.
written through the raw store API.  Such a record makes every read of the cell, and
every scan over it, fail with ``DataCorruption``; no transaction can read or remove it.
After a confirmation (``--yes`` skips it; without a terminal, a line ``y`` on stdin
gives it), it deletes exactly those versions, each only if it still holds the bytes
shown, and nothing else.  What the deletion means is printed first: what a deleted
write record committed is lost (reads see the version below it), and the owner of a
deleted lock cannot be known.

It writes the raw tablet store (a node's tablet service ``MutateRows``, fsynced: the
``admin`` role).
"""

from __future__ import annotations

import argparse
import sys

from bigtable_lite import TabletStore

from .._inspection import LOCK_KIND, NOTIFY_KIND, WRITE_KIND, Record, cell_records
from .._inspection import repair_mutations as mutations_for
from ..cli import CommandError
from .byte_text import argument, show
from .client_args import add_target_arguments, open_client
from .record_text import record_text

_CONSEQUENCE = {
    LOCK_KIND: "the lock's owner cannot be known: if its transaction committed, its write"
               " to this cell is lost",
    WRITE_KIND: "what this write record committed is lost: reads see the version below it",
    NOTIFY_KIND: "the change it announced is not observed again",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("row", type=argument, metavar="ROW")
    parser.add_argument("column", type=argument, metavar="COLUMN")
    add_target_arguments(parser)
    parser.add_argument("--yes", action="store_true",
                        help="delete without asking")


def _confirmed(count: int) -> bool:
    prompt = f"Delete {'this record' if count == 1 else f'these {count} records'}? [y/N] "
    print(prompt, end="", flush=True)
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():
        print(answer.rstrip("\n"))
    return answer.strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    client = open_client(args)
    try:
        found = cell_records(client.store, client.table, args.row, args.column)
        now_ms = client.backend.now_ms()
        cell = f"({show(args.row)}, {show(args.column)})"
        print(f"{cell} of table {show(client.table)}: {len(found)} records")
        for record in found:
            mark = "!" if record.undecodable else " "
            print(f"{mark} {record_text(record, now_ms)}")
        bad = [r for r in found if r.undecodable]
        if not bad:
            print(f"nothing to repair: every record of {cell} decodes")
            return 0
        for record in bad:
            print(f"deleting the {record.kind} record at ts {record.ts}:"
                  f" {_CONSEQUENCE.get(record.kind, 'it is not a record of this table')}")
        if not args.yes and not _confirmed(len(bad)):
            raise CommandError("not confirmed: nothing deleted")
        _delete(client.store, bad)
    finally:
        client.close()
    return 0


def _delete(store: TabletStore, bad: list[Record]) -> None:
    results = store.mutate_rows(mutations_for(bad), sync=True)
    if not all(r.applied for r in results):
        raise CommandError("a record changed since it was read: nothing deleted where it"
                           " did; run the repair again")
    print(f"deleted {len(bad)} record{'' if len(bad) == 1 else 's'}")
