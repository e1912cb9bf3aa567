"""List or replay parked notifications; compact the notification log.

`percolator notifications list` shows the notifications a worker parked after their
observer kept failing; ``replay`` moves them back into the notification log (all, or one
cell with ``--row``/``--column``), where a running worker processes them as usual;
``compact`` compacts the notification log of the node or of the data directory.
"""

from __future__ import annotations

import argparse

from observers import compact_notifications, list_parked, replay_parked
from percolator.cli import CommandError
from percolator.commands.client_args import add_target_arguments, open_client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "replay", "compact"),
                        help="list parked notifications, replay them, or compact the notify"
                        " table (of the node, or of the data directory)")
    add_target_arguments(parser)
    parser.add_argument("--row", default=None, help="with replay: only this row")
    parser.add_argument("--column", default=None, help="with replay: only this column")


def run(args: argparse.Namespace) -> int:
    if (args.row is None) != (args.column is None):
        raise CommandError("--row and --column go together")
    client = open_client(args)
    try:
        if args.action == "list":
            parked = list_parked(client)
            for p in parked:
                why = f"{p.info.failures} failures: {p.info.error}" if p.info else "no note"
                print(f"({p.row!r}, {p.column!r}) {len(p.entries)} entries -- {why}")
            print(f"{len(parked)} parked cells", flush=True)
        elif args.action == "replay":
            cells = None if args.row is None else [(args.row.encode(), args.column.encode())]
            print(f"replayed {replay_parked(client, cells)} cells", flush=True)
        else:
            compact_notifications(client)
            print("compacted the notification log", flush=True)
    finally:
        client.close()
    return 0
