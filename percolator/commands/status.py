"""`percolator status`: what the observers' workers report, pending and parked notifications.

Reads only the store (workers persist their counters in ``<table>.workers``), so it
works while workers run elsewhere; ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .client_args import add_target_arguments, open_client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from observers import cluster_status, format_status

    client = open_client(args)
    try:
        status = cluster_status(client)
    finally:
        client.close()
    if not args.json:
        print(format_status(status), flush=True)
        return 0
    out: dict[str, Any] = {
        "observed_columns": sorted(c.decode("utf-8", "backslashreplace")
                                   for c in status.observed_columns),
        "pending_cells": status.pending_cells,
        "pending_versions": status.pending_versions,
        "workers": [{"worker": w.worker, "alive": w.alive,
                     "stats": w.stats.as_dict() if w.stats else None}
                    for w in status.workers],
        "parked": [{"row": p.row.decode("utf-8", "backslashreplace"),
                    "column": p.column.decode("utf-8", "backslashreplace"),
                    "versions": len(p.versions),
                    "failures": p.info.failures if p.info else None,
                    "error": p.info.error if p.info else None}
                   for p in status.parked],
    }
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0
