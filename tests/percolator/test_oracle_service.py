"""The oracle over gRPC: ranges, status mapping, batching, linearizability (in-process server)."""

from __future__ import annotations

import bisect
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from bigtable_lite import InvalidArgument, StorageError, StoreClosed, Unavailable
from percolator.node import Node
from percolator.oracle import (
    MAX_COUNT,
    OracleConflict,
    OracleExhausted,
    OracleStats,
    TimestampSource,
)
from percolator.oracle_client import RemoteOracle
from percolator.oracle_service import add_to_server, error_from_rpc, method_path
from percolator.v1 import oracle_pb2

WAIT = 30.0  # bound of every wait in these tests


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("oracle") / "data", "127.0.0.1:0",
              oracle_block_size=1000) as n:
        yield n


@pytest.fixture
def client(node: Node) -> Iterator[RemoteOracle]:
    with RemoteOracle(node.address, timeout=WAIT) as c:
        yield c


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll an observable state (bounded); the state, not a guessed delay, is the signal."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        threading.Event().wait(0.001)


def run_threads(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT)
        assert not t.is_alive(), "thread did not finish in time"


# --- a fake oracle behind a real gRPC server, to watch what reaches the server ----------


@dataclass
class Request:
    seq: int    # position in real-time order (the shared counter) when the server got it
    first: int
    count: int


class RecordingSource:
    """A TimestampSource for the server side that records every request; can be gated."""

    def __init__(self, clock: Iterator[int]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.next = 1
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.error: Exception | None = None

    def get_timestamp(self) -> int:
        return self.get_timestamps(1)

    def get_timestamps(self, count: int) -> int:
        if self.error is not None:
            raise self.error
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            gate = self.gate
        try:
            if gate is not None:
                self.entered.set()
                assert gate.wait(WAIT)
            with self.lock:
                first = self.next
                self.next += count
                self.requests.append(Request(next(self.clock), first, count))
                return first
        finally:
            with self.lock:
                self.in_flight -= 1

    def stats(self) -> OracleStats:
        return OracleStats(self.next - 1, len(self.requests))

    def close(self) -> None:
        pass

    def request_of(self, ts: int) -> Request:
        firsts = [r.first for r in self.requests]
        request = self.requests[bisect.bisect_right(firsts, ts) - 1]
        assert request.first <= ts < request.first + request.count
        return request


@pytest.fixture
def fake() -> Iterator[tuple[RecordingSource, str]]:
    source = RecordingSource(itertools.count())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    add_to_server(source, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield source, f"127.0.0.1:{port}"
    finally:
        if source.gate is not None:
            source.gate.set()
        server.stop(grace=None)


# --- ranges and errors ------------------------------------------------------------------


def test_remote_ranges_are_contiguous_and_increasing(client: RemoteOracle) -> None:
    assert isinstance(client, TimestampSource)
    a = client.get_timestamp()
    first = client.get_timestamps(10)
    assert first > a
    assert client.get_timestamp() == first + 10  # nobody else uses this node now
    assert client.get_timestamps(MAX_COUNT) == first + 11
    stats = client.stats()
    assert (stats.timestamps_served, stats.requests) == (12 + MAX_COUNT, 4)


@pytest.mark.parametrize("count", [0, MAX_COUNT + 1])
def test_bad_counts_get_invalid_argument(node: Node, count: int) -> None:
    with grpc.insecure_channel(node.address) as channel:
        call = channel.unary_unary(
            method_path("GetTimestamps"),
            request_serializer=oracle_pb2.GetTimestampsRequest.SerializeToString,
            response_deserializer=oracle_pb2.GetTimestampsResponse.FromString)
        with pytest.raises(grpc.RpcError) as info:
            call(oracle_pb2.GetTimestampsRequest(count=count), timeout=WAIT)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_COUNT) in (info.value.details() or "")
    assert isinstance(error_from_rpc(info.value), InvalidArgument)


@pytest.mark.parametrize("count", [0, MAX_COUNT + 1])
def test_client_refuses_bad_counts_before_sending(client: RemoteOracle, count: int) -> None:
    with pytest.raises(InvalidArgument):
        client.get_timestamps(count)
    assert client.stats().requests == 0


@pytest.mark.parametrize("raised,expected", [
    (OracleExhausted("past 2**64"), OracleExhausted),
    (OracleConflict("two oracles"), OracleConflict),
    (StoreClosed("closing"), Unavailable),
    (RuntimeError("bug"), StorageError),
])
def test_server_errors_arrive_as_our_errors(fake: tuple[RecordingSource, str],
                                            raised: Exception, expected: type[Exception]) -> None:
    source, address = fake
    source.error = raised
    with RemoteOracle(address, timeout=WAIT) as c, pytest.raises(expected) as info:
        c.get_timestamp()
    assert not isinstance(info.value, grpc.RpcError)


def test_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    with Node(tmp_path / "data", "127.0.0.1:0") as n:
        address = n.address
    with RemoteOracle(address, timeout=2.0) as c, pytest.raises(Unavailable):
        c.get_timestamp()


def test_closed_client_refuses(node: Node) -> None:
    c = RemoteOracle(node.address, timeout=WAIT)
    c.get_timestamp()
    c.close()
    c.close()
    with pytest.raises(StoreClosed):
        c.get_timestamp()


def test_server_reports_its_figures(node: Node, client: RemoteOracle) -> None:
    before = client.server_stats()
    client.get_timestamps(7)
    after = client.server_stats()
    assert after.timestamps_served == before.timestamps_served + 7
    assert after.requests == before.requests + 1
    assert after.persisted_high_water >= after.timestamps_served


# --- batching and linearizability -------------------------------------------------------


def test_callers_arriving_in_flight_join_the_next_request(fake: tuple[RecordingSource, str]
                                                          ) -> None:
    source, address = fake
    source.gate = threading.Event()
    with RemoteOracle(address, timeout=WAIT) as c:
        results: dict[str, int] = {}
        first = threading.Thread(target=lambda: results.update(a=c.get_timestamp()))
        first.start()
        assert source.entered.wait(WAIT)  # the first request is at the server, held there

        def join(i: int) -> None:
            results[f"b{i}"] = c.get_timestamp()

        late = [threading.Thread(target=join, args=(i,)) for i in range(8)]
        for t in late:
            t.start()
        wait_until(lambda: c.queued == 8, "8 callers wait for the next request")
        assert source.requests == [] and source.in_flight == 1
        source.gate.set()
        for t in [first, *late]:
            t.join(timeout=WAIT)
            assert not t.is_alive()
    assert [r.count for r in source.requests] == [1, 8]
    assert results["a"] == 1
    assert sorted(v for k, v in results.items() if k != "a") == list(range(2, 10))
    assert source.max_in_flight == 1
    assert c.stats() == OracleStats(9, 2)


def test_no_caller_gets_a_number_fetched_before_it_asked(fake: tuple[RecordingSource, str]
                                                         ) -> None:
    source, address = fake
    per_thread: list[list[int]] = [[] for _ in range(24)]
    asked: list[list[int]] = [[] for _ in range(24)]
    with RemoteOracle(address, timeout=WAIT) as c:
        def take(i: int) -> None:
            for n in range(150):
                asked[i].append(next(source.clock))  # real-time order of "caller asked"
                if n % 5 == 0:
                    per_thread[i].append(c.get_timestamps(2))
                else:
                    per_thread[i].append(c.get_timestamp())

        run_threads(24, take)
        stats = c.stats()
    for got, when in zip(per_thread, asked):
        assert all(a < b for a, b in itertools.pairwise(got))
        for ts, asked_at in zip(got, when):
            assert source.request_of(ts).seq > asked_at, "number from a range fetched earlier"
    everything = [ts for got in per_thread for ts in got]
    assert len(set(everything)) == len(everything)
    assert source.max_in_flight == 1
    assert stats.requests == len(source.requests) < stats.timestamps_served  # batching happened
    assert stats.mean_batch_size > 1


def test_batches_never_exceed_the_maximum_count(fake: tuple[RecordingSource, str]) -> None:
    source, address = fake
    ranges: list[tuple[int, int]] = []
    with RemoteOracle(address, timeout=WAIT) as c:
        def take(i: int) -> None:
            for _ in range(3):
                count = 40_000 + i
                ranges.append((c.get_timestamps(count), count))

        run_threads(4, take)
    assert max(r.count for r in source.requests) <= MAX_COUNT
    covered = sorted(ranges)
    for (a, n), (b, _) in itertools.pairwise(covered):
        assert a + n <= b, "ranges overlap"


def test_timestamp_passed_between_clients_out_of_band(node: Node) -> None:
    """Linearizability: B's next timestamp exceeds one A received, while both are busy."""
    handoff: queue.Queue[int] = queue.Queue()
    stop = threading.Event()
    failures: list[str] = []
    with RemoteOracle(node.address, timeout=WAIT) as a, \
            RemoteOracle(node.address, timeout=WAIT) as b:
        def load(i: int) -> None:  # keeps both clients batching
            source = a if i % 2 else b
            while not stop.is_set():
                source.get_timestamp()

        loaders = [threading.Thread(target=load, args=(i,)) for i in range(8)]
        for t in loaders:
            t.start()

        def receive() -> None:
            for _ in range(300):
                seen = handoff.get(timeout=WAIT)
                mine = b.get_timestamp()
                if mine <= seen:
                    failures.append(f"B got {mine} after A handed it {seen}")

        receiver = threading.Thread(target=receive)
        receiver.start()
        try:
            for _ in range(300):
                handoff.put(a.get_timestamp())
            receiver.join(timeout=WAIT)
            assert not receiver.is_alive()
        finally:
            stop.set()
            for t in loaders:
                t.join(timeout=WAIT)
        assert a.stats().mean_batch_size > 1 or b.stats().mean_batch_size > 1
    assert failures == []
