"""Work finding: the node splits each column's buckets among the live workers; two take
about half each, exactly their buckets' cells; buckets move when a worker leaves or its
lease expires, only after the old owner released them; long-gone workers are forgotten."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from observers import Worker, observer
from percolator import Client, Transaction
from percolator.clock import FakeClock
from percolator.notifications import BUCKETS, PullRequest, bucket_of

from .observer_fixtures import client_fixture, eventually, server_fixture, write_cells  # noqa: F401

COL = b"p"


@observer(COL)
def mark(txn: Transaction, row: bytes, column: bytes) -> None:
    txn.set(row, b"done", b"1")


def settled(*workers: Worker) -> bool:
    """Every bucket owned by exactly one of ``workers``, each some, none being handed over."""
    owned = [w.ownership.owned.get(COL, frozenset()) for w in workers]
    return (all(owned) and sum(len(b) for b in owned) == BUCKETS
            and len(frozenset().union(*owned)) == BUCKETS
            and not any(w.ownership.revoking for w in workers))


def test_two_workers_take_about_half_each(client: Client) -> None:
    a = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0, worker_id="wa")
    b = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0, worker_id="wb")
    a.start()
    b.start()
    try:
        eventually(lambda: settled(a, b), "the buckets are split between them")
        mine_a = a.ownership.owned[COL]
        rows = [b"row%04d" % i for i in range(400)]
        write_cells(client, {(r, COL): b"x" for r in rows}, per_txn=100)
        a.run_until_idle(timeout=60)
        b.run_until_idle(timeout=60)
        done_a, done_b = a.stats().processed, b.stats().processed
    finally:
        a.stop()
        b.stop()
    print(f"worker a processed {done_a} ({len(mine_a)} buckets), worker b {done_b}")
    assert done_a + done_b == len(rows)
    assert 0.35 * len(rows) <= done_a <= 0.65 * len(rows)
    assert done_a == sum(1 for r in rows if bucket_of(r) in mine_a), \
        "each runs exactly the cells of its buckets"


def test_a_stopped_workers_buckets_are_taken_over(client: Client) -> None:
    a = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=2.0, worker_id="wa")
    b = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=2.0, worker_id="wb")
    a.start()
    b.start()
    try:
        eventually(lambda: settled(a, b), "the buckets are split")
        b.stop()  # leaves: its buckets go at once
        eventually(lambda: settled(a), "a owns every bucket")
        rows = [b"t%03d" % i for i in range(60)]
        write_cells(client, {(r, COL): b"x" for r in rows})
        assert a.run_until_idle(timeout=60).processed == len(rows)
    finally:
        a.stop()
        b.stop()


def test_a_crashed_workers_buckets_wait_for_its_lease_then_move(client: Client) -> None:
    """A worker that stops pulling without leaving (a crash): its buckets stay its own
    until its lease expires at the node, then go to the live worker, read from their
    start -- nothing it was handed and did not finish is lost."""
    ghost = PullRequest("ghost", (COL,), lease_ms=1500)
    worker = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0,
                    worker_id="alive")
    # Its first pull waits for the assignment (a node holds a first one briefly while
    # workers join).
    ghost_reply = client.notifications.pull(client.table, replace(ghost, room=1,
                                                                  wait_ms=10_000))
    theirs = ghost_reply.owned[COL]
    assert len(theirs) == BUCKETS, "alone, it owns them all"
    rows = [b"g%03d" % i for i in range(120)]
    write_cells(client, {(r, COL): b"x" for r in rows})
    # The ghost takes what it is handed, then dies without a word.
    client.notifications.pull(client.table, PullRequest(
        "ghost", (COL,), lease_ms=1500, held=ghost_reply.owned, room=1000))
    worker.start()
    try:
        stats = worker.run_until_idle(timeout=30)
        assert stats.processed == len(rows)
        assert settled(worker)
    finally:
        worker.stop()


def test_long_gone_workers_are_forgotten(tmp_path: Path) -> None:
    clock = FakeClock()
    with Client.embedded(tmp_path / "data", clock=clock) as client:
        worker = Worker(client, [mark], threads=1, worker_id="old", clock=clock)
        worker.run_until_idle(timeout=30)  # leaves its last counters behind
        [old] = client.notifications.members(client.table)
        assert (old.worker, old.alive) == ("old", False)
        assert json.loads(old.stats)["state"] == "stopped"
        clock.advance(3601.0)
        assert client.notifications.members(client.table) == []
