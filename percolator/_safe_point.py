"""SafePoint: the GC safe point of one store, and everything that holds it back.

Garbage collection may remove every version no snapshot at or above the safe point S
can read (docs/protocol.md, "Garbage collection"), so S must stay at or below every
snapshot still in use.  It is the minimum of:

* the oracle's timestamp ``gc_life_time`` ago: the oracle hands out counters, not
  times, so the backend keeps samples (wall-clock ms, the oracle's next timestamp),
  one a second in memory and a few persisted; a snapshot taken within the life time
  began after the newest sample at least that old, so its start_ts is at or above that
  sample's timestamp.  After a restart the first sample is (start time, the oracle's
  next timestamp, i.e. its persisted mark + 1);
* the start_ts of every step in flight (:meth:`enter`/:meth:`exit`): GC never
  collects under a running read, prewrite or commit;
* the start_ts of the running transactions of this process (``ActiveSnapshots``, read
  directly): an embedded client's, and at a node the transactions its Transactions
  service holds open for remote callers (each a ``Transaction`` over this backend,
  registered like any other until its session ends: committed, rolled back, or expired
  by its TTL);
* for each remote client (identified by its caller's principal and the ``client_id``
  of its batches, ``_leases.client_key``): the oldest start_ts it reported, under a
  lease (:meth:`report`), and every timestamp handed to it since (:meth:`timestamps`,
  :meth:`fresh`) that its last report did not cover (``percolator._leases``).  A
  client that stops reporting (killed) holds nothing once its lease has passed;
* for each remote client that held anything when the store was last closed or its
  node killed: the floor of its lease persisted then, until it reports again or one
  lease has passed since the open (``percolator._leases``).

S only moves forward, and is persisted (``_gc`` table) before anything below it is
collected.  A timestamp handed to a remote client is pinned under the lock S is
computed under, so S can never be computed between the hand-out and the pin; a client
that holds nothing yet, or would hold below its lease's floor, has the floor persisted
first.  A step at a start_ts below S fails with ``SnapshotTooOld`` before it reads or
writes anything; one at a timestamp the oracle has not handed out yet, with
``InvalidArgument``.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable

from bigtable_lite import MAX_TS, InvalidArgument, TabletStore

from . import _gc_table as gc_table
from . import _leases
from ._gc_table import Sample
from ._snapshots import ActiveSnapshots
from .clock import Clock
from .errors import SnapshotTooOld, TooManyClients
from .oracle import Oracle

__all__ = ["DEFAULT_CLIENT_LEASE", "SafePoint"]

DEFAULT_CLIENT_LEASE = 30.0
"""Seconds a remote client's report (and each timestamp handed to it) holds the safe
point; clients report every third of it."""
SAMPLE_EVERY_MS = 1000
HELD_BY = {
    "life time": "gc_life_time",
    "no history": "the oracle's history, which does not reach back gc_life_time yet (the"
                  " store was opened more recently)",
    "transactions": "a running transaction of this process (at a node: a transaction"
                    " the Transactions service holds open)",
    "clients": "a running transaction of a client (or a timestamp handed to it)",
    "restored clients": "the lease of a client from before the store was opened (until the"
                        " client reports again, or one lease after the open)",
    "steps": "a step in flight",
}
"""What held the safe point back at a pass, for ``GcPass.held_by``."""
PERSISTED_SAMPLES = 64


class SafePoint:
    """The safe point of the store behind one ``LocalBackend`` (thread-safe).

    The steps' side is lock-free (each a single dict operation, atomic under CPython's
    GIL) and ordered against :meth:`advance` as in Dekker's algorithm: a step registers
    its start_ts, then reads ``floor``; ``advance`` raises ``floor`` to its candidate,
    then reads the registered steps.  Either it sees the step (and stays at or below
    it), or the step sees the raised floor (and is refused).
    """

    def __init__(self, store: TabletStore, oracle: Oracle, clock: Clock,
                 local: ActiveSnapshots, *, life_time: float, client_lease: float) -> None:
        if not life_time >= 0:
            raise ValueError("gc_life_time must be a number of seconds >= 0")
        if not client_lease > 0:
            raise ValueError("the client lease must be positive")
        self._store = store
        self._oracle = oracle
        self._clock = clock
        self._local = local
        self.life_ms = int(life_time * 1000)
        self.lease_ms = int(client_lease * 1000)
        self._lock = threading.Lock()  # advances, and remote clients' pins
        # Writes of the _gc table, held from a lease row's computation to its write: a
        # lease row is written (a client registered) or deleted (by a pass) only under it.
        # Taken before self._lock, never after.
        self._persist_lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # token -> start_ts of a step in flight
        self._tokens = itertools.count(1)
        self._leases = _leases.ClientLeases(self.lease_ms, gc_table.read_leases(store),
                                            clock.monotonic_ms(), min(oracle.peek(), MAX_TS))
        status = gc_table.read_status(store)
        self.value = status.safe_point  # collected below; only ever raised
        self.floor = self.value  # steps below it are refused (>= value; see the class)
        self._persisted = status.safe_point
        now = clock.now_ms()
        self._samples: deque[Sample] = deque(
            s for s in gc_table.read_samples(store) if s[0] <= now)
        self._add_sample(now)

    # --- the steps' side (hot path) -------------------------------------------------------

    def enter(self, start_ts: int) -> int:
        """A step at ``start_ts`` begins: SnapshotTooOld if it is below the safe point,
        else the safe point cannot pass it until :meth:`exit` with the returned token."""
        token = next(self._tokens)
        self._inflight[token] = start_ts
        if start_ts < self.floor:  # read after registering: see the class
            del self._inflight[token]
            raise self._too_old(start_ts)
        if start_ts >= self._oracle.peek():
            del self._inflight[token]
            raise self._not_handed_out(start_ts)
        return token

    def exit(self, token: int) -> None:
        del self._inflight[token]

    def check(self, start_ts: int) -> None:
        """SnapshotTooOld if ``start_ts`` is below the safe point (no registration)."""
        if start_ts < self.floor:
            raise self._too_old(start_ts)

    def _too_old(self, start_ts: int) -> SnapshotTooOld:
        return SnapshotTooOld.below(start_ts, self.floor)

    def _not_handed_out(self, start_ts: int) -> InvalidArgument:
        """A step at a timestamp the oracle has not handed out: its snapshot is not fixed
        yet (a commit could still land below it), and what it wrote would be marked below
        its own timestamps for GC (``_gc_rows``), never read again."""
        return InvalidArgument(f"timestamp {start_ts} was not handed out by this oracle"
                               f" (the next is {self._oracle.peek()}): take start_ts from it")

    def timestamps(self, count: int, client: bytes = b"") -> int:
        """The first of ``count`` fresh timestamps; pinned for ``client`` (if any) until its
        next report or its lease passes, in one step with the hand-out."""
        oracle = self._oracle
        take: Callable[[], int] = (
            oracle.get_timestamp if count == 1 else lambda: oracle.get_timestamps(count))
        if not client:  # an embedded transaction registered itself before asking
            return take()
        return self._hand_out(client, take)

    def fresh(self, client: bytes = b"") -> tuple[int, int]:
        """A fresh start_ts for a fresh read, entered as a step in flight (a placeholder
        first, as ``ActiveSnapshots`` does) and pinned for ``client``: (start_ts, token
        for :meth:`exit`)."""
        token = next(self._tokens)
        self._inflight[token] = self._oracle.peek()  # at or below the timestamp taken next
        try:
            if client:
                ts = self._hand_out(client, self._oracle.get_timestamp)
            else:
                ts = self._oracle.get_timestamp()
        except BaseException:
            del self._inflight[token]
            raise
        self._inflight[token] = ts
        return ts, token

    def _hand_out(self, client: bytes, take: Callable[[], int]) -> int:
        """``take()`` (a hand-out of timestamps) pinned for ``client`` under the lock; the
        client's lease floor persisted first if it has none (``_leases``: a client that
        held nothing until now)."""
        leases = self._leases
        with self._lock:
            if leases.row(client) is not None:  # at or below the oracle's next timestamp
                first = take()
                leases.pin(client, first, self._clock.monotonic_ms())
                return first
        with self._persist_lock:  # no pass deletes the row from here to the hand-out
            self._register(client, None)
            with self._lock:
                first = take()
                leases.pin(client, first, self._clock.monotonic_ms())
                return first

    def _floored(self, client: bytes, oldest: int | None) -> bool:
        """Whether ``client``'s persisted floor is at or below what it would hold with
        ``oldest`` (any row will do for None: the hand-outs to come are above it).
        Called under the lock; a report held below the safe point holds at it."""
        row = self._leases.row(client)
        return row is not None and (oldest is None or row <= max(oldest, self.value))

    def _register(self, client: bytes, oldest: int | None) -> None:
        """Persist ``client``'s lease floor (fsync) unless :meth:`_floored`: the oracle's
        next timestamp (below every later hand-out), its row and ``oldest`` if lower.
        TooManyClients, before anything is written, for a new client past its
        principal's bound (``_leases``).  Called under ``_persist_lock`` (no pass moves
        the row meanwhile)."""
        with self._lock:
            if self._floored(client, oldest):
                return
            if self._leases.full(client):
                raise TooManyClients(
                    f"refused a new client: its principal holds GC leases for"
                    f" {_leases.MAX_CLIENTS_PER_PRINCIPAL} clients already (each until its"
                    f" lease of {self.lease_ms / 1000:g} s passes); retry later")
            row = self._leases.row(client)
        floor = min(self._oracle.peek(), MAX_TS)
        for lower in (row, oldest):
            if lower is not None:
                floor = min(floor, lower)
        self._store.mutate_rows(gc_table.leases_mutations({client: floor}, ()), sync=True)
        with self._lock:
            self._leases.registered(client, floor)

    # --- remote clients' reports ------------------------------------------------------------

    def report(self, client: bytes, seq: int, oldest: int | None, seen: int) -> bool:
        """``client``'s report number ``seq`` of its running transactions: ``oldest``
        start_ts (None: none), accounting for every timestamp it was handed up to
        ``seen``; holds until the lease passes (on the monotonic clock: a step of the wall
        clock must not end every lease).  False if ignored: a report numbered ``seq`` or
        later was applied already (``_leases``).

        A report that would hold below the client's persisted floor (a client whose row
        a pass deleted or raised past a transaction that outlived its lease, or none
        yet) lowers the floor (fsync) first: a node killed after the answer restarts
        holding what the report held."""
        leases = self._leases
        with self._lock:  # checked and applied in one hold of the lock: no pass between
            if oldest is None or self._floored(client, oldest):
                return leases.report(client, seq, oldest, seen, self._clock.monotonic_ms())
        with self._persist_lock:
            self._register(client, oldest)
            with self._lock:
                return leases.report(client, seq, oldest, seen, self._clock.monotonic_ms())

    # --- GC's side ------------------------------------------------------------------------

    def sample(self) -> None:
        """Record (now, the oracle's next timestamp), at most one a second."""
        now = self._clock.now_ms()
        with self._lock:
            if not self._samples or now - self._samples[-1][0] >= SAMPLE_EVERY_MS:
                self._add_sample(now)

    def _add_sample(self, now_ms: int) -> None:
        samples = self._samples
        if samples and now_ms < samples[-1][0]:
            return  # the wall clock went back: keep the samples in order
        # An exhausted oracle's next timestamp (2**64) is past every timestamp and its
        # encoding: MAX_TS is a lower bound as good.
        samples.append((now_ms, min(self._oracle.peek(), MAX_TS)))
        horizon = now_ms - self.life_ms
        while len(samples) > 1 and samples[1][0] <= horizon:
            samples.popleft()  # the newest sample at or before the horizon is enough

    def _time_bound(self, now_ms: int) -> int | None:
        """The oracle's timestamp ``life_time`` ago (a lower bound); None if unknown."""
        horizon = now_ms - self.life_ms
        found = None
        for wall, ts in self._samples:
            if wall > horizon:
                break
            found = ts
        return found

    def holders(self) -> dict[str, int]:
        """What holds the safe point back now, by kind (for status and tests)."""
        now = self._clock.now_ms()
        with self._lock:
            out: dict[str, int] = {}
            bound = self._time_bound(now)
            if bound is not None:
                out["life_time"] = bound
            steps = list(self._inflight.values())
            if steps:
                out["steps"] = min(steps)
            local = self._local.oldest()
            if local is not None:
                out["transactions"] = local
            clients, restored = self._leases.oldest(self._clock.monotonic_ms())
            if clients is not None:
                out["clients"] = clients
            if restored is not None:
                out["restored_clients"] = restored
            return out

    def advance(self) -> tuple[int, str]:
        """Raise the safe point as far as nothing holds it, persist it (fsync) with the
        clients' lease floors; return it and what held it (:data:`HELD_BY`).

        Called by the collector before it collects below the returned value."""
        now, leases = self._clock.now_ms(), self._clock.monotonic_ms()
        with self._persist_lock:
            with self._lock:
                held = self._raise(now, leases)
                value = self.value
                samples = list(self._samples)
                puts, deletes = self._leases.settle(leases, value)
            # Under _persist_lock still: a client whose row is deleted here registers
            # again (its row written) only after this write.
            self._persist(value, samples, puts, deletes)
            with self._lock:  # written: (if the write failed, settle's view stands)
                self._leases.settled(puts, deletes, leases)
        return value, HELD_BY[held]

    def _raise(self, now: int, leases: int) -> str:
        """Raise the safe point as far as nothing holds it (under the lock); what held it."""
        self._add_sample(now)
        bound = self._time_bound(now)
        if bound is None:
            return "no history"
        held = "life time"
        # A holder below the safe point holds nothing any more: its snapshot is refused
        # already (a transaction kept after its client's lease passed).
        below = self.value
        candidate = bound
        # (the holders are read after the sample)
        clients, restored = self._leases.oldest(leases, below)
        for kind, oldest in (("transactions", self._local.oldest(below)),
                             ("clients", clients), ("restored clients", restored)):
            if oldest is not None and oldest < candidate:
                candidate, held = oldest, kind
        if candidate > self.floor:
            self.floor = candidate  # first: steps from now on see it ...
        steps = [ts for ts in list(self._inflight.values()) if ts >= below]
        if steps and min(steps) < candidate:  # ... then the steps already in
            candidate, held = min(steps), "steps"
        if candidate > self.value:
            self.value = candidate
        self.floor = self.value
        return held

    def save(self) -> None:
        """Persist the samples and the lease floors (on close: the next owner of the
        store starts with them)."""
        with self._persist_lock:
            with self._lock:
                self._add_sample(self._clock.now_ms())
                samples = list(self._samples)
                value = self.value
                leases = self._clock.monotonic_ms()
                puts, deletes = self._leases.settle(leases, value)
            self._persist(value, samples, puts, deletes)
            with self._lock:
                self._leases.settled(puts, deletes, leases)

    def _persist(self, value: int, samples: list[Sample], puts: dict[bytes, int],
                 deletes: list[bytes]) -> None:
        """One synced batch; called under ``_persist_lock``."""
        batch = [gc_table.samples_mutation(_thin(samples))]
        if value > self._persisted:
            batch.insert(0, gc_table.safe_point_mutation(value))
        batch.extend(gc_table.leases_mutations(puts, deletes))
        self._store.mutate_rows(batch, sync=True)
        self._persisted = max(self._persisted, value)


def _thin(samples: list[Sample]) -> list[Sample]:
    """At most PERSISTED_SAMPLES of ``samples``, spread over them, the first and last kept."""
    if len(samples) <= PERSISTED_SAMPLES:
        return samples
    step = len(samples) / (PERSISTED_SAMPLES - 1)
    picked = [samples[int(i * step)] for i in range(PERSISTED_SAMPLES - 1)]
    return picked + [samples[-1]]
