"""Show observer workers' counters, pending and parked notifications, and the oracle's figures.

`percolator status` shows the observed columns (backfill progress, pending
notifications, live workers; columns with pending notifications and no live worker
are named), every worker's reported counters, parked notifications, and, of a node
(``--connect``), its timestamp oracle's own figures.  Asks the node (or the data
directory), so it works while workers run elsewhere; ``--json`` prints the same as one
JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bigtable_lite import StorageError
from observers import cluster_status, format_status
from observers.status import status_json
from percolator.commands.client_args import add_target_arguments, open_channel, open_client
from percolator.oracle import OracleStats
from percolator.oracle_client import RemoteOracle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def oracle_figures(args: argparse.Namespace) -> OracleStats | str:
    """The node's oracle figures since it started, or why they could not be read."""
    channel = open_channel(args)
    try:
        with RemoteOracle(channel) as oracle:
            return oracle.server_stats()
    except StorageError as exc:
        return str(exc)
    finally:
        channel.close()


def format_oracle(figures: OracleStats | str) -> str:
    if isinstance(figures, str):
        return f"oracle: figures unavailable ({figures})"
    return (f"oracle: {figures.timestamps_served:,} timestamps served in {figures.requests:,}"
            f" requests (mean batch {figures.mean_batch_size:.1f}), persisted high-water"
            f" {figures.persisted_high_water:,}")


def run(args: argparse.Namespace) -> int:
    client = open_client(args)
    try:
        status = cluster_status(client)
    finally:
        client.close()
    oracle = oracle_figures(args) if args.connect else None
    if not args.json:
        text = format_status(status)
        print(text if oracle is None else f"{format_oracle(oracle)}\n{text}", flush=True)
        return 0
    out: dict[str, Any] = status_json(status)
    out["oracle"] = None if oracle is None else (
        {"error": oracle} if isinstance(oracle, str) else
        {"timestamps_served": oracle.timestamps_served, "requests": oracle.requests,
         "mean_batch_size": oracle.mean_batch_size,
         "persisted_high_water": oracle.persisted_high_water})
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0
