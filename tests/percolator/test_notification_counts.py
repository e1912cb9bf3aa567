"""The pending counts of a table's feed stay exact (they drifted up: phantom entries),
and ``pending()`` does not read again what it knows to be empty."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bigtable_lite import Put, Row, RowMutation, ScanRequest
from percolator import Client, failpoints
from percolator._backend import CommitRequest, PrewriteRequest
from percolator._notify import log
from percolator._notify.feed import REINDEX, TableFeed
from percolator.layout import notify_table
from percolator.notifications import DoneRef, PullRequest
from tests.percolator.steps import log_entries
from tests.percolator.test_notification_log import COL
from tests.percolator.test_notification_log import client_fixture as client_fixture
from tests.percolator.txn_fixtures import parts_of


def feed_of(client: Client) -> TableFeed:
    feed: TableFeed = client.notifications.feed(client.table)  # type: ignore[attr-defined]
    return feed


def must_count_exactly(client: Client) -> None:
    """The feed's count of COL is the number of COL's entries in the log."""
    stored = sum(1 for e in log_entries(client) if e.column == COL)
    assert feed_of(client).counts.of(COL) == stored, "the count lies"
    assert client.notifications.pending(client.table, [COL], 10**6) == stored


def write(client: Client, rows: list[bytes]) -> None:
    with client.transaction() as txn:
        for row in rows:
            txn.set(row, COL, b"v")


def refs_of(client: Client, rows: set[bytes]) -> list[DoneRef]:
    by_log_row: dict[bytes, list[bytes]] = {}
    for e in log_entries(client):
        if e.row in rows:
            by_log_row.setdefault(log.log_key(e.column, e.bucket, e.position), []).append(e.row)
    return [DoneRef(k, tuple(v)) for k, v in by_log_row.items()]


class ScanHook:
    """The feed's store, running ``meanwhile`` once a scan of the log has read its first
    row (its snapshot is taken), and recording every scan request."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.meanwhile: list[Any] = []
        self.scans: list[ScanRequest] = []

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        self.scans.append(request)
        rows = self.store.scan(request)
        first = next(rows, None)
        while self.meanwhile:
            self.meanwhile.pop()()
        if first is not None:
            yield first
        yield from rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


# --- counts -------------------------------------------------------------------------------


def test_a_commit_whose_primary_was_settled_meanwhile_counts_no_entry(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit step read its locks, then found its primary settled by another (here
    rolled back, as a reader does with an expired lock) and wrote nothing: its entries
    were counted all the same."""
    feed_of(client)  # made: it hears of writes from now on
    be = client.backend
    start_ts = client.timestamp()
    cells = {(b"p", COL): b"v", (b"s", COL): b"v"}
    assert be.prewrite(PrewriteRequest(client.table, start_ts, (b"p", COL), 60_000,
                                       parts_of(cells))) is None
    real_hit = failpoints.hit

    def settle_first(name: str) -> None:
        if name == "commit.before_commit_primary":
            monkeypatch.setattr(failpoints, "hit", real_hit)
            be.rollback(client.table, start_ts, (b"p", COL), sorted(cells))
        real_hit(name)

    monkeypatch.setattr(failpoints, "hit", settle_first)
    outcome = be.commit(CommitRequest(client.table, start_ts, (b"p", COL), [(b"s", COL)]))
    assert not outcome.committed
    assert log_entries(client) == []
    must_count_exactly(client)


def test_entries_handed_back_twice_are_uncounted_once(client: Client) -> None:
    """A pull repeated after a lost reply hands back the same finished entries: the
    second delete removes nothing and must subtract nothing."""
    rows = [b"r%d" % i for i in range(5)]
    write(client, rows)
    done = refs_of(client, {b"r0", b"r1"})
    for _ in range(2):
        client.notifications.pull(client.table, PullRequest("w", (COL,), 60_000, done=tuple(done)))
    assert len(log_entries(client)) == 3
    must_count_exactly(client)


def test_a_rescan_while_entries_are_deleted_counts_none_of_them_again(
        client: Client) -> None:
    """The rescan of an idle pull (entries written behind the node's back) raised the
    count to what it found: the entries another worker deleted during the scan, found
    by it, stayed counted for ever."""
    write(client, [b"r%d" % i for i in range(10)])
    feed = feed_of(client)
    hook = ScanHook(feed._store)  # noqa: SLF001 - the one seam to the store
    feed._store = hook  # noqa: SLF001
    gone = refs_of(client, {b"r1", b"r2", b"r3"})
    hook.meanwhile.append(lambda: feed.delete(gone))
    feed.build_index([COL], force=False)
    assert not hook.meanwhile, "the delete ran during the scan"
    must_count_exactly(client)


def test_an_entry_written_behind_the_nodes_back_is_counted_by_a_quiet_rescan(
        client: Client) -> None:
    """The rescan still finds what the node did not write (a raw write)."""
    write(client, [b"a"])
    feed = feed_of(client)
    raw = RowMutation(notify_table(client.table), log.log_key(COL, log.bucket_of(b"raw"),
                                                               client.timestamp()),
                      (Put(b"raw", 0, log.encode_entry(log.WRITE, 1)),))
    client.store.mutate_rows([raw])
    assert feed.counts.of(COL) == 1
    feed._indexed_at -= REINDEX  # noqa: SLF001 - a rescan is due
    feed._refresh([COL])  # noqa: SLF001 - as an idle pull does
    must_count_exactly(client)


def test_counts_stay_exact_through_random_writes_retries_deletes_and_rescans(
        client: Client) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    feed = feed_of(client)
    hook = ScanHook(feed._store)  # noqa: SLF001
    feed._store = hook  # noqa: SLF001
    written = 0
    for step in range(60):
        action = rng.randrange(4)
        if action == 0:
            write(client, [b"r%d-%d" % (step, i) for i in range(rng.randrange(1, 5))])
            written += 1
        elif action == 1:
            rows = {e.row for e in log_entries(client) if rng.random() < 0.5}
            done = refs_of(client, rows)
            feed.delete(done)
            feed.delete(done)  # again: removes nothing
        elif action == 2:
            rows = {e.row for e in log_entries(client) if rng.random() < 0.3}
            hook.meanwhile.append(lambda rows=rows: feed.delete(refs_of(client, rows)))
            feed.build_index([COL], force=False)
        else:
            feed.build_index([COL], force=False)  # quiet: settled
        must_count_exactly(client)
    assert written


# --- pending() ----------------------------------------------------------------------------


def test_pending_does_not_read_again_what_it_knows_to_be_empty(client: Client) -> None:
    """Once every entry was handled, a check for pending entries reads nothing (it read
    each column from its start, over every deleted entry, every call); a new entry, in
    a bucket read before, is found."""
    rows = [b"r%d" % i for i in range(200)]
    write(client, rows)
    assert client.notifications.pending(client.table, [COL], 10**6) == len(rows)
    entries = log_entries(client)
    client.notifications.done(client.table, refs_of(client, set(rows)))
    feed = feed_of(client)
    hook = ScanHook(feed._store)  # noqa: SLF001
    feed._store = hook  # noqa: SLF001
    assert client.notifications.pending(client.table, [COL], 1) == 0
    first = len(hook.scans)
    assert client.notifications.pending(client.table, [COL], 10**6) == 0
    assert len(hook.scans) == first, f"read again: {hook.scans[first:]}"
    handled = max(e.position for e in entries)
    write(client, [b"r7"])  # a bucket read before
    assert client.notifications.pending(client.table, [COL], 10**6) == 1
    [scan] = hook.scans[first:]
    prefix = log.bucket_prefix(COL, log.bucket_of(b"r7"))
    assert scan.start_row is not None and scan.start_row.startswith(prefix)
    assert log.decode_key(scan.start_row)[2] > handled, "from past the handled entries"


def test_pending_finds_an_entry_written_below_a_floor_once_a_rescan_saw_it(
        client: Client) -> None:
    """A raw write at an old position (below where pending() reads its bucket from) is
    found by the rescan, which lowers the floor."""
    write(client, [b"a"])
    client.notifications.done(client.table, refs_of(client, {b"a"}))
    assert client.notifications.pending(client.table, [COL], 10) == 0
    raw = RowMutation(notify_table(client.table), log.log_key(COL, log.bucket_of(b"a"), 1),
                      (Put(b"a", 0, log.encode_entry(log.WRITE, 1)),))
    client.store.mutate_rows([raw])
    feed_of(client).build_index([COL], force=False)
    assert client.notifications.pending(client.table, [COL], 10) == 1
    must_count_exactly(client)


# --- a backfill's progress and the registration's prefix ---------------------------------


def test_a_backfill_never_writes_an_older_partition_prefix_over_a_newer_one(
        tmp_path: Path) -> None:
    """The column is registered again with a new partition prefix while its backfill
    waits for a live lock in its first chunk: the progress the backfill then writes
    keeps the new prefix (it wrote back the one it started with, which a restart read:
    new entries went to the old buckets).  No entry is lost either way: each sits in
    the bucket its log key names, and every bucket is read by its owner."""
    data = tmp_path / "data"
    with Client.embedded(data, lock_ttl=60.0) as client:
        for i in range(5):
            write_column(client, b"q/r%d" % i)
        be = client.backend
        start_ts = client.timestamp()
        assert be.prewrite(PrewriteRequest(client.table, start_ts, (b"q/r9", COL), 60_000,
                                           parts_of({(b"q/r9", COL): b"v"}))) is None
        client.notifications.register(client.table, COL, partition_prefix=b"p/")
        client.notifications.register(client.table, COL, partition_prefix=b"q/")
        be.rollback(client.table, start_ts, (b"q/r9", COL), [(b"q/r9", COL)])
        wait_for_backfill(client)
        [info] = client.notifications.columns(client.table)
        assert info.partition_prefix == b"q/"
        assert {e.bucket for e in log_entries(client)} == {
            log.bucket_of(b"q/r%d" % i, b"q/") for i in range(5)}
    with Client.embedded(data) as client:
        [info] = client.notifications.columns(client.table)
        assert info.partition_prefix == b"q/", "a restart reads the prefix registered last"
        assert client.notifications.pending(client.table, [COL], 100) == 5


def write_column(client: Client, row: bytes) -> None:
    with client.transaction() as txn:
        txn.set(row, COL, b"v")


def wait_for_backfill(client: Client) -> None:
    deadline = time.monotonic() + 30
    while any(c.backfill_pending for c in client.notifications.columns(client.table)):
        assert time.monotonic() < deadline, "the backfill did not finish"
        time.sleep(0.01)
