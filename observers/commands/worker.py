"""Run observers on the notifications of a cluster (or a data directory).

`percolator worker` runs until SIGTERM or SIGINT, then finishes in-flight work and exits.
Observers are named with ``--observers`` specs (``pkg.module:name``, or the name of an
entry point of group ``percolator.observers``); ``--all-installed`` runs every
installed entry point instead, so that a plugin someone installed never runs by
surprise.  Prints ``percolator worker: running as ID ...`` on stdout, flushed, once it
works.  ``--until-idle`` processes until no notification is pending, prints the stats
and exits instead: exit 1 if that takes longer than ``--timeout`` or if a notification
was parked (its observer kept failing; ``percolator notifications list`` shows it).
``--metrics-listen HOST:PORT`` serves Prometheus metrics (per observer, and the
worker's transactions and batches) while it runs, announced by a line
``percolator worker: metrics on http://HOST:PORT/metrics``; over HTTPS with
``--metrics-tls-cert`` and ``--metrics-tls-key`` (``--metrics-tls-client-ca``: only to
scrapers with a client certificate).  Beyond a loopback address it is served only over
TLS or with ``--metrics-insecure`` (``percolator.metrics_endpoint``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from bigtable_lite.credentials import ServerTLS
from observers import ObserverRegistry, Worker, WorkerTimeout, load_entry_points, load_registry
from observers.errors import ObserverError
from percolator import Client
from percolator.cli import CommandError
from percolator.commands.arg_types import listen_address, positive_float, positive_int
from percolator.commands.client_args import add_target_arguments, open_client
from percolator.metrics_endpoint import InsecureMetrics, MetricsEndpoint, check_exposure

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def observer_specs(value: str) -> list[str]:
    """``--observers``: one spec or several separated by commas, none of them empty."""
    specs = [s.strip() for s in value.split(",")]
    if not all(specs):
        raise argparse.ArgumentTypeError(
            f"expected pkg.module:name or an entry-point name (several separated by commas),"
            f" not {value!r}")
    return specs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--observers", type=observer_specs, action="extend", metavar="SPEC",
                       help="observers to run: pkg.module:name (an observer, a list, or a"
                       " callable returning them) or the name of a percolator.observers entry"
                       " point; repeat or separate with commas")
    which.add_argument("--all-installed", action="store_true",
                       help="run every installed percolator.observers entry point")
    parser.add_argument("--threads", type=positive_int, default=4, metavar="N",
                        help="observer threads (default %(default)s)")
    parser.add_argument("--max-failures", type=positive_int, default=5, metavar="N",
                        help="failed runs of an observer on a cell before its notification"
                        " is parked (default %(default)s)")
    parser.add_argument("--lease-ttl", type=positive_float, default=10.0, metavar="S",
                        help="how long the node waits before giving a silent worker's"
                        " buckets to others (default %(default)s)")
    parser.add_argument("--heartbeat", type=positive_float, default=1.0, metavar="S",
                        help="longest time between two pulls while busy, which renew the"
                        " lease (default %(default)s)")
    parser.add_argument("--lock-ttl", type=positive_float, default=None, metavar="S",
                        help="lock TTL of the observers' transactions")
    parser.add_argument("--worker-id", default=None, metavar="ID",
                        help="name in the status table (default host-pid-random)")
    parser.add_argument("--until-idle", action="store_true",
                        help="exit once no notification is pending: status 1 if one was"
                        " parked")
    parser.add_argument("--timeout", type=positive_float, default=600.0, metavar="S",
                        help="with --until-idle: give up after this long (default %(default)s)")
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--metrics-listen", type=listen_address, default=None,
                         metavar="HOST:PORT", help="serve Prometheus metrics at"
                         " http://HOST:PORT/metrics, https:// with --metrics-tls-cert"
                         " (default: off; port 0 picks one); beyond loopback only over TLS"
                         " or with --metrics-insecure")
    metrics.add_argument("--metrics-tls-cert", type=Path, metavar="FILE",
                         help="PEM certificate (chain) to serve the metrics over HTTPS with")
    metrics.add_argument("--metrics-tls-key", type=Path, metavar="FILE",
                         help="PEM private key of --metrics-tls-cert")
    metrics.add_argument("--metrics-tls-client-ca", type=Path, metavar="FILE",
                         help="serve the metrics only to scrapers with a client certificate"
                         " signed by this PEM CA")
    metrics.add_argument("--metrics-insecure", action="store_true",
                         help="allow a non-loopback --metrics-listen over plain HTTP")


def _registry(args: argparse.Namespace) -> ObserverRegistry:
    try:
        if args.all_installed:
            registry = ObserverRegistry(load_entry_points())
        else:
            registry = load_registry(args.observers)
    except ObserverError as exc:
        raise CommandError(str(exc)) from exc
    if not len(registry):
        raise CommandError("no observers: no percolator.observers entry point is installed;"
                           " name observers with --observers pkg.module:name")
    return registry


def _worker(client: Client, registry: ObserverRegistry, args: argparse.Namespace) -> Worker:
    try:
        return Worker(client, registry, threads=args.threads, max_failures=args.max_failures,
                      lease_ttl=args.lease_ttl,
                      heartbeat=args.heartbeat, worker_id=args.worker_id)
    except (ObserverError, ValueError) as exc:
        raise CommandError(str(exc)) from exc


def metrics_tls(args: argparse.Namespace) -> ServerTLS | None:
    """The metrics endpoint's TLS the arguments ask for; CommandError if they cannot be
    served (checked before the worker connects)."""
    cert, key, ca = args.metrics_tls_cert, args.metrics_tls_key, args.metrics_tls_client_ca
    if (cert is None) != (key is None):
        raise CommandError("--metrics-tls-cert and --metrics-tls-key go together")
    if ca is not None and cert is None:
        raise CommandError("--metrics-tls-client-ca needs --metrics-tls-cert and"
                           " --metrics-tls-key")
    tls = None if cert is None else ServerTLS(cert, key, ca)
    if args.metrics_listen is not None:
        try:
            check_exposure(args.metrics_listen, tls, insecure=args.metrics_insecure)
        except InsecureMetrics as exc:
            raise CommandError(f"{exc} (give --metrics-tls-cert and --metrics-tls-key, or"
                               " --metrics-insecure)") from exc
    return tls


def start_metrics(worker: Worker, args: argparse.Namespace) -> MetricsEndpoint | None:
    """The worker's metrics endpoint, serving, if ``--metrics-listen`` asked for one."""
    if args.metrics_listen is None:
        return None
    client = worker.client
    endpoint = MetricsEndpoint(args.metrics_listen,
                               [lambda: worker.metrics.pending(client)],
                               tls=metrics_tls(args), insecure=args.metrics_insecure)
    endpoint.start()
    print(f"percolator worker: metrics on {endpoint.url}", flush=True)
    return endpoint


def describe(worker: Worker) -> str:
    """``2 observers on doc:text, paper:refs`` (column names as text)."""
    count = len(worker.registry)
    columns = ", ".join(c.decode("utf-8", "backslashreplace") for c in worker.columns)
    return f"{count} observer{'' if count == 1 else 's'} on {columns}"


def run(args: argparse.Namespace) -> int:
    metrics_tls(args)  # refused before anything connects
    registry = _registry(args)
    if args.until_idle:
        return _until_idle(args, registry)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        client = open_client(args, lock_ttl=args.lock_ttl)
        try:
            worker = _worker(client, registry, args)
            metrics = start_metrics(worker, args)
            worker.start()
            try:
                print(f"percolator worker: running as {worker.id} ({describe(worker)},"
                      f" {args.threads} threads)", flush=True)
                received = signal.sigwait(_STOP_SIGNALS)
                print(f"percolator worker: {signal.Signals(received).name}, finishing"
                      " in-flight work", flush=True)
            finally:
                worker.stop()
                if metrics is not None:
                    metrics.stop()
            print(f"percolator worker: stopped; {json.dumps(worker.stats().as_dict())}",
                  flush=True)
        finally:
            client.close()
        return 0
    except ObserverError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        while _STOP_SIGNALS & signal.sigpending():
            signal.sigwait(_STOP_SIGNALS)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        sys.stdout.flush()


def _until_idle(args: argparse.Namespace, registry: ObserverRegistry) -> int:
    client = open_client(args, lock_ttl=args.lock_ttl)
    try:
        worker = _worker(client, registry, args)
        metrics = start_metrics(worker, args)
        print(f"percolator worker: running as {worker.id} ({describe(worker)}) until idle",
              flush=True)
        try:
            stats = worker.run_until_idle(args.timeout)
        except (WorkerTimeout, ObserverError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if metrics is not None:
                metrics.stop()
    finally:
        client.close()
    print(f"percolator worker: idle; {json.dumps(stats.as_dict())}", flush=True)
    if stats.parked:
        raise CommandError(f"parked {stats.parked} notification{'s' if stats.parked > 1 else ''}"
                           " whose observer kept failing (percolator notifications list shows"
                           " them; replay them once fixed)")
    return 0
