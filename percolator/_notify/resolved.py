"""Resolved: the timestamp below which every position of the notification log is written.

Every write of log entries takes its position from :meth:`Tracker.allocate` (a commit
step its commit_ts, a one-phase commit, a roll-forward, a backfill chunk or a replay a
fresh timestamp) and holds it *in flight* until its store write returned.  The
timestamp is taken from the oracle under the tracker's mutex, so it is in the in-flight
set before anyone can compute a resolved timestamp above it::

    resolved = min(in flight) - 1     if anything is in flight
             = the last position handed out, otherwise

Every position at or below ``resolved`` was handed out before and has left the set, so
its write is done; every later one is above it.  A reader of a bucket up to
``resolved`` (``feed``) can therefore move its cursor to ``resolved`` and never pass an
entry that is written afterwards -- also when the entry announces an old change (a
secondary rolled forward by a reader long after its commit): such an entry gets a fresh
position, not its change's commit_ts.  After a restart the tracker starts at a fresh
timestamp (taken when first needed), above every position written before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..oracle import TimestampSource

__all__ = ["Tracker"]


class Tracker:
    """Positions of log writes in flight, and the resolved timestamp (thread-safe)."""

    def __init__(self, oracle: TimestampSource) -> None:
        self._oracle = oracle
        self._lock = threading.Lock()
        self._advanced = threading.Condition(self._lock)
        self._waiters = 0
        self._in_flight: dict[int, int] = {}  # first position -> count
        self._last: int | None = None  # taken when first needed (starting takes none)
        self.allocations = 0
        """Allocations made, ever (a recount of the log checks that none began meanwhile)."""

    @contextmanager
    def allocate(self, count: int = 1) -> Iterator[int]:
        """``count`` fresh contiguous positions (their first), in flight until the block ends."""
        with self._lock:
            first = (self._oracle.get_timestamp() if count == 1
                     else self._oracle.get_timestamps(count))
            self._in_flight[first] = count
            self._last = first + count - 1
            self.allocations += 1
        try:
            yield first
        finally:
            with self._lock:
                del self._in_flight[first]
                if self._waiters:
                    self._advanced.notify_all()

    def quiet(self) -> int | None:
        """:attr:`allocations` if no position is in flight now, else None."""
        with self._lock:
            return None if self._in_flight else self.allocations

    def resolved(self) -> int:
        with self._lock:
            return self._resolved()

    def _resolved(self) -> int:
        if self._in_flight:
            return min(self._in_flight) - 1
        if self._last is None:  # above every position written before this process
            self._last = self._oracle.get_timestamp()
        return self._last

    def wait_past(self, position: int, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until ``resolved() >= position``."""
        with self._lock:
            if self._resolved() >= position:
                return True
            self._waiters += 1
            try:
                return self._advanced.wait_for(lambda: self._resolved() >= position, timeout)
            finally:
                self._waiters -= 1
