"""Byte budgets and stream pools: what one call may take of a server.

The reply budget is checked while rows are gathered (LocalStore), large results stream
from one snapshot a piece at a time, a full stream pool refuses at once and RemoteStore
tries again, request messages over their service's budget are refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bigtable_lite import (
    Cell,
    LocalStore,
    Put,
    RemoteStore,
    ReplyTooLarge,
    RowMutation,
    RowRead,
    ScanRequest,
    wire,
)
from bigtable_lite._reads import cells_bytes
from bigtable_lite._service import SERVICE_NAME
from bigtable_lite.server import ServerPolicy, build_server, stop_server
from bigtable_lite.status import STREAM_KEY, STREAM_REFUSED

from .conftest import CALL_TIMEOUT

T = b"t"
KiB = 1 << 10


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    with LocalStore(tmp_path / "data") as s:
        s.mutate_rows([RowMutation(T, b"r%02d" % i, (Put(b"c", 1, bytes([i]) * KiB),))
                       for i in range(20)])
        yield s


def test_a_reply_over_the_budget_is_refused(store: LocalStore) -> None:
    reads = [RowRead(T, b"r%02d" % i) for i in range(20)]
    size = sum(cells_bytes(cells) for cells in store.read_rows(reads))
    assert len(store.read_rows(reads, max_bytes=size)) == 20  # exactly the budget: fine
    with pytest.raises(ReplyTooLarge, match=f"budget of {size - 1} bytes"):
        store.read_rows(reads, max_bytes=size - 1)
    with pytest.raises(ReplyTooLarge):
        store.read_rows([RowRead(T, b"r00")] * 1000, max_bytes=10 * KiB)


def test_chunks_hold_one_snapshot_and_about_the_chunk_size(store: LocalStore) -> None:
    reads = [RowRead(T, b"r%02d" % i) for i in range(20)]
    chunks = store.read_rows_chunks(reads, 3 * KiB)
    first = next(chunks)
    store.mutate_rows([RowMutation(T, b"r19", (Put(b"c", 1, b"changed"),))])
    rest = list(chunks)
    rows = [row for chunk in [first, *rest] for row in chunk]
    assert rows == [[Cell(b"c", 1, bytes([i]) * KiB)] for i in range(20)]  # not "changed"
    assert all(sum(cells_bytes(r) for r in chunk) <= 3 * KiB for chunk in [first, *rest])
    assert len(rest) >= 5
    assert store.read_rows([RowRead(T, b"r19")])[0][0].value == b"changed"


@pytest.fixture
def served(store: LocalStore) -> Iterator[str]:
    server, port = build_server(store, "127.0.0.1:0", max_workers=8,
                                policy=ServerPolicy(max_reply_bytes=4 * KiB, tablet_streams=1))
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_server(server, grace=1.0)


def test_over_grpc_a_large_reply_is_refused_then_streamed(served: str) -> None:
    reads = [RowRead(T, b"r%02d" % i) for i in range(20)]
    with grpc.insecure_channel(served) as channel:
        raw = channel.unary_unary(f"/{SERVICE_NAME}/ReadRows")
        with pytest.raises(grpc.RpcError) as info:
            raw(wire.read_request_to_pb(reads).SerializeToString(), timeout=CALL_TIMEOUT)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        rows = RemoteStore(channel, timeout=CALL_TIMEOUT).read_rows(reads)  # via the stream
        assert [r[0].value for r in rows] == [bytes([i]) * KiB for i in range(20)]


class _CountScans(grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Counts the Scan calls a client makes."""

    def __init__(self) -> None:
        self.calls = 0
        self._changed = threading.Condition()

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        with self._changed:
            self.calls += 1
            self._changed.notify_all()
        return continuation(details, request)

    def reached(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.calls >= n, timeout)


SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
"""A client that buffers little unread: a scan of a few hundred KiB blocks its sender."""


def test_a_full_stream_pool_refuses_and_remote_store_tries_again(store: LocalStore,
                                                                 served: str) -> None:
    store.mutate_rows([RowMutation(b"many", b"r%04d" % i, (Put(b"c", 1, b"v" * KiB),))
                       for i in range(1000)])
    with grpc.insecure_channel(served, options=SMALL_WINDOW) as channel:
        remote = RemoteStore(channel, timeout=CALL_TIMEOUT)
        holder = remote.scan(ScanRequest(b"many"))
        assert next(holder).row == b"r0000"  # holds the only slot while unread
        request = wire.scan_request_to_pb(ScanRequest(T)).SerializeToString()
        with pytest.raises(grpc.RpcError) as info:
            list(channel.unary_stream(f"/{SERVICE_NAME}/Scan")(request, timeout=CALL_TIMEOUT))
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (STREAM_KEY, STREAM_REFUSED) in info.value.trailing_metadata()

        attempts = _CountScans()
        retrying = RemoteStore(grpc.intercept_channel(channel, attempts), timeout=CALL_TIMEOUT)
        rows: list[int] = []
        waiting = threading.Thread(target=lambda: rows.append(len(list(
            retrying.scan(ScanRequest(T))))))
        waiting.start()
        assert attempts.reached(2, CALL_TIMEOUT), "the refused scan was not tried again"
        holder.close()  # type: ignore[attr-defined]  # frees the slot
        waiting.join(CALL_TIMEOUT)
        assert rows == [20]


def test_requests_over_a_services_budget_are_refused(served: str) -> None:
    from grpc_health.v1 import health_pb2

    big = health_pb2.HealthCheckRequest(service="x" * (64 * KiB)).SerializeToString()
    with grpc.insecure_channel(served) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/grpc.health.v1.Health/Check")(big, timeout=CALL_TIMEOUT)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "budget" in (info.value.details() or "")
