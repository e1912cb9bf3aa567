"""Run a node: the tablet store and the timestamp oracle over gRPC.

`percolator serve` runs until SIGTERM or SIGINT, then shuts down gracefully.  It
prints ``percolator serve: listening on HOST:PORT`` (the real port when 0 was given) on
stdout, flushed, once the server accepts calls: scripts and tests wait for it.  With
``--metrics-listen``, a line ``percolator serve: metrics on http://HOST:PORT/metrics``
comes before it (docs/operations.md lists the metrics).
"""

from __future__ import annotations

import argparse
import signal
import sys

from bigtable_lite.engine import SYNC_MODES, SyncMode

from ..node import DEFAULT_GRACE, Node
from ..oracle import DEFAULT_BLOCK_SIZE
from .arg_types import listen_address, positive_int

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, metavar="DIR",
                        help="data directory (created if missing; one server per directory)")
    parser.add_argument("--listen", type=listen_address, default="127.0.0.1:7070",
                        metavar="HOST:PORT", help="address to serve on; port 0 picks a free one"
                        " (default %(default)s)")
    parser.add_argument("--sync", choices=SYNC_MODES, default="none",
                        help="fsync every write (always) or rely on the OS (none: survives"
                        " kill -9, not power loss); the oracle fsyncs its blocks either way"
                        " (default %(default)s)")
    parser.add_argument("--workers", type=positive_int, default=32, metavar="N",
                        help="gRPC worker threads (default %(default)s)")
    parser.add_argument("--oracle-block", type=positive_int, default=DEFAULT_BLOCK_SIZE,
                        metavar="N", help="timestamps the oracle reserves per fsync; a crash"
                        " skips at most this many (default %(default)s)")
    parser.add_argument("--metrics-listen", type=listen_address, default=None,
                        metavar="HOST:PORT", help="serve Prometheus metrics at"
                        " http://HOST:PORT/metrics (default: off; port 0 picks one)")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                        help="how long in-flight calls may run on shutdown (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    # Block the stop signals before any thread starts, so every thread (gRPC's too)
    # inherits the mask and the main thread takes them synchronously with sigwait:
    # no handler runs in the middle of start-up or shutdown.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        sync: SyncMode = args.sync
        node = Node(args.data_dir, args.listen, sync, max_workers=args.workers,
                    oracle_block_size=args.oracle_block, metrics_listen=args.metrics_listen)
        try:
            node.start()
            if node.metrics is not None:
                print(f"percolator serve: metrics on {node.metrics.url}", flush=True)
            print(f"percolator serve: listening on {node.address}"
                  f" (data dir {args.data_dir}, sync {sync})", flush=True)
            received = signal.sigwait(_STOP_SIGNALS)
            print(f"percolator serve: {signal.Signals(received).name}, shutting down",
                  flush=True)
        finally:
            node.stop(args.grace)
        print("percolator serve: stopped", flush=True)
        return 0
    finally:
        # Swallow stop signals that arrived during shutdown, or unblocking would let
        # their default action kill the process after a clean stop.
        while _STOP_SIGNALS & signal.sigpending():
            signal.sigwait(_STOP_SIGNALS)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        sys.stdout.flush()
