"""Batch observers in a worker: cells of one column share transactions (Observer.max_batch),
one batch of a column at a time; a failing cell leaves the batch and is parked alone; a
batch that lost a conflict or met a setback is retried in halves; every change is
applied exactly once through all of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from observers import Backoff, Observer, Worker, list_parked
from observers._batch_limits import BatchLimits
from observers._feed import FULL_POLL
from percolator import Client, Transaction, failpoints

from .observer_fixtures import (  # noqa: F401
    client_fixture,
    eventually,
    read,
    server_fixture,
    write_cells,
)

COL = b"v"


class Runs(Observer):
    """Counts each cell's runs in the store (row, b"runs"); records its batches and how many
    ran at once."""

    column = COL

    def __init__(self, max_batch: int) -> None:
        super().__init__(max_batch=max_batch)
        self.batches: list[int] = []
        self._lock = threading.Lock()
        self._running = 0
        self.most_at_once = 0

    def process_batch(self, txn: Transaction, rows: Sequence[bytes], column: bytes) -> None:
        with self._lock:
            self.batches.append(len(rows))
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            self.before(txn, rows)
            super().process_batch(txn, rows, column)
        finally:
            with self._lock:
                self._running -= 1

    def before(self, txn: Transaction, rows: Sequence[bytes]) -> None:
        """Hook for the tests below."""

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        runs = int(txn.get(row, b"runs") or b"0")
        txn.set(row, b"runs", b"%d" % (runs + 1))


def rows(n: int) -> list[bytes]:
    return [b"r%04d" % i for i in range(n)]


def must_have_run_once(client: Client, keys: list[bytes]) -> None:
    got = read(client, [(r, b"runs") for r in keys])
    wrong = {r: v for (r, _), v in got.items() if v != b"1"}
    assert not wrong, f"{len(wrong)} cells did not run exactly once: {list(wrong.items())[:5]}"


def test_batch_limits_halve_on_a_collision_and_double_back() -> None:
    limits = BatchLimits([Runs(max_batch=64), Observer(b"single")])
    assert (limits.limit(COL), limits.limit(b"single"), limits.largest) == (64, 1, 64)
    limits.shrink(COL, 64)
    assert limits.limit(COL) == 32
    limits.shrink(COL, 10)  # a smaller batch collided: at most half of it
    assert limits.limit(COL) == 5
    for _ in range(3):
        limits.shrink(COL, 5)
    assert limits.limit(COL) == 1, "down to one cell per transaction"
    grown = []
    for _ in range(8):
        limits.grow(COL)
        grown.append(limits.limit(COL))
    assert grown == [2, 4, 8, 16, 32, 64, 64, 64]
    limits.shrink(b"single", 8)
    limits.grow(b"single")
    assert limits.limit(b"single") == 1 and BatchLimits([]).largest == 1


def test_cells_of_a_batch_observer_share_transactions_one_batch_at_a_time(
        client: Client) -> None:
    keys = rows(300)
    obs = Runs(max_batch=40)
    worker = Worker(client, [obs], threads=4)  # registers the column: writes notify
    write_cells(client, {(r, COL): b"x" for r in keys}, per_txn=100)
    stats = worker.run_until_idle(timeout=60)
    must_have_run_once(client, keys)
    assert stats.processed == 300 and stats.batches == sum(1 for n in obs.batches if n > 1)
    assert stats.batches >= 300 // 40 and max(obs.batches) <= 40
    assert obs.most_at_once == 1, "batches of one column never overlap in a worker"


def test_a_failing_cell_leaves_its_batch_and_is_parked_alone(tmp_path: Path) -> None:
    class Failing(Runs):
        def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
            if row == b"r0007":
                raise RuntimeError("boom")
            super().process(txn, row, column)

    keys = rows(50)
    with Client.embedded(tmp_path / "data") as client:
        obs = Failing(max_batch=50)
        worker = Worker(client, [obs], threads=2, max_failures=2,
                        backoff=Backoff(0.001, 1.0, 0.001))
        write_cells(client, {(r, COL): b"x" for r in keys}, per_txn=50)
        stats = worker.run_until_idle(timeout=60)
        must_have_run_once(client, [r for r in keys if r != b"r0007"])
        assert (stats.failures, stats.parked) == (2, 1)
        assert [(p.row, p.column) for p in list_parked(client)] == [(b"r0007", COL)]
        assert obs.batches[0] == 50, "the first try was one batch"


def test_a_batch_that_lost_a_conflict_is_retried_in_halves(tmp_path: Path) -> None:
    class Conflicting(Runs):
        """Every batch also writes a shared cell, which another transaction commits
        under the first batch."""

        def before(self, txn: Transaction, rows: Sequence[bytes]) -> None:
            txn.set(b"shared", b"last", rows[-1])
            if len(self.batches) == 1:
                with client.transaction() as other:
                    other.set(b"shared", b"last", b"someone else")

    keys = rows(64)
    with Client.embedded(tmp_path / "data") as client:
        obs = Conflicting(max_batch=64)
        worker = Worker(client, [obs], threads=2)
        write_cells(client, {(r, COL): b"x" for r in keys}, per_txn=64)
        stats = worker.run_until_idle(timeout=60)
        must_have_run_once(client, keys)
        assert stats.conflicts == 1 and stats.failures == 0
        assert obs.batches[:3] == [64, 32, 32], "retried in halves"


def test_a_setback_after_a_batch_commit_is_a_skip_on_retry(tmp_path: Path) -> None:
    class Crashing(Runs):
        def before(self, txn: Transaction, rows: Sequence[bytes]) -> None:
            # The first batch's commit is followed by a (transient) failure before its
            # notifications are deleted; later batches run normally.
            if len(self.batches) == 1:
                failpoints.enable("worker.after_observer", "raise")
            else:
                failpoints.disable("worker.after_observer")

    keys = rows(30)
    with Client.embedded(tmp_path / "data") as client:
        obs = Crashing(max_batch=30)
        worker = Worker(client, [obs], threads=2)
        write_cells(client, {(r, COL): b"x" for r in keys}, per_txn=30)
        stats = worker.run_until_idle(timeout=60)
        must_have_run_once(client, keys)
        assert stats.failures == 0 and stats.retries >= 1
        assert stats.skipped >= 30, "the retried batch found every change acknowledged"
        assert obs.batches[0] == 30


def test_a_full_queue_is_not_pulled_back_to_back(client: Client) -> None:
    """While a backlog fills the work queue and a batch runs, the feed pulls at most every
    FULL_POLL: it used to pull again at once for as long as the batch ran (the node
    answers a full queue with "more" and nothing else), a cost growing with the backlog."""
    keys = rows(300)
    entered, release = threading.Event(), threading.Event()

    class Blocking(Runs):
        def before(self, txn: Transaction, rows: Sequence[bytes]) -> None:
            entered.set()
            release.wait(30)

    obs = Blocking(max_batch=40)
    worker = Worker(client, [obs], threads=1, queue_size=64)
    write_cells(client, {(r, COL): b"x" for r in keys}, per_txn=100)
    worker.start()
    try:
        assert entered.wait(30), "the first batch never started"
        deadline = time.monotonic() + 30
        while worker._work.room() > 0:  # the feed refills the room the batch left
            assert time.monotonic() < deadline, "the queue never filled"
            time.sleep(0.01)
        before = worker.feed.pulls
        began = time.monotonic()
        time.sleep(0.5)  # the measurement window: the batch is held, nothing is taken
        pulls = worker.feed.pulls - before
        window = time.monotonic() - began
    finally:
        release.set()
    try:
        worker.run_until_idle(timeout=60)
    finally:
        worker.stop()
    must_have_run_once(client, keys)
    assert pulls <= window / FULL_POLL + 5, f"{pulls} pulls in {window:.2f} s with a full queue"


def test_a_change_after_the_last_cell_is_handed_back_is_seen_at_once(client: Client) -> None:
    """The pull that hands back a worker's last finished cell is followed by a waiting
    one (the long poll), not by a wait of ``heartbeat``: a change written then reaches the
    worker in one wake-up (bench_observers.py's trigger-to-observer latency; it took half
    a heartbeat on average)."""
    arrived = {b"first": threading.Event(), b"second": threading.Event()}

    class Seen(Observer):
        column = COL

        def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
            txn.set(row, b"runs", b"1")
            arrived[row].set()

    worker = Worker(client, [Seen()], threads=2, heartbeat=20.0, lease_ttl=60.0).start()
    try:
        write_cells(client, {(b"first", COL): b"x"})
        assert arrived[b"first"].wait(30.0), "the first change was never observed"
        eventually(lambda: client.notifications.pending(client.table, [COL], 1) == 0,
                   "the worker handed the first cell back")
        write_cells(client, {(b"second", COL): b"x"})
        assert arrived[b"second"].wait(5.0), "seen only after the heartbeat (20 s)"
    finally:
        worker.stop()


def test_a_cell_backing_off_does_not_hold_back_the_others(client: Client) -> None:
    """A failing cell waits out its backoff in the worker's queue; meanwhile the feed
    waits at the node as an idle one does (at most until that cell is due), so another
    change is seen in one wake-up, not after a heartbeat."""
    arrived = threading.Event()
    tried = threading.Event()

    class Failing(Observer):
        column = COL

        def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
            if row == b"bad":
                tried.set()
                raise RuntimeError("this cell always fails")
            arrived.set()

    worker = Worker(client, [Failing()], threads=2, heartbeat=20.0, lease_ttl=60.0,
                    max_failures=1000, backoff=Backoff(15.0, 1.0, 15.0)).start()
    try:
        write_cells(client, {(b"bad", COL): b"x"})
        assert tried.wait(30.0), "the failing cell never ran"
        eventually(lambda: worker.stats().backing_off == 1, "the cell backs off")
        pulls = worker.feed.pulls
        eventually(lambda: worker.feed.pulls > pulls, "a pull after the failure")
        write_cells(client, {(b"good", COL): b"x"})
        assert arrived.wait(5.0), "held back by the cell backing off (until a heartbeat)"
    finally:
        worker.stop()
