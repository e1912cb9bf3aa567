"""Commit: commit_ts, the commit point (the primary), the secondaries, the notifications.

Run once every lock of a transaction is in place (its prewrites all succeeded):

1. read the locks of the primary and of the secondaries the request names: a write
   record takes its kind and value from the prewritten lock, never from the request;
2. take commit_ts from the oracle -- after every lock is in place, so a reader whose
   start_ts is above commit_ts meets either a lock or the write record;
3. then read which columns are observed (``notify``: a registration whose timestamp is
   below commit_ts is seen, one above is backfilled);
4. write, in one guarded write: the primary's write records and lock erasure iff its
   slot still holds the lock (the commit point), and only if that applied, the
   notifications of the transaction's observed cells and the secondaries' commits,
   each cell iff its slot still holds the lock.

Notifications go in the commit point's own write, never after it: a commit cannot be
acknowledged and its notifications lost (Apache Fluo lost work when it wrote them
afterwards).  A write of more rows than one store call takes is cut: the commit point's
write holds the notifications of the cells it commits and the weak ones, then as many
others as fit; the rest follow it in order, every notification before the write record
it announces (a crash between them leaves that secondary locked, and whoever rolls it
forward writes its notification).  Secondaries not named in the request are settled
later by the owner or by any reader (``resolve_lock``), which also writes their
notifications.  A request for a transaction already committed (a retry after a lost
reply) answers its commit.  A request whose primary is not its transaction's primary
(a foreign client's mistake) commits nothing: its outcome is InvalidArgument
(``check_primary``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from bigtable_lite import (
    Cell,
    Condition,
    DeleteVersion,
    InvalidArgument,
    Mutation,
    Put,
    RowMutation,
    RowRead,
    TimeRange,
    ValuePrefixAt,
)

from .. import failpoints, records
from .._backend import COMMITTED, CommitOutcome, CommitRequest, Key, TxnStatus
from ..layout import LOCK_SLOT_TS, columns_of
from ..records import Lock
from .batches import settle_in_calls
from .check_txn_status import check_primary
from .notify import entries

if TYPE_CHECKING:
    from .context import StepContext

log = logging.getLogger(__name__)

__all__ = ["CELLS_PER_ROW_MUTATION", "commit", "commit_cells", "read_locks"]

CELLS_PER_ROW_MUTATION = 200
"""Cells per row mutation: 2 mutations and a condition each, inside max_items_per_row."""

_SLOT = TimeRange(LOCK_SLOT_TS, LOCK_SLOT_TS)
NOT_COMMITTED = CommitOutcome(False)


def commit_cells(table: bytes, row: bytes, cells: Sequence[tuple[bytes, Lock]], start_ts: int,
                 commit_ts: int, *, primary_column: bytes | None = None) -> RowMutation:
    """Write records at commit_ts for cells (column, their lock) of one row, locks erased.

    ``primary_column`` given: the commit point, conditional on the primary's slot alone
    (while it holds our lock the transaction is undecided, so nobody settled or took the
    other slots of the row, locked in the same row mutation).  Otherwise condition i
    guards cell i (``batches.per_cell``).  Same bytes whoever writes them: idempotent.
    """
    owner = records.lock_owner(start_ts)
    mutations: list[Mutation] = []
    conditions: list[Condition] = []
    for column, lock in cells:
        names = columns_of(column)
        mutations.append(Put(names.write, commit_ts,
                             records.write_bytes(lock.op, start_ts, lock.value)))
        mutations.append(DeleteVersion(names.lock, LOCK_SLOT_TS))
        if primary_column is None:
            conditions.append(ValuePrefixAt(names.lock, LOCK_SLOT_TS, owner))
    if primary_column is not None:
        conditions.append(ValuePrefixAt(columns_of(primary_column).lock, LOCK_SLOT_TS, owner))
    return RowMutation(table, row, tuple(mutations), tuple(conditions))


def read_locks(ctx: StepContext, table: bytes, keys: Iterable[Key], start_ts: int
               ) -> dict[Key, Lock]:
    """The locks of transaction ``start_ts`` on ``keys`` (cells it no longer holds left out)."""
    by_row: dict[bytes, list[bytes]] = {}
    for row, column in keys:
        by_row.setdefault(row, []).append(column)
    reads = [RowRead(table, row, tuple(columns_of(c).lock for c in cols), (), _SLOT, 1)
             for row, cols in by_row.items()]
    found: dict[Key, Lock] = {}
    for read, cells in zip(reads, _read(ctx, reads)):
        for cell in cells:
            lock = records.decode_lock(cell.value)
            if lock.start_ts == start_ts:
                found[(read.row, cell.column[1:])] = lock
    return found


def _read(ctx: StepContext, reads: list[RowRead]) -> list[list[Cell]]:
    per_call = ctx.limits.max_batch_rows
    out: list[list[Cell]] = []
    for i in range(0, len(reads), per_call):
        out += ctx.store.read_rows(reads[i:i + per_call])
    return out


def _mutations(request: CommitRequest, locks: dict[Key, Lock], commit_ts: int,
               observed: Mapping[bytes, bytes]) -> tuple[list[RowMutation], int, int]:
    """The commit point first, then notifications and secondaries (see the module); how
    many rows at the head must be in the commit point's write (itself, and the
    notifications of the cells it commits and the weak ones); and how many rows after
    the first are log entries (all at position commit_ts)."""
    table, start_ts, (prow, pcol), keys, weak = request
    primary_row: list[tuple[bytes, Lock]] = []
    others: dict[bytes, list[tuple[bytes, Lock]]] = {}
    for (row, column), lock in locks.items():
        if row == prow:
            if column == pcol:
                primary_row.insert(0, (column, lock))
                continue
            if len(primary_row) < CELLS_PER_ROW_MUTATION:
                primary_row.append((column, lock))
                continue
        others.setdefault(row, []).append((column, lock))
    batch = [commit_cells(table, prow, primary_row, start_ts, commit_ts, primary_column=pcol)]
    later = [(row, column) for row, cells in others.items() for column, _ in cells]
    if observed and weak:  # a weak notification of a cell also written is a strong one
        strong_later = {key for key in later if key[1] in observed}
        weak = [key for key in weak if key not in strong_later]
    batch += entries(table, observed, [(prow, c) for c, _ in primary_row], commit_ts,
                     commit_ts, weak)
    atomic = len(batch)
    batch += entries(table, observed, later, commit_ts, commit_ts)
    logged = len(batch) - 1
    for row, cells in others.items():
        for i in range(0, len(cells), CELLS_PER_ROW_MUTATION):
            batch.append(commit_cells(table, row, cells[i:i + CELLS_PER_ROW_MUTATION],
                                      start_ts, commit_ts))
    return batch, atomic, logged


def commit(ctx: StepContext, requests: Sequence[CommitRequest]
           ) -> list[CommitOutcome | Exception]:
    """The commit step of independent transactions (one oracle call for all of them).

    Each request gets its own outcome or error (a primary that is not its transaction's:
    InvalidArgument; its write failing: that error), so one failing transaction never
    answers for another that committed before it.  An error raised for all of them
    (before any commit point) committed none of them."""
    locks = [read_locks(ctx, r.table, [r.primary, *r.keys], r.start_ts) for r in requests]
    outcomes: list[CommitOutcome | Exception | None] = [None] * len(requests)
    todo = []
    for i, (request, found) in enumerate(zip(requests, locks)):
        lock = found.get(request.primary)
        if lock is None:  # not locked (any more): decided already, or never locked
            outcomes[i] = _decided(ctx, request)
            continue
        try:
            check_primary(lock, *request.primary)
        except InvalidArgument as exc:
            outcomes[i] = exc
            continue
        todo.append(i)
    if todo:  # commit_ts is the position of the commits' log entries: in flight till written
        with ctx.log.allocate(len(todo)) as first_ts:
            for n, i in enumerate(todo):
                try:
                    outcomes[i] = _commit_one(ctx, requests[i], locks[i], first_ts + n)
                except Exception as exc:  # noqa: BLE001 - this transaction's answer alone
                    outcomes[i] = exc
    return [o if o is not None else NOT_COMMITTED for o in outcomes]


def _commit_one(ctx: StepContext, request: CommitRequest, locks: dict[Key, Lock],
                commit_ts: int) -> CommitOutcome:
    observed = ctx.observed.of(request.table)  # after commit_ts: see ``notify``
    batch, atomic, logged = _mutations(request, locks, commit_ts, observed)
    n = max(atomic, min(len(batch), ctx.limits.max_batch_rows))  # the commit point's write
    failpoints.hit("commit.before_commit_primary")  # every lock in place, commit_ts taken
    landed: Sequence[RowMutation] = ()  # of the log entries, those known written
    try:
        results = ctx.store.mutate_guarded(batch[:n])
        prow, pcol = request.primary
        if not results[0].applied:
            return _decided(ctx, request)  # nothing written, its entries neither
        landed = batch[1:min(n, 1 + logged)]  # unconditional rows: applied with the primary
        ctx.statuses.remember(request.table, prow, pcol, request.start_ts,
                              TxnStatus(COMMITTED, commit_ts))
        failpoints.hit("commit.after_commit_primary")
        try:
            if not all(result.applied for result in results):  # a cell settled already
                settle_in_calls(ctx.store, ctx.limits, batch[1:n], results[1:])
            if n < len(batch):  # did not fit the commit point's write: in order, in calls
                settle_in_calls(ctx.store, ctx.limits, batch[n:])
                landed = batch[1:1 + logged]
        except Exception as exc:  # noqa: BLE001 - committed: its answer, whatever the rest did
            # Past the commit point the transaction is committed, and must be answered so;
            # the secondaries left locked are rolled forward by whoever meets them.
            log.warning("secondaries of transaction %d (committed at %d) left locked (%r);"
                        " readers roll them forward", request.start_ts, commit_ts, exc)
    finally:
        ctx.log.written(request.table, batch[1:1 + logged], landed)
    failpoints.hit("commit.after_commit_secondary")
    return CommitOutcome(True, commit_ts)


def _decided(ctx: StepContext, request: CommitRequest) -> CommitOutcome:
    """The outcome of a transaction whose primary is not locked by it: committed (a retry
    of a commit that landed) or not (rolled back by another client, or never locked)."""
    prow, pcol = request.primary
    status = ctx.statuses.status(ctx, request.table, prow, pcol, request.start_ts)
    return CommitOutcome(True, status.commit_ts) if status.state == COMMITTED else NOT_COMMITTED
