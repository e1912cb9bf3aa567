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

from bigtable_lite import (
    MAX_TS,
    Cell,
    DeleteRange,
    DeleteVersion,
    Mutation,
    Row,
    RowMutation,
    RowRead,
    TimeRange,
)
from bigtable_lite import ScanRequest as StoreScan

from .. import records
from ..layout import DATA, LOCK, LOCK_SLOT_TS, ROLLBACK, WRITE
from .batches import mutate_in_calls
from .resolve_lock import FoundLock, resolve_locks

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["Collected", "collect", "locks_below", "resolve_below", "row_garbage"]

_SLOT = TimeRange(LOCK_SLOT_TS, LOCK_SLOT_TS)


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
    below = TimeRange(0, safe_point)  # versions above S are all kept: not even read
    orphans: list[tuple[Row, list[Cell]]] = []
    # Long values are not read: which versions exist is all a pass needs of them.
    for row in ctx.store.scan(StoreScan(table, start_row, None, (), (), below, 0, limit,
                                        (DATA,))):
        done.rows += 1
        last = row.row
        batch += row_garbage(table, row, safe_point, max_items, done)
        candidates = _unreferenced_values(row, safe_point)
        if candidates:
            orphans.append((row, candidates))
    if orphans:
        batch += _orphaned_values(ctx, table, orphans, done)
    if batch:
        mutate_in_calls(ctx.store, ctx.limits, batch)
    return done, _resume(done.rows, limit, last)


def row_garbage(table: bytes, row: Row, safe_point: int, max_items: int,
                counts: Collected) -> list[RowMutation]:
    """The row mutations removing ``row``'s garbage below ``safe_point`` (counted into
    ``counts``): all of one row in one mutation when it fits (a record and the long value
    it points to always in the same one).

    Superseded write records go by one ``DeleteRange`` per cell (the versions below the
    record kept: none is written there any more, see the module), which costs the store
    a seek and a delete per version instead of a mutation each here.
    """
    cells = row.cells
    counts.versions_scanned += len(cells)
    groups: list[tuple[Mutation, ...]] = []
    i, n = 0, len(cells)
    while i < n:  # columns ascend (d..., l..., r..., w...), versions newest first
        column = cells[i].column
        j = i + 1
        while j < n and cells[j].column == column:
            j += 1
        kind = column[:1]
        if kind == WRITE:
            groups += _write_garbage(column, cells, i, j, safe_point, counts)
        elif kind == ROLLBACK:
            below = sum(1 for k in range(i, j) if cells[k].ts < safe_point)
            if below:
                counts.rollback_markers += below
                groups.append((DeleteRange(column, 0, safe_point - 1),))
        i = j
    if not groups:
        return []
    out: list[RowMutation] = []
    current: list[Mutation] = []
    for group in groups:
        if current and len(current) + len(group) > max_items:
            out.append(RowMutation(table, row.row, tuple(current)))
            current = []
        current.extend(group)
    out.append(RowMutation(table, row.row, tuple(current)))
    return out


def _write_garbage(column: bytes, cells: tuple[Cell, ...], i: int, j: int, safe_point: int,
                   counts: Collected) -> list[tuple[Mutation, ...]]:
    """Deletes of one cell's write records (``cells[i:j]``, newest first) below the one a
    snapshot at the safe point reads, each with the long value it points to."""
    k = i
    while k < j and cells[k].ts > safe_point:
        k += 1
    if k == j:
        return []
    newest = cells[k]  # the newest at or below S: what a read at S sees
    if records.decode_write(newest.value).kind != records.PUT:  # reads as no record: goes
        last = newest.ts
    elif k + 1 < j:
        last = newest.ts - 1
        k += 1
    else:
        return []
    counts.write_records += j - k
    group: list[Mutation] = [DeleteRange(column, 0, last)]
    data_column = DATA + column[1:]
    for cell in cells[k:j]:
        start_ts = records.long_value_ts(cell.value)
        if start_ts is not None:
            counts.data += 1
            group.append(DeleteVersion(data_column, start_ts))
    return [tuple(group)]


def _unreferenced_values(row: Row, safe_point: int) -> list[Cell]:
    """Long values below S that no write record at or below S points to and no lock
    holds: orphaned, unless a record above S points to them (:func:`_orphaned_values`)."""
    cells = row.cells
    data = [c for c in cells if c.column[:1] == DATA and c.ts < safe_point]
    if not data:
        return []
    referenced: set[tuple[bytes, int]] = set()
    for cell in cells:
        kind = cell.column[:1]
        if kind == WRITE:
            start_ts = records.long_value_ts(cell.value)
            if start_ts is not None:  # kept, or removed with its record
                referenced.add((cell.column[1:], start_ts))
        elif kind == LOCK:
            referenced.add((cell.column[1:], records.decode_lock(cell.value).start_ts))
    return [c for c in data if (c.column[1:], c.ts) not in referenced]


def _orphaned_values(ctx: StepContext, table: bytes, candidates: list[tuple[Row, list[Cell]]],
                     counts: Collected) -> list[RowMutation]:
    """Deletes of the candidates no write record above S points to either (a writer that
    started below S and committed above it): a long value left by a crash's aftermath."""
    reads = [RowRead(table, row.row, tuple(sorted({WRITE + c.column[1:] for c in cells})),
                     (), TimeRange(min(c.ts for c in cells) + 1, MAX_TS), 0)
             for row, cells in candidates]
    out: list[RowMutation] = []
    for (row, cells), above in zip(candidates, ctx.store.read_rows(reads)):
        referenced = {(cell.column[1:], records.long_value_ts(cell.value)) for cell in above}
        gone = tuple(DeleteVersion(c.column, c.ts) for c in cells
                     if (c.column[1:], c.ts) not in referenced)
        if gone:
            counts.data += len(gone)
            out.append(RowMutation(table, row.row, gone))
    return out
