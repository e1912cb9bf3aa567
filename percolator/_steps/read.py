"""Read: snapshot reads at start_ts (Percolator 2.2, "Get"), and scans in chunks.

For each row, one store call fetches the cells' lock slots (point lookups at
``layout.LOCK_SLOT_TS``) and their newest write records at or below start_ts, from one
snapshot.  A lock of a transaction that started at or below start_ts means its writer
may be committing below our snapshot: ``resolve_lock`` settles it if its transaction is
decided (or its lock expired on this step's clock) and the cell is read again; a live
owner's cells are returned as locked, for the caller to wait on.  A lock of a later
transaction is ignored: it commits above our snapshot, and it could only take the slot
once every earlier lock of the cell was settled.  Otherwise the write record gives the
value: inlined in the record, or in the data column at the writer's start_ts.

A fresh read (no start_ts given) takes its timestamp here, then reads: one hop, not
two, where the oracle and the store are together (Percolator's argument for start_ts
holds unchanged: a writer whose commit_ts is below it had its locks in place first).
Before reading, a read waits for one-phase commits in progress on its rows
(``one_phase.CommitLatches``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bigtable_lite import Cell, DataCorruption, RowRead, TimeRange
from bigtable_lite import ScanRequest as StoreScan

from .. import layout, records
from .._backend import Key, ReadResult, ScanChunk, ScanRequest
from ..layout import LOCK, LOCK_SLOT_TS, WRITE
from .resolve_lock import FoundLock, resolve_locks

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["read", "scan"]

_SLOT = TimeRange(LOCK_SLOT_TS, LOCK_SLOT_TS)


def read(ctx: StepContext, table: bytes, start_ts: int | None, keys: Sequence[Key], *,
         budget: int | None = None) -> ReadResult:
    """Values of ``keys`` at ``start_ts`` (a fresh timestamp if None).

    ``budget``: stop fetching values kept outside their write records once they add up
    to this many bytes (a node's reply: ``keys`` may name 10,000 cells of 4 MiB).  They
    are fetched in request order, at least one, so the keys then missing from ``values``
    come after the first one not locked: the caller reads them again.
    """
    if start_ts is None:
        start_ts = ctx.oracle.get_timestamp()
    keys = list(dict.fromkeys(keys)) if len(keys) > 1 else keys
    ctx.latches.wait_rows(table, [row for row, _ in keys], start_ts)
    values: dict[Key, bytes | None] = {}
    locks = _read_into(ctx, table, start_ts, keys, values, budget)
    alive: list[FoundLock] = []
    if locks:
        alive = resolve_locks(ctx, table, locks)
        settled = {(f.row, f.column) for f in locks} - {(f.row, f.column) for f in alive}
        again = [key for key in keys if key in settled]  # in request order (``budget``)
        if again:  # settled just now: read once more (a new lock is reported as it is)
            alive += _read_into(ctx, table, start_ts, again, values, budget)
    return ReadResult(start_ts, values, [f.locked_cell() for f in alive])


def _read_into(ctx: StepContext, table: bytes, start_ts: int, keys: Sequence[Key],
               values: dict[Key, bytes | None], budget: int | None) -> list[FoundLock]:
    """Values of the unlocked cells into ``values``; the locks met (start_ts at or below)."""
    by_row: dict[bytes, list[bytes]] = {}
    for row, column in keys:
        cols = by_row.get(row)
        if cols is None:
            by_row[row] = [column]
        else:
            cols.append(column)
    time_range = TimeRange(0, start_ts)
    reads = []
    for row, cols in by_row.items():
        # Per row two reads: the lock slots (point lookups: an erased lock leaves a
        # tombstone a seek would walk), then the newest write records in time_range.
        if len(cols) == 1:
            col = cols[0]
            reads.append(RowRead(table, row, (LOCK + col,), (), _SLOT, 1))
            reads.append(RowRead(table, row, (WRITE + col,), (), time_range, 1))
        else:
            reads.append(RowRead(table, row, tuple([LOCK + c for c in cols]), (), _SLOT, 1))
            reads.append(RowRead(table, row, tuple([WRITE + c for c in cols]), (),
                                 time_range, 1))
    rows = _read_rows(ctx, reads)
    locks: list[FoundLock] = []
    fetch: dict[Key, records.Write] = {}
    decode_write = records.decode_write
    i = 0
    for row, cols in by_row.items():
        slots, write_cells = rows[i], rows[i + 1]
        i += 2
        locked: set[bytes] = set()
        for cell in slots:
            try:
                lock = records.decode_lock(cell.value)
            except DataCorruption as exc:
                raise _damaged(table, row, cell, exc) from exc
            if lock.start_ts <= start_ts:
                locks.append(FoundLock(row, cell.column[1:], lock))
                locked.add(cell.column[1:])
        raw = {cell.column[1:]: cell.value for cell in write_cells}
        for col in cols:
            if col in locked:
                continue
            record = raw.get(col)
            if record is None:
                values[(row, col)] = None
                continue
            try:
                write = decode_write(record)
            except DataCorruption as exc:
                cell = next(c for c in write_cells if c.column[1:] == col)
                raise _damaged(table, row, cell, exc) from exc
            if write.kind == records.DELETE:
                values[(row, col)] = None
            elif write.value is not None:
                values[(row, col)] = write.value
            else:
                fetch[(row, col)] = write  # in the data column at the writer's start_ts
    if fetch:
        if budget is not None:  # fetched in request order, as far as the budget goes
            values.update(_values_within(ctx, table, [(k, fetch[k]) for k in keys if k in fetch],
                                         budget))
        else:
            values.update(_values(ctx, table, fetch))
    return locks


def _damaged(table: bytes, row: bytes, cell: Cell, exc: DataCorruption) -> DataCorruption:
    """``exc`` naming the cell and version whose record it is."""
    kind = "lock" if cell.column[:1] == LOCK else "write"
    return DataCorruption(f"{kind} record of cell ({row!r}, {cell.column[1:]!r}) of table"
                          f" {table!r} at ts {cell.ts}: {exc} (`percolator scan --raw` shows"
                          " it, `percolator repair` removes it)")


def _read_rows(ctx: StepContext, reads: list[RowRead]) -> list[list[Cell]]:
    """store.read_rows in calls within the store's batch limit (a row's two reads kept
    together).  Reads at one start_ts agree across calls: versions at or below it no
    longer change once its locks are settled, and locks met are reported."""
    per_call = max(2, ctx.limits.max_batch_rows - ctx.limits.max_batch_rows % 2)
    if len(reads) <= per_call:
        return ctx.store.read_rows(reads)
    rows: list[list[Cell]] = []
    for i in range(0, len(reads), per_call):
        rows += ctx.store.read_rows(reads[i:i + per_call])
    return rows


def _values(ctx: StepContext, table: bytes, found: dict[Key, records.Write]
            ) -> dict[Key, bytes | None]:
    """Values of write records; those not inlined are fetched in batched reads."""
    out: dict[Key, bytes | None] = {}
    fetch: list[tuple[Key, int]] = []
    for key, write in found.items():
        if write.kind == records.DELETE:
            out[key] = None
        elif write.value is not None:
            out[key] = write.value
        else:
            fetch.append((key, write.start_ts))
    # Each value may be as large as the value limit: few enough per call that a reply
    # always fits the message limit.
    per_call = max(1, ctx.limits.max_message_bytes // ctx.limits.max_value_bytes - 1)
    for start in range(0, len(fetch), per_call):
        chunk = fetch[start:start + per_call]
        reads = [RowRead(table, row, (layout.data_column(col),), (), TimeRange(ts, ts), 1)
                 for (row, col), ts in chunk]
        for ((key, ts), cells) in zip(chunk, ctx.store.read_rows(reads)):
            if not cells:
                raise DataCorruption(f"data of cell {key!r} written at {ts} is missing")
            out[key] = cells[0].value
    return out


def _values_within(ctx: StepContext, table: bytes, found: list[tuple[Key, records.Write]],
                   budget: int) -> dict[Key, bytes | None]:
    """:func:`_values` of a prefix of ``found``: at least one, the rest while they fit
    ``budget`` bytes; each store call asks for no more values than the budget left could
    hold at their largest, so what is gathered stays within the budget plus one value."""
    out: dict[Key, bytes | None] = {}
    largest = ctx.limits.max_value_bytes
    size = 0
    start = 0
    while start < len(found) and (size < budget or not out):
        count = max(1, min((budget - size) // largest, len(found) - start))
        chunk = _values(ctx, table, dict(found[start:start + count]))
        out.update(chunk)
        size += sum([len(v) for v in chunk.values() if v is not None])
        start += count
    return out


def scan(ctx: StepContext, request: ScanRequest) -> ScanChunk:
    """Live cells of up to ``request.limit`` rows from ``start_row``, ascending."""
    table, start_ts, start_row, end_row, columns, include_system, limit = request
    ctx.latches.wait_range(table, start_row, end_row, start_ts)
    if columns:
        stored = tuple(c for col in sorted(set(columns))
                       for c in (layout.lock_column(col), layout.write_column(col)))
        scan_request = StoreScan(table, start_row, end_row, stored, (),
                                 TimeRange(0, start_ts), 1, limit)
    else:
        scan_request = StoreScan(table, start_row, end_row, (), (LOCK, WRITE),
                                 TimeRange(0, start_ts), 1, limit)
    found: dict[Key, records.Write] = {}
    unread: list[Key] = []
    locks: list[FoundLock] = []
    rows = 0
    size = 0
    budget = ctx.limits.max_message_bytes // 4
    largest = ctx.limits.max_value_bytes
    last = b""
    more = False
    for row in ctx.store.scan(scan_request):  # lock slots are at ts 0: inside the range
        if size >= budget or unread:  # the chunk is full by bytes: the next one starts here
            more = True
            break
        rows += 1
        last = row.row
        for cell in row.cells:
            kind, column = cell.column[:1], cell.column[1:]
            if not include_system and layout.is_system(column):
                continue
            if kind == WRITE:
                try:
                    write = records.decode_write(cell.value)
                except DataCorruption as exc:
                    raise _damaged(table, row.row, cell, exc) from exc
                # A value not inlined is fetched below: counted at its largest.
                weight = len(write.value) if write.value is not None else \
                    0 if write.kind == records.DELETE else largest
                if size and size + weight > budget:  # within a row larger than a reply
                    unread.append((row.row, column))
                    continue
                found[(row.row, column)] = write
                size += weight
            else:
                try:
                    lock = records.decode_lock(cell.value)
                except DataCorruption as exc:
                    raise _damaged(table, row.row, cell, exc) from exc
                if lock.start_ts <= start_ts:
                    locks.append(FoundLock(row.row, column, lock))
    held: set[Key] = set()
    for f in locks:
        found.pop((f.row, f.column), None)
        held.add((f.row, f.column))
    values = _values(ctx, table, found)
    locked_cells = []
    unread = [key for key in unread if key not in held]
    if locks:  # settled where decided, read again within what is left; the rest reported
        keys = [(f.row, f.column) for f in locks]
        result = read(ctx, table, start_ts, keys, budget=max(budget - size, 1))
        values.update(result.values)
        locked_cells = result.locked
        still = {(c.row, c.column) for c in locked_cells}
        unread += [key for key in keys if key not in result.values and key not in still]
    cells = [(row, column, value) for (row, column), value in sorted(values.items())
             if value is not None]
    more = more or bool(limit) and rows >= limit
    return ScanChunk(cells, locked_cells, last + b"\x00" if more else None, unread)
