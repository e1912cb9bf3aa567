"""Work finding: hash partitioning among live workers; two take about half each; shares move
when a worker leaves or its lease expires."""

from __future__ import annotations

from pathlib import Path

from bigtable_lite import Put, RowMutation
from observers import Worker, observer
from observers import layout as olayout
from observers.membership import shard
from percolator import Client, Transaction
from percolator.clock import FakeClock

from .observer_fixtures import client_fixture, eventually, server_fixture, write_cells  # noqa: F401

COL = b"p"


@observer(COL)
def mark(txn: Transaction, row: bytes, column: bytes) -> None:
    txn.set(row, b"done", b"1")


def test_two_workers_take_about_half_each(client: Client) -> None:
    # Long leases: a heartbeat delayed on a loaded machine must not change the views.
    a = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0, worker_id="wa")
    b = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0, worker_id="wb")
    a.start()
    b.start()
    try:
        eventually(lambda: a.peers(COL) == b.peers(COL) == ("wa", "wb"), "both see each other")
        rows = [b"row%04d" % i for i in range(400)]
        write_cells(client, {(r, COL): b"x" for r in rows}, per_txn=100)
        a.run_until_idle(timeout=60)
        b.run_until_idle(timeout=60)
        done_a, done_b = a.stats().processed, b.stats().processed
    finally:
        a.stop()
        b.stop()
    print(f"worker a processed {done_a}, worker b {done_b}")
    assert done_a + done_b == len(rows)
    assert 0.4 * len(rows) <= done_a <= 0.6 * len(rows)
    expected_a = sum(1 for r in rows if shard(r, 2) == 0)
    assert done_a == expected_a, "each takes exactly its hash share when views agree"


def test_a_stopped_workers_share_is_taken_over(client: Client) -> None:
    a = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=2.0, worker_id="wa")
    b = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=2.0, worker_id="wb")
    a.start()
    b.start()
    try:
        eventually(lambda: a.peers(COL) == ("wa", "wb"), "a sees b")
        b.stop()  # leaves: deletes its lease
        eventually(lambda: a.peers(COL) == ("wa",), "a notices b left")
        rows = [b"t%03d" % i for i in range(60)]
        write_cells(client, {(r, COL): b"x" for r in rows})
        assert a.run_until_idle(timeout=60).processed == len(rows)
    finally:
        a.stop()
        b.stop()


def test_a_crashed_workers_share_waits_for_its_lease_then_moves(tmp_path: Path) -> None:
    clock = FakeClock()
    with Client.embedded(tmp_path / "data", clock=clock) as client:
        ghost = olayout.Lease("ghost", clock.now_ms() + 5000, frozenset({COL}))
        client.store.mutate_rows([RowMutation(olayout.workers_table(client.table), b"ghost", (
            Put(olayout.LEASE_COLUMN, 0, olayout.encode_lease(ghost)),))])
        worker = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=2.0,
                        worker_id="alive", clock=clock)
        rows = [b"g%03d" % i for i in range(80)]
        mine = [r for r in rows if ("alive", "ghost")[shard(r, 2)] == "alive"]
        worker.start()
        try:
            assert worker.peers(COL) == ("alive", "ghost")
            write_cells(client, {(r, COL): b"x" for r in rows})
            eventually(lambda: worker.stats().processed == len(mine), "its own share is done")
            assert worker.stats().processed == len(mine) < len(rows)
            clock.advance(6.0)  # the ghost's lease expires
            stats = worker.run_until_idle(timeout=30)
            assert stats.processed == len(rows)
        finally:
            worker.stop()


def test_long_gone_workers_are_forgotten(tmp_path: Path) -> None:
    from observers.membership import forget_gone_workers, read_leases

    clock = FakeClock()
    with Client.embedded(tmp_path / "data", clock=clock) as client:
        worker = Worker(client, [mark], threads=1, worker_id="old", clock=clock)
        worker.run_until_idle(timeout=30)  # leaves its stats row behind
        table = olayout.workers_table(client.table)
        assert [r.row for r in client.store.scan_rows(table)] == [b"old"]
        assert forget_gone_workers(client.store, client.table, clock.now_ms()) == 0
        clock.advance(3601.0)
        assert forget_gone_workers(client.store, client.table, clock.now_ms()) == 1
        assert list(client.store.scan_rows(table)) == [] and read_leases(client.store,
                                                                         client.table) == []
