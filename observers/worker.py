"""Worker: finds notifications, runs observers on many threads, backs off, parks, reports.

Threads of one worker::

    scanners (1-2)   scan the notify table, one tablet span after another with a
                     cursor, keep the cells of this worker's share (observers.membership)
                     and queue them; idle, they rescan every ``poll_interval`` or at
                     once when woken (an observer commit that wrote cells is a hint)
    processors (N)   take a cell, run the per-cell protocol (observers.processing),
                     then count, back off or park
    maintenance (1)  heartbeat the lease, persist stats, compact the notify table

Between scanners and processors, the work queue (observers.work_queue): a cell is
queued or in flight at most once per worker; a rescan that finds a queued cell again
refreshes its versions (coalescing).  Failing cells back off (in clock time) and are
skipped by the scanners until due, so they never hold up others.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Self

from bigtable_lite import Put, RowMutation, StorageError
from percolator import Client, CommitConflict
from percolator.clock import Clock
from percolator.errors import CommitUndetermined, LockWaitTimeout, OracleError, SnapshotTooOld
from percolator.failpoints import FailpointError
from percolator.layout import notify_table

from . import notifications, parking
from .batch_limits import BatchLimits
from .compaction import DEFAULT_COMPACT_EVERY, IDLE_COMPACT_MIN, CompactionPolicy
from .deleter import Deleter, Item
from .errors import ConfigurationError, WorkerFailed, WorkerTimeout
from .layout import STATS_COLUMN, ParkInfo, workers_table
from .membership import DEFAULT_HEARTBEAT, DEFAULT_LEASE_TTL, Membership, forget_gone_workers
from .metrics import ObserverMetrics
from .notifications import PendingCell, Range
from .processing import (
    CellResult,
    Decision,
    MalformedNotification,
    Outcome,
    process_cell,
    process_cells,
)
from .registry import Observer, ObserverRegistry
from .retry import DEFAULT_BACKOFF, Backoff, RetryBook
from .stats import Counters, WorkerStats, percentile
from .work_queue import DELETING, WAIT_SLICE, WorkQueue

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.01
_SPAN_REFRESH = 1.0   # seconds between re-reads of the notify table's tablets
_FORGET_EVERY = 60.0  # seconds between clean-ups of long-gone workers' rows


def is_transient(exc: BaseException) -> bool:
    """Setbacks that are not the observer's fault: retried, never counted towards parking."""
    if isinstance(exc, StorageError):
        return not isinstance(exc, ValueError)  # InvalidArgument/LimitExceeded: a bad write
    return isinstance(exc, (LockWaitTimeout, CommitUndetermined, OracleError, FailpointError,
                            SnapshotTooOld))  # the snapshot was collected: a new one


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Runs ``observers`` for the notifications of ``client``'s table.

    Constructing a worker registers its observers' columns with the client (so every
    writer leaves notifications for them).  ``start()``/``stop()`` run it in the
    background; ``run_until_idle(timeout)`` runs it (if not running) until no
    notification of its columns is pending anywhere.  Stop the worker before closing
    its client.
    """

    def __init__(self, client: Client, observers: Iterable[Observer] | ObserverRegistry, *,
                 threads: int = 4, scan_threads: int | None = None, max_failures: int = 5,
                 backoff: Backoff = DEFAULT_BACKOFF,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 lease_ttl: float = DEFAULT_LEASE_TTL, heartbeat: float = DEFAULT_HEARTBEAT,
                 stats_interval: float = 1.0, compact_every: int = DEFAULT_COMPACT_EVERY,
                 scan_batch: int = 256, queue_size: int | None = None,
                 worker_id: str | None = None, clock: Clock | None = None) -> None:
        self.registry = (observers if isinstance(observers, ObserverRegistry)
                         else ObserverRegistry(observers))
        if not len(self.registry):
            raise ConfigurationError("a worker needs at least one observer")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if not poll_interval > 0 or not heartbeat > 0 or not stats_interval > 0:
            raise ValueError("poll_interval, heartbeat and stats_interval must be positive")
        if not lease_ttl > heartbeat:
            raise ValueError("lease_ttl must be longer than the heartbeat interval")
        if scan_batch < 1:
            raise ValueError("scan_batch must be at least 1")
        self.client = client
        self.id = worker_id or new_worker_id()
        self.threads = threads
        self.scan_threads = scan_threads or (1 if threads < 4 else 2)
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat
        self.stats_interval = stats_interval
        self.scan_batch = scan_batch
        self.batch_limits = BatchLimits(self.registry)
        self.queue_size = queue_size or max(64, 16 * threads, 2 * self.batch_limits.largest)
        self.clock = clock or client.clock
        self.columns = tuple(sorted(self.registry.columns))
        self.table = notify_table(client.table)
        self.retry = RetryBook(self.clock, backoff=backoff, max_failures=max_failures)
        self.membership = Membership(client.store, client.table, self.id, self.columns,
                                     self.clock, ttl=lease_ttl, threads=threads)
        self.compaction = CompactionPolicy(client.store, self.table, compact_every)
        self.counters = Counters()
        self.metrics = ObserverMetrics(self.registry)
        self.deleter = Deleter(client.store, self.table, self._deleted)
        client.register_observed_columns(self.columns)

        self._stopping = threading.Event()
        self._work = WorkQueue(self.queue_size, self.batch_limits, self.retry,
                               self.membership.owns, self._stopping)
        # Cells pending per scanner and tablet span at its last full pass (under the
        # work queue's lock): the backlog in stats.
        self._backlog: dict[tuple[int, Range], int] = {}
        self._wakes = [threading.Event() for _ in range(self.scan_threads)]  # one per scanner
        self._threads: list[threading.Thread] = []
        self._running = False
        self._lifecycle = threading.Lock()
        self._failed: BaseException | None = None
        self.last_error = ""
        self._started_ms = 0

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> Self:
        """Set up the observers, join the membership and start the threads."""
        with self._lifecycle:
            if self._running:
                return self
            for obs in self.registry:
                obs.setup(self.client)
            self._stopping.clear()
            self._failed = None
            self._started_ms = self.clock.now_ms()
            self.membership.heartbeat()
            self.deleter.start()
            self._threads = (
                [self._spawn(f"processor-{i}", self._process_loop) for i in range(self.threads)]
                + [self._spawn(f"scanner-{k}", self._scan_loop, k)
                   for k in range(self.scan_threads)]
                + [self._spawn("maintenance", self._maintenance_loop)])
            self._running = True
        return self

    def _spawn(self, name: str, target: object, *args: object) -> threading.Thread:
        thread = threading.Thread(target=self._guard, args=(target, *args),
                                  name=f"observers-{name}", daemon=True)
        thread.start()
        return thread

    def _guard(self, target: object, *args: object) -> None:
        """Run a thread body; an unexpected error stops the worker visibly instead of silently."""
        try:
            target(*args)  # type: ignore[operator]
        except BaseException as exc:  # a bug: surfaced by run_until_idle/stop
            log.exception("worker %s: thread %s died", self.id, threading.current_thread().name)
            self._failed = exc
            self._stopping.set()
            self._notify_everyone()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop finding work, let in-flight cells finish (bounded), leave, close the observers."""
        with self._lifecycle:
            if not self._running:
                return
            self._stopping.set()
            self.wake()
            self._notify_everyone()
            deadline = time.monotonic() + timeout
            stuck = []
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    stuck.append(thread.name)
            self._threads = []
            self.deleter.close(max(1.0, deadline - time.monotonic()))
            self._running = False
            self._work.clear()
            try:
                self._persist_stats("stopped")
                self.membership.leave()
            except StorageError as exc:
                log.warning("worker %s: could not record its stop (%s); its lease expires"
                            " by itself", self.id, exc)
            for obs in self.registry:
                try:
                    obs.close()
                except Exception:
                    log.exception("worker %s: close() of %s failed", self.id, obs.name)
            if stuck:
                raise WorkerFailed(f"worker {self.id}: threads {stuck} did not finish in"
                                   f" {timeout}s (an observer still running?)")

    def _notify_everyone(self) -> None:
        self._work.notify_everyone()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Hint that notifications were just written: scan now instead of at the next poll."""
        for event in self._wakes:
            event.set()

    def run_until_idle(self, timeout: float = 60.0) -> WorkerStats:
        """Process until no notification of this worker's columns is pending, in any share.

        Starts the worker if it is not running (and stops it again before returning).
        Pending includes cells backing off, writers still undecided and other workers'
        shares (a dead worker's share is taken over when its lease expires).  Raises
        WorkerTimeout after ``timeout`` seconds, WorkerFailed if a thread died.
        """
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        deadline = time.monotonic() + timeout
        started_here = not self._running
        if started_here:
            self.start()
        try:
            while True:
                self._raise_if_failed()
                if self._idle():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    s = self.stats()
                    raise WorkerTimeout(
                        f"worker {self.id}: notifications still pending after {timeout}s"
                        f" (queued {s.queued}, in flight {s.in_flight}, backing off"
                        f" {s.backing_off}, backlog {s.backlog}; last error:"
                        f" {self.last_error or 'none'})")
                self.wake()
                with self._work.lock:
                    self._work.finished.wait(min(remaining, max(self.poll_interval, 0.005)))
        finally:
            if started_here:
                self.stop()
        return self.stats()

    def _idle(self) -> bool:
        """Nothing queued, in flight or being deleted, before and after a fresh probe that
        found nothing."""
        work = self._work
        with work.lock:
            if any(work.counts()):
                return False
            marker = work.started
        if self.deleter.pending:
            return False
        if notifications.has_pending(self.client.store, self.table, self.columns):
            return False
        with work.lock:
            if any(work.counts()) or work.started != marker:
                return False
            self._backlog.clear()
            return True

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise WorkerFailed(f"worker {self.id}: a thread died: {self._failed!r}"
                               ) from self._failed

    # --- finding work -----------------------------------------------------------------------

    def _scan_loop(self, k: int) -> None:
        cursors: dict[Range, bytes] = {}
        spans: list[Range] = []
        spans_at = -_SPAN_REFRESH
        taken = -1  # the work queue's started count when the last pass ended
        while not self._stopping.is_set():
            if time.monotonic() - spans_at >= _SPAN_REFRESH:
                try:
                    spans = notifications.spans(self.client.store, self.table)
                except StorageError as exc:
                    self._setback(f"listing notify tablets: {exc}")
                    self._stopping.wait(self.poll_interval)
                    continue
                spans_at = time.monotonic()
                with self._work.lock:
                    for gone in [key for key in self._backlog
                                 if key[0] == k and key[1] not in spans]:
                        del self._backlog[gone]
            if not self._work.wait_for_take(taken):
                return
            fresh = 0
            for span in spans[k::self.scan_threads]:
                fresh += self._scan_span(k, span, cursors)
                if self._stopping.is_set():
                    return
            with self._work.lock:
                taken = self._work.started
            if not fresh:
                self._wakes[k].wait(self.poll_interval)
                self._wakes[k].clear()

    def _scan_span(self, k: int, span: Range, cursors: dict[Range, bytes]) -> int:
        """Scan one tablet span from its cursor to its end; return cells newly queued."""
        fresh = 0
        pending = 0
        start = cursors.get(span, span.start)
        while not self._stopping.is_set():
            if not self._work.wait_for_room():
                return fresh
            epoch = self._work.begin_scan()
            try:
                cells, resume = notifications.scan_chunk(
                    self.client.store, self.table, span, start, self.columns, self.scan_batch)
                new, seen = self._work.offer(cells, epoch)
            except StorageError as exc:
                self._setback(f"scanning notifications: {exc}")
                self._stopping.wait(self.poll_interval)
                return fresh
            finally:
                self._work.end_scan(epoch)
            if new:
                self.counters.add("found", new)
            fresh += new
            pending += seen
            if resume is None:
                cursors[span] = span.start
                self._backlog[(k, span)] = pending
                return fresh
            start = cursors[span] = resume
        return fresh

    def _finish_later(self, client: Client, cell: PendingCell, decision: Decision) -> None:
        """Step 3 in the background: the versions are ignored by scans until deleted."""
        self._work.note_done(cell.row, cell.column, decision.decided, DELETING)
        self.deleter.submit(cell.row, cell.column, decision.decided)

    def _deleted(self, batch: list[Item]) -> None:
        n = 0
        for row, column, stamps in batch:
            self._work.note_done(row, column, stamps)
            n += len(stamps)
        self.counters.add("deleted", n)
        self.compaction.note_deleted(n)

    # --- processing -------------------------------------------------------------------------

    def _process_loop(self) -> None:
        while True:
            taken = self._work.take()
            if taken is None:
                return
            cells, batching = taken
            requeued = False
            try:
                if len(cells) == 1:
                    self._handle_one(cells[0])
                else:
                    requeued = self._handle_batch(cells)
            finally:
                self._work.done(cells, batching, requeued)

    def _handle_one(self, cell: PendingCell) -> None:
        try:
            self._handle(cell)
        except Exception as exc:  # noqa: BLE001 -- parking failed: try the cell again later
            self._setback(f"({cell.row!r}, {cell.column!r}): {exc!r}")
            self.retry.retry_later(cell.key, repr(exc))

    def _handle_batch(self, cells: list[PendingCell]) -> bool:
        """Several cells of one column in one observer transaction; True if they were
        put back in the queue (no longer this processor's).

        Lost a conflict or met a transient setback: the cells go back to the front of the
        queue and the column's batches halve (other workers update the same cells; a
        whole batch retried one cell at a time would cost a transaction each).  The
        observer raised: each cell on its own, which finds, counts, retries and parks
        the failing one.
        """
        column = cells[0].column
        obs = self.registry.get(column)
        assert obs is not None, "scans only ask for observed columns"
        try:
            results = process_cells(self.client, obs, cells, finish=self._finish_later)
        except Exception as exc:  # noqa: BLE001 -- an observer may raise anything
            self._setback(f"batch of {len(cells)} cells of {column!r}: {exc!r}")
            if isinstance(exc, CommitConflict) or is_transient(exc):
                self.counters.add("conflicts" if isinstance(exc, CommitConflict) else "retries")
                if isinstance(exc, CommitConflict):
                    self.metrics.collision(column)
                self._requeue(cells)
                return True
            log.info("worker %s: a batch of %d cells of %r failed (%r); running them one"
                     " at a time", self.id, len(cells), column, exc)
            for cell in cells:
                self._handle_one(cell)
            return False
        self.counters.add("batches")
        timed = False
        for cell, result in zip(cells, results):
            self._account(cell, obs, result, timed=timed)
            timed = timed or result.outcome is Outcome.PROCESSED
        return False

    def _requeue(self, cells: list[PendingCell]) -> None:
        """Put a failed batch back at the front of the queue, to be taken in halves."""
        self.batch_limits.shrink(cells[0].column, len(cells))
        self._work.requeue(cells)

    def _handle(self, cell: PendingCell) -> None:
        key = cell.key
        obs = self.registry.get(cell.column)
        assert obs is not None, "scans only ask for observed columns"
        try:
            result = process_cell(self.client, obs, cell, finish=self._finish_later)
        except MalformedNotification as exc:
            self._park(cell, str(exc), 1)
            return
        except CommitConflict as exc:
            self.counters.add("conflicts")
            self.metrics.collision(cell.column)
            self.retry.retry_later(key, f"conflict: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 -- an observer may raise anything
            if is_transient(exc):
                self.counters.add("retries")
                self._setback(f"({cell.row!r}, {cell.column!r}): {exc!r}")
                self.retry.retry_later(key, repr(exc))
                return
            self._failed_run(cell, obs, exc)
            return
        self._account(cell, obs, result)

    def _account(self, cell: PendingCell, obs: Observer, result: CellResult, *,
                 timed: bool = False) -> None:
        """Count a cell's result and call its hook; ``timed``: its transaction's latency was
        recorded already (a batch is one sample)."""
        key = cell.key
        decision = result.decision
        if result.outcome is Outcome.PROCESSED:
            self.counters.add("processed")
            self.metrics.processed(cell.column, None if timed else result.observer_seconds)
            if not timed:  # once per transaction
                self.counters.latency(result.observer_seconds)
                self.batch_limits.grow(cell.column)
                if result.wrote > 1:
                    self.wake()  # its writes may have left notifications: look now
            try:
                obs.committed(cell.row, cell.column, result.commit_ts)
            except Exception:
                log.exception("worker %s: committed() hook of %s failed", self.id, obs.name)
        elif result.outcome is Outcome.SKIPPED:
            self.counters.add("skipped")
        elif result.outcome is Outcome.DROPPED:
            self.counters.add("dropped")
        if decision.locked:
            self.counters.add("retries")
            self.retry.retry_later(key, "writer still undecided")
        else:
            self.retry.forget(key)

    def _failed_run(self, cell: PendingCell, obs: Observer, exc: Exception) -> None:
        error = f"{obs.name}: {''.join(traceback.format_exception_only(exc)).strip()}"
        failures = self.retry.failed(cell.key, error)
        self.counters.add("failures")
        self.metrics.failure(cell.column)
        log.warning("worker %s: observer %s failed on (%r, %r), failure %d of %d: %s",
                    self.id, obs.name, cell.row, cell.column, failures,
                    self.retry.max_failures, exc)
        if self.retry.should_park(failures):
            self._park(cell, error, failures)

    def _park(self, cell: PendingCell, error: str, failures: int) -> None:
        info = ParkInfo(failures, error[:4000], self.clock.now_ms(), self.id)
        parking.park(self.client.store, self.client.table, cell.row, cell.column,
                     cell.versions, info)
        self._work.note_done(cell.row, cell.column, [ts for ts, _ in cell.versions])
        self.retry.forget(cell.key)
        self.counters.add("parked")
        self.metrics.parked(cell.column)
        log.error("worker %s: parked notification of (%r, %r) after %d failures: %s",
                  self.id, cell.row, cell.column, failures, error)

    def _setback(self, message: str) -> None:
        self.last_error = message
        log.debug("worker %s: %s", self.id, message)

    # --- maintenance ------------------------------------------------------------------------

    def _maintenance_loop(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_interval
        next_stats = time.monotonic()
        next_forget = time.monotonic() + _FORGET_EVERY
        step = min(self.heartbeat_interval, self.stats_interval, WAIT_SLICE)
        while not self._stopping.wait(step):
            now = time.monotonic()
            try:
                if now >= next_forget:
                    forget_gone_workers(self.client.store, self.client.table,
                                        self.clock.now_ms())
                    next_forget = now + _FORGET_EVERY
                if now >= next_beat:
                    self.membership.heartbeat()
                    next_beat = now + self.heartbeat_interval
                if now >= next_stats:
                    self._persist_stats("running")
                    next_stats = now + self.stats_interval
                idle = self.compaction.pending >= IDLE_COMPACT_MIN and self._idle()
                if self.compaction.maybe_compact(idle=idle):
                    self.counters.compactions += 1
            except StorageError as exc:
                self._setback(f"maintenance: {exc}")

    def _persist_stats(self, state: str) -> None:
        self.client.store.mutate_rows([RowMutation(
            workers_table(self.client.table), self.id.encode(),
            (Put(STATS_COLUMN, 0, self.stats(state).to_json()),))])

    # --- visibility -------------------------------------------------------------------------

    def stats(self, state: str | None = None) -> WorkerStats:
        """A snapshot of this worker's counters."""
        counts, latency = self.counters.snapshot()
        with self._work.lock:
            queued, in_flight = self._work.counts()
            scanned = sum(self._backlog.values())
        return WorkerStats(
            worker=self.id, state=state or ("running" if self._running else "stopped"),
            threads=self.threads, **counts, backlog=max(scanned, queued + in_flight),
            queued=queued, in_flight=in_flight, backing_off=len(self.retry),
            latency_p50_ms=round(percentile(latency, 50), 3),
            latency_p99_ms=round(percentile(latency, 99), 3),
            compactions=self.counters.compactions, started_ms=self._started_ms,
            updated_ms=self.clock.now_ms())

    def peers(self, column: bytes) -> tuple[str, ...]:
        """Live workers (by this worker's last heartbeat) sharing ``column``'s notifications."""
        return self.membership.members(column)
