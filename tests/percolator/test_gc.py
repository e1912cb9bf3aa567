"""Garbage collection: the safe point, its rules, and what a pass keeps and removes.

Embedded and at a real node alike; passes run when the test asks, the safe point's
clock (life time, client leases) and lock expiry on a FakeClock.  The suites with GC
running beside them are in test_gc_suites.py, crashes in test_gc_crash.py.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from bigtable_lite import Cell, Put, Row, RowMutation, RowRead, ScanRequest
from percolator import Client, CommitConflict, SnapshotTooOld, Transaction, _gc, layout
from percolator._backend import (
    COMMITTED,
    ROLLED_BACK,
    Conflict,
    OnePhaseRequest,
    PrewriteRequest,
)
from percolator._gc_table import GcPass, read_status
from percolator._local import LocalBackend
from percolator._node_client import NodeClient
from percolator.clock import FakeClock
from percolator.node import Node

from .gc_helpers import AGGRESSIVE, eventually, garbage, gc_world, settle_reports, versions
from .steps import (
    KINDS,
    World,
    must_commit,
    must_prewrite,
    must_rollback,
    must_see,
    must_status,
    must_unlocked,
    new_txn,
)
from .txn_fixtures import draw_seed

CELLS = [(b"r%d" % i, b"c%d" % j) for i in range(4) for j in range(2)]


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with gc_world(request.param, tmp_path / "d") as w:
        yield w


def read_all(world: World, ts: int) -> dict[tuple[bytes, bytes], bytes | None]:
    result = world.backend.read(world.table, ts, CELLS)
    assert not result.locked
    return result.values


def random_history(world: World, rng: random.Random, n: int) -> list[int]:
    """``n`` transactions of puts (short and long values) and deletes over CELLS, and a
    rolled-back one every tenth (a rollback marker); the timestamps between them."""
    points = []
    for i in range(n):
        if i % 10 == 9:
            txn = new_txn(world.backend, world.table, rng.sample(CELLS, 2), b"never")
            must_prewrite(world.backend, txn)
            must_rollback(world.backend, txn)
        with world.client.transaction() as t:
            for key in rng.sample(CELLS, rng.randint(1, 3)):
                choice = rng.random()
                if choice < 0.2:
                    t.delete(*key)
                elif choice < 0.5:
                    t.set(*key, b"L" * 300 + b"%d" % i)  # not inlined: a data version
                else:
                    t.set(*key, b"%d" % i)
        points.append(world.client.timestamp())
    return points


def test_a_pass_keeps_every_snapshot_at_or_above_the_safe_point(world: World) -> None:
    rng = random.Random(draw_seed("test_a_pass_keeps_every_snapshot"))
    points = random_history(world, rng, 60)
    before = {ts: read_all(world, ts) for ts in points}
    held = Transaction(world.client.ctx, points[30])  # a reader at points[30], still running
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert done.safe_point == points[30], done
    assert done.removed > 0 and done.rollback_markers > 0 and done.data > 0, done
    assert garbage(world.client, done.safe_point) == []
    for ts in points[30:]:
        assert read_all(world, ts) == before[ts], f"snapshot {ts} changed"
    assert held.get_many(CELLS) == before[points[30]]
    for ts in points[:30]:
        with pytest.raises(SnapshotTooOld):
            world.backend.read(world.table, ts, CELLS)
    held.rollback()
    settle_reports(world.client)
    done = world.client.collect_garbage()  # nothing holds it now: to the oracle's now
    assert done.safe_point > points[-1]
    assert read_all(world, world.client.timestamp()) == before[points[-1]]
    assert garbage(world.client, done.safe_point) == []
    stored = versions(world.client)
    live = {key for key, value in before[points[-1]].items() if value is not None}
    assert {(row, column[1:]) for row, column in stored if column[:1] == layout.WRITE} == live
    assert all(len(ts) == 1 for (_, column), ts in stored.items()), stored


def test_a_long_value_goes_with_its_record_and_an_orphan_alone(world: World) -> None:
    key = (b"row", b"col")
    with world.client.transaction() as t:
        t.set(*key, b"x" * 1000)
    first_ts = t.start_ts
    with world.client.transaction() as t:
        t.set(*key, b"y" * 1000)
    orphan_ts = world.client.timestamp()  # a long value no record points to (a crash)
    world.local.local_store.mutate_rows([RowMutation(world.table, b"row", (
        Put(layout.data_column(b"col"), orphan_ts, b"z" * 1000),))])
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert (done.write_records, done.data) == (1, 2), done
    stored = versions(world.client)
    assert first_ts not in stored[(b"row", layout.data_column(b"col"))]
    assert stored[(b"row", layout.data_column(b"col"))] == [t.start_ts]
    must_see(world.backend, world.table, key, b"y" * 1000)


def test_a_pass_reads_which_long_values_exist_not_the_values(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass rereads the versions below the safe point of the rows it reads, live ones
    too: were the long values among them copied out, each pass would hold up to its
    chunk's rows times their megabytes of values."""
    seen: list[int] = []
    store = world.local.ctx.store.inner  # type: ignore[attr-defined]  # GC reads it
    read_rows, scan = store.read_rows, store.scan

    def note(cells: Iterable[Cell]) -> None:
        seen.extend(len(c.value) for c in cells if c.column[:1] == layout.DATA)

    def counting_read_rows(reads: Sequence[RowRead]) -> list[list[Cell]]:
        rows = read_rows(reads)
        for r, cells in zip(reads, rows):
            if r.table == world.table:
                note(cells)
        return rows

    def counting_scan(request: ScanRequest) -> Iterator[Row]:
        for row in scan(request):
            if request.table == world.table:
                note(row.cells)
            yield row

    key = (b"row", b"col")
    for value in (b"x" * 1000, b"y" * 1000):
        with world.client.transaction() as t:
            t.set(*key, value)
    settle_reports(world.client)
    monkeypatch.setattr(store, "read_rows", counting_read_rows)
    monkeypatch.setattr(store, "scan", counting_scan)
    done = world.client.collect_garbage()
    monkeypatch.undo()
    assert (done.write_records, done.data) == (1, 1), done
    assert len(seen) == 2 and not any(seen), seen  # both versions known, no value read
    assert versions(world.client)[(b"row", layout.data_column(b"col"))] == [t.start_ts]
    must_see(world.backend, world.table, key, b"y" * 1000)


def test_a_delete_at_or_below_the_safe_point_leaves_nothing(world: World) -> None:
    key = (b"gone", b"c")
    for value in (b"1", b"2", None):
        with world.client.transaction() as t:
            if value is None:
                t.delete(*key)
            else:
                t.set(*key, value)
    settle_reports(world.client)
    world.client.collect_garbage()
    assert (b"gone", layout.write_column(b"c")) not in versions(world.client)
    must_see(world.backend, world.table, key, None)


def test_a_reader_below_the_safe_point_gets_snapshot_too_old(world: World) -> None:
    with world.client.transaction() as t:
        t.set(b"a", b"c", b"1")
    old = world.client.timestamp()
    with world.client.transaction() as t:
        t.set(b"a", b"c", b"2")
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert done.safe_point > old
    txn = Transaction(world.client.ctx, old)
    with pytest.raises(SnapshotTooOld, match="restart the transaction with a new snapshot"):
        txn.get(b"a", b"c")
    with pytest.raises(SnapshotTooOld):
        txn.get_many([(b"a", b"c"), (b"b", b"c")])
    with pytest.raises(SnapshotTooOld):
        list(txn.scan())
    txn.set(b"a", b"c", b"3")
    with pytest.raises(SnapshotTooOld):
        txn.commit()
    two_phase = Transaction(world.client.ctx, old)
    world.client.ctx.one_phase = False
    two_phase.set(b"a", b"c", b"4")
    two_phase.set(b"b", b"c", b"4")
    with pytest.raises(SnapshotTooOld):
        two_phase.commit()
    world.client.ctx.one_phase = True
    must_unlocked(world.backend, world.table, (b"a", b"c"))
    must_see(world.backend, world.table, (b"a", b"c"), b"2")
    assert issubclass(SnapshotTooOld, percolator_transaction_error())


def percolator_transaction_error() -> type[Exception]:
    from percolator import TransactionError

    return TransactionError


def test_client_run_reruns_a_function_whose_snapshot_was_collected(tmp_path: Path) -> None:
    """A remote client whose lease passed mid-run: its next read is refused, the run
    starts again with a new snapshot."""
    clock = FakeClock()
    with gc_world("remote", tmp_path / "d", lease=30.0, clock=clock) as world:
        with world.client.transaction() as t:
            t.set(b"a", b"c", b"1")
        attempts: list[int] = []

        def fn(txn: Transaction) -> bytes | None:
            attempts.append(txn.start_ts if attempts else 0)
            first = txn.get(b"a", b"c")
            if len(attempts) == 1:
                clock.advance(31)  # the client's lease and its timestamps' pins pass
                with world.client.transaction() as w:
                    w.set(b"a", b"c", b"2")
                world.local.collect_garbage()
            txn.get(b"b", b"c")
            txn.set(b"b", b"c", first or b"")
            return first

        assert world.client.run(fn) == b"2"
        assert len(attempts) == 2


def test_a_delayed_prewrite_of_a_collected_rollback_is_refused(world: World) -> None:
    """The rollback marker that stops a delayed prewrite is removed once below the safe
    point; the safe point itself refuses the prewrite then."""
    txn = new_txn(world.backend, world.table, [(b"p", b"c"), (b"s", b"c")])
    must_prewrite(world.backend, txn, [txn.primary])
    must_rollback(world.backend, txn)
    with world.client.transaction() as t:
        t.set(b"other", b"c", b"x")
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert done.rollback_markers == 1 and done.safe_point > txn.start_ts
    for request in (PrewriteRequest(world.table, txn.start_ts, txn.primary, 2000,
                                    txn.parts()),):
        with pytest.raises(SnapshotTooOld):
            world.backend.prewrite(request)
    with pytest.raises(SnapshotTooOld):
        world.backend.commit_one_phase(OnePhaseRequest(world.table, txn.start_ts,
                                                       txn.parts()))
    for key in txn.keys:
        must_unlocked(world.backend, world.table, key)


def test_locks_below_the_safe_point_are_settled_before_their_primary_record_goes(
        world: World) -> None:
    """A committed transaction whose secondary is still locked, its primary's record then
    superseded: phase 1 rolls the secondary forward before phase 2 removes that record
    (else the lock would find its primary without a trace: a torn transaction)."""
    txn = new_txn(world.backend, world.table, {(b"p", b"c"): b"T", (b"s", b"c"): b"T"})
    must_prewrite(world.backend, txn, ttl_ms=3_600_000)
    must_commit(world.backend, txn, keys=[])  # the commit point only: s stays locked
    for value in (b"1", b"2"):
        with world.client.transaction() as t:
            t.set(b"p", b"c", value)
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert done.locks_resolved == 1 and done.write_records >= 1, done
    must_unlocked(world.backend, world.table, (b"s", b"c"))
    must_see(world.backend, world.table, (b"s", b"c"), b"T")
    assert garbage(world.client, done.safe_point) == []


def test_a_live_lock_below_the_safe_point_is_rolled_back_whatever_its_ttl(
        world: World) -> None:
    txn = new_txn(world.backend, world.table, {(b"p", b"c"): b"T", (b"s", b"c"): b"T"})
    must_prewrite(world.backend, txn, ttl_ms=3_600_000)  # an hour: far from expired
    with world.client.transaction() as t:
        t.set(b"x", b"c", b"1")
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert done.locks_resolved == 2, done
    for key in txn.keys:
        must_unlocked(world.backend, world.table, key)
        must_see(world.backend, world.table, key, None)
    with pytest.raises(SnapshotTooOld):  # its fate below the safe point is not asked
        must_status(world.backend, txn, ROLLED_BACK)
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert garbage(world.client, done.safe_point) == []


def test_write_records_at_or_after_a_running_transaction_stay(world: World) -> None:
    """What first-committer-wins and the seal of check_txn_status rest on: a running
    transaction pins the safe point at its start_ts, so every write record at or after
    it survives every pass, and its commit still conflicts with them."""
    with world.client.transaction() as t:
        t.set(b"x", b"c", b"0")
    running = world.client.begin()
    assert running.get(b"x", b"c") == b"0"
    for value in (b"1", b"2", b"3"):
        with world.client.transaction() as t:
            t.set(b"x", b"c", value)
    stored = versions(world.client)[(b"x", layout.write_column(b"c"))]
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert done.safe_point == running.start_ts
    after = versions(world.client)[(b"x", layout.write_column(b"c"))]
    assert [ts for ts in stored if ts >= running.start_ts] == after[:3], (stored, after)
    # A checker meeting the running transaction's primary without a trace seals it; the
    # records it compares against are those that stayed, so the seal is right.
    sealed = new_txn(world.backend, world.table, [(b"x", b"c")],
                     start_ts=running.start_ts)
    must_status(world.backend, sealed, ROLLED_BACK)
    running.set(b"x", b"c", b"mine")
    with pytest.raises(CommitConflict):
        running.commit()
    settle_reports(world.client)
    world.client.collect_garbage()
    must_see(world.backend, world.table, (b"x", b"c"), b"3")


def test_a_committed_transaction_at_or_above_the_safe_point_keeps_its_status(
        world: World) -> None:
    txn = new_txn(world.backend, world.table, {(b"p", b"c"): b"T", (b"s", b"c"): b"T"})
    holder = Transaction(world.client.ctx, txn.start_ts)  # pins its start_ts
    must_prewrite(world.backend, txn)
    commit_ts = must_commit(world.backend, txn)
    for value in (b"1", b"2"):
        with world.client.transaction() as t:
            t.set(b"p", b"c", value)
    settle_reports(world.client)
    assert world.client.collect_garbage().safe_point == txn.start_ts
    must_status(world.backend, txn, COMMITTED, commit_ts)
    holder.rollback()


def test_the_safe_point_is_persisted_and_only_moves_forward(tmp_path: Path) -> None:
    path = tmp_path / "d"
    with gc_world("embedded", path) as world:
        with world.client.transaction() as t:
            t.set(b"a", b"c", b"1")
        old = world.client.timestamp()
        first = world.client.collect_garbage().safe_point
        assert first > old
    with Client.embedded(path, gc_life_time=3600, gc_interval=None) as client:
        assert read_status(client.store).safe_point == first
        done = client.collect_garbage()  # a longer life time: it does not move back
        assert done.safe_point == first
        with pytest.raises(SnapshotTooOld):
            Transaction(client.ctx, old).get(b"a", b"c")
        assert client.run(lambda txn: txn.get(b"a", b"c")) == b"1"


def test_the_life_time_keeps_recent_snapshots(tmp_path: Path) -> None:
    clock = FakeClock()
    with gc_world("embedded", tmp_path / "d", life_time=60.0, clock=clock) as world:
        with world.client.transaction() as t:
            t.set(b"a", b"c", b"1")
        recent = world.client.timestamp()
        with world.client.transaction() as t:
            t.set(b"a", b"c", b"2")
        done = world.client.collect_garbage()
        assert done.safe_point < recent
        assert "does not reach back" in done.held_by, done  # opened less than a life ago
        clock.advance(30)
        world.local.safe_point.sample()
        clock.advance(31)
        done = world.client.collect_garbage()
        assert done.safe_point > recent and done.held_by == "gc_life_time", done
        world.client.timestamp()  # S may be the oracle's next: handed out, it can be read at
        assert world.backend.read(world.table, done.safe_point, [(b"a", b"c")]).values == {
            (b"a", b"c"): b"2"}


def test_a_transaction_kept_below_the_safe_point_holds_nothing(tmp_path: Path) -> None:
    """A transaction its client keeps after its snapshot was collected (its lease passed)
    is refused, and holds the safe point back no more; the client's other running
    transaction still does, exactly."""
    clock = FakeClock()
    with gc_world("remote", tmp_path / "d", lease=10.0, clock=clock) as world:
        world.client.backend._reporter.close()  # type: ignore[attr-defined]  # we report
        key = (b"x", b"c")
        with world.client.transaction() as t:
            t.set(*key, b"1")
        stale = world.client.begin()
        assert stale.get(*key) == b"1"
        with world.client.transaction() as t:
            t.set(*key, b"2")
        clock.advance(11)  # its pins pass, and no report came
        assert world.local.collect_garbage().safe_point > stale.start_ts
        with pytest.raises(SnapshotTooOld):
            stale.get(*key)
        with world.client.transaction() as t:
            t.set(*key, b"2b")  # timestamps between the safe point and the next reader
        live = world.client.begin()
        assert live.get(*key) == b"2b"
        with world.client.transaction() as t:
            t.set(*key, b"3")
        clock.advance(11)  # only the reports below hold anything now
        backend = world.client.backend
        assert isinstance(backend, NodeClient)
        # A client that does not know the safe point yet reports the stale one as its
        # oldest: that holds the safe point where it is, not below, and not above live.
        backend.report_snapshots(replace(backend.snapshots.report(), oldest=stale.start_ts))
        held = world.local.collect_garbage().safe_point
        assert stale.start_ts < held < live.start_ts
        settle_reports(world.client)  # knowing it, the client reports live alone
        assert world.local.collect_garbage().safe_point == live.start_ts
        assert live.get(*key) == b"2b"
    with gc_world("embedded", tmp_path / "e") as world:
        with world.client.transaction() as t:
            t.set(*key, b"1")
        old = world.client.timestamp()
        first = world.client.collect_garbage().safe_point
        stale = Transaction(world.client.ctx, old)  # registered, below the safe point
        with world.client.transaction() as t:
            t.set(*key, b"2")
        assert world.client.collect_garbage().safe_point > first
        with pytest.raises(SnapshotTooOld):
            stale.get(*key)


def test_a_pass_reports_what_it_did(world: World) -> None:
    with world.client.transaction() as t:
        t.set(b"a", b"c", b"1")
    with world.client.transaction() as t:
        t.set(b"a", b"c", b"2")
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert isinstance(done, GcPass) and done.removed == 1 and done.tables == 1
    assert "removed 1 versions" in done.describe()
    status = world.client.gc_status()
    assert status.safe_point == done.safe_point and status.tables == (world.table,)
    assert status.last_pass is not None and status.last_pass.removed == 1
    again = world.client.collect_garbage()
    assert again.skipped and again.removed == 0


def test_the_steps_of_a_foreign_table_are_never_collected(tmp_path: Path) -> None:
    """GC reads only tables a transaction wrote: a side table of another layout (whose
    columns happen to start with a kind byte) is left alone."""
    with gc_world("embedded", tmp_path / "d") as world:
        side = [RowMutation(b"side", b"r", (Put(b"w" + b"x", ts, b"junk"),)) for ts in (1, 2)]
        world.client.store.mutate_rows(side)
        with world.client.transaction() as t:
            t.set(b"a", b"c", b"1")
        world.client.collect_garbage()
        assert versions(world.client, b"side") == {(b"r", b"wx"): [2, 1]}


def test_local_backend_refuses_a_bad_life_time(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gc_life_time"):
        LocalBackend.open(str(tmp_path / "d"), gc_life_time=-1)


def test_conflict_reasons_are_unchanged_by_gc(world: World) -> None:
    """A prewrite meeting a write after its start still reports a write conflict after a
    pass (the record newer than the safe point stayed)."""
    txn = new_txn(world.backend, world.table, [(b"k", b"c")])
    holder = Transaction(world.client.ctx, txn.start_ts)
    with world.client.transaction() as t:
        t.set(b"k", b"c", b"later")
    settle_reports(world.client)
    world.client.collect_garbage()
    conflict = world.backend.prewrite(PrewriteRequest(world.table, txn.start_ts, txn.primary,
                                                      2000, txn.parts()))
    assert conflict is not None and conflict.reason == Conflict.WRITE_CONFLICT
    holder.rollback()


@pytest.mark.parametrize("kind", KINDS)
def test_a_long_running_reader_pins_the_safe_point_under_background_gc(
        kind: str, tmp_path: Path) -> None:
    """GC passing every 20 ms, keeping nothing for time's sake: a reader begun before
    hundreds of overwrites still reads its snapshot, by get, get_many and scan."""
    if kind == "embedded":
        client = Client.embedded(tmp_path / "d", **AGGRESSIVE)
        collector = client.backend.collector  # type: ignore[attr-defined]
        node = None
    else:
        node = Node(tmp_path / "node", "127.0.0.1:0", gc_client_lease=1.0, **AGGRESSIVE)
        node.start()
        collector = node.backend.collector
        client = Client.connect(node.address)
    try:
        removed = collector.removed
        for n in range(50):  # history before the reader: collected under it
            with client.transaction() as t:
                for key in CELLS:
                    t.set(*key, b"old%d" % n)
        reader = client.begin()
        held = reader.get_many(CELLS)
        for n in range(100):
            with client.transaction() as t:
                for key in CELLS:
                    t.set(*key, b"%d" % n)
        passes = collector.passes
        eventually(lambda: collector.passes >= passes + 3 and collector.removed > removed,
                   "three more passes removed versions")
        assert collector.last is not None and collector.last.safe_point <= reader.start_ts
        assert reader.get_many(CELLS) == held
        assert all(reader.get(*key) == held[key] for key in CELLS)
        assert {(r, c): v for r, c, v in reader.scan()} == held
        reader.rollback()
        settle_reports(client)
        eventually(lambda: collector.last is not None
                   and collector.last.safe_point > reader.start_ts, "the reader let go")
        with pytest.raises(SnapshotTooOld):
            Transaction(client.ctx, reader.start_ts).get(*CELLS[0])
    finally:
        client.close()
        if node is not None:
            node.stop()


def test_a_paced_chunk_pauses_for_its_duty_and_a_compaction_does_not() -> None:
    """The background's rate limit: after each chunk a pause of (1/duty - 1) times the
    chunk's CPU, so GC takes at most ``duty`` of the process's time."""
    pacer = _gc._Pacer(0.25, threading.Event())
    began = time.monotonic()
    with pacer.chunk():
        cpu = time.thread_time()
        while time.thread_time() - cpu < 0.02:  # 20 ms of work
            pass
    assert time.monotonic() - began >= 4 * 0.02  # the work, then 3x it paused
    assert pacer.worked >= 0.02
    with pacer.chunk(compaction=True):  # LevelDB's thread: counted, never paused for
        threading.Event().wait(0.01)
    assert pacer.worked >= 0.03


def test_background_passes_compact_what_they_removed_once_worth_it_and_when_quiet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gc, "COMPACT_MIN", 10)
    clock = FakeClock()
    with Client.embedded(tmp_path / "d", clock=clock, gc_life_time=0,
                         gc_interval=None) as client:
        collector = client.backend.collector  # type: ignore[attr-defined]

        def rewrite(times: int) -> GcPass:
            for i in range(times):
                with client.transaction() as t:
                    t.set(b"a", b"c", b"%d" % i)
            clock.advance(1.1)
            return collector.run_pass(paced=True)  # type: ignore[no-any-return]

        first = rewrite(50)  # never compacted: due once COMPACT_MIN were removed
        assert first.removed == 49 and first.compactions >= 1, first
        assert collector.uncompacted == 0
        second = rewrite(50)  # compacted under COMPACT_EVERY ago: left for later
        assert second.removed == 50 and collector.uncompacted == 50, second
        monkeypatch.setattr(_gc, "COMPACT_EVERY", 0.0)
        clock.advance(1.1)
        quiet = collector.run_pass(paced=True)  # removes nothing: compacts the rest
        assert quiet.removed == 0 and quiet.compactions >= 1, quiet
        assert collector.uncompacted == 0
        assert client.run(lambda txn: txn.get(b"a", b"c")) == b"49"
