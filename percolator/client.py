"""Client: begins transactions against a store and an oracle, embedded or over gRPC.

``Client.embedded(path)`` runs the store and the oracle in this process (one process
owns ``path``); ``Client.connect(address)`` talks to a ``percolator serve`` node.
Both share every line of transaction code: they differ only in the TabletStore,
TimestampSource and CommitService behind them (embedded: the commit step runs here;
remote: at the node, as one command of a batch).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from bigtable_lite import DEFAULT_LIMITS, Limits, LocalStore, Put, RowMutation, RowRead, TabletStore
from bigtable_lite.engine import SyncMode
from bigtable_lite.validation import check_key

from . import layout
from .batching import CoalescingStore
from .clock import Clock, SystemClock
from .commit import CommitService, LocalCommit
from .context import TxnContext
from .errors import CommitConflict, TransactionError
from .fresh_read import FreshReads
from .heartbeat import LockKeeper
from .layout import DEFAULT_TABLE
from .oracle import Oracle, TimestampSource
from .records import INLINE_VALUE_MAX
from .resolve import LockResolver
from .secondaries import SecondaryCommitter
from .transaction import Transaction

T = TypeVar("T")

DEFAULT_LOCK_TTL = 3.0
OBSERVED_REFRESH = 1.0  # seconds between re-reads of the observed-column set


def _requests_fit(limits: Limits) -> bool:
    """Whether every store request the transaction protocol builds from cells that
    Transaction checked is within ``limits`` (so an unchecked store may take them): its
    largest value is a lock record, ~27 bytes plus the primary's row and column and an
    inlined value; rows per call and items per row are cut to the limits already."""
    largest_lock = 64 + limits.max_row_bytes + limits.max_column_bytes + INLINE_VALUE_MAX
    return largest_lock <= limits.max_value_bytes


class Client:
    """Thread-safe: share one Client between threads; give each thread its own transactions."""

    def __init__(self, store: TabletStore, oracle: TimestampSource, *,
                 table: bytes = DEFAULT_TABLE, lock_ttl: float = DEFAULT_LOCK_TTL,
                 lock_wait_timeout: float | None = None, clock: Clock | None = None,
                 limits: Limits = DEFAULT_LIMITS, background_secondaries: bool = False,
                 commits: CommitService | None = None, fresh_reads: FreshReads | None = None,
                 protocol_store: TabletStore | None = None,
                 owned: Iterable[object] = ()) -> None:
        """``commits`` runs the commit step and ``fresh_reads`` a lazy transaction's first
        read at a node (default: in this process, over ``store`` and ``oracle``;
        secondaries in a background thread if ``background_secondaries``).

        ``protocol_store``: the same data as ``store`` for the transaction protocol's own
        requests (default ``store``; embedded, the LocalStore's unchecked view, since
        transactions check every cell first).  ``store`` stays what users reach.
        """
        if not lock_ttl > 0:
            raise ValueError("lock_ttl must be positive")
        for name in (table, layout.notify_table(table), layout.config_table(table)):
            check_key(name, "table", limits.max_table_bytes)
        self.store = store
        store = protocol_store or store
        self.oracle = oracle
        self.table = table
        self.clock = clock or SystemClock()
        self._observed: frozenset[bytes] = frozenset()
        self._observed_at = -OBSERVED_REFRESH - 1.0
        self._owned = list(owned)
        self._closed = False
        keeper = LockKeeper(store, table, self.clock, lock_ttl)
        self.resolver = LockResolver(store, table, self.clock)
        secondaries = None
        if commits is None:
            secondaries = (SecondaryCommitter(store, limits=limits) if background_secondaries
                           else None)
            commits = LocalCommit(store, oracle, limits, secondaries=secondaries)
        self.ctx = TxnContext(
            store=store, table=table, oracle=oracle, resolver=self.resolver, keeper=keeper,
            clock=self.clock, limits=limits, lock_ttl=lock_ttl,
            lock_wait_timeout=lock_wait_timeout if lock_wait_timeout is not None
            else max(30.0, 4 * lock_ttl),
            commits=commits, fresh_reads=fresh_reads,
            secondaries=secondaries, is_observed=self._is_observed)

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def embedded(cls, path: str | os.PathLike[str], *, sync: SyncMode = "none",
                 lock_ttl: float = DEFAULT_LOCK_TTL, clock: Clock | None = None,
                 table: bytes = DEFAULT_TABLE) -> Client:
        """Store and oracle in this process, on the data directory ``path``."""
        store = LocalStore(path, sync=sync)
        oracle: Oracle | None = None
        try:
            oracle = Oracle(store)
            return cls(store, oracle, table=table, lock_ttl=lock_ttl, clock=clock,
                       limits=store.limits, owned=[oracle, store],
                       protocol_store=store.unchecked() if _requests_fit(store.limits) else None)
        except BaseException:
            if oracle is not None:
                oracle.close()
            store.close()
            raise

    @classmethod
    def connect(cls, address: str, *, lock_ttl: float = DEFAULT_LOCK_TTL,
                timeout: float = 30.0, clock: Clock | None = None,
                table: bytes = DEFAULT_TABLE, batch_commands: bool = True,
                token: str | None = None, tls_ca: str | os.PathLike[str] | None = None,
                tls_cert: str | os.PathLike[str] | None = None,
                tls_key: str | os.PathLike[str] | None = None) -> Client:
        """A running ``percolator serve`` node at ``HOST:PORT``.

        ``token`` is sent on every call; ``tls_ca`` (the CA of the node's certificate)
        turns TLS on, ``tls_cert`` and ``tls_key`` add a client certificate
        (``bigtable_lite.credentials.connect_channel``).

        ``batch_commands`` (default): every thread's reads, writes, timestamp requests and
        commit steps share ``Node.Batch`` calls (:class:`~percolator.node_client.NodeClient`;
        it switches to the per-service path by itself if the node does not offer them).
        False: reads and writes coalesce per kind over the tablet service, timestamps
        over the oracle service, secondaries are committed in the background.
        """
        from bigtable_lite.credentials import connect_channel
        from bigtable_lite.remote import RemoteStore, channel_options

        from .node_client import NodeClient
        from .oracle_client import RemoteOracle

        channel = connect_channel(address, channel_options(DEFAULT_LIMITS), token=token,
                                  tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        if batch_commands:
            node = NodeClient(channel, timeout=timeout)
            return cls(node, node, table=table, lock_ttl=lock_ttl, clock=clock, commits=node,
                       fresh_reads=node, owned=[node, channel])
        remote = RemoteStore(channel, timeout=timeout)
        oracle = RemoteOracle(channel, timeout=timeout)
        store = CoalescingStore(remote)
        return cls(store, oracle, table=table, lock_ttl=lock_ttl, clock=clock,
                   background_secondaries=True, owned=[oracle, remote, channel])

    # --- observers' hook ------------------------------------------------------------------

    def _is_observed(self, column: bytes) -> bool:
        return column in self._observed

    def register_observed_columns(self, columns: Iterable[bytes]) -> None:
        """Record in the store that writes to ``columns`` must leave notifications.

        Every client learns the set at start and re-reads it every
        ``OBSERVED_REFRESH`` seconds; register observers (``percolator worker`` does)
        before writers start, so no write goes unnoticed.
        """
        cols = sorted(set(columns))
        for c in cols:
            if type(c) is not bytes or not c:
                raise ValueError("observed columns must be non-empty bytes")
        if cols:
            self.store.mutate_rows([RowMutation(
                layout.config_table(self.table), layout.OBSERVED_ROW,
                tuple(Put(c, 0, b"") for c in cols))], sync=True)
        self.refresh_observed_columns()

    def refresh_observed_columns(self) -> None:
        cells = self.store.read_rows([RowRead(layout.config_table(self.table),
                                              layout.OBSERVED_ROW)])[0]
        self._observed = frozenset(c.column for c in cells)
        self._observed_at = time.monotonic()

    @property
    def observed_columns(self) -> frozenset[bytes]:
        return self._observed

    # --- transactions ---------------------------------------------------------------------

    def begin(self, *, lazy: bool = False) -> Transaction:
        """A new transaction whose snapshot is every commit acknowledged before this call.

        ``lazy``: the snapshot is taken by the first read instead, which takes its
        timestamp with it (over gRPC one hop less); it then holds every commit
        acknowledged before that read.  :meth:`run` begins its attempts so.
        """
        if self._closed:
            raise TransactionError("client is closed")
        if time.monotonic() - self._observed_at > OBSERVED_REFRESH:
            self.refresh_observed_columns()
        return Transaction(self.ctx, None if lazy else self.oracle.get_timestamp())

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
        """fn(txn) in a fresh transaction, re-run from scratch on CommitConflict.

        At most ``max_attempts`` runs in all, then the last CommitConflict is re-raised.
        Other exceptions propagate at once.  Writes are never replayed: each attempt
        is a new snapshot and a new run of ``fn``, taken by its first read
        (``begin(lazy=True)``).
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        last: CommitConflict | None = None
        for attempt in range(max_attempts):
            txn = self.begin(lazy=True)
            try:
                result = fn(txn)
            except BaseException:
                txn.rollback()
                raise
            try:
                if txn.active:
                    txn.commit()
                return result
            except CommitConflict as exc:
                last = exc
                if attempt + 1 < max_attempts:
                    self.clock.sleep(random.uniform(0, 0.002 * (2 ** min(attempt, 6))))
        assert last is not None
        raise last

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until background commits of secondaries are written."""
        if self.ctx.secondaries is None:
            return True
        return self.ctx.secondaries.flush(timeout)

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.ctx.secondaries is not None:
            self.ctx.secondaries.close()
        self.ctx.keeper.close()
        for resource in self._owned:
            close = getattr(resource, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


