"""Snapshot reads at start_ts (Percolator 2.2, "Get").

For each row, one store call fetches the cells' lock slots (point lookups, at
``layout.LOCK_SLOT_TS``) and their newest write records at or below start_ts, from one
snapshot.  A lock of a transaction that started at or below start_ts means its writer
may be committing below our snapshot: we resolve it (roll forward/back once decided,
wait with backoff while its owner is alive) and read again.  A lock of a later
transaction is ignored: it commits above our snapshot, and it could only take the
slot once every earlier lock of the cell was settled.  Otherwise the write record
gives the value: inlined in the record, or in the data column at the writer's start_ts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bigtable_lite import ALL_TIME, Cell, DataCorruption, RowRead, ScanRequest, TimeRange

from . import layout, records
from .context import TxnContext
from .errors import LockWaitTimeout
from .layout import LOCK, LOCK_SLOT_TS, WRITE
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


def _parse(row: bytes, cells: Sequence[Cell], start_ts: int, locks: list[FoundLock],
           writes: dict[bytes, records.Write]) -> None:
    """Split a row's lock and write cells: the locks of transactions that started at or
    below start_ts appended, writes put by user column."""
    for cell in cells:
        stored = cell.column
        kind = stored[:1]
        if kind == WRITE:
            writes[stored[1:]] = records.decode_write(cell.value)
        elif kind == LOCK:
            lock = records.decode_lock(cell.value)
            if lock.start_ts <= start_ts:
                locks.append(FoundLock(row, stored[1:], lock))


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
    while pending:
        by_row = _by_row(pending)
        rows = _read_rows(ctx, _reads(ctx.table, by_row, time_range))
        locks = _take(ctx, start_ts, by_row, rows, result)
        if not locks:
            return result
        wait_for_locks(ctx, locks)
        pending = [(f.row, f.column) for f in locks]
    return result


def read_cells_fresh(ctx: TxnContext, keys: Sequence[Key]) -> tuple[int, dict[Key, bytes | None]]:
    """A new start_ts and the snapshot values of the cells at it, the first read taking the
    timestamp with it (``percolator.fresh_read``: one hop, not two, at a node).  In this
    process (no ``ctx.fresh_reads``) there is no hop to save: a timestamp, then the read."""
    if ctx.fresh_reads is None:
        start_ts = ctx.oracle.get_timestamp()
        return start_ts, read_cells(ctx, start_ts, keys)
    result: dict[Key, bytes | None] = {}
    by_row = _by_row(list(dict.fromkeys(keys)) if len(keys) > 1 else keys)
    reads = _reads(ctx.table, by_row, ALL_TIME)
    per_call = _per_call(ctx)
    start_ts, rows = ctx.fresh_reads.read_at_fresh_timestamp(reads[:per_call])
    if len(reads) > per_call:  # the rest at the timestamp the first call took
        rows += _read_rows(ctx, _at(reads[per_call:], start_ts))
    locks = _take(ctx, start_ts, by_row, rows, result)
    if locks:  # from here on, reads at the timestamp now known
        wait_for_locks(ctx, locks)
        result.update(read_cells(ctx, start_ts, [(f.row, f.column) for f in locks]))
    return start_ts, result


def _per_call(ctx: TxnContext) -> int:
    """Reads per store call: the store's batch limit, even (a row's two reads stay together)."""
    return max(2, ctx.limits.max_batch_rows - ctx.limits.max_batch_rows % 2)


def _read_rows(ctx: TxnContext, reads: list[RowRead]) -> list[list[Cell]]:
    """store.read_rows in calls within the store's batch limit.  Reads at one start_ts
    agree across calls: versions at or below it no longer change (locks are resolved)."""
    if len(reads) < ctx.limits.max_batch_rows:  # within any per_call: one call
        return ctx.store.read_rows(reads)
    per_call = _per_call(ctx)
    rows: list[list[Cell]] = []
    for i in range(0, len(reads), per_call):
        rows += ctx.store.read_rows(reads[i:i + per_call])
    return rows


def _at(reads: list[RowRead], start_ts: int) -> list[RowRead]:
    """Fresh reads (time range unset) at start_ts; lock slots stay at their one timestamp."""
    time_range = TimeRange(0, start_ts)
    return [r if r.time_range == _SLOT else
            RowRead(r.table, r.row, r.columns, r.column_prefixes, time_range, r.max_versions)
            for r in reads]


def _by_row(keys: Sequence[Key]) -> dict[bytes, list[bytes]]:
    by_row: dict[bytes, list[bytes]] = {}
    for row, col in keys:
        cols = by_row.get(row)
        if cols is None:
            by_row[row] = [col]
        else:
            cols.append(col)
    return by_row


_SLOT = TimeRange(LOCK_SLOT_TS, LOCK_SLOT_TS)


def _reads(table: bytes, by_row: dict[bytes, list[bytes]], time_range: TimeRange
           ) -> list[RowRead]:
    """Per row, two reads: the columns' lock slots (point lookups: an erased lock leaves a
    tombstone a seek would walk), then their newest write records in time_range."""
    reads = []
    locks: tuple[bytes, ...]
    writes: tuple[bytes, ...]
    for row, cols in by_row.items():
        # layout.lock_column(col), layout.write_column(col), inline
        if len(cols) == 1:
            col = cols[0]
            locks, writes = (LOCK + col,), (WRITE + col,)
        else:
            locks = tuple([LOCK + col for col in cols])
            writes = tuple([WRITE + col for col in cols])
        reads.append(RowRead(table, row, locks, (), _SLOT, 1))
        reads.append(RowRead(table, row, writes, (), time_range, 1))
    return reads


def _take(ctx: TxnContext, start_ts: int, by_row: dict[bytes, list[bytes]],
          rows: list[list[Cell]], result: dict[Key, bytes | None]) -> list[FoundLock]:
    """Values of the cells read (``rows``: two per row, as :func:`_reads`) into ``result``;
    the locks met (their cells are read again once the locks are resolved)."""
    locks: list[FoundLock] = []
    fetch: dict[Key, records.Write] = {}
    decode_write = records.decode_write
    i = 0
    for row, cols in by_row.items():
        slots, write_cells = rows[i], rows[i + 1]
        i += 2
        if slots:
            _parse(row, slots, start_ts, locks, {})
        if not write_cells:
            for col in cols:
                result[(row, col)] = None
            continue
        # The second read of a row asks for write columns only: w<column> -> record.
        raw = {cell.column[1:]: cell.value for cell in write_cells}
        for col in cols:
            record = raw.get(col)
            if record is None:
                result[(row, col)] = None
                continue
            write = decode_write(record)
            if write.kind == records.DELETE:
                result[(row, col)] = None
            elif write.value is not None:
                result[(row, col)] = write.value
            else:
                fetch[(row, col)] = write  # in the data column at the writer's start_ts
    if fetch:
        result.update(_values(ctx, fetch))
    return locks


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
    for row in ctx.store.scan(request):  # the lock slots are at ts 0: inside the time range
        locks: list[FoundLock] = []
        writes: dict[bytes, records.Write] = {}
        _parse(row.row, row.cells, start_ts, locks, writes)
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
