"""Node: one `percolator serve` process's parts, the tablet store and the oracle on gRPC.

A node owns a data directory (a :class:`~bigtable_lite.LocalStore`), the durable
timestamp :class:`~percolator.oracle.Oracle` persisted in that store, and one gRPC server
hosting both services, the transaction protocol's steps as batched commands
(``percolator.v1.Node``, run by a :class:`~percolator._local.LocalBackend`: see
``percolator/_node_service.py``), whole transactions for callers in any language
(``percolator.v1.Transactions``, run by the same backend: ``percolator/_txn_service.py``),
health checking and reflection; beside it, the native transport for Python clients
(``percolator._transport.native_server``), behind the same TLS and tokens.  Every call
of every service is counted and timed (``percolator._metrics_rpc``); ``metrics_listen``
serves the metrics to Prometheus (``percolator.metrics_endpoint``), with the oracle's
figures and the data directory's size read when scraped.  Shutdown order matters: stop
taking calls and let in-flight ones finish, then close the oracle, then close
LevelDB cleanly; a node killed instead (``kill -9``) loses nothing acknowledged, and
its oracle restarts above every timestamp it handed out.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Self

import grpc
from prometheus_client.metrics_core import Metric

from bigtable_lite import LocalStore, SyncMode, disk_bytes
from bigtable_lite.server import (
    HEALTH_STREAMS,
    REFLECTION_STREAMS,
    ServerPolicy,
    build_server,
    check_exposure,
    stop_server,
)

from . import failpoints, oracle_service
from ._gc import DEFAULT_GC_INTERVAL, DEFAULT_GC_LIFE_TIME
from ._local import LocalBackend
from ._metrics_rpc import RpcMetrics
from ._node_service import NodeService
from ._notify.service import NotificationsService
from ._safe_point import DEFAULT_CLIENT_LEASE
from ._sessions import (
    DEFAULT_LOCK_WAIT,
    DEFAULT_MAX_OPEN,
    DEFAULT_MAX_OPEN_PER_CALLER,
    Sessions,
)
from ._transport import native_wire
from ._transport.native_server import DEFAULT_MAX_CONNECTIONS, NativeServer
from ._txn_service import TransactionsService
from .clock import Clock
from .metrics import gc_families, oracle_families, store_families
from .metrics_endpoint import MetricsEndpoint
from .oracle import DEFAULT_BLOCK_SIZE, Oracle

__all__ = ["DEFAULT_GRACE", "MIN_WORKERS", "NATIVE_AUTO", "NATIVE_OFF", "Node", "native_address",
           "stream_shares"]

log = logging.getLogger(__name__)

DEFAULT_GRACE = 10.0
"""Seconds in-flight calls get to finish when a node stops."""
NATIVE_AUTO = "auto"
"""The native transport on the gRPC host, at the gRPC port + 1 (any free port when the
gRPC port is picked: clients ask the node where it is)."""
NATIVE_OFF = "off"
AFTER_GRPC = -1  # native_address's port: the gRPC port + 1


def native_address(listen: str, native_listen: str | None, policy: ServerPolicy
                   ) -> tuple[str, int] | None:
    """Where to serve the native transport: (host, port; AFTER_GRPC or 0 for a free one),
    or None for nowhere.  ``native_listen``: "HOST:PORT", "auto" (the gRPC host), "off"
    or None (off).

    The native port is guarded as the gRPC port is (the same TLS, tokens and roles), so
    the same exposure rule holds for it: beyond a loopback address it needs TLS and
    tokens unless ``policy.insecure`` (InsecureListen, before anything is bound).
    """
    if native_listen is None or native_listen == NATIVE_OFF:
        return None
    if native_listen == NATIVE_AUTO:
        host, _, port = listen.rpartition(":")
        check_exposure(listen, policy)
        return host, 0 if port == "0" else AFTER_GRPC
    host, sep, port = native_listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("native listen address must be HOST:PORT (port 0 = pick one), auto"
                         f" or off, not {native_listen!r}")
    check_exposure(native_listen, policy)
    return host, int(port)


MIN_WORKERS = 10
"""Fewest gRPC worker threads a node runs with (see :func:`stream_shares`)."""


def stream_shares(max_workers: int) -> tuple[int, int, int, int, int]:
    """(batch, timestamp, tablet, transaction, poll) calls a node holds open at once.

    Each open stream, and each Notifications Pull waiting in its long poll, holds a
    worker thread until it ends, so together they may hold at most what is left after
    a quarter of the threads (at least two), which stay for unary calls: health checks,
    small reads and a Pull that is answered at once always get through.  Long polls take
    a quarter of that (one per observer worker; a Pull beyond it is answered at once and
    its worker backs off), timestamp, tablet (scan) and Transactions streams an eighth
    each, batch streams the rest (at least one each: hence :data:`MIN_WORKERS`).
    """
    if max_workers < MIN_WORKERS:
        raise ValueError(f"a node needs at least {MIN_WORKERS} worker threads")
    streams = max_workers - max(2, max_workers // 4) - HEALTH_STREAMS - REFLECTION_STREAMS
    other = max(1, streams // 8)
    polls = max(1, streams // 4)
    return max(1, streams - 3 * other - polls), other, other, other, polls


class Node:
    """Store + oracle + gRPC server on ``listen`` ("HOST:PORT", port 0 = pick one).

    Constructing a node opens the store (``StoreLocked`` if another process owns
    ``data_dir``) and binds the ports (``OSError`` if taken; ``InsecureListen`` if one is
    not a loopback address and ``policy`` has no TLS and tokens, unless it says
    ``insecure``); :meth:`start` begins serving.  ``clock`` judges the expiry of every
    lock written at this node (default: the system clock; its clients' clocks never do),
    and of the Transactions service's transactions, and the GC life time and client
    leases.  ``max_transactions``: transactions the Transactions service holds open at
    once, ``max_transactions_per_token`` of them for one token; ``txn_lock_wait``:
    seconds one of its reads waits for a live lock before it answers UNAVAILABLE (a
    server thread waits meanwhile).  Garbage collection runs every
    ``gc_interval`` seconds (None: only on request), keeping every snapshot of the last
    ``gc_life_time`` seconds and of every running transaction of its clients readable
    (``gc_client_lease``: how long a client's report of its transactions holds).
    ``metrics_listen`` ("HOST:PORT"): serve ``/metrics`` there from :meth:`start`
    (``metrics_address`` is where), over HTTPS with the policy's TLS; beyond loopback
    only so, or ``insecure`` (``InsecureMetrics``).
    ``native_listen``: where to serve the native transport (:func:`native_address`:
    guarded as the gRPC port, by the same ``policy``), ``max_native_connections`` its
    connections open at once.
    """

    def __init__(self, data_dir: str | os.PathLike[str], listen: str, sync: SyncMode = "none",
                 *, max_workers: int = 32, oracle_block_size: int = DEFAULT_BLOCK_SIZE,
                 clock: Clock | None = None, policy: ServerPolicy = ServerPolicy(),
                 max_transactions: int = DEFAULT_MAX_OPEN,
                 max_transactions_per_token: int = DEFAULT_MAX_OPEN_PER_CALLER,
                 txn_lock_wait: float = DEFAULT_LOCK_WAIT,
                 gc_life_time: float = DEFAULT_GC_LIFE_TIME,
                 gc_interval: float | None = DEFAULT_GC_INTERVAL,
                 gc_client_lease: float = DEFAULT_CLIENT_LEASE,
                 metrics_listen: str | None = None,
                 native_listen: str | None = NATIVE_AUTO,
                 max_native_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        batch, timestamp, tablet, transaction, polls = stream_shares(max_workers)
        check_exposure(listen, policy)  # before the data directory is touched
        self.metrics = None if metrics_listen is None else MetricsEndpoint(
            metrics_listen, [self._scraped], tls=policy.tls, insecure=policy.insecure)
        native_at = native_address(listen, native_listen, policy)  # likewise
        self.store = LocalStore(data_dir, sync=sync)
        log_sync = self.store.engine.log_sync  # under --sync always: the loop's fsyncs
        if log_sync is not None:
            log_sync.before_fsync = functools.partial(failpoints.hit, "log_sync.before_fsync")
        self.native: NativeServer | None = None
        try:
            self.oracle = Oracle(self.store, block_size=oracle_block_size)
            self.backend = LocalBackend(self.store, self.oracle, clock=clock, owned=False,
                                        gc_life_time=gc_life_time, gc_interval=gc_interval,
                                        client_lease=gc_client_lease)
            self.batches = NodeService(self.backend, max_streams=batch, tokens=policy.tokens)
            self.timestamps = oracle_service.OracleServicer(
                self.oracle, max_streams=timestamp,
                safe_point=lambda: self.backend.safe_point.value)
            self.notifications = NotificationsService(
                self.backend.notifications, self.store.limits, max_polls=polls)
            self.transactions = TransactionsService(self.backend, Sessions(
                self.backend, max_open=max_transactions,
                max_open_per_caller=max_transactions_per_token, lock_wait=txn_lock_wait),
                max_streams=transaction)
            self.server: grpc.Server
            self.server, self.port = build_server(
                self.store, listen, max_workers=max_workers,
                extra=[self.timestamps.registration(), self.batches.registration(),
                       self.notifications.registration(), self.transactions.registration()],
                policy=replace(policy, tablet_streams=tablet),
                interceptors=[RpcMetrics()])
            if native_at is not None:
                host, port = native_at
                if port == AFTER_GRPC:
                    port = self.port + 1
                self.native = NativeServer(
                    host, port, functools.partial(
                        self.batches.open_native,
                        services=[self.transactions.native_handlers]),
                    budgets=self._native_budgets(), max_connections=max_native_connections,
                    tls=None if policy.tls is None else policy.tls.contexts(),
                    durability=log_sync)
                self.batches.native_port = self.native.port
        except BaseException:
            if self.native is not None:
                self.native.stop()
                self.native.join(0)
            backend = getattr(self, "backend", None)
            if backend is not None:
                backend.close()
            self.store.close()
            raise
        self.host = listen.rpartition(":")[0]
        self._stop_lock = threading.Lock()
        self._stopped = False

    def _native_budgets(self) -> dict[int, int]:
        """Each native frame kind's budget: its gRPC service's request budget."""
        default = self.store.limits.max_message_bytes
        return {native_wire.BATCH: self.batches.registration().max_request_bytes or default,
                native_wire.TXN: self.transactions.registration().max_request_bytes or default}

    @property
    def address(self) -> str:
        """``HOST:PORT`` with the real port, also when 0 was asked for."""
        return f"{self.host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        """``HOST:PORT`` of the metrics endpoint once started ("" without one)."""
        return self.metrics.address if self.metrics is not None else ""

    @property
    def native_address(self) -> str | None:
        """``HOST:PORT`` of the native transport, None if this node serves none."""
        return None if self.native is None else f"{self.host}:{self.native.port}"

    def start(self) -> Self:
        """Serve calls (and metrics, if asked); OSError if the metrics address is taken."""
        if self.metrics is not None:
            self.metrics.start()
        self.server.start()
        self.transactions.sessions.start()
        if self.native is not None:
            self.native.start()
        return self

    def _scraped(self) -> Iterable[Metric]:
        stats = self.oracle.stats()
        yield from oracle_families(stats.timestamps_served, stats.requests,
                                   stats.persisted_high_water)
        log_sync = self.store.engine.log_sync
        yield from store_families(disk_bytes(self.store.path), None if log_sync is None
                                  else (log_sync.passes, log_sync.done))
        gc = self.backend.collector
        yield from gc_families(self.backend.safe_point.value, gc.passes, gc.removed,
                               gc.locks_resolved, gc.seconds)

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop taking calls, let in-flight ones finish (bounded), close oracle and store.

        Idempotent and thread-safe.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                if self.native is not None:  # connections end after their batch
                    self.native.stop()
                self.batches.stop_streams()  # open streams end after their batch or request
                self.timestamps.stop_streams()
                self.transactions.stop_streams()
                stop_server(self.server, grace)
                if self.native is not None and not self.native.join(grace):
                    log.warning("native connections still executing after %.1f s", grace)
            finally:
                if self.metrics is not None:
                    self.metrics.stop()
                self.transactions.sessions.close()
                self.backend.close()  # its garbage collector and backfills; not the store
                self.oracle.close()
                self.store.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
