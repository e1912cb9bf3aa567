"""Reads and scans: cells of rows at a time range, from one LevelDB snapshot.

Keys are built and taken apart by ``bigtable_lite._encoding``; versions of a cell are
adjacent and newest first, so "the newest version at or below ts" is one seek (or, at
an exact timestamp, one lookup).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence

from ._datadir import DataDir
from ._encoding import (
    KeyCache,
    after_row,
    after_table,
    after_versions,
    decode_ts_at,
    encode_ts,
    escape_prefix,
    row_prefix,
    table_prefix,
    unescape_at,
    version_key,
)
from ._leveldb import plyvel
from ._model import Cell, Row, RowRead, ScanRequest
from .errors import DataCorruption, ReplyTooLarge, StoreClosed

_SCAN_CHUNK_ROWS = 256  # rows a scan reads per visit to LevelDB: close() is never blocked long

CELL_OVERHEAD = 16
"""Bytes counted per cell beside its column and value (its ts and field tags, roughly)."""


def cells_bytes(cells: Sequence[Cell]) -> int:
    """The size of cells as budgets count it: columns, values and a little per cell."""
    return sum([len(c.column) + len(c.value) + CELL_OVERHEAD for c in cells])


def _spend(budget: int, cells: Sequence[Cell], max_bytes: int | None) -> int:
    """The budget left after ``cells``; ReplyTooLarge if they overdraw it."""
    budget -= cells_bytes(cells)
    if budget < 0:
        raise _over_budget(max_bytes)
    return budget


def _over_budget(max_bytes: int | None) -> ReplyTooLarge:
    return ReplyTooLarge(f"the reply would exceed the server's budget of {max_bytes}"
                         " bytes for one message; read fewer rows at once or stream them")


def _take(room: int, cell: Cell) -> int:
    """The room left in a row's budget (``room`` >= 0: callers skip rows without one)
    after ``cell``; ReplyTooLarge once it is overdrawn, while the row is gathered, so a
    row of any size never costs more memory than the budget."""
    room -= len(cell.column) + len(cell.value) + CELL_OVERHEAD
    if room < 0:
        raise _RowOverBudget()
    return room


class _RowOverBudget(ReplyTooLarge):
    """A row overdrew its budget while gathered (:func:`_take`); the caller says which."""


def _row_too_large(table: bytes, row: bytes, max_bytes: int) -> ReplyTooLarge:
    return ReplyTooLarge(f"row {row!r} of table {table!r} holds more than {max_bytes} bytes"
                         " in what is read, and a reply carries a row whole; read fewer"
                         " columns or versions, or a narrower time range")


class Reader:
    """Reads rows and scans ranges of one open data directory."""

    def __init__(self, datadir: DataDir, keys: KeyCache) -> None:
        self._dir = datadir
        self._db = datadir.db
        self._keys = keys

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
        self._dir.enter()
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
                keys = self._keys
                escaped_columns = keys.columns
                for r in reads:
                    if budget >= 0 and out:
                        budget = _spend(budget, out[-1], max_bytes)
                    if r.row is not row or r.table is not table:  # reads of one row follow
                        table, row = r.table, r.row               # each other (e.g. a lock
                        rpfx = keys.row_prefix(table, row)        # slot, then the writes)
                    tr = r.time_range
                    columns = r.columns
                    if len(columns) == 1:  # the transaction layer's reads, inline
                        column = columns[0]
                        escaped = escaped_columns[column]
                        if tr.min_ts == tr.max_ts:
                            value = source.get(version_key(rpfx + escaped, tr.min_ts),
                                               verify_checksums=True)
                            if value is None:
                                out.append([])
                            else:
                                if r.keys_only_prefixes and \
                                        column.startswith(r.keys_only_prefixes):
                                    value = b""
                                out.append([Cell(column, tr.min_ts, value)])
                            continue
                        wanted = [(column, escaped)]
                    elif columns:
                        wanted = self._wanted(columns)
                        if tr.min_ts == tr.max_ts:
                            out.append(_get_versions(source, rpfx, wanted, tr.min_ts,
                                                     r.keys_only_prefixes))
                            continue
                    else:
                        wanted = []
                    if it is None:
                        it = source.raw_iterator(verify_checksums=True)
                    try:
                        out.append(_read_row(it, rpfx, wanted, r.column_prefixes,
                                             tr.min_ts, tr.max_ts, r.max_versions,
                                             r.keys_only_prefixes, budget))
                    except _RowOverBudget:
                        raise _over_budget(max_bytes) from None
                if budget >= 0 and out:
                    _spend(budget, out[-1], max_bytes)
                return out
            finally:
                if it is not None:
                    it.close()
                if snapshot is not None:
                    snapshot.close()
        except plyvel.CorruptionError as exc:
            raise self._dir.corrupt(exc) from exc
        finally:
            self._dir.exit()

    def read_rows_chunks(self, reads: Sequence[RowRead], chunk_bytes: int,
                         max_row_bytes: int | None = None
                         ) -> Generator[list[list[Cell]], None, None]:
        """:meth:`read_rows` from one snapshot, the results in pieces of about
        ``chunk_bytes`` (a single larger row goes alone, up to ``max_row_bytes``), each
        gathered when asked for: a stream of a large result holds one piece at a time,
        never the whole."""
        datadir = self._dir
        datadir.enter()
        try:
            snapshot = self._db.snapshot()
        finally:
            datadir.exit()
        try:
            chunk: list[list[Cell]] = []
            size = 0
            for r in reads:
                try:
                    cells = self.read_rows((r,), snapshot=snapshot, max_bytes=max_row_bytes)[0]
                except RuntimeError as exc:  # plyvel: database closed under the snapshot
                    raise StoreClosed(str(exc)) from exc
                except ReplyTooLarge:
                    assert max_row_bytes is not None
                    raise _row_too_large(r.table, r.row, max_row_bytes) from None
                n = cells_bytes(cells)
                if chunk and size + n > chunk_bytes:
                    yield chunk
                    chunk, size = [], 0
                chunk.append(cells)
                size += n
            if chunk:
                yield chunk
        finally:
            datadir.release_snapshot(snapshot)

    def _wanted(self, columns: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """(column, escaped column) of each distinct column, ascending: what a read selects."""
        escaped = self._keys.columns
        if len(columns) == 1:
            column = columns[0]
            return [(column, escaped[column])]
        return [(c, escaped[c]) for c in sorted(set(columns))]

    def scan(self, s: ScanRequest, max_row_bytes: int | None = None) -> Iterator[Row]:
        """Rows of [start_row, end_row) from one snapshot, in chunks so close() is never
        blocked long.  ``max_row_bytes``: ReplyTooLarge for a row larger (counted as
        :func:`cells_bytes` does), while it is gathered; a chunk then holds about that
        many bytes at most."""
        room = -1 if max_row_bytes is None else max_row_bytes
        tpfx = table_prefix(s.table)
        wanted = self._wanted(s.columns) if s.columns else []
        stop = row_prefix(tpfx, s.end_row) if s.end_row is not None else after_table(tpfx)
        position = row_prefix(tpfx, s.start_row) if s.start_row is not None else tpfx
        remaining = s.limit if s.limit else -1
        datadir = self._dir
        datadir.enter()
        try:
            snapshot = self._db.snapshot()
        finally:
            datadir.exit()
        try:
            while remaining != 0:
                chunk: list[Row] = []
                datadir.enter()
                try:
                    it = snapshot.raw_iterator(verify_checksums=True)
                    try:
                        position = _scan_chunk(it, s, wanted, tpfx, position, stop, remaining,
                                               chunk, room)
                    finally:
                        it.close()
                except RuntimeError as exc:  # plyvel: database closed under the snapshot
                    raise StoreClosed(str(exc)) from exc
                except plyvel.CorruptionError as exc:
                    raise datadir.corrupt(exc) from exc
                finally:
                    datadir.exit()
                yield from chunk
                if remaining > 0:
                    remaining -= len(chunk)
                if not position:
                    return
        finally:
            datadir.release_snapshot(snapshot)


def _normalise_prefixes(prefixes: Sequence[bytes]) -> list[bytes]:
    """Sorted prefixes with those covered by a shorter one removed."""
    kept: list[bytes] = []
    for p in sorted(set(prefixes)):
        if not kept or not p.startswith(kept[-1]):
            kept.append(p)
    return kept


def _get_versions(source: plyvel.DB | plyvel.Snapshot, rpfx: bytes,
                  wanted: list[tuple[bytes, bytes]], ts: int, keys_only: tuple[bytes, ...]
                  ) -> list[Cell]:
    """The version at ``ts`` of each wanted (column, escaped column) that has one (empty
    for columns under ``keys_only``)."""
    cells: list[Cell] = []
    its = encode_ts(ts)
    for column, escaped in wanted:
        value = source.get(rpfx + escaped + its, verify_checksums=True)
        if value is not None:
            cells.append(Cell(column, ts, b"" if column.startswith(keys_only) else value))
    return cells


def _collect_versions(it: plyvel.RawIterator, cpfx: bytes, column: bytes, max_ts: int,
                      min_ts: int, max_versions: int, cells: list[Cell], strip: bool,
                      room: int) -> int:
    """Append the versions of one cell within [min_ts, max_ts], newest first (``strip``:
    with empty values); the row's room left (:func:`_take`)."""
    it.seek(version_key(cpfx, max_ts))
    n = 0
    width = len(cpfx)
    while it.valid():
        key = it.key()
        if not key.startswith(cpfx):
            return room
        ts = decode_ts_at(key, width)
        if ts < min_ts:
            return room
        cell = Cell(column, ts, b"" if strip else it.value())
        cells.append(cell)
        if room >= 0:
            room = _take(room, cell)
        n += 1
        if n == max_versions:
            return room
        it.next()
    return room


def _read_row(it: plyvel.RawIterator, rpfx: bytes, wanted: list[tuple[bytes, bytes]],
              prefixes: Sequence[bytes], min_ts: int, max_ts: int, max_versions: int,
              keys_only: tuple[bytes, ...], room: int) -> list[Cell]:
    """The cells of one row: the wanted (column, escaped column)s, else those under prefixes;
    those of columns under ``keys_only`` prefixes with empty values; at most ``room``
    bytes (:func:`_take`; -1: no bound)."""
    cells: list[Cell] = []
    if wanted:
        if max_versions == 1:  # the newest version at or below max_ts: one seek each, inline
            # Columns ascend, so seek targets do: where the previous seek landed at or past
            # this target, no key lies in between and this seek would land there too (a
            # transaction's read of a cell's lock and write columns: usually one seek).
            seek_ts = encode_ts(max_ts)
            key: bytes | None = None  # where the last seek landed (b"": past the end)
            for column, escaped in wanted:
                cpfx = rpfx + escaped
                target = cpfx + seek_ts
                if key is None or (key and key < target):
                    it.seek(target)
                    key = it.key() if it.valid() else b""
                if key.startswith(cpfx):
                    ts = decode_ts_at(key, len(cpfx))
                    if ts >= min_ts:
                        cell = Cell(column, ts, b"" if keys_only and
                                    column.startswith(keys_only) else it.value())
                        cells.append(cell)
                        if room >= 0:
                            room = _take(room, cell)
            return cells
        for column, escaped in wanted:
            room = _collect_versions(it, rpfx + escaped, column, max_ts, min_ts, max_versions,
                                     cells, column.startswith(keys_only), room)
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
            room = _collect_versions(it, cpfx, column, max_ts, min_ts, max_versions, cells,
                                     column.startswith(keys_only), room)
            it.seek(after_versions(cpfx))
    return cells


def _scan_chunk(it: plyvel.RawIterator, s: ScanRequest, wanted: list[tuple[bytes, bytes]],
                tpfx: bytes, position: bytes, stop: bytes, remaining: int, chunk: list[Row],
                room: int) -> bytes:
    """Read up to a chunk of non-empty rows starting at ``position``, each within ``room``
    bytes and the chunk about that too (-1: no bound); return where to resume (b"" =
    done)."""
    size = 0
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
        try:
            cells = _read_row(it, rpfx, wanted, s.column_prefixes, tr.min_ts, tr.max_ts,
                              s.max_versions, s.keys_only_prefixes, room)
        except _RowOverBudget:
            raise _row_too_large(s.table, row, room) from None
        if cells:
            chunk.append(Row(row, tuple(cells)))
        position = after_row(rpfx)
        if room >= 0 and cells:
            size += cells_bytes(cells)
            if size >= room:  # a chunk of rows is about one row's bound at most
                return position
        it.seek(position)
    return position
