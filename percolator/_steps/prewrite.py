"""Prewrite: lock every written cell of a transaction, or none of them.

Per cell, conditional on (Percolator 2.2): no write record after start_ts (condition
2i: else a write-write conflict) and an empty lock slot (condition 2i+1: else another
transaction's lock); the primary's row also on no rollback marker at start_ts (last
condition: a delayed prewrite of a primary rolled back by another client must fail).
Each cell gets a lock naming the primary, expiring ``ttl`` from now on this step's
clock; values too long to inline in the write record go to the data column at start_ts.

A lock in the way is handed to ``resolve_lock``: a decided or expired owner is settled
and the cell retried (a few times); a live owner is a conflict.  On any conflict the
step undoes what it locked (``rollback``, which also seals the primary if it was never
locked), so the caller gets all or nothing.  The request's first part holds the
primary when it is in this request: the store applies a call's rows in order, so every
other lock points at a primary that already exists (a reader meeting one can always
learn the transaction's fate from it).  A request without its primary must find the
primary holding its transaction's primary lock (an earlier request locked it), else it
locks nothing: a rolled-back primary is a conflict; a committed one, none at all, or a
slot holding another of this start_ts's locks is the caller's mistake, InvalidArgument
(a lock naming a primary its transaction never locked is only settled by sealing that
primary, and one written after its transaction committed would be rolled forward to a
commit_ts taken before it existed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bigtable_lite import (
    MAX_TS,
    Condition,
    InvalidArgument,
    Mutation,
    MutationResult,
    NoVersionIn,
    Put,
    RowMutation,
)

from .. import records
from .._backend import COMMITTED, LOCKED, CellWrite, Conflict, Key, Part, PrewriteRequest, keys_of
from ..layout import LOCK_SLOT_TS, columns_of
from ..records import INLINE_VALUE_MAX
from .batches import mutate_in_calls
from .check_txn_status import primary_state
from .resolve_lock import FoundLock, resolve_locks
from .rollback import rollback

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["MAX_LOCK_RESOLUTIONS", "conflict_of", "prewrite", "prewrite_row"]

MAX_LOCK_RESOLUTIONS = 3


def prewrite_row(table: bytes, row: bytes, cells: Sequence[CellWrite], start_ts: int,
                 primary: Key, expires_at_ms: int) -> RowMutation:
    """Lock cells of one row; conditions 2i and 2i+1 guard cell i (write, lock slot)."""
    conditions: list[Condition] = []
    mutations: list[Mutation] = []
    prow, pcol = primary
    in_primary_row = row == prow
    for column, op, value in cells:
        names = columns_of(column)
        conditions.append(NoVersionIn(names.write, start_ts, MAX_TS))
        conditions.append(names.slot_empty)
        inline = value is not None and len(value) <= INLINE_VALUE_MAX
        mutations.append(Put(names.lock, LOCK_SLOT_TS, records.lock_bytes(
            start_ts, op, prow, pcol, expires_at_ms, in_primary_row and column == pcol,
            value if inline else None)))
        if value is not None and not inline:
            mutations.append(Put(names.data, start_ts, value))
    if in_primary_row:
        conditions.append(NoVersionIn(columns_of(pcol).rollback, start_ts, start_ts))
    return RowMutation(table, row, tuple(mutations), tuple(conditions))


def prewrite(ctx: StepContext, request: PrewriteRequest) -> Conflict | None:
    table, start_ts, primary, ttl_ms, parts = request
    if (parts[0][0], parts[0][1][0].column) != primary:
        refused = _primary_held(ctx, table, start_ts, primary)
        if refused is not None:
            return refused
    expires = ctx.clock.now_ms() + ttl_ms
    todo = list(range(len(parts)))
    locked: list[int] = []
    conflict = None
    for _ in range(MAX_LOCK_RESOLUTIONS + 1):
        batch = [prewrite_row(table, parts[i][0], parts[i][1], start_ts, primary, expires)
                 for i in todo]
        failed: list[tuple[int, MutationResult]] = []
        for i, result in zip(todo, mutate_in_calls(ctx.store, ctx.limits, batch)):
            if result.applied:  # every part this call locked first: undone on a conflict
                locked.append(i)
            else:
                failed.append((i, result))
        if not failed:
            return None
        primary_failed = failed[0][0] == 0 and (parts[0][0], parts[0][1][0].column) == primary
        conflict = _retry_or_conflict(ctx, table, parts, failed,
                                      primary_failed and len(failed) < len(batch))
        if conflict is not None:
            break
        todo = [i for i, _ in failed]
    else:
        row, cells = parts[todo[0]]
        conflict = Conflict(Conflict.LOCKED, row, cells[0].column)
    rollback(ctx, table, start_ts, primary, keys_of([parts[i] for i in locked]))
    return conflict


def _primary_held(ctx: StepContext, table: bytes, start_ts: int, primary: Key
                  ) -> Conflict | None:
    """None if the primary holds its transaction's primary lock; a conflict if it was
    rolled back; InvalidArgument otherwise (see the module)."""
    prow, pcol = primary
    status = primary_state(ctx.store, table, prow, pcol, start_ts).status
    if status is None:
        raise InvalidArgument(
            f"the primary ({prow!r}, {pcol!r}) holds no primary lock of transaction"
            f" {start_ts}: prewrite it first (the first cell of the first request)")
    if status.state == LOCKED:
        return None
    if status.state == COMMITTED:
        raise InvalidArgument(f"transaction {start_ts} committed at {status.commit_ts}:"
                              " no cell can be prewritten for it any more")
    return Conflict(Conflict.ROLLED_BACK, prow, pcol)


def _retry_or_conflict(ctx: StepContext, table: bytes, parts: Sequence[Part],
                       failed: list[tuple[int, MutationResult]], primary_beside_others: bool
                       ) -> Conflict | None:
    """The conflict among the failed parts; None if only locks of decided transactions
    were in the way (settled now: retry the parts).  ``primary_beside_others``: the
    primary's part failed in a call that locked other parts."""
    blocked: list[FoundLock] = []
    for i, result in failed:
        conflict = conflict_of(parts[i], result)
        if conflict is not None:
            return conflict
        row, cells = parts[i]
        assert result.found is not None
        blocked.append(FoundLock(row, cells[result.failed_condition // 2].column,
                                 records.decode_lock(result.found.value)))
    alive = resolve_locks(ctx, table, blocked)
    if alive:
        f = alive[0]
        return Conflict(Conflict.LOCKED, f.row, f.column, lock_start_ts=f.start_ts)
    if primary_beside_others:
        # The primary failed in a call that locked other cells pointing at it: a reader
        # meeting those finds the primary without a trace and may seal it, so it is not
        # locked later at this start_ts; give up instead.
        f = blocked[0]
        return Conflict(Conflict.LOCKED, f.row, f.column, lock_start_ts=f.start_ts)
    return None


def conflict_of(part: Part, result: MutationResult) -> Conflict | None:
    """The conflict a failed row mutation of :func:`prewrite_row` reports; None if only a
    lock was in the way (condition 2i+1 with the lock found)."""
    row, cells = part
    index = result.failed_condition
    if index >= 2 * len(cells):
        return Conflict(Conflict.ROLLED_BACK, row, cells[0].column)
    column = cells[index // 2].column
    found = result.found
    if index % 2 == 0 or found is None:
        return Conflict(Conflict.WRITE_CONFLICT, row, column,
                        commit_ts=found.ts if found is not None else 0)
    return None
