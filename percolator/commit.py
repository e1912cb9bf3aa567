"""The commit step: commit_ts, the primary's commit (the commit point), then the secondaries.

Percolator 2.2 once every lock is in place: take ``commit_ts`` from the oracle, write
the primary row's records and erase its locks iff the primary's lock slot still holds
our lock (the commit point), then do the same for every other row, each cell iff its
slot still holds our lock (``store_calls.settle_in_calls``).  The step runs wherever
the store and the oracle are:

* embedded, in the client (:class:`LocalCommit` over ``LocalStore`` and ``Oracle``),
  the primary's commit and the secondaries' in one guarded write (``mutate_guarded``:
  the secondaries' apply only if the primary's did);
* over gRPC, in the node, as one ``commit`` command of a batch (``percolator.v1.Node``):
  one hop instead of three (a timestamp, the primary's commit, the secondaries'),
  and the node merges the commit steps of every transaction in a batch into one
  oracle call and two store calls (:func:`commit_many`);
* against a store without the command, in the client, step by step over the network,
  secondaries in the background (:class:`LocalCommit` with a ``SecondaryCommitter``).

Why committing secondaries right after the primary is safe anywhere: once the
primary's commit applied, the transaction is decided; a secondary's commit is
idempotent (same bytes whoever writes it, and a no-op once the cell's slot no longer
holds our lock: a reader rolled it forward, and a later transaction may hold it now)
and readers roll forward any secondary a crash leaves locked.  Why commit_ts is taken
inside the step: it must be taken after every lock is in place (a reader whose
start_ts is above commit_ts must meet the lock or the write record), and the step only
runs after every prewrite succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from bigtable_lite import (
    MAX_TS,
    InvalidArgument,
    LimitExceeded,
    Limits,
    MutationResult,
    RowMutation,
    StorageError,
    TabletStore,
)
from bigtable_lite.validation import check_key

from . import failpoints, mutations, records
from .oracle import MAX_COUNT, TimestampSource
from .secondaries import SecondaryCommitter
from .store_calls import BYTES_PER_CALL, mutate_in_calls, settle_in_calls

__all__ = ["BYTES_PER_CALL", "CommitOutcome", "CommitRequest", "CommitService", "LocalCommit",
           "check_commit_request", "commit_many", "commit_secondaries", "mutate_in_calls"]

log = logging.getLogger(__name__)

CellCommit = tuple[bytes, bytes, bytes | None]  # column, records.PUT or DELETE, value
RowCommit = tuple[bytes, Sequence[CellCommit]]

class CommitRequest(NamedTuple):
    """What the commit step needs of a prewritten transaction.

    ``rows[0]`` is the primary's row and holds ``primary_column``; a row with very
    many cells may come in several parts.  Cells are (column, op, value): only a value
    the write record inlines matters (``mutations.inline_value``), so only such values
    travel on the wire.  A NamedTuple: built on every commit's hot path.
    """

    table: bytes
    start_ts: int
    primary_column: bytes
    rows: tuple[RowCommit, ...]

    @property
    def primary_row(self) -> bytes:
        return self.rows[0][0]


class CommitOutcome(NamedTuple):
    """``committed`` False: the primary's lock was gone (another client rolled it back)."""

    committed: bool
    commit_ts: int = 0


NOT_COMMITTED = CommitOutcome(False)


class CommitService(Protocol):
    """Runs the commit step; :class:`LocalCommit` in-process, ``NodeClient`` at the node.

    Raises ``Unavailable`` when the outcome is unknown (the step may have committed),
    any other error only when the primary was not committed.
    """

    def commit(self, request: CommitRequest) -> CommitOutcome: ...


def check_commit_request(request: CommitRequest, limits: Limits) -> None:
    """Refuse a malformed request (InvalidArgument, LimitExceeded) before anything is done."""
    check_key(request.table, "table", limits.max_table_bytes)
    if type(request.start_ts) is not int or not 0 < request.start_ts <= MAX_TS:
        raise InvalidArgument(f"start_ts {request.start_ts!r} is not a timestamp")
    if not request.rows:
        raise InvalidArgument("a commit needs at least the primary's row")
    if not any(c[0] == request.primary_column for c in request.rows[0][1]):
        raise InvalidArgument("the first row of a commit must hold the primary column")
    for row, cells in request.rows:  # a row with very many cells may come in several parts
        check_key(row, "row", limits.max_row_bytes)
        if not cells:
            raise InvalidArgument(f"row {row!r} of a commit has no cells")
        if 3 * len(cells) > limits.max_items_per_row:  # a write record, a lock erased, its check
            raise LimitExceeded(f"row {row!r} of a commit has {len(cells)} cells; the limit"
                                f" is {limits.max_items_per_row // 3}")
        for column, op, _ in cells:
            check_key(column, "column", limits.max_column_bytes)
            if op not in (records.PUT, records.DELETE):
                raise InvalidArgument(f"unknown write kind {op!r}")


def commit_many(store: TabletStore, oracle: TimestampSource, limits: Limits,
                requests: Sequence[CommitRequest], *,
                secondaries: SecondaryCommitter | None = None) -> list[CommitOutcome]:
    """The commit step of several transactions at once (they are independent).

    One oracle call, then every primary in one store call (each conditional on its
    own lock), then the secondaries of those that committed; ``secondaries`` set: they
    are handed to it (background) instead.  At most ``MAX_COUNT`` requests.  Raises
    only before any primary was committed (oracle failure) or when the primaries'
    store call failed (then their outcome is unknown).
    """
    n = len(requests)
    if not 0 < n <= MAX_COUNT:
        raise ValueError(f"commit 1 to {MAX_COUNT} transactions at once (one oracle call)")
    first_ts = oracle.get_timestamp() if n == 1 else oracle.get_timestamps(n)
    commit = mutations.commit
    primaries = [commit(table, rows[0][0], rows[0][1], start_ts, first_ts + i,
                        primary_column=primary_column)
                 for i, (table, start_ts, primary_column, rows) in enumerate(requests)]
    applied = mutate_in_calls(store, limits, primaries)
    outcomes = [CommitOutcome(True, first_ts + i) if result.applied else NOT_COMMITTED
                for i, result in enumerate(applied)]
    failpoints.hit("commit.after_commit_primary")
    commit = mutations.commit
    _secondaries_after_commit_point(store, limits, [
        commit(table, row, cells, start_ts, outcome.commit_ts)
        for (table, start_ts, _, rows), outcome in zip(requests, outcomes)
        if outcome.committed for row, cells in rows[1:]], secondaries)
    return outcomes


def _secondaries_after_commit_point(store: TabletStore, limits: Limits,
                                    commits: list[RowMutation],
                                    secondaries: SecondaryCommitter | None) -> None:
    """The secondaries' commits of committed transactions, inline or handed to the
    background committer."""
    if not commits:
        return
    if secondaries is not None:
        secondaries.submit(commits)
    elif commit_secondaries(store, limits, commits):
        failpoints.hit("commit.after_commit_secondary")


def commit_secondaries(store: TabletStore, limits: Limits, commits: Sequence[RowMutation],
                       results: Sequence[MutationResult] | None = None) -> bool:
    """Write secondaries' commits (cells whose slot is no longer ours skipped); False if the
    store failed (logged: their transactions are committed, readers roll the remaining
    locks forward).  ``results``: of ``commits``, applied already; the failed are re-sent."""
    try:
        settle_in_calls(store, limits, commits, results)
    except StorageError as exc:
        log.warning("%d secondaries not committed (%s); readers will roll them forward",
                    len(commits), exc)
        return False
    return True


class LocalCommit:
    """The commit step run in this process, over ``store`` and ``oracle``.

    ``secondaries``: commit them in the background (a remote store without the
    node's commit command), else inline.
    """

    def __init__(self, store: TabletStore, oracle: TimestampSource, limits: Limits, *,
                 secondaries: SecondaryCommitter | None = None) -> None:
        self._store = store
        self._oracle = oracle
        self._limits = limits
        self.secondaries = secondaries
        # A store that applies rows guarded by the first (LocalStore's mutate_guarded) takes
        # the primary's commit and the secondaries' in one write (unless these go to the
        # background committer).
        self._guarded: Callable[[Sequence[RowMutation]], list[MutationResult]] | None = (
            getattr(store, "mutate_guarded", None) if secondaries is None else None)

    def commit(self, request: CommitRequest) -> CommitOutcome:
        """commit_many() of one request, without its batching (the embedded hot path)."""
        table, start_ts, primary_column, rows = request
        commit_ts = self._oracle.get_timestamp()
        primary = mutations.commit(table, rows[0][0], rows[0][1], start_ts, commit_ts,
                                   primary_column=primary_column)
        if 1 < len(rows) <= self._limits.max_batch_rows and self._guarded is not None:
            return self._commit_in_one_write(request, primary, commit_ts)
        if not self._store.mutate_rows([primary])[0].applied:
            return NOT_COMMITTED
        failpoints.hit("commit.after_commit_primary")
        commit = mutations.commit
        _secondaries_after_commit_point(
            self._store, self._limits,
            [commit(table, row, cells, start_ts, commit_ts) for row, cells in rows[1:]],
            self.secondaries)
        return CommitOutcome(True, commit_ts)

    def _commit_in_one_write(self, request: CommitRequest, primary: RowMutation,
                             commit_ts: int) -> CommitOutcome:
        """The primary's commit and the secondaries' in one guarded write: the secondaries'
        apply only if the primary's did (the commit point is unchanged), and a transaction
        costs one store write less.  A secondary row that failed anyway (a cell no longer
        ours) is re-sent cell by cell, as after a separate commit point."""
        assert self._guarded is not None
        table, start_ts, _, rows = request
        commit = mutations.commit
        batch = [primary]
        for row, cells in rows[1:]:
            batch.append(commit(table, row, cells, start_ts, commit_ts))
        results = self._guarded(batch)
        if not results[0].applied:
            return NOT_COMMITTED
        failpoints.hit("commit.after_commit_primary")
        if not all(result.applied for result in results):
            commit_secondaries(self._store, self._limits, batch[1:], results[1:])
        failpoints.hit("commit.after_commit_secondary")
        return CommitOutcome(True, commit_ts)

    def close(self) -> None:
        if self.secondaries is not None:
            self.secondaries.close()
