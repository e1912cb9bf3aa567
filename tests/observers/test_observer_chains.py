"""Observers run by a Worker, embedded and remote: chains, weak notifications, coalescing, sums."""

from __future__ import annotations

import random
import threading

from observers import Observer, Worker, observer
from percolator import Client, Transaction

from . import sum_observers
from .observer_fixtures import client_fixture, draw_seed, read, server_fixture, value, write_cells  # noqa: F401


def test_chain_of_three_observers(client: Client) -> None:
    @observer("a")
    def a_to_b(txn: Transaction, row: bytes, column: bytes) -> None:
        txn.set(row, b"b", (txn.get(row, b"a") or b"") + b">b")

    @observer("b")
    def b_to_c(txn: Transaction, row: bytes, column: bytes) -> None:
        txn.set(row, b"c", (txn.get(row, b"b") or b"") + b">c")

    @observer("c")
    def c_to_d(txn: Transaction, row: bytes, column: bytes) -> None:
        txn.set(row, b"d", (txn.get(row, b"c") or b"") + b">d")

    worker = Worker(client, [a_to_b, b_to_c, c_to_d], threads=4)
    rows = [b"row%03d" % i for i in range(40)]
    write_cells(client, {(r, b"a"): r for r in rows})
    stats = worker.run_until_idle(timeout=60)
    got = read(client, [(r, b"d") for r in rows])
    assert got == {(r, b"d"): r + b">b>c>d" for r in rows}
    assert stats.processed == 3 * len(rows) and stats.failures == 0


def test_observer_may_trigger_itself_on_another_row(client: Client) -> None:
    @observer("countdown")
    def step(txn: Transaction, row: bytes, column: bytes) -> None:
        n = int(txn.get(row, column) or b"0")
        if n > 0:
            txn.set(b"n%03d" % (n - 1), column, b"%d" % (n - 1))

    Worker(client, [step], threads=2).run_until_idle(timeout=60)  # registers the column
    write_cells(client, {(b"n%03d" % 30, b"countdown"): b"30"})
    Worker(client, [step], threads=2).run_until_idle(timeout=60)
    assert value(client, b"n000", b"countdown") == b"0"


def test_weak_notifications_run_the_observer_without_data_writes(client: Client) -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    class Touch(Observer):
        column = b"weak"

        def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
            assert txn.get(row, column) is None  # nothing was written to the cell
            with lock:
                seen.append(row)
            txn.set(row, b"touched", b"1")

    worker = Worker(client, [Touch()], threads=2)
    txn = client.begin()  # a transaction that writes nothing: unconditional notifications
    txn.notify(b"w1", b"weak")
    txn.notify(b"w2", b"weak")
    txn.commit()
    with client.transaction() as txn:  # and one that also writes something else
        txn.set(b"other", b"x", b"1")
        txn.notify(b"w3", b"weak")
    worker.run_until_idle(timeout=60)
    assert sorted(seen) == [b"w1", b"w2", b"w3"]


def test_many_updates_to_the_same_cells_coalesce_and_end_current(client: Client) -> None:
    rng = random.Random(draw_seed("coalescing"))
    runs = [0]
    lock = threading.Lock()

    @observer("hot")
    def mirror(txn: Transaction, row: bytes, column: bytes) -> None:
        with lock:
            runs[0] += 1
        txn.set(row, b"mirror", txn.get(row, column) or b"")

    worker = Worker(client, [mirror], threads=4)
    rows = [b"h%d" % i for i in range(5)]
    final: dict[bytes, bytes] = {}
    writes = 0
    worker.start()
    try:
        for i in range(300):
            row = rng.choice(rows)
            final[row] = b"%d" % i
            with client.transaction() as txn:
                txn.set(row, b"hot", final[row])
            writes += 1
        stats = worker.run_until_idle(timeout=60)
    finally:
        worker.stop()
    got = read(client, [(r, b"mirror") for r in final])
    assert got == {(r, b"mirror"): v for r, v in final.items()}, "the last write was observed"
    assert stats.processed == runs[0] <= writes
    print(f"{writes} writes, {runs[0]} observer runs")


def test_exact_sum_with_many_threads(client: Client) -> None:
    rng = random.Random(draw_seed("sum"))
    rows = [b"s%04d" % i for i in range(300)]
    values = {r: rng.randrange(1, 1000) for r in rows}
    worker = Worker(client, sum_observers.OBSERVERS, threads=4)
    write_cells(client, {(r, sum_observers.VALUE): b"%d" % v for r, v in values.items()})
    stats = worker.run_until_idle(timeout=60)
    assert sum_observers.total(client) == sum(values.values())
    assert set(sum_observers.runs(client, rows).values()) == {1}
    assert stats.processed == len(rows)
    print(f"conflicts {stats.conflicts}")


def test_setup_and_close_hooks_run_around_the_work(client: Client) -> None:
    events: list[str] = []

    class Hooked(Observer):
        column = b"hooked"

        def setup(self, c: Client) -> None:
            events.append("setup")

        def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
            events.append("process")

        def committed(self, row: bytes, column: bytes, commit_ts: int) -> None:
            events.append("committed")

        def close(self) -> None:
            events.append("close")

    worker = Worker(client, [Hooked()], threads=1)
    write_cells(client, {(b"r", b"hooked"): b"1"})
    worker.run_until_idle(timeout=30)
    assert events == ["setup", "process", "committed", "close"]
