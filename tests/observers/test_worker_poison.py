"""A malformed row in the workers table stops nothing (issue 16).

Worker leases and stats live in a side table any ``write`` client may write raw.  One
lease ``{"expires_ms": null}`` once raised a TypeError in every worker's membership
thread: the workers stayed up doing nothing, and a new worker crashed at start.  Now a
malformed row claims nothing, is skipped wherever it is read (membership, forgetting
gone workers, ``percolator status``), and workers started before and after it work on.
"""

from __future__ import annotations

import pytest

from bigtable_lite import Put, RowMutation
from observers import Worker, observer
from observers import layout as olayout
from observers.membership import forget_gone_workers, read_leases
from observers.stats import WorkerStats
from observers.status import cluster_status, format_status
from percolator import Client, Transaction

from .observer_fixtures import client_fixture, eventually, server_fixture, write_cells  # noqa: F401

COL = b"p"
LEASES = [b'{"expires_ms": null}', b'{"expires_ms": 1e400}', b'{"expires_ms": "99"}',
          b'{"expires_ms": true}', b'{"columns": []}', b'{"expires_ms": 5, "columns": 7}',
          b'{"expires_ms": 5, "columns": ["zz"]}', b'{"expires_ms": 5, "columns": [7]}',
          b'{"expires_ms": 5, "pid": null}', b"[]", b"null", b"\xff", b""]
STATS = [b'{"worker": "x", "updated_ms": null}', b'{"worker": "x", "processed": "many"}',
         b'{"worker": 7}', b"{}", b"[1]", b"nope"]


@observer(COL)
def mark(txn: Transaction, row: bytes, column: bytes) -> None:
    txn.set(row, b"done", b"1")


def poison(client: Client, prefix: bytes) -> None:
    table = olayout.workers_table(client.table)
    rows = [RowMutation(table, b"%s-lease-%02d" % (prefix, i), (
        Put(olayout.LEASE_COLUMN, 0, raw),)) for i, raw in enumerate(LEASES)]
    rows += [RowMutation(table, b"%s-stats-%02d" % (prefix, i), (
        Put(olayout.STATS_COLUMN, 0, raw),)) for i, raw in enumerate(STATS)]
    client.store.mutate_rows(rows)


@pytest.mark.parametrize("raw", LEASES)
def test_a_malformed_lease_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="malformed lease|non-hexadecimal"):
        olayout.decode_lease("w", raw)


@pytest.mark.parametrize("raw", STATS)
def test_malformed_worker_stats_are_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        WorkerStats.from_json(raw)


def test_malformed_rows_in_the_workers_table_stop_no_worker(client: Client) -> None:
    poison(client, b"before")
    assert read_leases(client.store, client.table) == []
    assert forget_gone_workers(client.store, client.table, 0) == 0  # none is judged gone
    status = cluster_status(client)
    assert not any(w.alive for w in status.workers) and format_status(status)
    a = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0, worker_id="wa")
    a.start()  # once: a TypeError here
    b = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0, worker_id="wb")
    try:
        eventually(lambda: a.peers(COL) == ("wa",), "a sees itself only")
        poison(client, b"during")  # while its membership thread runs
        b.start()
        eventually(lambda: a.peers(COL) == b.peers(COL) == ("wa", "wb"),
                   "both see each other: their membership threads run on")
        rows = [b"row%03d" % i for i in range(60)]
        write_cells(client, {(r, COL): b"x" for r in rows})
        done = a.run_until_idle(timeout=60).processed + b.run_until_idle(timeout=60).processed
        assert done == len(rows)
        alive = {w.worker for w in cluster_status(client).workers if w.alive}
        assert alive == {"wa", "wb"}
    finally:
        a.stop()
        b.stop()
