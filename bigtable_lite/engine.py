"""Engine: cells on LevelDB, with row-atomic check-and-mutate.

One LevelDB per data directory holds every tablet's cells (key layout in
``bigtable_lite.encoding``).  Atomicity of a row comes from two things: every
check-and-mutate of a row holds that row's stripe lock from its condition checks to
the end of its write, and the row's mutations go to LevelDB in one WriteBatch (one
``put`` when they are a single Put: same atomicity, measured ~1 us cheaper).
Different rows take different stripes, and plyvel releases the GIL inside LevelDB,
so they proceed in parallel.

Durability: LevelDB appends each WriteBatch to its log with write(2) before the
call returns, so an acknowledged mutation survives ``kill -9`` of the process in
every mode.  ``sync="always"`` also fsyncs the log before acknowledging (surviving
power loss); LevelDB's writer queue lets concurrent writers share one fsync, so
under concurrency this is fsync per *group* of writes.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import IO, Literal

import plyvel

from .encoding import (
    MAX_TS,
    after_row,
    after_table,
    after_versions,
    encode_ts,
    escape,
    escape_prefix,
    meta_key,
    table_prefix,
    unescape_at,
)
from .errors import DataCorruption, ReplyTooLarge, StoreClosed, StoreLocked
from .model import (
    APPLIED,
    NOT_ATTEMPTED,
    Cell,
    Condition,
    DeleteRange,
    DeleteVersion,
    MutationResult,
    NoValuePrefixAt,
    NoVersionIn,
    Put,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    ValuePrefixAt,
    VersionAt,
)

SyncMode = Literal["none", "always"]
SYNC_MODES: tuple[str, ...] = ("none", "always")

_STRIPES = 4096  # row lock stripes; a power of two
_STRIPE_MASK = _STRIPES - 1
_MAX_CACHED_TABLES = 1024  # table key prefixes kept; bounded against clients inventing tables
_MAX_CACHED_COLUMNS = 1 << 16  # escaped column names kept, bounded likewise
_TS = struct.Struct(">Q")
_SCAN_CHUNK_ROWS = 256
# The memtable: while the hot data fits, a lookup of a key that does not exist (a lock
# slot, a rollback marker) stops there instead of searching level-0 files.  16 -> 64 MiB
# measured (docs/storage.md): check-and-mutate 25-26% -> 30% of raw put, embedded
# transfers ~4% faster, citation load ~9% faster; the price is memory (up to twice this
# per store while a full memtable is flushed) and a longer log replay after a crash.
WRITE_BUFFER_BYTES = 64 << 20
LEVELDB_DIR = "leveldb"
OWNER_FILE = "OWNER"


class Engine:
    """A LevelDB database of cells, owned exclusively by this object while open."""

    def __init__(self, path: str | os.PathLike[str], *, sync: SyncMode = "none",
                 cache_bytes: int = 64 << 20) -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, not {sync!r}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._owner = _take_ownership(self.path)
        try:
            self._db = plyvel.DB(
                str(self.path / LEVELDB_DIR),
                create_if_missing=True,
                paranoid_checks=True,
                lru_cache_size=cache_bytes,
                write_buffer_size=WRITE_BUFFER_BYTES,
            )
        except plyvel.CorruptionError as exc:
            self._owner.close()
            raise DataCorruption(f"LevelDB in {self.path} is corrupt: {exc}") from exc
        except BaseException:
            self._owner.close()
            raise
        self.sync = sync
        self._sync = sync == "always"
        self._row_locks = [threading.Lock() for _ in range(_STRIPES)]
        self._table_prefixes: dict[bytes, bytes] = {}
        # Escaped column names: every key a mutation or condition touches needs one, and
        # a store sees few distinct columns (a dict lookup is ~3x cheaper than escape()).
        self._columns: dict[bytes, bytes] = {}
        # In-flight operations, one deque entry each; close() waits for them so LevelDB is
        # never closed under a call.  deque.append/pop are atomic under the GIL, which makes
        # entering and leaving ~10x cheaper than a Condition; the Condition is only used
        # once closing has begun.
        self._inflight: deque[None] = deque()
        self._state = threading.Condition()
        self._closed = False
        self._closing = threading.Lock()  # held by close() while it closes the database

    # --- lifecycle ----------------------------------------------------------------------

    def _enter(self) -> None:
        # Append before reading _closed, and close() sets _closed before reading the
        # deque: so either close() sees this call, or this call sees close().
        self._inflight.append(None)
        if self._closed:
            self._exit()
            raise StoreClosed(f"store at {self.path} is closed")

    def _exit(self) -> None:
        self._inflight.pop()
        if self._closed:
            with self._state:
                self._state.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Wait (bounded) for in-flight calls, then close LevelDB cleanly and release the
        directory."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            self._state.wait_for(lambda: not self._inflight, timeout=timeout)
        with self._closing:
            self._db.close()
        self._owner.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- reads ----------------------------------------------------------------------------

    def read_rows(self, reads: Sequence[RowRead], *, max_bytes: int | None = None,
                  snapshot: plyvel.Snapshot | None = None) -> list[list[Cell]]:
        """Read rows from one consistent snapshot (``snapshot``: that one; see
        :meth:`read_rows_chunks`).

        A read of exact columns at one timestamp is a point lookup per column; other
        reads share one iterator.  Why: a seek steps over every deleted version after
        its target until a compaction drops them (a cell whose versions are written and
        deleted over and over collects thousands), a lookup does not.  Lookups and the
        iterator read from one explicit snapshot; without lookups the iterator alone is one.

        ``max_bytes``: raise :class:`ReplyTooLarge` as soon as the rows gathered exceed
        this many bytes (counted as :func:`cells_bytes` does), checked after each read,
        so a request for many large cells never holds more than the budget plus one row.
        """
        self._enter()
        try:
            pinned, snapshot = snapshot, None
            for r in reads if pinned is None else ():
                if r.columns and r.time_range.min_ts == r.time_range.max_ts:
                    snapshot = self._db.snapshot()
                    break
            source = pinned if pinned is not None else self._db if snapshot is None else snapshot
            budget = -1 if max_bytes is None else max_bytes
            it = None
            try:
                out: list[list[Cell]] = []
                table = row = rpfx = b""
                escaped_columns = self._columns
                for r in reads:
                    if budget >= 0 and out:
                        budget = _spend(budget, out[-1], max_bytes)
                    if r.row is not row or r.table is not table:  # reads of one row follow
                        table, row = r.table, r.row               # each other (e.g. a lock
                        rpfx = self._row_prefix(table, row)       # slot, then the writes)
                    tr = r.time_range
                    columns = r.columns
                    if len(columns) == 1:  # the transaction layer's reads, inline
                        column = columns[0]
                        escaped = escaped_columns.get(column) or self._column(column)
                        if tr.min_ts == tr.max_ts:
                            value = source.get(rpfx + escaped + _TS.pack(MAX_TS - tr.min_ts))
                            out.append([] if value is None else [Cell(column, tr.min_ts, value)])
                            continue
                        wanted = [(column, escaped)]
                    elif columns:
                        wanted = self._wanted(columns)
                        if tr.min_ts == tr.max_ts:
                            out.append(_get_versions(source, rpfx, wanted, tr.min_ts))
                            continue
                    else:
                        wanted = []
                    if it is None:
                        it = source.raw_iterator()
                    out.append(_read_row(it, rpfx, wanted, r.column_prefixes,
                                         tr.min_ts, tr.max_ts, r.max_versions))
                if budget >= 0 and out:
                    _spend(budget, out[-1], max_bytes)
                return out
            finally:
                if it is not None:
                    it.close()
                if snapshot is not None:
                    snapshot.close()
        finally:
            self._exit()

    def read_rows_chunks(self, reads: Sequence[RowRead], chunk_bytes: int
                         ) -> Generator[list[list[Cell]], None, None]:
        """:meth:`read_rows` from one snapshot, the results in pieces of about
        ``chunk_bytes`` (a single larger row goes alone), each gathered when asked for:
        a stream of a large result holds one piece at a time, never the whole."""
        self._enter()
        try:
            snapshot = self._db.snapshot()
        finally:
            self._exit()
        try:
            chunk: list[list[Cell]] = []
            size = 0
            for r in reads:
                try:
                    cells = self.read_rows((r,), snapshot=snapshot)[0]
                except RuntimeError as exc:  # plyvel: database closed under the snapshot
                    raise StoreClosed(str(exc)) from exc
                n = cells_bytes(cells)
                if chunk and size + n > chunk_bytes:
                    yield chunk
                    chunk, size = [], 0
                chunk.append(cells)
                size += n
            if chunk:
                yield chunk
        finally:
            self._release(snapshot)

    def _release(self, snapshot: plyvel.Snapshot) -> None:
        """Release a snapshot of a long read.

        Never while close() tears the database down: releasing a snapshot then crashed
        the process (segfault).  While the store is open, release it as an in-flight
        operation (close() waits for those); once closing has begun, after the database
        is closed (which released it: close() is then a no-op).
        """
        try:
            self._enter()
        except StoreClosed:
            with self._closing:
                snapshot.close()
        else:
            try:
                snapshot.close()
            finally:
                self._exit()

    def _wanted(self, columns: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """(column, escaped column) of each distinct column, ascending: what a read selects."""
        cache = self._columns
        if len(columns) == 1:
            column = columns[0]
            return [(column, cache.get(column) or self._column(column))]
        return [(c, cache.get(c) or self._column(c)) for c in sorted(set(columns))]

    def scan(self, s: ScanRequest) -> Iterator[Row]:
        """Rows of [start_row, end_row) from one snapshot, in chunks so close() is never
        blocked long."""
        tpfx = table_prefix(s.table)
        wanted = self._wanted(s.columns) if s.columns else []
        stop = tpfx + escape(s.end_row) if s.end_row is not None else after_table(tpfx)
        position = tpfx + escape(s.start_row) if s.start_row is not None else tpfx
        remaining = s.limit if s.limit else -1
        self._enter()
        try:
            snapshot = self._db.snapshot()
        finally:
            self._exit()
        try:
            while remaining != 0:
                chunk: list[Row] = []
                self._enter()
                try:
                    it = snapshot.raw_iterator()
                    try:
                        position = _scan_chunk(it, s, wanted, tpfx, position, stop, remaining,
                                               chunk)
                    finally:
                        it.close()
                except RuntimeError as exc:  # plyvel: database closed under the snapshot
                    raise StoreClosed(str(exc)) from exc
                finally:
                    self._exit()
                yield from chunk
                if remaining > 0:
                    remaining -= len(chunk)
                if not position:
                    return
        finally:
            self._release(snapshot)

    # --- check-and-mutate -----------------------------------------------------------------

    def _row_prefix(self, table: bytes, row: bytes) -> bytes:
        tpfx = self._table_prefixes.get(table)
        if tpfx is None:
            tpfx = table_prefix(table)
            if len(self._table_prefixes) < _MAX_CACHED_TABLES:
                self._table_prefixes[table] = tpfx
        return tpfx + escape(row)

    def _column(self, column: bytes) -> bytes:
        """escape(column), cached (callers try ``self._columns.get`` inline first)."""
        escaped = escape(column)
        if len(self._columns) < _MAX_CACHED_COLUMNS:
            self._columns[column] = escaped
        return escaped

    def mutate(self, mutations: Sequence[RowMutation], *, sync: bool = False
               ) -> list[MutationResult]:
        """Apply each row mutation atomically (conditions checked under the row's lock).

        Rows of one call share one WriteBatch; a row repeated in the call is applied
        after the earlier one, so its conditions see the earlier effects.
        """
        sync = sync or self._sync
        if len(mutations) == 1:
            return [self.mutate_row(mutations[0], sync=sync)]
        return self._mutate(mutations, False, sync)

    def mutate_guarded(self, mutations: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        """:meth:`mutate`, but the rows after the first apply only if the first applied.

        Why: a transaction's commit point (its primary's row, conditional on its lock) and
        the commits of its other rows in one write, never the others without it.  If the
        first row fails, the others get :data:`NOT_ATTEMPTED` and nothing is written.
        """
        sync = sync or self._sync
        if len(mutations) == 1:
            return [self.mutate_row(mutations[0], sync=sync)]
        return self._mutate(mutations, True, sync)

    def _mutate(self, mutations: Sequence[RowMutation], guarded: bool, sync: bool
                ) -> list[MutationResult]:
        locks = self._row_locks
        row_prefix = self._row_prefix
        prefixes = [row_prefix(m.table, m.row) for m in mutations]
        stripes = sorted({hash(rpfx) & _STRIPE_MASK for rpfx in prefixes})
        db = self._db
        self._enter()
        try:
            for i in stripes:  # in ascending order, so concurrent batches cannot deadlock
                locks[i].acquire()
            try:
                results: list[MutationResult] = []
                wb = db.write_batch(sync=sync)
                staged: set[bytes] = set()
                # One iterator for the range conditions of every row: created after the
                # rows' locks were taken, it sees their current state (nobody else may
                # write them), until this call writes some of them itself.
                shared: list[plyvel.RawIterator] = []
                for m, rpfx in zip(mutations, prefixes):
                    if rpfx in staged:  # make earlier effects on this row visible first
                        wb.write()
                        wb = db.write_batch(sync=sync)
                        staged.clear()
                        if shared:
                            shared.pop().close()
                    result = self._check(m.conditions, rpfx, shared) if m.conditions else None
                    if result is None:
                        muts = m.mutations
                        if len(muts) == 1 and type(muts[0]) is Put:  # the common case, inline
                            put = muts[0]
                            column = put.column
                            wb.put(rpfx + (self._columns.get(column) or self._column(column))
                                   + _TS.pack(MAX_TS - put.ts), put.value)
                            staged.add(rpfx)
                        elif muts:
                            self._stage(m, rpfx, wb)
                            staged.add(rpfx)
                        result = APPLIED
                    elif guarded and not results:  # the first row failed: nothing else
                        return [result] + [NOT_ATTEMPTED] * (len(mutations) - 1)
                    results.append(result)
                if staged:
                    wb.write()
                return results
            finally:
                if shared:
                    shared.pop().close()
                for i in stripes:
                    locks[i].release()
        finally:
            self._exit()

    def mutate_row(self, m: RowMutation, *, sync: bool = False) -> MutationResult:
        """One row: the common case of the transaction layer, kept short."""
        sync = sync or self._sync
        rpfx = self._row_prefix(m.table, m.row)
        lock = self._row_locks[hash(rpfx) & _STRIPE_MASK]  # the row's key prefix names it
        muts = m.mutations
        inflight = self._inflight
        inflight.append(None)  # _enter(), inline on this hot path
        try:
            if self._closed:
                raise StoreClosed(f"store at {self.path} is closed")
            with lock:
                if m.conditions:
                    failed = self._check(m.conditions, rpfx)
                    if failed is not None:
                        return failed
                if len(muts) == 1 and type(muts[0]) is Put:  # no WriteBatch needed
                    put = muts[0]
                    column = put.column
                    self._db.put(rpfx + (self._columns.get(column) or self._column(column))
                                 + _TS.pack(MAX_TS - put.ts), put.value, sync=sync)
                elif muts:
                    wb = self._db.write_batch(sync=sync)
                    self._stage(m, rpfx, wb)
                    wb.write()
                return APPLIED
        finally:
            inflight.pop()  # _exit(), inline
            if self._closed:
                with self._state:
                    self._state.notify_all()

    def _check(self, conditions: Sequence[Condition], rpfx: bytes,
               shared: list[plyvel.RawIterator] | None = None) -> MutationResult | None:
        """The result for the first condition that does not hold, or None if all hold.

        ``shared``: the caller's iterator for range conditions (empty: create it there),
        which the caller closes; else one of its own.
        """
        db = self._db
        columns = self._columns
        it = shared[0] if shared else None
        index = 0
        try:
            for cond in conditions:
                column = cond.column
                cpfx = rpfx + (columns.get(column) or self._column(column))
                if type(cond) is NoVersionIn:
                    ts = cond.max_ts
                    if cond.min_ts == ts:  # one version: a lookup, not a seek (see read_rows)
                        value = db.get(cpfx + _TS.pack(MAX_TS - ts))
                        if value is not None:
                            return MutationResult(False, index, Cell(column, ts, value))
                    else:
                        if it is None:
                            it = db.raw_iterator()
                            if shared is not None:
                                shared.append(it)
                        it.seek(cpfx + _TS.pack(MAX_TS - ts))
                        if it.valid():
                            key = it.key()
                            if key.startswith(cpfx):
                                ts = MAX_TS - _TS.unpack_from(key, len(cpfx))[0]
                                if ts >= cond.min_ts:
                                    found = Cell(column, ts, it.value())
                                    return MutationResult(False, index, found)
                elif type(cond) is ValuePrefixAt:
                    value = db.get(cpfx + _TS.pack(MAX_TS - cond.ts))
                    if value is None:
                        return MutationResult(False, index, None)
                    if not value.startswith(cond.value_prefix):
                        return MutationResult(False, index, Cell(column, cond.ts, value))
                elif type(cond) is NoValuePrefixAt:
                    value = db.get(cpfx + _TS.pack(MAX_TS - cond.ts))
                    if value is not None and value.startswith(cond.value_prefix):
                        return MutationResult(False, index, Cell(column, cond.ts, value))
                else:
                    assert type(cond) is VersionAt
                    value = db.get(cpfx + _TS.pack(MAX_TS - cond.ts))
                    if value is None:
                        return MutationResult(False, index, None)
                    if cond.value is not None and value != cond.value:
                        return MutationResult(False, index, Cell(column, cond.ts, value))
                index += 1
            return None
        finally:
            if it is not None and shared is None:
                it.close()

    def _stage(self, m: RowMutation, rpfx: bytes, wb: plyvel.WriteBatch) -> None:
        """Add m's mutations to wb (the caller holds the row's lock)."""
        columns = self._columns
        for mut in m.mutations:
            column = mut.column
            cpfx = rpfx + (columns.get(column) or self._column(column))
            if type(mut) is Put:
                wb.put(cpfx + _TS.pack(MAX_TS - mut.ts), mut.value)
            elif type(mut) is DeleteVersion:
                wb.delete(cpfx + _TS.pack(MAX_TS - mut.ts))
            else:
                assert type(mut) is DeleteRange
                last = cpfx + encode_ts(mut.min_ts)
                it = self._db.raw_iterator()
                try:
                    it.seek(cpfx + encode_ts(mut.max_ts))
                    while it.valid():
                        key = it.key()
                        if key > last or not key.startswith(cpfx):
                            break
                        wb.delete(key)
                        it.next()
                finally:
                    it.close()

    # --- metadata and sizes ---------------------------------------------------------------

    def get_meta(self, name: bytes) -> bytes | None:
        self._enter()
        try:
            value: bytes | None = self._db.get(meta_key(name))
            return value
        finally:
            self._exit()

    def put_meta(self, name: bytes, value: bytes, *, sync: bool = True) -> None:
        self._enter()
        try:
            self._db.put(meta_key(name), value, sync=sync)
        finally:
            self._exit()

    def meta_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        self._enter()
        try:
            start = meta_key(prefix)
            return [(k[len(start) - len(prefix):], v)
                    for k, v in self._db.iterator(prefix=start)]
        finally:
            self._exit()

    def approximate_size(self, start: bytes, stop: bytes) -> int:
        self._enter()
        try:
            size: int = self._db.approximate_size(start, stop)
            return size
        finally:
            self._exit()

    def compact_range(self, start: bytes | None, stop: bytes | None) -> None:
        """LevelDB's CompactRange over [start, stop) (see compact_table for why that is not
        enough)."""
        self._enter()
        try:
            self._db.compact_range(start=start, stop=stop)
        finally:
            self._exit()

    def compact_table(self, table: bytes) -> None:
        """Rewrite a table's files so its deleted entries are really dropped.

        After heavy churn (e.g. millions of notifications written and deleted), scans
        step over tombstones until a compaction drops them.  LevelDB's CompactRange
        alone does not: it never rewrites the deepest level holding the range, and a
        memtable flush keeps puts and their deletes side by side.  So: compact once to
        flush the memtable, then put two sentinel keys just outside the table's key
        range on both sides and compact again -- the file they land in spans the whole
        range above the deepest level, which drags every file of the range into the
        compaction -- then delete them.  The sentinels are no cell keys of any table
        (``table_prefix[:-1]`` sorts just before the table, ``after_table`` just after),
        so no read ever sees them.
        """
        tpfx = table_prefix(table)
        low, high = tpfx[:-1], after_table(tpfx)
        self.compact_range(tpfx, high)
        self._enter()
        try:
            self._db.put(low, b"")
            self._db.put(high, b"")
        finally:
            self._exit()
        try:
            self.compact_range(low, high + b"\x00")
        finally:
            self._enter()
            try:
                self._db.delete(low)
                self._db.delete(high)
            finally:
                self._exit()


def _take_ownership(path: Path) -> IO[str]:
    """Hold an exclusive flock on DIR/OWNER so a second store on DIR fails cleanly."""
    owner = open(path / OWNER_FILE, "a+")  # noqa: SIM115 - held open: the flock lives with it
    try:
        fcntl.flock(owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner.seek(0)
        holder = owner.read().strip() or "unknown"
        owner.close()
        raise StoreLocked(
            f"data directory {path} is already in use (owner pid {holder});"
            " stop that process or choose another --data-dir"
        ) from None
    owner.seek(0)
    owner.truncate()
    owner.write(str(os.getpid()))
    owner.flush()
    return owner


CELL_OVERHEAD = 16
"""Bytes counted per cell beside its column and value (its ts and field tags, roughly)."""


def cells_bytes(cells: Sequence[Cell]) -> int:
    """The size of cells as budgets count it: columns, values and a little per cell."""
    return sum([len(c.column) + len(c.value) + CELL_OVERHEAD for c in cells])


def _spend(budget: int, cells: Sequence[Cell], max_bytes: int | None) -> int:
    """The budget left after ``cells``; ReplyTooLarge if they overdraw it."""
    budget -= cells_bytes(cells)
    if budget < 0:
        raise ReplyTooLarge(f"the reply would exceed the server's budget of {max_bytes}"
                            " bytes for one message; read fewer rows at once or stream them")
    return budget


def _normalise_prefixes(prefixes: Sequence[bytes]) -> list[bytes]:
    """Sorted prefixes with those covered by a shorter one removed."""
    kept: list[bytes] = []
    for p in sorted(set(prefixes)):
        if not kept or not p.startswith(kept[-1]):
            kept.append(p)
    return kept


def _get_versions(source: plyvel.DB | plyvel.Snapshot, rpfx: bytes,
                  wanted: list[tuple[bytes, bytes]], ts: int) -> list[Cell]:
    """The version at ``ts`` of each wanted (column, escaped column) that has one."""
    cells: list[Cell] = []
    its = _TS.pack(MAX_TS - ts)
    for column, escaped in wanted:
        value = source.get(rpfx + escaped + its)
        if value is not None:
            cells.append(Cell(column, ts, value))
    return cells


def _collect_versions(it: plyvel.RawIterator, cpfx: bytes, column: bytes, max_ts: int,
                      min_ts: int, max_versions: int, cells: list[Cell]) -> None:
    """Append the versions of one cell within [min_ts, max_ts], newest first."""
    it.seek(cpfx + _TS.pack(MAX_TS - max_ts))
    n = 0
    width = len(cpfx)
    while it.valid():
        key = it.key()
        if not key.startswith(cpfx):
            return
        ts = MAX_TS - _TS.unpack_from(key, width)[0]
        if ts < min_ts:
            return
        cells.append(Cell(column, ts, it.value()))
        n += 1
        if n == max_versions:
            return
        it.next()


def _read_row(it: plyvel.RawIterator, rpfx: bytes, wanted: list[tuple[bytes, bytes]],
              prefixes: Sequence[bytes], min_ts: int, max_ts: int, max_versions: int) -> list[Cell]:
    """The cells of one row: the wanted (column, escaped column)s, else those under prefixes."""
    cells: list[Cell] = []
    if wanted:
        if max_versions == 1:  # the newest version at or below max_ts: one seek each, inline
            # Columns ascend, so seek targets do: where the previous seek landed at or past
            # this target, no key lies in between and this seek would land there too (a
            # transaction's read of a cell's lock and write columns: usually one seek).
            seek_ts = _TS.pack(MAX_TS - max_ts)
            key: bytes | None = None  # where the last seek landed (b"": past the end)
            for column, escaped in wanted:
                cpfx = rpfx + escaped
                target = cpfx + seek_ts
                if key is None or (key and key < target):
                    it.seek(target)
                    key = it.key() if it.valid() else b""
                if key.startswith(cpfx):
                    ts = MAX_TS - _TS.unpack_from(key, len(cpfx))[0]
                    if ts >= min_ts:
                        cells.append(Cell(column, ts, it.value()))
            return cells
        for column, escaped in wanted:
            _collect_versions(it, rpfx + escaped, column, max_ts, min_ts, max_versions, cells)
        return cells
    width = len(rpfx)
    for p in _normalise_prefixes(prefixes) if prefixes else [b""]:
        start = rpfx + escape_prefix(p)
        it.seek(start)
        while it.valid():
            key = it.key()
            if not key.startswith(start):
                break
            try:
                column, end = unescape_at(key, width)
            except ValueError as exc:
                raise DataCorruption(f"undecodable key {key!r}") from exc
            cpfx = key[:end]
            _collect_versions(it, cpfx, column, max_ts, min_ts, max_versions, cells)
            it.seek(after_versions(cpfx))
    return cells


def _scan_chunk(it: plyvel.RawIterator, s: ScanRequest, wanted: list[tuple[bytes, bytes]],
                tpfx: bytes, position: bytes, stop: bytes, remaining: int, chunk: list[Row]
                ) -> bytes:
    """Read up to a chunk of non-empty rows starting at ``position``; return where to resume
    (b"" = done)."""
    width = len(tpfx)
    tr = s.time_range
    it.seek(position)
    while len(chunk) < _SCAN_CHUNK_ROWS and len(chunk) != remaining:
        if not it.valid():
            return b""
        key = it.key()
        if key >= stop:
            return b""
        try:
            row, end = unescape_at(key, width)
        except ValueError as exc:
            raise DataCorruption(f"undecodable key {key!r}") from exc
        rpfx = key[:end]
        cells = _read_row(it, rpfx, wanted, s.column_prefixes, tr.min_ts, tr.max_ts,
                          s.max_versions)
        if cells:
            chunk.append(Row(row, tuple(cells)))
        position = after_row(rpfx)
        it.seek(position)
    return position
