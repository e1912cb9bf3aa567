"""The notify table is compacted after heavy churn, embedded and over gRPC."""

from __future__ import annotations

from pathlib import Path

from bigtable_lite import DeleteVersion, Put, RowMutation, ScanRequest
from observers import Worker, compact_notifications, observer
from observers.compaction import IDLE_COMPACT_MIN
from percolator import Client, Transaction, layout

from .observer_fixtures import eventually, running_node, write_cells


@observer(b"churn")
def nop(txn: Transaction, row: bytes, column: bytes) -> None:
    pass


def test_worker_compacts_the_notify_table_after_many_deletes(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data") as client:
        worker = Worker(client, [nop], threads=2, compact_every=100, stats_interval=0.05)
        write_cells(client, {(b"c%04d" % i, b"churn"): b"x" for i in range(300)}, per_txn=100)
        with worker:
            eventually(lambda: worker.stats().deleted == 300, "all processed and deleted")
            eventually(lambda: worker.stats().compactions >= 1, "a compaction")


def test_compaction_keeps_data_and_drops_the_churned_tombstones(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data") as client:
        table = layout.notify_table(client.table)
        rows = [b"n%06d" % i for i in range(60_000)]
        for i in range(0, len(rows), 5000):
            part = rows[i:i + 5000]
            client.store.mutate_rows([RowMutation(table, r, (Put(b"c", 1, b"v" * 20),))
                                      for r in part])
            client.store.mutate_rows([RowMutation(table, r, (DeleteVersion(b"c", 1),))
                                      for r in part if r != rows[0]])
        client.store.engine.compact_range(None, None)  # type: ignore[attr-defined]  # flush
        [tablet] = client.store.list_tablets(table)
        assert tablet.approximate_bytes > 100_000, "the tombstones are on disk before"
        assert compact_notifications(client)
        left = list(client.store.scan(ScanRequest(table)))
        assert [(r.row, [c.column for c in r.cells]) for r in left] == [(rows[0], [b"c"])]
        [tablet] = client.store.list_tablets(table)
        assert tablet.approximate_bytes < 20_000, "tombstones must not stay on disk"


def test_remote_compaction_keeps_the_live_notifications(tmp_path: Path) -> None:
    """Over gRPC too (CompactTable RPC); tests/bigtable_lite/test_compaction.py shows the
    tombstones are gone from disk."""
    with running_node(tmp_path / "data") as address, Client.connect(address) as client:
        table = layout.notify_table(client.table)
        rows = [b"n%06d" % i for i in range(20_000)]
        for i in range(0, len(rows), 5000):
            part = rows[i:i + 5000]
            client.store.mutate_rows([RowMutation(table, r, (Put(b"c", 1, b"v" * 20),))
                                      for r in part])
            client.store.mutate_rows([RowMutation(table, r, (DeleteVersion(b"c", 1),))
                                      for r in part if r != rows[-1]])
        assert compact_notifications(client)
        left = list(client.store.scan(ScanRequest(table)))
        assert [(r.row, [c.column for c in r.cells]) for r in left] == [(rows[-1], [b"c"])]


def test_an_idle_worker_compacts_after_a_burst(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data") as client:
        # Far below compact_every, above the idle minimum.
        worker = Worker(client, [nop], threads=2, stats_interval=0.05)
        count = IDLE_COMPACT_MIN + 500
        write_cells(client, {(b"c%06d" % i, b"churn"): b"x" for i in range(count)},
                    per_txn=500)
        with worker:
            eventually(lambda: worker.stats().deleted == count, "all processed and deleted",
                       timeout=120)
            eventually(lambda: worker.stats().compactions >= 1, "a compaction once idle")
