"""ActiveSnapshots: the start_ts of one process's running transactions, which GC must spare.

The GC safe point must never pass the start_ts of a running transaction (docs/protocol.md,
"Garbage collection").  Each backend keeps one registry of its process's transactions:

* a transaction **enters** before it takes its start_ts, with a placeholder at a floor
  no later timestamp can be below (``floor()``: the embedded oracle's next timestamp;
  for a remote client, the highest timestamp it has received, :meth:`saw`), then
  replaces the placeholder by its start_ts once it has it (:meth:`started`), and
  **leaves** when it commits, rolls back or fails (:meth:`leave`);
* a transaction dropped without either (an abandoned read-only one) stops counting once
  nothing references it: entries hold it weakly.

Why a placeholder: the start_ts is handed out by the oracle (at a node, by a batch
that may return after a later one), and the safe point must account for it from the
moment it exists.  A placeholder registered before the request was sent is below every
timestamp the request can return, so between the two the transaction is covered too.

An embedded backend's GC reads :meth:`oldest` directly (``percolator._safe_point``); a
node's client reports :meth:`report` under a lease (``percolator._node_client``),
numbered in the order the reports were read, so the node can tell a late one.
Thread-safe without a lock on the transactions' path (each step a single dict
operation, atomic under CPython's GIL); reports take one of their own.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace

from bigtable_lite import StorageError

from .errors import TooManyClients

log = logging.getLogger(__name__)

__all__ = ["ActiveSnapshots", "Reporter", "SnapshotReport"]

_PRUNE_MIN = 1024
"""Entries of dead transactions tolerated before :meth:`ActiveSnapshots.enter` sweeps them."""


@dataclass(frozen=True, slots=True)
class SnapshotReport:
    """One report of a client's running transactions (``report_snapshots``)."""

    oldest: int | None  # the oldest start_ts of a running transaction (None: none)
    seen: int  # the highest timestamp received; every one up to it is accounted for
    seq: int  # from 1, in the order the reports were read (the node ignores a late one)


class ActiveSnapshots:
    """Registry of running transactions: token -> (weak owner, start_ts or placeholder).

    Lock-free: every method is a few single dict operations, each atomic under
    CPython's GIL, in an order that keeps :meth:`report` right (see there).
    """

    def __init__(self, floor: Callable[[], int] | None = None) -> None:
        self._floor = floor
        # token -> (its transaction, its start_ts or a placeholder, whether a placeholder)
        self._entries: dict[int, tuple[weakref.ref[object], int, bool]] = {}
        self._tokens = itertools.count(1)
        self._sweep_at = _PRUNE_MIN
        self.seen = 0  # the highest timestamp received from the backend (:meth:`saw`)
        self._reports = itertools.count(1)
        self._report_lock = threading.Lock()

    def enter(self, owner: object) -> int:
        """Register ``owner`` (a transaction about to take its start_ts); returns its token."""
        floor = self._floor() if self._floor is not None else self.seen
        token = next(self._tokens)
        self._entries[token] = (weakref.ref(owner), floor, True)
        if len(self._entries) >= self._sweep_at:
            self._sweep()
        return token

    def started(self, token: int, start_ts: int) -> None:
        """The owner of ``token`` has its start_ts (replaces the placeholder)."""
        entry = self._entries.get(token)
        if entry is not None:  # only its owner calls this, and its owner is alive
            self._entries[token] = (entry[0], start_ts, False)

    def leave(self, token: int) -> None:
        self._entries.pop(token, None)

    def saw(self, ts: int) -> None:
        """A timestamp this process received from the backend (a remote client's floor).

        Racing callers may leave ``seen`` below the highest: a lower floor and a lower
        ``seen`` in a report are both conservative."""
        if ts > self.seen:
            self.seen = ts

    def oldest(self, at_least: int = 0) -> int | None:
        """The smallest start_ts, at or above ``at_least``, of a live transaction, or a
        placeholder (raised to ``at_least``); None if none.

        A start_ts below ``at_least`` is refused already and holds nothing; a placeholder
        below it does hold: its transaction's start_ts is still to come (the placeholder
        is ``seen``, which may lag behind the safe point the client knows), and must be
        reported, or the safe point could pass it."""
        self._sweep()
        return min((ts if ts >= at_least else at_least
                    for _, ts, placeholder in list(self._entries.values())
                    if placeholder or ts >= at_least), default=None)

    def report(self, at_least: int = 0) -> SnapshotReport:
        """(:meth:`oldest` at or above ``at_least``, the safe point the client knows;
        :attr:`seen`; the report's number): every timestamp up to ``seen`` that a live
        transaction holds, and that is not refused already, is accounted for in
        ``oldest``.

        Why: ``seen`` is read first.  A transaction holding Y <= seen registered its
        placeholder before its request for Y was sent; Y was handed out no later than
        ``seen`` itself, which was received before it was read here; so the placeholder
        (or Y, or the transaction's departure) is in the entries read after.

        Numbered under a lock, so a later number is a later reading: a report read
        earlier but delivered after a later one names a state the later one has
        replaced (a transaction begun between them missing), and the node ignores it."""
        with self._report_lock:
            seq = next(self._reports)
            seen = self.seen
            return SnapshotReport(self.oldest(at_least), seen, seq)

    def __len__(self) -> int:
        self._sweep()
        return len(self._entries)

    def _sweep(self) -> None:
        """Drop entries whose transaction is gone."""
        dead = [token for token, (ref, _, _) in list(self._entries.items()) if ref() is None]
        for token in dead:
            self._entries.pop(token, None)
        self._sweep_at = max(_PRUNE_MIN, 2 * len(self._entries))


class Reporter:
    """A remote client's reports of its running transactions (``ReportSnapshots``).

    A daemon thread sends :meth:`ActiveSnapshots.report` every third of the node's lease
    (every ``first_interval`` until the node has said it: the first report must come
    within a lease of the first timestamp, whatever the lease) while the client holds
    anything -- running transactions, or timestamps received since its last report --
    and once more, holding nothing, when it falls idle or closes; idle, it sleeps until
    the client receives a timestamp again (:meth:`kick`).  A transaction below the safe
    point the client knows is not reported: it is refused already, and holds nothing.
    ``send(report)`` returns the lease in ms.  A report that fails is retried at
    the next tick (also one refused ``TooManyClients``: a client forgotten after its
    lease passed, whose principal filled its clients meanwhile); the node refuses
    whatever the lease no longer covers (``SnapshotTooOld``), so a client that cannot
    report fails closed.
    """

    def __init__(self, snapshots: ActiveSnapshots,
                 send: Callable[[SnapshotReport], int], *,
                 safe_point: Callable[[], int] = lambda: 0, first_interval: float = 0.1
                 ) -> None:
        self._snapshots = snapshots
        self._send = send
        self._safe_point = safe_point  # as the client knows it: what is below is refused
        self.interval = first_interval
        self._reported_seen = 0
        self._holding = False  # the last report held an oldest start_ts
        self._idle = True  # nothing held, nothing to report: sleeping until kicked
        self._cond = threading.Condition()
        self._closed = False
        self.reports = 0
        self._thread = threading.Thread(target=self._run, name="percolator-gc-report",
                                        daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """The client received a timestamp (after :meth:`ActiveSnapshots.saw`): wake the
        thread if it sleeps idle.  One attribute read when it does not."""
        if self._idle:
            with self._cond:
                self._idle = False
                self._cond.notify_all()

    def report_now(self) -> None:
        """Report if anything is held or was received since the last report."""
        snapshots = self._snapshots
        report = snapshots.report(self._safe_point())
        oldest, seen = report.oldest, report.seen
        if oldest is not None or self._holding or seen > self._reported_seen:
            lease_ms = self._send(report)
            self.reports += 1
            self.interval = max(0.01, lease_ms / 3000.0)
            self._reported_seen = seen
            self._holding = oldest is not None
        if oldest is None:
            # Idle, unless a timestamp arrived meanwhile (its kick saw _idle False: no wake).
            with self._cond:
                if snapshots.seen == seen and snapshots.oldest(self._safe_point()) is None:
                    self._idle = True

    def _run(self) -> None:
        failures, failing_since = 0, 0.0
        while True:
            with self._cond:
                while self._idle and not self._closed:
                    self._cond.wait()
                if not self._closed:
                    self._cond.wait(timeout=self.interval)
                if self._closed:
                    return
            try:
                self.report_now()
            except (StorageError, TooManyClients) as exc:  # the node's refusals, too
                # Once per outage, not once per interval: a node that is down for a
                # minute would otherwise fill the log with the same line.
                failing_since = failing_since or time.monotonic()
                (log.debug if failures else log.warning)(
                    "report of running transactions to the node failed (%s); retrying"
                    " every %.1f s", exc, self.interval)
                failures += 1
            else:
                if failures:
                    log.info("report of running transactions to the node resumed after"
                             " %d failed attempts (%.1f s)", failures,
                             time.monotonic() - failing_since)
                failures, failing_since = 0, 0.0

    def close(self) -> None:
        """Stop; release what the last report held (best effort: the lease covers it)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        report = self._snapshots.report()
        if not self._holding and report.seen <= self._reported_seen:
            return
        try:
            self._send(replace(report, oldest=None))
        except (StorageError, TooManyClients) as exc:
            log.info("final report of running transactions failed (%s); the node's lease"
                     " releases them", exc)
