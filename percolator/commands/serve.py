"""Run a node: the tablet store and the timestamp oracle over gRPC.

`percolator serve` runs until SIGTERM or SIGINT, then shuts down gracefully.  It
prints ``percolator serve: listening on HOST:PORT`` (the real port when 0 was given) on
stdout, flushed, once the server accepts calls: scripts and tests wait for it.
"""

from __future__ import annotations

import argparse
import signal
import sys

from bigtable_lite.engine import SYNC_MODES, SyncMode

from .._transport.native_server import DEFAULT_MAX_CONNECTIONS
from ..node import DEFAULT_GRACE, NATIVE_AUTO, Node
from ..oracle import DEFAULT_BLOCK_SIZE
from .arg_types import listen_address, native_listen_address, positive_int

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, metavar="DIR",
                        help="data directory (created if missing; one server per directory)")
    parser.add_argument("--listen", type=listen_address, default="127.0.0.1:7070",
                        metavar="HOST:PORT", help="address to serve on; port 0 picks a free one"
                        " (default %(default)s)")
    parser.add_argument("--native-listen", type=native_listen_address, default=NATIVE_AUTO,
                        metavar="HOST:PORT|auto|off",
                        help="where to serve the native transport, the Python client's fast"
                        " path to the same batches (clients find it by asking the node over"
                        " gRPC), a loopback address only (it checks no caller); auto: the"
                        " --listen host at its port + 1 (a free port when that is 0) if that"
                        " host is loopback, else off; off: gRPC only (default %(default)s)")
    parser.add_argument("--native-connections", type=positive_int,
                        default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                        help="most native connections open at once, a thread each, apart"
                        " from the gRPC workers; more clients use gRPC (default %(default)s)")
    parser.add_argument("--sync", choices=SYNC_MODES, default="none",
                        help="fsync every write (always) or rely on the OS (none: survives"
                        " kill -9, not power loss); the oracle fsyncs its blocks either way"
                        " (default %(default)s)")
    parser.add_argument("--workers", type=positive_int, default=32, metavar="N",
                        help="gRPC worker threads (default %(default)s)")
    parser.add_argument("--oracle-block", type=positive_int, default=DEFAULT_BLOCK_SIZE,
                        metavar="N", help="timestamps the oracle reserves per fsync; a crash"
                        " skips at most this many (default %(default)s)")
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
                    oracle_block_size=args.oracle_block, native_listen=args.native_listen,
                    max_native_connections=args.native_connections)
        try:
            node.start()
            native = node.native_address
            print(f"percolator serve: listening on {node.address}"
                  f" (native {native if native else 'off'}; data dir {args.data_dir},"
                  f" sync {sync})", flush=True)
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
