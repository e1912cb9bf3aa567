"""Counts: how many entries of each column wait in a table's log, exactly.

The backfill pauses while its column has more than ``backfill.MAX_PENDING`` entries,
and ``Notifications.columns`` lists the unregistered columns that still have some: the
count must neither drift up (a backfill that never resumes, a column listed for ever)
nor down.  It moves with what the store did, never with what was asked of it:

* **up** by the entries a write *landed* (``NotifyLog.written``'s ``landed``): a commit
  that found its primary settled, or a backfill chunk whose registration changed,
  wrote none of the entries it tried;
* **down** by the entries a delete *removed* (:func:`deletes`, :func:`removed`): each
  log row's delete is conditional on each of its cells being there, and a row one of
  whose cells was gone (deleted by a repeated pull after a lost reply, or by both
  owners of a bucket whose handover was forced) is deleted again cell by cell;
* **recounted** from a scan of the log (:meth:`Counts.reset`), for entries written
  behind the node's back (a raw write) or a write whose outcome was not learnt.  The
  scan's snapshot must not cut a change in two (its store write before the snapshot,
  its count after, or the reverse): a recount is applied only if no log write was in
  flight (the resolved-timestamp tracker's positions) and no delete was under way when
  it began, and none began until the scan's snapshot was taken; every change after
  that is then both outside the scan and counted since the recount began.

The counts used to be raised to what a rescan found whenever it found more (``max``):
a rescan running while workers deleted entries counted the ones deleted during it
again, and nothing ever took those back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from bigtable_lite import (
    DeleteVersion,
    MutationResult,
    RowMutation,
    TabletStore,
    VersionAt,
)

from . import log
from .resolved import Tracker

__all__ = ["CELLS_PER_DELETE", "Counts", "Mark", "count_row", "deletes", "removed"]

CELLS_PER_DELETE = 400
"""Cells per conditional delete of a log row: a mutation and a condition each, inside the
store's items per row."""


def deletes(log_table: bytes, cells: Iterable[tuple[bytes, Sequence[bytes]]]
            ) -> list[RowMutation]:
    """Deletes of these (log row, data rows) entries, each row's conditional on each of
    its cells being there (so that its result says whether it removed them all)."""
    out = []
    for log_row, named in cells:
        rows = list(dict.fromkeys(named))  # a row named twice: both its conditions held
        out += [RowMutation(log_table, log_row,
                            tuple(DeleteVersion(row, 0) for row in rows[i:i + CELLS_PER_DELETE]),
                            tuple(VersionAt(row, 0) for row in rows[i:i + CELLS_PER_DELETE]))
                for i in range(0, len(rows), CELLS_PER_DELETE)]
    return out


def removed(store: TabletStore, mutations: Sequence[RowMutation],
            results: Sequence[MutationResult], out: dict[bytes, int]) -> None:
    """Add to ``out`` the entries removed per column by :func:`deletes` ``mutations``
    that got ``results``; a row that failed (a cell of it was gone) is deleted again
    cell by cell."""
    again: list[RowMutation] = []
    for m, result in zip(mutations, results):
        if result.applied:
            count_row(out, m.row, len(m.mutations))
        elif len(m.mutations) > 1:
            again += [RowMutation(m.table, m.row, (d,), (c,))
                      for d, c in zip(m.mutations, m.conditions)]
    if again:
        for m, result in zip(again, store.mutate_rows(again)):
            if result.applied:
                count_row(out, m.row, 1)


def count_row(out: dict[bytes, int], log_row: bytes, n: int) -> None:
    """Add ``n`` entries of ``log_row`` to its column's count in ``out``."""
    try:
        column = log.decode_key(log_row)[0]
    except ValueError:
        return  # not a log row: never counted
    out[column] = out.get(column, 0) + n


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a recount began: whether nothing was in flight, the tracker's allocations,
    the deletes begun, the counts."""

    quiet: bool
    allocations: int
    deletes: int
    counts: dict[bytes, int]


class Counts:
    """Entries per column of one table's log (thread-safe)."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker
        self._lock = threading.Lock()
        self._n: dict[bytes, int] = {}
        self._deleting = 0  # deletes under way
        self._deletes = 0  # deletes begun, ever
        self.unsure: set[bytes] = set()
        """Columns whose count may be off (a recount whose snapshot may cut a change)."""

    def of(self, column: bytes) -> int:
        with self._lock:
            return self._n.get(column, 0)

    def columns(self) -> set[bytes]:
        """Columns with entries."""
        with self._lock:
            return {c for c, n in self._n.items() if n > 0}

    def landed(self, mutations: Sequence[RowMutation]) -> None:
        """These log rows' cells were written (were not there before: every write of
        entries is at a fresh position)."""
        added: dict[bytes, int] = {}
        for m in mutations:
            count_row(added, m.row, len(m.mutations))
        self._apply(added, -1)

    @contextmanager
    def deleting(self) -> Iterator[dict[bytes, int]]:
        """Around a delete of entries: fill the dict yielded with what it removed per
        column; it is subtracted when the block ends (also if it raised)."""
        out: dict[bytes, int] = {}
        with self._lock:
            self._deleting += 1
            self._deletes += 1
        try:
            yield out
        finally:
            with self._lock:  # one section: a recount between the two counted it twice
                self._deleting -= 1
                self._apply_locked(out, 1)

    def _apply(self, counts: dict[bytes, int], sign: int) -> None:
        """Add (sign -1) or subtract (sign 1) ``counts``."""
        if counts:
            with self._lock:
                self._apply_locked(counts, sign)

    def _apply_locked(self, counts: dict[bytes, int], sign: int) -> None:
        for column, k in counts.items():
            self._n[column] = max(0, self._n.get(column, 0) - sign * k)

    # --- recount --------------------------------------------------------------------------

    def begin(self) -> Mark:
        """Where a recount begins (call before its scan); not quiet if a log write is in
        flight or a delete under way (its count may fall on either side of the
        snapshot)."""
        allocations = self._tracker.quiet()
        with self._lock:
            return Mark(allocations is not None and not self._deleting,
                        allocations or 0, self._deletes, dict(self._n))

    def settled(self, mark: Mark) -> bool:
        """Whether ``mark`` was quiet and no log write or delete began since (call once
        the scan's snapshot is taken: after its first row was read)."""
        with self._lock:
            deletes = self._deletes
        return mark.quiet and self._tracker.allocations == mark.allocations and \
            deletes == mark.deletes

    def reset(self, mark: Mark, found: dict[bytes, int], columns: set[bytes] | None) -> None:
        """The counts of ``columns`` (None: every column) are what the scan begun at
        ``mark`` found, plus every change counted since (exact if ``mark`` settled)."""
        with self._lock:
            scope = set(found) | set(self._n) if columns is None else columns
            for column in scope:
                since = self._n.get(column, 0) - mark.counts.get(column, 0)
                self._n[column] = max(0, found.get(column, 0) + since)
            self.unsure -= scope

    def doubt(self, columns: Iterable[bytes]) -> None:
        """These columns' counts may be off (a recount was not settled)."""
        with self._lock:
            self.unsure |= set(columns)

    def sure(self, columns: Iterable[bytes]) -> bool:
        with self._lock:
            return not self.unsure & set(columns)
