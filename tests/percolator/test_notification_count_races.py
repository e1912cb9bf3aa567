"""The feed's pending counts under races: a recount between a delete's end and its
subtraction, an entry named twice in a handback or a parking, a commit in flight while
pending() moves a bucket's floor."""

from __future__ import annotations

import threading
import time

import pytest

from percolator import Client, failpoints
from percolator._notify.api import DoneRef
from percolator.notifications import PullRequest
from tests.percolator.steps import log_entries
from tests.percolator.test_notification_counts import (
    COL,
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
