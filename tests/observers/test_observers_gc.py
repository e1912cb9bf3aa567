"""Observers stay exactly-once with garbage collection running beside them.

GC keeps nothing for time's sake (life time 0) and passes every 20 ms without pauses,
embedded and at a node: the observers' own state (sums, run counters, acks) is
rewritten all the time, so its older versions -- and the acks but the newest -- are
collected under the workers, and handled notifications are compacted away.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import ALL_TIME, RowRead, ScanRequest
from observers import Worker, observer
from observers._layout import ack_column
from percolator import Client, Transaction, layout
from percolator._gc import Collector
from percolator._node_client import NodeClient
from percolator.node import Node

from . import sum_observers
from .observer_fixtures import draw_seed, read, write_cells

GC = {"gc_life_time": 0.0, "gc_interval": 0.02}


@pytest.fixture(params=("embedded", "remote"))
def gc_client(request: pytest.FixtureRequest, tmp_path: Path
              ) -> Iterator[tuple[Client, Collector]]:
    if request.param == "embedded":
        with Client.embedded(tmp_path / "data", lock_ttl=1.0, **GC) as client:
            collector: Collector = client.backend.collector  # type: ignore[attr-defined]
            collector.duty = 1.0
            yield client, collector
        return
    with Node(tmp_path / "node", "127.0.0.1:0", gc_client_lease=2.0, **GC) as node:
        node.backend.collector.duty = 1.0
        with Client.connect(node.address, lock_ttl=1.0) as client:
            yield client, node.backend.collector


def test_exact_sum_with_gc_beside(gc_client: tuple[Client, Collector]) -> None:
    client, collector = gc_client
    rng = random.Random(draw_seed("sum with GC"))
    rows = [b"s%04d" % i for i in range(400)]
    values = {r: rng.randrange(1, 1000) for r in rows}
    worker = Worker(client, sum_observers.OBSERVERS, threads=4)
    removed = collector.removed
    worker.start()
    try:
        for i in range(0, len(rows), 40):  # in waves: the sums are rewritten all along
            write_cells(client, {(r, sum_observers.VALUE): b"%d" % values[r]
                                 for r in rows[i:i + 40]})
        stats = worker.run_until_idle(timeout=120)
    finally:
        worker.stop()
    assert sum_observers.total(client) == sum(values.values())
    assert set(sum_observers.runs(client, rows).values()) == {1}
    assert stats.failures == 0
    # On a loaded machine the workers may finish before a pass removes anything: then
    # the passes after them must (the sums' older versions), and change nothing.
    deadline = time.monotonic() + 60
    while collector.removed == removed:
        assert time.monotonic() < deadline, "GC removed nothing of the observers' state"
        threading.Event().wait(0.01)
    assert sum_observers.total(client) == sum(values.values())
    assert set(sum_observers.runs(client, rows).values()) == {1}


def test_acks_but_the_newest_are_collected_and_each_change_is_observed_once(
        gc_client: tuple[Client, Collector]) -> None:
    client, collector = gc_client
    changes: list[tuple[bytes, bytes]] = []

    @observer("hot")
    def record(txn: Transaction, row: bytes, column: bytes) -> None:
        value = txn.get(row, column) or b""
        n = int(txn.get(row, b"count") or b"0")
        txn.set(row, b"count", b"%d" % (n + 1))
        txn.set(row, b"seen%d" % n, value)
        changes.append((row, value))

    rows = [b"h%d" % i for i in range(5)]
    worker = Worker(client, [record], threads=2)
    for round_ in range(6):  # each change observed before the next: one run, one ack each
        write_cells(client, {(r, b"hot"): b"%d" % round_ for r in rows})
        worker.run_until_idle(timeout=60)
    worker.stop()
    got = read(client, [(r, b"count") for r in rows])
    assert got == {(r, b"count"): b"6" for r in rows}, "a change observed twice or never"
    seen = read(client, [(r, b"seen%d" % i) for r in rows for i in range(6)])
    assert all(seen[(r, b"seen%d" % i)] == b"%d" % i for r in rows for i in range(6))
    # No transaction runs now: once the client said so (a remote one reports it), a pass
    # takes the safe point to the present, and every ack cell keeps its newest version.
    backend = client.backend
    if isinstance(backend, NodeClient):
        backend.report_snapshots(backend.snapshots.report())
    client.collect_garbage()
    ack = layout.write_column(layout.SYSTEM_PREFIX + ack_column(b"hot"))
    for row in client.store.scan(ScanRequest(client.table, None, None, (ack,), (),
                                             ALL_TIME, 0)):
        assert len(row.cells) == 1, (row.row, row.cells)
    assert collector.removed > 0


def _log_and_registrations(client: Client) -> tuple[list[tuple[bytes, list[tuple[bytes, bytes]]]],
                                                     list[tuple[bytes, bytes]]]:
    """Every row of the notification log and every cell of the registrations, raw."""
    entries = [(row.row, [(c.column, c.value) for c in row.cells]) for row in
               client.store.scan(ScanRequest(layout.notify_table(client.table)))]
    [config] = client.store.read_rows([RowRead(layout.config_table(client.table),
                                               layout.OBSERVED_ROW)])
    return entries, [(c.column, c.value) for c in config]


def test_gc_leaves_the_entries_no_worker_finished_and_the_registrations(
        gc_client: tuple[Client, Collector]) -> None:
    """GC collects versions of the data table only.  The notification log (entries no
    worker handled yet, in commit order per bucket) and the registrations beside it are
    the node's notification service's: GC compacts the log, never deletes from it, and
    every change written before any worker ran is counted once after passes at life
    time 0 took the older versions of the cells."""
    client, collector = gc_client
    client.notifications.register(client.table, sum_observers.VALUE)
    rows = [b"g%03d" % i for i in range(100)]
    write_cells(client, {(r, sum_observers.VALUE): b"1" for r in rows})
    # Counted from before the older versions exist: a background pass may take them as
    # soon as the client's reporter says its writers are done, before the passes below.
    removed = collector.removed
    write_cells(client, {(r, sum_observers.VALUE): b"2" for r in rows})  # older versions
    before = _log_and_registrations(client)
    assert len(before[0]) > 0 and len(before[1]) == 1
    pending = client.notifications.pending(client.table, [sum_observers.VALUE], 10**6)
    assert pending >= len(rows)
    backend = client.backend
    if isinstance(backend, NodeClient):  # no transaction runs: the safe point may move up
        backend.report_snapshots(backend.snapshots.report())
    client.collect_garbage()
    client.collect_garbage()
    assert collector.removed > removed, "GC took none of the cells' older versions"
    assert _log_and_registrations(client) == before
    assert client.notifications.pending(client.table, [sum_observers.VALUE], 10**6) == pending
    worker = Worker(client, sum_observers.OBSERVERS, threads=2)
    worker.start()
    try:
        worker.run_until_idle(timeout=120)
    finally:
        worker.stop()
    assert sum_observers.total(client) == 2 * len(rows)
    assert set(sum_observers.runs(client, rows).values()) == {1}
    assert client.notifications.pending(client.table, [sum_observers.VALUE], 10**6) == 0
