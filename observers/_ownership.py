"""Ownership: which buckets of its columns this worker owns, as its last pull said.

The node assigns buckets to live workers (``percolator._notify.assignment``); each pull
reply says which this worker owns and which it must release.  The worker also fences
itself: when its last successful pull was *sent* more than half a lease ago, it starts
no observer transaction until a pull succeeds again (the node starts the lease when
the pull arrives, later than it was sent, so the worker stops before the node could
give its buckets away).  Fencing is a performance property: exactly-once rests on the
acknowledgements, whoever runs a cell.

Observers that care where their cells run (the citations' counters: a counter is
written directly only by the worker that owns it) see this as a :class:`Placement`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from percolator.notifications import Cursors, PullReply, bucket_of

__all__ = ["Ownership"]

Buckets = dict[bytes, frozenset[int]]


class Ownership:
    """Owned buckets, cursors and fencing of one worker (thread-safe reads).

    ``prefixes``: observed column -> its partition prefix (the same bucket function as
    the node's).
    """

    def __init__(self, prefixes: Mapping[bytes, bytes], lease: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefixes = dict(prefixes)
        self.lease = lease
        self._clock = clock
        self._lock = threading.Lock()
        self.owned: Buckets = {}
        self.revoking: Buckets = {}
        self.cursors = Cursors()
        self.member_index = -1
        self._renewed = float("-inf")

    # --- Placement ------------------------------------------------------------------------

    def owns(self, row: bytes, column: bytes) -> bool:
        """Whether (row, column)'s bucket is this worker's now (False while fenced, and
        while the bucket is being revoked: it is about to be another's)."""
        prefix = self.prefixes.get(column)
        if prefix is None:
            return False
        return self.holds(column, bucket_of(row, prefix)) and not self.fenced()

    def holds(self, column: bytes, bucket: int) -> bool:
        """Whether cells of the bucket may be taken: owned and not being revoked (its queued
        cells are dropped, so a batch never holds up a handover the worker knows of)."""
        return bucket in self.owned.get(column, ()) and \
            bucket not in self.revoking.get(column, ())

    def fenced(self) -> bool:
        return self._clock() > self._renewed + self.lease / 2

    # --- the feed's -----------------------------------------------------------------------

    def apply(self, reply: PullReply, sent_at: float) -> Buckets:
        """Take the reply of a pull sent at ``sent_at``; the buckets held before that are
        not this worker's any more (revoked or lost: drop their cells)."""
        with self._lock:
            lost: Buckets = {}
            for column, buckets in self.owned.items():
                gone = buckets - reply.owned.get(column, frozenset())
                if gone:
                    lost[column] = gone
            self.owned = dict(reply.owned)
            self.revoking = dict(reply.revoking)
            self.cursors = reply.cursors
            self.member_index = reply.member_index
            self._renewed = max(self._renewed, sent_at)
            return lost

    def release(self, released: Buckets) -> None:
        """These revoked buckets were handed back: no longer held."""
        with self._lock:
            for column, buckets in released.items():
                left = self.owned.get(column, frozenset()) - buckets
                if left:
                    self.owned[column] = left
                else:
                    self.owned.pop(column, None)
                going = self.revoking.get(column, frozenset()) - buckets
                if going:
                    self.revoking[column] = going
                else:
                    self.revoking.pop(column, None)

    def clear(self) -> Buckets:
        """Give up everything (fenced too long): the next pull claims nothing and reads
        whatever it is granted from the start.  What was held."""
        with self._lock:
            lost, self.owned, self.revoking = self.owned, {}, {}
            self.cursors = Cursors()
            return lost

    @property
    def buckets(self) -> int:
        return sum(len(b) for b in self.owned.values())
