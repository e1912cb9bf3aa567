"""LocalBackend: the protocol steps in this process, over a LocalStore and an Oracle.

The embedded client's backend, and the node's: a node executes its clients' commands
with one (``percolator._node_service``), so every step has one implementation.  Its
clock judges lock expiry for every lock written here.

The steps' own store requests are well-formed by construction from cells checked
where they entered (a Transaction, or the node's command decoding), so they go to the
store's unchecked view when every request the steps build from checked cells is
within the store's limits (validation belongs where input enters; checking again cost
~15% of an embedded single-row transaction).
"""

from __future__ import annotations

from collections.abc import Sequence

from bigtable_lite import LocalStore, TabletStore

from . import records
from ._backend import (
    CommitOutcome,
    CommitRequest,
    Conflict,
    Key,
    OnePhaseRequest,
    PrewriteRequest,
    ReadResult,
    ScanChunk,
    ScanRequest,
    TxnStatus,
)
from ._notify.local import Notifications
from ._pins import SnapshotPins
from ._steps import StepContext, one_phase, prewrite, read, resolve_lock, rollback
from ._steps import commit as commit_step
from ._steps import heartbeat as heartbeat_step
from ._steps.check_txn_status import StatusCache
from ._steps.notify import NotifyLog, ObservedColumns
from .clock import Clock, SystemClock
from .oracle import Oracle, check_count

__all__ = ["LocalBackend"]


def _requests_fit(store: LocalStore) -> bool:
    """Whether every store request the steps build from checked cells is within the
    store's limits: its largest value is a lock record, ~27 bytes plus the primary's row
    and column and an inlined value; rows per call and items per row are cut already."""
    limits = store.limits
    largest_lock = 64 + limits.max_row_bytes + limits.max_column_bytes + records.INLINE_VALUE_MAX
    return largest_lock <= limits.max_value_bytes


class LocalBackend:
    """Thread-safe.  Owns ``store`` and ``oracle`` when ``owned`` (closes them)."""

    def __init__(self, store: LocalStore, oracle: Oracle, *, clock: Clock | None = None,
                 owned: bool = True) -> None:
        self._store = store
        self.oracle = oracle
        self.limits = store.limits
        self.clock = clock or SystemClock()
        self._owned = owned
        steps_store = store.unchecked() if _requests_fit(store) else store
        self.ctx = StepContext(steps_store, oracle, self.clock, store.limits, StatusCache(),
                               ObservedColumns(steps_store), one_phase.CommitLatches(),
                               NotifyLog(oracle))
        # The observers' verbs (registration, backfill, the feed to workers, parking).
        self.notifications = Notifications(self.ctx, store)
        self.pins = SnapshotPins()

    @classmethod
    def open(cls, path: str, *, sync: str = "none", clock: Clock | None = None
             ) -> LocalBackend:
        """A backend owning a LocalStore on ``path`` and the oracle persisted in it."""
        store = LocalStore(path, sync=sync)  # type: ignore[arg-type]
        try:
            return cls(store, Oracle(store), clock=clock)
        except BaseException:
            store.close()
            raise

    @property
    def store(self) -> TabletStore:
        return self._store

    @property
    def local_store(self) -> LocalStore:
        return self._store

    def timestamps(self, count: int = 1) -> int:
        if count == 1:
            return self.oracle.get_timestamp()
        return self.oracle.get_timestamps(check_count(count))

    def read(self, table: bytes, start_ts: int | None, keys: Sequence[Key], *,
             budget: int | None = None) -> ReadResult:
        """``budget``: bytes of values to gather at most (a node's reply), see ``read.read``."""
        return read.read(self.ctx, table, start_ts, keys, budget=budget)

    def scan(self, request: ScanRequest) -> ScanChunk:
        return read.scan(self.ctx, request)

    def prewrite(self, request: PrewriteRequest) -> Conflict | None:
        return prewrite.prewrite(self.ctx, request)

    def commit(self, request: CommitRequest) -> CommitOutcome:
        outcome = commit_step.commit(self.ctx, [request])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def commit_many(self, requests: Sequence[CommitRequest]
                    ) -> list[CommitOutcome | Exception]:
        """The commit steps of independent transactions, with one oracle call (each its
        own outcome or error: ``commit.commit``)."""
        return commit_step.commit(self.ctx, requests)

    def commit_one_phase(self, request: OnePhaseRequest) -> CommitOutcome | Conflict:
        return one_phase.commit_one_phase(self.ctx, request)

    def resolve(self, table: bytes, start_ts: int, keys: Sequence[Key]) -> int:
        return resolve_lock.resolve(self.ctx, table, start_ts, keys)

    def rollback(self, table: bytes, start_ts: int, primary: Key, keys: Sequence[Key]) -> None:
        rollback.rollback(self.ctx, table, start_ts, primary, keys)

    def heartbeat(self, table: bytes, start_ts: int, primary: Key, ttl_ms: int) -> bool:
        return heartbeat_step.heartbeat(self.ctx, table, start_ts, primary, ttl_ms)

    def check_txn_status(self, table: bytes, primary: Key, start_ts: int) -> TxnStatus:
        return self.ctx.statuses.status(self.ctx, table, primary[0], primary[1], start_ts)

    def register_observed(self, table: bytes, columns: Sequence[bytes]) -> int:
        for column in columns:
            self.notifications.register(table, column)
        return self.oracle.get_timestamp()

    def observed_columns(self, table: bytes) -> frozenset[bytes]:
        return frozenset(self.ctx.observed.of(table))

    # --- snapshots held open at this backend (the Transactions service's) -----------------

    def pin(self, start_ts: int) -> None:
        """Keep the versions a snapshot at ``start_ts`` reads: garbage collection's safe
        point stays at or below the oldest pinned start_ts (:attr:`pins`) until
        :meth:`unpin`."""
        self.pins.pin(start_ts)

    def unpin(self, start_ts: int) -> None:
        self.pins.unpin(start_ts)

    def close(self) -> None:
        self.notifications.close()
        if self._owned:
            self.oracle.close()
            self._store.close()
