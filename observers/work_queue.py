"""WorkQueue: the notified cells a worker has found and not yet finished.

Scanners offer the cells of their scans; processors take one cell, or a batch of one
column's cells, and report it done.  A cell is queued or in flight at most once; a
rescan that finds a queued cell again refreshes its versions (coalescing).  Cells
backing off (the retry book) or outside the worker's share are not queued.

One lock guards it all, with three conditions so each wake-up reaches only who can
act: processors (``_work``: work queued), scanners (``_room``: the queue fell to its
low-water mark, or a processor took a cell), and whoever waits for cells to finish
(``finished``: the worker's idle detection).

Versions already handled are remembered briefly (``note_done``), since a scan's
snapshot may predate their deletion: each is stamped with the scan counter at the time,
and a scan numbered at or below that stamp ignores the version.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from .batch_limits import BatchLimits
from .notifications import PendingCell
from .retry import RetryBook

__all__ = ["DELETING", "WorkQueue"]

Key = tuple[bytes, bytes]

WAIT_SLICE = 0.5  # longest single wait of a thread, so stopping is noticed promptly
DELETING = 2**63  # scan stamp of a version whose delete is still queued: always ignored


class WorkQueue:
    """The queue between a worker's scanners and its processors (see the module docstring).

    ``owns(row, column)``: whether the cell is in this worker's share.  ``stopping``:
    set when the worker stops; every wait returns (False or None) once it is.
    """

    def __init__(self, size: int, batch_limits: BatchLimits, retry: RetryBook,
                 owns: Callable[[bytes, bytes], bool], stopping: threading.Event) -> None:
        self.size = size
        self._low_water = size // 2
        self._batch_limits = batch_limits
        self._retry = retry
        self._owns = owns
        self._stopping = stopping
        self.lock = threading.Lock()
        self.finished = threading.Condition(self.lock)  # a cell finished, or anything else
        self._work = threading.Condition(self.lock)
        self._room = threading.Condition(self.lock)
        self._queue: deque[Key] = deque()
        self._queued: dict[Key, PendingCell] = {}
        self._batching: set[bytes] = set()  # columns with a batch in flight
        self._inflight: set[Key] = set()
        self.started = 0             # cells taken by processors, ever (under the lock)
        self._epoch = 0              # scan counter; see offer
        self._active_scans: set[int] = set()
        self._done: dict[tuple[bytes, bytes, int], int] = {}

    # --- for the worker ---------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(queued, in flight); the caller holds ``lock``."""
        return len(self._queue), len(self._inflight)

    def notify_everyone(self) -> None:
        with self.lock:
            self.finished.notify_all()
            self._work.notify_all()
            self._room.notify_all()

    def clear(self) -> None:
        """Forget what is queued and deletions still pending (the worker stopped)."""
        with self.lock:
            self._queue.clear()
            self._queued.clear()
            self._done = {v: d for v, d in self._done.items() if d != DELETING}

    # --- for scanners -----------------------------------------------------------------------

    def wait_for_room(self) -> bool:
        """Back-pressure: wait (bounded slices) while the queue is full; False if stopping."""
        with self.lock:
            if len(self._queue) >= self.size:
                while len(self._queue) > self._low_water:
                    if self._stopping.is_set():
                        return False
                    self._room.wait(WAIT_SLICE)
        return not self._stopping.is_set()

    def wait_for_take(self, taken: int) -> bool:
        """A new pass waits while the queue holds cells and no processor took any since the
        last pass ended (``taken``, ``started`` then): a pass re-reads every queued cell,
        and before this wait the scanners re-read a queue of thousands of cells ten
        times per cell processed while batches ran.  False if stopping."""
        with self.lock:
            while self._queue and self.started == taken:
                if self._stopping.is_set():
                    return False
                self._room.wait(WAIT_SLICE)
        return not self._stopping.is_set()

    def begin_scan(self) -> int:
        with self.lock:
            self._epoch += 1
            self._active_scans.add(self._epoch)
            return self._epoch

    def end_scan(self, epoch: int) -> None:
        with self.lock:
            self._active_scans.discard(epoch)
            oldest = min(self._active_scans, default=self._epoch + 1)
            if self._done:
                self._done = {v: d for v, d in self._done.items() if d >= oldest}

    def offer(self, cells: list[PendingCell], epoch: int) -> tuple[int, int]:
        """Queue this worker's share of ``cells`` (from scan ``epoch``); return (newly
        queued, pending seen).

        A version deleted after the scan's snapshot may still show in it: each deletion
        is stamped with the scan counter at its completion, and a scan numbered at or
        below that stamp ignores the version (see note_done).
        """
        owns = self._owns
        due = self._retry.due
        new = seen = 0
        with self.lock:
            done = self._done
            for cell in cells:
                if not owns(cell.row, cell.column):
                    continue
                versions = cell.versions
                if done:
                    versions = tuple(v for v in versions
                                     if done.get((cell.row, cell.column, v[0]), -1) < epoch)
                    if not versions:
                        continue
                    cell = PendingCell(cell.row, cell.column, versions)
                seen += 1
                key = (cell.row, cell.column)
                if key in self._queued:
                    self._queued[key] = cell  # newer versions coalesce into the queued run
                    continue
                if key in self._inflight or not due(key):
                    continue
                self._queued[key] = cell
                self._queue.append(key)
                new += 1
            if new:
                self._work.notify(new)
        return new, seen

    def note_done(self, row: bytes, column: bytes, stamps: Iterable[int],
                  mark: int | None = None) -> None:
        """Versions ``stamps`` of the cell were handled: scans from now on (or numbered at or
        below ``mark``; ``DELETING``: all) ignore them."""
        with self.lock:
            stamp = self._epoch if mark is None else mark
            for ts in stamps:
                self._done[(row, column, ts)] = stamp

    # --- for processors ---------------------------------------------------------------------

    def take(self) -> tuple[list[PendingCell], bool] | None:
        """Wait (bounded slices) for work; the next queued cell, and the cells of its column
        queued right behind it up to the column's batch limit, marked in flight.  A cell
        with a setback on record goes alone, so one failing cell does not keep failing
        batches.  True with the cells if they are a batch of their column (which runs
        alone: see _may_take).  None if stopping."""
        with self.lock:
            while not self._stopping.is_set() and not self._may_take():
                self._work.wait(WAIT_SLICE)
            if self._stopping.is_set():
                return None
            key = self._queue.popleft()
            cells = [self._queued.pop(key)]
            self._inflight.add(key)
            limit = self._batch_limits.limit(key[1])
            state = self._retry.state
            queue = self._queue
            batching = limit > 1 and state(key) is None and bool(queue) \
                and queue[0][1] == key[1]
            if batching:
                self._batching.add(key[1])
                while len(cells) < limit and queue and queue[0][1] == key[1] \
                        and state(queue[0]) is None:
                    nxt = queue.popleft()
                    cells.append(self._queued.pop(nxt))
                    self._inflight.add(nxt)
            self.started += len(cells)
            self._room.notify_all()  # scanners waiting for room or for a take
            return cells, batching

    def _may_take(self) -> bool:
        """Work is queued and its column is not being batched by another processor (the
        caller holds the lock).  Batches of one column run one at a time: two would update
        many of the same cells at once (conflicts, or combining, and in one process a
        contended interpreter lock), while one batch shares the reads and writes."""
        return bool(self._queue) and self._queue[0][1] not in self._batching

    def done(self, cells: list[PendingCell], batching: bool, requeued: bool) -> None:
        """``cells`` (taken together) are no longer in flight (unless ``requeued``, which
        took them out already)."""
        with self.lock:
            for cell in () if requeued else cells:
                self._inflight.discard(cell.key)
            if batching:
                self._batching.discard(cells[0].column)
            self.finished.notify_all()
            self._work.notify_all()

    def requeue(self, cells: list[PendingCell]) -> None:
        """Put a failed batch back at the front of the queue.  Its cells leave the in-flight
        set here, under the lock, so another processor may take them at once."""
        with self.lock:
            for cell in reversed(cells):
                self._inflight.discard(cell.key)
                if cell.key not in self._queued:  # (scans skip cells in flight)
                    self._queued[cell.key] = cell
                    self._queue.appendleft(cell.key)
            self._work.notify_all()
