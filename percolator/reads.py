"""Snapshot reads at start_ts (Percolator 2.2, "Get").

For each cell, one store read fetches the newest lock and the newest write record at
or below start_ts.  A lock there means its writer may be committing below our
snapshot: we resolve it (roll forward/back once decided, wait with backoff while its
owner is alive) and read again.  Otherwise the write record gives the value: inlined
in the record, or in the data column at the writer's start_ts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bigtable_lite import Cell, DataCorruption, RowRead, ScanRequest, TimeRange

from . import layout, records
from .layout import LOCK, WRITE
from .context import TxnContext
from .errors import LockWaitTimeout
from .resolve import FoundLock

Key = tuple[bytes, bytes]
_SCAN_BATCH_ROWS = 128


def wait_for_locks(ctx: TxnContext, locks: list[FoundLock]) -> None:
    """Resolve the locks, backing off while their owners are alive; bounded by lock_wait_timeout."""
    deadline = ctx.clock.now_ms() + int(ctx.lock_wait_timeout * 1000)
    delay = 0.001
    while True:
        locks = ctx.resolver.resolve(locks)
        if not locks:
            return
        if ctx.clock.now_ms() >= deadline:
            f = locks[0]
            raise LockWaitTimeout(
                f"cell ({f.row!r}, {f.column!r}) stayed locked by transaction {f.start_ts}"
                f" for {ctx.lock_wait_timeout}s")
        ctx.clock.sleep(delay)
        delay = min(delay * 2, 0.05)


def _parse(row: bytes, cells: Sequence[Cell], locks: list[FoundLock]
           ) -> dict[bytes, records.Write]:
    """Split a row's lock and write cells: locks appended, writes returned by user column."""
    writes: dict[bytes, records.Write] = {}
    for cell in cells:
        stored = cell.column
        kind = stored[:1]
        if kind == WRITE:
            writes[stored[1:]] = records.decode_write(cell.value)
        elif kind == LOCK:
            locks.append(FoundLock(row, stored[1:], cell.ts, records.decode_lock(cell.value)))
    return writes


def _values(ctx: TxnContext, found: dict[Key, records.Write]) -> dict[Key, bytes | None]:
    """Values of write records; those not inlined are fetched in one batched read."""
    out: dict[Key, bytes | None] = {}
    fetch: list[tuple[Key, int]] = []
    for key, write in found.items():
        if write.kind == records.DELETE:
            out[key] = None
        elif write.value is not None:
            out[key] = write.value
        else:
            fetch.append((key, write.start_ts))
    if not fetch:
        return out
    # Each value may be as large as the value limit: fetch few enough per call that a
    # reply always fits the message limit.
    per_call = max(1, ctx.limits.max_message_bytes // ctx.limits.max_value_bytes - 1)
    for start in range(0, len(fetch), per_call):
        chunk = fetch[start:start + per_call]
        reads = [RowRead(ctx.table, row, (layout.data_column(col),), (), TimeRange(ts, ts), 1)
                 for (row, col), ts in chunk]
        for ((key, ts), cells) in zip(chunk, ctx.store.read_rows(reads)):
            if not cells:
                raise DataCorruption(f"data of cell {key!r} written at {ts} is missing")
            out[key] = cells[0].value
    return out


def read_cells(ctx: TxnContext, start_ts: int, keys: Sequence[Key]) -> dict[Key, bytes | None]:
    """Snapshot values of the cells (None where absent or deleted)."""
    result: dict[Key, bytes | None] = {}
    pending = list(dict.fromkeys(keys)) if len(keys) > 1 else list(keys)
    time_range = TimeRange(0, start_ts)
    table = ctx.table
    while pending:
        by_row: dict[bytes, list[bytes]] = {}
        for row, col in pending:
            cols = by_row.get(row)
            if cols is None:
                by_row[row] = [col]
            else:
                cols.append(col)
        reads = []
        for row, cols in by_row.items():
            stored: list[bytes] = []
            for col in cols:  # layout.lock_column(col), layout.write_column(col), inline
                stored += (LOCK + col, WRITE + col)
            reads.append(RowRead(table, row, tuple(stored), (), time_range, 1))
        locks: list[FoundLock] = []
        found: dict[Key, records.Write] = {}
        for (row, cols), cells in zip(by_row.items(), ctx.store.read_rows(reads)):
            if not cells:
                for col in cols:
                    result[(row, col)] = None
                continue
            writes = _parse(row, cells, locks)
            for col in cols:
                write = writes.get(col)
                if write is None:
                    result[(row, col)] = None
                else:
                    found[(row, col)] = write
        if found:
            result.update(_values(ctx, found))
        if not locks:
            return result
        wait_for_locks(ctx, locks)
        pending = [(f.row, f.column) for f in locks]
    return result


def scan(ctx: TxnContext, start_ts: int, start_row: bytes | None, end_row: bytes | None,
         columns: Sequence[bytes] | None, include_system: bool = False
         ) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(row, column, value) of every live cell in [start_row, end_row), ascending."""
    if columns:
        stored = tuple(c for col in sorted(set(columns))
                       for c in (layout.lock_column(col), layout.write_column(col)))
        request = ScanRequest(ctx.table, start_row, end_row, stored, (), TimeRange(0, start_ts), 1)
    else:
        request = ScanRequest(ctx.table, start_row, end_row, (), (layout.LOCK, layout.WRITE),
                              TimeRange(0, start_ts), 1)
    batch: list[tuple[bytes, dict[bytes, records.Write], list[FoundLock]]] = []
    for row in ctx.store.scan(request):
        locks: list[FoundLock] = []
        writes = _parse(row.row, row.cells, locks)
        batch.append((row.row, writes, locks))
        if len(batch) >= _SCAN_BATCH_ROWS:
            yield from _finish_scan_batch(ctx, start_ts, batch, include_system)
            batch = []
    if batch:
        yield from _finish_scan_batch(ctx, start_ts, batch, include_system)


def _finish_scan_batch(ctx: TxnContext, start_ts: int,
                       batch: list[tuple[bytes, dict[bytes, records.Write], list[FoundLock]]],
                       include_system: bool) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Resolve the batch's locks together (one status check per transaction), then emit rows."""
    all_locks = [f for _, _, locks in batch for f in locks]
    relocked: dict[Key, bytes | None] = {}
    if all_locks:
        relocked = read_cells(ctx, start_ts, [(f.row, f.column) for f in all_locks])
    found: dict[Key, records.Write] = {}
    for row, writes, _ in batch:
        for col, write in writes.items():
            found[(row, col)] = write
    values = _values(ctx, found)
    values.update(relocked)
    for key in sorted(values):
        value = values[key]
        if value is None or (not include_system and layout.is_system(key[1])):
            continue
        yield key[0], key[1], value
