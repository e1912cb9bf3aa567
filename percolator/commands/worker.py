"""`percolator worker`: run observers until SIGTERM or SIGINT, then finish in-flight work and exit.

Observers come from ``--observers`` specs (``pkg.module:name``, or an entry-point name
of group ``percolator.observers``); without any, every installed entry point.
Prints ``percolator worker: running as ID ...`` on stdout, flushed, once it works.
``--until-idle`` processes until no notification is pending, prints the stats and
exits instead (exit 1 if that takes longer than ``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import TYPE_CHECKING

from .arg_types import positive_float, positive_int
from .client_args import add_target_arguments, open_client

if TYPE_CHECKING:
    from observers import ObserverRegistry

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--observers", action="append", default=[], metavar="SPEC",
                        help="pkg.module:name (an observer, a list, or a callable returning"
                        " them) or an entry-point name; repeat or separate with commas"
                        " (default: every entry point of percolator.observers)")
    parser.add_argument("--threads", type=positive_int, default=4, metavar="N",
                        help="observer threads (default %(default)s)")
    parser.add_argument("--max-failures", type=positive_int, default=5, metavar="N",
                        help="failed runs of an observer on a cell before its notification"
                        " is parked (default %(default)s)")
    parser.add_argument("--poll-interval", type=positive_float, default=0.01, metavar="S",
                        help="seconds between scans of the notify table when idle"
                        " (default %(default)s)")
    parser.add_argument("--lease-ttl", type=positive_float, default=5.0, metavar="S",
                        help="how long others wait before taking over a crashed worker's"
                        " share (default %(default)s)")
    parser.add_argument("--heartbeat", type=positive_float, default=1.0, metavar="S",
                        help="seconds between lease renewals (default %(default)s)")
    parser.add_argument("--lock-ttl", type=positive_float, default=None, metavar="S",
                        help="lock TTL of the observers' transactions")
    parser.add_argument("--worker-id", default=None, metavar="ID",
                        help="name in the status table (default host-pid-random)")
    parser.add_argument("--until-idle", action="store_true",
                        help="exit once no notification is pending")
    parser.add_argument("--timeout", type=positive_float, default=600.0, metavar="S",
                        help="with --until-idle: give up after this long (default %(default)s)")


def _specs(values: list[str]) -> list[str]:
    return [s.strip() for v in values for s in v.split(",") if s.strip()]


def run(args: argparse.Namespace) -> int:
    from observers import ObserverRegistry, Worker, load_entry_points, load_registry
    from observers.errors import ObserverError

    from ..cli import CommandError

    try:
        specs = _specs(args.observers)
        registry = load_registry(specs) if specs else ObserverRegistry(load_entry_points())
    except ObserverError as exc:
        raise CommandError(str(exc)) from exc
    if not len(registry):
        raise CommandError("no observers: pass --observers pkg.module:name or install a"
                           " percolator.observers entry point")
    if args.until_idle:
        return _until_idle(args, registry)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        client = open_client(args, lock_ttl=args.lock_ttl)
        try:
            worker = Worker(client, registry, threads=args.threads,
                            max_failures=args.max_failures, poll_interval=args.poll_interval,
                            lease_ttl=args.lease_ttl, heartbeat=args.heartbeat,
                            worker_id=args.worker_id)
            worker.start()
            try:
                columns = ", ".join(repr(c) for c in worker.columns)
                print(f"percolator worker: running as {worker.id} ({len(registry)} observers"
                      f" on {columns}, {args.threads} threads)", flush=True)
                received = signal.sigwait(_STOP_SIGNALS)
                print(f"percolator worker: {signal.Signals(received).name}, finishing"
                      " in-flight work", flush=True)
            finally:
                worker.stop()
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
    from observers import Worker, WorkerTimeout
    from observers.errors import ObserverError

    from ..cli import CommandError

    client = open_client(args, lock_ttl=args.lock_ttl)
    try:
        worker = Worker(client, registry, threads=args.threads, max_failures=args.max_failures,
                        poll_interval=args.poll_interval, lease_ttl=args.lease_ttl,
                        heartbeat=args.heartbeat, worker_id=args.worker_id)
        print(f"percolator worker: running as {worker.id} until idle", flush=True)
        try:
            stats = worker.run_until_idle(args.timeout)
        except WorkerTimeout as exc:
            raise CommandError(str(exc)) from exc
        print(f"percolator worker: idle; {json.dumps(stats.as_dict())}", flush=True)
        return 0
    except ObserverError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        client.close()
