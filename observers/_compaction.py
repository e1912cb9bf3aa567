"""Compaction of the notification log, on request.

Every processed entry leaves a LevelDB tombstone that reads of the log step over until
a compaction drops it (Fluo's notification scans slowed down on delete markers).  The
node compacts a table's log by itself after every 100,000 deletes
(``percolator._notify.local``); :func:`compact_notifications` does it now, e.g. after a
bulk load, so single edits are picked up at full speed at once.
"""

from __future__ import annotations

from percolator import Client

__all__ = ["compact_notifications"]


def compact_notifications(client: Client) -> None:
    """Compact the notification log of ``client``'s table now."""
    client.notifications.compact(client.table)
