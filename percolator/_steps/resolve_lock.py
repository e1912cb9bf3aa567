"""Resolve locks: finish or undo what a crashed or slow writer left behind.

A reader (or a prewrite) that meets locks of other transactions hands them here.
Locks are grouped by transaction, so each transaction's primary is checked once
however many of its locks were met (``check_txn_status``, cached once final, which
also rolls back a primary whose lock expired on this step's clock).  Every lock of a
committed transaction is then rolled forward -- its write record from the lock itself,
and its notification if its column is observed (read after the commit_ts it rolls
forward to, as in the commit step; at a fresh log position, since readers of the log
may have passed that commit_ts) -- and every lock of a rolled-back one erased, in
one batched store call.  Locks of live, undecided transactions are returned.  Each lock
met is counted by what became of it (``percolator_lock_resolutions_total``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bigtable_lite import RowMutation

from .._backend import COMMITTED, Key, LockedCell
from ..metrics import LOCK_RESOLUTIONS
from ..records import Lock
from .batches import settle_in_calls
from .commit import commit_cells, read_locks
from .notify import entries
from .rollback import rollback_secondary

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["FoundLock", "resolve", "resolve_locks"]

_ROLLED_FORWARD = LOCK_RESOLUTIONS.labels("rolled_forward")
_ROLLED_BACK = LOCK_RESOLUTIONS.labels("rolled_back")
_LIVE = LOCK_RESOLUTIONS.labels("live")


@dataclass(frozen=True, slots=True)
class FoundLock:
    """A lock met in the store: cell (row, column) and the record, which names its owner."""

    row: bytes
    column: bytes
    lock: Lock

    @property
    def start_ts(self) -> int:
        """The owning transaction's start_ts."""
        return self.lock.start_ts

    def locked_cell(self) -> LockedCell:
        lock = self.lock
        return LockedCell(self.row, self.column, lock.start_ts, lock.primary_row,
                          lock.primary_column)


def resolve_locks(ctx: StepContext, table: bytes, locks: Iterable[FoundLock], *,
                  force: bool = False) -> list[FoundLock]:
    """Roll forward or back every lock whose transaction is decided; return the rest.

    ``force`` (garbage collection, below the safe point): a live primary lock is rolled
    back whatever its expiry, so every lock given is settled."""
    by_txn: dict[tuple[bytes, bytes, int], list[FoundLock]] = {}
    for found in locks:
        lock = found.lock
        by_txn.setdefault((lock.primary_row, lock.primary_column, lock.start_ts),
                          []).append(found)
    fixes: list[RowMutation] = []
    forward: list[tuple[list[FoundLock], int]] = []  # committed: (locks, commit_ts)
    alive: list[FoundLock] = []
    n_forward = back = 0
    for (prow, pcol, start_ts), group in by_txn.items():
        status = ctx.statuses.status(ctx, table, prow, pcol, start_ts, force=force,
                                     strict=False)  # whatever is stored: see the checker
        if not status.final:
            alive.extend(group)
        elif status.state == COMMITTED:
            forward.append((group, status.commit_ts))
            n_forward += len(group)
            for found in group:
                fixes.append(commit_cells(table, found.row, [(found.column, found.lock)],
                                          start_ts, status.commit_ts))
        else:
            back += len(group)
            fixes += [rollback_secondary(table, f.row, [f.column], start_ts) for f in group
                      if (f.row, f.column) != (prow, pcol)]
    observed = ctx.observed.of(table)  # after the commit_ts: see ``notify``
    if forward and any(f.column in observed for group, _ in forward for f in group):
        _roll_forward_notifying(ctx, table, observed, forward, fixes)
    elif fixes:
        settle_in_calls(ctx.store, ctx.limits, fixes)
    if n_forward:
        _ROLLED_FORWARD.inc(n_forward)
    if back:
        _ROLLED_BACK.inc(back)
    if alive:
        _LIVE.inc(len(alive))
    return alive


def _roll_forward_notifying(ctx: StepContext, table: bytes, observed: Mapping[bytes, bytes],
                            forward: list[tuple[list[FoundLock], int]],
                            fixes: list[RowMutation]) -> None:
    """Settle ``fixes`` after the entries of the observed cells rolled forward, at a fresh
    log position: their commit_ts may be behind a reader's cursor by now (the entries
    say when each change committed).  Entries first: a roll-forward cut into several
    store calls never commits a cell and loses its notification."""
    with ctx.log.allocate() as position:
        notes: list[RowMutation] = []
        for group, commit_ts in forward:
            notes += entries(table, observed, [(f.row, f.column) for f in group], position,
                             commit_ts)
        landed: list[RowMutation] = []
        try:
            settle_in_calls(ctx.store, ctx.limits, notes + fixes)
            landed = notes  # unconditional: written, once the calls returned
        finally:
            ctx.log.written(table, notes, landed)


def resolve(ctx: StepContext, table: bytes, start_ts: int, keys: Sequence[Key]) -> int:
    """Settle the cells of ``keys`` still locked by transaction ``start_ts``; returns how
    many remain locked (their transaction is alive)."""
    locks = read_locks(ctx, table, keys, start_ts)
    return len(resolve_locks(ctx, table, [FoundLock(row, column, lock)
                                          for (row, column), lock in locks.items()]))
