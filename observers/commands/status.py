"""Show observer workers' counters, pending and parked notifications, the oracle's figures and GC.

`percolator status` shows the observed columns (backfill progress, pending
notifications, live workers; columns with pending notifications and no live worker
are named), every worker's reported counters, parked notifications, the store's
garbage collection (its safe point, its last pass and what that removed) and, of a
node (``--connect``), its timestamp oracle's own figures.  Asks the node (or the data
directory), so it works while workers run elsewhere; ``--json`` prints the same as one
JSON object.  ``--watch [SECONDS]`` refreshes it in place, like ``top``, until Ctrl-C
(``percolator.commands.watch``; with ``--json``, one object per line per refresh).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from bigtable_lite import StorageError
from observers import cluster_status, format_status, status_json
from percolator import GcStatus
from percolator.commands.arg_types import positive_float
from percolator.commands.client_args import add_target_arguments, open_channel, open_client
from percolator.commands.watch import DEFAULT_INTERVAL, capture, watch
from percolator.oracle import OracleStats
from percolator.oracle_client import RemoteOracle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--watch", type=positive_float, nargs="?", const=DEFAULT_INTERVAL,
                        default=None, metavar="SECONDS", help="refresh every SECONDS (default"
                        f" {DEFAULT_INTERVAL:g}) until Ctrl-C")


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


def format_gc(gc: GcStatus) -> str:
    if gc.last_pass is None:
        return f"gc: safe point {gc.safe_point:,}, no pass recorded yet"
    done = gc.last_pass
    when = datetime.fromtimestamp(done.started_ms / 1000).isoformat(sep=" ",
                                                                    timespec="seconds")
    return f"gc: safe point {gc.safe_point:,}; last pass {when}: {done.describe()}"


def run(args: argparse.Namespace) -> int:
    if args.watch is None:
        return report(args)
    where = args.connect or args.data_dir
    return watch(lambda: capture(lambda: report(args)), args.watch,
                 title=f"percolator status ({where})")


def report(args: argparse.Namespace) -> int:
    client = open_client(args)
    try:
        status = cluster_status(client)
        gc = client.gc_status()
    finally:
        client.close()
    oracle = oracle_figures(args) if args.connect else None
    if not args.json:
        text = f"{format_gc(gc)}\n{format_status(status)}"
        print(text if oracle is None else f"{format_oracle(oracle)}\n{text}", flush=True)
        return 0
    out: dict[str, Any] = status_json(status)
    out["oracle"] = None if oracle is None else (
        {"error": oracle} if isinstance(oracle, str) else
        {"timestamps_served": oracle.timestamps_served, "requests": oracle.requests,
         "mean_batch_size": oracle.mean_batch_size,
         "persisted_high_water": oracle.persisted_high_water})
    out["gc"] = {"safe_point": gc.safe_point,
                 "tables": [t.decode("utf-8", "backslashreplace") for t in gc.tables],
                 "last_pass": None if gc.last_pass is None else
                 {**asdict(gc.last_pass), "removed": gc.last_pass.removed}}
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0
