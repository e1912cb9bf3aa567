"""Parking: notifications whose observer keeps failing, set aside where an operator sees them.

A worker parks a cell after ``max_failures`` failed runs of its observer (or at once
when a notification record does not decode): it copies the cell's notification
versions, unchanged, to ``<table>.parked`` with a note of the last error, then
deletes exactly those versions from the notify table.  The cell no longer holds up
anything, and nothing is dropped: :func:`replay` copies the versions back into the
notify table (then deletes them from the parking table), and the usual protocol
runs.  Replaying the original records keeps exactly-once intact: if the observer ran
for a later change in the meantime, the ack covers the parked change and it is
skipped.  Both moves copy before they delete, so a crash in between leaves a
duplicate -- which the ack turns into a skip -- never a loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bigtable_lite import DeleteVersion, Mutation, Put, ScanRequest, TabletStore
from percolator import Client
from percolator.layout import notify_table

from . import layout
from .layout import ParkInfo
from .notifications import Version, delete_versions, mutate_all, row_mutations

Key = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class ParkedNotification:
    row: bytes
    column: bytes
    versions: tuple[Version, ...]   # original notification versions, newest first
    info: ParkInfo | None           # None if the note was lost to a concurrent replay


def park(store: TabletStore, table: bytes, row: bytes, column: bytes,
         versions: Sequence[Version], info: ParkInfo) -> None:
    """Move ``versions`` of (row, column) from the notify table to the parking table."""
    if not versions:
        return
    puts: list[Mutation] = [Put(layout.parked_note_column(column), ts, raw)
                            for ts, raw in versions]
    puts.append(Put(layout.parked_info_column(column), 0, layout.encode_park_info(info)))
    mutate_all(store, row_mutations(layout.parked_table(table), row, puts), sync=True)
    delete_versions(store, notify_table(table), [(row, column, [ts for ts, _ in versions])])


def list_cells(store: TabletStore, table: bytes, limit: int = 0) -> list[ParkedNotification]:
    """Parked cells, by row then column (at most ``limit`` rows; 0 = all)."""
    out: list[ParkedNotification] = []
    for row in store.scan(ScanRequest(layout.parked_table(table), limit=limit)):
        notes: dict[bytes, list[Version]] = {}
        infos: dict[bytes, ParkInfo] = {}
        for cell in row.cells:
            kind, column = cell.column[:1], cell.column[1:]
            if kind == layout.PARKED_NOTE:
                notes.setdefault(column, []).append((cell.ts, cell.value))
            elif kind == layout.PARKED_INFO:
                try:
                    infos[column] = layout.decode_park_info(cell.value)
                except ValueError:
                    infos[column] = ParkInfo(0, "undecodable park note", 0, "")
        for column in sorted(notes):
            out.append(ParkedNotification(row.row, column, tuple(notes[column]),
                                          infos.get(column)))
    return out


def replay(store: TabletStore, table: bytes, cells: Iterable[Key] | None = None) -> int:
    """Put parked notifications back into the notify table; return how many cells moved.

    ``cells`` limits the replay to those (row, column) pairs; None replays everything.
    """
    wanted = None if cells is None else set(cells)
    moved = [p for p in list_cells(store, table)
             if wanted is None or (p.row, p.column) in wanted]
    if not moved:
        return 0
    ntable = notify_table(table)
    mutate_all(store, [m for p in moved for m in row_mutations(
        ntable, p.row, [Put(p.column, ts, raw) for ts, raw in p.versions])], sync=True)
    ptable = layout.parked_table(table)
    mutate_all(store, [m for p in moved for m in row_mutations(ptable, p.row, [
        *(DeleteVersion(layout.parked_note_column(p.column), ts) for ts, _ in p.versions),
        DeleteVersion(layout.parked_info_column(p.column), 0)])])
    return len(moved)


def list_parked(client: Client, limit: int = 0) -> list[ParkedNotification]:
    """Parked notifications of ``client``'s table."""
    return list_cells(client.store, client.table, limit)


def replay_parked(client: Client, cells: Iterable[Key] | None = None) -> int:
    """Move parked notifications of ``client``'s table back to be processed; return the count."""
    return replay(client.store, client.table, cells)
