"""Node: one `percolator serve` process's parts, the tablet store and the oracle on gRPC.

A node owns a data directory (a :class:`~bigtable_lite.LocalStore`), the durable
timestamp :class:`~percolator.oracle.Oracle` persisted in that store, and one gRPC server
hosting both services, the transaction protocol's steps as batched commands
(``percolator.v1.Node``, run by a :class:`~percolator._local.LocalBackend`: see
``percolator/_node_service.py``), whole transactions for callers in any language
(``percolator.v1.Transactions``, run by the same backend: ``percolator/_txn_service.py``),
health checking and reflection.  Shutdown order matters:
stop taking calls and let in-flight ones finish, then close the oracle, then close
LevelDB cleanly; a node killed instead (``kill -9``) loses nothing acknowledged, and
its oracle restarts above every timestamp it handed out.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from typing import Self

import grpc

from bigtable_lite import LocalStore
from bigtable_lite.engine import SyncMode
from bigtable_lite.server import (
    HEALTH_STREAMS,
    REFLECTION_STREAMS,
    ServerPolicy,
    build_server,
    check_exposure,
    stop_server,
)

from . import oracle_service
from ._local import LocalBackend
from ._node_service import NodeService
from ._notify.service import NotificationsService
from ._sessions import DEFAULT_LOCK_WAIT, DEFAULT_MAX_OPEN, Sessions
from ._txn_service import TransactionsService
from .clock import Clock
from .oracle import DEFAULT_BLOCK_SIZE, Oracle

__all__ = ["DEFAULT_GRACE", "MIN_WORKERS", "Node", "stream_shares"]

DEFAULT_GRACE = 10.0
"""Seconds in-flight calls get to finish when a node stops."""
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
    ``data_dir``) and binds the port (``OSError`` if taken; ``InsecureListen`` if it is
    not a loopback address and ``policy`` has no TLS and tokens, unless it says
    ``insecure``); :meth:`start` begins serving.  ``clock`` judges the expiry of every
    lock written at this node (default: the system clock; its clients' clocks never do),
    and of the Transactions service's transactions.  ``max_transactions``: transactions
    the Transactions service holds open at once; ``txn_lock_wait``: seconds one of its
    reads waits for a live lock before it answers UNAVAILABLE (a server thread waits
    meanwhile).
    """

    def __init__(self, data_dir: str | os.PathLike[str], listen: str, sync: SyncMode = "none",
                 *, max_workers: int = 32, oracle_block_size: int = DEFAULT_BLOCK_SIZE,
                 clock: Clock | None = None, policy: ServerPolicy = ServerPolicy(),
                 max_transactions: int = DEFAULT_MAX_OPEN,
                 txn_lock_wait: float = DEFAULT_LOCK_WAIT) -> None:
        batch, timestamp, tablet, transaction, polls = stream_shares(max_workers)
        check_exposure(listen, policy)  # before the data directory is touched
        self.store = LocalStore(data_dir, sync=sync)
        try:
            self.oracle = Oracle(self.store, block_size=oracle_block_size)
            self.backend = LocalBackend(self.store, self.oracle, clock=clock, owned=False)
            self.batches = NodeService(self.backend, max_streams=batch)
            self.timestamps = oracle_service.OracleServicer(
                self.oracle, max_streams=timestamp)
            self.notifications = NotificationsService(
                self.backend.notifications, self.store.limits, max_polls=polls)
            self.transactions = TransactionsService(self.backend, Sessions(
                self.backend, max_open=max_transactions, lock_wait=txn_lock_wait),
                max_streams=transaction)
            self.server: grpc.Server
            self.server, self.port = build_server(
                self.store, listen, max_workers=max_workers,
                extra=[self.timestamps.registration(), self.batches.registration(),
                       self.notifications.registration(), self.transactions.registration()],
                policy=replace(policy, tablet_streams=tablet))
        except BaseException:
            self.store.close()
            raise
        self.host = listen.rpartition(":")[0]
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def address(self) -> str:
        """``HOST:PORT`` with the real port, also when 0 was asked for."""
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        self.server.start()
        self.transactions.sessions.start()
        return self

    def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop taking calls, let in-flight ones finish (bounded), close oracle and store.

        Idempotent and thread-safe.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                self.batches.stop_streams()  # open streams end after their batch or request
                self.timestamps.stop_streams()
                self.transactions.stop_streams()
                stop_server(self.server, grace)
            finally:
                self.transactions.sessions.close()
                self.backend.close()  # its background work (backfills); not the store
                self.oracle.close()
                self.store.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
