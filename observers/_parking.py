"""Parking: notifications whose observer keeps failing, set aside where an operator sees them.

A worker parks a cell after ``max_failures`` failed runs of its observer (or at once
when an entry does not decode): the node moves the cell's entries, unchanged, with a
note of the last error, to its parking table in one atomic write
(``percolator._notify.parking``).  The cell no longer holds up anything, and nothing is
dropped: :func:`replay_parked` moves them back into the log and the usual protocol
runs.  Replaying keeps exactly-once intact: if the observer ran for a later change in
the meantime, the ack covers the parked change and it is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from percolator import Client

from ._layout import ParkInfo, decode_park_info

__all__ = ["ParkedNotification", "list_parked", "replay_parked"]

Key = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class ParkedNotification:
    row: bytes
    column: bytes
    entries: tuple[tuple[int, bytes], ...]   # (log position, entry record), unchanged
    info: ParkInfo | None                    # None if the note does not decode


def list_parked(client: Client, limit: int = 0) -> list[ParkedNotification]:
    """Parked notifications of ``client``'s table (at most ``limit`` rows; 0 = all)."""
    out = []
    for cell in client.notifications.parked(client.table, limit):
        try:
            info: ParkInfo | None = decode_park_info(cell.note)
        except ValueError:
            info = None
        out.append(ParkedNotification(cell.row, cell.column, cell.entries, info))
    return out


def replay_parked(client: Client, cells: Iterable[Key] | None = None) -> int:
    """Move parked notifications of ``client``'s table back to be processed; the count."""
    return client.notifications.replay(client.table, None if cells is None else list(cells))
