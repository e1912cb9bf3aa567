"""The commit driver: a transaction's protocol steps, chained in one visible place.

    one_phase                                   (everything fits one step: the usual case)
  or
    prewrite (primary's part first) ... -> commit (commit_ts, the commit point,
    secondaries, notifications) -> resolve (secondaries the commit did not carry)

Why this order:
* One phase when the whole transaction fits one step (``Client(one_phase=True)``, the
  default): one hop for a remote client, and nothing for a crash to leave behind.
* Otherwise the primary is locked first, so every other lock points at a primary that
  already exists: a reader meeting one can always learn the transaction's fate from it.
  A prewrite is all-or-nothing per call; a conflict rolls back what earlier calls locked.
* commit_ts is taken by the commit step, after every lock is in place, so any reader
  whose start_ts is above commit_ts meets either a lock or the write record.
* The primary's commit is the commit point; notifications are written in the same
  write, never after it (a commit cannot be acknowledged and its notifications lost).
  Secondaries that did not fit the commit step are settled through the primary
  (``resolve``), as any reader would roll them forward after a crash.
* A commit step that fails after it was sent -- any error: a lost reply, a deadline, a
  broken stream, the step's own error after its commit point -- is not a guess: the
  driver rolls the primary back if it is still locked (so it can never commit later),
  then reads its fate, and answers that (or CommitUndetermined if it cannot be read).

Every commit is timed by path and outcome (``percolator_txn_commit_duration_seconds``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

from bigtable_lite import Limits, PermissionDenied, StorageError, Unauthenticated, Unavailable

from . import failpoints
from ._backend import (
    COMMITTED,
    CellWrite,
    CommitOutcome,
    CommitRequest,
    Conflict,
    Key,
    OnePhaseRequest,
    Part,
    PrewriteRequest,
    keys_of,
)
from ._context import TxnContext
from ._waits import MayWait, check_may_wait
from .errors import CommitConflict, CommitUndetermined, SnapshotTooOld
from .metrics import TXN_COMMIT_SECONDS

log = logging.getLogger(__name__)

__all__ = ["commit", "decide", "decide_patiently", "plan", "primary_of"]

CELLS_PER_PART = 200
"""Cells of one row locked by one row mutation (2-3 conditions and 1-2 mutations per cell,
well inside the store's items per row)."""
_BYTES_PER_CALL = 16 << 20
"""Bytes of values per step call, well below the default 64 MiB message limit (a
quarter of a smaller one)."""


Writes = dict[Key, tuple[bytes, bytes | None]]


def _bytes_per_call(limits: Limits) -> int:
    """Bytes of writes one step call carries: a request always fits a message."""
    return min(_BYTES_PER_CALL, limits.max_message_bytes // 4)


def plan(writes: Writes, max_bytes: int = _BYTES_PER_CALL) -> list[Part]:
    """The writes as parts (rows cut to CELLS_PER_PART cells, and to ``max_bytes`` of
    writes), the primary (the smallest key) first in the first part."""
    if len(writes) == 1:
        (row, column), (op, value) = next(iter(writes.items()))
        return [(row, [CellWrite(column, op, value)])]
    parts: list[Part] = []
    part_row = None
    cells: list[CellWrite] = []
    size = 0
    for (row, column), (op, value) in sorted(writes.items()):
        weight = _weight(row, column, value)
        if row != part_row or len(cells) == CELLS_PER_PART or size + weight > max_bytes:
            cells = []
            parts.append((row, cells))
            part_row = row
            size = 0
        cells.append(CellWrite(column, op, value))
        size += weight
    return parts


def primary_of(parts: Sequence[Part]) -> Key:
    """The primary cell of a plan: the first part's first cell."""
    return parts[0][0], parts[0][1][0].column


def _weight(row: bytes, column: bytes, value: bytes | None) -> int:
    return len(value or b"") + len(column) + len(row)


def calls(parts: Sequence[Part], limits: Limits) -> list[list[Part]]:
    """Parts grouped into step calls within the store's rows and bytes per call, and
    within the cells a node takes in one step (``max_batch_rows``, ``_node_codec``): a
    transaction of many rows with several cells each fits the rows and not the cells."""
    max_rows = max(1, limits.max_batch_rows // 2)
    max_cells = limits.max_batch_rows
    max_bytes = _bytes_per_call(limits)
    groups: list[list[Part]] = [[]]
    size = cells = 0
    for part in parts:
        weight = 64 + sum(_weight(part[0], c.column, c.value) for c in part[1])
        if groups[-1] and (len(groups[-1]) >= max_rows or size + weight > max_bytes
                           or cells + len(part[1]) > max_cells):
            groups.append([])
            size = cells = 0
        groups[-1].append(part)
        size += weight
        cells += len(part[1])
    return groups


ONE_PHASE = "one_phase"
TWO_PHASE = "two_phase"
_OUTCOMES = ("committed", "conflict", "undetermined", "error")
# Bound once: percolator_txn_commit_duration_seconds by (path, outcome).
_TIMED = {(path, outcome): TXN_COMMIT_SECONDS.labels(path, outcome)
          for path in (ONE_PHASE, TWO_PHASE) for outcome in _OUTCOMES}


def commit(s: TxnContext, start_ts: int, writes: Writes, weak: set[Key]) -> int:
    """Commit the transaction; return commit_ts.  Raises CommitConflict or
    CommitUndetermined."""
    began = time.perf_counter()
    parts = plan(writes, _bytes_per_call(s.limits)) if writes else []
    groups = calls(parts, s.limits)
    path = ONE_PHASE if s.one_phase and len(groups) == 1 or not parts else TWO_PHASE
    outcome = "error"
    try:
        if path == ONE_PHASE:
            commit_ts = _one_phase(s, start_ts, parts, sorted(weak))
        else:
            commit_ts = _two_phase(s, start_ts, parts, groups, weak)
        outcome = "committed"
        return commit_ts
    except CommitConflict:
        outcome = "conflict"
        raise
    except (CommitUndetermined, MayWait):  # (MayWait: not learned on this thread)
        outcome = "undetermined"
        raise
    finally:
        _TIMED[(path, outcome)].observe(time.perf_counter() - began)


def _two_phase(s: TxnContext, start_ts: int, parts: list[Part], groups: list[list[Part]],
               weak: set[Key]) -> int:
    """Prewrite calls, then the commit step (see the module's docstring)."""
    primary = primary_of(parts)
    s.keeper.hold(s.table, primary, start_ts)
    locked: list[Key] = []
    try:
        for group in groups:
            conflict = s.backend.prewrite(PrewriteRequest(s.table, start_ts, primary,
                                                          s.keeper.ttl_ms, group))
            if conflict is not None:  # the failed call undid its own locks
                raise _conflict_error(start_ts, conflict)
            locked += keys_of(group)
            failpoints.hit("commit.after_prewrite_primary")
        failpoints.hit("commit.after_prewrite")
        return _commit(s, start_ts, primary, locked, sorted(weak))
    except (CommitUndetermined, MayWait):
        # The primary's commit may have landed: undoing anything would be a guess (on
        # MayWait the outcome is learned where it may wait: ``decide_patiently``).
        raise
    except Exception:
        # Anything else before the commit point (a conflict, a store or oracle failure):
        # undo what was locked now, so readers need not wait out the lock TTL.
        _abort(s, start_ts, primary, locked)
        raise
    finally:
        s.keeper.release(start_ts)


def _one_phase(s: TxnContext, start_ts: int, parts: list[Part], weak: list[Key]) -> int:
    try:
        outcome = s.backend.commit_one_phase(OnePhaseRequest(s.table, start_ts, parts, weak))
    except Exception as exc:
        if not parts:
            if isinstance(exc, Unavailable):
                raise CommitUndetermined(f"notifications of transaction {start_ts} were sent"
                                         f" but their outcome is unknown: {exc}") from exc
            raise
        outcome = _learn_outcome(s, start_ts, primary_of(parts), keys_of(parts), exc)
    if isinstance(outcome, Conflict):
        raise _conflict_error(start_ts, outcome)
    if not outcome.committed:
        prow, pcol = primary_of(parts) if parts else (b"", b"")
        raise CommitConflict(f"transaction {start_ts} was rolled back by another client"
                             " before its commit", row=prow, column=pcol,
                             reason=Conflict.ROLLED_BACK)
    return outcome.commit_ts


def _commit(s: TxnContext, start_ts: int, primary: Key, keys: list[Key],
            weak: list[Key]) -> int:
    """The commit step; then the secondaries it did not carry, through the primary."""
    others = [k for k in keys if k != primary]
    first, rest = _fit(others, weak, s.limits)
    try:
        outcome = s.backend.commit(CommitRequest(s.table, start_ts, primary, first, weak))
    except Exception as exc:
        outcome = _learn_outcome(s, start_ts, primary, keys, exc)
    if not outcome.committed:
        prow, pcol = primary
        raise CommitConflict(f"transaction {start_ts} was rolled back by another client"
                             " before its commit (its lock TTL expired)", row=prow, column=pcol,
                             reason=Conflict.ROLLED_BACK)
    if rest:
        _settle(s, start_ts, rest)
    return outcome.commit_ts


def _key_chunks(keys: Sequence[Key], limits: Limits, max_keys: int, spent: int = 0
                ) -> Iterator[list[Key]]:
    """``keys`` in slices of at most ``max_keys`` keys and of a step call's bytes (less
    ``spent`` in the first), so a request naming them always fits a message."""
    max_bytes = _bytes_per_call(limits)
    chunk: list[Key] = []
    size = spent
    for key in keys:
        weight = len(key[0]) + len(key[1]) + 16
        if chunk and (len(chunk) >= max_keys or size + weight > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(key)
        size += weight
    if chunk:
        yield chunk


def _fit(keys: list[Key], weak: Sequence[Key], limits: Limits
         ) -> tuple[list[Key], list[Key]]:
    """The secondaries one commit step carries (as many keys as a store call has rows,
    within a call's bytes beside the notifications it carries too), and the rest."""
    spent = sum(len(row) + len(column) + 16 for row, column in weak)
    first = next(_key_chunks(keys, limits, limits.max_batch_rows, spent), [])
    return first, keys[len(first):]


def _settle(s: TxnContext, start_ts: int, keys: list[Key]) -> None:
    """Roll the remaining secondaries forward (idempotent; a failure is left to readers).

    After the commit point: whatever fails here (the store, the oracle a notifying
    roll-forward asks for a log position) must not make the commit raise, or its caller
    would take a committed transaction for a failed one and may run it again."""
    try:
        for chunk in _key_chunks(keys, s.limits, max(1, s.limits.max_batch_rows // 2)):
            s.backend.resolve(s.table, start_ts, chunk)
    except Exception as exc:  # noqa: BLE001 - committed: see above
        log.warning("%d secondaries of transaction %d not committed (%s); readers will roll"
                    " them forward", len(keys), start_ts, exc)


def _learn_outcome(s: TxnContext, start_ts: int, primary: Key, keys: list[Key],
                   exc: Exception) -> CommitOutcome:
    """After a commit step sent that failed with ``exc`` -- any error: a lost reply, a
    deadline, a broken stream, the step's own error after its commit point, the node
    restarting -- the decided outcome (:func:`decide_patiently`), never a guess.
    Committed: that is the answer.  Not committed (rolled back now, so it never will):
    ``exc`` itself, unless it was ``Unavailable`` (then the outcome says so).  Raises
    CommitUndetermined if the fate cannot be learned.  A command refused before it ran
    (PermissionDenied, Unauthenticated for the caller's role; SnapshotTooOld below the GC
    safe point) is that error at once.  MayWait on a thread that may not wait: see
    :func:`decide_patiently`."""
    if isinstance(exc, (PermissionDenied, Unauthenticated, SnapshotTooOld)):
        raise exc  # refused before the step ran (role; below the safe point): nothing to decide
    try:
        outcome = decide_patiently(s, start_ts, primary, keys)
    except MayWait:
        raise
    except SnapshotTooOld as too_old:
        # Below the safe point GC decided the transaction itself and may have removed
        # its commit record since: its fate can no longer be read.
        raise CommitUndetermined(
            f"commit of transaction {start_ts} was sent but its outcome is unknown ({exc});"
            f" it can no longer be read: {too_old}") from exc
    except Exception as again:
        raise CommitUndetermined(
            f"commit of transaction {start_ts} was sent but its outcome is unknown: {exc}"
            f" (learning it failed: {again})") from exc
    if outcome.committed or isinstance(exc, Unavailable):
        return outcome
    raise exc


DECIDE_ATTEMPTS = 5
"""Tries of :func:`decide_patiently` while the store is Unavailable (backing off 50 ms,
doubling: 0.75 s of waits in all)."""


def decide_patiently(s: TxnContext, start_ts: int, primary: Key, keys: list[Key]
                     ) -> CommitOutcome:
    """:func:`decide`, tried again while the store answers Unavailable (a transient
    failure: a store closing, a commit in progress too long), backing off; the last
    Unavailable if it stays so.

    The backoff is a wait, which the native transport's loop thread may not do (it
    serves every connection: ``percolator._waits``): there the first Unavailable raises
    MayWait instead, before any sleep.  Deciding has no effect a second run could undo
    (a rollback of the primary is a no-op once decided), and the Transactions service,
    the one caller of the driver on that thread, answers a Commit run again from the
    data: its session ended without an outcome (``Sessions._commit``)."""
    for attempt in range(DECIDE_ATTEMPTS):
        try:
            return decide(s, start_ts, primary, keys)
        except Unavailable:
            if attempt == DECIDE_ATTEMPTS - 1:
                raise
            check_may_wait()
            s.clock.sleep(0.05 * (2 ** attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def decide(s: TxnContext, start_ts: int, primary: Key, keys: list[Key]) -> CommitOutcome:
    """The outcome of a transaction no driver is committing any more, deciding it if it is
    still undecided: its primary is rolled back if still locked (so it can never commit
    later), then its fate is read there, and ``keys`` (its other cells) are rolled
    forward or back to match.  For a lost commit reply, and for the Transactions
    service's retry of a commit whose transaction the node no longer holds.
    SnapshotTooOld below the GC safe point: the fate can no longer be read there."""
    s.backend.rollback(s.table, start_ts, primary, [])  # a no-op once decided
    status = s.backend.check_txn_status(s.table, primary, start_ts)
    if status.state != COMMITTED:
        _abort(s, start_ts, primary, keys)
        return CommitOutcome(False)
    _settle(s, start_ts, [k for k in keys if k != primary])
    return CommitOutcome(True, status.commit_ts)


def _abort(s: TxnContext, start_ts: int, primary: Key, keys: list[Key]) -> None:
    """Undo a transaction that did not reach its commit point (best effort: TTLs cover
    the rest)."""
    chunks = list(_key_chunks(keys, s.limits, max(1, s.limits.max_batch_rows // 2))) or [[]]
    try:
        for chunk in chunks:  # the first rolls the primary back, even with no other key
            s.backend.rollback(s.table, start_ts, primary, chunk)
    except StorageError as exc:
        log.warning("rollback of transaction %d incomplete (%s); its locks expire after the"
                    " TTL", start_ts, exc)
    except SnapshotTooOld:  # GC rolls locks below the safe point back, whatever their TTL
        log.info("rollback of transaction %d left to garbage collection (below the safe"
                 " point)", start_ts)


def _conflict_error(start_ts: int, c: Conflict) -> CommitConflict:
    if c.reason == Conflict.WRITE_CONFLICT:
        message = (f"write-write conflict on ({c.row!r}, {c.column!r}): committed at"
                   f" {c.commit_ts or '?'} after this transaction's start {start_ts}")
    elif c.reason == Conflict.LOCKED:
        message = (f"({c.row!r}, {c.column!r}) is locked by live transaction"
                   f" {c.lock_start_ts}")
    else:
        message = (f"transaction {start_ts} was rolled back by another client (its lock TTL"
                   " expired)")
    return CommitConflict(message, row=c.row, column=c.column, reason=c.reason,
                          commit_ts=c.commit_ts, lock_start_ts=c.lock_start_ts)
