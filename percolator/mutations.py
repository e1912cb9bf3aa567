"""The store mutations of each protocol step, built in one place per step.

Percolator section 2.2, with TiKV's refinements.  A cell's lock lives in one slot
(``layout.LOCK_SLOT_TS``) and names its owner's start_ts in its first bytes
(``records.lock_owner``):

* prewrite  -- lock a row's cells if no write after start_ts exists and the lock slot
               is empty (and, for the primary, no rollback marker at start_ts: a
               delayed prewrite of a rolled-back primary must fail);
* commit    -- write records at commit_ts and erase the locks; the primary's commit is
               conditional on its slot still holding its own lock (the commit point);
* rollback  -- erase a lock and its data; the primary also gets a rollback marker.

Every step that acts on its own lock is conditional on the slot still holding it,
because once the transaction is decided, a reader may settle the cell and a later
transaction lock it.  The secondaries' commits and rollbacks are conditional cell by
cell: condition i guards cell i, whose mutations are 2i and 2i+1 (:func:`per_cell`
splits a row that failed); a cell whose slot is no longer ours was settled already
(rolled forward with the same bytes, or rolled back), so skipping it is the whole
of idempotence.  Only the primary's fate (decided when they run) chooses between
commit and rollback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bigtable_lite import (
    MAX_TS,
    DeleteVersion,
    Mutation,
    NoValuePrefixAt,
    NoVersionIn,
    Put,
    RowMutation,
    ValuePrefixAt,
)
from bigtable_lite.model import Condition

from . import layout, records
from .layout import LOCK_SLOT_TS
from .records import INLINE_VALUE_MAX, PUT, Lock

_MAX_CACHED_COLUMNS = 1 << 16


@dataclass(frozen=True, slots=True)
class _Columns:
    """What the steps derive from one user column, built once per column (bounded cache)."""

    data: bytes
    lock: bytes
    write: bytes
    slot_empty: NoVersionIn  # the prewrite's "no lock": the same for every txn (a lookup)


_columns: dict[bytes, _Columns] = {}


def _derive(column: bytes) -> _Columns:
    derived = _Columns(layout.data_column(column), layout.lock_column(column),
                       layout.write_column(column),
                       NoVersionIn(layout.lock_column(column), LOCK_SLOT_TS, LOCK_SLOT_TS))
    if len(_columns) < _MAX_CACHED_COLUMNS:
        _columns[column] = derived
    return derived


def holds_own_lock(column: bytes, start_ts: int) -> ValuePrefixAt:
    """The condition of every step acting on its own lock: the slot holds start_ts's lock."""
    return ValuePrefixAt(layout.lock_column(column), LOCK_SLOT_TS, records.lock_owner(start_ts))


class CellWrite(NamedTuple):
    """One buffered write of a transaction: put (value) or delete (value None).

    A NamedTuple: built for every write on the commit path, and it is the
    (column, op, value) that commit() and the commit step take as they are."""

    column: bytes
    op: bytes  # records.PUT or records.DELETE
    value: bytes | None


def _inline(value: bytes | None) -> bool:
    return value is not None and len(value) <= INLINE_VALUE_MAX


def lock_record(cell: CellWrite, start_ts: int, primary: tuple[bytes, bytes],
                expires_at_ms: int, is_primary: bool) -> Lock:
    """The lock a prewrite puts for ``cell`` (heartbeats rewrite it with a later expiry)."""
    value = cell.value if _inline(cell.value) else None
    return Lock(start_ts, cell.op, primary[0], primary[1], expires_at_ms, is_primary, value)


def prewrite(table: bytes, row: bytes, cells: Sequence[CellWrite], start_ts: int,
             primary: tuple[bytes, bytes], expires_at_ms: int) -> RowMutation:
    """Lock every cell of one row; conditions 2i and 2i+1 guard cell i (write, lock slot)."""
    conditions: list[Condition] = []
    mutations: list[Mutation] = []
    prow, pcol = primary
    in_primary_row = row == prow
    for cell in cells:
        c = cell.column
        names = _columns.get(c) or _derive(c)
        conditions.append(NoVersionIn(names.write, start_ts, MAX_TS))
        conditions.append(names.slot_empty)
        value = cell.value
        inline = value is not None and len(value) <= INLINE_VALUE_MAX  # as lock_record
        mutations.append(Put(names.lock, LOCK_SLOT_TS, records.lock_bytes(
            start_ts, cell.op, prow, pcol, expires_at_ms, in_primary_row and c == pcol,
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
    """Commit cells (column, op, value) of one row.

    ``primary_column`` given: the commit point, conditional on the primary's slot alone
    (while it holds our lock the transaction is undecided, so nobody settled or took
    the other slots of the row, which were locked in the same row mutation).
    Otherwise a secondary row: condition i on cell i's slot (see :func:`per_cell`).
    """
    owner = records.lock_owner(start_ts)
    mutations: list[Mutation] = []
    conditions: list[Condition] = []
    for column, op, value in cells:
        names = _columns.get(column) or _derive(column)
        inline = value if op == PUT and value is not None and len(value) <= INLINE_VALUE_MAX \
            else None  # as write_record
        mutations.append(Put(names.write, commit_ts, records.write_bytes(op, start_ts, inline)))
        mutations.append(DeleteVersion(names.lock, LOCK_SLOT_TS))
        if primary_column is None:
            conditions.append(ValuePrefixAt(names.lock, LOCK_SLOT_TS, owner))
    if primary_column is not None:
        names = _columns.get(primary_column) or _derive(primary_column)
        conditions.append(ValuePrefixAt(names.lock, LOCK_SLOT_TS, owner))
    return RowMutation(table, row, tuple(mutations), tuple(conditions))


def rollback_primary(table: bytes, row: bytes, column: bytes, start_ts: int) -> RowMutation:
    """Roll back a locked primary: marker at start_ts, lock and data erased, iff the slot
    still holds its lock (so a commit and a rollback of one primary can never both
    succeed)."""
    return RowMutation(table, row, (
        Put(layout.rollback_column(column), start_ts, b""),
        DeleteVersion(layout.lock_column(column), LOCK_SLOT_TS),
        DeleteVersion(layout.data_column(column), start_ts),
    ), (holds_own_lock(column, start_ts),))


def seal_primary(table: bytes, row: bytes, column: bytes, start_ts: int,
                 newest_write_ts: int) -> RowMutation:
    """Seal a primary found without a trace: a rollback marker, so a delayed prewrite of it
    fails.  Conditional on the slot not holding start_ts's lock and on no write record
    newer than ``newest_write_ts`` (the newest the checker saw at or above start_ts,
    else start_ts - 1).

    Why the second condition: between the checker's read and this seal, the writer may
    lock and commit the primary (its first prewrite of it was blocked and retried).  Its
    commit_ts is then newer than every write record the checker saw (taken after its
    primary's lock, which the checker did not see yet), so the seal fails instead of
    marking a committed primary rolled back.  Nothing else is touched: a primary never
    locked has no data, and the slot may hold another transaction's lock.
    """
    conditions: list[Condition] = [NoValuePrefixAt(layout.lock_column(column), LOCK_SLOT_TS,
                                                   records.lock_owner(start_ts))]
    if newest_write_ts < MAX_TS:
        conditions.append(NoVersionIn(layout.write_column(column), newest_write_ts + 1, MAX_TS))
    return RowMutation(table, row, (Put(layout.rollback_column(column), start_ts, b""),),
                       tuple(conditions))


def rollback_secondary(table: bytes, row: bytes, columns: Sequence[bytes],
                       start_ts: int) -> RowMutation:
    """Erase locks and data of cells of one row; condition i on cell i's slot (see per_cell)."""
    owner = records.lock_owner(start_ts)
    mutations: list[Mutation] = []
    conditions: list[Condition] = []
    for column in columns:
        lock = layout.lock_column(column)
        conditions.append(ValuePrefixAt(lock, LOCK_SLOT_TS, owner))
        mutations.append(DeleteVersion(lock, LOCK_SLOT_TS))
        mutations.append(DeleteVersion(layout.data_column(column), start_ts))
    return RowMutation(table, row, tuple(mutations), tuple(conditions))


def per_cell(m: RowMutation) -> list[RowMutation]:
    """A secondary's commit or rollback of several cells, one row mutation per cell.

    For a row that failed because one cell's slot is no longer ours (a reader settled
    that cell, and a later transaction may hold it now): re-sent cell by cell, the
    cells still ours are settled and the others left alone.
    """
    conditions = m.conditions
    if len(conditions) < 2:
        return [m]
    muts = m.mutations
    return [RowMutation(m.table, m.row, muts[2 * i:2 * i + 2], (cond,))
            for i, cond in enumerate(conditions)]


def refresh_lock(table: bytes, row: bytes, column: bytes, lock: Lock) -> RowMutation:
    """Heartbeat: rewrite the primary's lock with a later expiry, while the slot holds it."""
    return RowMutation(table, row,
                       (Put(layout.lock_column(column), LOCK_SLOT_TS, records.encode_lock(lock)),),
                       (holds_own_lock(column, lock.start_ts),))
