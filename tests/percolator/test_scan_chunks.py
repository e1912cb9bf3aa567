"""Scans across chunk boundaries under concurrent transfers: no cell skipped or repeated.

A scan comes back in chunks: cut by rows, and by bytes (a chunk ends after the row that
reaches its budget; that row's cells past the budget come back ``unread``, for the
client to read).  Locks met in a chunk are settled or waited for.  Here a store with
small message limits makes every few rows a chunk and every tenth row larger than one,
while threads transfer amounts between cells (two-phase: locks everywhere, or one
phase: latches): every snapshot's scan must list each cell once, in order, agree with
a point read of every cell at the same snapshot, and sum to the total.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import Limits, LocalStore
from percolator import Client, Transaction, failpoints
from percolator._local import LocalBackend
from percolator.oracle import Oracle

from .txn_fixtures import draw_seed

LIMITS = Limits(max_row_bytes=256, max_column_bytes=256, max_value_bytes=4096,
                max_message_bytes=64 * 1024)  # a chunk's budget: 16 KiB, 4 long values
ROWS = [b"acct%03d" % i for i in range(150)]
CELLS = [(row, b"b%d" % c) for i, row in enumerate(ROWS) for c in range(5 if i % 10 == 0
                                                                           else 1)]
OPENING = 100
TOTAL = OPENING * len(CELLS)
PAD = 300  # values past the inline limit: counted at the largest value in a chunk
WRITERS = 3
TRANSFERS = 60  # per writer
WAIT = 120.0


def encode(n: int) -> bytes:
    return b"%d" % n + b" " * (PAD - len(b"%d" % n))


@pytest.fixture(params=[False, True], ids=["two-phase", "one-phase"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    store = LocalStore(str(tmp_path / "data"), limits=LIMITS)
    failpoints.reset()
    if not request.param:  # locks live a while: scans meet them in later chunks
        failpoints.enable("commit.after_prewrite", "sleep(3)")
    try:
        with Client(LocalBackend(store, Oracle(store)), one_phase=request.param,
                    lock_ttl=5.0) as c:
            yield c
    finally:
        failpoints.reset()


def check_snapshot(txn: Transaction) -> None:
    scanned = [(row, column, value) for row, column, value in txn.scan(b"acct", b"acct\xff")]
    keys = [(row, column) for row, column, _ in scanned]
    assert keys == sorted(set(keys)), f"scan at {txn.start_ts} repeated or misordered cells"
    assert keys == CELLS, f"scan at {txn.start_ts} missed cells: " \
        f"{sorted(set(CELLS) - set(keys))[:5]}"
    points = txn.get_many(CELLS)
    assert {(r, c): v for r, c, v in scanned} == points, \
        f"scan and point reads at {txn.start_ts} disagree"
    total = sum(int(v) for _, _, v in scanned)
    assert total == TOTAL, f"snapshot {txn.start_ts} sums to {total}, not {TOTAL}"


def test_scans_across_chunks_see_every_cell_once_while_transfers_run(client: Client) -> None:
    with client.transaction() as txn:
        for row, column in CELLS:
            txn.set(row, column, encode(OPENING))
    seed = draw_seed("scan-chunks")
    errors: list[BaseException] = []
    writers_done = threading.Event()

    def transfer(rng: random.Random) -> None:
        def fn(txn: Transaction) -> None:
            a, b = rng.sample(CELLS, 2)
            va, vb = int(txn.get(*a) or b"0"), int(txn.get(*b) or b"0")
            amount = rng.randint(0, va)
            txn.set(*a, encode(va - amount))
            txn.set(*b, encode(vb + amount))
        client.run(fn, max_attempts=50)

    def writer(i: int) -> None:
        rng = random.Random(seed + i)
        try:
            for _ in range(TRANSFERS):
                transfer(rng)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def reader() -> None:
        try:
            scans = 0
            while not writers_done.is_set() or scans < 3:
                check_snapshot(client.begin())
                scans += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    scan_thread = threading.Thread(target=reader)
    for t in [*threads, scan_thread]:
        t.start()
    for t in threads:
        t.join(WAIT)
    writers_done.set()
    scan_thread.join(WAIT)
    assert not any(t.is_alive() for t in [*threads, scan_thread]), "threads did not finish"
    assert not errors, errors[0]
    check_snapshot(client.begin())
