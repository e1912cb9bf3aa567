"""Races: many threads check-and-mutate one row; exactly one wins each round.

This is the property the transaction layer's prewrite rests on (Percolator §2.2: a
lock is taken iff no other lock or newer write exists, atomically per row).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from bigtable_lite import (
    MutationResult,
    NoVersionIn,
    Put,
    RemoteStore,
    RowMutation,
    StoreOps,
    VersionAt,
)

T = b"t"
THREADS = 8
ROUNDS = 40
JOIN_TIMEOUT = 60.0
SEED = 4242


def run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT)
        assert not t.is_alive(), "a racing thread is stuck"
    if errors:
        raise errors[0]


def race_one_row(store: StoreOps) -> None:
    barrier = threading.Barrier(THREADS, timeout=JOIN_TIMEOUT)
    results: list[list[MutationResult | None]] = [[None] * THREADS for _ in range(ROUNDS)]

    def contender(me: int) -> None:
        for r in range(ROUNDS):
            barrier.wait()  # everyone starts the round together
            column = b"round%03d" % r
            results[r][me] = store.check_and_mutate(
                T, b"contended", [NoVersionIn(column)], [Put(column, 100 + r, b"%d" % me)])

    run_threads(THREADS, contender)
    cells = {c.column: c for c in store.read_row(T, b"contended")}
    for r, outcome in enumerate(results):
        winners = [me for me, res in enumerate(outcome) if res is not None and res.applied]
        assert len(winners) == 1, f"round {r}: winners {winners}"
        stored = cells[b"round%03d" % r]
        assert stored.value == b"%d" % winners[0]
        for res in outcome:  # every loser saw the winner's write
            assert res is not None
            assert res.applied or (res.failed_condition == 0 and res.found == stored)


def test_one_winner_per_round_in_process(local_store: StoreOps) -> None:
    race_one_row(local_store)


def test_one_winner_per_round_over_grpc(remote_store: RemoteStore) -> None:
    race_one_row(remote_store)


def test_one_winner_per_round_with_separate_clients(served: object) -> None:
    from .conftest import Served

    assert isinstance(served, Served)
    clients = [served.remote() for _ in range(THREADS)]
    try:
        barrier = threading.Barrier(THREADS, timeout=JOIN_TIMEOUT)
        wins = [0] * ROUNDS

        def contender(me: int) -> None:
            for r in range(ROUNDS):
                barrier.wait()
                column = b"r%03d" % r
                res = clients[me].check_and_mutate(T, b"row", [NoVersionIn(column)],
                                                   [Put(column, 1, b"%d" % me)])
                if res.applied:
                    wins[r] += 1  # only one thread can get here per round

        run_threads(THREADS, contender)
        assert wins == [1] * ROUNDS
    finally:
        for c in clients:
            c.close()


def test_counter_increments_are_not_lost(local_store: StoreOps) -> None:
    """Read-then-compare-and-set loops: every increment lands exactly once."""
    per_thread = 30
    local_store.put(T, b"counter", b"n", 0, b"0")

    def incrementer(me: int) -> None:
        done = 0
        while done < per_thread:
            cell = local_store.get(T, b"counter", b"n")
            assert cell is not None
            res = local_store.check_and_mutate(
                T, b"counter",
                [VersionAt(b"n", cell.ts, cell.value), NoVersionIn(b"n", cell.ts + 1)],
                [Put(b"n", cell.ts + 1, b"%d" % (int(cell.value) + 1))])
            done += res.applied

    run_threads(THREADS, incrementer)
    final = local_store.get(T, b"counter", b"n")
    assert final is not None and int(final.value) == THREADS * per_thread == final.ts


def test_overlapping_batches_do_not_deadlock(local_store: StoreOps) -> None:
    """Batches lock their rows' stripes in one global order, whatever the row order."""
    rows = [b"row%02d" % i for i in range(20)]

    def batcher(me: int) -> None:
        rng = random.Random(SEED + me)
        for n in range(30):
            mine = rng.sample(rows, 8)
            local_store.mutate_rows([RowMutation(T, row, (Put(b"c%d" % me, n, b"x"),))
                                     for row in mine])

    run_threads(THREADS, batcher)
    assert len(list(local_store.scan_rows(T))) == len(rows)


def test_concurrent_scans_that_stop_early_over_grpc(remote_store: RemoteStore) -> None:
    """Scans run on their calling threads; abandoning them must free the server."""
    remote_store.mutate_rows([RowMutation(T, b"s%04d" % i, (Put(b"c", 1, b"v"),))
                              for i in range(600)])

    def scanner(me: int) -> None:
        for n in range(20):
            it = remote_store.scan_rows(T, b"s%04d" % (me * 50 + n))
            assert next(it).row == b"s%04d" % (me * 50 + n)
            if n % 2:
                it.close()  # type: ignore[attr-defined]
            else:
                assert len(list(it)) == 600 - (me * 50 + n) - 1

    run_threads(THREADS, scanner)
