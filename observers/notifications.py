"""Notifications: finding pending ones in the notify table, and deleting exactly those handled.

A notification is a version of cell (row, column) of ``<table>.notify`` at ts = the
writer's start_ts whose value (``percolator.records.Notification``) names the
writer's primary.  Several writes before a worker gets to a cell leave several
versions; a worker handles them together (coalescing) and then deletes exactly the
versions it decided, never a range: a version written meanwhile must survive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bigtable_lite import (
    DEFAULT_LIMITS,
    DeleteVersion,
    Mutation,
    Row,
    RowMutation,
    ScanRequest,
    TabletStore,
)

Version = tuple[int, bytes]  # (ts = writer's start_ts, undecoded notification record)
_ITEMS_PER_ROW = DEFAULT_LIMITS.max_items_per_row // 2
_ROWS_PER_CALL = DEFAULT_LIMITS.max_batch_rows // 4


@dataclass(frozen=True, slots=True)
class PendingCell:
    """A cell with notification versions, as one scan saw it (versions newest first)."""

    row: bytes
    column: bytes
    versions: tuple[Version, ...]

    @property
    def key(self) -> tuple[bytes, bytes]:
        return self.row, self.column


@dataclass(frozen=True, slots=True)
class Range:
    """Rows [start, end) of the notify table; end None = to the end (one tablet's share)."""

    start: bytes
    end: bytes | None


def cells_of(row: Row) -> list[PendingCell]:
    """Group a scanned row's cells (column ascending, ts descending) by column."""
    out: list[PendingCell] = []
    column: bytes | None = None
    versions: list[Version] = []
    for cell in row.cells:
        if cell.column != column:
            if column is not None:
                out.append(PendingCell(row.row, column, tuple(versions)))
            column = cell.column
            versions = []
        versions.append((cell.ts, cell.value))
    if column is not None:
        out.append(PendingCell(row.row, column, tuple(versions)))
    return out


def row_after(row: bytes) -> bytes:
    """The smallest row greater than ``row``."""
    return row + b"\x00"


def scan_chunk(store: TabletStore, table: bytes, span: Range, start: bytes,
               columns: Sequence[bytes], limit: int) -> tuple[list[PendingCell], bytes | None]:
    """Pending cells of up to ``limit`` rows from ``start`` within ``span``; and where to resume
    (None when the span's end was reached)."""
    request = ScanRequest(table, start or None, span.end, tuple(sorted(columns)), (),
                          limit=limit)
    cells: list[PendingCell] = []
    rows = 0
    last = b""
    for row in store.scan(request):
        rows += 1
        last = row.row
        cells.extend(cells_of(row))
    if rows < limit or len(last) >= DEFAULT_LIMITS.max_row_bytes:
        return cells, None  # the end (or a row too long to follow: rescan the span)
    return cells, row_after(last)


def has_pending(store: TabletStore, table: bytes, columns: Sequence[bytes]) -> bool:
    """Whether any notification of ``columns`` is in the notify table (one fresh snapshot)."""
    request = ScanRequest(table, None, None, tuple(sorted(columns)), (), limit=1)
    return any(True for _ in store.scan(request))


def count_pending(store: TabletStore, table: bytes, columns: Iterable[bytes] = (),
                  cap: int = 1_000_000) -> tuple[int, int]:
    """(cells, versions) pending in the notify table for ``columns`` (none = any column),
    counting at most ``cap`` cells."""
    cells = versions = 0
    for row in store.scan(ScanRequest(table, None, None, tuple(sorted(columns)))):
        for cell in cells_of(row):
            cells += 1
            versions += len(cell.versions)
        if cells >= cap:
            break
    return cells, versions


def row_mutations(table: bytes, row: bytes, mutations: Sequence[Mutation]) -> list[RowMutation]:
    """``mutations`` of one row as RowMutations within the store's per-row item limit."""
    step = _ITEMS_PER_ROW
    return [RowMutation(table, row, tuple(mutations[i:i + step]))
            for i in range(0, len(mutations), step)]


def mutate_all(store: TabletStore, mutations: Sequence[RowMutation], *, sync: bool = False
               ) -> None:
    """Apply unconditional mutations in calls within the store's batch limit."""
    step = _ROWS_PER_CALL
    for i in range(0, len(mutations), step):
        store.mutate_rows(mutations[i:i + step], sync=sync)


def delete_versions(store: TabletStore, table: bytes,
                    done: Sequence[tuple[bytes, bytes, Sequence[int]]]) -> None:
    """Delete exactly the given versions: [(row, column, [ts, ...]), ...]."""
    mutations = [m for row, column, stamps in done
                 for m in row_mutations(table, row, [DeleteVersion(column, ts) for ts in stamps])]
    mutate_all(store, mutations)


def spans(store: TabletStore, table: bytes) -> list[Range]:
    """The notify table's tablets, each scanned as its own span."""
    return [Range(t.start_row, t.end_row) for t in store.list_tablets(table)] or [Range(b"", None)]
