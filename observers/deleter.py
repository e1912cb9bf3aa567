"""Deleter: deletes handled notification versions in batches, off the processors' path.

Deleting a handled notification is step 3 of the per-cell protocol, and it needs no
answer: if it is lost (a crash, a store error), the versions are delivered again and
the ack turns them into a skip.  So processors hand their deletes to one thread that
sends whatever has gathered in one store call -- over gRPC one call instead of one
per cell -- and go on with the next cell.  Until a delete is done the worker's scans
ignore those versions (``Worker._offer``), and ``run_until_idle`` waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bigtable_lite import StorageError, TabletStore

from .notifications import delete_versions

log = logging.getLogger(__name__)

Item = tuple[bytes, bytes, tuple[int, ...]]  # (row, column, versions)
_RETRY_PAUSE = 0.05
_WAIT_SLICE = 0.5


class Deleter:
    """One background thread deleting submitted versions; ``on_done`` hears of each batch."""

    def __init__(self, store: TabletStore, table: bytes,
                 on_done: Callable[[list[Item]], None], *, max_batch: int = 2000,
                 linger: float = 0.005) -> None:
        self._store = store
        self._table = table
        self._on_done = on_done
        self._max_batch = max_batch
        self._linger = linger
        self._cond = threading.Condition()
        self._items: list[Item] = []
        self._busy = 0          # items taken by the thread and not yet deleted
        self._closing = False
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.last_error = ""

    def start(self) -> None:
        with self._cond:
            self._closing = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="observers-deleter",
                                                daemon=True)
                self._thread.start()

    def submit(self, row: bytes, column: bytes, versions: tuple[int, ...]) -> None:
        with self._cond:
            self._items.append((row, column, versions))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Items submitted and not yet deleted."""
        with self._cond:
            return len(self._items) + self._busy

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is deleted (or given up); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._items and not self._busy, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Delete what is pending (bounded), then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait(_WAIT_SLICE)
                if not self._items:
                    return
                # Let a few more gather: one call per few ms instead of one per cell.
                self._cond.wait_for(lambda: len(self._items) >= self._max_batch
                                    or self._closing, self._linger)
                batch = self._items[:self._max_batch]
                del self._items[:self._max_batch]
                self._busy = len(batch)
            try:
                delete_versions(self._store, self._table, batch)
            except StorageError as exc:
                self.last_error = str(exc)
                with self._cond:
                    self._busy = 0
                    if self._closing:
                        # Left in the store: delivered again later, and skipped by the ack.
                        log.warning("giving up deleting %d handled notifications (%s)",
                                    len(batch), exc)
                        self._cond.notify_all()
                        continue
                    self._items[:0] = batch
                    self._cond.wait(_RETRY_PAUSE)
                continue
            self.batches += 1
            try:
                self._on_done(batch)
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()
