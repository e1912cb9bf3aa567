"""LocalBackend: the protocol steps in this process, over a LocalStore and an Oracle.

The embedded client's backend, and the node's: a node executes its clients' commands
with one (``percolator._node_service``), so every step has one implementation.  Its
clock judges lock expiry for every lock written here.

The steps' own store requests are well-formed by construction from cells checked
where they entered (a Transaction, or the node's command decoding), so they go to the
store's unchecked view when every request the steps build from checked cells is
within the store's limits (validation belongs where input enters; checking again cost
~15% of an embedded single-row transaction).

Garbage collection lives here too: the backend's :class:`~percolator._safe_point.SafePoint`
(every step at a start_ts registers with it, and is refused below it) and its
:class:`~percolator._gc.Collector` (passes in the background every ``gc_interval``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bigtable_lite import LocalStore, StorageError, TabletStore

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
from ._gc import DEFAULT_GC_DUTY, DEFAULT_GC_LIFE_TIME, Collector
from ._gc_rows import ChangedRows, NotingStore
from ._gc_table import GcPass, read_samples, read_status
from ._notify.local import Notifications
from ._safe_point import DEFAULT_CLIENT_LEASE, SafePoint
from ._snapshots import ActiveSnapshots, SnapshotReport
from ._steps import StepContext, one_phase, prewrite, read, resolve_lock, rollback
from ._steps import commit as commit_step
from ._steps import heartbeat as heartbeat_step
from ._steps.check_txn_status import StatusCache
from ._steps.notify import NotifyLog, ObservedColumns
from .clock import Clock, SteadyClock
from .errors import SnapshotTooOld
from .oracle import Oracle, check_count

log = logging.getLogger(__name__)

__all__ = ["LocalBackend"]


def _requests_fit(store: LocalStore) -> bool:
    """Whether every store request the steps build from checked cells is within the
    store's limits: its largest value is a lock record, ~27 bytes plus the primary's row
    and column and an inlined value; rows per call and items per row are cut already."""
    limits = store.limits
    largest_lock = 64 + limits.max_row_bytes + limits.max_column_bytes + records.INLINE_VALUE_MAX
    return largest_lock <= limits.max_value_bytes


class LocalBackend:
    """Thread-safe.  Owns ``store`` and ``oracle`` when ``owned`` (closes them).

    ``gc_life_time``: seconds a snapshot stays readable at least; ``gc_interval``:
    seconds between background GC passes (None: none; :meth:`collect_garbage` runs
    one); ``client_lease``: seconds a remote client's report holds the safe point.
    """

    def __init__(self, store: LocalStore, oracle: Oracle, *, clock: Clock | None = None,
                 owned: bool = True, gc_life_time: float = DEFAULT_GC_LIFE_TIME,
                 gc_interval: float | None = None, gc_duty: float = DEFAULT_GC_DUTY,
                 client_lease: float = DEFAULT_CLIENT_LEASE) -> None:
        self._store = store
        self.oracle = oracle
        self.limits = store.limits
        # Lock expiry on a clock steps of the wall clock cannot move (percolator.clock),
        # not behind the latest time a GC sample of an earlier life recorded.
        self.clock = clock or SteadyClock(floor_ms=max(
            (wall for wall, _ in read_samples(store)), default=0))
        self._owned = owned
        self._closed = False
        changed = ChangedRows(read_status(store).tables, oracle.peek())
        steps_store = NotingStore(store.unchecked() if _requests_fit(store) else store,
                                  changed, oracle.peek)
        self.ctx = StepContext(steps_store, oracle, self.clock, store.limits, StatusCache(),
                               ObservedColumns(steps_store), one_phase.CommitLatches(),
                               NotifyLog(oracle))
        self.snapshots = ActiveSnapshots(oracle.peek)
        self.safe_point = SafePoint(store, oracle, self.clock, self.snapshots,
                                    life_time=gc_life_time, client_lease=client_lease)
        self.collector = Collector(self.ctx, store, self.safe_point, self.clock, changed,
                                   interval=gc_interval, duty=gc_duty)
        self._gc_tables = self.collector.note_table
        # The observers' verbs (registration, backfill, the feed to workers, parking).
        self.notifications = Notifications(self.ctx, store)

    @classmethod
    def open(cls, path: str, *, sync: str = "none", clock: Clock | None = None,
             gc_life_time: float = DEFAULT_GC_LIFE_TIME, gc_interval: float | None = None
             ) -> LocalBackend:
        """A backend owning a LocalStore on ``path`` and the oracle persisted in it."""
        store = LocalStore(path, sync=sync)  # type: ignore[arg-type]
        try:
            return cls(store, Oracle(store), clock=clock, gc_life_time=gc_life_time,
                       gc_interval=gc_interval)
        except BaseException:
            store.close()
            raise

    @property
    def store(self) -> TabletStore:
        return self._store

    @property
    def local_store(self) -> LocalStore:
        return self._store

    def timestamps(self, count: int = 1, client: bytes = b"") -> int:
        """Fresh timestamps; pinned for remote ``client`` until its next report (the node)."""
        return self.safe_point.timestamps(check_count(count) if count != 1 else 1, client)

    def read(self, table: bytes, start_ts: int | None, keys: Sequence[Key],
             client: bytes = b"", *, budget: int | None = None) -> ReadResult:
        """A fresh read (``start_ts`` None) takes its timestamp and pins it for remote
        ``client``, in one step with the hand-out.  ``budget``: bytes of values to gather
        at most (a node's reply), see ``read.read``."""
        safe_point = self.safe_point
        if start_ts is None:
            start_ts, token = safe_point.fresh(client)
        else:
            token = safe_point.enter(start_ts)
        try:
            return read.read(self.ctx, table, start_ts, keys, budget=budget)
        finally:
            safe_point.exit(token)

    def scan(self, request: ScanRequest) -> ScanChunk:
        token = self.safe_point.enter(request.start_ts)
        try:
            return read.scan(self.ctx, request)
        finally:
            self.safe_point.exit(token)

    def prewrite(self, request: PrewriteRequest) -> Conflict | None:
        self._gc_tables(request.table)
        token = self.safe_point.enter(request.start_ts)
        try:
            return prewrite.prewrite(self.ctx, request)
        finally:
            self.safe_point.exit(token)

    def commit(self, request: CommitRequest) -> CommitOutcome:
        outcome = self.commit_many([request])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def commit_many(self, requests: Sequence[CommitRequest]
                    ) -> list[CommitOutcome | Exception]:
        """The commit steps of independent transactions, with one oracle call (each its
        own outcome or error: ``commit.commit``; below the safe point, SnapshotTooOld)."""
        safe_point = self.safe_point
        entered: list[CommitRequest] = []
        tokens: list[int] = []
        refused: dict[int, SnapshotTooOld] = {}
        for i, request in enumerate(requests):
            try:
                tokens.append(safe_point.enter(request.start_ts))
            except SnapshotTooOld as exc:
                refused[i] = exc
                continue
            entered.append(request)
        try:
            done = iter(commit_step.commit(self.ctx, entered) if entered else [])
        finally:
            for token in tokens:
                safe_point.exit(token)
        return [refused[i] if i in refused else next(done) for i in range(len(requests))]

    def commit_one_phase(self, request: OnePhaseRequest) -> CommitOutcome | Conflict:
        self._gc_tables(request.table)
        token = self.safe_point.enter(request.start_ts)
        try:
            return one_phase.commit_one_phase(self.ctx, request)
        finally:
            self.safe_point.exit(token)

    def resolve(self, table: bytes, start_ts: int, keys: Sequence[Key]) -> int:
        return resolve_lock.resolve(self.ctx, table, start_ts, keys)

    def rollback(self, table: bytes, start_ts: int, primary: Key, keys: Sequence[Key]) -> None:
        """Refused below the safe point (GC settles such a transaction itself)."""
        token = self.safe_point.enter(start_ts)
        try:
            rollback.rollback(self.ctx, table, start_ts, primary, keys)
        finally:
            self.safe_point.exit(token)

    def heartbeat(self, table: bytes, start_ts: int, primary: Key, ttl_ms: int) -> bool:
        return heartbeat_step.heartbeat(self.ctx, table, start_ts, primary, ttl_ms)

    def check_txn_status(self, table: bytes, primary: Key, start_ts: int) -> TxnStatus:
        """Refused below the safe point: GC may have removed the primary's commit record
        (once every lock of the transaction was settled), so "no trace" would be a guess."""
        token = self.safe_point.enter(start_ts)
        try:
            return self.ctx.statuses.status(self.ctx, table, primary[0], primary[1], start_ts)
        finally:
            self.safe_point.exit(token)

    def register_observed(self, table: bytes, columns: Sequence[bytes]) -> int:
        for column in columns:
            self.notifications.register(table, column)
        return self.oracle.get_timestamp()

    def observed_columns(self, table: bytes) -> frozenset[bytes]:
        return frozenset(self.ctx.observed.of(table))

    def report_snapshots(self, client: bytes, report: SnapshotReport) -> int:
        """A remote client's running transactions (see ``SafePoint.report``; ``client``:
        its lease's key, ``_leases.client_key``); returns the safe point."""
        self.safe_point.report(client, report.seq, report.oldest, report.seen)
        return self.safe_point.value

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def collect_garbage(self) -> GcPass:
        """One GC pass now, unpaced."""
        return self.collector.run_pass()

    def close(self) -> None:
        """Stop GC (saving its samples); close store and oracle if owned.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.notifications.close()
        self.collector.close()
        try:
            self.safe_point.save()  # the oracle's history, for the next owner's GC
        except StorageError as exc:
            log.warning("GC samples not saved (%s): the next owner's first passes keep"
                        " more", exc)
        if self._owned:
            self.oracle.close()
            self._store.close()
