"""Feed: a worker's one thread talking to the node about notifications.

Each turn is one pull (``percolator.notifications``): it renews the worker's lease,
hands back the entries its processors finished (deleted by the node) and the revoked
buckets it no longer holds, claims what it holds (after a node restart), reports its
counters when they changed, and asks for as many entries of its buckets as its queue
has room for.  The reply's entries go to the work queue; the buckets it lost have
their cells dropped; the revoked ones are released once none of their cells runs.

When the worker has nothing to do, the pull waits at the node (a long poll of up to
:data:`LONG_POLL` seconds) until the node writes an entry into one of its buckets: an
idle worker costs the node one call every few seconds, and a new entry is picked up
in one wake-up.  While cells run, the feed pulls without waiting whenever a processor
finishes or takes cells (at least every ``heartbeat``), and the pull that hands back
the last of them is followed at once by a waiting one.  Cells backing off after a
failure or a conflict do not count as running: meanwhile the feed waits at the node,
at most until the first of them is due.  (Waiting a heartbeat instead held every other
change back up to that long: a trickle of single writes took 0.5 s each to be
observed.)  A full queue is pulled at most every :data:`FULL_POLL` seconds until a
processor takes cells: the node answers such a pull at once with nothing but "more",
and pulling again at once made the feed spin for as long as a backlog filled the
queue, its cost per paper growing with the backlog (bench/README.md,
"bench_pipeline.py").  It still pulls, to learn of revocations while the queue is full.

If a pull fails, the feed waits until the node's channel is connected again (a
connectivity watch, at most half a second at a time, so it still sees a stop or its
lease running out) and pulls at once: a restarted node is pulled from within one
reconnect back-off (0.1-0.5 s) of taking connections.  A pull that failed on a connected
channel (the node refused it) is tried again after 50-250 ms.  Once its last
successful pull was sent more than half a lease ago the feed gives up its buckets (the
node gives them to others when the lease expires) and claims them again, read from
their start, when the node is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bigtable_lite import StorageError
from percolator.errors import PercolatorError
from percolator.notifications import NotificationsBackend, PullReply, PullRequest

from ._notifications import Entry, cells_of, done_refs
from ._ownership import Buckets, Ownership
from ._retry import reconnect_or_back_off
from ._stats import Counters
from ._work_queue import WorkQueue

__all__ = ["Feed", "LONG_POLL"]

LONG_POLL = 2.0
"""Seconds an idle worker's pull waits at the node at most."""
FULL_POLL = 0.05
"""Seconds between pulls while the work queue is full (no cell taken meanwhile)."""
_RETRY_FIRST = 0.05
_RETRY_MOST = 0.25

log = logging.getLogger(__name__)


class Feed:
    """The feed thread's state and loop (see the module docstring)."""

    def __init__(self, notifications: NotificationsBackend, table: bytes, worker: str,
                 ownership: Ownership, queue: WorkQueue, counters: Counters, *,
                 heartbeat: float, stats: Callable[[], tuple[bytes, bytes]],
                 stats_interval: float,
                 stopping: threading.Event) -> None:
        self.notifications = notifications
        self.table = table
        self.worker = worker
        self.ownership = ownership
        self.queue = queue
        self.counters = counters
        self.heartbeat = heartbeat
        self._stats = stats
        self.stats_interval = stats_interval
        self._stopping = stopping
        self._lock = threading.Lock()
        self._done: list[Entry] = []
        self._released: Buckets = {}
        # Revoked buckets whose queued cells were dropped here; if the node cancels the
        # revocation (the assignment changed back before they were released), they are
        # read again from their start (``_reread``): the cursor is past the dropped cells.
        self._dropped: Buckets = {}
        self._reread: Buckets = {}
        self._event = threading.Event()
        self._last_stats = b""
        self._stats_at = float("-inf")
        self.pulls = 0
        self.last_error = ""

    # --- for processors -------------------------------------------------------------------

    def finished(self, entries: tuple[Entry, ...]) -> None:
        """These entries are handled: the next pull hands them back."""
        with self._lock:
            self._done.extend(entries)
        self._event.set()

    def poke(self) -> None:
        """Something changed locally (cells taken or finished): pull soon."""
        self._event.set()

    @property
    def unsent(self) -> int:
        with self._lock:
            return len(self._done) + sum(len(b) for b in self._released.values())

    # --- the loop -------------------------------------------------------------------------

    def _request(self, wait: float) -> tuple[PullRequest, list[Entry], bytes]:
        """The next pull, the entries it hands back, and its counters' fingerprint."""
        with self._lock:
            done, self._done = self._done, []
            released, self._released = self._released, {}
        stats = fingerprint = b""
        if time.monotonic() - self._stats_at >= self.stats_interval:
            fingerprint, fresh = self._stats()
            if fingerprint != self._last_stats:
                stats = fresh
            else:  # unchanged: looked at again in an interval, not at every pull
                self._stats_at = time.monotonic()
        o = self.ownership
        # A bucket released is not held: if it comes straight back (its new owner left
        # meanwhile), the node reads it from its start -- its cells were dropped here.
        # So is one whose revocation was cancelled after its cells were dropped.
        held = {c: b - released.get(c, frozenset()) - self._reread.get(c, frozenset())
                for c, b in o.owned.items()}
        request = PullRequest(
            self.worker, tuple(sorted(o.prefixes)), int(o.lease * 1000),
            {c: b for c, b in held.items() if b}, released, tuple(done_refs(done)),
            o.cursors, self.queue.room(), int(wait * 1000), o.member_index, stats)
        return request, done, fingerprint

    def _unsent_again(self, request: PullRequest, done: list[Entry]) -> None:
        with self._lock:
            self._done[:0] = done
            for column, buckets in request.released.items():
                self._released[column] = self._released.get(column, frozenset()) | buckets

    def run(self) -> None:
        retry = _RETRY_FIRST
        idle_backoff = 0.1
        while not self._stopping.is_set():
            o = self.ownership
            if o.fenced() and o.owned:
                lost = o.clear()
                dropped = self.queue.drop(lost)
                log.warning("worker %s: no pull succeeded for half a lease (%s); gave up %d"
                            " buckets and %d queued cells, to claim again", self.worker,
                            self.last_error or "no error", sum(len(b) for b in lost.values()),
                            dropped)
            self.check_revoked()
            idle, due = self._idle_due()
            wait = min(LONG_POLL, o.lease / 4) if idle else 0.0
            if idle and due is not None:
                # A cell backing off is taken once due: the next pull (with its handing
                # back) need not come before; the floor keeps a cell due now from a spin.
                wait = min(wait, max(FULL_POLL, due))
            self._event.clear()
            request, done, fingerprint = self._request(wait)
            sent = time.monotonic()
            try:
                reply = self.notifications.pull(self.table, request)
            except (StorageError, PercolatorError) as exc:
                self._unsent_again(request, done)
                self.last_error = f"pull: {exc}"
                reconnect_or_back_off(self.notifications.wait_ready, retry,
                                      self._stopping.wait)
                retry = min(_RETRY_MOST, retry * 2)
                continue
            retry = _RETRY_FIRST
            self.pulls += 1
            if request.stats:
                self._last_stats = fingerprint
                self._stats_at = sent
            if request.released:
                self.ownership.release(request.released)
                self._dropped = _minus(self._dropped, request.released)
            sent_unheld = {c: b - request.held.get(c, frozenset())
                           for c, b in self._reread.items()}
            self._reread = _minus(self._reread, sent_unheld)  # read from their start now
            quick = self._apply(reply, sent)
            if self.unsent or (reply.more and self.queue.room() > 0):
                continue
            if reply.more:  # the queue is full: pull when a processor takes cells
                self._event.wait(FULL_POLL)
                continue
            if idle:
                if quick and not reply.rows and time.monotonic() - sent < wait / 2:
                    self._stopping.wait(idle_backoff)  # the node would not wait: back off
                    idle_backoff = min(1.0, idle_backoff * 1.5)
                else:
                    idle_backoff = 0.1
                continue
            if not reply.rows and self._idle():
                continue  # that pull handed back the last finished cells: wait at the node
            self._event.wait(self.heartbeat)

    def _idle(self) -> bool:
        return self._idle_due()[0]

    def _idle_due(self) -> tuple[bool, float | None]:
        """Whether nothing is queued, running or unsent here (cells backing off wait in
        the work queue: they do not keep the feed from waiting at the node), and when the
        first cell backing off is due."""
        with self.queue.lock:
            busy, due = self.queue.waiting()
        return not busy and not self.unsent and not self.ownership.revoking, due

    def _apply(self, reply: PullReply, sent: float) -> bool:
        """Take a reply; True if nothing about this worker's buckets changed."""
        before = dict(self.ownership.owned)
        lost = self.ownership.apply(reply, sent)
        if lost:
            self.queue.drop(lost)
        self._note_cancelled(reply)
        cells = cells_of(reply.rows)
        if cells:
            self.counters.add("found", self.queue.offer(cells))
        if reply.revoking:
            self._release_idle(reply.revoking)
        return before == reply.owned and not reply.revoking

    def _note_cancelled(self, reply: PullReply) -> None:
        """Buckets whose cells were dropped for a revocation the node has since cancelled
        (still owned, no longer revoking) are to be read again from their start; those
        no longer owned are forgotten (if granted again, they are read from the start)."""
        dropped: Buckets = {}
        for column, buckets in self._dropped.items():
            owned = buckets & reply.owned.get(column, frozenset())
            back = owned - reply.revoking.get(column, frozenset())
            if back:
                self._reread[column] = self._reread.get(column, frozenset()) | back
            if owned - back:
                dropped[column] = owned - back
        self._dropped = dropped

    def _release_idle(self, revoking: Buckets) -> None:
        """Drop the queued cells of revoked buckets; those with no cell running are
        released with the next pull (the others once their cells finish)."""
        self.queue.drop(revoking)
        for column, buckets in revoking.items():
            self._dropped[column] = self._dropped.get(column, frozenset()) | buckets
        with self.queue.lock:
            busy = self.queue.busy(revoking)
        free = {c: b - busy.get(c, frozenset()) for c, b in revoking.items()}
        free = {c: b for c, b in free.items() if b}
        if free:
            with self._lock:
                for column, buckets in free.items():
                    self._released[column] = self._released.get(column, frozenset()) | buckets

    def check_revoked(self) -> None:
        """Processors finished cells: release revoked buckets that have none running now."""
        revoking = self.ownership.revoking
        if revoking:
            with self._lock:
                already = dict(self._released)
            left = {c: b - already.get(c, frozenset()) for c, b in revoking.items()}
            left = {c: b for c, b in left.items() if b}
            if left:
                self._release_idle(left)

    def leave(self, stats: bytes) -> None:
        """The worker stops: hand back the last finished entries and leave."""
        with self._lock:
            done, self._done = self._done, []
        for attempt in range(3):
            try:
                self.notifications.leave(self.table, self.worker, done_refs(done), stats)
                return
            except (StorageError, PercolatorError) as exc:
                log.warning("worker %s: could not leave (%s)%s", self.worker, exc,
                            "; its lease expires by itself" if attempt == 2 else "")
                time.sleep(0.1)


def _minus(a: Buckets, b: Buckets) -> Buckets:
    out = {c: x - b.get(c, frozenset()) for c, x in a.items()}
    return {c: x for c, x in out.items() if x}
