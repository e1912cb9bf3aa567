"""Lock resolution: finish or undo what a crashed or slow writer left behind.

A reader (or a writer whose prewrite met a lock) hands the locks it met to
:class:`LockResolver`.  Locks are grouped by transaction, so each transaction's
primary is checked once however many of its locks were met, and final statuses are
cached (they never change).  Then every lock of a committed transaction is rolled
forward and every lock of a rolled-back one erased, in one batched store call.
Locks whose transaction is alive and undecided are returned, for the caller to wait
on with backoff.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from bigtable_lite import RowMutation, TabletStore

from . import mutations
from .clock import Clock
from .records import Lock
from .txn_status import COMMITTED, TxnStatus, check_txn_status


@dataclass(frozen=True, slots=True)
class FoundLock:
    """A lock met in the store: cell (row, column) and the record, which names its owner."""

    row: bytes
    column: bytes
    lock: Lock

    @property
    def start_ts(self) -> int:
        """The owning transaction's start_ts."""
        return self.lock.start_ts


TxnKey = tuple[bytes, bytes, int]  # primary row, primary column, start_ts


class LockResolver:
    def __init__(self, store: TabletStore, table: bytes, clock: Clock,
                 cache_size: int = 100_000) -> None:
        self._store = store
        self._table = table
        self._clock = clock
        self._cache: OrderedDict[TxnKey, TxnStatus] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.status_checks = 0
        self.resolved_locks = 0

    def status(self, primary_row: bytes, primary_column: bytes, start_ts: int, *,
               roll_back_expired: bool = True) -> TxnStatus:
        """A transaction's status, from the cache when final."""
        key = (primary_row, primary_column, start_ts)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        self.status_checks += 1
        status = check_txn_status(self._store, self._table, primary_row, primary_column, start_ts,
                                  self._clock.now_ms(), roll_back_expired=roll_back_expired)
        if status.final:
            with self._lock:
                self._cache[key] = status
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return status

    def remember(self, primary_row: bytes, primary_column: bytes, start_ts: int,
                 status: TxnStatus) -> None:
        """Record a final status learned first-hand (e.g. by the committer)."""
        if status.final:
            with self._lock:
                self._cache[(primary_row, primary_column, start_ts)] = status

    def resolve(self, locks: Iterable[FoundLock]) -> list[FoundLock]:
        """Roll forward or back every lock whose transaction is decided; return the rest."""
        by_txn: dict[TxnKey, list[FoundLock]] = {}
        for found in locks:
            key = (found.lock.primary_row, found.lock.primary_column, found.start_ts)
            by_txn.setdefault(key, []).append(found)
        fixes: list[RowMutation] = []
        alive: list[FoundLock] = []
        for (prow, pcol, start_ts), group in by_txn.items():
            status = self.status(prow, pcol, start_ts)
            if not status.final:
                alive.extend(group)
                continue
            for found in group:
                if status.state == COMMITTED:
                    fixes.append(mutations.commit(
                        self._table, found.row, [(found.column, found.lock.op, found.lock.value)],
                        start_ts, status.commit_ts))
                elif not (found.row == prow and found.column == pcol):
                    fixes.append(mutations.rollback_secondary(
                        self._table, found.row, [found.column], start_ts))
        if fixes:
            self._store.mutate_rows(fixes)
            self.resolved_locks += len(fixes)
        return alive
