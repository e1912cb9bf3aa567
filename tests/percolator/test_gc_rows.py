"""Which rows a GC pass reads: those written since the passes last read them, whole tables
only while what they hold is not known (percolator/_gc_rows.py).

Each test checks both sides: the pass reads no more than it should (``GcPass.rows``),
and it leaves no garbage behind (``garbage``, a whole-table check) and changes nothing
a snapshot at or above the safe point reads.  A pass's own removals are writes too:
the rows they touched are read once more by the next pass.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import InvalidArgument, Put, RowMutation
from percolator import Client, Transaction, failpoints
from percolator._backend import PrewriteRequest
from percolator._gc_rows import ChangedRows, Taken
from percolator._gc_table import GcPass
from percolator._local import LocalBackend
from percolator.clock import FakeClock

from .gc_helpers import garbage, gc_world, settle_reports
from .steps import KINDS, World, new_txn
from .test_gc import CELLS, random_history, read_all
from .txn_fixtures import draw_seed, lock_cells


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with gc_world(request.param, tmp_path / "d") as w:
        yield w


def changed_rows(world: World) -> ChangedRows:
    return world.local.collector._changed  # noqa: SLF001 - what the passes take


def test_a_pass_reads_the_rows_written_since_the_last_one(world: World) -> None:
    rows = [b"row%03d" % i for i in range(60)]
    with world.client.transaction() as t:
        for row in rows:
            t.set(row, b"c", b"1")
    settle_reports(world.client)
    first = world.client.collect_garbage()
    assert first.rows == len(rows), first  # a table new to this process: its rows noted
    for value in (b"2", b"3"):
        with world.client.transaction() as t:
            t.set(rows[7], b"c", value)
    settle_reports(world.client)
    second = world.client.collect_garbage()
    assert (second.rows, second.write_records) == (1, 2), second
    assert garbage(world.client, second.safe_point) == []
    quiet = after_a_while(world)  # the removals noted nothing: they add no versions
    assert quiet.rows == 0 and changed_rows(world).noted == 0, quiet


def after_a_while(world: World) -> GcPass:
    """A pass once the safe point has moved (a timestamp handed out), nothing written."""
    world.client.timestamp()
    settle_reports(world.client)
    return world.client.collect_garbage()


def test_a_row_with_versions_above_the_safe_point_is_read_again_later(world: World) -> None:
    key = (b"row", b"c")
    with world.client.transaction() as t:
        t.set(*key, b"old")
    holder = Transaction(world.client.ctx, world.client.timestamp())  # holds S below
    for value in (b"new", b"newer"):
        with world.client.transaction() as t:
            t.set(*key, value)
    settle_reports(world.client)
    held = world.client.collect_garbage()
    assert held.safe_point == holder.start_ts and held.write_records == 0, held
    assert changed_rows(world).noted == 1  # its versions above S: noted again
    assert holder.get(*key) == b"old"
    holder.rollback()
    settle_reports(world.client)
    released = world.client.collect_garbage()  # no write since: the row is read again
    assert (released.rows, released.write_records) == (1, 2), released
    assert garbage(world.client, released.safe_point) == []
    assert after_a_while(world).rows == 0


def test_passes_between_random_histories_leave_no_garbage(world: World) -> None:
    """Rounds of random transactions (puts short and long, deletes, rollbacks), readers
    holding the safe point at random, a pass after each round: every pass leaves nothing
    below its safe point to remove, and every held snapshot reads as it did."""
    rng = random.Random(draw_seed("test_passes_between_random_histories"))
    holders: list[tuple[Transaction, dict[tuple[bytes, bytes], bytes | None]]] = []
    for _ in range(8):
        points = random_history(world, rng, rng.randint(3, 12))
        if rng.random() < 0.5:
            ts = rng.choice(points)
            holders.append((Transaction(world.client.ctx, ts), read_all(world, ts)))
        if holders and rng.random() < 0.4:
            holders.pop(rng.randrange(len(holders)))[0].rollback()
        settle_reports(world.client)
        done = world.client.collect_garbage()
        assert garbage(world.client, done.safe_point) == [], done
        for holder, seen in holders:
            assert holder.get_many(CELLS) == seen
    for holder, _ in holders:
        holder.rollback()
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert garbage(world.client, done.safe_point) == []
    assert after_a_while(world).rows == 0 and changed_rows(world).noted == 0


def test_a_reopened_store_is_read_whole_until_a_pass_above_its_open_mark(
        tmp_path: Path) -> None:
    """What was written before the process started is not known: the first pass reads the
    whole table (and collects what the last process left), later ones only what changed."""
    clock = FakeClock()
    path = os.fspath(tmp_path / "d")
    rows = [b"row%02d" % i for i in range(20)]
    with Client(LocalBackend.open(path, clock=clock, gc_life_time=0.0),
                clock=clock) as client:
        for value in (b"1", b"2"):
            with client.transaction() as t:
                for row in rows:
                    t.set(row, b"c", value)
    with Client(LocalBackend.open(path, clock=clock, gc_life_time=0.0),
                clock=clock) as client:
        with client.transaction() as t:
            t.set(rows[0], b"c", b"3")
        whole = client.collect_garbage()
        assert (whole.rows, whole.write_records) == (len(rows), len(rows) + 1), whole
        assert garbage(client, whole.safe_point) == []
        client.timestamp()
        assert client.collect_garbage().rows == 0  # now known: nothing written since


def test_a_table_with_too_many_noted_rows_is_read_whole(world: World) -> None:
    changed_rows(world)._max_rows = 5  # noqa: SLF001 - a small bound to pass
    rows = [b"row%02d" % i for i in range(12)]
    for value in (b"1", b"2"):
        with world.client.transaction() as t:
            for row in rows:
                t.set(row, b"c", value)
    assert changed_rows(world).noted <= 5
    settle_reports(world.client)
    whole = world.client.collect_garbage()  # past the bound: the table is read whole
    assert (whole.rows, whole.write_records) == (len(rows), len(rows)), whole
    assert garbage(world.client, whole.safe_point) == []
    assert after_a_while(world).rows == 0


def test_a_failed_pass_gives_back_the_rows_it_took(world: World) -> None:
    rows = [b"row%03d" % i for i in range(300)]  # two chunks of a pass
    for value in (b"1", b"2"):
        with world.client.transaction() as t:
            for row in rows:
                t.set(row, b"c", value)
    settle_reports(world.client)
    failpoints.enable("gc.after_collect_chunk", "raise")
    try:
        with pytest.raises(Exception, match="failpoint"):
            world.client.collect_garbage()
    finally:
        failpoints.disable("gc.after_collect_chunk")
    assert changed_rows(world).noted == len(rows)
    settle_reports(world.client)
    done = world.client.collect_garbage()
    assert done.rows == len(rows) and garbage(world.client, done.safe_point) == [], done


def test_past_the_bound_the_table_with_most_rows_is_read_whole_until_past_its_marks(
        ) -> None:
    changed = ChangedRows([], 0, max_rows=4)
    changed.track(b"big")
    changed.track(b"small")
    marks = iter(range(101, 200))
    for row in (b"a", b"b", b"c"):
        changed.note([RowMutation(b"big", row, (Put(b"c", 1, b"v"),))], lambda: next(marks))
    changed.note([RowMutation(b"small", b"x", (Put(b"c", 1, b"v"),))], lambda: next(marks))
    changed.note([RowMutation(b"small", b"y", (Put(b"c", 1, b"v"),))], lambda: 150)
    taken = changed.take()
    assert (taken[b"big"].full_until, taken[b"big"].rows) == (103, {}), taken
    assert (taken[b"small"].full_until, taken[b"small"].rows) == (0, {b"x": 104, b"y": 150})
    changed.keep(taken, 104)  # a pass at 104 read "big" whole: it is known from now on
    assert changed.take()[b"small"] == Taken({b"y": 150})


def test_a_table_read_whole_after_a_reopen_is_known_once_a_pass_passes_the_open(
        tmp_path: Path) -> None:
    """Written more often than once a life time, the table still leaves the whole reads:
    the mark they run until is the open's, and the rows written meanwhile are noted."""
    clock = FakeClock()
    path = os.fspath(tmp_path / "d")
    rows = [b"row%03d" % i for i in range(200)]
    with Client(LocalBackend.open(path, clock=clock, gc_life_time=0.0), clock=clock) as client:
        with client.transaction() as t:
            for row in rows:
                t.set(row, b"c", b"1")
    with Client(LocalBackend.open(path, clock=clock, gc_life_time=10.0),
                clock=clock) as client:
        backend = client.backend
        assert isinstance(backend, LocalBackend)
        read: list[int] = []
        for second in range(30):
            with client.transaction() as t:
                t.set(rows[second], b"c", b"%d" % second)
            clock.advance(1.0)
            backend.safe_point.sample()
            done = client.collect_garbage()
            if not done.skipped:  # (none until the history reaches back a life time)
                read.append(done.rows)
        # Whole, then the rows written within a life time (their marks above S).
        assert read[0] == len(rows) and read[-1] <= 12, read
        assert garbage(client, backend.collector.last.safe_point) == []


def test_a_step_at_a_timestamp_the_oracle_has_not_handed_out_is_refused(world: World
                                                                        ) -> None:
    """Its snapshot is not fixed yet, and its writes would be marked below its own
    timestamps: GC would never read them again (a lock left unsettled below S)."""
    ahead = world.local.oracle.peek() + 100
    txn = new_txn(world.backend, world.table, [(b"p", b"c"), (b"s", b"c")], start_ts=ahead)
    with pytest.raises(InvalidArgument, match="not handed out"):
        world.backend.prewrite(PrewriteRequest(txn.table, txn.start_ts, txn.primary, 3000,
                                               txn.parts()))
    with pytest.raises(InvalidArgument, match="not handed out"):
        world.backend.read(world.table, ahead, [(b"p", b"c")])
    assert lock_cells(world.client) == []


def test_a_few_hot_rows_do_not_compact_a_large_table(tmp_path: Path) -> None:
    """A background pass compacts a table once its removals are a share of the table
    (1/COMPACT_RATIO), not of the few rows the pass read: 1,000 removals in 500 hot rows
    of a 12,000-row table are not worth rewriting the table."""
    clock = FakeClock()
    backend = LocalBackend.open(os.fspath(tmp_path / "d"), clock=clock, gc_life_time=0.0)
    backend.collector.duty = 1.0  # no pauses: the test's speed only
    rows = [b"row%06d" % i for i in range(12_000)]
    with Client(backend, clock=clock) as client:
        for i in range(0, len(rows), 1000):
            with client.transaction() as t:
                for row in rows[i:i + 1000]:
                    t.set(row, b"c", b"x")
        client.timestamp()
        backend.collector.run_pass(paced=True)
        for value in (b"y", b"z"):
            with client.transaction() as t:
                for row in rows[:500]:
                    t.set(row, b"c", value)
        client.timestamp()
        done = backend.collector.run_pass(paced=True)
        assert (done.rows, done.removed) == (500, 1000), done
        assert client.table not in backend.collector._compacted, done  # noqa: SLF001
