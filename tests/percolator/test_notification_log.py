"""The notification log at the node, on its own: positions held in flight until written
(the resolved timestamp), readers' cursors that never pass an entry written later --
also for an old change (a secondary rolled forward) --, idempotent pulls, the
assignment of buckets (revoke before grant, leases, claims after a restart), and the
backfill's choices."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import Row, ScanRequest
from percolator import Client
from percolator._backend import CommitRequest, PrewriteRequest
from percolator._local import LocalBackend
from percolator._notify import log
from percolator._notify.assignment import Assignment
from percolator._notify.backfill import Backfill
from percolator._notify.feed import REINDEX
from percolator._notify.resolved import Tracker
from percolator.notifications import BUCKETS, PullReply, PullRequest
from percolator.oracle import Oracle
from tests.percolator.steps import log_entries
from tests.percolator.txn_fixtures import parts_of

COL = b"c"


@pytest.fixture(name="client")
def client_fixture(tmp_path: Path) -> Iterator[Client]:
    with Client.embedded(tmp_path / "data", lock_ttl=1.0) as client:
        client.notifications.register(client.table, COL, backfill=False)
        yield client


class Reader:
    """A worker's side of pulls, by hand: cursors kept, every entry seen recorded."""

    def __init__(self, client: Client, worker: str = "w") -> None:
        self.client = client
        self.request = PullRequest(worker, (COL,), lease_ms=60_000, room=100_000)
        self.seen: set[tuple[bytes, bytes]] = set()

    def pull(self, wait_ms: int = 0) -> PullReply:
        reply = self.client.notifications.pull(self.client.table, PullRequest(
            self.request.worker, (COL,), 60_000, self.request.held, room=100_000,
            cursors=self.request.cursors, wait_ms=wait_ms))
        self.request = PullRequest(self.request.worker, (COL,), 60_000, reply.owned,
                                   cursors=reply.cursors)
        for row in reply.rows:
            self.seen.update((row.key, data_row) for data_row, _ in row.cells)
        return reply


def in_log(client: Client) -> set[tuple[bytes, bytes]]:
    return {(log.log_key(e.column, e.bucket, e.position), e.row) for e in log_entries(client)}


def test_resolved_never_passes_a_position_in_flight(tmp_path: Path) -> None:
    from bigtable_lite import LocalStore

    with LocalStore(tmp_path / "o") as store:
        tracker = Tracker(Oracle(store))
        errors: list[str] = []

        def write() -> None:
            for _ in range(200):
                with tracker.allocate(random.randrange(1, 4)) as first:
                    if tracker.resolved() >= first:
                        errors.append(f"resolved {tracker.resolved()} >= {first} in flight")
                    time.sleep(random.random() / 5000)

        threads = [threading.Thread(target=write) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with tracker.allocate() as last:
            pass
        assert tracker.resolved() == last, "nothing in flight: the last position handed out"


def test_a_pull_never_passes_an_entry_written_while_it_reads(client: Client) -> None:
    """A write that completes between the pull's look at the buckets and its resolved
    timestamp: had the pull taken the buckets' last positions first, it would skip the
    bucket, move its cursor past the entry, and never hand it out."""
    reader = Reader(client)
    reader.pull()  # owns every bucket, cursors at resolved
    assert isinstance(client.backend, LocalBackend)
    tracker = client.backend.ctx.log.tracker
    inner = tracker.resolved
    armed = [True]

    def resolved_after_a_commit() -> int:
        if armed[0]:
            armed[0] = False
            with client.transaction() as txn:
                txn.set(b"sneaky", COL, b"v")
        return inner()

    tracker.resolved = resolved_after_a_commit  # type: ignore[method-assign]
    try:
        reader.pull()
        reader.pull()
    finally:
        del tracker.resolved
    assert in_log(client) <= reader.seen and len(reader.seen) == 1


def test_a_secondary_rolled_forward_after_the_cursor_passed_its_commit_is_seen(
        client: Client) -> None:
    """The writer died after its commit point; a reader rolls the secondary forward long
    after the cursors moved past the commit_ts: its entry is written at a fresh position,
    ahead of every cursor."""
    be = client.backend
    start_ts = client.timestamp()
    cells = {(b"p", COL): b"v", (b"s", COL): b"v"}
    assert be.prewrite(PrewriteRequest(client.table, start_ts, (b"p", COL), 60_000,
                                       parts_of(cells))) is None
    commit_ts = be.commit(CommitRequest(client.table, start_ts, (b"p", COL), [])).commit_ts
    reader = Reader(client)
    reader.pull()
    passed = reader.request.cursors.base
    assert passed >= commit_ts and len(reader.seen) == 1
    assert client.begin().get(b"s", COL) == b"v"  # rolled forward by this read
    reader.pull()
    assert in_log(client) == reader.seen and len(reader.seen) == 2
    [rolled] = [e for e in log_entries(client) if e.row == b"s"]
    assert rolled.change_ts == commit_ts and rolled.position > passed


def test_every_entry_written_by_concurrent_writers_is_handed_out(client: Client) -> None:
    """One- and two-phase commits, weak notifications and roll-forwards from several
    threads while a reader pulls in a loop: every entry ever written is handed out."""
    rng = random.Random(7)
    two_phase = Client(client.backend, lock_ttl=1.0, one_phase=False)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(60):
                c = two_phase if (i + k) % 2 else client
                with c.transaction() as txn:
                    for j in range(rng.randrange(1, 5)):
                        txn.set(b"r%d-%d-%d" % (k, i, j), COL, b"v")
                    if i % 7 == 0:
                        txn.notify(b"weak%d-%d" % (k, i), COL)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    reader = Reader(client)
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()

    def pull_loop() -> None:
        while not stop.is_set():
            reader.pull(wait_ms=20)

    puller = threading.Thread(target=pull_loop)
    puller.start()
    for t in threads:
        t.join(120)
    stop.set()
    puller.join(60)
    two_phase.ctx.keeper.close()
    assert errors == []
    reader.pull()
    everything = in_log(client)
    assert len(everything) > 240 and everything == reader.seen


def test_a_pull_repeated_after_a_lost_reply_hands_out_the_same_entries(
        client: Client) -> None:
    with client.transaction() as txn:
        for i in range(20):
            txn.set(b"r%02d" % i, COL, b"v")
    request = PullRequest("w", (COL,), 60_000, room=1000)
    first = client.notifications.pull(client.table, request)
    again = client.notifications.pull(client.table, request)  # the first reply was lost
    assert len(first.rows) > 0 and first.rows == again.rows and first.owned == again.owned


def test_room_limits_a_pull_and_the_cursors_resume_where_it_stopped(client: Client) -> None:
    with client.transaction() as txn:
        for i in range(300):
            txn.set(b"r%03d" % i, COL, b"v")
    seen: set[bytes] = set()
    request = PullRequest("w", (COL,), 60_000, room=40)
    for _ in range(30):
        reply = client.notifications.pull(client.table, request)
        assert sum(len(r.cells) for r in reply.rows) <= 40 + 3  # whole log rows
        seen.update(row for r in reply.rows for row, _ in r.cells)
        request = PullRequest("w", (COL,), 60_000, reply.owned, room=40,
                              cursors=reply.cursors)
        if not reply.more:
            break
    assert len(seen) == 300


# --- the assignment of buckets ---------------------------------------------------------------


def owned(a: Assignment, worker: str) -> frozenset[int]:
    return a.owned(worker)[0].get(COL, frozenset())


def revoking(a: Assignment, worker: str) -> frozenset[int]:
    return a.owned(worker)[1].get(COL, frozenset())


def test_buckets_are_revoked_before_they_are_granted() -> None:
    a = Assignment(handover=30.0)
    woken: list[str] = []
    a.renew("A", [COL], 10.0, 0.0, {}, -1)
    a.rebalance(0.0, woken.append)
    assert owned(a, "A") == frozenset(range(BUCKETS)) and woken == ["A"]
    a.renew("B", [COL], 10.0, 1.0, {}, -1)
    a.rebalance(1.0, woken.append)
    going = revoking(a, "A")
    assert 100 < len(going) < 156, "about half move, by rendezvous weight"
    assert owned(a, "B") == frozenset(), "nothing granted before it was released"
    a.release("A", {COL: frozenset(list(going)[:10])})
    a.rebalance(2.0, woken.append)
    assert owned(a, "B") == frozenset(list(going)[:10])
    a.rebalance(40.0, woken.append)  # the handover deadline passed: granted anyway
    assert owned(a, "B") == going and owned(a, "A") == frozenset(range(BUCKETS)) - going
    assert not revoking(a, "A")


def test_buckets_are_split_evenly_and_a_join_moves_few_others() -> None:
    """4 workers own 64 buckets each (crc32 weights once split them 128/64/32/32); a
    fifth takes its share and few other buckets move."""
    for trial in range(3):
        a = Assignment(handover=0.0)
        workers = [f"host-{trial}-{i}" for i in range(5)]
        for w in workers[:4]:
            a.renew(w, [COL], 10.0, 0.0, {}, -1)
        a.rebalance(0.0, lambda w: None)
        assert sorted(len(owned(a, w)) for w in workers[:4]) == [64] * 4
        before = {b: a.owner(COL, b) for b in range(BUCKETS)}
        a.renew(workers[4], [COL], 10.0, 1.0, {}, -1)
        for now in (1.0, 2.0, 3.0):  # revoke, then grant (handover 0: at once)
            a.rebalance(now, lambda w: None)
        sizes = sorted(len(owned(a, w)) for w in workers)
        assert sizes[-1] == -(-BUCKETS // 5) and sizes[0] >= BUCKETS // 5 - 5, sizes
        assert sum(sizes) == BUCKETS
        moved = sum(before[b] != a.owner(COL, b) for b in range(BUCKETS))
        assert moved <= len(owned(a, workers[4])) + 16, "a join moves little besides its share"


def test_an_expired_member_loses_its_buckets_at_once_and_claims_are_granted() -> None:
    a = Assignment()
    a.renew("A", [COL], 5.0, 0.0, {}, -1)
    a.renew("B", [COL], 5.0, 0.0, {}, -1)
    a.rebalance(0.0, lambda w: None)
    mine = owned(a, "A")
    assert len(mine) + len(owned(a, "B")) == BUCKETS
    a.renew("B", [COL], 5.0, 4.0, {}, -1)  # B renews; A falls silent
    assert a.expire(6.0) == ["A"]
    a.rebalance(6.0, lambda w: None)
    assert owned(a, "B") == frozenset(range(BUCKETS))
    restarted = Assignment()  # a node restart: members claim what they hold
    restarted.renew("A", [COL], 5.0, 0.0, {COL: mine}, 3)
    restarted.rebalance(0.0, lambda w: None)
    assert owned(restarted, "A") == frozenset(range(BUCKETS))
    assert restarted.members["A"].index == 3
    restarted.renew("B", [COL], 5.0, 0.0, {COL: frozenset(range(BUCKETS))}, 3)
    assert restarted.members["B"].index == 0, "a taken index is not granted twice"


def test_two_columns_observed_by_the_same_workers_are_split_alike() -> None:
    a = Assignment()
    for w in ("A", "B", "C"):
        a.renew(w, [COL, b"d"], 5.0, 0.0, {}, -1)
    a.rebalance(0.0, lambda w: None)
    for w in ("A", "B", "C"):
        mine, _ = a.owned(w)
        assert mine[COL] == mine[b"d"] and mine[COL]


def test_a_first_assignment_waits_until_the_workers_joined() -> None:
    """Workers joining together get their shares at once: the first to join is not given
    every bucket (to revoke them while its first batch holds them)."""
    a = Assignment(quiet=0.5, most=3.0)
    woken: list[str] = []
    a.renew("A", [COL], 10.0, 0.0, {}, -1)
    a.rebalance(0.0, woken.append)
    assert owned(a, "A") == frozenset() and a.hold_left(0.0) == 0.5 and not woken
    a.renew("B", [COL], 10.0, 0.3, {}, -1)
    a.rebalance(0.3, woken.append)
    a.rebalance(0.7, woken.append)
    assert owned(a, "A") == owned(a, "B") == frozenset(), "B joined 0.4 s ago: still held"
    a.rebalance(0.8, woken.append)
    assert len(owned(a, "A")) == len(owned(a, "B")) == BUCKETS // 2
    assert not revoking(a, "A") and not revoking(a, "B") and sorted(woken) == ["A", "B"]
    assert a.hold_left(0.8) is None
    a.renew("C", [COL], 10.0, 1.0, {}, -1)  # a later joiner: the usual handover, no hold
    a.rebalance(1.0, woken.append)
    assert revoking(a, "A") or revoking(a, "B")


def test_a_first_assignment_is_held_at_most_so_long() -> None:
    a = Assignment(quiet=0.5, most=3.0)
    now = 0.0
    for i in range(8):  # a worker joins every 0.4 s: never quiet for 0.5 s
        a.renew(f"w{i}", [COL], 10.0, now, {}, -1)
        a.rebalance(now, lambda w: None)
        assert all(not owned(a, f"w{j}") for j in range(i + 1)) or now >= 3.0
        now += 0.4
    a.rebalance(3.0, lambda w: None)
    assert sum(len(owned(a, f"w{j}")) for j in range(8)) == BUCKETS


def test_pulls_of_workers_joining_together_get_their_shares_without_a_handover(
        client: Client) -> None:
    """Through the feed: a waiting pull returns when the held first assignment is
    granted, and neither worker is asked to give anything back."""
    client.notifications.hold_first_assignments(0.5, 3.0)  # as a node does
    replies: dict[str, PullReply] = {}

    def pull(worker: str) -> None:
        replies[worker] = client.notifications.pull(client.table, PullRequest(
            worker, (COL,), 60_000, room=100, wait_ms=10_000))

    began = time.monotonic()
    first = threading.Thread(target=pull, args=("A",))
    first.start()
    time.sleep(0.1)  # B starts a little later, as a second process does
    second = threading.Thread(target=pull, args=("B",))
    second.start()
    first.join(10)
    second.join(10)
    elapsed = time.monotonic() - began
    assert set(replies) == {"A", "B"}
    assert 0.5 <= elapsed < 5.0, "held until B had been a member for 0.5 s, not the long poll"
    for reply in replies.values():
        assert len(reply.owned[COL]) == BUCKETS // 2 and not reply.revoking


# --- backfill -----------------------------------------------------------------------------


def test_backfill_queues_only_cells_whose_last_commit_is_below_the_registration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell written again after the registration has that commit's entry (its observer
    sees the older change too): the backfill, reading after it, adds none for it."""
    go = threading.Event()
    chunk = Backfill._chunk

    def held_chunk(self: Backfill) -> bool:
        assert go.wait(30)
        return chunk(self)

    monkeypatch.setattr(Backfill, "_chunk", held_chunk)
    with Client.embedded(tmp_path / "d") as client:
        with client.transaction() as txn:
            txn.set(b"old", b"x", b"1")
            txn.set(b"both", b"x", b"1")
        registered = client.notifications.register(client.table, b"x")
        with client.transaction() as txn:
            txn.set(b"both", b"x", b"2")
            txn.set(b"new", b"x", b"2")
        go.set()
        deadline = time.monotonic() + 30
        while client.notifications.columns(client.table)[0].backfill_pending:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        kinds = {(e.row, e.kind) for e in log_entries(client)}
        assert kinds == {(b"old", log.BACKFILL), (b"both", log.WRITE), (b"new", log.WRITE)}
        [old] = [e for e in log_entries(client) if e.row == b"old"]
        assert old.change_ts < registered.at < old.position


@pytest.mark.parametrize("one_phase", [True, False], ids=["one-phase", "two-phase"])
def test_a_commit_racing_the_registration_is_seen_either_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_phase: bool) -> None:
    """A commit is held at the failpoint between its commit_ts and its commit point while
    its column is registered: the two-phase commit step has read the observed set already
    (without the column) and commits below R, so the backfill (which waits for its lock)
    must announce it; the one-phase commit reads the set after its commit_ts, finds the
    column and is tried again above R, with its own entry.  Either way exactly the
    change's commit_ts is announced."""
    from percolator._steps import commit as commit_step
    from percolator._steps import one_phase as one_phase_step

    reached, go = threading.Event(), threading.Event()
    module = one_phase_step if one_phase else commit_step
    real_hit = module.failpoints.hit

    def hold(name: str) -> None:
        if name == "commit.before_commit_primary":
            reached.set()
            assert go.wait(30)
        real_hit(name)

    monkeypatch.setattr(module.failpoints, "hit", hold)
    with Client.embedded(tmp_path / "d", one_phase=one_phase) as client:
        committed: list[int] = []

        def write() -> None:
            txn = client.begin()
            txn.set(b"r", b"x", b"1")
            committed.append(txn.commit())

        writer = threading.Thread(target=write)
        writer.start()
        assert reached.wait(30)
        monkeypatch.setattr(module.failpoints, "hit", real_hit)
        registered = client.notifications.register(client.table, b"x")
        go.set()
        writer.join(30)
        assert not writer.is_alive()
        deadline = time.monotonic() + 30
        while client.notifications.columns(client.table)[0].backfill_pending:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        [commit_ts] = committed
        entries = [e for e in log_entries(client) if e.row == b"r"]
        assert entries and {e.change_ts for e in entries} == {commit_ts}
        kinds = {e.kind for e in entries}
        if one_phase:  # it found the column observed after its commit_ts: tried again
            assert commit_ts > registered.at and kinds == {log.WRITE}
        else:  # decided without the column, committed below R: the backfill's (and, if
            # the backfill met the lock just before the commit point and rolled the
            # committed transaction forward, that roll-forward's: a repeat, harmless)
            assert commit_ts < registered.at and log.BACKFILL in kinds
            assert kinds <= {log.BACKFILL, log.WRITE}


def test_an_idle_pulls_rescan_reads_its_own_columns_not_the_whole_log(client: Client) -> None:
    """The rescan for entries written behind the node's back (every REINDEX seconds, by
    a pull that found nothing) reads the puller's columns: a backlog of another column,
    observed by nobody yet, is not read by every idle worker of the table."""
    other = b"o"
    client.notifications.register(client.table, other, backfill=False)
    with client.transaction() as txn:
        for i in range(50):
            txn.set(b"r%02d" % i, other, b"v")
    reader = Reader(client)
    for _ in range(5):  # until it holds what it owns
        if reader.pull().owned == reader.request.held and reader.request.held:
            break
    feed = client.notifications.feed(client.table)  # type: ignore[attr-defined]
    scans: list[ScanRequest] = []
    store = feed._store  # noqa: SLF001 - the one seam to the store

    class Spy:
        def scan(self, request: ScanRequest) -> Iterator[Row]:
            scans.append(request)
            return store.scan(request)  # type: ignore[no-any-return]

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

    feed._store = Spy()  # noqa: SLF001
    feed._indexed_at -= REINDEX  # noqa: SLF001 - a rescan is due
    assert not reader.pull(wait_ms=50).rows
    rescans = [s for s in scans if s.start_row in (None, b"") or
               s.start_row == log.column_prefix(COL)]
    assert rescans and all(s.start_row == log.column_prefix(COL) and
                           s.end_row == log.column_end(COL) for s in rescans), scans


def test_a_bucket_late_in_the_order_is_not_starved_by_busy_early_ones(client: Client) -> None:
    """A pull with room for less than what waits reads from where the last one ran out
    of room: an entry of a late bucket is handed out within two pulls, though an early
    bucket gets a new entry before each."""

    def row_in(bucket: int, tag: str) -> bytes:
        return next(r for r in (f"{tag}-{i}".encode() for i in itertools.count())
                    if log.bucket_of(r) == bucket)

    reply = client.notifications.pull(client.table, PullRequest("w", (COL,), 60_000, room=0))
    held, cursors = reply.owned, reply.cursors
    with client.transaction() as txn:
        txn.set(row_in(200, "late"), COL, b"x")
    handed: list[bytes] = []
    for turn in range(2):
        with client.transaction() as txn:  # a new entry in an early bucket every turn
            txn.set(row_in(3, f"early{turn}"), COL, b"x")
        reply = client.notifications.pull(client.table, PullRequest(
            "w", (COL,), 60_000, held, cursors=cursors, room=1))
        held, cursors = reply.owned, reply.cursors
        handed += [row for log_row in reply.rows for row, _ in log_row.cells]
    assert any(row.startswith(b"late") for row in handed), handed
