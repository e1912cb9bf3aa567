"""Backfill: entries for the cells of a column committed before it was observed.

A column registered at R is notified by every commit above R (``_steps/notify``).  The
cells committed below R get an entry from the backfill, a background thread of the
backend holding the data (the node, or the embedded process), which walks the data
table in chunks of :data:`CHUNK_ROWS` rows that have the column:

1. wait for one-phase commits in progress in the chunk's rows (latched), then read
   each row's lock slot and newest write record of the column;
2. a lock of a transaction that started at or below R may belong to a commit below R
   that has not reached the cell yet: settle it (``resolve_lock``: roll forward or
   back if decided or expired) and read the chunk again; a live one is waited for.
   A lock of a later transaction is left alone: it commits above R and leaves its own
   entry;
3. one atomic write: a BACKFILL entry per cell whose newest write record is below R
   (change_ts = its commit_ts; a cell written again above R has that commit's entry,
   and its observer then sees the older change too), at a fresh log position, **and**
   the registration's progress (rows done, the next row), conditional on the
   registration being the same (an unregistered column's backfill stops).  It is made
   under the lock of every write of the registration record (``ObservedColumns.advance``)
   and carries the partition prefix as it stands then: a progress built from the
   backfill's own copy put an older prefix back over one registered meanwhile.

Every commit below R took its commit_ts before R, so before the chunk was read: its
locks were in place (two-phase) or its rows latched (one-phase), and steps 1 and 2
make the chunk read see it.  A crash between chunks loses nothing and repeats nothing:
a chunk's entries and its progress are one write, and the next start resumes at the
persisted row.  Flow control: the backfill pauses while more than :data:`MAX_PENDING`
entries of the column wait in the log, so the log never grows much past what workers
drain.  Failpoint ``backfill.after_chunk``: after a chunk's write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bigtable_lite import (
    MAX_TS,
    Put,
    RowMutation,
    ScanRequest,
    StorageError,
    TimeRange,
    ValuePrefixAt,
)

from .. import failpoints, layout, records
from .._steps.context import StepContext
from .._steps.notify import ITEMS_PER_LOG_ROW
from .._steps.resolve_lock import FoundLock, resolve_locks
from . import log
from .log import Registration

__all__ = ["Backfill", "CHUNK_ROWS", "MAX_PENDING"]

CHUNK_ROWS = 1000
MAX_PENDING = 50_000
_RETRY = 0.2

_log = logging.getLogger(__name__)


class Backfill:
    """The backfill of one registration, on its own thread until done or stopped."""

    def __init__(self, ctx: StepContext, table: bytes, reg: Registration, *,
                 pending: Callable[[], int], on_done: Callable[[], None]) -> None:
        self.ctx = ctx
        self.table = table
        self.reg = reg
        self._pending = pending
        self._on_done = on_done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"backfill-{reg.column[:40]!r}")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self.reg.backfill == log.PENDING:
                if self._pending() > MAX_PENDING:
                    self._stop.wait(_RETRY)
                    continue
                try:
                    if not self._chunk():
                        return  # the registration changed: this backfill is over
                except StorageError as exc:
                    _log.warning("backfill of %r: %s; trying again", self.reg.column, exc)
                    self._stop.wait(_RETRY)
        finally:
            if self.reg.backfill != log.PENDING:
                self._on_done()

    def _estimate(self) -> int:
        """Rows having the column (counted once, before the first chunk)."""
        n = 0
        scan = ScanRequest(self.table, None, None, (layout.write_column(self.reg.column),),
                           (), TimeRange(0, MAX_TS), 1)
        for _ in self.ctx.store.scan(scan):
            n += 1
            if self._stop.is_set():
                break
        return n

    def _chunk(self) -> bool:
        reg = self.reg
        if not reg.estimated and not reg.done and not reg.cursor:
            reg = self.reg = Registration(reg.column, reg.registered_at, reg.partition_prefix,
                                          reg.backfill, 0, self._estimate())
        found = self._read(reg.cursor)
        if found is None:
            self._stop.wait(_RETRY)  # a live writer that may commit below R: wait for it
            return True
        changes, next_row = found
        with self.ctx.log.allocate() as position:
            done = self.ctx.observed.advance(
                self.table, reg.column, reg.registered_at,
                lambda current: self._write(current, reg, changes, next_row, position))
        if done is None:
            return False  # the registration is gone or was made again: this one is over
        self.reg = done
        failpoints.hit("backfill.after_chunk")
        return True

    def _write(self, current: Registration, reg: Registration,
               changes: list[tuple[bytes, int]], next_row: bytes | None, position: int
               ) -> Registration | None:
        """The chunk's entries and the progress after it, in one write conditional on the
        registration (its owner bytes); ``current`` is the registration as it stands (its
        partition prefix, which a registration since may have changed); the progress if
        written."""
        notes = _entries(self.table, reg.column, current.partition_prefix, changes, position)
        done = Registration(reg.column, reg.registered_at, current.partition_prefix,
                            log.PENDING if next_row is not None else log.DONE,
                            reg.done + len(changes),
                            max(reg.estimated, reg.done + len(changes)), next_row or b"")
        progress = RowMutation(
            layout.config_table(self.table), layout.OBSERVED_ROW,
            (Put(reg.column, 0, log.encode_registration(done)),),
            (ValuePrefixAt(reg.column, 0, log.registration_owner(reg.registered_at)),))
        applied = False
        try:
            applied = self.ctx.store.mutate_guarded([progress, *notes])[0].applied
        finally:
            self.ctx.log.written(self.table, notes, notes if applied else ())
        return done if applied else None

    def _read(self, start: bytes) -> tuple[list[tuple[bytes, int]], bytes | None] | None:
        """(row, commit_ts of its newest write) of the next chunk, and where the next one
        starts (None: the end); None if a live lock of a commit that may be below R is in
        the way."""
        column = self.reg.column
        names = layout.columns_of(column)
        wanted = (names.lock, names.write)
        first = list(self.ctx.store.scan(ScanRequest(self.table, start or None, None, wanted,
                                                     (), TimeRange(0, MAX_TS), 1, CHUNK_ROWS)))
        end = first[-1].row + b"\x00" if len(first) >= CHUNK_ROWS else None
        for _ in range(3):
            self.ctx.latches.wait_range(self.table, start or None, end, self.reg.registered_at)
            rows = self.ctx.store.scan(ScanRequest(self.table, start or None, end, wanted, (),
                                                   TimeRange(0, MAX_TS), 1))
            changes: list[tuple[bytes, int]] = []
            locks: list[FoundLock] = []
            for row in rows:
                for cell in row.cells:
                    if cell.column == names.write:
                        if cell.ts < self.reg.registered_at:  # else its commit left an entry
                            changes.append((row.row, cell.ts))
                    else:
                        lock = records.decode_lock(cell.value)
                        if lock.start_ts <= self.reg.registered_at:
                            locks.append(FoundLock(row.row, column, lock))
            if not locks:
                return changes, end
            if resolve_locks(self.ctx, self.table, locks):
                return None
        return None


def _entries(table: bytes, column: bytes, prefix: bytes, changes: list[tuple[bytes, int]],
             position: int) -> list[RowMutation]:
    """BACKFILL entries of ``changes`` (row, commit_ts), grouped by log row."""
    rows: dict[bytes, list[Put]] = {}
    for row, commit_ts in changes:
        lrow = log.log_key(column, log.bucket_of(row, prefix), position)
        rows.setdefault(lrow, []).append(Put(row, 0, log.encode_entry(log.BACKFILL, commit_ts)))
    ntable = layout.notify_table(table)
    return [RowMutation(ntable, lrow, tuple(puts[i:i + ITEMS_PER_LOG_ROW]))
            for lrow, puts in rows.items() for i in range(0, len(puts), ITEMS_PER_LOG_ROW)]
