"""Two-phase commit: the steps of Percolator 2.2, chained in one visible place.

    lock_primary + lock_secondaries + write_notifications (one store call, primary first)
        -> commit step: commit_ts, commit_primary (the commit point), commit_secondaries

Why this order:
* The primary is locked first, so every other trace of the transaction (secondary
  locks, notifications) points at a primary that already exists: a reader who meets
  one can always learn the transaction's fate from the primary.  One store call
  keeps that order: the store applies a call's rows in order, the primary's row
  first (a primary whose prewrite fails leaves secondaries that the same commit()
  rolls back at once, and that a reader meanwhile rolls back through the primary,
  which it finds without a trace and seals).
* Notifications are written before the commit point, never after: a client that
  dies after committing must not lose them (Apache Fluo lost work when it wrote
  them afterwards).  A notification of a transaction that then aborts is dropped by
  the worker once it sees the rolled-back primary.
* commit_ts is taken after every lock is in place, so any reader whose start_ts is
  above commit_ts is sure to meet either a lock or the write record.  The commit
  step (percolator.commit) runs where the store and the oracle are: in this process
  embedded, at the node over gRPC (one hop for the timestamp and both commits).
* The primary's commit is conditional on its slot holding its own lock: it is the
  commit point.  Secondaries follow, each cell conditional on its slot still holding
  the transaction's lock (a reader may have rolled it forward already, and a later
  transaction locked it since); a crash before they land is repaired by readers, who
  roll them forward through the primary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bigtable_lite import MutationResult, Put, RowMutation, StorageError, Unavailable

from . import failpoints, layout, mutations, records
from .commit import CommitOutcome, CommitRequest
from .commit import commit_secondaries as _commit_secondaries
from .context import TxnContext
from .errors import CommitConflict, CommitUndetermined
from .mutations import CellWrite
from .resolve import FoundLock
from .store_calls import mutate_in_calls, settle_in_calls
from .txn_status import COMMITTED, ROLLED_BACK, TxnStatus, check_txn_status, read_primary

log = logging.getLogger(__name__)

Key = tuple[bytes, bytes]
Part = tuple[bytes, list[CellWrite]]  # some cells of one row, prewritten in one row mutation
_MAX_LOCK_RESOLUTIONS = 3
# A row mutation of a prewrite carries 2-3 conditions and 1-2 mutations per cell; keep it
# well inside the store's max_items_per_row by splitting rows with very many cells.
CELLS_PER_PART = 200


@dataclass(slots=True)
class CommitPlan:
    start_ts: int
    primary: Key
    parts: list[Part]  # parts[0] holds the primary cell
    notifications: list[RowMutation]
    expires_at_ms: int


def plan(ctx: TxnContext, start_ts: int, writes: dict[Key, tuple[bytes, bytes | None]],
         weak: set[Key]) -> CommitPlan:
    primary = min(writes)
    notes = _notifications(ctx, start_ts, primary, writes, weak)
    if len(writes) == 1:
        op, value = writes[primary]
        return CommitPlan(start_ts, primary, [(primary[0], [CellWrite(primary[1], op, value)])],
                          notes, ctx.keeper.expiry())
    # Sorted: the primary (the smallest key) leads the first part, and each row's cells
    # are consecutive; a row with very many cells is cut into parts.
    parts: list[Part] = []
    part_row = None
    cells: list[CellWrite] = []
    for (row, col), (op, value) in sorted(writes.items()):
        if row != part_row or len(cells) == CELLS_PER_PART:
            cells = []
            parts.append((row, cells))
            part_row = row
        cells.append(CellWrite(col, op, value))
    return CommitPlan(start_ts, primary, parts, notes, ctx.keeper.expiry())


def _notifications(ctx: TxnContext, start_ts: int, primary: Key,
                   writes: dict[Key, tuple[bytes, bytes | None]], weak: set[Key]
                   ) -> list[RowMutation]:
    """A notification for each written observed column and each weak notification."""
    is_observed = ctx.is_observed
    notify = [key for key in writes if is_observed(key[1])]
    if not notify and not weak:
        return []
    notes = []
    ntable = layout.notify_table(ctx.table)
    for keys, weak_flag in ((notify, False), (sorted(weak - set(notify)), True)):
        record = records.encode_notification(records.Notification(primary[0], primary[1],
                                                                  weak_flag))
        for row, col in keys:
            notes.append(RowMutation(ntable, row, (Put(col, start_ts, record),)))
    return notes


def commit_transaction(ctx: TxnContext, start_ts: int,
                       writes: dict[Key, tuple[bytes, bytes | None]], weak: set[Key]) -> int:
    """Run two-phase commit; return commit_ts.  Raises CommitConflict or CommitUndetermined."""
    p = plan(ctx, start_ts, writes, weak)
    prow, pcol = p.primary
    ctx.keeper.hold(prow, pcol, start_ts, p.parts[0][1][0], p.expires_at_ms)
    locked: list[int] = []  # indices of parts locked
    try:
        lock_parts(ctx, p, list(range(len(p.parts))), locked, p.notifications)
        failpoints.hit("commit.after_prewrite_primary")
        failpoints.hit("commit.after_prewrite")
        return commit(ctx, p)
    except CommitUndetermined:
        raise  # the primary's commit may have landed: undoing anything would be a guess
    except Exception:
        # Anything else before the commit point (a conflict, a store or oracle failure):
        # undo what was locked now, so readers need not wait out the lock TTL.
        abort(ctx, p, locked)
        raise
    finally:
        ctx.keeper.release(start_ts)


def lock_parts(ctx: TxnContext, p: CommitPlan, todo: list[int], locked: list[int],
               also: list[RowMutation] | None = None) -> None:
    """Prewrite parts (batched); resolve dead locks in the way, else raise CommitConflict."""
    extra = also or []
    for _ in range(_MAX_LOCK_RESOLUTIONS + 1):
        if not todo and not extra:
            return
        batch = [mutations.prewrite(ctx.table, p.parts[i][0], p.parts[i][1], p.start_ts,
                                    p.primary, p.expires_at_ms) for i in todo]
        results = mutate_in_calls(ctx.store, ctx.limits, batch + extra if extra else batch)
        extra = []
        blocked: list[FoundLock] = []
        retry: list[int] = []
        # Every part locked by this call first: abort() must undo them whatever fails.
        failed: list[tuple[int, MutationResult]] = []
        for i, result in zip(todo, results):
            if result.applied:
                locked.append(i)
            else:
                failed.append((i, result))
        for i, result in failed:
            row, cells = p.parts[i]
            index = result.failed_condition
            if index >= 2 * len(cells):
                raise CommitConflict(f"transaction {p.start_ts} was rolled back by another"
                                     " client (its lock TTL expired)", row=row)
            column = cells[index // 2].column
            found = result.found
            if index % 2 == 0 or found is None:
                raise CommitConflict(
                    f"write-write conflict on ({row!r}, {column!r}): committed at"
                    f" {found.ts if found else '?'} after this transaction's start"
                    f" {p.start_ts}", row=row, column=column)
            blocked.append(FoundLock(row, column, records.decode_lock(found.value)))
            retry.append(i)
        if blocked and ctx.resolver.resolve(blocked):
            f = blocked[0]
            raise CommitConflict(f"({f.row!r}, {f.column!r}) is locked by live transaction"
                                 f" {f.start_ts}", row=f.row, column=f.column)
        if 0 in retry and len(batch) + len(also or ()) > 1:
            # The primary failed in a call that locked other cells (or wrote notifications)
            # pointing at it: a reader meeting those finds the primary without a trace and
            # may seal it, so it is not locked later at this start_ts; give up instead.
            row = p.parts[0][0]
            raise CommitConflict(f"the primary of transaction {p.start_ts} was locked by a"
                                 " transaction resolved just now; retry", row=row)
        todo = retry
    raise CommitConflict(f"cells of transaction {p.start_ts} stayed locked by others")


def commit_request(ctx: TxnContext, p: CommitPlan) -> CommitRequest:
    """The commit step's request for a prewritten plan (a CellWrite is a (column, op, value))."""
    return CommitRequest(ctx.table, p.start_ts, p.primary[1], tuple(p.parts))


def commit(ctx: TxnContext, p: CommitPlan) -> int:
    """The commit step (commit_ts, the commit point, secondaries) wherever ctx runs it."""
    try:
        outcome = ctx.commits.commit(commit_request(ctx, p))
    except Unavailable as exc:
        outcome = _learn_outcome(ctx, p, exc)
    return _committed(ctx, p, outcome)


def commit_primary(ctx: TxnContext, p: CommitPlan, commit_ts: int) -> None:
    """Phase by phase (tests): the commit point at a given commit_ts, nothing else."""
    row, cells = p.parts[0]
    m = mutations.commit(ctx.table, row, cells, p.start_ts, commit_ts, primary_column=p.primary[1])
    _committed(ctx, p, CommitOutcome(ctx.store.mutate_rows([m])[0].applied, commit_ts))


def commit_secondaries(ctx: TxnContext, p: CommitPlan, commit_ts: int) -> bool:
    """The secondaries' commits at commit_ts (idempotent); False if the store failed."""
    commits = [mutations.commit(ctx.table, row, cells, p.start_ts, commit_ts)
               for row, cells in p.parts[1:]]
    return not commits or _commit_secondaries(ctx.store, ctx.limits, commits)


def _committed(ctx: TxnContext, p: CommitPlan, outcome: CommitOutcome) -> int:
    prow, pcol = p.primary
    if not outcome.committed:
        raise CommitConflict(f"transaction {p.start_ts} was rolled back by another client"
                             " before its commit (its lock TTL expired)", row=prow, column=pcol)
    if ctx.secondaries is not None:  # our own readers may meet the pending secondaries
        ctx.resolver.remember(prow, pcol, p.start_ts, TxnStatus(COMMITTED, outcome.commit_ts))
    return outcome.commit_ts


def _learn_outcome(ctx: TxnContext, p: CommitPlan, exc: Unavailable) -> CommitOutcome:
    """After a lost commit reply: the decided outcome, deciding it (rollback) if still
    locked; committed, the secondaries are committed here too (idempotent).  Raises
    CommitUndetermined if the primary cannot be read."""
    prow, pcol = p.primary
    for attempt in range(5):
        try:
            status = read_primary(ctx.store, ctx.table, prow, pcol, p.start_ts)
            if status is None or not status.final:
                # Still locked: our commit did not land (yet).  Decide by rolling back ourselves.
                status = check_txn_status(ctx.store, ctx.table, prow, pcol, p.start_ts,
                                          now_ms=2**63, roll_back_expired=True)
            break
        except Unavailable:
            ctx.clock.sleep(0.05 * (2 ** attempt))
    else:
        raise CommitUndetermined(
            f"commit of transaction {p.start_ts} was sent but its outcome is unknown: {exc}"
        ) from exc
    if status.state != COMMITTED:
        return CommitOutcome(False)
    commit_secondaries(ctx, p, status.commit_ts)
    return CommitOutcome(True, status.commit_ts)


def abort(ctx: TxnContext, p: CommitPlan, locked: list[int]) -> None:
    """Undo a transaction that did not reach its commit point (best effort: TTLs cover the rest)."""
    prow, pcol = p.primary
    try:
        if 0 in locked:
            rolled = ctx.store.mutate_rows([mutations.rollback_primary(
                ctx.table, prow, pcol, p.start_ts)])[0].applied
            if not rolled:
                return  # someone else decided the primary already
            ctx.resolver.remember(prow, pcol, p.start_ts, TxnStatus(ROLLED_BACK))
        secondary = [mutations.rollback_secondary(ctx.table, p.parts[i][0],
                                                  [c.column for c in p.parts[i][1]], p.start_ts)
                     for i in locked if i != 0]
        others = [c.column for c in p.parts[0][1] if c.column != pcol]
        if 0 in locked and others:
            secondary.append(mutations.rollback_secondary(ctx.table, prow, others, p.start_ts))
        if secondary:  # each cell iff its slot still holds our lock
            settle_in_calls(ctx.store, ctx.limits, secondary)
    except StorageError as exc:
        log.warning("rollback of transaction %d incomplete (%s); its locks expire after the"
                    " TTL", p.start_ts, exc)


def write_unconditional_notifications(ctx: TxnContext, start_ts: int, weak: set[Key]) -> None:
    """Weak notifications of a transaction that writes nothing: valid at once (no primary)."""
    record = records.encode_notification(records.Notification(b"", b"", True))
    ntable = layout.notify_table(ctx.table)
    mutate_in_calls(ctx.store, ctx.limits, [
        RowMutation(ntable, row, (Put(col, start_ts, record),)) for row, col in sorted(weak)])
