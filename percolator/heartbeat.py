"""Heartbeat: keep the primary lock of a long commit alive (refresh its TTL).

Locks expire ``lock_ttl`` seconds after they were written, so a crashed client
blocks nobody for longer than that.  A live commit that takes longer (many
secondaries, a slow store) must push its primary's expiry forward, or readers would
roll it back under it.  One daemon thread per client refreshes every registered
primary older than a third of the TTL.
"""

from __future__ import annotations

import logging
import threading

from bigtable_lite import StorageError, TabletStore

from . import mutations
from .clock import Clock
from .mutations import CellWrite

log = logging.getLogger(__name__)


class _Held:
    """A primary being committed: what its lock is rebuilt from (rarely: only commits that
    outlive a third of the TTL are refreshed, so nothing is built on the hot path)."""

    __slots__ = ("cell", "column", "refreshed_ms", "row", "start_ts")

    def __init__(self, row: bytes, column: bytes, start_ts: int, cell: CellWrite,
                 refreshed_ms: int) -> None:
        self.row = row
        self.column = column
        self.start_ts = start_ts
        self.cell = cell  # the primary's write: its lock inlines a short value
        self.refreshed_ms = refreshed_ms  # when its lock's TTL started last


class LockKeeper:
    # _held is shared with committing threads without a lock: single dict operations
    # are atomic in CPython, and the heartbeat thread iterates over a copy.

    def __init__(self, store: TabletStore, table: bytes, clock: Clock, lock_ttl: float) -> None:
        self._store = store
        self._table = table
        self._clock = clock
        self._ttl_ms = int(lock_ttl * 1000)
        self._held: dict[int, _Held] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.refreshes = 0

    def expiry(self) -> int:
        return self._clock.now_ms() + self._ttl_ms

    def hold(self, row: bytes, column: bytes, start_ts: int, cell: CellWrite,
             expires_at_ms: int) -> None:
        """Keep the lock of the primary (row, column), written for ``cell`` with this expiry,
        alive until :meth:`release` (cheap: on every commit's path)."""
        self._held[start_ts] = _Held(row, column, start_ts, cell, expires_at_ms - self._ttl_ms)
        if self._thread is None:
            with self._cond:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="percolator-heartbeat")
                    self._thread.start()

    def release(self, start_ts: int) -> None:
        self._held.pop(start_ts, None)

    def refresh_due(self) -> None:
        """Refresh every held primary whose last refresh is older than a third of the TTL."""
        now = self._clock.now_ms()
        due = [h for h in list(self._held.values())
               if now - h.refreshed_ms >= self._ttl_ms // 3]
        for h in due:
            lock = mutations.lock_record(h.cell, h.start_ts, (h.row, h.column),
                                         now + self._ttl_ms, True)
            try:
                applied = self._store.mutate_rows([mutations.refresh_lock(
                    self._table, h.row, h.column, lock)])[0].applied
            except StorageError as exc:
                log.warning("heartbeat for transaction %d failed: %s", h.start_ts, exc)
                continue
            self.refreshes += 1
            if applied:
                h.refreshed_ms = now

    def _run(self) -> None:
        interval = max(self._ttl_ms / 3000.0 / 2, 0.005)
        while True:
            with self._cond:
                self._cond.wait(timeout=interval)
                if self._closed:
                    return
            self.refresh_due()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
