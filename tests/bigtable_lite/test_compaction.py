"""compact_table really drops a churned table's tombstones, in-process and over gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import DeleteVersion, LocalStore, Put, RemoteStore, RowMutation
from bigtable_lite._encoding import after_table, table_prefix
from bigtable_lite.server import build_server, stop_server

CHURNED = b"t.notify"
KEPT = b"t"


def churn(store: LocalStore | RemoteStore, rows: int) -> None:
    """Write and delete ``rows`` cells, as processed notifications are."""
    for start in range(0, rows, 1000):
        names = [b"r%09d" % i for i in range(start, start + 1000)]
        store.mutate_rows([RowMutation(CHURNED, r, (Put(b"c", 1, b"v" * 9),)) for r in names])
        store.mutate_rows([RowMutation(CHURNED, r, (DeleteVersion(b"c", 1),)) for r in names])


def on_disk(store: LocalStore, table: bytes) -> int:
    tpfx = table_prefix(table)
    return store.engine.approximate_size(tpfx, after_table(tpfx))


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalStore]:
    with LocalStore(tmp_path / "d") as store:
        store.put(KEPT, b"a", b"c", 1, b"kept")
        store.put(KEPT, b"\xff" * 8, b"c", 1, b"kept")
        yield store


def test_compaction_drops_tombstones_and_keeps_everything_else(local: LocalStore) -> None:
    churn(local, 200_000)
    local.engine.compact_range(None, None)  # what plain CompactRange leaves behind
    left_by_compact_range = on_disk(local, CHURNED)
    local.compact_table(CHURNED)
    assert on_disk(local, CHURNED) < max(left_by_compact_range // 20, 4096), (
        left_by_compact_range, on_disk(local, CHURNED))
    assert list(local.scan_rows(CHURNED)) == []
    assert [r.row for r in local.scan_rows(KEPT)] == [b"a", b"\xff" * 8]
    assert local.get(KEPT, b"a", b"c").value == b"kept"  # type: ignore[union-attr]


def test_compaction_over_grpc(local: LocalStore) -> None:
    server, port = build_server(local, "127.0.0.1:0")
    server.start()
    try:
        with RemoteStore(f"127.0.0.1:{port}") as remote:
            churn(remote, 100_000)
            local.engine.compact_range(None, None)  # flush: the tombstones are now on disk
            assert on_disk(local, CHURNED) > 100_000
            remote.compact_table(CHURNED)
            assert on_disk(local, CHURNED) < 4096
            assert list(remote.scan_rows(KEPT, columns=[b"c"]))[0].row == b"a"
            with pytest.raises(ValueError):
                remote.compact_table(b"")
    finally:
        stop_server(server, 1)
