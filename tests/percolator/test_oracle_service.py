"""The oracle over gRPC: ranges, status mapping, batching, linearizability (in-process server)."""

from __future__ import annotations

import bisect
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from bigtable_lite import InvalidArgument, StorageError, StoreClosed, Unavailable
from percolator import failpoints
from percolator._transport import batcher
from percolator._transport import streams as transport_streams
from percolator.node import Node
from percolator.oracle import (
    MAX_COUNT,
    OracleConflict,
    OracleExhausted,
    OracleStats,
    TimestampSource,
)
from percolator.oracle_client import RemoteOracle
from percolator.oracle_service import (
    STREAM_KEY,
    STREAM_REFUSED,
    OracleServicer,
    add_to_server,
    error_from_rpc,
    method_path,
    stream_refused,
)
from percolator.v1 import oracle_pb2

WAIT = 30.0  # bound of every wait in these tests
GET = method_path("GetTimestamps")
STREAM = method_path("StreamTimestamps")
TRANSPORTS = pytest.mark.parametrize("streams", [True, False], ids=["stream", "calls"])


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
    """A TimestampSource for the server side that records every request; can be gated
    (``gate``: every request waits until it is set; ``permits``: each takes one)."""

    def __init__(self, clock: Iterator[int]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.next = 1
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: threading.Event | None = None
        self.permits: threading.Semaphore | None = None
        self.entered = threading.Event()
        self.arrived = 0  # requests received, answered or not
        self.error: Exception | None = None

    def get_timestamp(self) -> int:
        return self.get_timestamps(1)

    def get_timestamps(self, count: int) -> int:
        if self.error is not None:
            raise self.error
        with self.lock:
            self.in_flight += 1
            self.arrived += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            gate, permits = self.gate, self.permits
        try:
            if gate is not None:
                self.entered.set()
                assert gate.wait(WAIT)
            if permits is not None:
                assert permits.acquire(timeout=WAIT)
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


class MethodLog(grpc.ServerInterceptor):  # type: ignore[misc]
    """Records the method of every call the server receives, in order."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], object],
                          details: grpc.HandlerCallDetails) -> object:
        self.methods.append(details.method)
        return continuation(details)


@dataclass
class Fake:
    source: RecordingSource
    address: str
    calls: MethodLog
    servicer: OracleServicer


@contextmanager
def serve_fake(*, max_streams: int = 8) -> Iterator[Fake]:
    """A RecordingSource behind a real gRPC server."""
    source = RecordingSource(itertools.count())
    calls = MethodLog()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[calls])
    servicer = add_to_server(source, server, max_streams=max_streams)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Fake(source, f"127.0.0.1:{port}", calls, servicer)
    finally:
        if source.gate is not None:
            source.gate.set()
        server.stop(grace=None)


@pytest.fixture
def fake() -> Iterator[tuple[RecordingSource, str]]:
    with serve_fake() as f:
        yield f.source, f.address


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
@pytest.mark.parametrize("method", [GET, STREAM])
def test_bad_counts_get_invalid_argument(node: Node, method: str, count: int) -> None:
    request = oracle_pb2.GetTimestampsRequest(count=count)
    with grpc.insecure_channel(node.address) as channel:
        kinds = {GET: channel.unary_unary, STREAM: channel.stream_stream}
        call = kinds[method](
            method, request_serializer=oracle_pb2.GetTimestampsRequest.SerializeToString,
            response_deserializer=oracle_pb2.GetTimestampsResponse.FromString)
        with pytest.raises(grpc.RpcError) as info:
            if method == GET:
                call(request, timeout=WAIT)
            else:  # a good request first: the bad one fails the stream after an answer
                good = oracle_pb2.GetTimestampsRequest(count=1)
                answers = call(iter([good, request]), timeout=WAIT)
                assert next(answers).count == 1
                next(answers)
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
@TRANSPORTS
def test_server_errors_arrive_as_our_errors(fake: tuple[RecordingSource, str],
                                            raised: Exception, expected: type[Exception],
                                            streams: bool) -> None:
    source, address = fake
    source.error = raised
    with RemoteOracle(address, timeout=WAIT, streams=streams) as c:
        with pytest.raises(expected) as info:
            c.get_timestamp()
        assert not isinstance(info.value, grpc.RpcError)
        source.error = None  # a stream ended by an error is replaced
        assert c.get_timestamp() == 1


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


@TRANSPORTS
def test_callers_arriving_in_flight_join_the_next_request(fake: tuple[RecordingSource, str],
                                                          streams: bool) -> None:
    source, address = fake
    source.gate = threading.Event()
    with RemoteOracle(address, timeout=WAIT, streams=streams) as c:
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


@TRANSPORTS
def test_no_caller_gets_a_number_fetched_before_it_asked(fake: tuple[RecordingSource, str],
                                                         streams: bool) -> None:
    source, address = fake
    per_thread: list[list[int]] = [[] for _ in range(24)]
    asked: list[list[int]] = [[] for _ in range(24)]
    with RemoteOracle(address, timeout=WAIT, streams=streams) as c:
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


class HeldHandOver:
    """The failpoint ``batcher.before_pass_turn`` held: the last caller of a request,
    about to give the turn to the next batch, waits there until :meth:`let_go` (as if it
    were not scheduled); later hand-overs pass."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()

    def let_go(self) -> None:
        self.go.set()


@pytest.fixture
def held_hand_over(monkeypatch: pytest.MonkeyPatch) -> HeldHandOver:
    held = HeldHandOver()
    hit = failpoints.hit

    def hook(name: str) -> None:
        if name == "batcher.before_pass_turn":
            held.reached.set()
            assert held.go.wait(WAIT)
        hit(name)

    monkeypatch.setattr(failpoints, "hit", hook)
    return held


class Callers:
    """Callers of one client, each on its own thread, started one at a time."""

    def __init__(self, client: RemoteOracle) -> None:
        self.client = client
        self.got: dict[str, int] = {}
        self.threads: dict[str, threading.Thread] = {}

    def start(self, name: str, *, queued: int | None = None) -> None:
        """Start caller ``name``; wait until ``queued`` timestamps wait for the next request."""
        def take() -> None:
            self.got[name] = self.client.get_timestamp()

        self.threads[name] = t = threading.Thread(target=take)
        t.start()
        if queued is not None:
            wait_until(lambda: self.client.queued == queued, f"{name} joins the next request")

    def must_return(self, *names: str) -> None:
        for name in names:
            self.threads[name].join(timeout=WAIT)
            assert not self.threads[name].is_alive(), f"{name} did not return"


@TRANSPORTS
def test_the_next_request_waits_until_the_callers_of_the_last_are_woken(
        fake: tuple[RecordingSource, str], held_hand_over: HeldHandOver, streams: bool) -> None:
    """The last caller woken from a request gives the turn to the next batch, whose sender
    takes its batch when it runs: a caller who asks after the request returned, while its
    callers are still being woken, goes in the very next request (with the next request
    sent as soon as one returns, it would wait for the one after)."""
    source, address = fake
    source.permits = threading.Semaphore(0)
    with RemoteOracle(address, timeout=WAIT, streams=streams) as c:
        callers = Callers(c)
        callers.start("a")
        wait_until(lambda: source.arrived == 1, "request 1 (a) is at the server, held")
        callers.start("b", queued=1)
        callers.start("c", queued=2)
        source.permits.release()  # request 1 returns; b sends request 2 for b and c
        callers.must_return("a")
        wait_until(lambda: source.arrived == 2, "request 2 (b, c) is at the server, held")
        callers.start("d", queued=1)
        source.permits.release()  # request 2 returns; c, its last caller, is held
        assert held_hand_over.reached.wait(WAIT)
        callers.must_return("b")
        callers.start("e", queued=2)  # asks after request 2 returned
        assert source.arrived == 2, "a request left before request 2's callers were woken"
        held_hand_over.let_go()
        source.permits.release()
        callers.must_return("c", "d", "e")
    assert callers.got == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    assert [r.count for r in source.requests] == [1, 2, 2]
    assert source.max_in_flight == 1


def test_a_late_turn_is_taken_once_the_request_ahead_returned(
        fake: tuple[RecordingSource, str], held_hand_over: HeldHandOver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The last caller of a request, who gives the turn to the next batch, is not
    scheduled for a while: the next sender takes the wire itself once its wait for the
    turn is over, since the request ahead has returned; the late hand-over changes nothing."""
    source, address = fake
    monkeypatch.setattr(batcher, "_HANDOFF_MARGIN", 0.2)
    source.permits = threading.Semaphore(0)
    with RemoteOracle(address, timeout=1.0) as c:  # a turn is awaited 1.5 + 0.2 s
        callers = Callers(c)
        callers.start("a")
        wait_until(lambda: source.arrived == 1, "request 1 (a) is at the server, held")
        callers.start("b", queued=1)
        callers.start("c", queued=2)
        source.permits.release(3)  # requests 1, 2 (b, c) and 3 (d) may be answered
        assert held_hand_over.reached.wait(WAIT)  # request 2 returned; c is held
        callers.start("d")
        callers.must_return("a", "b", "d")  # d took the wire while c was held
        assert callers.threads["c"].is_alive()
        held_hand_over.let_go()
        callers.must_return("c")
        source.permits.release()
        assert c.get_timestamp() == 5
    assert callers.got == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert [r.count for r in source.requests] == [1, 2, 1, 1]
    assert source.max_in_flight == 1


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


# --- transport: one stream, or calls -----------------------------------------------------


@pytest.fixture
def no_idle_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams stay open until closed, however slowly the test runs."""
    monkeypatch.setattr(transport_streams, "IDLE", 4 * WAIT)


def test_requests_travel_on_one_stream(no_idle_end: None) -> None:
    with serve_fake() as f, RemoteOracle(f.address, timeout=WAIT) as c:
        assert [c.get_timestamps(n) for n in (1, 2, 3)] == [1, 2, 4]
        assert f.calls.methods == [STREAM] and c.streams_opened == 1
        assert [r.count for r in f.source.requests] == [1, 2, 3]
        assert c.stats() == OracleStats(6, 3)


def test_streams_false_sends_calls() -> None:
    with serve_fake() as f, RemoteOracle(f.address, timeout=WAIT, streams=False) as c:
        assert [c.get_timestamp() for _ in range(3)] == [1, 2, 3]
        assert f.calls.methods == [GET] * 3 and c.streams_opened == 0


def test_refused_stream_is_answered_before_any_request_and_calls_are_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_streams, "BACKOFF", 4 * WAIT)
    with serve_fake(max_streams=0) as f:
        with grpc.insecure_channel(f.address) as channel:
            call = channel.stream_stream(
                STREAM, request_serializer=oracle_pb2.GetTimestampsRequest.SerializeToString,
                response_deserializer=oracle_pb2.GetTimestampsResponse.FromString)
            answers = call(iter([oracle_pb2.GetTimestampsRequest(count=1)]), timeout=WAIT)
            with pytest.raises(grpc.RpcError) as info:
                next(answers)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (STREAM_KEY, STREAM_REFUSED) in tuple(info.value.trailing_metadata() or ())
        assert stream_refused(info.value)
        assert f.source.requests == []
        with RemoteOracle(f.address, timeout=WAIT) as c:
            assert [c.get_timestamp() for _ in range(3)] == [1, 2, 3]
        # One refusal, then calls (no stream is tried again within the back-off).
        assert f.calls.methods[1:] == [STREAM, GET, GET, GET]


def test_idle_stream_is_closed_and_a_new_one_opened_when_needed() -> None:
    """An open stream holds a server thread: the client half-closes it once idle."""
    with serve_fake() as f, RemoteOracle(f.address, timeout=WAIT) as c:
        servicer = f.servicer
        assert c.get_timestamp() == 1
        assert c.streams_opened == 1
        wait_until(lambda: servicer.open_streams == 0, "the idle stream is closed")
        assert c.get_timestamp() == 2
        assert c.streams_opened == 2 and f.calls.methods == [STREAM, STREAM]


def test_closing_the_client_ends_its_stream(no_idle_end: None) -> None:
    with serve_fake() as f:
        servicer = f.servicer
        with RemoteOracle(f.address, timeout=WAIT) as c:
            c.get_timestamp()
            assert servicer.open_streams == 1
        wait_until(lambda: servicer.open_streams == 0, "the closed client's stream ends")


def test_node_stop_ends_busy_streams_between_requests(tmp_path: Path) -> None:
    """Stopping a node while clients take timestamps: every caller gets timestamps or an
    error, none waits for the grace period, and nothing is handed out twice."""
    node = Node(tmp_path / "data", "127.0.0.1:0", oracle_block_size=1000).start()
    got: list[list[int]] = [[] for _ in range(8)]
    errors: list[BaseException] = []
    started = threading.Barrier(9, timeout=WAIT)
    with RemoteOracle(node.address, timeout=WAIT) as a, \
            RemoteOracle(node.address, timeout=WAIT) as b:
        def take(i: int) -> None:
            source = a if i % 2 else b
            got[i].append(source.get_timestamp())
            started.wait()
            try:
                while True:
                    got[i].append(source.get_timestamp())
            except (Unavailable, StoreClosed) as exc:
                errors.append(exc)

        threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        started.wait()
        wait_until(lambda: node.timestamps.open_streams == 2, "both clients' streams are open")
        began = time.monotonic()
        node.stop(grace=WAIT)
        # Busy streams left open would run until they expire (half the clients' timeout).
        assert time.monotonic() - began < WAIT / 6, "stop waited for the busy streams"
        for t in threads:
            t.join(timeout=WAIT)
            assert not t.is_alive()
    assert len(errors) == 8
    everything = [ts for g in got for ts in g]
    assert len(set(everything)) == len(everything)
    assert all(all(x < y for x, y in itertools.pairwise(g)) for g in got)
