"""Notify: which committed writes leave notifications, and registering observed columns.

A notification (``records.Notification`` in ``<table>.notify``, version ts = commit_ts)
is written in the same atomic write as the write record it announces: by the commit
step, a one-phase commit, or the roll-forward of a secondary.  Each of them decides
from :class:`ObservedColumns` *after* its commit_ts was taken; registration updates
the set *before* it takes its own timestamp R.  The oracle orders the two: a write
committed at commit_ts > R took its timestamp after R was taken, so after the set
held the column, and it leaves a notification.  Writes committed below R are the
backfill's (``observers``): a transactional scan at a snapshot above R sees them all.
The proof in full is in docs/observers.md.

Registrations persist in ``<table>.config``, row ``layout.OBSERVED_ROW``: one store
column per observed column, at ts 0, value = R as uint64 big-endian (empty: registered
before R was recorded).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Sequence

from bigtable_lite import DataCorruption, DeleteVersion, Put, RowMutation, RowRead, TabletStore

from .. import layout, records
from ..oracle import TimestampSource

__all__ = ["ObservedColumns", "notifications"]

Key = tuple[bytes, bytes]
_U64 = struct.Struct(">Q")
_STRONG = records.encode_notification(records.Notification())
_WEAK = records.encode_notification(records.Notification(weak=True))


class ObservedColumns:
    """The observed columns of each table, as the commit steps read them (thread-safe)."""

    def __init__(self, store: TabletStore) -> None:
        self._store = store
        self._tables: dict[bytes, frozenset[bytes]] = {}
        self._lock = threading.Lock()  # registrations, one at a time

    def of(self, table: bytes) -> frozenset[bytes]:
        found = self._tables.get(table)
        return found if found is not None else self._load(table)

    def registered(self, table: bytes) -> dict[bytes, int]:
        """Observed column -> the timestamp it was registered at (0: not recorded)."""
        return {column: ts for column, ts in self._read(table).items()
                if column in self.of(table)}

    def _read(self, table: bytes) -> dict[bytes, int]:
        cells = self._store.read_rows([RowRead(layout.config_table(table),
                                               layout.OBSERVED_ROW, max_versions=1)])[0]
        out: dict[bytes, int] = {}
        for cell in cells:
            if cell.value and len(cell.value) != _U64.size:
                raise DataCorruption(f"registration of observed column {cell.column!r} is"
                                     f" {len(cell.value)} bytes, expected 8")
            out[cell.column] = _U64.unpack(cell.value)[0] if cell.value else 0
        return out

    def _load(self, table: bytes) -> frozenset[bytes]:
        with self._lock:
            found = self._tables.get(table)
            if found is None:
                found = self._tables[table] = frozenset(self._read(table))
            return found

    def register(self, table: bytes, columns: Sequence[bytes], oracle: TimestampSource) -> int:
        """Observe ``columns`` from now on; returns R: every commit above R notifies them."""
        self._load(table)
        with self._lock:
            current = self._tables[table]
            new = sorted(set(columns) - current)
            self._tables[table] = current | set(columns)  # before R is taken: see the module
            ts = oracle.get_timestamp()
            if new:
                self._store.mutate_rows([RowMutation(
                    layout.config_table(table), layout.OBSERVED_ROW,
                    tuple(Put(c, 0, _U64.pack(ts)) for c in new))], sync=True)
            return ts

    def unregister(self, table: bytes, columns: Sequence[bytes]) -> None:
        """Stop notifying ``columns`` (notifications already written stay)."""
        self._load(table)
        with self._lock:
            gone = sorted(set(columns) & self._tables[table])
            if gone:
                self._store.mutate_rows([RowMutation(
                    layout.config_table(table), layout.OBSERVED_ROW,
                    tuple(DeleteVersion(c, 0) for c in gone))], sync=True)
            self._tables[table] = self._tables[table] - set(columns)


def notifications(table: bytes, observed: frozenset[bytes], keys: Iterable[Key],
                  commit_ts: int, weak: Sequence[Key] = ()) -> list[RowMutation]:
    """The notifications of a change committed at ``commit_ts``: one per written cell of an
    observed column, and one (weak) per ``weak`` cell not written."""
    ntable = layout.notify_table(table)
    out = []
    written: set[Key] = set()
    if observed:
        for row, column in keys:
            if column in observed:
                written.add((row, column))
                out.append(RowMutation(ntable, row, (Put(column, commit_ts, _STRONG),)))
    for key in weak:
        if key not in written:
            out.append(RowMutation(ntable, key[0], (Put(key[1], commit_ts, _WEAK),)))
    return out
