"""Inspection: every stored record of a Percolator table's cells, decoded, for tools.

What ``percolator scan --raw``, ``percolator locks`` and ``percolator repair`` show
(like ``fluo scan --raw``, ``tikv-ctl mvcc`` and ``pg_locks``): the store's versions of
a cell's columns (``layout``: lock slot, write records, data, rollback markers) and its
notifications, each decoded by ``records`` -- and a record that does not decode shown
as such, with its bytes and why, instead of failing the whole listing.  Reads go
through the raw tablet store (``Client.store``: in-process, or a node's tablet service
and raw commands), never through the transaction protocol, which refuses such a
record (``DataCorruption``) and so can never show it.

Locks are listed with their owner's status as its primary records it, read without
side effects (:func:`~percolator._steps.check_txn_status.read_primary`); resolving them
is the protocol's own step (``Backend.resolve``: roll forward, or back once expired),
never a raw delete.  The one raw delete is :func:`repair_mutations`: exactly the
versions of one cell that do not decode, each only while it still holds the bytes
shown (``VersionAt`` with the value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from bigtable_lite import (
    Cell,
    DataCorruption,
    DeleteVersion,
    InvalidArgument,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    TabletStore,
    TimeRange,
    VersionAt,
)

from . import layout, records
from ._backend import COMMITTED, ROLLED_BACK
from ._notify import log
from ._steps.check_txn_status import read_primary
from .layout import DATA, LOCK, LOCK_SLOT_TS, ROLLBACK, WRITE, notify_table
from .records import Lock, Write

__all__ = ["KINDS", "LockInfo", "Notification", "Record", "cell_records", "decode_cell",
           "decode_entry", "list_locks", "raw_rows", "repair_mutations"]

LOCK_KIND = "lock"
WRITE_KIND = "write"
DATA_KIND = "data"
ROLLBACK_KIND = "rollback"
NOTIFY_KIND = "notify"
UNKNOWN_KIND = "unknown"
KINDS = {LOCK: LOCK_KIND, WRITE: WRITE_KIND, DATA: DATA_KIND, ROLLBACK: ROLLBACK_KIND}
_ORDER = {LOCK_KIND: 0, WRITE_KIND: 1, DATA_KIND: 2, ROLLBACK_KIND: 3, NOTIFY_KIND: 4,
          UNKNOWN_KIND: 5}


@dataclass(frozen=True, slots=True)
class Notification:
    """An entry of the notification log (``percolator._notify.log``): its kind, and its
    position in the log (the commit that wrote it)."""

    weak: bool       # Transaction.notify: no write
    backfill: bool   # queued for a cell committed before its column was observed
    position: int


@dataclass(frozen=True, slots=True)
class Record:
    """One stored version of a cell's columns, decoded where it decodes.

    ``ts`` is the store version: a write record's commit_ts, a data version's or a
    rollback marker's start_ts, the lock slot's 0; a notification's commit_ts (the change
    it announces; stored at version 0 of its log row ``store_row``, in the store column
    named by the data row).  ``error`` says why ``raw`` does not decode (None: it does).
    """

    table: bytes          # where it is stored (the notify table for notifications)
    row: bytes
    column: bytes         # the user column (system columns keep their 0x00)
    kind: str             # lock, write, data, rollback, notify, unknown
    ts: int
    store_column: bytes   # as stored, with the kind byte
    raw: bytes
    lock: Lock | None = None
    write: Write | None = None
    notification: Notification | None = None
    error: str | None = None
    store_row: bytes = b""  # a notification's log row ("": ``row``)

    @property
    def undecodable(self) -> bool:
        return self.error is not None


def decode_entry(table: bytes, log_row: bytes, cell: Cell) -> Record:
    """The notification stored in ``cell`` of log row ``log_row`` of ``table``'s log."""
    ntable = notify_table(table)
    try:
        column, _, position = log.decode_key(log_row)
        kind, change_ts = log.decode_entry(cell.value)
    except ValueError as exc:
        return Record(ntable, cell.column, log_row, NOTIFY_KIND, cell.ts, cell.column,
                      cell.value, error=str(exc), store_row=log_row)
    return Record(ntable, cell.column, column, NOTIFY_KIND, change_ts, cell.column, cell.value,
                  notification=Notification(kind == log.WEAK, kind == log.BACKFILL, position),
                  store_row=log_row)


def decode_cell(table: bytes, row: bytes, cell: Cell) -> Record:
    """The record stored in ``cell`` of ``table``'s ``row``."""
    kind = KINDS.get(cell.column[:1])
    if kind is None:
        return Record(table, row, cell.column, UNKNOWN_KIND, cell.ts, cell.column, cell.value,
                      error=f"not a column of a Percolator table (kind byte"
                      f" {cell.column[:1]!r})")
    column = cell.column[1:]
    base = (table, row, column, kind, cell.ts, cell.column, cell.value)
    try:
        if kind == LOCK_KIND:
            return Record(*base, lock=records.decode_lock(cell.value))
        if kind == WRITE_KIND:
            return Record(*base, write=records.decode_write(cell.value))
    except DataCorruption as exc:
        return Record(*base, error=str(exc))
    return Record(*base)


def _decoded_row(table: bytes, row: Row | None, notes: Sequence[Record]) -> list[Record]:
    out: list[Record] = list(notes)
    if row is not None:
        out += [decode_cell(table, row.row, cell) for cell in row.cells]
    out.sort(key=lambda r: (r.column, _ORDER[r.kind], -r.ts))
    return out


def _stored_columns(columns: Sequence[bytes] | None) -> tuple[bytes, ...]:
    if not columns:
        return ()
    return tuple(sorted(kind + column for column in set(columns) for kind in KINDS))


def _notifications(store: TabletStore, table: bytes, columns: Sequence[bytes] | None,
                   keep: Callable[[bytes], bool]) -> dict[bytes, list[Record]]:
    """The notification log's entries (of ``columns``; None: all) by data row, of the
    rows ``keep`` accepts.  The log is keyed by column and position, not by row, so this
    reads the whole log of those columns: what is pending, never what was handled."""
    ntable = notify_table(table)
    ranges = ([(log.column_prefix(c), log.column_end(c)) for c in sorted(set(columns))]
              if columns else [(None, None)])
    out: dict[bytes, list[Record]] = {}
    for start, end in ranges:
        for lrow in store.scan(ScanRequest(ntable, start, end)):
            for cell in lrow.cells:
                if keep(cell.column):
                    out.setdefault(cell.column, []).append(decode_entry(table, lrow.row, cell))
    return out


def raw_rows(store: TabletStore, table: bytes, *, start: bytes | None = None,
             end: bytes | None = None, columns: Sequence[bytes] | None = None,
             limit: int = 0) -> Iterator[tuple[bytes, list[Record]]]:
    """Every version of every record of rows [start, end) of ``table`` and their pending
    notifications, row by row ascending (``limit`` rows at most, 0: all)."""
    request = ScanRequest(table, start, end, _stored_columns(columns), limit=limit)
    notes = _notifications(store, table, columns, lambda r: (start is None or r >= start)
                           and (end is None or r < end))
    note_rows = iter(sorted(notes))
    rows = store.scan(request)
    row = next(rows, None)
    note = next(note_rows, None)
    shown = 0
    while (row is not None or note is not None) and (not limit or shown < limit):
        if note is None or row is not None and row.row < note:
            yield row.row, _decoded_row(table, row, ())  # type: ignore[union-attr]
            row = next(rows, None)
        elif row is None or note < row.row:
            yield note, _decoded_row(table, None, notes[note])
            note = next(note_rows, None)
        else:
            yield row.row, _decoded_row(table, row, notes[note])
            row = next(rows, None)
            note = next(note_rows, None)
        shown += 1


def cell_records(store: TabletStore, table: bytes, row: bytes, column: bytes) -> list[Record]:
    """Every version of every record of cell (row, column), and its pending notifications."""
    names = layout.columns_of(column)
    [main] = store.read_rows([
        RowRead(table, row, (names.lock, names.write, names.data, names.rollback))])
    notes = _notifications(store, table, [column], lambda r: r == row).get(row, [])
    return _decoded_row(table, Row(row, tuple(main)), notes)


def repair_mutations(found: Iterable[Record]) -> list[RowMutation]:
    """Delete exactly the undecodable records given, each only if it still holds the bytes
    it was read with: one conditional row mutation per table and row."""
    by_row: dict[tuple[bytes, bytes], list[Record]] = {}
    for record in found:
        if record.undecodable:
            by_row.setdefault((record.table, record.store_row or record.row),
                              []).append(record)
    return [RowMutation(table, row,
                        tuple(DeleteVersion(r.store_column, r.ts) for r in bad),
                        tuple(VersionAt(r.store_column, r.ts, r.raw) for r in bad))
            for (table, row), bad in sorted(by_row.items())]


# --- locks ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A cell's lock slot and what its owner's primary says.

    ``owner``: ``committed`` (at ``commit_ts``: the lock awaits its roll-forward),
    ``rolled_back``, ``locked`` (the primary is still locked: live, or expired and
    waiting for a reader or ``--resolve`` to roll it back), ``no trace`` (the primary
    holds nothing of it: its prewrite never reached the primary, or failed; resolving
    seals and rolls it back), or ``unknown`` (the lock or its primary does not decode:
    ``detail`` says why).
    """

    record: Record
    owner: str
    commit_ts: int = 0
    detail: str = ""

    @property
    def lock(self) -> Lock | None:
        return self.record.lock

    def ttl_left_ms(self, now_ms: int) -> int | None:
        """Milliseconds until the lock expires by the backend's clock (negative: expired
        that long ago); None if it does not decode."""
        lock = self.record.lock
        return None if lock is None else lock.expires_at_ms - now_ms


NO_TRACE = "no trace"
UNKNOWN = "unknown"
LOCKED = "locked"


def _owner(store: TabletStore, table: bytes, lock: Lock
           ) -> tuple[str, int, str]:
    try:
        status, _ = read_primary(store, table, lock.primary_row, lock.primary_column,
                                 lock.start_ts)
    except (DataCorruption, InvalidArgument) as exc:
        return UNKNOWN, 0, f"its primary cannot be read: {exc}"
    if status is None:
        return NO_TRACE, 0, ""
    if status.state == COMMITTED:
        return COMMITTED, status.commit_ts, ""
    return (ROLLED_BACK, 0, "") if status.state == ROLLED_BACK else (LOCKED, 0, "")


def list_locks(store: TabletStore, table: bytes, *, start: bytes | None = None,
               end: bytes | None = None) -> Iterator[LockInfo]:
    """Every cell's lock slot that holds a record, in row and column order, with its
    owner's status (read once per transaction)."""
    owners: dict[tuple[bytes, bytes, int], tuple[str, int, str]] = {}
    request = ScanRequest(table, start, end, (), (LOCK,),
                          TimeRange(LOCK_SLOT_TS, LOCK_SLOT_TS), 1)
    for row in store.scan(request):
        for cell in row.cells:
            record = decode_cell(table, row.row, cell)
            lock = record.lock
            if lock is None:
                yield LockInfo(record, UNKNOWN, detail=record.error or "")
                continue
            key = (lock.primary_row, lock.primary_column, lock.start_ts)
            if key not in owners:
                owners[key] = _owner(store, table, lock)
            owner, commit_ts, detail = owners[key]
            yield LockInfo(record, owner, commit_ts, detail)
