"""Parking: log entries whose observer keeps failing, set aside where an operator sees them.

A worker that gave up on a cell (its observer failed ``max_failures`` times, or an
entry does not decode) asks the node to park the cell's entries: they move, with the
worker's note, to ``<table>.parked`` in one atomic write (the copy and the delete
together: never both or neither lost).  :func:`replay` moves them back into the log at
a fresh position, also in one write, and the usual protocol runs: if the observer ran
for a later change meanwhile, the ack covers the parked one and it is skipped.

Layout, table ``<table>.parked``, one row per data row (persisted; never renumber)::

    b"n" + column   ts = the entry's log position   value = the entry record, unchanged
    b"i" + column   ts = 0                           value = the note (JSON object)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bigtable_lite import (
    DeleteVersion,
    Mutation,
    Put,
    RowMutation,
    RowRead,
    ScanRequest,
    TabletStore,
)

from .. import layout
from . import log
from .api import DoneRef, ParkedCell
from .counts import deletes, removed

__all__ = ["PARKED_INFO", "PARKED_NOTE", "park", "parked", "parked_table", "replay_rows"]

PARKED_NOTE = b"n"
PARKED_INFO = b"i"


def parked_table(table: bytes) -> bytes:
    return table + layout.PARKED_SUFFIX


def park(store: TabletStore, table: bytes, refs: Sequence[DoneRef], note: bytes,
         gone: dict[bytes, int]) -> int:
    """Move the entries ``refs`` of the log to the parking table; how many moved.
    ``gone`` gets the entries removed from the log per column: each log row's delete is
    conditional on its cells being there (``counts``), so one removed meanwhile by
    another (a repeated pull) is not counted twice."""
    ntable = layout.notify_table(table)
    reads = [RowRead(ntable, ref.log_row, ref.rows, max_versions=1) for ref in refs]
    found = store.read_rows(reads) if reads else []
    by_row: dict[bytes, list[Mutation]] = {}
    moved: list[tuple[bytes, list[bytes]]] = []
    for ref, cells in zip(refs, found):
        column, _, position = log.decode_key(ref.log_row)
        for cell in cells:
            muts = by_row.setdefault(cell.column, [])
            muts.append(Put(PARKED_NOTE + column, position, cell.value))
            muts.append(Put(PARKED_INFO + column, 0, note))
        if cells:
            moved.append((ref.log_row, [c.column for c in cells]))
    ptable = parked_table(table)
    copies = [RowMutation(ptable, row, tuple(muts)) for row, muts in by_row.items()]
    removals = deletes(ntable, moved)
    if copies:
        results = store.mutate_rows(copies + removals, sync=True)
        removed(store, removals, results[len(copies):], gone)
    return sum(len(rows) for _, rows in moved)


def parked(store: TabletStore, table: bytes, limit: int = 0,
           only: set[tuple[bytes, bytes]] | None = None) -> list[ParkedCell]:
    """Parked cells, by row then column (at most ``limit`` rows; 0 = all)."""
    out: list[ParkedCell] = []
    for row in store.scan(ScanRequest(parked_table(table), limit=limit)):
        notes: dict[bytes, list[tuple[int, bytes]]] = {}
        infos: dict[bytes, bytes] = {}
        for cell in row.cells:
            kind, column = cell.column[:1], cell.column[1:]
            if kind == PARKED_NOTE:
                notes.setdefault(column, []).append((cell.ts, cell.value))
            elif kind == PARKED_INFO:
                infos[column] = cell.value
        for column in sorted(notes):
            if only is None or (row.row, column) in only:
                out.append(ParkedCell(row.row, column, tuple(notes[column]),
                                      infos.get(column, b"")))
    return out


def replay_rows(table: bytes, cells: Sequence[ParkedCell], prefixes: Mapping[bytes, bytes],
                position: int) -> list[RowMutation]:
    """The log rows putting ``cells`` back at ``position`` (per cell, the entry with the
    newest change: the ack covers the older ones once it runs), and the deletes of the
    parked cells; one atomic write."""
    ntable = layout.notify_table(table)
    rows: dict[bytes, list[Mutation]] = {}
    deletes: list[RowMutation] = []
    for cell in cells:
        value = max((v for _, v in cell.entries), key=_change_ts)
        if len(cell.column) <= log.MAX_COLUMN:
            lrow = log.log_key(cell.column, log.bucket_of(cell.row, prefixes.get(
                cell.column, b"")), position)
            rows.setdefault(lrow, []).append(Put(cell.row, 0, value))
        deletes.append(RowMutation(parked_table(table), cell.row, (
            *(DeleteVersion(PARKED_NOTE + cell.column, ts) for ts, _ in cell.entries),
            DeleteVersion(PARKED_INFO + cell.column, 0))))
    return [RowMutation(ntable, lrow, tuple(muts)) for lrow, muts in rows.items()] + deletes


def _change_ts(raw: bytes) -> int:
    try:
        return log.decode_entry(raw)[1]
    except ValueError:
        return -1
