"""WorkQueue: the notified cells a worker holds and has not finished.

The feed offers the cells of the entries it pulled; processors take one cell, or a
batch of one column's cells, and report it done.  A cell is queued or in flight at
most once: entries of a queued cell coalesce into it; entries of a cell in flight wait
beside it and are queued when it is done (their change may be newer than what the run
saw); entries of a cell backing off (the retry book) wait until it is due.  Nothing is
ever read from the node twice, so nothing held here may be forgotten except by
:meth:`drop` (its buckets went to another worker, who reads them from their start).

Entries are taken only while their bucket is this worker's (``owns``, from the
assignment); those of a bucket no longer owned are dropped at take (Fluo checks
ownership as late), and nothing is taken while the worker fenced itself (``may_run``).
A cell's entries may sit in different buckets (written under an older partition
prefix): every decision about buckets is made per entry.

Cells wait in one queue per column, in arrival order; a processor takes from the
column whose head came first, and a batch takes that column's cells in order, however
the feed interleaved columns (a pull returns a bucket after another, several columns
each).  Batches of one *batch group* (an observer's ``batch_group``, by default its
column) run one at a time per worker.  A column that *gathers* (an observer's
``gather``) is not taken while other columns of its group have cells queued, until it
has a full batch queued or its queue is ``gather`` seconds old: its cells then go in
fewer, larger batches (the citations' fold: a counter written once for many refs
batches).

One lock guards it all, with conditions so each wake-up reaches only who can act:
processors (``_work``), and whoever waits for cells to finish (``finished``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from ._batch_limits import BatchLimits
from ._notifications import PendingCell
from ._retry import RetryBook

__all__ = ["WAIT_SLICE", "WorkQueue"]

Key = tuple[bytes, bytes]
Buckets = dict[bytes, frozenset[int]]

WAIT_SLICE = 0.5  # longest single wait of a thread, so stopping is noticed promptly


class WorkQueue:
    """The queue between a worker's feed and its processors (see the module docstring).

    ``owns(column, bucket)``: whether the bucket is this worker's now.  ``stopping``:
    set when the worker stops; every wait returns (None) once it is.  ``on_change``:
    called (outside the lock) when a cell was taken or finished (the feed has room or
    entries to hand back).  ``may_run``: False while the worker fenced itself (no cell
    is taken then).
    """

    def __init__(self, size: int, batch_limits: BatchLimits, retry: RetryBook,
                 owns: Callable[[bytes, int], bool], stopping: threading.Event, *,
                 may_run: Callable[[], bool] = lambda: True,
                 on_change: Callable[[], None] = lambda: None,
                 groups: Mapping[bytes, bytes] | None = None,
                 gather: Mapping[bytes, float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self._groups = dict(groups or {})  # column -> batch group (default: the column)
        self._gather = {c: s for c, s in (gather or {}).items() if s > 0}  # column -> seconds
        self._clock = clock
        self._since: dict[bytes, float] = {}  # gathering column -> when its queue began
        self._batch_limits = batch_limits
        self._retry = retry
        self._owns = owns
        self._may_run = may_run
        self._stopping = stopping
        self._on_change = on_change
        self.lock = threading.Lock()
        self.finished = threading.Condition(self.lock)  # a cell finished, or anything else
        self._work = threading.Condition(self.lock)
        self._queues: dict[bytes, deque[Key]] = {}  # per column, in order
        self._order: dict[Key, int] = {}  # arrival of each queued cell (requeued: first)
        self._arrivals = itertools.count(1)
        self._front = 0  # decreasing: cells put back in front of every other
        self._queued: dict[Key, PendingCell] = {}
        self._delayed: dict[Key, PendingCell] = {}   # backing off: queued when due
        self._later: dict[Key, PendingCell] = {}     # arrived while the cell ran
        self._inflight: dict[Key, frozenset[int]] = {}  # -> buckets of its entries
        self._batching: set[bytes] = set()  # batch groups with a batch in flight
        self.started = 0             # cells taken by processors, ever (under the lock)

    # --- for the worker ---------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(held and not running, in flight); the caller holds ``lock``."""
        return len(self._queued) + len(self._delayed) + len(self._later), len(self._inflight)

    def waiting(self) -> tuple[int, float | None]:
        """(cells queued, in flight or arrived while running; seconds until the first
        cell backing off is due, None if none is); the caller holds ``lock``."""
        busy = len(self._queued) + len(self._later) + len(self._inflight)
        if not self._delayed:
            return busy, None
        due = min(self._retry.due_ms(k) for k in self._delayed)
        return busy, max(0.0, (due - self._retry.clock.now_ms()) / 1000.0)

    def room(self) -> int:
        """Cells the feed may still offer."""
        with self.lock:
            return max(0, self.size - len(self._queued) - len(self._delayed))

    def notify_everyone(self) -> None:
        with self.lock:
            self.finished.notify_all()
            self._work.notify_all()

    def clear(self) -> None:
        """Forget every cell not in flight (the worker stopped)."""
        with self.lock:
            self._queues.clear()
            self._order.clear()
            self._queued.clear()
            self._delayed.clear()
            self._later.clear()

    def drop(self, buckets: Buckets) -> int:
        """Forget the entries held of these buckets (no longer this worker's); in-flight
        cells finish.  How many entries were dropped."""
        if not buckets:
            return 0
        with self.lock:
            n = 0
            for held in (self._queued, self._delayed, self._later):
                for key, cell in list(held.items()):
                    going = buckets.get(cell.column)
                    if not going or not cell.buckets & going:
                        continue
                    kept = cell.without(going)
                    n += len(cell.entries) - (len(kept.entries) if kept else 0)
                    if kept is None:
                        del held[key]
                        if key not in self._inflight:  # its next owner keeps its own book
                            self._retry.forget(key)
                    else:
                        held[key] = kept
            for column, queue in list(self._queues.items()):
                left = deque(k for k in queue if k in self._queued)
                if left:
                    self._queues[column] = left
                else:
                    del self._queues[column]
            self._order = {k: at for k, at in self._order.items() if k in self._queued}
            self.finished.notify_all()
            return n

    def busy(self, buckets: Buckets) -> Buckets:
        """Those of ``buckets`` with a cell in flight (the caller holds ``lock``)."""
        out: dict[bytes, frozenset[int]] = {}
        for (_, column), running in self._inflight.items():
            both = running & buckets.get(column, frozenset())
            if both:
                out[column] = out.get(column, frozenset()) | both
        return out

    # --- for the feed -----------------------------------------------------------------------

    def offer(self, cells: Iterable[PendingCell]) -> int:
        """Hold ``cells``; how many are newly queued."""
        due = self._retry.due
        new = 0
        with self.lock:
            for cell in cells:
                key = cell.key
                queued = self._queued.get(key)
                if queued is not None:
                    self._queued[key] = queued.merged(cell.entries)
                elif key in self._inflight:
                    later = self._later.get(key)
                    self._later[key] = cell if later is None else later.merged(cell.entries)
                elif key in self._delayed or not due(key):
                    delayed = self._delayed.get(key)
                    self._delayed[key] = cell if delayed is None else delayed.merged(
                        cell.entries)
                else:
                    self._enqueue(key, cell)
                    new += 1
            if new:
                self._work.notify(new)
        return new

    # --- for processors ---------------------------------------------------------------------

    def _release_due(self) -> None:
        """Queue the delayed cells that are due (the caller holds the lock)."""
        if not self._delayed:
            return
        due = self._retry.due
        for key in [k for k in self._delayed if due(k)]:
            cell = self._delayed.pop(key)
            if key in self._queued:
                self._queued[key] = self._queued[key].merged(cell.entries)
            else:
                self._enqueue(key, cell)

    def _enqueue(self, key: Key, cell: PendingCell, *, front: bool = False) -> None:
        """Queue a cell not queued yet (the caller holds the lock)."""
        self._queued[key] = cell
        queue = self._queues.get(key[1])
        if queue is None:
            queue = self._queues[key[1]] = deque()
            if key[1] in self._gather:
                self._since[key[1]] = self._clock()
        if front:
            self._front -= 1
            self._order[key] = self._front
            queue.appendleft(key)
        else:
            self._order[key] = next(self._arrivals)
            queue.append(key)

    def _pop(self, queue: deque[Key]) -> tuple[Key, PendingCell]:
        key = queue.popleft()
        del self._order[key]
        if not queue:
            del self._queues[key[1]]
        return key, self._queued.pop(key)

    def group(self, column: bytes) -> bytes:
        """The batch group of ``column``: batches of one group run one at a time."""
        return self._groups.get(column, column)

    def take(self) -> tuple[list[PendingCell], bool] | None:
        """Wait (bounded slices) for work; the next queued cell, and further cells of its
        column in order up to the column's batch limit, marked in flight -- and with them
        the queued cells of the other columns of its batch group, up to their limits
        (one transaction for all: the citations' refs and folds then write each counter
        once).  A cell with a setback on record goes alone (and is left out of others'
        batches), so one failing cell does not keep failing batches.  True with the
        cells if they are a batch (which runs alone in its group: see _next).  None if
        stopping."""
        with self.lock:
            while True:
                self._release_due()
                if self._stopping.is_set():
                    return None
                queue = self._next()
                if queue is not None:
                    break
                self._work.wait(0.05 if self._delayed else WAIT_SLICE)
            key, first = self._pop(queue)
            column = key[1]
            cells = [first]
            self._inflight[key] = first.buckets
            limit = self._batch_limits.limit(column)
            state = self._retry.state
            group = self.group(column)
            others = [c for c in self._queues if c != column and c in self._groups
                      and self._groups[c] == group and not self._gathering(c)]
            batching = limit > 1 and state(key) is None and (column in self._queues
                                                             or bool(others))
            if batching:
                self._batching.add(group)
                if column in self._queues:
                    cells += self._more(queue, limit - 1)
                for other in others:
                    cells += self._more(self._queues[other], self._batch_limits.limit(other))
            self.started += len(cells)
        self._on_change()
        return cells, batching

    def _more(self, queue: deque[Key], most: int) -> list[PendingCell]:
        """Up to ``most`` more cells of one column's queue, in order, for a batch: those
        with a setback on record stay queued, entries of buckets no longer owned are
        dropped (the caller holds the lock)."""
        state = self._retry.state
        cells: list[PendingCell] = []
        skipped: list[Key] = []
        while len(cells) < most and queue:
            key = queue[0]
            if state(key) is not None:
                skipped.append(queue.popleft())
                continue
            key, cell = self._pop(queue)
            owned = self._owned_part(cell)
            if owned is None:
                continue
            cells.append(owned)
            self._inflight[key] = owned.buckets
        if skipped:
            queue = self._queues.setdefault(skipped[0][1], queue)
            queue.extendleft(reversed(skipped))
        return cells

    def _owned_part(self, cell: PendingCell) -> PendingCell | None:
        """``cell`` with only the entries of buckets this worker owns (None: none)."""
        owns = self._owns
        foreign = frozenset(b for b in cell.buckets if not owns(cell.column, b))
        return cell.without(foreign) if foreign else cell

    def _next(self) -> deque[Key] | None:
        """The queue of the column whose head came first, among those whose batch group
        runs no batch, with the head's foreign entries dropped; None if there is none
        or the worker fenced itself (the caller holds the lock).  Batches of one group
        run one at a time: two would update many of the same cells at once (conflicts,
        or combining, and in one process a contended interpreter lock), while one batch
        shares the reads and writes."""
        if not self._queues or not self._may_run():
            return None
        best: deque[Key] | None = None
        best_order = 0
        for column in list(self._queues):
            if self.group(column) in self._batching:
                continue
            queue = self._drop_foreign(column)
            if queue is None or (column in self._gather and self._gathering(column)):
                continue
            if best is None or self._order[queue[0]] < best_order:
                best, best_order = queue, self._order[queue[0]]
        return best

    def _gathering(self, column: bytes) -> bool:
        """Whether ``column``'s queued cells still wait for more: it gathers, has less than
        a batch queued, its queue is younger than its gather time, and another column of
        its group has cells queued (else nothing would come sooner than it runs now; the
        caller holds the lock)."""
        seconds = self._gather.get(column)
        queue = self._queues.get(column)
        if seconds is None or queue is None:
            return False
        if len(queue) >= self._batch_limits.limit(column):
            return False
        if self._clock() - self._since.get(column, 0.0) >= seconds:
            return False
        group = self.group(column)
        return any(c != column and self.group(c) == group for c in self._queues)

    def _drop_foreign(self, column: bytes) -> deque[Key] | None:
        """Drop the head cells of ``column`` whose entries are all in buckets no longer
        this worker's, and the foreign entries of the head; the column's queue, or None
        if nothing is left in it."""
        queue = self._queues[column]
        while queue:
            key = queue[0]
            cell = self._owned_part(self._queued[key])
            if cell is not None:
                self._queued[key] = cell
                return queue
            self._pop(queue)
        return None

    def done(self, cells: list[PendingCell], batching: bool, requeued: bool,
             retry: Iterable[PendingCell] = ()) -> None:
        """``cells`` (taken together) are no longer in flight (unless ``requeued``, which
        took them out already); those in ``retry`` met a setback and are held until their
        retry is due; entries that came meanwhile are held again."""
        again = {cell.key: cell for cell in retry}
        with self.lock:
            for cell in () if requeued else cells:
                self._inflight.pop(cell.key, None)
                later = self._later.pop(cell.key, None)
                held = again.get(cell.key)
                if held is not None and later is not None:
                    held = held.merged(later.entries)
                elif held is None:
                    held = later
                if held is not None:
                    self._hold(held)
            if batching:
                self._batching.discard(self.group(cells[0].column))
            self.finished.notify_all()
            self._work.notify_all()
        self._on_change()

    def _hold(self, cell: PendingCell) -> None:
        key = cell.key
        if key in self._queued:
            self._queued[key] = self._queued[key].merged(cell.entries)
        elif self._retry.due(key):
            self._enqueue(key, cell)
        else:
            old = self._delayed.get(key)
            self._delayed[key] = cell if old is None else old.merged(cell.entries)

    def requeue(self, cells: list[PendingCell]) -> None:
        """Put a failed batch back at the front of the queue.  Its cells leave the in-flight
        set here, under the lock, so another processor may take them at once."""
        with self.lock:
            for cell in reversed(cells):
                self._inflight.pop(cell.key, None)
                later = self._later.pop(cell.key, None)
                if later is not None:
                    cell = cell.merged(later.entries)
                queued = self._queued.get(cell.key)
                if queued is not None:
                    self._queued[cell.key] = queued.merged(cell.entries)
                else:
                    self._enqueue(cell.key, cell, front=True)
            self._work.notify_all()
