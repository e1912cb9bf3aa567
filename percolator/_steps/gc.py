"""GC: collect a range of rows below the safe point S, in TiKV's order.

A pass (``percolator._gc``) calls these for every transactional table, in two phases:

1. **locks** (:func:`locks_below`, :func:`resolve_below`): every lock of a transaction
   that started below S is settled through its primary -- rolled forward if the
   primary committed, else rolled back, the primary's own lock whatever its TTL (such a
   transaction can neither read nor commit any more: every step below S is refused).
   This phase covers the whole table before phase 2 touches any row: phase 2 removes a
   primary's superseded commit record, and a lock left elsewhere would then find its
   primary without a trace and be rolled back -- a torn transaction.  No lock below S
   can appear afterwards: prewrites below S are refused.
2. **versions** (:func:`collect`): per cell, every write record newer than S is kept,
   and the newest at or below S unless it is a delete (a snapshot at S reads it); the
   others are removed, each in the same row mutation as the long value it points to
   (so a read never finds a record whose value is gone).  Rollback markers below S go
   (a prewrite below S, the only step that looks for one, is refused), and so do long
   values below S that no kept record points to (a rolled-back writer's).

Why a snapshot at or above S reads the same after phase 2: it reads, per cell, the
newest record at or below its start_ts; if that is newer than S it is kept, and if not
it is the newest at or below S, kept unless it is a delete, and then no record at all
reads as absent too.  Why the seal of ``check_txn_status`` stays right: a live
transaction's start_ts is at or above S, so every write record at or after it is newer
than S (timestamps are unique) and never removed.  Why deletes need no condition: no
version at or below S is written after phase 1 (commit_ts of live transactions are
above S, and the roll-forward of a lock below S is conditional on that lock, which
phase 1 settled); a stray rollback marker a slow reader writes later is left for the
next pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bigtable_lite import ALL_TIME, DeleteVersion, Row, RowMutation, TimeRange
from bigtable_lite import ScanRequest as StoreScan

from .. import records
from ..layout import DATA, LOCK, LOCK_SLOT_TS, ROLLBACK, WRITE
from .batches import mutate_in_calls
from .resolve_lock import FoundLock, resolve_locks

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["Collected", "collect", "locks_below", "resolve_below", "row_garbage"]

_SLOT = TimeRange(LOCK_SLOT_TS, LOCK_SLOT_TS)
_INLINED = 1  # records.Write flags bit0 (read from the record's second byte)


@dataclass(slots=True)
class Collected:
    """What :func:`collect` read and removed."""

    rows: int = 0
    versions_scanned: int = 0
    write_records: int = 0
    data: int = 0
    rollback_markers: int = 0

    def add(self, other: Collected) -> None:
        self.rows += other.rows
        self.versions_scanned += other.versions_scanned
        self.write_records += other.write_records
        self.data += other.data
        self.rollback_markers += other.rollback_markers


def _resume(rows: int, limit: int, last: bytes) -> bytes | None:
    return last + b"\x00" if rows >= limit else None


def locks_below(ctx: StepContext, table: bytes, safe_point: int, start_row: bytes | None,
                limit: int) -> tuple[list[FoundLock], bytes | None]:
    """The locks of transactions that started below ``safe_point`` in up to ``limit`` rows
    holding locks from ``start_row``; and where the next chunk starts (None: done)."""
    found: list[FoundLock] = []
    rows = 0
    last = b""
    for row in ctx.store.scan(StoreScan(table, start_row, None, (), (LOCK,), _SLOT, 1, limit)):
        rows += 1
        last = row.row
        for cell in row.cells:
            lock = records.decode_lock(cell.value)
            if lock.start_ts < safe_point:
                found.append(FoundLock(row.row, cell.column[1:], lock))
    return found, _resume(rows, limit, last)


def resolve_below(ctx: StepContext, table: bytes, locks: list[FoundLock]) -> int:
    """Settle ``locks`` (all below the safe point) through their primaries, forcing the
    rollback of live primaries; returns how many were settled."""
    if not locks:
        return 0
    left = resolve_locks(ctx, table, locks, force=True)
    return len(locks) - len(left)


def collect(ctx: StepContext, table: bytes, safe_point: int, start_row: bytes | None,
            limit: int) -> tuple[Collected, bytes | None]:
    """Phase 2 over up to ``limit`` rows from ``start_row``: the garbage of each row
    removed; what was read and removed, and where the next chunk starts (None: done)."""
    done = Collected()
    batch: list[RowMutation] = []
    last = b""
    max_items = ctx.limits.max_items_per_row
    for row in ctx.store.scan(StoreScan(table, start_row, None, (), (), ALL_TIME, 0, limit)):
        done.rows += 1
        last = row.row
        batch += row_garbage(table, row, safe_point, max_items, done)
    if batch:
        mutate_in_calls(ctx.store, ctx.limits, batch)
    return done, _resume(done.rows, limit, last)


def row_garbage(table: bytes, row: Row, safe_point: int, max_items: int,
                counts: Collected) -> list[RowMutation]:
    """The row mutations removing ``row``'s garbage below ``safe_point`` (counted into
    ``counts``); a record and the value it points to always in the same one."""
    counts.versions_scanned += len(row.cells)
    by_column: dict[bytes, dict[bytes, list[tuple[int, bytes]]]] = {}
    for cell in row.cells:  # columns ascend, versions newest first
        kinds = by_column.get(cell.column[1:])
        if kinds is None:
            kinds = by_column[cell.column[1:]] = {}
        kinds.setdefault(cell.column[:1], []).append((cell.ts, cell.value))
    groups: list[tuple[DeleteVersion, ...]] = []
    for column, kinds in by_column.items():
        groups += _cell_garbage(column, kinds, safe_point, counts)
    if not groups:
        return []
    out: list[RowMutation] = []
    current: list[DeleteVersion] = []
    for group in groups:
        if current and len(current) + len(group) > max_items:
            out.append(RowMutation(table, row.row, tuple(current)))
            current = []
        current.extend(group)
    out.append(RowMutation(table, row.row, tuple(current)))
    return out


def _cell_garbage(column: bytes, kinds: dict[bytes, list[tuple[int, bytes]]],
                  safe_point: int, counts: Collected) -> list[tuple[DeleteVersion, ...]]:
    """Groups of deletes of one user cell: a write record with the value it points to,
    a rollback marker, or an orphaned value."""
    groups: list[tuple[DeleteVersion, ...]] = []
    write_col, data_col = WRITE + column, DATA + column
    kept_values: set[int] = set()  # start_ts of long values kept records point to
    removed_values: set[int] = set()
    newest_below_seen = False
    for ts, raw in kinds.get(WRITE, ()):
        write = records.decode_write(raw)  # DataCorruption stops the pass: nothing guessed
        long_value = write.kind == records.PUT and write.value is None
        if ts > safe_point:
            keep = True
        elif not newest_below_seen:  # the newest at or below S: what a read at S sees
            newest_below_seen = True
            keep = write.kind == records.PUT  # a delete reads as no record at all
        else:
            keep = False
        if keep:
            if long_value:
                kept_values.add(write.start_ts)
            continue
        counts.write_records += 1
        if long_value:
            counts.data += 1
            removed_values.add(write.start_ts)
            groups.append((DeleteVersion(write_col, ts), DeleteVersion(data_col, write.start_ts)))
        else:
            groups.append((DeleteVersion(write_col, ts),))
    for ts, _ in kinds.get(ROLLBACK, ()):
        if ts < safe_point:
            counts.rollback_markers += 1
            groups.append((DeleteVersion(ROLLBACK + column, ts),))
    data = kinds.get(DATA)
    if data:
        slot = kinds.get(LOCK)
        locked_ts = records.decode_lock(slot[0][1]).start_ts if slot else None
        for ts, _ in data:
            if ts < safe_point and ts not in kept_values and ts not in removed_values \
                    and ts != locked_ts:
                counts.data += 1
                groups.append((DeleteVersion(data_col, ts),))
    return groups
