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

`percolator repair --oracle --data-dir DIR` repairs the timestamp oracle's high-water
mark when it does not decode (a node then refuses to start, naming it), or decodes to a
timestamp below one stored in a cell (damage a node cannot see without reading the whole
store: it would hand out timestamps again).  With every node and client of DIR stopped,
it shows the stored bytes, finds the highest timestamp of any cell in the store, and
after a confirmation writes a mark above it by ``percolator.oracle.RECOVERY_MARGIN``
(why: ``percolator.oracle``).
"""

from __future__ import annotations

import argparse
import sys

from bigtable_lite import LocalStore, StorageError, TabletStore, is_store

from .._inspection import LOCK_KIND, NOTIFY_KIND, WRITE_KIND, Record, cell_records
from .._inspection import repair_mutations as mutations_for
from ..cli import CommandError
from ..oracle import decode_mark, recovered_mark, rewrite_mark, stored_mark
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
    parser.add_argument("row", type=argument, metavar="ROW", nargs="?")
    parser.add_argument("column", type=argument, metavar="COLUMN", nargs="?")
    parser.add_argument("--oracle", action="store_true",
                        help="instead of a cell, repair the oracle's damaged high-water mark"
                        " (with --data-dir, every node and client stopped)")
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
    if args.oracle:
        return _repair_oracle(args)
    if args.row is None or args.column is None:
        raise CommandError("give the cell's ROW and COLUMN, or --oracle")
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


def _repair_oracle(args: argparse.Namespace) -> int:
    if args.row is not None:
        raise CommandError("--oracle repairs the oracle's mark: give no ROW or COLUMN")
    if args.data_dir is None or not is_store(args.data_dir):
        raise CommandError("--oracle needs --data-dir DIR, an existing data directory (no"
                           " node can serve it while its mark is damaged)")
    try:
        store = LocalStore(args.data_dir)  # refused while a node or client holds it
    except StorageError as exc:
        raise CommandError(str(exc)) from exc
    with store:
        raw = stored_mark(store)
        print(f"oracle high-water mark: {'none' if raw is None else show(raw)}"
              f" ({'no cell' if raw is None else f'{len(raw)} bytes'})")
        highest, mark = recovered_mark(store)
        decoded = decode_mark(raw)
        if decoded is not None and decoded >= highest:
            print(f"nothing to repair: the mark decodes ({decoded}) and is at or above every"
                  f" timestamp stored (the highest: {highest})")
            return 0
        if decoded is not None:  # bytes of the right size, but damaged all the same
            print(f"the mark decodes ({decoded}) but is below timestamp {highest}, stored in"
                  " the store: the oracle would hand out timestamps already used")
        print(f"highest timestamp stored: {highest}; new mark: {mark} (timestamps restart"
              f" above it)")
        if not args.yes and not _confirmed(1):
            raise CommandError("not confirmed: nothing written")
        if not rewrite_mark(store, mark, raw):
            raise CommandError("the mark changed since it was read: nothing written; run the"
                               " repair again")
        print(f"wrote the oracle's high-water mark {mark}")
    return 0
