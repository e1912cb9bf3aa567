"""Engine: cells on LevelDB, with row-atomic check-and-mutate.

One LevelDB per data directory holds every tablet's cells (key layout in
``bigtable_lite._encoding``).  The engine puts together the parts, each in its own
module: the data directory and its lifecycle (``datadir``), reads and scans
(``reads``), check-and-mutate (``check_and_mutate``, with its ``conditions``); it keeps
the metadata keys and compaction.

Durability: LevelDB appends each WriteBatch to its log with write(2) before the
call returns, so an acknowledged mutation survives ``kill -9`` of the process in
every mode.  ``sync="always"`` also fsyncs the log before acknowledging (surviving
power loss); LevelDB's writer queue lets concurrent writers share one fsync, so
under concurrency this is fsync per *group* of writes.  One thread that must not wait
(the node's event loop) may defer its fsyncs instead (``log_sync``, ``_log_sync``): it
answers its requests once a pass over the log, which it makes at the end of its turn,
has covered them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Literal

from ._check_and_mutate import Mutator
from ._datadir import LEVELDB_DIR, DataDir
from ._encoding import KeyCache, after_table, before_table, meta_key, table_prefix
from ._leveldb import plyvel
from ._log_sync import LogSync
from ._model import Cell, MutationResult, Row, RowMutation, RowRead, ScanRequest
from ._reads import Reader

SyncMode = Literal["none", "always"]
SYNC_MODES: tuple[str, ...] = ("none", "always")

# The memtable: while the hot data fits, a lookup of a key that does not exist (a lock
# slot, a rollback marker) stops there instead of searching level-0 files.  16 -> 64 MiB
# measured (docs/storage.md): check-and-mutate 25-26% -> 30% of raw put, embedded
# transfers ~4% faster, citation load ~9% faster; the price is memory (up to twice this
# per store while a full memtable is flushed) and a longer log replay after a crash.
WRITE_BUFFER_BYTES = 64 << 20


class Engine:
    """A LevelDB database of cells, owned exclusively by this object while open."""

    def __init__(self, path: str | os.PathLike[str], *, sync: SyncMode = "none",
                 cache_bytes: int = 64 << 20) -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, not {sync!r}")
        self._dir = DataDir(path, cache_bytes=cache_bytes, write_buffer_bytes=WRITE_BUFFER_BYTES)
        self.path: Path = self._dir.path
        self.sync = sync
        keys = KeyCache()
        self._reader = Reader(self._dir, keys)
        # Under "always": the fsyncs a deferring thread's writes share (None otherwise).
        self.log_sync: LogSync | None = (LogSync(self._dir.path / LEVELDB_DIR)
                                         if sync == "always" else None)
        self._mutator = Mutator(self._dir, keys, always_sync=sync == "always",
                                log_sync=self.log_sync)
        # The per-row paths without a frame of their own (~400 instructions a call):
        # the parts' bound methods, with the signatures of the methods below.
        self.read_rows = self._reader.read_rows  # type: ignore[method-assign]
        self.mutate_row = self._mutator.mutate_row  # type: ignore[method-assign]
        self.mutate = self._mutator.mutate  # type: ignore[method-assign]
        self.mutate_guarded = self._mutator.mutate_guarded  # type: ignore[method-assign]

    def close(self, timeout: float = 30.0) -> None:
        """Wait (bounded) for in-flight calls, make the deferred writes durable (the last
        pass), then close LevelDB cleanly and release the directory."""
        self._dir.close(timeout, before_db_close=None if self.log_sync is None
                        else self.log_sync.close)

    @property
    def closed(self) -> bool:
        return self._dir.closed

    # --- reads and writes (see reads.py and check_and_mutate.py) --------------------------

    def read_rows(self, reads: Sequence[RowRead], *, max_bytes: int | None = None,
                  snapshot: plyvel.Snapshot | None = None) -> list[list[Cell]]:
        return self._reader.read_rows(reads, max_bytes=max_bytes, snapshot=snapshot)

    def read_rows_chunks(self, reads: Sequence[RowRead], chunk_bytes: int,
                         max_row_bytes: int | None = None
                         ) -> Generator[list[list[Cell]], None, None]:
        return self._reader.read_rows_chunks(reads, chunk_bytes, max_row_bytes)

    def scan(self, s: ScanRequest, max_row_bytes: int | None = None) -> Iterator[Row]:
        return self._reader.scan(s, max_row_bytes)

    def mutate(self, mutations: Sequence[RowMutation], *, sync: bool = False
               ) -> list[MutationResult]:
        return self._mutator.mutate(mutations, sync=sync)

    def mutate_guarded(self, mutations: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        return self._mutator.mutate_guarded(mutations, sync=sync)

    def mutate_atomic(self, mutations: Sequence[RowMutation],
                      finish: Callable[[], Sequence[RowMutation]] | None = None, *,
                      sync: bool = False) -> list[MutationResult]:
        return self._mutator.mutate_atomic(mutations, finish, sync=sync)

    def mutate_row(self, m: RowMutation, *, sync: bool = False) -> MutationResult:
        return self._mutator.mutate_row(m, sync=sync)

    # --- metadata and sizes ---------------------------------------------------------------

    def get_meta(self, name: bytes) -> bytes | None:
        with self._dir.call() as db:
            value: bytes | None = db.get(meta_key(name), verify_checksums=True)
            return value

    def put_meta(self, name: bytes, value: bytes, *, sync: bool = True) -> None:
        with self._dir.call() as db:
            db.put(meta_key(name), value, sync=sync)

    def meta_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        start = meta_key(prefix)
        with self._dir.call() as db:
            return [(k[len(start) - len(prefix):], v)
                    for k, v in db.iterator(prefix=start, verify_checksums=True)]

    def approximate_size(self, start: bytes, stop: bytes) -> int:
        with self._dir.call() as db:
            size: int = db.approximate_size(start, stop)
            return size

    def compact_range(self, start: bytes | None, stop: bytes | None) -> None:
        """LevelDB's CompactRange over [start, stop) (see compact_table for why that is not
        enough)."""
        with self._dir.call() as db:
            db.compact_range(start=start, stop=stop)

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
        (``before_table`` sorts just before the table, ``after_table`` just after),
        so no read ever sees them.
        """
        tpfx = table_prefix(table)
        low, high = before_table(tpfx), after_table(tpfx)
        self.compact_range(tpfx, high)
        with self._dir.call() as db:
            db.put(low, b"")
            db.put(high, b"")
        try:
            self.compact_range(low, high + b"\x00")
        finally:
            with self._dir.call() as db:
                db.delete(low)
                db.delete(high)
