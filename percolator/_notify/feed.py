"""Feed: the entries of a table's notification log, handed to the workers that own them.

A worker *pulls* (:meth:`TableFeed.pull`): its request renews its lease, deletes the
entries it handled, releases revoked buckets, and asks for up to ``room`` entries of
its buckets.  For each bucket it owns the feed reads the log rows after the worker's
cursor up to the resolved timestamp (``resolved``): nothing at or below it is still to
be written, so the cursor moves to it and no entry is ever passed.  Nothing is read
twice in the steady state: a bucket is read only if an entry was written into it after
the cursor (the feed keeps the highest position written per bucket, learnt from a scan
of the log when the feed starts and from every write since, ``written``).

If there is nothing to hand out, the pull waits (a long poll, at most ``wait_ms``)
until a write into one of the worker's buckets wakes it, or an assignment change, or
the resolved timestamp passes an entry already written.  So an idle worker costs one
call every few seconds, and a new entry reaches its owner in one wake-up.

Cursors live in the worker (the request carries them, the reply the new ones), so a
pull whose reply was lost is simply repeated.  A bucket the worker owns but does not
hold yet (just granted) is read from its start: entries a previous owner took and did
not finish are still there.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from bigtable_lite import RowMutation, ScanRequest, TabletStore

from .. import layout
from . import log
from .api import Cursors, DoneRef, LogRow, PullReply, PullRequest
from .assignment import Assignment, Member
from .counts import Counts, count_row, deletes, removed
from .resolved import Tracker

__all__ = ["MAX_REPLY_BYTES", "TableFeed"]

MAX_REPLY_BYTES = 8 << 20
"""Bytes of entries in one reply at most (more stay for the next pull)."""
REINDEX = 30.0
"""Seconds between scans of the whole log that look for entries not written by the node."""
RECOUNT = 1.0
"""Seconds between scans of a column whose count may be off (``counts``), at least."""
_DELETES_PER_CALL = 5_000

_log = logging.getLogger(__name__)


class TableFeed:
    """The feed of one table (thread-safe).  ``on_deleted(n)``: entries were deleted;
    ``on_idle()``: a pull found nothing (the owner compacts the log after many deletes,
    or after a burst once idle)."""

    def __init__(self, table: bytes, store: TabletStore, tracker: Tracker, *,
                 on_deleted: Callable[[int], None] = lambda n: None,
                 on_idle: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.log_table = layout.notify_table(table)
        self._store = store
        self._tracker = tracker
        self._on_deleted = on_deleted
        self._on_idle = on_idle
        self._clock = clock
        self._lock = threading.Lock()
        self.assignment = Assignment()
        self._last: dict[tuple[bytes, int], int] = {}  # highest position written per bucket
        # Per bucket, a position below which it holds no entry (``pending``).
        self._floor: dict[tuple[bytes, int], int] = {}
        self.counts = Counts(tracker)
        self._writes = 0  # calls of ``written``, ever (``pending`` checks none came meanwhile)
        self._skipped_rows = 0
        self._indexed_at = clock()

    def build_index(self, columns: Iterable[bytes] | None = None, *,
                    force: bool = True) -> None:
        """Learn the highest position of every bucket and the entries per column from one
        scan of the log, or of these columns' part of it (writes meanwhile reach
        :meth:`written` too).  The counts are set from the scan if it was settled
        (``counts``), or, with ``force`` (the first scan), anyway, marked unsure."""
        scans = [(ScanRequest(self.log_table), None)] if columns is None else [
            (ScanRequest(self.log_table, log.column_prefix(c), log.column_end(c)), {c})
            for c in sorted(set(columns)) if c and len(c) <= log.MAX_COLUMN]
        for scan, scope in scans:
            self._index(scan, scope, force)
        with self._lock:
            self._indexed_at = self._clock()

    def _index(self, scan: ScanRequest, scope: set[bytes] | None, force: bool) -> None:
        last: dict[tuple[bytes, int], int] = {}
        first: dict[tuple[bytes, int], int] = {}
        found: dict[bytes, int] = {}
        mark = self.counts.begin()
        rows = self._store.scan(scan)
        head = next(rows, None)  # the scan's snapshot is taken by now
        settled = self.counts.settled(mark)
        for row in itertools.chain((head,) if head is not None else (), rows):
            try:
                column, bucket, position = log.decode_key(row.row)
            except ValueError:
                continue
            key = (column, bucket)
            if position > last.get(key, 0):
                last[key] = position
            if key not in first:
                first[key] = position
            count_row(found, row.row, len(row.cells))
        with self._lock:
            for key, position in last.items():
                if position > self._last.get(key, 0):
                    self._last[key] = position
            for key, position in first.items():  # one written behind the node's back
                if position < self._floor.get(key, 0):
                    self._floor[key] = position
        if settled or force:
            self.counts.reset(mark, found, scope)
        if force and not settled:  # applied all the same: the next chance recounts
            self.counts.doubt(found if scope is None else scope)

    def hold_first_assignments(self, quiet: float, most: float) -> None:
        with self._lock:
            self.assignment.quiet, self.assignment.most = quiet, most

    def _refresh(self, columns: Iterable[bytes]) -> None:
        """Scan the puller's columns' part of the log again, at most every REINDEX
        seconds (every RECOUNT while their counts are unsure), when a pull found
        nothing: entries written behind the node's back (a raw write) are found so, not
        lost.  Only those columns: a backlog of another column (one observed by nobody
        yet) made every idle pull of the table's workers scan it, each taking seconds
        at 200,000 entries."""
        columns = list(columns)
        with self._lock:
            since = self._clock() - self._indexed_at
            if since < (REINDEX if self.counts.sure(columns) else RECOUNT):
                return
            self._indexed_at = self._clock()
        self.build_index(columns, force=False)

    # --- writes ---------------------------------------------------------------------------

    def written(self, tried: Sequence[RowMutation], landed: Sequence[RowMutation]) -> None:
        """Entries were written (or tried) into these log rows: note their buckets' highest
        positions and wake their owners; count those that ``landed``."""
        owners: set[str] = set()
        with self._lock:
            self._writes += 1
            for m in tried:
                try:
                    column, bucket, position = log.decode_key(m.row)
                except ValueError:
                    continue
                key = (column, bucket)
                if position > self._last.get(key, 0):
                    self._last[key] = position
                owner = self.assignment.owner(column, bucket)
                if owner is not None:
                    owners.add(owner)
            members = [self.assignment.members.get(w) for w in owners]
        self.counts.landed(landed)
        for member in members:
            if member is not None:
                member.wake.set()

    def delete(self, done: Sequence[DoneRef]) -> int:
        """Delete exactly the handled entries (never a range: one written meanwhile stays),
        each conditional on being there: how many were (a repeated pull after a lost
        reply hands back entries deleted already)."""
        mutations = deletes(self.log_table, ((ref.log_row, ref.rows) for ref in done))
        with self.counts.deleting() as gone:
            for i in range(0, len(mutations), _DELETES_PER_CALL):
                chunk = mutations[i:i + _DELETES_PER_CALL]
                removed(self._store, chunk, self._store.mutate_rows(chunk), gone)
            n = sum(gone.values())
        if n:
            self._on_deleted(n)
        return n

    def pending(self, columns: Iterable[bytes], cap: int) -> int:
        """Entries of ``columns`` in the log, counted up to ``cap`` from the store, as of
        one moment.

        Each bucket is read from its floor (:meth:`_walk`), in one scan per bucket, so the
        walk is no snapshot: an observer chain moved its entry from a bucket not read yet
        to one read already (deleting the entry it ran for after writing the next), and
        a walk counted none while one was always there (a worker went idle mid-chain).
        Such a move writes before it deletes, and every write tells ``written`` once
        landed: a walk during which ``written`` was not called counts what the log held
        at its end, except entries of commits still under way, which a reader may order
        after it.  A walk that was crossed is made again; a second one crossed too,
        under a steady stream of writes, gives way to one scan of the columns' range
        (one snapshot, over the deleted entries' tombstones as well)."""
        wanted = sorted({c for c in columns if c and len(c) <= log.MAX_COLUMN})
        if not wanted or cap <= 0:
            return 0
        for _ in range(2):
            with self._lock:
                writes = self._writes
            n = self._walk(wanted, cap)
            with self._lock:
                if n >= cap or self._writes == writes:
                    return n
        return self._scan_range(wanted, cap)

    def _walk(self, columns: list[bytes], cap: int) -> int:
        """Entries of ``columns`` up to ``cap``, each bucket read from its floor: below it
        the bucket holds no entry.

        A read moves the floor to the first entry it found, or, if none, past the
        resolved timestamp taken before it (every later entry is written above it):
        the deleted entries below stay behind it, and a bucket with nothing written at
        or above its floor is not read at all.  Each call scanned every column from its
        start, stepping over the deleted entries' tombstones until a compaction (the
        bench asks ten times a second; a worker's every idle pull asked too)."""
        resolved = self._tracker.resolved()
        n = 0
        for column in columns:
            with self._lock:
                due = [(b, self._floor.get((column, b), 0)) for b in range(log.BUCKETS)
                       if self._last.get((column, b), 0) >= self._floor.get((column, b), 0)]
            for bucket, floor in due:
                n += self._pending_in(column, bucket, floor, resolved, cap - n)
                if n >= cap:
                    return n
        return n

    def _scan_range(self, columns: list[bytes], cap: int) -> int:
        """Entries of ``columns`` up to ``cap``, from one scan of the log rows from the
        first column's to the last's."""
        scan = ScanRequest(self.log_table, min(log.column_prefix(c) for c in columns),
                           max(log.column_end(c) for c in columns),
                           limit=cap if len(columns) == 1 else 0)  # a row holds >= 1 entry
        wanted = set(columns)
        n = 0
        for row in self._store.scan(scan):
            try:
                column = log.decode_key(row.row)[0]
            except ValueError:
                continue  # not a log row (written behind the node's back): never pending
            if column in wanted:
                n += len(row.cells)
                if n >= cap:
                    break
        return n

    def _pending_in(self, column: bytes, bucket: int, floor: int, resolved: int,
                    cap: int) -> int:
        """Entries of one bucket from ``floor`` on, up to ``cap``; moves its floor."""
        prefix = log.bucket_prefix(column, bucket)
        scan = ScanRequest(self.log_table, prefix + log.position_bytes(floor),
                           log.bucket_prefix(column, bucket + 1), limit=max(1, cap))
        n = 0
        first = resolved + 1
        for row in self._store.scan(scan):
            try:
                c, b, position = log.decode_key(row.row)
            except ValueError:
                continue  # not a log row (written behind the node's back): never pending
            if (c, b) != (column, bucket):
                continue
            first = min(first, position)
            n += len(row.cells)
            if n >= cap:
                break
        with self._lock:
            key = (column, bucket)
            if first > self._floor.get(key, 0):
                self._floor[key] = first
        return n

    # --- membership -----------------------------------------------------------------------

    def _wake(self, worker: str) -> None:
        member = self.assignment.members.get(worker)
        if member is not None:
            member.wake.set()

    def _renew(self, request: PullRequest) -> Member:
        now = self._clock()
        with self._lock:
            a = self.assignment
            a.expire(now)
            member = a.renew(request.worker, request.columns, request.lease_ms / 1000.0, now,
                             request.held, request.member_index)
            if request.released:
                a.release(request.worker, request.released)
            a.rebalance(now, self._wake)
            if request.stats:
                member.stats = request.stats
        return member

    def leave(self, worker: str) -> None:
        with self._lock:
            member = self.assignment.members.get(worker)
            if member is not None:
                member.wake.set()  # a pull of it waiting here returns
            self.assignment.leave(worker)
            self.assignment.rebalance(self._clock(), self._wake)

    def live(self) -> list[tuple[Member, int]]:
        """The live members, each with how many buckets it owns."""
        with self._lock:
            self.assignment.expire(self._clock())
            out = []
            for member in self.assignment.members.values():
                owned, _ = self.assignment.owned(member.worker)
                out.append((member, sum(len(b) for b in owned.values())))
            return out

    def stats_of(self, worker: str) -> bytes:
        member = self.assignment.members.get(worker)
        return member.stats if member is not None else b""

    # --- the pull -------------------------------------------------------------------------

    def pull(self, request: PullRequest) -> PullReply:
        if request.done:  # before the release: a bucket's next owner never reads them
            self.delete(request.done)
        member = self._renew(request)
        deadline = time.monotonic() + request.wait_ms / 1000.0
        while True:
            member.wake.clear()
            # Resolved first: every write at or below it told ``written`` before it left
            # the in-flight set, so the positions read next cover it (the other order
            # could skip a bucket on an older position, then pass its entry).
            resolved = self._tracker.resolved()
            with self._lock:
                if self.assignment.members.get(request.worker) is not member:
                    # It left (or its lease ended) while this pull waited: answer now.  A
                    # held first assignment kept it waiting otherwise (owned and held
                    # both empty look settled), up to the hold or the long poll.
                    return PullReply({}, {}, member.index, (), Cursors(resolved), False)
                held = self.assignment.hold_left(self._clock())
                if held == 0.0:  # a first assignment was held until now: grant it
                    self.assignment.rebalance(self._clock(), self._wake)
                    held = self.assignment.hold_left(self._clock())
                owned, revoking = self.assignment.owned(request.worker)
                index = member.index
                wanted = {key: self._last.get(key, 0) for key in _keys(owned)}
            rows, cursors, more = self._read(owned, request, resolved, wanted, member)
            remaining = deadline - time.monotonic()
            settled = owned == request.held and not revoking
            if rows or more or not settled or request.room <= 0 or remaining <= 0:
                return PullReply(owned, revoking, index, tuple(rows), cursors, more)
            self._refresh(owned)
            self._on_idle()
            lagging = max((p for p in wanted.values() if p > resolved), default=0)
            if lagging:  # written, not resolved yet: an older write is still in flight
                self._tracker.wait_past(lagging, min(remaining, 0.05))
            else:
                member.wake.wait(remaining if held is None else min(remaining, held))

    def _read(self, owned: dict[bytes, frozenset[int]], request: PullRequest, resolved: int,
              last: dict[tuple[bytes, int], int], member: Member
              ) -> tuple[list[LogRow], Cursors, bool]:
        """Log rows after each owned bucket's cursor up to ``resolved``, up to the room.

        The buckets are read in turn from the first one the member's last pull had no
        room for: in a fixed order, buckets early in it that keep receiving entries took
        all the room, and a later bucket's entries waited for as long as that lasted."""
        rows: list[LogRow] = []
        overrides: dict[tuple[bytes, int], int] = {}
        room = request.room
        taken = size = 0
        more = False
        held, cursors = request.held, request.cursors
        keys = _keys(owned)
        if member.resume is not None:
            start = bisect.bisect_left(keys, member.resume)
            keys = keys[start:] + keys[:start]
        member.resume = None
        for key in keys:
            column, bucket = key
            cursor = cursors.of(column, bucket) if bucket in held.get(column, ()) else 0
            if last[key] <= cursor:
                continue  # nothing written after the cursor: it moves to resolved
            if taken >= room or size >= MAX_REPLY_BYTES:
                overrides[key] = cursor
                more = True
                if member.resume is None:
                    member.resume = key
                continue
            prefix = log.bucket_prefix(column, bucket)
            scan = ScanRequest(self.log_table, prefix + log.position_bytes(cursor + 1),
                               prefix + log.position_bytes(resolved + 1),
                               limit=max(1, room - taken))
            full = False
            for row in self._store.scan(scan):
                try:
                    c, b, position = log.decode_key(row.row)
                except ValueError:
                    self._skip(row.row)
                    continue
                if (c, b) != key:
                    self._skip(row.row)
                    continue
                cells = tuple((cell.column, cell.value) for cell in row.cells)
                rows.append(LogRow(row.row, cells))
                taken += len(cells)
                size += sum(len(r) + len(v) for r, v in cells) + len(row.row)
                cursor = position
                if taken >= room or size >= MAX_REPLY_BYTES:
                    full = True
                    break
            if full:  # its rest after the buckets that got nothing (read from there)
                overrides[key] = cursor
                more = True
        return rows, Cursors(resolved, overrides), more

    def _skip(self, key: bytes) -> None:
        self._skipped_rows += 1
        if self._skipped_rows <= 10 or self._skipped_rows % 10_000 == 0:
            _log.error("table %r: log row %r is not a notification-log row; skipped (%d so"
                       " far)", self.table, key[:80], self._skipped_rows)


def _keys(owned: dict[bytes, frozenset[int]]) -> list[tuple[bytes, int]]:
    return [(column, b) for column in sorted(owned) for b in sorted(owned[column])]
