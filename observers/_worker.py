"""Worker: takes the notifications of its buckets, runs observers on many threads, backs
off, parks, reports.

Threads of one worker::

    feed (1)         pulls entries of the buckets the node assigned it (a long poll
                     when idle), hands finished entries back, releases revoked
                     buckets, renews its lease, reports its counters (observers._feed)
    processors (N)   take a cell, run the per-cell protocol (observers._processing),
                     then count, back off or park

Between them, the work queue (observers._work_queue): a cell is queued or in flight at
most once per worker; entries of a queued cell coalesce.  Failing cells back off (in
clock time) and are held until due, so they never hold up others.  Everything the
worker does to shared state goes through the backend's notification verbs
(``client.notifications``): no raw writes, the node checks each.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Self

from bigtable_lite import StorageError
from percolator import Client, CommitConflict
from percolator.clock import Clock
from percolator.errors import OracleError

from ._batch_limits import BatchLimits
from ._feed import Feed
from ._layout import ParkInfo, encode_park_info
from ._metrics import ObserverMetrics
from ._notifications import PendingCell, done_refs
from ._ownership import Ownership
from ._processing import CellResult, MalformedNotification, Outcome, process_cell, process_cells
from ._registry import Observer, ObserverRegistry
from ._retry import DEFAULT_BACKOFF, OUTAGE_BACKOFF, Backoff, RetryBook, is_transient
from ._stats import Counters, WorkerStats, percentile
from ._work_queue import WorkQueue
from .errors import ConfigurationError, WorkerFailed, WorkerTimeout

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 10.0
DEFAULT_HEARTBEAT = 1.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Runs ``observers`` for the notifications of ``client``'s table.

    Constructing a worker registers its observers' columns (so every commit leaves
    notifications for them, and cells committed before are backfilled).
    ``start()``/``stop()`` run it in the background; ``run_until_idle(timeout)`` runs it
    (if not running) until no notification of its columns is pending anywhere.  Stop
    the worker before closing its client.  ``lease_ttl``: how long the node waits before
    giving a silent worker's buckets to others; ``heartbeat``: longest time between two
    pulls while busy.
    """

    def __init__(self, client: Client, observers: Iterable[Observer] | ObserverRegistry, *,
                 threads: int = 4, max_failures: int = 5, backoff: Backoff = DEFAULT_BACKOFF,
                 lease_ttl: float = DEFAULT_LEASE_TTL, heartbeat: float = DEFAULT_HEARTBEAT,
                 stats_interval: float = 2.0, queue_size: int | None = None,
                 worker_id: str | None = None, clock: Clock | None = None) -> None:
        self.registry = (observers if isinstance(observers, ObserverRegistry)
                         else ObserverRegistry(observers))
        if not len(self.registry):
            raise ConfigurationError("a worker needs at least one observer")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if not heartbeat > 0 or not stats_interval > 0:
            raise ValueError("heartbeat and stats_interval must be positive")
        if not lease_ttl >= 2 * heartbeat or not 0.5 <= lease_ttl <= 600:
            raise ValueError("lease_ttl must be in [0.5, 600] s and at least twice the"
                             " heartbeat")
        self.client = client
        self.id = worker_id or new_worker_id()
        self.threads = threads
        self.heartbeat_interval = heartbeat
        self.batch_limits = BatchLimits(self.registry)
        self.queue_size = queue_size or max(64, 16 * threads, 2 * self.batch_limits.largest)
        self.clock = clock or client.clock
        self.columns = tuple(sorted(self.registry.columns))
        self.retry = RetryBook(self.clock, backoff=backoff, max_failures=max_failures)
        self.counters = Counters()
        self.metrics = ObserverMetrics(self.registry)
        self.notifications = client.notifications
        for obs in self.registry:
            assert isinstance(obs.column, bytes)
            self.notifications.register(client.table, obs.column, obs.partition_prefix)
        self.ownership = Ownership({obs.column: obs.partition_prefix  # type: ignore[misc]
                                    for obs in self.registry}, lease_ttl)
        self._stopping = threading.Event()
        self._work = WorkQueue(self.queue_size, self.batch_limits, self.retry,
                               self.ownership.holds, self._stopping,
                               may_run=lambda: not self.ownership.fenced(),
                               on_change=lambda: self.feed.poke(),
                               groups={obs.column: b"\x00" + obs.batch_group.encode()  # type: ignore[misc]
                                       for obs in self.registry if obs.batch_group},
                               gather={obs.column: float(obs.gather)  # type: ignore[misc]
                                       for obs in self.registry if obs.gather},
                               clock=lambda: self.clock.now_ms() / 1000.0)
        self.feed = Feed(self.notifications, client.table, self.id, self.ownership,
                         self._work, self.counters, heartbeat=heartbeat,
                         stats=self._stats_json, stats_interval=stats_interval,
                         stopping=self._stopping)
        self._threads: list[threading.Thread] = []
        self._feed_thread: threading.Thread | None = None
        self._running = False
        self._lifecycle = threading.Lock()
        self._failed: BaseException | None = None
        self.last_error = ""
        self._started_ms = 0
        self._outages = 0  # batches in a row that met a transient error

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> Self:
        """Set up the observers and start the threads."""
        with self._lifecycle:
            if self._running:
                return self
            for obs in self.registry:
                obs.setup(self.client)
                obs.attach(self.ownership)
            self._stopping.clear()
            self._failed = None
            self._started_ms = self.clock.now_ms()
            self._threads = [self._spawn(f"processor-{i}", self._process_loop)
                             for i in range(self.threads)]
            self._feed_thread = self._spawn("feed", self.feed.run)
            self._running = True
        return self

    def _spawn(self, name: str, target: object) -> threading.Thread:
        thread = threading.Thread(target=self._guard, args=(target,),
                                  name=f"observers-{name}", daemon=True)
        thread.start()
        return thread

    def _guard(self, target: object) -> None:
        """Run a thread body; an unexpected error stops the worker visibly instead of silently."""
        try:
            target()  # type: ignore[operator]
        except BaseException as exc:  # a bug: surfaced by run_until_idle/stop
            log.exception("worker %s: thread %s died", self.id, threading.current_thread().name)
            self._failed = exc
            self._stopping.set()
            self._work.notify_everyone()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop taking work, let in-flight cells finish (bounded), leave, close the observers."""
        with self._lifecycle:
            if not self._running:
                return
            self._stopping.set()
            self._work.notify_everyone()
            self.feed.poke()
            deadline = time.monotonic() + timeout
            stuck = []
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    stuck.append(thread.name)
            self.feed.leave(b"")  # ends a pull waiting at the node
            if self._feed_thread is not None:
                self._feed_thread.join(max(1.0, deadline - time.monotonic()))
            self._threads = []
            self._running = False
            self._work.clear()
            self.feed.leave(self._stats_json("stopped")[1])
            for obs in self.registry:
                try:
                    obs.close()
                except Exception:
                    log.exception("worker %s: close() of %s failed", self.id, obs.name)
            if stuck:
                raise WorkerFailed(f"worker {self.id}: threads {stuck} did not finish in"
                                   f" {timeout}s (an observer still running?)")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Pull now (new notifications reach a running worker by themselves)."""
        self.feed.poke()

    def run_until_idle(self, timeout: float = 60.0) -> WorkerStats:
        """Process until no notification of this worker's columns is pending, in any bucket.

        Starts the worker if it is not running (and stops it again before returning).
        Pending includes cells backing off and other workers' buckets (a dead worker's
        are taken over when its lease expires).  Raises WorkerTimeout after ``timeout``
        seconds, WorkerFailed if a thread died.
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
                        f" {s.backing_off}, buckets {s.buckets}; last error:"
                        f" {self.last_error or self.feed.last_error or 'none'})")
                with self._work.lock:
                    self._work.finished.wait(min(remaining, 0.05))
        finally:
            if started_here:
                self.stop()
        return self.stats()

    def _idle(self) -> bool:
        """Nothing held, running or unsent here, and no entry of these columns in the log."""
        with self._work.lock:
            if any(self._work.counts()):
                return False
        if self.feed.unsent:
            return False
        try:
            return self.notifications.pending(self.client.table, self.columns, 1) == 0
        except (StorageError, OracleError) as exc:
            self.last_error = f"pending: {exc}"
            return False

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise WorkerFailed(f"worker {self.id}: a thread died: {self._failed!r}"
                               ) from self._failed

    # --- processing -------------------------------------------------------------------------

    def _finish(self, client: Client, cell: PendingCell) -> None:
        self.feed.finished(cell.entries)
        self.counters.add("deleted", len(cell.entries))

    def _process_loop(self) -> None:
        while True:
            taken = self._work.take()
            if taken is None:
                return
            cells, batching = taken
            retry: list[PendingCell] = []
            requeued = False
            try:
                if len(cells) == 1:
                    retry = self._handle_one(cells[0])
                else:
                    requeued, retry = self._handle_batch(cells)
            finally:
                self._work.done(cells, batching, requeued, retry)

    def _handle_one(self, cell: PendingCell) -> list[PendingCell]:
        """Run one cell; the cells to hold for a retry (it, after a setback)."""
        try:
            return self._handle(cell)
        except Exception as exc:  # noqa: BLE001 -- parking failed: try the cell again later
            self._setback(f"({cell.row!r}, {cell.column!r}): {exc!r}")
            self.retry.retry_later(cell.key, repr(exc))
            return [cell]

    def _handle_batch(self, cells: list[PendingCell]) -> tuple[bool, list[PendingCell]]:
        """Several cells of one column in one observer transaction: (put back in the queue,
        cells to hold for a retry).

        Lost a conflict or met a transient setback: the cells go back to the front of the
        queue and the column's batches halve.  The observer raised: each cell on its own,
        which finds, counts, retries and parks the failing one.
        """
        column = cells[0].column
        columns = {cell.column for cell in cells}
        group = [obs for obs in self.registry if obs.column in columns]  # registry order
        try:
            results = process_cells(self.client, group, cells, finish=self._finish)
        except Exception as exc:  # noqa: BLE001 -- an observer may raise anything
            self._setback(f"batch of {len(cells)} cells of {column!r}: {exc!r}")
            if isinstance(exc, CommitConflict) or is_transient(exc):
                conflict = isinstance(exc, CommitConflict)
                self.counters.add("conflicts" if conflict else "retries")
                if conflict:
                    self.metrics.collision(column)
                for c in columns:
                    self.batch_limits.shrink(c, sum(cell.column == c for cell in cells))
                self._work.requeue(cells)
                if not conflict:  # the node away (restarting?): do not spin on it
                    self._outages += 1
                    self._stopping.wait(OUTAGE_BACKOFF.delay(self._outages))
                return True, []
            log.info("worker %s: a batch of %d cells of %r failed (%r); running them one"
                     " at a time", self.id, len(cells), column, exc)
            return False, [c for cell in cells for c in self._handle_one(cell)]
        self._outages = 0
        self.counters.add("batches")
        timed = False
        grown: set[bytes] = set()
        for cell, result in zip(cells, results):
            obs = self.registry.get(cell.column)
            assert obs is not None
            self._account(cell, obs, result, timed=timed)
            if result.outcome is Outcome.PROCESSED:
                if timed and cell.column not in grown:
                    self.batch_limits.grow(cell.column)
                timed = True
                grown.add(cell.column)
        return False, []

    def _handle(self, cell: PendingCell) -> list[PendingCell]:
        key = cell.key
        obs = self.registry.get(cell.column)
        assert obs is not None, "the feed only asks for observed columns"
        try:
            result = process_cell(self.client, obs, cell, finish=self._finish)
        except MalformedNotification as exc:
            return self._park(cell, str(exc), 1)
        except CommitConflict as exc:
            self.counters.add("conflicts")
            self.metrics.collision(cell.column)
            self.retry.retry_later(key, f"conflict: {exc}")
            return [cell]
        except Exception as exc:  # noqa: BLE001 -- an observer may raise anything
            if is_transient(exc):
                self.counters.add("retries")
                self._setback(f"({cell.row!r}, {cell.column!r}): {exc!r}")
                self.retry.retry_later(key, repr(exc))
                return [cell]
            return self._failed_run(cell, obs, exc)
        self._account(cell, obs, result)
        return []

    def _account(self, cell: PendingCell, obs: Observer, result: CellResult, *,
                 timed: bool = False) -> None:
        """Count a cell's result and call its hook; ``timed``: its transaction's latency was
        recorded already (a batch is one sample)."""
        if result.outcome is Outcome.PROCESSED:
            self.counters.add("processed")
            self.metrics.processed(cell.column, None if timed else result.observer_seconds)
            if not timed:  # once per transaction
                self.counters.latency(result.observer_seconds)
                self.batch_limits.grow(cell.column)
            try:
                obs.committed(cell.row, cell.column, result.commit_ts)
            except Exception:
                log.exception("worker %s: committed() hook of %s failed", self.id, obs.name)
        else:
            self.counters.add("skipped")
        self.retry.forget(cell.key)

    def _failed_run(self, cell: PendingCell, obs: Observer, exc: Exception
                    ) -> list[PendingCell]:
        error = f"{obs.name}: {''.join(traceback.format_exception_only(exc)).strip()}"
        failures = self.retry.failed(cell.key, error)
        self.counters.add("failures")
        self.metrics.failure(cell.column)
        log.warning("worker %s: observer %s failed on (%r, %r), failure %d of %d: %s",
                    self.id, obs.name, cell.row, cell.column, failures,
                    self.retry.max_failures, exc)
        if self.retry.should_park(failures):
            return self._park(cell, error, failures)
        return [cell]

    def _park(self, cell: PendingCell, error: str, failures: int) -> list[PendingCell]:
        info = ParkInfo(failures, error[:4000], self.clock.now_ms(), self.id)
        self.notifications.park(self.client.table, self.id, done_refs(cell.entries),
                                encode_park_info(info))
        self.retry.forget(cell.key)
        self.counters.add("parked")
        self.metrics.parked(cell.column)
        log.error("worker %s: parked notification of (%r, %r) after %d failures: %s",
                  self.id, cell.row, cell.column, failures, error)
        return []

    def _setback(self, message: str) -> None:
        self.last_error = message
        log.debug("worker %s: %s", self.id, message)

    # --- visibility -------------------------------------------------------------------------

    def stats(self, state: str | None = None) -> WorkerStats:
        """A snapshot of this worker's counters."""
        counts, latency = self.counters.snapshot()
        with self._work.lock:
            queued, in_flight = self._work.counts()
        return WorkerStats(
            worker=self.id, state=state or ("running" if self._running else "stopped"),
            threads=self.threads, **counts, backlog=queued + in_flight, queued=queued,
            in_flight=in_flight, backing_off=len(self.retry),
            latency_p50_ms=round(percentile(latency, 50), 3),
            latency_p99_ms=round(percentile(latency, 99), 3),
            buckets=self.ownership.buckets, member_index=self.ownership.member_index,
            pulls=self.feed.pulls, started_ms=self._started_ms, updated_ms=self.clock.now_ms())

    def _stats_json(self, state: str | None = None) -> tuple[bytes, bytes]:
        """(fingerprint: the counters without the time, the JSON the node keeps)."""
        stats = self.stats(state).as_dict()
        payload = json.dumps(stats, sort_keys=True).encode()
        stats.pop("updated_ms")
        stats.pop("pulls")
        return json.dumps(stats, sort_keys=True).encode(), payload
