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


def rollback_primary(table: bytes, row: bytes, column: bytes, start_ts: int,
                     *, if_locked: bool) -> RowMutation:
    """Roll back a primary: marker at start_ts, lock and data erased.

    ``if_locked`` makes it conditional on the lock being present (the usual case).
    Otherwise it *seals* a primary found without a trace, so a delayed prewrite of it
    fails: conditional on no lock at start_ts (condition 0) and no write record at or
    after start_ts (condition 1).  Why the second: between the reader seeing no trace
    and this seal, the writer may have locked and committed its primary (its lock is
    gone then, its write record is there); a seal then would mark a committed
    transaction rolled back, and its secondaries would be erased under it.  A write
    record at or after start_ts that is not the transaction's own means its primary's
    prewrite can never pass: rolled back, with nothing to seal.
    """
    lock = layout.lock_column(column)
    conds: tuple[Condition, ...] = (
        (VersionAt(lock, start_ts),) if if_locked else
        (NoVersionIn(lock, start_ts, start_ts),
         NoVersionIn(layout.write_column(column), start_ts, MAX_TS)))
    return RowMutation(table, row, (
        Put(layout.rollback_column(column), start_ts, b""),
        DeleteVersion(lock, start_ts),
        DeleteVersion(layout.data_column(column), start_ts),
    ), conds)


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
