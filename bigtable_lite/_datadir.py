"""Data directory: owning it, opening its LevelDB, and closing it under calls in flight.

Layout (docs/storage.md)::

    DATA_DIR/OWNER      flock(LOCK_EX) while a store is open; holds the owner's pid
    DATA_DIR/leveldb/   the LevelDB database

Closing is the delicate part: LevelDB must never be closed under a call, and a call
that starts after close() began must fail cleanly (``StoreClosed``), never touch a
closed database (plyvel then crashes the process or raises RuntimeError).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ._leveldb import plyvel
from .errors import DataCorruption, StorageError, StoreClosed, StoreLocked

LEVELDB_DIR = "leveldb"
OWNER_FILE = "OWNER"
_LEVELDB_CURRENT = "CURRENT"  # LevelDB writes it when it creates a database


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a data directory that holds a store, without opening or creating it.

    For callers that must not turn a mistyped path into a new, empty store (a
    :class:`DataDir` creates what is missing).
    """
    return (Path(path) / LEVELDB_DIR / _LEVELDB_CURRENT).is_file()


def disk_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of the LevelDB files of the data directory ``path`` (files a compaction
    removes while they are counted are skipped)."""
    total = 0
    try:
        entries = list(os.scandir(Path(path) / LEVELDB_DIR))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


class DataDir:
    """A data directory owned by this object while open, with its LevelDB open.

    Every call that touches ``db`` runs between :meth:`enter` and :meth:`exit`;
    :meth:`close` waits (bounded) for those in flight.  A hot path may inline them as
    ``inflight.append(None)``, check ``closed``, ... ``inflight.pop()``, and
    :meth:`wake` if ``closed``.
    """

    def __init__(self, path: str | os.PathLike[str], *, cache_bytes: int,
                 write_buffer_bytes: int) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._owner = _take_ownership(self.path)
        try:
            self.db = _open_leveldb(self.path / LEVELDB_DIR, cache_bytes, write_buffer_bytes)
        except BaseException:
            self._owner.close()
            raise
        # In-flight operations, one deque entry each.  deque.append/pop are atomic under
        # the GIL, which makes entering and leaving ~10x cheaper than a Condition; the
        # Condition is only used once closing has begun.
        self.inflight: deque[None] = deque()
        self.closed = False
        self._state = threading.Condition()
        self._closing = threading.Lock()  # held by close() while it closes the database

    def enter(self) -> None:
        # Append before reading closed, and close() sets closed before reading the
        # deque: so either close() sees this call, or this call sees close().
        self.inflight.append(None)
        if self.closed:
            self.exit()
            raise StoreClosed(f"store at {self.path} is closed")

    def exit(self) -> None:
        self.inflight.pop()
        if self.closed:
            self.wake()

    def wake(self) -> None:
        """Tell a waiting close() that a call left."""
        with self._state:
            self._state.notify_all()

    def close(self, timeout: float = 30.0,
              before_db_close: Callable[[], None] | None = None) -> None:
        """Wait (bounded) for in-flight calls, then close LevelDB cleanly and release the
        directory.  ``before_db_close``: called once the calls are done, before LevelDB
        closes (the last fsync pass of deferred writes); LevelDB and the directory are
        released even if it raises."""
        with self._state:
            if self.closed:
                return
            self.closed = True
            if not self._state.wait_for(lambda: not self.inflight, timeout=timeout):
                # Closing LevelDB under a running call frees what it uses: the process
                # crashes (a scan of a large table that matches nothing runs for long).
                raise StorageError(
                    f"{len(self.inflight)} calls on {self.path} still run after {timeout:g}s:"
                    " LevelDB is left open (no new call is accepted); it closes with the"
                    " process")
        try:
            if before_db_close is not None:
                before_db_close()
        finally:
            with self._closing:
                self.db.close()
            self._owner.close()

    @contextmanager
    def call(self) -> Iterator[plyvel.DB]:
        """The database for one call: in flight (:meth:`enter`), corruption translated."""
        self.enter()
        try:
            yield self.db
        except plyvel.CorruptionError as exc:
            raise self.corrupt(exc) from exc
        finally:
            self.exit()

    def corrupt(self, exc: plyvel.CorruptionError) -> DataCorruption:
        """The error for corruption LevelDB detected (a checksum, a block, a file)."""
        return DataCorruption(f"LevelDB in {self.path} reports corruption: {exc}")

    def release_snapshot(self, snapshot: plyvel.Snapshot) -> None:
        """Release a snapshot whose reader may outlive the store (an abandoned scan).

        Never while close() tears the database down: releasing a snapshot then crashed
        the process (segfault).  While the store is open, release it as an in-flight
        operation (close() waits for those); once closing has begun, after the database
        is closed (which released it: close() is then a no-op).
        """
        try:
            self.enter()
        except StoreClosed:
            with self._closing:
                snapshot.close()
        else:
            try:
                snapshot.close()
            finally:
                self.exit()


def _open_leveldb(path: Path, cache_bytes: int, write_buffer_bytes: int) -> plyvel.DB:
    """Open the database, creating it only in a new or empty directory.

    Why: LevelDB's ``create_if_missing`` treats a directory without ``CURRENT`` as
    new: it starts an empty database there and deletes the table and log files it does
    not know, so a lost ``CURRENT`` would silently lose every cell (and the oracle's
    high-water mark with them).  Such a directory is refused instead.  A ``CURRENT``
    that does not name a readable manifest is reported by LevelDB as corruption.
    ``paranoid_checks``: corruption found while opening or compacting is an error, never
    skipped.
    """
    current = path / "CURRENT"
    found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    data = [name for name in found if name not in _NOT_DATA]
    if data:
        if not current.is_file():
            raise DataCorruption(
                f"{path} holds LevelDB files ({_some(data)}) but no CURRENT file: refusing"
                " to open it, which would start an empty database and delete them. Restore"
                " CURRENT (one line naming the newest MANIFEST-* file) or move the"
                " directory away")
    try:
        db: plyvel.DB = plyvel.DB(
            str(path),
            create_if_missing=not data,
            paranoid_checks=True,
            lru_cache_size=cache_bytes,
            write_buffer_size=write_buffer_bytes,
        )
    except plyvel.CorruptionError as exc:
        raise DataCorruption(f"LevelDB in {path} is corrupt: {exc}") from exc
    return db


_NOT_DATA = frozenset({"LOCK", "LOG", "LOG.old"})  # LevelDB's lock and its text logs


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


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
