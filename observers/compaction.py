"""Compaction of the notify table: keep scans fast after millions of notifications came and went.

Every processed notification is deleted, and in LevelDB a delete is a tombstone
that scans must step over until a compaction drops it -- the slowdown Apache Fluo
saw on its notification scans.  A worker therefore compacts the notify table's key
range after every ``every`` deletes it made (bench/bench_observers.py measures scan
time after churn with and without).  The tablet store offers that as
``compact_table`` (in-process, or the CompactTable RPC of a RemoteStore); a store
without it is left to LevelDB's own background compactions, and :func:`compactor`
returns None.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bigtable_lite import TabletStore
from percolator import Client
from percolator.layout import notify_table

log = logging.getLogger(__name__)

DEFAULT_COMPACT_EVERY = 100_000
IDLE_COMPACT_MIN = 5_000  # deletes worth a compaction once the worker is idle


def compact_notify_table(store: TabletStore, compact: Callable[[bytes], None],
                         table: bytes) -> None:
    """Compact ``table`` so that its tombstones are really dropped (the store's compact_table)."""
    compact(table)


def compactor(store: TabletStore) -> Callable[[bytes], None] | None:
    """The store's ``compact_table(table)``, looking through wrappers (``.inner``); or None."""
    seen: object = store
    for _ in range(4):
        fn = getattr(seen, "compact_table", None)
        if callable(fn):
            return fn  # type: ignore[no-any-return]
        seen = getattr(seen, "inner", None)
        if seen is None:
            break
    return None


class CompactionPolicy:
    """Compact ``table`` once ``every`` deletes have been noted since the last compaction."""

    def __init__(self, store: TabletStore, table: bytes, every: int = DEFAULT_COMPACT_EVERY
                 ) -> None:
        if every < 1:
            raise ValueError("compaction interval must be at least 1 delete")
        self.table = table
        self.every = every
        self._store = store
        self._compact = compactor(store)
        self._since = 0
        self._lock = threading.Lock()
        self.compactions = 0
        self._warned = False

    @property
    def available(self) -> bool:
        return self._compact is not None

    @property
    def pending(self) -> int:
        """Deletes noted since the last compaction."""
        return self._since

    def note_deleted(self, n: int) -> None:
        with self._lock:
            self._since += n

    def maybe_compact(self, idle: bool = False) -> bool:
        """Compact if due; True if it did.

        Due after ``every`` deletes, or -- when the worker has just gone idle -- after
        ``IDLE_COMPACT_MIN`` of them: a burst of tens of thousands of tombstones slows the
        next pickups from ~1 ms to 8-200 ms (measured after a 5,000-paper citations
        load), and an idle worker has the time.
        """
        with self._lock:
            if self._since < (min(self.every, IDLE_COMPACT_MIN) if idle else self.every):
                return False
            self._since = 0
        if self._compact is None:
            if not self._warned:
                self._warned = True
                log.info("store cannot compact %r on request; tombstones of processed"
                         " notifications are left to LevelDB's own compactions", self.table)
            return False
        compact_notify_table(self._store, self._compact, self.table)
        self.compactions += 1
        return True


def compact_notifications(client: Client) -> bool:
    """Compact ``client``'s notify table now; False if its store cannot."""
    compact = compactor(client.store)
    if compact is None:
        return False
    compact_notify_table(client.store, compact, notify_table(client.table))
    return True
