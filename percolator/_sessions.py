"""Sessions: the transactions a node holds open for callers of the Transactions service.

A caller in any language begins a transaction, reads at its snapshot, and commits its
write set in one call; between calls the node holds the transaction for it.  A session
is a real :class:`~percolator.Transaction` of a :class:`~percolator.Client` whose
backend is the node's own :class:`~percolator._local.LocalBackend`, so its reads
(settling locks met, bounded waits for live ones) and its commit (the driver: one
phase, or prewrites, heartbeats and the commit step; rollback markers; notifications)
are the Python client's code, run at the node.

A session's id is its transaction's start_ts::

    ACTIVE --Commit--> COMMITTED (commit_ts) | ABORTED (the conflict)
       |   --Rollback--> ROLLED_BACK
       |   --ttl without a call--> forgotten (expired)

* A session is its caller's (``owner``: who began it, ``bigtable_lite.auth.caller_of``;
  one caller on a node without tokens): another caller's calls on it are answered as
  for an id the node does not hold, and never take its turn, so a caller with a token
  to read cannot end, commit or hold up a writer's transaction by guessing its id.  A
  session is held from its snapshot on, while Begin's first reads still run (an id not
  held is answered from the data, which would roll it back).
* Open sessions are bounded per node (``max_open``) and per caller
  (``max_open_per_caller``), so one token cannot take every session of a node from the
  others; beyond either, Begin is refused ``TooManyTransactions`` (RESOURCE_EXHAUSTED)
  with the limit in its message.  A node without tokens has one caller: there the node's
  bound is the only one.
* Calls on one session take turns (its lock); a call waits ``busy_wait`` seconds at
  most for the one before it (TransactionBusy: retry it).
* An open session holds the GC safe point at or below its start_ts until it ends, so
  garbage collection keeps what its snapshot reads: its Transaction is registered in
  the backend's running transactions (``LocalBackend.snapshots``, which the safe point
  reads) like any other of the process, from before its start_ts existed; ending the
  session (commit, rollback, expiry by its TTL) ends the Transaction, and with it the
  hold.  An abandoned session so holds the safe point for its TTL at most (plus the
  reaper's interval).
* A Commit of a transaction the node no longer holds, whose snapshot is below the safe
  point now, is refused with ``SnapshotTooOld``: it can never commit, and whether an
  earlier Commit of it did can no longer be read there.
* A finished session's outcome is kept (:mod:`percolator._outcomes`: ``retain_ms``
  after it finished, and only the most recent ``max_kept`` in all and
  ``max_kept_per_caller`` of one caller): a Commit retried after a lost reply gets the
  first one's answer (with a different write set: WrongTransactionState), never a
  second commit.
* A Commit of an id the node does not hold (expired, its outcome forgotten, or begun
  before a node restart) is answered from the data: ``_driver.decide`` decides the
  transaction's fate through the primary its write set names (rolling it back if it is
  undecided, so it can never commit later); committed: its commit_ts, else
  TransactionNotFound.  A session whose commit failed without an outcome (the store
  failing or closing; on the native loop, an outcome it may not wait to learn) is
  dropped, so its retry goes that way too.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import _driver, records
from ._backend import Key, keys_of
from ._client import DEFAULT_LOCK_TTL, Client
from ._local import LocalBackend
from ._outcomes import DEFAULT_MAX_KEPT, DEFAULT_MAX_KEPT_PER_CALLER, DEFAULT_RETAIN_MS, Outcomes
from ._transaction import Transaction, checked_key, checked_value
from ._waits import check_may_wait
from .errors import (
    CommitConflict,
    SnapshotTooOld,
    TooManyTransactions,
    TransactionBusy,
    TransactionNotFound,
    WrongTransactionState,
)

__all__ = ["Session", "Sessions", "Write"]

log = logging.getLogger(__name__)

ACTIVE = "active"
COMMITTED = "committed"
ABORTED = "aborted"
ROLLED_BACK = "rolled back"
EXPIRED = "expired"

DEFAULT_TTL_MS = 10_000
MAX_TTL_MS = 3_600_000
DEFAULT_LOCK_WAIT = 1.0
"""Seconds a read waits for a live transaction's lock before it answers (a server
thread waits meanwhile)."""
DEFAULT_BUSY_WAIT = 5.0
DEFAULT_MAX_OPEN = 10_000
DEFAULT_MAX_OPEN_PER_CALLER = 1_000
MAX_TABLES = 64
"""Distinct tables with open transactions at once (a Client each, kept while in use; one
in use by nobody gives way to a new table: any caller may name tables)."""

Write = tuple[Key, bytes | None]
"""One cell of a write set: its value, or None to delete it."""


@dataclass(slots=True, eq=False)
class Session:
    txn_id: int
    table: bytes
    txn: Transaction | None  # None once it ended
    ttl_ms: int
    expires_ms: int  # while ACTIVE: when it expires
    state: str = ACTIVE
    commit_ts: int = 0
    conflict: CommitConflict | None = None
    digest: bytes = b""
    owner: bytes = b""  # who began it (``bigtable_lite.auth.caller_of``)
    lock: threading.Lock = field(default_factory=threading.Lock)


def digest_of(writes: Sequence[Write], weak: Sequence[Key]) -> bytes:
    """A write set's fingerprint, independent of the order of its cells."""
    h = hashlib.blake2b(digest_size=16)
    for (row, column), value in sorted(writes, key=lambda w: w[0]):
        for part in (row, column, b"" if value is None else b"P" + value):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        h.update(b"D" if value is None else b"V")
    h.update(b"|")
    for row, column in sorted(weak):
        for part in (row, column):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.digest()


def _copy(exc: CommitConflict) -> CommitConflict:
    return CommitConflict(str(exc), row=exc.row, column=exc.column, reason=exc.reason,
                          commit_ts=exc.commit_ts, lock_start_ts=exc.lock_start_ts)


class Sessions:
    """The open transactions of one node's Transactions service.  Thread-safe."""

    def __init__(self, backend: LocalBackend, *, max_open: int = DEFAULT_MAX_OPEN,
                 max_open_per_caller: int = DEFAULT_MAX_OPEN_PER_CALLER,
                 lock_wait: float = DEFAULT_LOCK_WAIT, busy_wait: float = DEFAULT_BUSY_WAIT,
                 retain_ms: int = DEFAULT_RETAIN_MS, max_kept: int = DEFAULT_MAX_KEPT,
                 max_kept_per_caller: int = DEFAULT_MAX_KEPT_PER_CALLER,
                 lock_ttl: float = DEFAULT_LOCK_TTL) -> None:
        self._backend = backend
        self._clock = backend.clock
        if max_open < 1 or max_open_per_caller < 1:
            raise ValueError("max_open and max_open_per_caller must be at least 1")
        self.max_open = max_open
        self.max_open_per_caller = max_open_per_caller
        self.lock_wait = lock_wait
        self.busy_wait = busy_wait
        self._lock_ttl = lock_ttl
        self._clients: dict[bytes, Client] = {}  # least recently used first
        self._users: dict[bytes, int] = {}  # per table: open sessions and calls under way
        self._sessions: dict[int, Session] = {}  # ACTIVE (begins under way too)
        # Ended sessions, for their retried calls (the sessions' lock guards it).
        self.outcomes: Outcomes[Session] = Outcomes(
            retain_ms=retain_ms, max_kept=max_kept, max_kept_per_caller=max_kept_per_caller)
        # (expires_ms, txn_id): one per ACTIVE session, at or before its expiry, and
        # those of ended ones until popped or compacted (``_compact``)
        self._expiry: list[tuple[int, int]] = []
        self._open = 0  # ACTIVE sessions, and begins under way
        self._open_by: dict[bytes, int] = {}  # the same, per caller (b"": no tokens)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def _use(self, table: bytes) -> Client:
        """The Client of ``table``'s transactions (a real one, over the node's backend),
        in use until :meth:`_unuse`.  At most MAX_TABLES are kept: a new table's replaces
        the least recently used one in use by nobody (any caller may name tables, so none
        is kept for good), or TooManyTransactions if every one is in use."""
        evicted: Client | None = None
        with self._lock:
            client = self._clients.pop(table, None)
            if client is None:
                if len(self._clients) >= MAX_TABLES:
                    idle = next((t for t in self._clients if not self._users.get(t)), None)
                    if idle is None:
                        raise TooManyTransactions(
                            f"transactions are open on {MAX_TABLES} tables, the most at once;"
                            " commit or roll back some, or retry later")
                    evicted = self._clients.pop(idle)
                client = Client(self._backend, table=table, lock_ttl=self._lock_ttl,
                                lock_wait_timeout=self.lock_wait, clock=self._clock)
            self._clients[table] = client  # the most recently used
            self._users[table] = self._users.get(table, 0) + 1
        if evicted is not None:
            evicted.close()  # nobody's: none of its transactions is open
        return client

    def _unuse(self, table: bytes) -> None:
        with self._lock:
            left = self._users[table] - 1
            if left:
                self._users[table] = left
            else:
                del self._users[table]

    @contextmanager
    def _using(self, table: bytes) -> Iterator[Client]:
        client = self._use(table)
        try:
            yield client
        finally:
            self._unuse(table)

    def start(self, interval: float = 1.0) -> None:
        """Expire sessions every ``interval`` seconds in a daemon thread (calls also do)."""
        def run() -> None:
            while not self._stop.wait(interval):
                self.sweep()

        self._reaper = threading.Thread(target=run, daemon=True, name="percolator-sessions")
        self._reaper.start()

    def close(self) -> None:
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=10)
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:  # stops their heartbeats; the node's backend is not theirs
            client.close()

    @property
    def retain_ms(self) -> int:
        """Milliseconds an ended session's outcome is kept at most."""
        return self.outcomes.retain_ms

    @property
    def open(self) -> int:
        """Sessions open (ACTIVE)."""
        with self._lock:
            return self._open

    # --- begin and reads --------------------------------------------------------------------

    def begin(self, table: bytes, ttl_ms: int,
              read: Callable[[Transaction], dict[Key, bytes | None]] | None = None, *,
              owner: bytes = b"") -> tuple[Session, dict[Key, bytes | None]]:
        """A new session at a fresh snapshot, and what ``read`` reads at it with its
        transaction (the caller's first reads, bounded as the caller's replies are)."""
        self.sweep()
        with self._lock:
            if self._open >= self.max_open:
                raise TooManyTransactions(
                    f"the node holds {self._open} open transactions, its most"
                    f" (--max-transactions {self.max_open}); commit or roll back some, or"
                    " retry later")
            mine = self._open_by.get(owner, 0)
            if owner and mine >= self.max_open_per_caller:
                raise TooManyTransactions(
                    f"this token holds {mine} open transactions, the most one token may"
                    f" (--max-transactions-per-token {self.max_open_per_caller}); commit or"
                    " roll back some, or retry later")
            self._open += 1
            self._open_by[owner] = mine + 1
        try:
            client = self._use(table)  # until the session ends (``_end``)
        except BaseException:
            with self._lock:
                self._closed_one(owner)
            raise
        try:
            txn = client.begin()
            txn.start_ts  # noqa: B018 -- takes the snapshot now: registered, so GC spares it
            # Held (its lock taken) before the first reads, which may wait for locks: its id
            # is a timestamp, easily guessed, and an id not held is answered from the data
            # (``_commit_unknown``), so another caller could roll it back meanwhile.
            session = Session(txn.start_ts, table, txn, ttl_ms,
                              self._clock.now_ms() + ttl_ms, owner=owner)
            session.lock.acquire()
            with self._lock:
                self._sessions[session.txn_id] = session
                heapq.heappush(self._expiry, (session.expires_ms, session.txn_id))
            try:
                values = read(txn) if read is not None else {}
            except BaseException:
                with self._lock:  # never begun, as far as anyone may learn
                    self._sessions.pop(session.txn_id, None)
                    self._compact()
                session.lock.release()
                txn.rollback()
                raise
        except BaseException:
            with self._lock:
                self._closed_one(owner)
            self._unuse(table)
            raise
        session.expires_ms = self._clock.now_ms() + ttl_ms  # its TTL from the call's end
        session.lock.release()
        return session, values

    def read_once(self, table: bytes, read: Callable[[Transaction], dict[Key, bytes | None]]
                  ) -> tuple[int, dict[Key, bytes | None]]:
        """A read-only transaction in one call: ``read`` at a fresh snapshot, which ends
        with the call (no session is held, so no caller owns it); (start_ts, values)."""
        with self._using(table) as client:
            txn = client.begin()
            try:
                start_ts = txn.start_ts  # registered from here on: GC spares the snapshot
                return start_ts, read(txn)
            finally:
                txn.rollback()

    @contextmanager
    def active(self, txn_id: int, owner: bytes = b"") -> Iterator[Transaction]:
        """The open transaction ``txn_id`` of ``owner``, for one call (calls on it take
        turns)."""
        session = self._take(txn_id, owner)
        try:
            if session.state is not ACTIVE or session.txn is None:
                raise WrongTransactionState(f"transaction {txn_id} is {session.state}")
            try:
                yield session.txn
            finally:  # every call, answered or failed, starts the TTL again
                session.expires_ms = self._clock.now_ms() + session.ttl_ms
        finally:
            session.lock.release()

    def _take(self, txn_id: int, owner: bytes) -> Session:
        """The session ``txn_id`` of ``owner``, its lock held; TransactionNotFound if it is
        not held (or expired: then it is expired now), or is another caller's."""
        with self._lock:
            session = self._sessions.get(txn_id) or self.outcomes.get(txn_id)
        if session is None or session.owner != owner:
            raise TransactionNotFound(f"no open transaction {txn_id} (never begun, expired,"
                                      " its outcome forgotten, or the node restarted)")
        if not session.lock.acquire(blocking=False):  # in another call
            check_may_wait()  # (not on a thread that may not wait for it)
            if not session.lock.acquire(timeout=self.busy_wait):
                raise TransactionBusy(f"transaction {txn_id} is busy with another call for"
                                      f" over {self.busy_wait:g}s; retry")
        if session.state is ACTIVE and session.expires_ms <= self._clock.now_ms():
            self._end(session, EXPIRED)
        if session.state is EXPIRED:
            session.lock.release()
            raise TransactionNotFound(f"transaction {txn_id} expired (no call for"
                                      f" {session.ttl_ms} ms)")
        return session

    # --- commit and rollback ----------------------------------------------------------------

    def commit(self, txn_id: int, table: bytes, writes: Sequence[Write], weak: Sequence[Key],
               owner: bytes = b"") -> int:
        """Commit the write set of ``txn_id`` (``owner``'s); its commit_ts.  CommitConflict:
        nothing written.  A retry answers the first commit's outcome."""
        digest = digest_of(writes, weak)
        try:
            session = self._take(txn_id, owner)
        except TransactionNotFound:
            with self._lock:
                held = txn_id in self._sessions or self.outcomes.get(txn_id) is not None
            if held:  # another caller's, open: not this caller's to decide
                raise
            return self._commit_unknown(txn_id, table, writes, weak)
        try:
            if session.state is not ACTIVE:
                return self._answer(session, digest)
            return self._commit(session, writes, weak, digest)
        finally:
            session.lock.release()

    def _commit(self, session: Session, writes: Sequence[Write], weak: Sequence[Key],
                digest: bytes) -> int:
        txn = session.txn
        assert txn is not None
        try:
            for (row, column), value in writes:
                if value is None:
                    txn.delete(row, column)
                else:
                    txn.set(row, column, value)
            for row, column in weak:
                txn.notify(row, column)
        except (ValueError, TypeError):  # nothing written: the transaction stays open
            # (the new Transaction registers before the old one leaves: the hold never lapses)
            with self._lock:  # its table's Client: in use while the session is open
                ctx = self._clients[session.table].ctx
            session.txn = Transaction(ctx, session.txn_id)
            txn.rollback()
            raise
        session.digest = digest
        try:
            commit_ts = txn.commit()
        except CommitConflict as exc:
            session.conflict = _copy(exc)  # not its traceback: its frames hold the write set
            self._end(session, ABORTED)
            raise
        except Exception:
            # No outcome here (the store failed or is closing; or MayWait: learning it
            # would wait, on a thread that may not): a retry decides it from the data,
            # through the unknown-transaction path (MayWait's runs the call again so).
            self._end(session, EXPIRED)
            raise
        session.commit_ts = commit_ts
        self._end(session, COMMITTED)
        return commit_ts

    def _answer(self, session: Session, digest: bytes) -> int:
        """A second Commit of an ended session: the first one's outcome."""
        if session.state is ROLLED_BACK:
            raise WrongTransactionState(f"transaction {session.txn_id} was rolled back")
        if digest != session.digest:
            raise WrongTransactionState(
                f"transaction {session.txn_id} was already committed with another write set"
                if session.state is COMMITTED else
                f"transaction {session.txn_id} already failed to commit another write set")
        if session.conflict is not None:
            raise _copy(session.conflict)
        return session.commit_ts

    def _commit_unknown(self, txn_id: int, table: bytes, writes: Sequence[Write],
                        weak: Sequence[Key]) -> int:
        """A Commit of a transaction the node does not hold, answered from the data (its
        cells checked first, as a held transaction's are: the answer may write a rollback
        record at the primary's cell)."""
        limits = self._backend.limits
        for (row, column), value in writes:
            checked_key(row, column, limits)
            if value is not None:
                checked_value(value, limits)
        for row, column in weak:
            checked_key(row, column, limits)
        if not writes:  # nothing in the data to answer from: no primary, no commit record
            raise TransactionNotFound(
                f"no open transaction {txn_id}; a Commit without writes cannot be answered"
                " from the data: if an earlier Commit of it notified cells, whether it"
                " committed is unknown")
        if txn_id >= self._backend.timestamps(1):
            raise TransactionNotFound(f"no open transaction {txn_id}")
        with self._using(table) as client:
            return self._decide(client, txn_id, writes)

    def _decide(self, client: Client, txn_id: int, writes: Sequence[Write]) -> int:
        parts = _driver.plan({key: (records.PUT if value is not None else records.DELETE, value)
                              for key, value in writes})
        try:
            outcome = _driver.decide_patiently(client.ctx, txn_id, _driver.primary_of(parts),
                                               keys_of(parts))
        except SnapshotTooOld as exc:
            # GC settled every lock below the safe point and may have removed the commit
            # record since: it can never commit now, but whether it did is unknown.
            raise SnapshotTooOld(
                f"transaction {txn_id} is no longer held (expired, or the node restarted) and"
                " its snapshot is below the GC safe point: it can never commit now; if no"
                " earlier Commit of it was sent, nothing of it was written: run it again with"
                " a new snapshot (whether an earlier Commit of it committed can no longer be"
                f" read) [{exc}]") from exc
        if outcome.committed:
            return outcome.commit_ts
        raise TransactionNotFound(f"no open transaction {txn_id}, and it did not commit (it"
                                  " expired, its outcome was forgotten, or the node"
                                  " restarted): it never will")

    def rollback(self, txn_id: int, owner: bytes = b"") -> None:
        """End ``txn_id`` (``owner``'s) without writing (idempotent)."""
        session = self._take(txn_id, owner)
        try:
            if session.state is COMMITTED:
                raise WrongTransactionState(f"transaction {txn_id} is committed at"
                                            f" {session.commit_ts}")
            if session.state is ACTIVE:
                self._end(session, ROLLED_BACK)
        finally:
            session.lock.release()

    # --- ending and expiry ------------------------------------------------------------------

    def _end(self, session: Session, state: str) -> None:
        """ACTIVE -> ``state`` (its lock held): end its transaction (the safe point may
        pass it), keep the outcome (``outcomes``)."""
        assert session.state is ACTIVE
        session.state = state
        txn, session.txn = session.txn, None
        if txn is not None:
            txn.rollback()  # no-op once committed or failed: those ended it already
        now = self._clock.now_ms()
        with self._lock:
            self._closed_one(session.owner)
            self._sessions.pop(session.txn_id, None)
            if state is not EXPIRED:  # (expired: nothing to answer, forgotten at once)
                self.outcomes.keep(session.txn_id, session.owner, session, now)
            self._compact()
        self._unuse(session.table)

    def _compact(self) -> None:
        """Drop the expiry entries of ended sessions once they are most of them (``_lock``
        held): a session begun with a long TTL and ended at once (or whose Begin failed)
        would leave its entry for that TTL, and a caller doing so fast would grow the
        heap without bound."""
        if len(self._expiry) > 2 * len(self._sessions) + 64:
            self._expiry = [(s.expires_ms, txn_id) for txn_id, s in self._sessions.items()]
            heapq.heapify(self._expiry)

    def _closed_one(self, owner: bytes) -> None:
        """One session of ``owner`` is no longer open (``_lock`` held)."""
        self._open -= 1
        left = self._open_by[owner] - 1
        if left:
            self._open_by[owner] = left
        else:
            del self._open_by[owner]

    def sweep(self) -> int:
        """Expire sessions idle past their TTL and forget outcomes past ``retain_ms``;
        how many went."""
        now = self._clock.now_ms()
        with self._lock:
            gone = self.outcomes.forget_expired(now)
        while True:
            with self._lock:
                if not self._expiry or self._expiry[0][0] > now:
                    return gone
                _, txn_id = heapq.heappop(self._expiry)
                session = self._sessions.get(txn_id)
                if session is None:  # ended: its outcome, if any, is in ``outcomes``
                    continue
                if session.expires_ms > now:  # used since: its entry moves on
                    heapq.heappush(self._expiry, (session.expires_ms, txn_id))
                    continue
                if not session.lock.acquire(blocking=False):  # in a call now
                    heapq.heappush(self._expiry, (now + session.ttl_ms, txn_id))
                    continue
                if session.expires_ms > now:  # a call ended between the check and the lock
                    session.lock.release()
                    heapq.heappush(self._expiry, (session.expires_ms, txn_id))
                    continue
            try:
                self._end(session, EXPIRED)
                log.info("transaction %d expired (no call for %d ms)", txn_id, session.ttl_ms)
                gone += 1
            finally:
                session.lock.release()
