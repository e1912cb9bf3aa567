"""Run a node: the tablet store and the timestamp oracle over gRPC.

`percolator serve` runs until SIGTERM or SIGINT, then shuts down gracefully.  It
prints ``percolator serve: listening on HOST:PORT`` (the real port when 0 was given) on
stdout, flushed, once the server accepts calls: scripts and tests wait for it.  With
``--metrics-listen``, a line ``percolator serve: metrics on http://HOST:PORT/metrics``
(``https://`` with TLS) comes before it (docs/operations.md lists the metrics).

Security (``bigtable_lite.auth``, ``bigtable_lite.credentials``): ``--tls-cert`` and
``--tls-key`` serve TLS (files replaced on disk are served to new connections, no
restart), ``--tls-client-ca`` requires client certificates signed by that CA, and
``--auth-tokens`` requires a token of the right role on every call but health checks.
Like Redis's protected mode, a node refuses to listen beyond loopback without both
unless ``--insecure`` is given.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bigtable_lite import SYNC_MODES, SyncMode
from bigtable_lite.auth import TokenTable
from bigtable_lite.credentials import ServerTLS
from bigtable_lite.server import DEFAULT_STREAM_IDLE, InsecureListen, ServerPolicy

from .._gc import DEFAULT_GC_INTERVAL, DEFAULT_GC_LIFE_TIME
from .._safe_point import DEFAULT_CLIENT_LEASE
from .._sessions import DEFAULT_MAX_OPEN, DEFAULT_MAX_OPEN_PER_CALLER
from .._transport.native_server import DEFAULT_MAX_CONNECTIONS
from ..cli import CommandError
from ..metrics_endpoint import InsecureMetrics
from ..node import DEFAULT_GRACE, MIN_WORKERS, NATIVE_AUTO, Node
from ..oracle import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE
from .arg_types import (
    listen_address,
    native_listen_address,
    non_negative_float,
    positive_float,
    positive_int,
)

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _block_size(value: str) -> int:
    """``--oracle-block``: from 1 to MAX_BLOCK_SIZE."""
    n = positive_int(value)
    if n > MAX_BLOCK_SIZE:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_BLOCK_SIZE} timestamps a block, not {value!r}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, metavar="DIR",
                        help="data directory (created if missing; one server per directory)")
    parser.add_argument("--listen", type=listen_address, default="127.0.0.1:7070",
                        metavar="HOST:PORT", help="address to serve on; port 0 picks a free one"
                        " (default %(default)s)")
    parser.add_argument("--native-listen", type=native_listen_address, default=NATIVE_AUTO,
                        metavar="HOST:PORT|auto|off",
                        help="where to serve the native transport, the Python client's fast"
                        " path to the same batches and the Transactions service's TXN frames"
                        " (clients find it by asking the node over"
                        " gRPC), guarded as --listen is: the same TLS and tokens, and beyond"
                        " a loopback address only with both (or --insecure); auto: the"
                        " --listen host at its port + 1 (a free port when that is 0); off:"
                        " gRPC only (default %(default)s)")
    parser.add_argument("--native-connections", type=positive_int,
                        default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                        help="most native connections open at once (one thread serves them,"
                        " apart from the gRPC workers); more clients use gRPC (default"
                        " %(default)s)")
    parser.add_argument("--sync", choices=SYNC_MODES, default="none",
                        help="fsync every write (always) or rely on the OS (none: survives"
                        " kill -9, not power loss); the oracle fsyncs its blocks either way"
                        " (default %(default)s)")
    parser.add_argument("--workers", type=positive_int, default=32, metavar="N",
                        help=f"gRPC worker threads, at least {MIN_WORKERS} (default"
                        " %(default)s)")
    parser.add_argument("--oracle-block", type=_block_size, default=DEFAULT_BLOCK_SIZE,
                        metavar="N", help="timestamps the oracle reserves per fsync; a crash"
                        " skips at most this many (default %(default)s)")
    parser.add_argument("--metrics-listen", type=listen_address, default=None,
                        metavar="HOST:PORT", help="serve Prometheus metrics at"
                        " http://HOST:PORT/metrics, https:// with --tls-cert (default: off;"
                        " port 0 picks one); beyond loopback only over TLS or with --insecure")
    parser.add_argument("--grace", type=non_negative_float, default=DEFAULT_GRACE,
                        metavar="SECONDS",
                        help="how long in-flight calls may run on shutdown (default %(default)s)")
    parser.add_argument("--gc-life-time", type=non_negative_float, default=DEFAULT_GC_LIFE_TIME,
                        metavar="SECONDS", help="garbage collection keeps every snapshot of the"
                        " last SECONDS readable, and every running transaction's"
                        " (default %(default)s)")
    parser.add_argument("--gc-interval", type=positive_float, default=DEFAULT_GC_INTERVAL,
                        metavar="SECONDS", help="seconds between garbage-collection passes"
                        " (default %(default)s)")
    parser.add_argument("--gc-client-lease", type=positive_float,
                        default=DEFAULT_CLIENT_LEASE, metavar="SECONDS",
                        help="how long a client's report of its running transactions holds"
                        " garbage collection back; a killed client's holds end after it,"
                        " and a restarted node keeps the holds of its clients from before"
                        " for it, or until they report again (default %(default)s)")
    parser.add_argument("--max-transactions", type=positive_int, default=DEFAULT_MAX_OPEN,
                        metavar="N", help="transactions the Transactions service holds open"
                        " at once (default %(default)s)")
    security = parser.add_argument_group("security")
    security.add_argument("--tls-cert", type=Path, metavar="FILE",
                          help="PEM certificate (chain) to serve TLS with; reloaded when the"
                          " file changes")
    security.add_argument("--tls-key", type=Path, metavar="FILE",
                          help="PEM private key of --tls-cert")
    security.add_argument("--tls-client-ca", type=Path, metavar="FILE",
                          help="require client certificates signed by this PEM CA (mutual TLS)")
    security.add_argument("--auth-tokens", type=Path, metavar="FILE",
                          help="require tokens: one 'TOKEN ROLE' per line, roles read, write,"
                          " admin; '#' comments")
    security.add_argument("--insecure", action="store_true",
                          help="allow a non-loopback --listen without TLS and tokens")
    security.add_argument("--max-transactions-per-token", type=positive_int,
                          default=DEFAULT_MAX_OPEN_PER_CALLER, metavar="N",
                          help="of --max-transactions, how many one token may hold open, so"
                          " one cannot take them all (with --auth-tokens; default"
                          " %(default)s)")
    security.add_argument("--stream-idle-timeout", type=positive_float,
                          default=DEFAULT_STREAM_IDLE, metavar="SECONDS",
                          help="cancel a stream whose client reads nothing this long"
                          " (default %(default)s)")


def policy_from(args: argparse.Namespace) -> ServerPolicy:
    """The server policy the arguments ask for; CommandError for unusable files."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CommandError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise CommandError("--tls-client-ca needs --tls-cert and --tls-key")
    try:
        tokens = None if args.auth_tokens is None else TokenTable.load(args.auth_tokens)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--auth-tokens: {exc}") from exc
    tls = None
    if args.tls_cert is not None:
        tls = ServerTLS(args.tls_cert, args.tls_key, args.tls_client_ca)
    return ServerPolicy(tokens=tokens, tls=tls, insecure=args.insecure,
                        stream_idle_timeout=args.stream_idle_timeout)


def _describe(policy: ServerPolicy) -> str:
    tls = ("mutual TLS" if policy.tls and policy.tls.client_ca else "TLS" if policy.tls
           else "no TLS")
    tokens = f"{len(policy.tokens)} tokens" if policy.tokens else "no tokens"
    return f"{tls}, {tokens}"


def run(args: argparse.Namespace) -> int:
    if args.workers < MIN_WORKERS:
        raise CommandError(f"--workers must be at least {MIN_WORKERS}")
    policy = policy_from(args)
    # Block the stop signals before any thread starts, so every thread (gRPC's too)
    # inherits the mask and the main thread takes them synchronously with sigwait:
    # no handler runs in the middle of start-up or shutdown.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        sync: SyncMode = args.sync
        try:
            node = Node(args.data_dir, args.listen, sync, max_workers=args.workers,
                        oracle_block_size=args.oracle_block, policy=policy,
                        gc_life_time=args.gc_life_time, gc_interval=args.gc_interval,
                        gc_client_lease=args.gc_client_lease,
                        metrics_listen=args.metrics_listen,
                        native_listen=args.native_listen,
                        max_native_connections=args.native_connections,
                        max_transactions=args.max_transactions,
                        max_transactions_per_token=args.max_transactions_per_token)
        except InsecureMetrics as exc:
            raise CommandError(f"{exc} (give --tls-cert and --tls-key to serve it over HTTPS,"
                               " or --insecure)") from exc
        except InsecureListen as exc:
            raise CommandError(f"{exc} (give --tls-cert, --tls-key and --auth-tokens, or"
                               " --insecure)") from exc
        except ValueError as exc:  # TLS files that are not a certificate and its key
            raise CommandError(str(exc)) from exc
        try:
            node.start()
            if node.metrics is not None:
                print(f"percolator serve: metrics on {node.metrics.url}", flush=True)
            native = node.native_address
            print(f"percolator serve: listening on {node.address}"
                  f" (native {native if native else 'off'}; data dir {args.data_dir},"
                  f" sync {sync}, {_describe(policy)})", flush=True)
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
