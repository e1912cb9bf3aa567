"""What the Transactions service keeps of finished transactions, and how it learns a
commit's outcome after a store failure without holding up its other callers.

* Kept outcomes are bounded in time and count (``percolator._outcomes``), the oldest
  forgotten first; a Commit retried after its outcome was forgotten is answered from
  the data, with the outcome it had: never "committed" for one that did not commit,
  never "not found" for one that did.
* Learning an outcome backs off while the store is unavailable; on the native
  transport's loop, which serves every connection, that wait would hold them all
  (``percolator._waits``): the Commit goes on learning on a pool thread instead.

Sessions run over a real LocalBackend (a fake clock where retention must pass); the
loop test runs a real node on 127.0.0.1 port 0 with TXN frames.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from percolator import Client, Transaction, failpoints
from percolator._local import LocalBackend
from percolator._sessions import Sessions
from percolator.clock import FakeClock, SystemClock
from percolator.errors import CommitConflict, TransactionNotFound, WrongTransactionState
from percolator.layout import DEFAULT_TABLE
from percolator.node import Node

from .test_txn_service import _no_failpoints as _no_failpoints  # autouse: none left on
from .txn_service_client import ServiceClient

WAIT = 30.0
"""Seconds any wait of these tests lasts at most."""
PROMPT = 10.0
"""Seconds a request of another connection may take while a commit's outcome is learned
(it takes milliseconds; the learning waits for the test, WAIT at most)."""

Key = tuple[bytes, bytes]
T = DEFAULT_TABLE


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(tmp_path: Path, clock: FakeClock) -> Iterator[LocalBackend]:
    backend = LocalBackend.open(str(tmp_path / "data"), clock=clock)
    try:
        yield backend
    finally:
        backend.close()


def must_commit(sessions: Sessions, owner: bytes, cells: dict[Key, bytes]) -> tuple[int, int]:
    """Begin and commit ``cells`` as ``owner``; (txn_id, commit_ts)."""
    session, _ = sessions.begin(T, 10_000, owner=owner)
    writes = list(cells.items())
    return session.txn_id, sessions.commit(session.txn_id, T, writes, [], owner)


def committed_at(backend: LocalBackend, key: Key, ts: int) -> bytes | None:
    """What a snapshot at ``ts`` reads at ``key``."""
    return backend.read(T, ts, [key]).values[key]


def test_kept_outcomes_are_bounded_oldest_forgotten_first_then_answered_from_the_data(
        backend: LocalBackend) -> None:
    """At most max_kept outcomes, and max_kept_per_caller of one caller: past either, the
    oldest goes (the caller's own first).  A retried Commit whose outcome is forgotten
    gets the outcome it had, from the data: its commit_ts if it committed, NOT_FOUND
    ("did not commit, and never will") if it was aborted."""
    sessions = Sessions(backend, max_kept=4, max_kept_per_caller=2)
    try:
        x = (b"x", b"c")
        a1, a1_ts = must_commit(sessions, b"a", {(b"a1", b"c"): b"1"})
        # a2 conflicts: another transaction committed x after a2's start
        a2, _ = sessions.begin(T, 10_000, owner=b"a")
        must_commit(sessions, b"other", {x: b"other"})
        with pytest.raises(CommitConflict) as first:
            sessions.commit(a2.txn_id, T, [(x, b"a2")], [], b"a")
        a3, a3_ts = must_commit(sessions, b"a", {(b"a3", b"c"): b"1"})
        # a's third outcome: a's oldest (a1) goes, though "other"'s is older
        assert sessions.outcomes.get(a1) is None and len(sessions.outcomes) == 3
        assert sessions.outcomes.get(a3) is not None
        assert sessions.commit(a1, T, [((b"a1", b"c"), b"1")], [], b"a") == a1_ts
        with pytest.raises(CommitConflict) as kept:  # still kept: the same answer
            sessions.commit(a2.txn_id, T, [(x, b"a2")], [], b"a")
        assert str(kept.value) == str(first.value) and kept.value.row == b"x"

        b1, _ = sessions.begin(T, 10_000, owner=b"b")
        sessions.rollback(b1.txn_id, b"b")
        assert len(sessions.outcomes) == 4
        # a fifth outcome (of a caller under its own bound): the oldest of all goes
        must_commit(sessions, b"b", {(b"b2", b"c"): b"1"})
        assert len(sessions.outcomes) == 4 and sessions.outcomes.evicted == 2
        assert [sessions.outcomes.get(t) is not None for t in (a2.txn_id, a3, b1.txn_id)] == [
            True, True, True]
        with pytest.raises(WrongTransactionState):  # b1's outcome, kept: rolled back
            sessions.commit(b1.txn_id, T, [((b"b1", b"c"), b"1")], [], b"b")
        must_commit(sessions, b"c", {(b"c1", b"c"): b"1"})  # and again: a2 goes
        assert len(sessions.outcomes) == 4 and sessions.outcomes.evicted == 3
        assert sessions.outcomes.get(a2.txn_id) is None
        # a2, aborted, forgotten: from the data it did not commit, and now never will
        with pytest.raises(TransactionNotFound, match="did not commit"):
            sessions.commit(a2.txn_id, T, [(x, b"a2")], [], b"a")
        assert committed_at(backend, x, backend.timestamps(1)) == b"other"
        with pytest.raises(TransactionNotFound):  # nor a read on it: not held
            with sessions.active(a2.txn_id, b"a"):
                pass
        assert len(sessions.outcomes) == 4, "answers from the data keep nothing"
    finally:
        sessions.close()


def test_an_outcome_is_kept_retain_ms_whatever_the_transactions_ttl(
        backend: LocalBackend, clock: FakeClock) -> None:
    """A transaction begun with a long TTL and ended at once is forgotten retain_ms
    after it ended, not when the TTL would have passed; and what the sessions keep to
    expire open ones does not grow with the transactions that ended (or never began)."""
    sessions = Sessions(backend, retain_ms=1_000)
    try:
        ended = []
        for i in range(300):
            session, _ = sessions.begin(T, 3_600_000, owner=b"a")
            row = b"r%d" % i
            ended.append((session.txn_id, row,
                          sessions.commit(session.txn_id, T, [((row, b"c"), b"1")], [], b"a")))
        for _ in range(300):  # Begins whose first reads fail (e.g. a reply too large)
            with pytest.raises(ValueError):
                sessions.begin(T, 3_600_000, refuse, owner=b"a")
        open_one, _ = sessions.begin(T, 3_600_000, owner=b"a")
        assert len(sessions._expiry) <= 2 * sessions.open + 64  # noqa: SLF001 - its bound
        clock.advance(1.001)
        assert sessions.sweep() == 300
        assert len(sessions.outcomes) == 0
        txn_id, row, commit_ts = ended[0]  # forgotten: answered from the data
        assert sessions.commit(txn_id, T, [((row, b"c"), b"1")], [], b"a") == commit_ts
        with sessions.active(open_one.txn_id, b"a") as txn:  # the open one is still open
            assert txn.get(row, b"c") == b"1"
    finally:
        sessions.close()


def refuse(txn: Transaction) -> dict[Key, bytes | None]:
    raise ValueError("this read fails")


class HeldSleeps(SystemClock):
    """The system clock, except that while ``holding`` a sleep waits until ``go`` is set
    (WAIT seconds at most) instead of its time, and names its thread in ``sleepers``."""

    def __init__(self) -> None:
        self.holding = False
        self.asleep = threading.Event()
        self.go = threading.Event()
        self.sleepers: list[str] = []

    def sleep(self, seconds: float) -> None:
        if not self.holding:
            super().sleep(seconds)
            return
        self.sleepers.append(threading.current_thread().name)
        self.asleep.set()
        self.go.wait(WAIT)


def test_learning_an_outcome_after_a_store_failure_holds_up_no_other_connection(
        tmp_path: Path) -> None:
    """A commit in TXN frames lands, then its step fails; learning its outcome meets a
    store that keeps failing (the rollback of its primary is refused Unavailable) and
    backs off.  Meanwhile another connection's requests are answered at once, and the
    commit, once the store is back, is answered with the outcome it had: committed."""
    clock = HeldSleeps()
    with Node(tmp_path / "n", "127.0.0.1:0", clock=clock, gc_interval=None) as node, \
            ServiceClient(node.address, timeout=2 * WAIT, native=True) as learner, \
            ServiceClient(node.address, timeout=PROMPT, native=True) as other, \
            Client.connect(node.address) as check:
        cell, elsewhere = (b"a", b"c"), (b"b", b"c")
        assert other.begin([elsewhere], read_only=True).values == {elsewhere: None}
        txn = learner.begin()
        txn.set(*cell, b"1")
        failpoints.enable("commit.after_commit_primary", "raise")
        failpoints.enable("rollback.before_rollback_primary", "unavailable")
        clock.holding = True
        answers: queue.Queue[object] = queue.Queue()

        def commit() -> None:
            try:
                answers.put(txn.commit())
            except BaseException as exc:  # noqa: BLE001 - the answer, checked below
                answers.put(exc)

        committer = threading.Thread(target=commit)
        committer.start()
        try:
            assert clock.asleep.wait(WAIT), "the outcome was learned without backing off"
            # While the commit's learning waits: another connection is served.
            assert other.begin([elsewhere], read_only=True).values == {elsewhere: None}
            assert answers.empty(), "the commit was answered before the store came back"
        finally:
            failpoints.reset()
            clock.holding = False
            clock.go.set()
            committer.join(WAIT)
        answer = answers.get(timeout=WAIT)
        assert isinstance(answer, int), answer
        assert "native-loop" not in clock.sleepers, clock.sleepers
        backend = check.backend
        assert backend.read(check.table, answer, [cell]).values == {cell: b"1"}
        assert backend.read(check.table, answer - 1, [cell]).values == {cell: None}
