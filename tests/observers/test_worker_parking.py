"""A failing observer backs off (in clock time), is parked after max_failures, others go on;
parked notifications are listed and replayed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import Put, RowMutation
from observers import Backoff, Worker, list_parked, observer, replay_parked
from observers._retry import RetryBook
from percolator import Client, Transaction, layout
from percolator._notify import log
from percolator.clock import FakeClock

from .observer_fixtures import eventually, value, write_cells

COL = b"v"


@pytest.fixture(name="clock")
def clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="client")
def client_fixture(tmp_path: Path, clock: FakeClock) -> Iterator[Client]:
    with Client.embedded(tmp_path / "data", clock=clock) as client:
        yield client


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(0.5, 2.0, 3.0)
    assert [b.delay(n) for n in range(5)] == [0.0, 0.5, 1.0, 2.0, 3.0]


def test_retry_book_counts_failures_in_clock_time(clock: FakeClock) -> None:
    book = RetryBook(clock, backoff=Backoff(1.0, 2.0, 10.0), max_failures=2)
    key = (b"r", b"c")
    assert book.due(key)
    assert book.failed(key, "boom") == 1 and not book.due(key)
    clock.advance(0.999)
    assert not book.due(key)
    clock.advance(0.001)
    assert book.due(key)
    assert book.should_park(book.failed(key, "boom"))
    book.retry_later(key, "conflict")  # not the observer's fault: not a failure
    assert book.state(key).failures == 2  # type: ignore[union-attr]
    book.forget(key)
    assert book.due(key) and len(book) == 0


def test_failing_observer_is_parked_others_continue_and_replay_works(
        client: Client, clock: FakeClock) -> None:
    broken = {b"bad"}

    @observer(COL)
    def copy(txn: Transaction, row: bytes, column: bytes) -> None:
        if row in broken:
            raise RuntimeError(f"boom on {row!r}")
        txn.set(row, b"out", txn.get(row, column) or b"")

    worker = Worker(client, [copy], threads=2, max_failures=3,
                    backoff=Backoff(10.0, 2.0, 60.0), clock=clock)
    good = [b"good%02d" % i for i in range(20)]
    write_cells(client, {(r, COL): r for r in [*good, b"bad"]})
    worker.start()
    try:
        eventually(lambda: worker.stats().processed == 20 and worker.stats().failures == 1,
                   "the good cells are done and the bad one failed once")
        assert worker.stats().failures == 1, "no retry before the backoff elapsed"
        clock.advance(10.0)
        worker.wake()
        eventually(lambda: worker.stats().failures == 2, "the second attempt")
        clock.advance(20.0)
        worker.wake()
        eventually(lambda: worker.stats().parked == 1, "the bad cell is parked")
        stats = worker.run_until_idle(timeout=30)  # a parked cell is no longer pending
        assert (stats.processed, stats.failures, stats.parked) == (20, 3, 1)
        parked = list_parked(client)
        assert [(p.row, p.column) for p in parked] == [(b"bad", COL)]
        assert parked[0].info is not None and parked[0].info.failures == 3
        assert "boom on b'bad'" in parked[0].info.error and worker.id == parked[0].info.worker
        assert value(client, b"bad", b"out") is None
        broken.clear()  # the operator fixed the observer: replay
        assert replay_parked(client) == 1
        worker.run_until_idle(timeout=30)
        assert value(client, b"bad", b"out") == b"bad"
        assert list_parked(client) == []
    finally:
        worker.stop()


MALFORMED = {
    "notification record of before": b"\x02\x00",
    "unknown kind": b"\x09" + (7).to_bytes(8, "big"),
    "truncated": b"\x01\x00\x00",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_notification_is_parked_at_once(client: Client, raw: bytes) -> None:
    """An entry whose record does not decode (a damaged system row, or one written by
    hand) is parked with a note, never run and never fatal; the others go on."""
    ran: list[bytes] = []

    @observer(COL)
    def good_only(txn: Transaction, row: bytes, column: bytes) -> None:
        ran.append(row)

    position = client.timestamp()  # as the node would have handed it out
    log_row = log.log_key(COL, log.bucket_of(b"junk"), position)
    client.store.mutate_rows([RowMutation(layout.notify_table(client.table), log_row,
                                          (Put(b"junk", 0, raw),))])
    worker = Worker(client, [good_only], threads=1)
    write_cells(client, {(b"good", COL): b"1"})  # a well-formed one beside it: not parked
    stats = worker.run_until_idle(timeout=30)
    assert stats.parked == 1 and stats.failures == 0 and stats.processed == 1
    assert ran == [b"good"], "the observer never runs for a malformed notification"
    [parked] = list_parked(client)
    assert (parked.row, parked.column, parked.entries) == (b"junk", COL, ((position, raw),))
    assert parked.info is not None and "does not decode" in parked.info.error


def test_replay_of_a_change_already_covered_is_a_skip(client: Client) -> None:
    runs: list[bytes] = []
    broken = [True]

    @observer(COL)
    def flaky(txn: Transaction, row: bytes, column: bytes) -> None:
        if broken[0]:
            raise RuntimeError("down")
        runs.append(row)

    worker = Worker(client, [flaky], threads=1, max_failures=1, backoff=Backoff(0.0))
    write_cells(client, {(b"r", COL): b"1"})
    assert worker.run_until_idle(timeout=30).parked == 1
    broken[0] = False
    write_cells(client, {(b"r", COL): b"2"})  # a later change, observed normally
    worker.run_until_idle(timeout=30)
    assert runs == [b"r"]
    replay_parked(client)  # the parked change is older than the ack: nothing to do again
    stats = worker.run_until_idle(timeout=30)
    assert runs == [b"r"] and stats.skipped == 1
