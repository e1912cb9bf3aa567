"""The notification log is compacted after heavy churn, by the node itself and on request,
embedded and over gRPC."""

from __future__ import annotations

from pathlib import Path

from bigtable_lite import DeleteVersion, Put, RowMutation, ScanRequest
from observers import Worker, compact_notifications, observer
from percolator import Client, Transaction, layout
from percolator._local import LocalBackend
from percolator._notify.local import IDLE_COMPACT_MIN

from .observer_fixtures import eventually, running_node, write_cells


@observer(b"churn")
def nop(txn: Transaction, row: bytes, column: bytes) -> None:
    pass


def notifications_of(client: Client) -> object:
    assert isinstance(client.backend, LocalBackend)
    return client.backend.notifications


def test_the_log_is_compacted_after_many_deletes(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data") as client:
        n = notifications_of(client)
        n.compact_every = 100  # type: ignore[attr-defined]
        worker = Worker(client, [nop], threads=2)
        write_cells(client, {(b"c%04d" % i, b"churn"): b"x" for i in range(300)}, per_txn=100)
        with worker:
            eventually(lambda: worker.stats().deleted == 300, "all processed and deleted")
            eventually(lambda: n.compactions >= 1, "a compaction")  # type: ignore[attr-defined]


def churn(client: Client, rows: list[bytes], keep: bytes) -> None:
    """Entries written and deleted, all but ``keep``: tombstones in the log's files."""
    table = layout.notify_table(client.table)
    for i in range(0, len(rows), 5000):
        part = rows[i:i + 5000]
        client.store.mutate_rows([RowMutation(table, r, (Put(b"c", 0, b"v" * 20),))
                                  for r in part])
        client.store.mutate_rows([RowMutation(table, r, (DeleteVersion(b"c", 0),))
                                  for r in part if r != keep])


def test_compaction_keeps_data_and_drops_the_churned_tombstones(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data") as client:
        table = layout.notify_table(client.table)
        rows = [b"n%06d" % i for i in range(60_000)]
        churn(client, rows, rows[0])
        client.store.engine.compact_range(None, None)  # type: ignore[attr-defined]  # flush
        [tablet] = client.store.list_tablets(table)
        assert tablet.approximate_bytes > 100_000, "the tombstones are on disk before"
        compact_notifications(client)
        left = list(client.store.scan(ScanRequest(table)))
        assert [(r.row, [c.column for c in r.cells]) for r in left] == [(rows[0], [b"c"])]
        [tablet] = client.store.list_tablets(table)
        assert tablet.approximate_bytes < 20_000, "tombstones must not stay on disk"


def test_remote_compaction_keeps_the_live_entries(tmp_path: Path) -> None:
    """Over gRPC too (the Notifications service's Compact);
    tests/bigtable_lite/test_compaction.py shows the tombstones are gone from disk."""
    with running_node(tmp_path / "data") as address, Client.connect(address) as client:
        table = layout.notify_table(client.table)
        rows = [b"n%06d" % i for i in range(20_000)]
        churn(client, rows, rows[-1])
        compact_notifications(client)
        left = list(client.store.scan(ScanRequest(table)))
        assert [(r.row, [c.column for c in r.cells]) for r in left] == [(rows[-1], [b"c"])]


def test_the_log_is_compacted_once_idle_after_a_burst(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data") as client:
        n = notifications_of(client)  # far below compact_every, above the idle minimum
        worker = Worker(client, [nop], threads=2)
        count = IDLE_COMPACT_MIN + 500
        write_cells(client, {(b"c%06d" % i, b"churn"): b"x" for i in range(count)},
                    per_txn=500)
        with worker:
            eventually(lambda: worker.stats().deleted == count, "all processed and deleted",
                       timeout=120)
            eventually(lambda: n.compactions >= 1,  # type: ignore[attr-defined]
                       "a compaction once idle")
