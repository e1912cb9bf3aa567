"""Batched commands (Node.Batch, Node.BatchStream, NodeClient): same results as separate
calls, per-command errors, linearizable timestamps, row atomicity across batched callers.

Servers are real (127.0.0.1 port 0).  Where a test needs commands to meet in one batch,
a gate holds the node's first read until the others are queued: the queue, not a
guessed delay, is the signal.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from percolator.batching import CoalescingStore
from percolator.node_client import NodeClient
from percolator.node_service import (
    COMMAND_TAGS,
    ERROR_TAG,
    SERVICE_NAME,
    NodeService,
    command_error,
    frame,
)

from bigtable_lite import (
    ALL_TIME,
    DEFAULT_LIMITS,
    Cell,
    DataCorruption,
    InvalidArgument,
    LimitExceeded,
    Limits,
    LocalStore,
    MutationResult,
    NoVersionIn,
    Put,
    RemoteStore,
    RowMutation,
    RowRead,
    ScanRequest,
    StorageError,
    StoreClosed,
    Unavailable,
    WrongTablet,
    wire,
)
from bigtable_lite.server import build_server
from percolator import Client
from percolator.node import Node
from percolator.oracle import MAX_COUNT, Oracle, OracleConflict, OracleExhausted, OracleStats
from percolator.oracle_client import RemoteOracle
from percolator.oracle_service import registration as oracle_registration
from percolator.v1 import node_pb2, oracle_pb2

WAIT = 30.0  # bound of every wait in these tests
Code = grpc.StatusCode
_tables = itertools.count(1)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll an observable state (bounded)."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        threading.Event().wait(0.001)


def start(target: Callable[[], Any], results: dict[str, Any], name: str) -> threading.Thread:
    """Run target in a thread; its result (or exception) lands in results[name]."""
    def run() -> None:
        try:
            results[name] = target()
        except Exception as exc:  # noqa: BLE001 -- recorded, asserted by the test
            results[name] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def join(threads: Sequence[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=WAIT)
        assert not t.is_alive(), "thread did not finish in time"


def new_table() -> bytes:
    return b"batch%d" % next(_tables)


# --- servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("node") / "data", "127.0.0.1:0") as n:
        yield n


@pytest.fixture
def channel(node: Node) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.address) as ch:
        yield ch


class GatedStore:
    """The node's store, whose next read (when ``hold_next``) waits for ``release``."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.limits = inner.limits
        self.hold_next = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def read_rows(self, reads: Sequence[RowRead]) -> list[list[Cell]]:
        if self.hold_next:
            self.hold_next = False
            self.entered.set()
            assert self.release.wait(WAIT)
        return self.inner.read_rows(reads)

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        return self.inner.mutate_rows(mutations, sync=sync)


class RecordingService(NodeService):
    """Records the kinds of the commands of every batch it executes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []

    def execute(self, request: node_pb2.BatchRequest) -> bytes:
        self.batches.append([str(c.WhichOneof("kind")) for c in request.commands])
        return super().execute(request)


class FakeOracle:
    """A TimestampSource that fails with ``error`` while it is set."""

    def __init__(self) -> None:
        self.next = 1
        self.error: Exception | None = None

    def get_timestamp(self) -> int:
        return self.get_timestamps(1)

    def get_timestamps(self, count: int) -> int:
        if self.error is not None:
            raise self.error
        first, self.next = self.next, self.next + count
        return first

    def stats(self) -> OracleStats:
        return OracleStats(self.next - 1, 0)

    def close(self) -> None:
        pass


@dataclass
class Served:
    address: str
    store: GatedStore
    service: RecordingService


@contextmanager
def serve(path: Path, *, limits: Limits = DEFAULT_LIMITS, oracle: Any = None,
          max_streams: int = 16, node_service: bool = True) -> Iterator[Served]:
    """A server like a node's, over a gated store and a recording Node service;
    ``node_service=False`` serves the store and the oracle only (an older node)."""
    store = LocalStore(path, limits=limits)
    try:
        source = oracle if oracle is not None else Oracle(store)
        gated = GatedStore(store)
        service = RecordingService(gated, source, max_streams=max_streams)  # type: ignore[arg-type]
        extra = [oracle_registration(source)]
        if node_service:
            extra.append(service.registration())
        server, port = build_server(store, "127.0.0.1:0", extra=extra)
        server.start()
        try:
            yield Served(f"127.0.0.1:{port}", gated, service)
        finally:
            server.stop(None).wait(WAIT)
    finally:
        store.close()


def hold_first_read_then(served: Served, client: NodeClient, first: Callable[[], Any],
                         queued: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Send ``first`` (a read) and hold it in the node; queue the others behind it; release.

    The queued commands are then sent together, in the next batch.  Returns every result.
    """
    results: dict[str, Any] = {}
    served.store.hold_next = True
    threads = [start(first, results, "first")]
    assert served.store.entered.wait(WAIT)
    for name, fn in queued.items():
        threads.append(start(fn, results, name))
    wait_until(lambda: client.queued == len(queued), "the others wait for the next batch")
    served.store.release.set()
    join(threads)
    return results


# --- raw batches --------------------------------------------------------------------------


def send(channel: grpc.Channel, transport: str, request: node_pb2.BatchRequest
         ) -> node_pb2.BatchResponse:
    """One batch by Batch ("unary") or on a BatchStream of its own ("stream")."""
    if transport == "unary":
        call = channel.unary_unary(f"/{SERVICE_NAME}/Batch",
                                   request_serializer=node_pb2.BatchRequest.SerializeToString,
                                   response_deserializer=node_pb2.BatchResponse.FromString)
        reply: node_pb2.BatchResponse = call(request, timeout=WAIT)
        return reply
    stream = channel.stream_stream(f"/{SERVICE_NAME}/BatchStream",
                                   request_serializer=node_pb2.BatchRequest.SerializeToString,
                                   response_deserializer=node_pb2.BatchResponse.FromString)
    replies = list(stream(iter([request]), timeout=WAIT))
    assert len(replies) == 1
    return replies[0]


def read_command(table: bytes, row: bytes, columns: Sequence[bytes] = ()) -> node_pb2.Command:
    return node_pb2.Command(read_rows=wire.read_request_to_pb([RowRead(table, row,
                                                                       tuple(columns))]))


def mutate_command(*rows: RowMutation) -> node_pb2.Command:
    return node_pb2.Command(mutate_rows=wire.mutate_request_to_pb(rows, False))


def stamps_command(count: int) -> node_pb2.Command:
    return node_pb2.Command(get_timestamps=oracle_pb2.GetTimestampsRequest(count=count))


def must_fail(result: node_pb2.Result, code: grpc.StatusCode, error: str = "") -> None:
    assert result.WhichOneof("kind") == "error", result
    assert result.error.code == code.value[0], (result.error, code)
    assert result.error.error == error


def scan_all(store: RemoteStore, table: bytes) -> list[tuple[bytes, tuple[Cell, ...]]]:
    return [(r.row, r.cells) for r in store.scan(ScanRequest(table, None, None, (), (),
                                                              ALL_TIME, 0))]


def seed(store: RemoteStore, table: bytes) -> None:
    store.mutate_rows([RowMutation(table, b"r1", (Put(b"a", 5, b"v1"), Put(b"b", 6, b"v2"))),
                       RowMutation(table, b"r2", (Put(b"a", 7, b"v3"),)),
                       RowMutation(table, b"r4", (Put(b"c", 9, b"taken"),))])


# --- framing ------------------------------------------------------------------------------


def test_framing_matches_the_generated_code() -> None:
    reads = wire.read_request_to_pb([RowRead(b"t", b"r" * 300, (b"a",))])  # 2-byte lengths
    muts = wire.mutate_request_to_pb([RowMutation(b"t", b"r", (Put(b"c", 1, b"v"),))], False)
    stamps = oracle_pb2.GetTimestampsRequest(count=7)
    empty = node_pb2.Command()
    empty.read_rows.SetInParent()  # set, but empty
    commands = [node_pb2.Command(read_rows=reads), node_pb2.Command(mutate_rows=muts),
                node_pb2.Command(get_timestamps=stamps), empty]
    framed = b"".join(frame(COMMAND_TAGS[str(c.WhichOneof("kind"))],
                            getattr(c, str(c.WhichOneof("kind"))).SerializeToString())
                      for c in commands)
    assert framed == node_pb2.BatchRequest(commands=commands).SerializeToString()
    assert node_pb2.BatchRequest.FromString(framed).commands[3].WhichOneof("kind") == "read_rows"

    error = node_pb2.CommandError(code=3, message="m" * 200, error="LimitExceeded")
    assert frame(ERROR_TAG, error.SerializeToString()) == node_pb2.BatchResponse(
        results=[node_pb2.Result(error=error)]).SerializeToString()


# --- a batch of mixed commands ------------------------------------------------------------


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_mixed_batch_gives_what_separate_calls_give(node: Node, channel: grpc.Channel,
                                                    transport: str) -> None:
    batched, separate = new_table(), new_table()
    remote = RemoteStore(channel, timeout=WAIT)
    oracle = RemoteOracle(channel, timeout=WAIT)
    seed(remote, batched)
    seed(remote, separate)

    def commands(table: bytes) -> list[tuple[str, Any]]:
        return [
            ("read", [RowRead(table, b"r1")]),
            ("mutate", [RowMutation(table, b"r3", (Put(b"c", 10, b"new"),), (NoVersionIn(b"c"),))]),
            ("stamps", 3),
            ("read", [RowRead(table, b"r2", (b"a",)), RowRead(table, b"r6")]),
            ("mutate", [RowMutation(table, b"r4", (Put(b"c", 10, b"lost"),), (NoVersionIn(b"c"),)),
                        RowMutation(table, b"r5", (Put(b"x", 1, b"y"),))]),
            ("stamps", 1),
        ]

    before = oracle.get_timestamp()
    request = node_pb2.BatchRequest()
    for kind, arg in commands(batched):
        command = request.commands.add()
        if kind == "read":
            command.read_rows.CopyFrom(wire.read_request_to_pb(arg))
        elif kind == "mutate":
            command.mutate_rows.CopyFrom(wire.mutate_request_to_pb(arg, False))
        else:
            command.get_timestamps.count = arg
    reply = send(channel, transport, request)
    assert len(reply.results) == len(request.commands)

    ranges = []
    for (kind, arg), result in zip(commands(separate), reply.results):
        if kind == "read":
            assert wire.read_response_from_pb(result.read_rows) == remote.read_rows(arg)
        elif kind == "mutate":
            assert wire.mutate_response_from_pb(result.mutate_rows) == remote.mutate_rows(arg)
        else:
            assert result.get_timestamps.count == arg
            ranges.append(range(result.get_timestamps.first,
                                result.get_timestamps.first + arg))
    assert all(r.start > before for r in ranges), "taken after the batch arrived"
    assert not set(ranges[0]) & set(ranges[1]), "ranges of two commands overlap"
    assert scan_all(remote, batched) == scan_all(remote, separate)
    oracle.close()
    remote.close()


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_a_later_command_sees_an_earlier_ones_write_to_a_shared_row(
        channel: grpc.Channel, transport: str) -> None:
    table = new_table()
    claim = [NoVersionIn(b"c")]
    reply = send(channel, transport, node_pb2.BatchRequest(commands=[
        mutate_command(RowMutation(table, b"row", (Put(b"c", 1, b"first"),), tuple(claim))),
        mutate_command(RowMutation(table, b"row", (Put(b"c", 2, b"second"),), tuple(claim)))]))
    first, second = (wire.mutate_response_from_pb(r.mutate_rows)[0] for r in reply.results)
    assert first.applied
    assert not second.applied and second.found == Cell(b"c", 1, b"first")


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_a_bad_command_fails_alone_with_the_code_its_call_would_get(
        node: Node, channel: grpc.Channel, transport: str) -> None:
    table = new_table()
    good_read = read_command(table, b"r")
    unknown_field = node_pb2.Command()
    unknown_field.read_rows.MergeFromString(
        wire.read_request_to_pb([RowRead(table, b"r")]).SerializeToString() + b"\x78\x01")
    no_kind_condition = wire.mutate_request_to_pb(
        [RowMutation(table, b"r", (Put(b"c", 1, b"v"),))], False)
    no_kind_condition.rows[0].conditions.add()  # a condition whose kind is unset
    commands = [
        good_read,
        read_command(table, b""),                                     # empty row
        mutate_command(RowMutation(table, b"r", (Put(b"c", 1, b"v" * (4 * 1024 * 1024 + 1)),))),
        node_pb2.Command(),                                            # no kind
        stamps_command(0),
        stamps_command(MAX_COUNT + 1),
        node_pb2.Command(mutate_rows=no_kind_condition),
        unknown_field,
        mutate_command(RowMutation(table, b"r", (Put(b"c", 1, b"ok"),))),
        stamps_command(2),
    ]
    results = send(channel, transport, node_pb2.BatchRequest(commands=commands)).results
    assert wire.read_response_from_pb(results[0].read_rows) == [[]]
    must_fail(results[1], Code.INVALID_ARGUMENT, "InvalidArgument")
    must_fail(results[2], Code.INVALID_ARGUMENT, "LimitExceeded")
    must_fail(results[3], Code.INVALID_ARGUMENT, "InvalidArgument")
    must_fail(results[4], Code.INVALID_ARGUMENT, "InvalidArgument")
    must_fail(results[5], Code.INVALID_ARGUMENT, "InvalidArgument")
    must_fail(results[6], Code.INVALID_ARGUMENT, "InvalidArgument")
    must_fail(results[7], Code.INVALID_ARGUMENT, "InvalidArgument")
    assert wire.mutate_response_from_pb(results[8].mutate_rows)[0].applied
    assert results[9].get_timestamps.count == 2
    # The client raises what the call of its own would have raised.
    oversize = results[2].error
    assert type(command_error(oversize.code, oversize.message, oversize.error)) is LimitExceeded
    empty = results[1].error
    assert type(command_error(empty.code, empty.message, empty.error)) is InvalidArgument


def test_a_batch_that_does_not_parse_fails_the_call(channel: grpc.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE_NAME}/Batch")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\xff\xff\xff", timeout=WAIT)
    assert info.value.code() is Code.INVALID_ARGUMENT


def test_command_errors_map_through_the_store_and_oracle_tables() -> None:
    assert type(command_error(Code.OUT_OF_RANGE.value[0], "m", oracle=True)) is OracleExhausted
    assert type(command_error(Code.FAILED_PRECONDITION.value[0], "m", oracle=True)) \
        is OracleConflict
    assert type(command_error(Code.FAILED_PRECONDITION.value[0], "m")) is WrongTablet
    assert type(command_error(Code.UNAVAILABLE.value[0], "m", oracle=True)) is Unavailable
    assert type(command_error(Code.DATA_LOSS.value[0], "m")) is DataCorruption
    assert type(command_error(Code.INVALID_ARGUMENT.value[0], "m", "LimitExceeded")) \
        is LimitExceeded
    assert type(command_error(999, "m")) is StorageError


def test_oracle_failures_fail_only_the_timestamp_commands(tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as client:
        client.mutate_rows([RowMutation(b"t", b"r", (Put(b"c", 1, b"v"),))])
        for error, raised in ((OracleExhausted("no timestamps left"), OracleExhausted),
                              (StoreClosed("the oracle is closed"), Unavailable)):
            oracle.error = error
            results = hold_first_read_then(served, client, lambda: client.read_rows(
                [RowRead(b"t", b"r")]), {"stamp": client.get_timestamp,
                                         "read": lambda: client.read_rows([RowRead(b"t", b"r")])})
            assert served.service.batches[-1] in (["get_timestamps", "read_rows"],
                                                  ["read_rows", "get_timestamps"])
            assert type(results["stamp"]) is raised, results
            assert results["read"] == [[Cell(b"c", 1, b"v")]]
            served.store.entered.clear()
            served.store.release.clear()


# --- NodeClient ---------------------------------------------------------------------------


def test_pending_commands_of_every_kind_share_the_next_call(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as client:
        table = new_table()
        results = hold_first_read_then(served, client, lambda: client.read_rows(
            [RowRead(table, b"r")]), {
            "read": lambda: client.read_rows([RowRead(table, b"r")]),
            "mutate": lambda: client.mutate_rows([RowMutation(table, b"r", (Put(b"c", 1, b"v"),))]),
            "stamp": client.get_timestamp,
        })
        assert served.service.batches[0] == ["read_rows"]
        assert Counter(served.service.batches[1]) == Counter(
            ["read_rows", "mutate_rows", "get_timestamps"])
        assert len(served.service.batches) == 2
        assert results["first"] == [[]] and results["read"] == [[]]
        assert results["mutate"][0].applied and isinstance(results["stamp"], int)
        stats = client.batch_stats()
        assert stats["batches"] == 2 and stats["batch_mean_commands"] == 2.0
        assert stats["streams_opened"] == 1, "the batches travel on one stream"
        wait_until(lambda: served.service.open_streams == 0,
                   "an idle client's stream is closed")


def test_a_reply_too_large_to_share_a_batch_is_read_alone(tmp_path: Path) -> None:
    limits = Limits(max_message_bytes=1 << 20, max_value_bytes=700_000)
    big = b"x" * 600_000
    with serve(tmp_path / "data", limits=limits) as served, \
            NodeClient(served.address, timeout=WAIT, limits=limits) as client:
        client.mutate_rows([RowMutation(b"t", b"big1", (Put(b"c", 1, big),))])
        client.mutate_rows([RowMutation(b"t", b"big2", (Put(b"c", 1, big),))])
        # Two replies that fit alone but not together: one is refused, the other answered.
        with grpc.insecure_channel(served.address) as ch:
            reply = send(ch, "unary", node_pb2.BatchRequest(commands=[
                read_command(b"t", b"big1"), read_command(b"t", b"big2")]))
        kinds = sorted(str(r.WhichOneof("kind")) for r in reply.results)
        assert kinds == ["error", "read_rows"]
        assert [r for r in reply.results if r.WhichOneof("kind") == "error"][0].error.code \
            == Code.RESOURCE_EXHAUSTED.value[0]
        # Through the client, the refused read is re-read alone: both callers get their row.
        results = hold_first_read_then(served, client, lambda: client.read_rows(
            [RowRead(b"t", b"none")]), {
            "big1": lambda: client.read_rows([RowRead(b"t", b"big1")]),
            "big2": lambda: client.read_rows([RowRead(b"t", b"big2")]),
        })
        assert served.service.batches[-1] == ["read_rows", "read_rows"]
        assert results["big1"] == [[Cell(b"c", 1, big)]]
        assert results["big2"] == [[Cell(b"c", 1, big)]]


def test_a_node_without_the_service_is_used_through_the_per_service_path(
        tmp_path: Path) -> None:
    with serve(tmp_path / "data", node_service=False) as served, \
            NodeClient(served.address, timeout=WAIT) as client:
        first = client.get_timestamp()
        assert not client.batching
        assert client.mutate_rows([RowMutation(b"t", b"r", (Put(b"c", 1, b"v"),))])[0].applied
        assert client.read_rows([RowRead(b"t", b"r")]) == [[Cell(b"c", 1, b"v")]]
        assert client.get_timestamps(5) > first
        assert client.stats().timestamps_served == 6


def test_streams_refused_by_a_busy_node_go_by_batch(tmp_path: Path) -> None:
    with serve(tmp_path / "data", max_streams=0) as served, \
            NodeClient(served.address, timeout=WAIT) as client:
        results = hold_first_read_then(served, client, lambda: client.read_rows(
            [RowRead(b"t", b"r")]), {"stamp": client.get_timestamp})
        assert isinstance(results["stamp"], int) and results["first"] == [[]]
        assert client.batch_stats()["streams_opened"] == 1  # tried, refused, sent by Batch
        assert served.service.batches == [["read_rows"], ["get_timestamps"]]


def test_client_checks_arguments_before_any_io(node: Node) -> None:
    with NodeClient(node.address, timeout=WAIT) as client:
        with pytest.raises(InvalidArgument):
            client.read_rows([RowRead(b"t", b"")])
        with pytest.raises(LimitExceeded):
            client.mutate_rows([RowMutation(b"t", b"r", (Put(b"c", 1, b"v" * (5 << 20)),))])
        with pytest.raises(TypeError):
            client.mutate_rows([RowMutation(b"t", "r", (Put(b"c", 1, b"v"),))])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            client.get_timestamps(0)
        with pytest.raises(TypeError):
            client.get_timestamps("1")  # type: ignore[arg-type]
        assert client.batch_stats()["batches"] == 0


def test_closed_and_unreachable_clients_raise_storage_errors(node: Node) -> None:
    client = NodeClient(node.address, timeout=WAIT)
    client.close()
    with pytest.raises(StoreClosed):
        client.read_rows([RowRead(b"t", b"r")])
    with pytest.raises(StoreClosed):
        client.get_timestamp()
    with NodeClient("127.0.0.1:1", timeout=2.0) as nowhere:
        with pytest.raises(Unavailable):
            nowhere.read_rows([RowRead(b"t", b"r")])
        with pytest.raises(Unavailable):
            nowhere.mutate_rows([RowMutation(b"t", b"r", (Put(b"c", 1, b"v"),))])
        with pytest.raises(Unavailable):
            nowhere.get_timestamp()


def test_scans_tablets_and_synced_writes_go_around_the_batches(node: Node) -> None:
    table = new_table()
    with NodeClient(node.address, timeout=WAIT) as client:
        client.mutate_rows([RowMutation(table, b"r", (Put(b"c", 1, b"v"),))], sync=True)
        assert [row.row for row in client.scan(ScanRequest(table, None, None, (), (),
                                                           ALL_TIME, 0))] == [b"r"]
        assert [t.table for t in client.list_tablets(table)] == [table]
        assert client.batch_stats()["batches"] == 0


# --- timestamps and atomicity under concurrency -------------------------------------------


def test_timestamps_are_strictly_increasing_and_linearizable_across_threads(node: Node) -> None:
    """Each thread hands its timestamp to the next thread out of band; the receiver's next
    timestamp must be above it, though the two went in different batches."""
    threads, rounds = 8, 150
    inboxes: list[queue.Queue[int]] = [queue.Queue() for _ in range(threads)]
    seen: list[list[int]] = [[] for _ in range(threads)]
    failures: list[str] = []
    table = new_table()
    with NodeClient(node.address, timeout=WAIT) as client:
        def run(i: int) -> None:
            last = 0
            for n in range(rounds):
                mine = client.get_timestamp()
                if mine <= last:
                    failures.append(f"thread {i}: {mine} after {last}")
                inboxes[(i + 1) % threads].put(mine)
                token = inboxes[i].get(timeout=WAIT)
                if n % 3 == 0:  # other kinds in the same batches
                    client.mutate_rows([RowMutation(table, b"r%d" % i, (Put(b"c", n, b"v"),))])
                after = client.get_timestamp()
                if after <= token:
                    failures.append(f"thread {i}: {after} not above {token} handed over")
                seen[i] += [mine, after]
                last = after

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        join(workers)
        assert not failures, failures[:5]
        everything = [ts for s in seen for ts in s]
        assert len(set(everything)) == len(everything), "a timestamp was handed out twice"
        assert client.batch_stats()["batch_mean_commands"] > 1.0, "the threads shared batches"


def test_check_and_mutate_race_on_one_row_has_one_winner_per_round(node: Node) -> None:
    threads, rounds = 8, 30
    table = new_table()
    barrier = threading.Barrier(threads, timeout=WAIT)
    outcomes: list[list[tuple[int, MutationResult]]] = [[] for _ in range(rounds)]
    with NodeClient(node.address, timeout=WAIT) as client:
        def run(i: int) -> None:
            for r in range(rounds):
                barrier.wait()
                result = client.check_and_mutate(table, b"hot", [NoVersionIn(b"c", r, r)],
                                                  [Put(b"c", r, b"thread%d" % i)])
                outcomes[r].append((i, result))

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        join(workers)
        stored = {cell.ts: cell.value for cell in client.read_row(table, b"hot")}
        for r, outcome in enumerate(outcomes):
            winners = [i for i, result in outcome if result.applied]
            assert len(winners) == 1, (r, outcome)
            assert stored[r] == b"thread%d" % winners[0]
            for _, result in outcome:
                assert result.applied or result.found == Cell(b"c", r, stored[r])


# --- the node: wiring, health, shutdown ---------------------------------------------------


def test_client_connect_batches_unless_asked_not_to(node: Node) -> None:
    with Client.connect(node.address) as client:
        assert isinstance(client.store, NodeClient) and client.oracle is client.store
    with Client.connect(node.address, batch_commands=False) as client:
        assert isinstance(client.store, CoalescingStore)
        assert isinstance(client.oracle, RemoteOracle)


def test_node_serves_health_and_reflection_for_the_service(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=WAIT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(SERVICE_NAME)
    assert {m.name for m in service.methods} == {"Batch", "BatchStream"}


def test_node_stop_ends_a_busy_clients_stream_between_batches(tmp_path: Path) -> None:
    node = Node(tmp_path / "data", "127.0.0.1:0", max_workers=8).start()
    errors: list[Exception] = []
    served = [0]
    with NodeClient(node.address, timeout=WAIT) as client:
        def run() -> None:
            while True:
                try:
                    client.get_timestamp()
                    served[0] += 1
                except (Unavailable, StoreClosed) as exc:
                    errors.append(exc)
                    return

        workers = [threading.Thread(target=run) for _ in range(4)]
        for w in workers:
            w.start()
        wait_until(lambda: client.batch_stats()["streams_opened"] >= 1 and served[0] > 50,
                   "the client's batches travel on a stream")
        began = time.monotonic()
        node.stop(grace=WAIT)
        assert time.monotonic() - began < WAIT / 2, "stop waited out the grace period"
        join(workers)
    assert len(errors) == 4
