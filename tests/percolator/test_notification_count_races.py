"""The feed's pending counts under races: a recount between a delete's end and its
subtraction, an entry named twice in a handback or a parking, a commit in flight while
pending() moves a bucket's floor, an entry moving to a bucket pending() read already."""

from __future__ import annotations

import threading
import time

import pytest

from percolator import Client, failpoints
from percolator._notify import log
from percolator._notify.api import DoneRef
from percolator.notifications import PullRequest
from tests.percolator.steps import log_entries
from tests.percolator.test_notification_counts import (
    COL,
    ScanHook,
    client_fixture,  # noqa: F401 - the fixture
    feed_of,
    must_count_exactly,
    refs_of,
    write,
)

WAIT = 10.0


def test_a_recount_between_a_delete_ending_and_its_count_counts_it_twice(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete leaves "under way" and subtracts what it removed in one lock section.
    Were they two, a recount beginning between them would find no delete under way (so
    "settled"), its snapshot already without the removed entries, and the subtraction
    after it would be taken as a change since the mark: subtracted twice (the count
    drifting down; the backfill flooding).  The test holds a subtraction made outside
    that section, if any, and recounts right then."""
    write(client, [b"r%d" % i for i in range(10)])
    feed = feed_of(client)
    counts = feed.counts
    real_apply = counts._apply  # noqa: SLF001 - the seam between the two sections
    between = threading.Event()
    go = threading.Event()

    def apply_late(changes: dict[bytes, int], sign: int) -> None:
        if sign == 1 and changes:  # a delete's subtraction, after "under way" dropped
            between.set()
            assert go.wait(WAIT)
        real_apply(changes, sign)

    monkeypatch.setattr(counts, "_apply", apply_late)
    gone = refs_of(client, {b"r1", b"r2", b"r3"})
    deleter = threading.Thread(target=feed.delete, args=(gone,))
    deleter.start()
    try:
        deadline = time.monotonic() + WAIT
        while not between.is_set() and deleter.is_alive():  # no window if it subtracts
            assert time.monotonic() < deadline, "the delete never finished"  # under lock
            between.wait(0.01)
        feed.build_index([COL], force=False)  # an idle pull's recount, right then
    finally:
        go.set()
        deleter.join(WAIT)
    assert not deleter.is_alive()
    monkeypatch.undo()
    must_count_exactly(client)


def test_a_handed_back_entry_named_twice_is_uncounted_once(client: Client) -> None:
    """A done ref naming a data row twice (a worker's done list holding an entry twice,
    or any client over the wire: nothing checks) deletes one entry and subtracts two: both
    VersionAt conditions of the row's one conditional delete hold."""
    write(client, [b"a", b"b"])
    [ref] = refs_of(client, {b"a"})
    assert len(ref.rows) == 1
    twice = DoneRef(ref.log_row, (ref.rows[0], ref.rows[0]))
    client.notifications.pull(client.table, PullRequest("w", (COL,), 60_000, done=(twice,)))
    assert len(log_entries(client)) == 1
    must_count_exactly(client)


def test_a_parked_entry_named_twice_is_uncounted_once(client: Client) -> None:
    """The same through parking (its read names each cell once)."""
    write(client, [b"a", b"b"])
    [ref] = refs_of(client, {b"a"})
    twice = DoneRef(ref.log_row, (ref.rows[0], ref.rows[0]))
    client.notifications.park(client.table, "w", [twice], b"{}")
    assert len(log_entries(client)) == 1
    must_count_exactly(client)


def test_a_commit_in_flight_while_pending_moves_the_floor_is_found_after(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit whose commit_ts was taken before pending() read its bucket, and whose
    entries land after, is not hidden below the bucket's floor: commit_ts is a tracker
    position, in flight until the entries are written, so the floor stops at
    ``resolved + 1`` <= commit_ts."""
    write(client, [b"a"])
    client.notifications.done(client.table, refs_of(client, {b"a"}))
    assert client.notifications.pending(client.table, [COL], 10) == 0
    real_hit = failpoints.hit
    paused, go = threading.Event(), threading.Event()

    def pause(name: str) -> None:
        if name == "commit.before_commit_primary" and not paused.is_set():
            paused.set()
            assert go.wait(WAIT)
        real_hit(name)

    monkeypatch.setattr(failpoints, "hit", pause)
    writer = threading.Thread(target=write, args=(client, [b"a"]))  # the bucket read before
    writer.start()
    try:
        assert paused.wait(WAIT)
        assert client.notifications.pending(client.table, [COL], 10) == 0  # not landed yet
    finally:
        go.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    assert client.notifications.pending(client.table, [COL], 10) == 1
    must_count_exactly(client)


def _rows_in_two_buckets() -> tuple[bytes, bytes]:
    """Two rows, the first in a lower bucket of COL than the second."""
    low, high = b"a", next(b"r%d" % i for i in range(1000)
                           if log.bucket_of(b"r%d" % i) > log.bucket_of(b"a"))
    return low, high


def test_an_entry_moving_to_a_bucket_read_already_is_found(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """pending() reads bucket after bucket, not one snapshot.  An observer chain writes
    its next entry into a bucket read already and then deletes the entry it ran for from
    one not read yet: a walk during that counted neither, though one was there all along
    (a worker went idle mid-chain: Worker.run_until_idle returned with a chain
    unfinished).  The write tells the feed; the walk is made again."""
    low, high = _rows_in_two_buckets()
    write(client, [high])
    feed = feed_of(client)
    real = feed._pending_in  # noqa: SLF001 - the seam between two buckets' reads
    moved: list[int] = []

    def crossed(column: bytes, bucket: int, floor: int, resolved: int, cap: int) -> int:
        if bucket == log.bucket_of(high) and not moved:
            moved.append(bucket)
            write(client, [low])  # the next link, into a bucket read already
            client.notifications.done(client.table, refs_of(client, {high}))  # then done
        return real(column, bucket, floor, resolved, cap)

    monkeypatch.setattr(feed, "_pending_in", crossed)
    assert client.notifications.pending(client.table, [COL], 10) == 1
    assert moved, "the walk never reached the second bucket"
    monkeypatch.undo()
    must_count_exactly(client)


def test_walks_crossed_by_every_write_give_way_to_one_scan(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a steady stream of log writes every walk is crossed: after the second,
    pending() reads the columns' range in one scan, and counts what it holds."""
    low, high = _rows_in_two_buckets()
    write(client, [low, high])
    feed = feed_of(client)
    hook = ScanHook(feed._store)  # noqa: SLF001 - the one seam to the store
    feed._store = hook  # noqa: SLF001
    real = feed._pending_in  # noqa: SLF001
    walks: list[int] = []

    def crossed(column: bytes, bucket: int, floor: int, resolved: int, cap: int) -> int:
        if bucket == log.bucket_of(high):
            walks.append(bucket)
            feed.written([], [])  # a log write landed meanwhile (of any column)
        return real(column, bucket, floor, resolved, cap)

    monkeypatch.setattr(feed, "_pending_in", crossed)
    assert client.notifications.pending(client.table, [COL], 10) == 2
    assert len(walks) == 2, "one walk per try, two tries"
    whole = [s for s in hook.scans if s.start_row == log.column_prefix(COL)]
    assert whole, f"no scan of the column's range: {hook.scans}"
    monkeypatch.undo()
    must_count_exactly(client)
