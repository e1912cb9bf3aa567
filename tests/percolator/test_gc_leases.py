"""Remote clients' GC leases: kept across a node's restart, in order, and the caller's own.

* A node killed with kill -9 and started again holds the safe point at each lease it
  had (persisted in the ``_gc`` table), for one lease from its start or until the
  client reports again: a remote transaction older than gc_life_time reads on.
* A report delivered after a later one of its client (reordered, sent again) is
  ignored: it cannot release what the later one holds.
* A report accepted holds across a kill -9 at once: one naming a start_ts below its
  client's persisted floor (its lease lapsed meanwhile) lowers the floor first, even
  racing a pass.
* A pass settles any number of leases; a pass whose write fails leaves every row to
  the next one.

Whose a lease is, and how many a principal may hold: test_gc_lease_principals.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from bigtable_lite import LocalStore, RowMutation, Unavailable
from percolator import Client, SnapshotTooOld, Transaction
from percolator._gc_table import GC_TABLE, LEASES_ROW, read_leases
from percolator._leases import client_key
from percolator._local import LocalBackend
from percolator._node_client import NodeClient
from percolator._safe_point import HELD_BY, SafePoint
from percolator._snapshots import ActiveSnapshots, SnapshotReport
from percolator.clock import FakeClock
from percolator.oracle import Oracle
from tests.procs import ServerProcess

from .gc_helpers import eventually, gc_world, settle_reports

KEY = (b"row", b"v")
HOUR = "3600"
# Every snapshot older than the present is collectable unless a lease holds it; passes
# only when the test asks; a lease of 10 minutes: the client reports every 200 s, so
# none of its reports comes between the restart and the test's pass.
GC_NOW = ("--gc-life-time", "0", "--gc-interval", HOUR, "--gc-client-lease", "600",
          "--native-listen", "127.0.0.1:0")


def must_read(txn_get: object, expected: bytes) -> None:
    assert txn_get == expected, txn_get


def reachable(backend: NodeClient) -> bool:
    """Whether a call (one that holds nothing) reaches the node now."""
    try:
        backend.now_ms()
    except Unavailable:
        return False
    return True


# --- a restart ------------------------------------------------------------------------


@pytest.mark.parametrize("pass_before", [False, True], ids=["registered", "after-a-pass"])
def test_a_remote_snapshot_older_than_the_life_time_survives_a_kill_9_of_the_node(
        tmp_path: Path, pass_before: bool) -> None:
    """The node is killed while a remote client holds an old snapshot (its lease's
    floor persisted when the client first held anything, or rewritten by a pass), and
    started again: GC passes right after leave the snapshot readable; once the client
    reports with a timestamp of the new node, its report holds it instead."""
    server = ServerProcess(tmp_path / "data", *GC_NOW).start()
    try:
        with Client.connect(server.address, timeout=30) as client:
            backend = client.backend
            assert isinstance(backend, NodeClient)
            with client.transaction() as txn:
                txn.set(*KEY, b"old")
            reader = client.begin()
            must_read(reader.get(*KEY), b"old")
            with client.transaction() as txn:
                txn.set(*KEY, b"new")
            if pass_before:
                assert client.collect_garbage().safe_point <= reader.start_ts
            reporter = backend._reporter
            eventually(lambda: reporter.reports > 0 and reporter.interval > 100,
                       "the client reported, and learnt its next report is 200 s away")
            server.kill()  # kill -9: no final save
            server.start(same_port=True)
            eventually(lambda: reachable(backend), "the client reaches the node again")
            done = client.collect_garbage()
            assert done.safe_point <= reader.start_ts, done
            assert done.held_by == HELD_BY["restored clients"], done
            must_read(reader.get(*KEY), b"old")
            client.timestamp()  # a timestamp of the new node: the next report names all
            settle_reports(client)
            done = client.collect_garbage()
            assert done.safe_point == reader.start_ts, done
            assert done.held_by == HELD_BY["clients"], done
            must_read(reader.get(*KEY), b"old")
            reader.rollback()
            settle_reports(client)
            assert client.collect_garbage().safe_point > reader.start_ts
            with pytest.raises(SnapshotTooOld):  # released: collected now
                Transaction(client.ctx, reader.start_ts).get(*KEY)
            must_read(client.begin().get(*KEY), b"new")
    finally:
        server.kill()


def _open(path: Path, clock: FakeClock, lease: float = 10.0) -> LocalBackend:
    """A backend (a node's, as it were) on ``path``: GC passes when asked, life time 0."""
    store = LocalStore(str(path))
    return LocalBackend(store, Oracle(store), clock=clock, gc_life_time=0.0,
                        client_lease=lease)


def test_a_restored_lease_holds_for_one_lease_from_the_open_then_is_gone(
        tmp_path: Path) -> None:
    """A client that never reports again (it died with the node) holds the safe point
    one lease after the open, as its lease would have; then its row is deleted, and
    the next open holds nothing."""
    clock = FakeClock()
    path = tmp_path / "data"
    backend = _open(path, clock)
    try:
        start_ts = backend.timestamps(1, b"client")
        backend.report_snapshots(b"client", SnapshotReport(start_ts, start_ts, 1))
        backend.timestamps(5)
    finally:
        backend.close()
    clock.advance(3600)  # however long the node was down: a lease from the open
    backend = _open(path, clock)
    try:
        assert read_leases(backend.local_store) == {b"client": start_ts}
        backend.timestamps(5)
        assert backend.collect_garbage().safe_point == start_ts
        clock.advance(9)
        assert backend.collect_garbage().safe_point == start_ts
        assert backend.safe_point.holders()["restored_clients"] == start_ts
        clock.advance(2)
        assert backend.collect_garbage().safe_point > start_ts
        assert read_leases(backend.local_store) == {}
    finally:
        backend.close()
    backend = _open(path, clock)
    try:
        moved = backend.timestamps(1)
        assert backend.collect_garbage().safe_point > moved  # nothing held: at once
    finally:
        backend.close()


def test_only_a_report_read_after_the_open_replaces_the_restored_lease(
        tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "data"
    backend = _open(path, clock)
    try:
        old = backend.timestamps(1, b"client")
        backend.report_snapshots(b"client", SnapshotReport(old, old, 1))
    finally:
        backend.close()
    backend = _open(path, clock)
    try:
        # Read before the client saw the new node: the restored floor still holds (a
        # transaction it began after the last pass may be missing from an old report).
        backend.report_snapshots(b"client", SnapshotReport(None, old, 2))
        assert backend.safe_point.holders()["restored_clients"] == old
        assert backend.collect_garbage().safe_point == old
        fresh = backend.timestamps(1, b"client")
        backend.report_snapshots(b"client", SnapshotReport(fresh, fresh, 3))
        holders = backend.safe_point.holders()
        assert "restored_clients" not in holders and holders["clients"] == fresh
        assert backend.collect_garbage().safe_point == fresh
    finally:
        backend.close()


def test_lease_rows_are_written_when_a_client_first_holds_and_when_its_floor_moves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write rate is bounded: one fsynced row when a client first holds anything,
    then at most one per pass, and only when its floor moved (not per hand-out)."""
    clock = FakeClock()
    backend = _open(tmp_path / "data", clock)
    writes: list[list[RowMutation]] = []
    store = backend.local_store
    real = store.mutate_rows

    def spy(rows: list[RowMutation], **kwargs: bool) -> object:
        leases = [r for r in rows if (r.table, r.row) == (GC_TABLE, LEASES_ROW)]
        if leases:
            writes.append(leases)
        return real(rows, **kwargs)

    monkeypatch.setattr(store, "mutate_rows", spy)
    try:
        first = backend.timestamps(1, b"client")
        assert len(writes) == 1  # before the hand-out
        for _ in range(50):
            backend.timestamps(1, b"client")
        backend.report_snapshots(b"client", SnapshotReport(first, first + 50, 1))
        assert len(writes) == 1
        backend.collect_garbage()  # the floor is where it was written: nothing to write
        assert len(writes) == 1
        backend.report_snapshots(b"client", SnapshotReport(first + 10, first + 50, 2))
        backend.collect_garbage()
        backend.collect_garbage()
        assert len(writes) == 2 and read_leases(store) == {b"client": first + 10}
        backend.report_snapshots(b"client", SnapshotReport(None, first + 50, 3))
        backend.collect_garbage()  # holds nothing: its row goes
        assert len(writes) == 3 and read_leases(store) == {}
        again = backend.timestamps(1, b"client")  # holds again: written again, first
        assert len(writes) == 4 and read_leases(store) == {b"client": again}
    finally:
        backend.close()


# --- a report below its floor -----------------------------------------------------------


LEASE = 30.0


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[tuple[LocalStore, Oracle, FakeClock, LocalBackend]]:
    store = LocalStore(str(tmp_path / "data"))
    oracle = Oracle(store)
    clock = FakeClock()
    backend = LocalBackend(store, oracle, clock=clock, owned=False, gc_life_time=0.0,
                           client_lease=LEASE)
    try:
        yield store, oracle, clock, backend
    finally:
        backend.close()
        oracle.close()
        store.close()


class HookedLock:
    """A lock that runs ``hook`` once, right after the n-th release (on the releasing
    thread, holding nothing): a deterministic interleaving without sleeps."""

    def __init__(self, release_no: int, hook: Callable[[], object]) -> None:
        self._lock = threading.Lock()
        self._n = 0
        self._at = release_no
        self._hook: Callable[[], object] | None = hook

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.__exit__(t, v, tb)
        self._n += 1
        if self._n == self._at and self._hook is not None:
            hook, self._hook = self._hook, None
            hook()


class _Owner:
    """A local transaction's stand-in (ActiveSnapshots holds its owner weakly)."""


def _restarted(store: LocalStore, oracle: Oracle, clock: FakeClock) -> SafePoint:
    """The safe point a node restarted after a kill -9 now would have: built from what
    the store holds, nothing saved on the way down, no local transaction left."""
    return SafePoint(store, oracle, clock, ActiveSnapshots(oracle.peek), life_time=0.0,
                     client_lease=LEASE)


def _lapse_with_a_local_holder(backend: LocalBackend, clock: FakeClock, c: bytes
                               ) -> tuple[int, int, object]:
    """c holds t (reported); a local transaction holds the safe point below t; c's
    lease lapses (a pause longer than a lease)."""
    sp = backend.safe_point
    owner = _Owner()
    token = backend.snapshots.enter(owner)
    local = backend.timestamps(1)
    backend.snapshots.started(token, local)
    t = sp.timestamps(1, c)
    assert sp.report(c, 1, t, t)
    clock.advance(LEASE + 1)
    return t, token, owner


@pytest.mark.parametrize("deleted", [False, True], ids=["row-kept", "row-deleted"])
def test_a_report_racing_a_pass_that_deletes_the_row_holds_across_a_kill_9(
        world: tuple[LocalStore, Oracle, FakeClock, LocalBackend], deleted: bool) -> None:
    """c's lease lapsed; c reports t again (still running), and a pass runs right after
    the report first releases the lock (its row still there: after the report applied;
    its row deleted by an earlier pass: between the check and the floor's write): the
    report is accepted, and a node killed with kill -9 right after restarts holding t."""
    store, oracle, clock, backend = world
    sp = backend.safe_point
    c = client_key(b"", b"c")
    t, token, owner = _lapse_with_a_local_holder(backend, clock, c)
    if deleted:
        sp.advance()
        assert c not in read_leases(store)
    sp._lock = HookedLock(1, lambda: sp.advance())  # type: ignore[assignment]
    assert sp.report(c, 2, t, t)  # accepted: c believes t is held for a lease
    assert sp.value <= t
    assert read_leases(store)[c] <= t
    backend.snapshots.leave(token)  # the local transaction ends; then kill -9
    value, held = _restarted(store, oracle, clock).advance()
    assert value <= t, f"restarted: safe point {value} passed {t}, held by {held}"
    del owner


def test_a_report_below_the_persisted_floor_lowers_it_before_it_holds(
        world: tuple[LocalStore, Oracle, FakeClock, LocalBackend]) -> None:
    """After a lapse, a new hand-out registers c's row at the oracle's next timestamp
    u > t; c's report naming t (its transaction still running) lowers the row to t
    (fsync) before it is accepted: a kill -9 right after loses nothing."""
    store, oracle, clock, backend = world
    sp = backend.safe_point
    c = client_key(b"", b"c")
    t, token, owner = _lapse_with_a_local_holder(backend, clock, c)
    sp.advance()  # deletes c's row: its lease passed
    assert c not in read_leases(store)
    u = sp.timestamps(1, c)  # c begins another transaction: row at u
    assert read_leases(store)[c] >= u > t
    assert sp.report(c, 2, t, u)  # c still runs t: accepted
    assert sp.holders()["clients"] <= t
    assert read_leases(store)[c] == t
    backend.snapshots.leave(token)  # the local transaction ends; then kill -9
    value, held = _restarted(store, oracle, clock).advance()
    assert value <= t, f"restarted: safe point {value} passed {t}, held by {held}"
    del owner


def test_a_safe_point_constructed_twice_over_one_store_after_a_crash_restores_leases(
        world: tuple[LocalStore, Oracle, FakeClock, LocalBackend]) -> None:
    """A floor registered at hand-out is restored by a new SafePoint over the same store
    without a save (a kill -9), and holds the safe point."""
    store, oracle, clock, backend = world
    c = client_key(b"", b"c")
    t = backend.timestamps(1, c)
    again = SafePoint(store, oracle, clock, backend.snapshots, life_time=0.0,
                      client_lease=LEASE)
    value, held = again.advance()
    assert value <= t, (value, held)


def test_reports_racing_passes_and_lapses_never_hold_below_the_persisted_floor(
        world: tuple[LocalStore, Oracle, FakeClock, LocalBackend]) -> None:
    """Clients take timestamps and report one of their recent ones (some older than a
    lapse: a transaction that outlived its lease) while passes run, every few of them a
    lease later: right after each accepted report, the stored floor holds what it
    holds (checked when no lapse came between)."""
    store, oracle, clock, backend = world
    sp = backend.safe_point
    done = threading.Event()
    checked: list[int] = []
    failures: list[str] = []

    def client(name: bytes, seed: int) -> None:
        c = client_key(b"", name)
        history: list[int] = []
        n = 0
        try:
            for seq in range(1, 151):
                ts = sp.timestamps(1, c)
                history.append(ts)
                oldest = history[-1 - (seed * seq) % min(len(history), 25)]
                before = clock.monotonic_ms()
                assert sp.report(c, seq, oldest, ts)
                row = read_leases(store).get(c)
                value = sp.value
                if clock.monotonic_ms() == before:
                    n += 1
                    if row is None or row > max(oldest, value):
                        failures.append(f"{name!r}: row {row} above {oldest} (at {value})")
        finally:
            checked.append(n)

    def passes() -> None:
        i = 0
        while not done.is_set():
            sp.advance()
            i += 1
            if i % 3 == 0:
                clock.advance(LEASE + 1)

    threads = [threading.Thread(target=client, args=(b"c%d" % i, 7 + 2 * i))
               for i in range(4)]
    gc = threading.Thread(target=passes)
    gc.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    gc.join(120)
    assert not gc.is_alive() and not any(t.is_alive() for t in threads)
    assert len(checked) == 4 and sum(checked) > 0, checked
    assert not failures, failures[:5]


# --- many leases, a failed pass ---------------------------------------------------------


def test_a_pass_settles_more_leases_than_a_row_mutation_holds(
        world: tuple[LocalStore, Oracle, FakeClock, LocalBackend]) -> None:
    """The lease rows of a pass are split over row mutations within the store's limit:
    a pass moves, then deletes, more clients' rows than one row mutation holds."""
    store, oracle, clock, backend = world
    n = store.limits.max_items_per_row + 1
    firsts = [backend.timestamps(1, client_key(b"", b"c%d" % i)) for i in range(n)]
    assert len(read_leases(store)) == n
    for i, first in enumerate(firsts):  # each reports a later oldest: every row moves
        backend.report_snapshots(client_key(b"", b"c%d" % i),
                                 SnapshotReport(first + 1, first, 1))
    backend.collect_garbage()
    assert read_leases(store) == {client_key(b"", b"c%d" % i): first + 1
                                  for i, first in enumerate(firsts)}
    clock.advance(LEASE + 1)  # every lease lapses: the pass deletes n rows
    backend.collect_garbage()
    assert read_leases(store) == {}


def test_a_pass_whose_write_fails_leaves_its_rows_to_the_next_pass(
        world: tuple[LocalStore, Oracle, FakeClock, LocalBackend],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass's write fails: nothing is forgotten.  The rows it was deleting count as
    gone (a hand-out to their client registers again, first), the rows it was moving
    at the higher of their floors (a report below that lowers the row first); the next
    pass writes the rest."""
    store, oracle, clock, backend = world
    owner = _Owner()  # a local transaction holds the safe point below everything
    token = backend.snapshots.enter(owner)
    backend.snapshots.started(token, backend.timestamps(1))
    lapsed, back, held = (client_key(b"", name) for name in (b"lapsed", b"back", b"held"))
    backend.timestamps(1, lapsed)
    backend.timestamps(1, back)
    h = [backend.timestamps(1, held) for _ in range(4)]
    before = read_leases(store)
    assert before[held] == h[0]
    clock.advance(LEASE + 1)  # all three lapse; held reports h[2] its oldest
    backend.report_snapshots(held, SnapshotReport(h[2], h[3], 1))
    real = store.mutate_rows

    class Failed(OSError):
        pass

    def failing(rows: list[RowMutation], **kwargs: bool) -> object:
        if any((r.table, r.row) == (GC_TABLE, LEASES_ROW) for r in rows):
            raise Failed("disk full")
        return real(rows, **kwargs)

    monkeypatch.setattr(store, "mutate_rows", failing)
    with pytest.raises(Failed):
        backend.collect_garbage()  # would delete lapsed's and back's rows, move held's
    monkeypatch.setattr(store, "mutate_rows", real)
    assert read_leases(store) == before
    # held reports h[1]: below the floor the failed write may have left (h[2]), so the
    # floor is lowered (written) before the report holds.
    backend.report_snapshots(held, SnapshotReport(h[1], h[3], 2))
    assert read_leases(store)[held] == h[1]
    again = backend.timestamps(1, back)  # its row may be gone: registered again, first
    assert read_leases(store)[back] == again
    backend.collect_garbage()
    assert read_leases(store) == {held: h[1], back: again}
    backend.snapshots.leave(token)
    del owner


# --- order ----------------------------------------------------------------------------


def test_a_late_report_cannot_release_what_a_later_one_holds(tmp_path: Path) -> None:
    """A report read while the client had no transaction, delivered after the report
    that named the transaction begun since, is ignored; the transaction reads on."""
    with gc_world("remote", tmp_path / "d", lease=10.0) as world:
        backend = world.client.backend
        assert isinstance(backend, NodeClient)
        backend._reporter.close()  # the test sends the reports, in the order it chooses
        with world.client.transaction() as t:
            t.set(*KEY, b"old")
        settle_reports(world.client)
        late = backend.snapshots.report(backend.safe_point)  # read now, delivered last
        assert late.oldest is None
        txn = world.client.begin()
        must_read(txn.get(*KEY), b"old")
        with world.client.transaction() as t:
            t.set(*KEY, b"new")
        settle_reports(world.client)  # names txn, and releases its pins
        backend.report_snapshots(late)  # delivered late: "nothing running"
        done = world.local.collect_garbage()
        assert done.safe_point <= txn.start_ts, done
        must_read(txn.get(*KEY), b"old")
        txn.rollback()
        settle_reports(world.client)
        assert world.local.collect_garbage().safe_point > txn.start_ts
