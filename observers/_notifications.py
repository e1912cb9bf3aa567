"""Notifications as a worker holds them: entries of the node's log, grouped by cell.

An entry (``percolator._notify.log``) says that cell (row, column) changed at
``change_ts`` and its observer must run after that.  A cell may have several entries
(several writes before a worker got to it, a backfill entry beside a live one): a
worker handles them together (coalescing), then hands back exactly those entries as
done, and the node deletes exactly them -- an entry written meanwhile stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from percolator import notifications as log
from percolator.notifications import DoneRef, LogRow

__all__ = ["MALFORMED", "Entry", "PendingCell", "cells_of", "done_refs"]

MALFORMED = -1
"""``change_ts`` of an entry whose record does not decode: it is parked, never run."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the log: where it is (log row, data row) and what it says."""

    log_row: bytes
    row: bytes
    column: bytes
    bucket: int
    change_ts: int
    kind: int = log.WRITE


@dataclass(frozen=True, slots=True)
class PendingCell:
    """A cell with the entries a worker holds for it.  Its entries are usually in one
    bucket, but not always: an entry written before its column's partition prefix was
    registered (or changed) sits in the bucket of the row as it was then."""

    row: bytes
    column: bytes
    entries: tuple[Entry, ...]

    @property
    def key(self) -> tuple[bytes, bytes]:
        return self.row, self.column

    @property
    def buckets(self) -> frozenset[int]:
        return frozenset(e.bucket for e in self.entries)

    def without(self, buckets: frozenset[int]) -> PendingCell | None:
        """This cell without its entries in ``buckets`` (None if nothing is left)."""
        kept = tuple(e for e in self.entries if e.bucket not in buckets)
        if len(kept) == len(self.entries):
            return self
        return PendingCell(self.row, self.column, kept) if kept else None

    @property
    def max_change_ts(self) -> int:
        return max((e.change_ts for e in self.entries), default=0)

    @property
    def malformed(self) -> bool:
        return any(e.change_ts == MALFORMED for e in self.entries)

    def merged(self, entries: Iterable[Entry]) -> PendingCell:
        """This cell with ``entries`` added (an entry already held is not repeated)."""
        have = {(e.log_row, e.row) for e in self.entries}
        more = tuple(e for e in entries if (e.log_row, e.row) not in have)
        return self if not more else PendingCell(self.row, self.column, self.entries + more)


def cells_of(rows: Sequence[LogRow]) -> list[PendingCell]:
    """The cells of pulled log rows, in the order their first entries came."""
    cells: dict[tuple[bytes, bytes], list[Entry]] = {}
    for lrow in rows:
        column, bucket, _ = log.decode_key(lrow.key)
        for row, value in lrow.cells:
            try:
                kind, change_ts = log.decode_entry(value)
            except ValueError:
                kind, change_ts = 0, MALFORMED
            key = (row, column)
            cells.setdefault(key, []).append(Entry(lrow.key, row, column, bucket, change_ts,
                                                   kind))
    return [PendingCell(row, column, tuple(entries)) for (row, column), entries in cells.items()]


def done_refs(entries: Iterable[Entry]) -> list[DoneRef]:
    """Entries as the node names them for deletes and parking: data rows per log row."""
    by_row: dict[bytes, list[bytes]] = {}
    for e in entries:
        by_row.setdefault(e.log_row, []).append(e.row)
    return [DoneRef(lrow, tuple(rows)) for lrow, rows in by_row.items()]
