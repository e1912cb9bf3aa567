"""Rollback: undo a transaction that did not reach its commit point.

The primary gets a rollback marker (``r<column>`` at start_ts) as its lock and data are
erased, iff its slot still holds its lock (``check_txn_status.rollback_primary``): a
commit and a rollback of one primary can never both succeed, and a delayed prewrite
of it fails on the marker.  A primary this transaction never locked is sealed instead.
Secondaries are erased cell by cell, each iff its slot still holds the transaction's
lock: a cell settled meanwhile (and perhaps locked by a later transaction) is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bigtable_lite import Condition, DeleteVersion, Mutation, RowMutation, ValuePrefixAt

from .. import failpoints, records
from .._backend import COMMITTED, ROLLED_BACK_STATUS
from ..layout import LOCK_SLOT_TS, columns_of
from .batches import settle_in_calls
from .check_txn_status import check_primary, rollback_primary
from .commit import CELLS_PER_ROW_MUTATION, read_locks

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["rollback", "rollback_secondary"]

Key = tuple[bytes, bytes]


def rollback_secondary(table: bytes, row: bytes, columns: Sequence[bytes],
                       start_ts: int) -> RowMutation:
    """Erase locks and data of cells of one row; condition i on cell i's slot
    (``batches.per_cell`` splits a row that failed)."""
    owner = records.lock_owner(start_ts)
    mutations: list[Mutation] = []
    conditions: list[Condition] = []
    for column in columns:
        names = columns_of(column)
        conditions.append(ValuePrefixAt(names.lock, LOCK_SLOT_TS, owner))
        mutations.append(DeleteVersion(names.lock, LOCK_SLOT_TS))
        mutations.append(DeleteVersion(names.data, start_ts))
    return RowMutation(table, row, tuple(mutations), tuple(conditions))


def rollback(ctx: StepContext, table: bytes, start_ts: int, primary: Key,
             keys: Sequence[Key]) -> None:
    """Roll back the primary (sealing it if this transaction never locked it), then the
    other keys.  A transaction found committed is left alone (its owner's commit reply
    was lost; readers roll its other cells forward)."""
    failpoints.hit("rollback.before_rollback_primary")
    prow, pcol = primary
    lock = read_locks(ctx, table, [primary], start_ts).get(primary)
    if lock is not None:
        check_primary(lock, prow, pcol)  # never a secondary rolled back as a primary
    if not ctx.store.mutate_rows([rollback_primary(table, prow, pcol, start_ts)])[0].applied:
        status = ctx.statuses.status(ctx, table, prow, pcol, start_ts)  # seals a missing one
        if status.state == COMMITTED:
            return
    else:
        ctx.statuses.remember(table, prow, pcol, start_ts, ROLLED_BACK_STATUS)
    by_row: dict[bytes, list[bytes]] = {}
    for row, column in keys:
        if (row, column) != primary:
            by_row.setdefault(row, []).append(column)
    if by_row:  # a row's cells cut as a commit's are: 3 items each, within items per row
        settle_in_calls(ctx.store, ctx.limits, [
            rollback_secondary(table, row, columns[i:i + CELLS_PER_ROW_MUTATION], start_ts)
            for row, columns in by_row.items()
            for i in range(0, len(columns), CELLS_PER_ROW_MUTATION)])
