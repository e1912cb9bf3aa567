"""Retry: when a cell may be tried again, and when it has failed often enough to be parked.

Two kinds of setback, kept apart:

* failures -- the observer raised.  Counted per cell; retried after an exponential
  backoff; after ``max_failures`` the worker parks the cell (observers._parking).
* retries -- not the observer's fault: a write-write conflict, a writer still
  alive (its lock undecided), a store or oracle hiccup.  Retried with a short
  backoff, never counted towards parking (a cluster-wide outage must not park
  everything).

The book is in memory, per worker: a crashed worker's counts are lost, so a failing
cell is retried a few more times by whoever comes next -- more work, never less.
Time comes from a :class:`~percolator.clock.Clock` so tests move it by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bigtable_lite import StorageError
from percolator.clock import Clock
from percolator.errors import CommitUndetermined, LockWaitTimeout, OracleError, SnapshotTooOld
from percolator.failpoints import FailpointError

T = TypeVar("T")
log = logging.getLogger(__name__)

Key = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt n+1 after n setbacks: initial * multiplier**(n-1), capped."""

    initial: float = 0.05
    multiplier: float = 2.0
    maximum: float = 30.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1:
            raise ValueError("backoff needs initial >= 0, maximum >= 0 and multiplier >= 1")

    def delay(self, setbacks: int) -> float:
        if setbacks <= 0:
            return 0.0
        return min(self.maximum, self.initial * self.multiplier ** min(setbacks - 1, 64))


DEFAULT_BACKOFF = Backoff()
RETRY_BACKOFF = Backoff(0.002, 2.0, 0.5)  # conflicts, transient errors: busy again soon


@dataclass(slots=True)
class CellRetry:
    failures: int = 0
    retries: int = 0
    due_ms: int = 0
    last_error: str = ""


class RetryBook:
    """Per-cell setbacks of one worker (thread-safe)."""

    def __init__(self, clock: Clock, *, backoff: Backoff = DEFAULT_BACKOFF,
                 retry_backoff: Backoff = RETRY_BACKOFF, max_failures: int = 5) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.clock = clock
        self.backoff = backoff
        self.retry_backoff = retry_backoff
        self.max_failures = max_failures
        self._cells: dict[Key, CellRetry] = {}
        self._lock = threading.Lock()

    def due(self, key: Key) -> bool:
        """Whether the cell may be tried now (always, unless it is backing off)."""
        state = self._cells.get(key)
        return state is None or self.clock.now_ms() >= state.due_ms

    def due_ms(self, key: Key) -> int:
        state = self._cells.get(key)
        return 0 if state is None else state.due_ms

    def failed(self, key: Key, error: str) -> int:
        """Record an observer failure; return the cell's failure count so far."""
        with self._lock:
            state = self._cells.setdefault(key, CellRetry())
            state.failures += 1
            state.last_error = error
            state.due_ms = self.clock.now_ms() + int(self.backoff.delay(state.failures) * 1000)
            return state.failures

    def retry_later(self, key: Key, reason: str) -> None:
        """Record a setback that is not the observer's fault."""
        with self._lock:
            state = self._cells.setdefault(key, CellRetry())
            state.retries += 1
            state.last_error = state.last_error or reason
            state.due_ms = self.clock.now_ms() + int(
                self.retry_backoff.delay(state.retries) * 1000)

    def should_park(self, failures: int) -> bool:
        return failures >= self.max_failures

    def forget(self, key: Key) -> None:
        """The cell succeeded (or was parked): clear its record."""
        if key in self._cells:
            with self._lock:
                self._cells.pop(key, None)

    def state(self, key: Key) -> CellRetry | None:
        return self._cells.get(key)

    def __len__(self) -> int:
        return len(self._cells)


def is_transient(exc: BaseException) -> bool:
    """Setbacks that are not the caller's fault: a node away or restarting, an undecided
    commit, a lock waited on too long, a snapshot garbage collection took (a new one
    reads).  Retried; never counted towards parking."""
    if isinstance(exc, StorageError):
        return not isinstance(exc, ValueError)  # InvalidArgument/LimitExceeded: a bad write
    return isinstance(exc, (LockWaitTimeout, CommitUndetermined, OracleError, FailpointError,
                            SnapshotTooOld))


OUTAGE_BACKOFF = Backoff(0.05, 2.0, 0.5)
"""Retries through an outage: at least twice a second once the node is back."""

READY_WAIT = 0.5
"""Seconds one wait for a node to be reachable again takes at most (a stop, a lease or a
deadline is looked at in between)."""


def reconnect_or_back_off(ready: Callable[[float], bool], delay: float,
                          sleep: Callable[[float], object], wait: float = READY_WAIT) -> None:
    """After a failed call: wait until the node can be reached (``ready``, a connectivity
    watch, at most ``wait`` seconds), so the call is made again as soon as a restarted
    node takes connections; if it could be reached all along (it refused the call), sleep
    out ``delay`` seconds instead."""
    began = time.monotonic()
    if ready(wait):
        left = delay - (time.monotonic() - began)
        if left > 0:
            sleep(left)


def through_outages(fn: Callable[[], T], *, timeout: float, what: str,
                    backoff: Backoff = OUTAGE_BACKOFF,
                    ready: Callable[[float], bool] | None = None) -> T:
    """``fn()``, retried on transient errors (a node restarting) for at most ``timeout``
    seconds; then the last error is raised.  ``fn`` must be safe to repeat (an undecided
    commit may have landed).  Between tries: with ``ready`` (``client.notifications.
    wait_ready``), until the node can be reached again (:func:`reconnect_or_back_off`);
    without, the back-off's delay."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            attempt += 1
            if attempt == 1:
                log.warning("%s: %s; retrying for up to %.0fs", what, exc, timeout)
            delay = min(backoff.delay(attempt), max(0.0, deadline - time.monotonic()))
            if ready is None:
                time.sleep(delay)
            else:
                reconnect_or_back_off(ready, delay, time.sleep, min(
                    READY_WAIT, max(0.0, deadline - time.monotonic())))
