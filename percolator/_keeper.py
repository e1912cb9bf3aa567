"""LockKeeper: keep the primary locks of this client's long commits alive.

A lock expires ``lock_ttl`` after it was written (on the clock of the backend that wrote
it), so a crashed client blocks nobody for longer than that.  A live commit that takes
longer (many secondaries, a slow store) must have its primary's expiry moved, or
readers would roll it back under it: one daemon thread per client asks the backend's
heartbeat step for every primary held longer than a third of the TTL.
"""

from __future__ import annotations

import logging
import threading

from bigtable_lite import StorageError

from ._backend import Backend, Key
from .clock import Clock

log = logging.getLogger(__name__)

__all__ = ["LockKeeper"]


class _Held:
    __slots__ = ("primary", "refreshed_ms", "table")

    def __init__(self, table: bytes, primary: Key, refreshed_ms: int) -> None:
        self.table = table
        self.primary = primary
        self.refreshed_ms = refreshed_ms  # when its lock's TTL started last (monotonic)


class LockKeeper:
    # _held is shared with committing threads without a lock: single dict operations
    # are atomic in CPython, and the heartbeat thread iterates over a copy.

    def __init__(self, backend: Backend, clock: Clock, lock_ttl: float) -> None:
        self._backend = backend
        self._clock = clock
        self.ttl_ms = int(lock_ttl * 1000)
        self._held: dict[int, _Held] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.refreshes = 0

    def hold(self, table: bytes, primary: Key, start_ts: int) -> None:
        """Keep transaction ``start_ts``'s primary lock alive until :meth:`release` (cheap:
        on every two-phase commit's path; call it before the prewrite)."""
        self._held[start_ts] = _Held(table, primary, self._clock.monotonic_ms())
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
        now = self._clock.monotonic_ms()  # a step of the wall clock must not skip refreshes
        for start_ts, h in list(self._held.items()):
            if now - h.refreshed_ms < self.ttl_ms // 3:
                continue
            try:
                held = self._backend.heartbeat(h.table, start_ts, h.primary, self.ttl_ms)
            except StorageError as exc:
                log.warning("heartbeat for transaction %d failed: %s", start_ts, exc)
                continue
            self.refreshes += 1
            if held:
                h.refreshed_ms = now

    def _run(self) -> None:
        interval = max(self.ttl_ms / 3000.0 / 2, 0.005)
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
