"""Tablets: the row space of each table split into contiguous row ranges.

A table starts as one tablet covering every row; ``split`` adds a split point.  The
split points are persisted in the engine's metadata (``tablets/<table>`` ->
length-prefixed list of rows, see ``encoding.encode_bytes_list``), so a restarted
server hosts the same tablets.  Routing a row to its tablet is a binary search.
"""

from __future__ import annotations

import bisect
import threading

from ._encoding import (
    after_table,
    decode_bytes_list,
    encode_bytes_list,
    row_prefix,
    table_prefix,
)
from ._engine import Engine
from ._model import TabletInfo
from .errors import DataCorruption, InvalidArgument

_META = b"tablets/"


class TabletMap:
    """Split points per table, persisted; the set of tablets a store hosts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._splits: dict[bytes, list[bytes]] = {}
        for name, raw in engine.meta_items(_META):
            try:
                self._splits[name[len(_META):]] = decode_bytes_list(raw)
            except (ValueError, IndexError) as exc:
                raise DataCorruption(f"tablet metadata for {name!r} is corrupt") from exc

    def note_table(self, table: bytes) -> None:
        """Record that ``table`` exists (first write to it); cheap when already known."""
        if table in self._splits:
            return
        with self._lock:
            if table not in self._splits:
                self._engine.put_meta(_META + table, encode_bytes_list([]))
                self._splits[table] = []

    def tablet_for(self, table: bytes, row: bytes) -> TabletInfo:
        splits = self._splits.get(table, [])
        i = bisect.bisect_right(splits, row)
        start = splits[i - 1] if i > 0 else b""
        end = splits[i] if i < len(splits) else None
        return TabletInfo(table, start, end)

    def split(self, table: bytes, row: bytes) -> list[TabletInfo]:
        """Split the tablet containing ``row`` at ``row``; return the two tablets."""
        if not row:
            raise InvalidArgument("split row must not be empty")
        with self._lock:
            splits = list(self._splits.get(table, []))
            if row in splits:
                raise InvalidArgument(f"{row!r} is already a split point of table {table!r}")
            bisect.insort(splits, row)
            self._engine.put_meta(_META + table, encode_bytes_list(splits))
            self._splits[table] = splits
        i = splits.index(row)
        start = splits[i - 1] if i > 0 else b""
        end = splits[i + 1] if i + 1 < len(splits) else None
        return [TabletInfo(table, start, row), TabletInfo(table, row, end)]

    def list(self, table: bytes | None = None) -> list[TabletInfo]:
        tables = [table] if table is not None else sorted(self._splits)
        out: list[TabletInfo] = []
        for t in tables:
            bounds = [b""] + self._splits.get(t, [])
            tpfx = table_prefix(t)
            for i, start in enumerate(bounds):
                end = bounds[i + 1] if i + 1 < len(bounds) else None
                lo = row_prefix(tpfx, start) if start else tpfx
                hi = row_prefix(tpfx, end) if end is not None else after_table(tpfx)
                out.append(TabletInfo(t, start, end, self._engine.approximate_size(lo, hi)))
        return out
