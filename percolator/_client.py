"""Client: begins transactions against a backend, embedded or at a node.

``Client.embedded(path)`` runs the protocol's steps in this process (one process owns
``path``); ``Client.connect(address)`` sends them to a ``percolator serve`` node.  Both
share every line of transaction code: they differ only in the
:class:`~percolator._backend.Backend` behind them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from bigtable_lite import Limits, SyncMode, TabletStore
from bigtable_lite.validation import check_key

from . import layout
from ._backend import Backend
from ._context import TxnContext
from ._gc import DEFAULT_GC_INTERVAL, DEFAULT_GC_LIFE_TIME
from ._gc_table import GcPass, GcStatus
from ._gc_table import read_status as read_gc_status
from ._keeper import LockKeeper
from ._notify.api import NotificationsBackend
from ._transaction import Transaction
from .clock import Clock, SystemClock
from .errors import CommitConflict, SnapshotTooOld, TransactionError
from .layout import DEFAULT_TABLE

if TYPE_CHECKING:
    from ._node_client import Transport

__all__ = ["DEFAULT_LOCK_TTL", "Client"]

T = TypeVar("T")

DEFAULT_LOCK_TTL = 3.0


class Client:
    """Thread-safe: share one Client between threads; give each thread its own transactions.

    ``one_phase`` (default): a transaction that fits one step commits in one (one hop
    to a node); False: always two-phase commit (for tests of its recovery).
    """

    def __init__(self, backend: Backend, *, table: bytes = DEFAULT_TABLE,
                 lock_ttl: float = DEFAULT_LOCK_TTL, lock_wait_timeout: float | None = None,
                 clock: Clock | None = None, one_phase: bool = True,
                 owned: Iterable[object] = ()) -> None:
        if not lock_ttl > 0:
            raise ValueError("lock_ttl must be positive")
        limits = backend.limits
        for name in (table, layout.notify_table(table), layout.config_table(table)):
            check_key(name, "table", limits.max_table_bytes)
        reserved = layout.reserved_table(table)
        if reserved is not None:
            raise ValueError(f"table {table!r} cannot hold transactions: {reserved}")
        self.backend = backend
        self.table = table
        self.clock = clock or SystemClock()
        self._owned = [backend, *owned]
        self._closed = False
        self.ctx = TxnContext(
            backend=backend, table=table, clock=self.clock, limits=limits,
            keeper=LockKeeper(backend, self.clock, lock_ttl), one_phase=one_phase,
            lock_wait_timeout=lock_wait_timeout if lock_wait_timeout is not None
            else max(30.0, 4 * lock_ttl))

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def embedded(cls, path: str | os.PathLike[str], *, sync: SyncMode = "none",
                 lock_ttl: float = DEFAULT_LOCK_TTL, clock: Clock | None = None,
                 table: bytes = DEFAULT_TABLE, one_phase: bool = True,
                 gc_life_time: float = DEFAULT_GC_LIFE_TIME,
                 gc_interval: float | None = DEFAULT_GC_INTERVAL) -> Client:
        """The protocol in this process, on the data directory ``path``.  ``clock`` paces
        waits and judges lock expiry (the backend's clock).  Garbage collection runs in
        the background every ``gc_interval`` seconds (None: only when asked,
        :meth:`collect_garbage`), keeping every snapshot of the last ``gc_life_time``
        seconds and of every running transaction readable."""
        from ._local import LocalBackend

        backend = LocalBackend.open(os.fspath(path), sync=sync, clock=clock,
                                    gc_life_time=gc_life_time, gc_interval=gc_interval)
        try:
            return cls(backend, table=table, lock_ttl=lock_ttl, clock=clock,
                       one_phase=one_phase)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def connect(cls, address: str, *, lock_ttl: float = DEFAULT_LOCK_TTL,
                timeout: float = 30.0, clock: Clock | None = None,
                table: bytes = DEFAULT_TABLE, one_phase: bool = True,
                transport: Transport = "auto", token: str | None = None,
                tls_ca: str | os.PathLike[str] | None = None,
                tls_cert: str | os.PathLike[str] | None = None,
                tls_key: str | os.PathLike[str] | None = None) -> Client:
        """A running ``percolator serve`` node at ``HOST:PORT`` (its gRPC address): every
        thread's steps share batched calls (:class:`~percolator._node_client.NodeClient`).

        ``transport``: "auto" sends them over the node's native transport when it serves
        one (it says where, over gRPC), else over gRPC; "native" or "grpc" only that.
        ``token`` is sent on every call (and in the native HELLO); ``tls_ca`` (the CA of
        the node's certificate) turns TLS on, ``tls_cert`` and ``tls_key`` add a client
        certificate, on both transports (``bigtable_lite.credentials.connect_channel``;
        ValueError for a token that would travel in the clear to another host).
        """
        from ._node_client import NodeClient

        node = NodeClient(address, timeout=timeout, transport=transport, token=token,
                          tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        try:
            return cls(node, table=table, lock_ttl=lock_ttl, clock=clock, one_phase=one_phase)
        except BaseException:
            node.close()
            raise

    @property
    def store(self) -> TabletStore:
        """The raw tablet store behind the backend (side tables of the layers above)."""
        return self.backend.store

    @property
    def limits(self) -> Limits:
        return self.backend.limits

    def timestamp(self) -> int:
        """A fresh timestamp from the backend's oracle."""
        return self.backend.timestamps(1)

    # --- garbage collection ---------------------------------------------------------------

    def collect_garbage(self) -> GcPass:
        """One garbage-collection pass of the backend's store now (at a node: the node's)."""
        return self.backend.collect_garbage()

    def gc_status(self) -> GcStatus:
        """The store's GC safe point, its last pass and the tables it collects."""
        return read_gc_status(self.backend.store)

    # --- observers' hook ------------------------------------------------------------------

    def register_observed_columns(self, columns: Iterable[bytes]) -> int:
        """Make every commit after the returned timestamp leave notifications for writes
        to ``columns`` (cells committed before it are the observers' backfill)."""
        cols = sorted(set(columns))
        for c in cols:
            if type(c) is not bytes or not c:
                raise ValueError("observed columns must be non-empty bytes")
            check_key(c, "column", self.limits.max_column_bytes)
        return self.backend.register_observed(self.table, cols)

    @property
    def observed_columns(self) -> frozenset[bytes]:
        return self.backend.observed_columns(self.table)

    @property
    def notifications(self) -> NotificationsBackend:
        """The observers' verbs at the backend (``percolator._notify.api``)."""
        return self.backend.notifications

    # --- transactions ---------------------------------------------------------------------

    def begin(self, *, lazy: bool = False) -> Transaction:
        """A new transaction whose snapshot is every commit acknowledged before this call.

        ``lazy``: the snapshot is taken by the first read instead, which takes its
        timestamp with it (at a node, one hop less); it then holds every commit
        acknowledged before that read.  :meth:`run` begins its attempts so.
        """
        if self._closed:
            raise TransactionError("client is closed")
        txn = Transaction(self.ctx, None)
        if not lazy:
            txn.start_ts  # noqa: B018 -- takes the snapshot now, registered (see _snapshots)
        return txn

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Commits on normal exit, rolls back on an exception."""
        txn = self.begin()
        try:
            yield txn
        except BaseException:
            txn.rollback()
            raise
        if txn.active:
            txn.commit()

    def run(self, fn: Callable[[Transaction], T], max_attempts: int = 10) -> T:
        """fn(txn) in a fresh transaction, re-run from scratch on CommitConflict (at its
        commit) or SnapshotTooOld (its snapshot fell below the GC safe point: at a read
        or at its commit).

        At most ``max_attempts`` runs in all, then the last of those errors is re-raised.
        Other exceptions propagate at once.  Writes are never replayed: each attempt
        is a new snapshot and a new run of ``fn``, taken by its first read
        (``begin(lazy=True)``).
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        last: CommitConflict | SnapshotTooOld | None = None
        for attempt in range(max_attempts):
            txn = self.begin(lazy=True)
            try:
                result = fn(txn)
            except SnapshotTooOld as exc:
                txn.rollback()
                last = exc
                self._back_off(attempt, max_attempts)
                continue
            except BaseException:
                txn.rollback()
                raise
            try:
                if txn.active:
                    txn.commit()
                return result
            except (CommitConflict, SnapshotTooOld) as exc:
                last = exc
                self._back_off(attempt, max_attempts)
        assert last is not None
        raise last

    def _back_off(self, attempt: int, max_attempts: int) -> None:
        if attempt + 1 < max_attempts:
            self.clock.sleep(random.uniform(0, 0.002 * (2 ** min(attempt, 6))))

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ctx.keeper.close()
        for resource in self._owned:
            close = getattr(resource, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
