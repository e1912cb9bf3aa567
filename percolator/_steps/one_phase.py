"""One-phase commit: prewrite and commit in one atomic write (TiKV's 1PC).

When every cell of a transaction lives in one store (today always), nothing needs a
lock that outlives the step: its rows are latched, then under the rows' locks
(``mutate_atomic``) every cell is checked as a prewrite would check it -- no write
record after start_ts, an empty lock slot, and on the primary (the first cell) no
rollback marker at start_ts (a client that lost the reply seals it: a delayed request
then fails) -- commit_ts is taken, and the write records, long values and notifications
go to the store in one WriteBatch; or, if any check fails, nothing.  A lock in the way
is handed to ``resolve_lock`` and the commit tried again (a few times); a live one is a
conflict.

Why commit_ts is taken under the rows' locks only if the oracle is ready: the oracle
persists its high-water mark with a store write of its own row, under the oracle's
lock, and the store's row locks are stripes; a commit waiting for the oracle while
holding its rows' stripes would deadlock (with itself, or with the thread persisting
the mark, and with it every timestamp) whenever a row shares the oracle row's stripe.
So under the locks the step waits at most ``ORACLE_WAIT`` for a timestamp that needs no
write; otherwise it writes nothing, releases the locks, takes commit_ts, and checks and
writes again under them.  Both orders are safe (below); taking commit_ts last keeps the
latches short, which hot rows' readers wait on.

Why a reader cannot miss such a commit: a reader at T > commit_ts took T after
commit_ts was taken, and the commit's rows are latched (:class:`CommitLatches`) before
commit_ts is taken and released only after the write; a reader waits for the latches
of the rows it reads after taking T and before reading, so it reads after the write.
Why a concurrent two-phase transaction W cannot disagree: its prewrite of one of these
cells takes the same row lock, before the check (which then meets its lock: W's
commit_ts, if W commits, is then checked as a write record after start_ts) or after
the write (its own check then meets the write record above its start_ts, if it began
before commit_ts).  Why notifications are right: they are decided after commit_ts was
taken (``notify``), and their rows are among the rows locked for the write.

A row with more cells than one row mutation takes (a client's huge row), or a
transaction that only notifies, is committed by the chained steps instead:
``prewrite`` then ``commit`` (a weak-only one needs no check at all).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from bigtable_lite import (
    MAX_TS,
    NOT_ATTEMPTED,
    Condition,
    Mutation,
    NoVersionIn,
    Put,
    RowMutation,
    StorageError,
    Unavailable,
)

from .. import failpoints, layout, records
from .._backend import (
    CommitOutcome,
    CommitRequest,
    Conflict,
    OnePhaseRequest,
    Part,
    PrewriteRequest,
    keys_of,
)
from ..layout import columns_of
from ..records import INLINE_VALUE_MAX
from .batches import mutate_in_calls
from .commit import commit
from .notify import entries
from .prewrite import MAX_LOCK_RESOLUTIONS, conflict_of, prewrite
from .resolve_lock import FoundLock, resolve_locks
from .rollback import rollback

if TYPE_CHECKING:
    from .context import StepContext

log = logging.getLogger(__name__)

__all__ = ["CommitLatches", "LOCK_TTL_MS", "chained_ttl_ms", "commit_one_phase"]

LOCK_TTL_MS = 3_000
"""The shortest TTL of the locks of a chained one-phase commit (a client's default
``lock_ttl``), held between its prewrite and its commit: both in this step, which
nobody heartbeats, so only a crash between them should leave them to expire."""
TTL_PER_SQRT_MIB_MS = 6_000
"""The TTL of a chained commit's locks grows with the square root of its size in MiB
(TiKV sizes its transactions' first TTL so): a request of one message, several MiB of
cells checked and locked, can take longer than ``LOCK_TTL_MS`` on a loaded store, and a
reader meeting its expired primary meanwhile rolled it back (a spurious abort)."""
MAX_CHAINED_TTL_MS = 120_000
"""The longest TTL of a chained commit's locks: a crash in the step leaves them this long."""


def chained_ttl_ms(parts: Sequence[Part]) -> int:
    """The lock TTL of a chained commit of ``parts`` (see ``TTL_PER_SQRT_MIB_MS``)."""
    size = sum(len(row) + sum(len(c.column) + len(c.value or b"") for c in cells)
               for row, cells in parts)
    ttl = int(TTL_PER_SQRT_MIB_MS * math.sqrt(size / (1 << 20)))
    return min(MAX_CHAINED_TTL_MS, max(LOCK_TTL_MS, ttl))


class CommitLatches:
    """Rows of one-phase commits between taking commit_ts and their write (thread-safe).

    Each latch carries a lower bound of its commit_ts (the oracle's next timestamp when
    it was taken): a reader at T waits only for latches below T, whose commit_ts may be
    below T; one taken after T was handed out commits above T."""

    def __init__(self) -> None:
        self._held: dict[tuple[bytes, bytes], list[int]] = {}
        self._cond = threading.Condition()

    def hold(self, table: bytes, rows: Iterable[bytes], floor: int
             ) -> list[tuple[tuple[bytes, bytes], int]]:
        keys = [((table, row), floor) for row in set(rows)]
        with self._cond:
            for key, f in keys:
                self._held.setdefault(key, []).append(f)
        return keys

    def release(self, keys: list[tuple[tuple[bytes, bytes], int]]) -> None:
        with self._cond:
            for key, f in keys:
                floors = self._held[key]
                floors.remove(f)
                if not floors:
                    del self._held[key]
            self._cond.notify_all()

    def _below(self, key: tuple[bytes, bytes], ts: int) -> bool:
        """Whether a commit latched on ``key`` may take a commit_ts at or below ``ts``."""
        return any(f <= ts for f in self._held.get(key, ()))

    def wait_rows(self, table: bytes, rows: Iterable[bytes], ts: int,
                  timeout: float = 60.0) -> None:
        """Return once no commit latched on ``rows`` may take a commit_ts at or below
        ``ts`` (at once, and lock-free, when nothing is latched); Unavailable after
        ``timeout`` (never read past a commit in progress).  Waiting for every latch of
        the rows instead starved readers of a row that one-phase writers keep latched."""
        if not self._held:
            return
        rows = list(rows)
        with self._cond:
            if not self._cond.wait_for(
                    lambda: not any(self._below((table, r), ts) for r in rows), timeout):
                raise Unavailable("timed out waiting for a commit in progress on the rows read")

    def wait_range(self, table: bytes, start: bytes | None, end: bytes | None, ts: int,
                   timeout: float = 60.0) -> None:
        """:meth:`wait_rows` for every row of ``table`` in [start, end)."""
        if not self._held:
            return

        def clear() -> bool:
            return not any(t == table and (start is None or r >= start)
                           and (end is None or r < end) and self._below((t, r), ts)
                           for t, r in self._held)

        with self._cond:
            if not self._cond.wait_for(clear, timeout):
                raise Unavailable("timed out waiting for a commit in progress in the range read")


ORACLE_WAIT = 0.001
"""Seconds a commit holding its rows' store locks waits for the oracle's lock (see
:class:`_OracleBusy`)."""


class _OracleBusy(Exception):
    """commit_ts could not be taken under the rows' store locks (the oracle must persist a
    mark, or its lock is busy): the step releases them and takes commit_ts first."""


class _Undeclared(Exception):
    """A notify row the write must touch was not among its locked rows (a column became
    observed during the step): the step is tried again with it declared."""


def commit_one_phase(ctx: StepContext, request: OnePhaseRequest) -> CommitOutcome | Conflict:
    """Commit a transaction in one step (the caller's one hop), or report its conflict."""
    table, start_ts, parts, weak = request
    if not parts:
        with ctx.log.allocate() as commit_ts:  # the position of its entries, too
            notes = entries(table, ctx.observed.of(table), (), commit_ts, commit_ts, weak)
            landed: list[RowMutation] = []
            try:
                if notes:
                    mutate_in_calls(ctx.store, ctx.limits, notes)
                    landed = notes
            finally:
                ctx.log.written(table, notes, landed)
        return CommitOutcome(True, commit_ts)
    if len({row for row, _ in parts}) != len(parts):
        return _chained(ctx, request)
    observed = ctx.observed.of(table)
    notify = bool(weak) or any(c.column in observed for _, cells in parts for c in cells)
    for _ in range(MAX_LOCK_RESOLUTIONS + 1):
        try:
            outcome = _write(ctx, request, notify)
        except _Undeclared:
            notify = True
            continue
        if not isinstance(outcome, list):
            return outcome
        alive = resolve_locks(ctx, table, outcome)
        if alive:
            f = alive[0]
            return Conflict(Conflict.LOCKED, f.row, f.column, lock_start_ts=f.start_ts)
    row, cells = parts[0]
    return Conflict(Conflict.LOCKED, row, cells[0].column)


def _write(ctx: StepContext, request: OnePhaseRequest, notify: bool
           ) -> CommitOutcome | Conflict | list[FoundLock]:
    """One attempt: the outcome, the conflict, or the locks in the way (to resolve).

    ``notify``: the commit may leave notifications.  Their log rows are at a position
    taken before the rows are locked (a log row must be listed to be written in the
    atomic write, and its key holds the position), in flight until the write is done;
    the entries themselves are decided after commit_ts, as always.  A log row that was
    not listed (a column became observed meanwhile) fails the attempt with _Undeclared.
    """
    if not notify:
        return _attempt(ctx, request, None)
    with ctx.log.allocate() as position:
        return _attempt(ctx, request, position)


def _attempt(ctx: StepContext, request: OnePhaseRequest, position: int | None
             ) -> CommitOutcome | Conflict | list[FoundLock]:
    table, start_ts, parts, weak = request
    prow, pcells = parts[0]
    pcol = pcells[0].column
    checks: list[RowMutation] = []
    for row, cells in parts:
        conditions: list[Condition] = []
        mutations: list[Mutation] = []
        for column, _, value in cells:
            names = columns_of(column)
            conditions.append(NoVersionIn(names.write, start_ts, MAX_TS))
            conditions.append(names.slot_empty)
            if value is not None and len(value) > INLINE_VALUE_MAX:
                mutations.append(Put(names.data, start_ts, value))
        if row == prow:
            conditions.append(NoVersionIn(columns_of(pcol).rollback, start_ts, start_ts))
        checks.append(RowMutation(table, row, tuple(mutations), tuple(conditions)))
    declared: set[bytes] = set()
    if position is not None:
        ntable = layout.notify_table(table)
        planned = entries(table, ctx.observed.of(table), keys_of(parts), position, 0, weak)
        declared = {m.row for m in planned}
        checks += [RowMutation(ntable, row, ()) for row in sorted(declared)]
    stamp: list[int] = []  # commit_ts, once taken
    notes: list[RowMutation] = []  # the log entries written, once decided
    # Before commit_ts, with a lower bound of it: the oracle's next timestamp now.
    held = ctx.latches.hold(table, [row for row, _ in parts], ctx.oracle.peek())

    def finish() -> list[RowMutation]:
        if not stamp:  # under the rows' locks: only if the oracle needs no write now
            ts = ctx.oracle.timestamp_if_ready(ORACLE_WAIT)
            if ts is None:
                raise _OracleBusy()
            stamp.append(ts)
        commit_ts = stamp[0]
        failpoints.hit("commit.before_commit_primary")
        observed = ctx.observed.of(table)  # after commit_ts: see ``notify``
        if position is not None or observed:
            notes.extend(entries(table, observed, keys_of(parts), position or 0, commit_ts,
                                 weak))
        if any(m.row not in declared for m in notes):
            notes.clear()
            raise _Undeclared()
        out = [RowMutation(table, row, tuple(
            Put(columns_of(c.column).write, commit_ts, records.write_bytes(
                c.op, start_ts, records.inline_value(c.op, c.value))) for c in cells))
            for row, cells in parts]
        return out + notes

    landed = False
    try:
        try:
            results = ctx.store.mutate_atomic(checks, finish)
        except _OracleBusy:  # nothing written: take commit_ts first, then check and write
            stamp.append(ctx.oracle.get_timestamp())
            results = ctx.store.mutate_atomic(checks, finish)
        landed = True  # notes are made by finish(), which only a write that lands calls
    finally:
        ctx.latches.release(held)
        if notes:
            ctx.log.written(table, notes, notes if landed else ())
    if stamp and all(r.applied for r in results):
        failpoints.hit("commit.after_commit_primary")
        failpoints.hit("commit.after_commit_secondary")
        return CommitOutcome(True, stamp[0])
    locks: list[FoundLock] = []
    for (row, cells), result in zip(parts, results):
        if result.applied or result is NOT_ATTEMPTED:
            continue
        conflict = conflict_of((row, cells), result)
        if conflict is not None:
            return conflict
        assert result.found is not None
        locks.append(FoundLock(row, cells[result.failed_condition // 2].column,
                               records.decode_lock(result.found.value)))
    return locks


def _chained(ctx: StepContext, request: OnePhaseRequest) -> CommitOutcome | Conflict:
    """The chained steps, for a transaction whose rows do not fit one row mutation each."""
    table, start_ts, parts, weak = request
    primary = (parts[0][0], parts[0][1][0].column)
    ttl_ms = chained_ttl_ms(parts)
    conflict = prewrite(ctx, PrewriteRequest(table, start_ts, primary, ttl_ms, parts))
    if conflict is not None:
        return conflict
    keys = keys_of(parts)
    try:
        outcome = commit(ctx, [CommitRequest(table, start_ts, primary, keys, weak)])[0]
        if isinstance(outcome, Exception):  # its write failed (or, never: not its primary)
            raise outcome
        return outcome
    except Exception:
        # The commit step failed (e.g. the oracle refused commit_ts): undo the locks now
        # instead of leaving them to block readers for their TTL.  A no-op if the commit
        # point was passed: rollback leaves a committed primary alone.
        try:
            rollback(ctx, table, start_ts, primary, keys)
        except StorageError as exc:
            log.warning("rollback of transaction %d after a failed commit incomplete (%s);"
                        " its locks expire after %d ms", start_ts, exc, ttl_ms)
        raise
