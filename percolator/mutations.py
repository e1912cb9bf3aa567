"""The store mutations of each protocol step, built in one place per step.

Percolator section 2.2, with TiKV's refinements:

* prewrite  -- lock a row's cells at start_ts if no write after start_ts and no lock
               at any timestamp exists (and, for the primary, no rollback marker at
               start_ts: a delayed prewrite of a rolled-back primary must fail);
* commit    -- write records at commit_ts and erase the locks; the primary's commit is
               conditional on its own lock still being there (the commit point);
* rollback  -- erase a lock and its data; the primary also gets a rollback marker.

Secondaries are committed and rolled back without conditions: both are idempotent,
and only the primary's fate (already decided when they run) chooses between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bigtable_lite import MAX_TS, DeleteVersion, Mutation, NoVersionIn, Put, RowMutation, VersionAt
from bigtable_lite.model import Condition

from . import layout, records
from .records import INLINE_VALUE_MAX, PUT, Lock

_MAX_CACHED_COLUMNS = 1 << 16


@dataclass(frozen=True, slots=True)
class _Columns:
    """What the steps derive from one user column, built once per column (bounded cache)."""

    data: bytes
    lock: bytes
    write: bytes
    no_lock: NoVersionIn  # the prewrite's "no lock at any timestamp": the same for every txn


_columns: dict[bytes, _Columns] = {}


def _derive(column: bytes) -> _Columns:
    derived = _Columns(layout.data_column(column), layout.lock_column(column),
                       layout.write_column(column),
                       NoVersionIn(layout.lock_column(column), 0, MAX_TS))
    if len(_columns) < _MAX_CACHED_COLUMNS:
        _columns[column] = derived
    return derived


class CellWrite(NamedTuple):
    """One buffered write of a transaction: put (value) or delete (value None).

    A NamedTuple: built for every write on the commit path, and it is the
    (column, op, value) that commit() and the commit step take as they are."""

    column: bytes
    op: bytes  # records.PUT or records.DELETE
    value: bytes | None


def _inline(value: bytes | None) -> bool:
    return value is not None and len(value) <= INLINE_VALUE_MAX


def lock_record(cell: CellWrite, primary: tuple[bytes, bytes], expires_at_ms: int,
                is_primary: bool) -> Lock:
    """The lock a prewrite puts for ``cell`` (heartbeats rewrite it with a later expiry)."""
    value = cell.value if _inline(cell.value) else None
    return Lock(cell.op, primary[0], primary[1], expires_at_ms, is_primary, value)


def prewrite(table: bytes, row: bytes, cells: Sequence[CellWrite], start_ts: int,
             primary: tuple[bytes, bytes], expires_at_ms: int) -> RowMutation:
    """Lock every cell of one row; conditions 2i and 2i+1 guard cell i (write, lock)."""
    conditions: list[Condition] = []
    mutations: list[Mutation] = []
    prow, pcol = primary
    in_primary_row = row == prow
    for cell in cells:
        c = cell.column
        names = _columns.get(c) or _derive(c)
        conditions.append(NoVersionIn(names.write, start_ts, MAX_TS))
        conditions.append(names.no_lock)
        value = cell.value
        inline = value is not None and len(value) <= INLINE_VALUE_MAX  # as lock_record
        mutations.append(Put(names.lock, start_ts, records.lock_bytes(
            cell.op, prow, pcol, expires_at_ms, in_primary_row and c == pcol,
            value if inline else None)))
        if value is not None and not inline:
            mutations.append(Put(names.data, start_ts, value))
    if in_primary_row:
        conditions.append(NoVersionIn(layout.rollback_column(pcol), start_ts, start_ts))
    return RowMutation(table, row, tuple(mutations), tuple(conditions))


def inline_value(cell_op: bytes, value: bytes | None) -> bytes | None:
    """The value a write record inlines (a short put's), else None."""
    return value if cell_op == PUT and _inline(value) else None


def write_record(cell_op: bytes, value: bytes | None, start_ts: int) -> bytes:
    """The write record committing a lock (same bytes whoever writes it: idempotent)."""
    return records.write_bytes(cell_op, start_ts, inline_value(cell_op, value))


def commit(table: bytes, row: bytes, cells: Sequence[tuple[bytes, bytes, bytes | None]],
           start_ts: int, commit_ts: int, *, primary_column: bytes | None = None) -> RowMutation:
    """Commit cells (column, op, value) of one row; conditional on the primary lock if given."""
    mutations: list[Mutation] = []
    for column, op, value in cells:
        names = _columns.get(column) or _derive(column)
        inline = value if op == PUT and value is not None and len(value) <= INLINE_VALUE_MAX \
            else None  # as write_record
        mutations.append(Put(names.write, commit_ts, records.write_bytes(op, start_ts, inline)))
        mutations.append(DeleteVersion(names.lock, start_ts))
    if primary_column is None:
        return RowMutation(table, row, tuple(mutations))
    names = _columns.get(primary_column) or _derive(primary_column)
    return RowMutation(table, row, tuple(mutations), (VersionAt(names.lock, start_ts),))


def rollback_primary(table: bytes, row: bytes, column: bytes, start_ts: int) -> RowMutation:
    """Roll back a locked primary: marker at start_ts, lock and data erased, iff the lock is
    still there (so a commit and a rollback of one primary can never both succeed)."""
    return RowMutation(table, row, (
        Put(layout.rollback_column(column), start_ts, b""),
        DeleteVersion(layout.lock_column(column), start_ts),
        DeleteVersion(layout.data_column(column), start_ts),
    ), (VersionAt(layout.lock_column(column), start_ts),))


def seal_primary(table: bytes, row: bytes, column: bytes, start_ts: int,
                 newest_write_ts: int) -> RowMutation:
    """Seal a primary found without a trace: a rollback marker, so a delayed prewrite of it
    fails.  Conditional on no lock at start_ts and on no write record newer than
    ``newest_write_ts`` (the newest the checker saw at or above start_ts, else start_ts - 1).

    Why the second condition: between the checker's read and this seal, the writer may
    lock and commit the primary (its first prewrite of it was blocked and retried).  Its
    commit_ts is then newer than every write record the checker saw (taken after its
    primary's lock, which the checker did not see yet), so the seal fails instead of
    marking a committed primary rolled back.  Nothing else is erased: a primary never
    locked has no lock or data.
    """
    conditions: list[Condition] = [NoVersionIn(layout.lock_column(column), start_ts, start_ts)]
    if newest_write_ts < MAX_TS:
        conditions.append(NoVersionIn(layout.write_column(column), newest_write_ts + 1, MAX_TS))
    return RowMutation(table, row, (Put(layout.rollback_column(column), start_ts, b""),),
                       tuple(conditions))


def rollback_secondary(table: bytes, row: bytes, columns: Sequence[bytes],
                       start_ts: int) -> RowMutation:
    mutations: list[Mutation] = []
    for column in columns:
        mutations.append(DeleteVersion(layout.lock_column(column), start_ts))
        mutations.append(DeleteVersion(layout.data_column(column), start_ts))
    return RowMutation(table, row, tuple(mutations))


def refresh_lock(table: bytes, row: bytes, column: bytes, start_ts: int, lock: Lock) -> RowMutation:
    """Heartbeat: rewrite the primary's lock with a later expiry, if it is still there."""
    return RowMutation(table, row,
                       (Put(layout.lock_column(column), start_ts, records.encode_lock(lock)),),
                       (VersionAt(layout.lock_column(column), start_ts),))
