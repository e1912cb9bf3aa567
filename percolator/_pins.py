"""SnapshotPins: the snapshots a node holds open for remote callers' transactions.

A transaction of the Transactions service lives at the node between calls, reading at
its start_ts; garbage collection of old versions must keep every version such a
snapshot can see, so its safe point must stay at or below the oldest pinned start_ts.
The service pins a transaction's start_ts when it begins and unpins it when the
transaction is committed, rolled back or expires (``LocalBackend.pin``/``unpin``);
GC reads :meth:`oldest`.
"""

from __future__ import annotations

import threading

__all__ = ["SnapshotPins"]


class SnapshotPins:
    """A multiset of pinned start_ts.  Thread-safe."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}
        self._lock = threading.Lock()

    def pin(self, start_ts: int) -> None:
        with self._lock:
            self._count[start_ts] = self._count.get(start_ts, 0) + 1

    def unpin(self, start_ts: int) -> None:
        """Release one pin of ``start_ts`` (KeyError if it holds none: a bug of the caller)."""
        with self._lock:
            n = self._count[start_ts] - 1
            if n:
                self._count[start_ts] = n
            else:
                del self._count[start_ts]

    def oldest(self) -> int | None:
        """The smallest pinned start_ts, None if none is pinned."""
        with self._lock:
            return min(self._count, default=None)

    def __len__(self) -> int:
        with self._lock:
            return sum(self._count.values())
