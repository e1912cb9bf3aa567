"""Check a transaction's status through its primary lock (TiKV's check_txn_status).

The primary cell alone decides a transaction's fate (Percolator 2.2): a write record
carrying its start_ts means committed; a rollback marker at start_ts means rolled
back; its lock in the cell's lock slot means undecided -- and, once the lock's expiry
has passed on this step's clock, the checker rolls it back itself, so a crashed client
blocks others for no longer than its lock TTL.  A primary with none of the three was
never locked (or its records were collected): it is sealed with a rollback marker so
a delayed prewrite of it can never succeed -- unless a write record newer than those
the checker saw appeared meanwhile (see :func:`seal_primary`).

Every step given a transaction's primary by its caller (this one, commit, rollback,
heartbeat) acts only if the lock it finds there is that primary's own
(:func:`check_primary`): a secondary taken for the primary -- committed as if it were
the commit point, or rolled back as if its transaction's fate were decided there --
would tear the transaction.  Lock resolution is not told a primary by a caller but
reads it from a stored lock, and must settle whatever is stored (``strict=False``):
if the named primary holds a lock of the same start_ts that is not a primary lock of
that cell (a *stray* lock: a foreign client prewrote cells of one start_ts under
several primaries), the transaction named by the lock never locked that primary, so
the primary is sealed as a missing one is -- with the seal conditional on the very
stray record, which belongs to another primary's transaction and is left alone.
Refusing instead (InvalidArgument) left such locks unresolvable: two of them naming
each other wedged their cells for every later reader and writer.

Final statuses never change, so :class:`StatusCache` keeps them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple

from bigtable_lite import (
    MAX_TS,
    Condition,
    DeleteVersion,
    InvalidArgument,
    NoValuePrefixAt,
    NoVersionIn,
    Put,
    RowMutation,
    RowRead,
    TabletStore,
    TimeRange,
    ValuePrefixAt,
    VersionAt,
)

from .. import layout, records
from .._backend import COMMITTED, LOCKED, ROLLED_BACK_STATUS, TxnStatus
from ..layout import LOCK_SLOT_TS, columns_of
from ..records import Lock

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["PrimaryState", "StatusCache", "check_primary", "check_txn_status", "holds_own_lock",
           "primary_state", "read_primary", "rollback_primary", "seal_primary"]

TxnKey = tuple[bytes, bytes, bytes, int]  # table, primary row, primary column, start_ts


def holds_own_lock(column: bytes, start_ts: int) -> ValuePrefixAt:
    """The condition of every step acting on its own lock: the slot holds start_ts's lock."""
    return ValuePrefixAt(columns_of(column).lock, LOCK_SLOT_TS, records.lock_owner(start_ts))


def check_primary(lock: Lock, row: bytes, column: bytes) -> None:
    """InvalidArgument unless ``lock`` (of the caller's transaction, on cell (row, column))
    is the primary lock of its transaction, naming that very cell."""
    if not (lock.is_primary and lock.primary_row == row and lock.primary_column == column):
        raise InvalidArgument(
            f"({row!r}, {column!r}) is not the primary of transaction {lock.start_ts}: its"
            f" lock names ({lock.primary_row!r}, {lock.primary_column!r})")


def rollback_primary(table: bytes, row: bytes, column: bytes, start_ts: int) -> RowMutation:
    """Marker at start_ts, lock and data erased, iff the slot still holds start_ts's lock
    (so a commit and a rollback of one primary can never both succeed)."""
    names = columns_of(column)
    return RowMutation(table, row, (
        Put(names.rollback, start_ts, b""),
        DeleteVersion(names.lock, LOCK_SLOT_TS),
        DeleteVersion(names.data, start_ts),
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
    names = columns_of(column)
    conditions: list[Condition] = [NoValuePrefixAt(names.lock, LOCK_SLOT_TS,
                                                   records.lock_owner(start_ts))]
    if newest_write_ts < MAX_TS:
        conditions.append(NoVersionIn(names.write, newest_write_ts + 1, MAX_TS))
    return RowMutation(table, row, (Put(names.rollback, start_ts, b""),), tuple(conditions))


class PrimaryState(NamedTuple):
    """What a primary cell records of one transaction, read in one snapshot."""

    status: TxnStatus | None  # None: no trace of the transaction as this cell's
    newest_write_ts: int  # the newest write record at or above start_ts, else start_ts - 1
    stray: bytes | None  # the slot's lock of start_ts when it is not this cell's primary lock


def primary_state(store: TabletStore, table: bytes, row: bytes, column: bytes,
                  start_ts: int) -> PrimaryState:
    """The transaction's records on its primary cell, without side effects.  A commit
    record or a rollback marker decides, whatever the slot holds; then the slot's lock,
    if it is this cell's primary lock of start_ts (a stray one is returned apart)."""
    names = columns_of(column)
    slot, cells = store.read_rows([  # one snapshot
        RowRead(table, row, (names.lock,), (), TimeRange(LOCK_SLOT_TS, LOCK_SLOT_TS), 1),
        RowRead(table, row, (names.write, names.rollback), (), TimeRange(start_ts, MAX_TS), 0)])
    lock = stray = None
    if slot:
        found = records.decode_lock(slot[0].value)
        if found.start_ts == start_ts:  # else another transaction's
            if found.is_primary and (found.primary_row, found.primary_column) == (row, column):
                lock = found
            else:
                stray = slot[0].value
    rolled_back = False
    newest_write_ts = start_ts - 1
    for cell in cells:
        if cell.column[:1] == layout.WRITE:
            if records.decode_write(cell.value).start_ts == start_ts:
                return PrimaryState(TxnStatus(COMMITTED, cell.ts), cell.ts, stray)
            newest_write_ts = max(newest_write_ts, cell.ts)
        else:
            rolled_back = rolled_back or cell.ts == start_ts
    if rolled_back:  # after the writes: a commit record wins over a stray marker
        return PrimaryState(ROLLED_BACK_STATUS, newest_write_ts, stray)
    return PrimaryState(TxnStatus(LOCKED, lock=lock) if lock is not None else None,
                        newest_write_ts, stray)


def read_primary(store: TabletStore, table: bytes, row: bytes, column: bytes,
                 start_ts: int) -> tuple[TxnStatus | None, int]:
    """The status as stored now (None: no trace), without side effects; and the newest
    write record's commit_ts at or above start_ts (start_ts - 1 if none), which a seal
    must find unchanged.  InvalidArgument if the slot holds a lock of start_ts that is
    not this cell's primary lock (the caller named a primary that is not one)."""
    state = primary_state(store, table, row, column, start_ts)
    if state.stray is not None:
        check_primary(records.decode_lock(state.stray), row, column)
    return state.status, state.newest_write_ts


def seal_stray(table: bytes, row: bytes, column: bytes, start_ts: int, newest_write_ts: int,
               stray: bytes) -> RowMutation:
    """Seal a primary whose slot holds a stray lock of start_ts (see the module): as
    :func:`seal_primary`, but conditional on the slot still holding that very record."""
    names = columns_of(column)
    conditions: list[Condition] = [VersionAt(names.lock, LOCK_SLOT_TS, stray)]
    if newest_write_ts < MAX_TS:
        conditions.append(NoVersionIn(names.write, newest_write_ts + 1, MAX_TS))
    return RowMutation(table, row, (Put(names.rollback, start_ts, b""),), tuple(conditions))


def check_txn_status(ctx: StepContext, table: bytes, row: bytes, column: bytes,
                     start_ts: int, *, roll_back_expired: bool = True,
                     force: bool = False, strict: bool = True) -> TxnStatus:
    """The transaction's status; rolls back an expired primary lock, seals a missing one.

    ``force``: roll the primary lock back whatever its expiry (garbage collection, for a
    transaction below the safe point: it can neither read nor commit any more).
    ``strict``: InvalidArgument if the cell holds a lock of start_ts that is not its
    primary lock (a caller named it); else such a primary is sealed (lock resolution:
    see the module)."""
    store = ctx.store
    for _ in range(16):  # each retry follows a concurrent change of the primary
        if strict:
            status, newest_write_ts = read_primary(store, table, row, column, start_ts)
            stray = None
        else:
            status, newest_write_ts, stray = primary_state(store, table, row, column, start_ts)
        if status is not None:
            if status.final or not roll_back_expired:
                return status
            assert status.lock is not None
            if not force and ctx.clock.now_ms() < status.lock.expires_at_ms:
                return status
            m = rollback_primary(table, row, column, start_ts)
        elif stray is not None:
            m = seal_stray(table, row, column, start_ts, newest_write_ts, stray)
        else:
            m = seal_primary(table, row, column, start_ts, newest_write_ts)
        if store.mutate_rows([m])[0].applied:
            return ROLLED_BACK_STATUS
    raise RuntimeError(f"status of transaction {start_ts} kept changing under the checker")


class StatusCache:
    """:func:`check_txn_status`, remembering final statuses (they never change), bounded."""

    def __init__(self, size: int = 100_000) -> None:
        self._cache: OrderedDict[TxnKey, TxnStatus] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self.checks = 0

    def status(self, ctx: StepContext, table: bytes, row: bytes, column: bytes,
               start_ts: int, *, force: bool = False, strict: bool = True) -> TxnStatus:
        """``force``, ``strict``: see :func:`check_txn_status`."""
        key = (table, row, column, start_ts)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        self.checks += 1
        status = check_txn_status(ctx, table, row, column, start_ts, force=force,
                                  strict=strict)
        self.remember(table, row, column, start_ts, status)
        return status

    def remember(self, table: bytes, row: bytes, column: bytes, start_ts: int,
                 status: TxnStatus) -> None:
        """Record a final status learned first-hand (e.g. by the commit step)."""
        if status.final:
            with self._lock:
                self._cache[(table, row, column, start_ts)] = status
                if len(self._cache) > self._size:
                    self._cache.popitem(last=False)
