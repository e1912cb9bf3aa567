"""Batched commands (Node.Batch, Node.BatchStream, NodeClient): many threads' steps in one
message, the same results as separate calls, per-command errors, replies too large to
share a batch, large values, linearizable timestamps, streams and their refusal, and a
stopping node ending streams between batches.

Servers are real (127.0.0.1 port 0).  Where a test needs commands to meet in one batch,
a gate holds the node's first batch until the others are queued at the client: the
queue, not a guessed delay, is the signal.
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
    RowMutation,
    RowRead,
    ScanRequest,
    StorageError,
    StoreClosed,
    Unavailable,
    WrongTablet,
    wire,
)
from bigtable_lite._store import StoreOps
from bigtable_lite.auth import Role
from bigtable_lite.server import build_server
from percolator import Client, records
from percolator._backend import (
    LOCKED,
    CellWrite,
    CommitOutcome,
    CommitRequest,
    OnePhaseRequest,
    PrewriteRequest,
)
from percolator._backend import ScanRequest as TxnScan
from percolator._local import LocalBackend
from percolator._node_client import NodeClient
from percolator._node_codec import SERVICE_NAME, STREAM_KEY
from percolator._node_service import NodeService
from percolator._status import command_error
from percolator._transport import streams
from percolator._transport.stream_slots import REFUSED
from percolator.clock import Clock
from percolator.node import Node
from percolator.oracle import MAX_COUNT, Oracle, OracleConflict, OracleExhausted, OracleStats
from percolator.oracle_service import registration as oracle_registration
from percolator.v1 import node_pb2, oracle_pb2
from tests.percolator.steps import must_commit, must_prewrite, new_txn

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


def put(column: bytes, value: bytes) -> CellWrite:
    return CellWrite(column, records.PUT, value)


# --- servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("node") / "data", "127.0.0.1:0") as n:
        yield n


@pytest.fixture
def channel(node: Node) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.address) as ch:
        yield ch


class RecordingService(NodeService):
    """Records the kinds of the commands of every batch it executes (but the clients'
    background GC reports), and the methods called; when ``hold_next`` is set, the next
    batch waits for ``release`` first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []
        self.methods: list[str] = []
        self.hold_next = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def execute(self, request: node_pb2.BatchRequest, *, known: bool = False,
                role: Role = Role.ADMIN, caller: bytes = b"") -> bytes:
        if self.hold_next:
            self.hold_next = False
            self.entered.set()
            assert self.release.wait(WAIT)
        kinds = [str(c.WhichOneof("kind")) for c in request.commands]
        reports = kinds.count("report_snapshots")  # a client's GC reports: background
        if reports < len(kinds):
            self.batches.append([k for k in kinds if k != "report_snapshots"])
        return super().execute(request, known=known, role=role, caller=caller)

    def Batch(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        self.methods.append("Batch")
        return super().Batch(raw, context)

    def BatchStream(self, requests: Iterator[bytes], context: grpc.ServicerContext
                    ) -> Iterator[bytes]:
        self.methods.append("BatchStream")
        return super().BatchStream(requests, context)

    def kinds(self) -> list[str]:
        return [kind for batch in self.batches for kind in batch]


class FakeOracle:
    """A TimestampSource counting its calls, failing with ``error`` while it is set."""

    def __init__(self) -> None:
        self.next = 1
        self.calls = 0
        self.error: Exception | None = None

    def get_timestamp(self) -> int:
        return self.get_timestamps(1)

    def get_timestamps(self, count: int) -> int:
        self.calls += 1
        if self.error is not None:
            raise self.error
        first, self.next = self.next, self.next + count
        return first

    def timestamp_if_ready(self, wait: float) -> int | None:
        """Failing: not ready (the caller then asks ``get_timestamp``, which fails)."""
        return None if self.error is not None else self.get_timestamp()

    def peek(self) -> int:
        """The first timestamp the next request will get (the GC safe point's clock)."""
        return self.next

    def stats(self) -> OracleStats:
        return OracleStats(self.next - 1, self.calls)

    def close(self) -> None:
        pass


@dataclass
class Served:
    address: str
    store: LocalStore
    backend: LocalBackend
    service: RecordingService


@contextmanager
def serve(path: Path, *, limits: Limits = DEFAULT_LIMITS, oracle: Any = None,
          max_streams: int = 16, clock: Clock | None = None) -> Iterator[Served]:
    """A server like a node's (store, oracle, Node service) whose Node service records
    and can hold batches; ``oracle`` replaces the node's own."""
    store = LocalStore(path, limits=limits)
    try:
        source = oracle if oracle is not None else Oracle(store)
        backend = LocalBackend(store, source, clock=clock, owned=False)
        service = RecordingService(backend, max_streams=max_streams)
        server, port = build_server(store, "127.0.0.1:0", extra=[
            oracle_registration(source), service.registration()])
        server.start()
        try:
            yield Served(f"127.0.0.1:{port}", store, backend, service)
        finally:
            service.release.set()
            server.stop(None).wait(WAIT)
    finally:
        store.close()


def hold_first_then(served: Served, client: NodeClient, first: Callable[[], Any],
                    queued: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Send ``first`` and hold its batch at the node; queue the others behind it; release.

    The queued commands are then sent together, in the next batch.  Returns every result.
    The client's GC reports are stopped first: one falling due meanwhile would queue too.
    """
    client._reporter.close()
    results: dict[str, Any] = {}
    service = served.service
    service.entered.clear()
    service.release.clear()
    service.hold_next = True
    threads = [start(first, results, "first")]
    assert service.entered.wait(WAIT)
    for name, fn in queued.items():
        threads.append(start(fn, results, name))
    wait_until(lambda: client.queued == len(queued), "the others wait for the next batch")
    service.release.set()
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
        reply = call(request, timeout=WAIT)
        assert isinstance(reply, node_pb2.BatchResponse)
        return reply
    stream = channel.stream_stream(f"/{SERVICE_NAME}/BatchStream",
                                   request_serializer=node_pb2.BatchRequest.SerializeToString,
                                   response_deserializer=node_pb2.BatchResponse.FromString)
    (only,) = list(stream(iter([request]), timeout=WAIT))
    assert isinstance(only, node_pb2.BatchResponse)
    return only


def read_command(table: bytes, row: bytes, columns: Sequence[bytes] = ()) -> node_pb2.Command:
    return node_pb2.Command(read_rows=wire.read_request_to_pb([RowRead(table, row,
                                                                       tuple(columns))]))


def mutate_command(*rows: RowMutation) -> node_pb2.Command:
    return node_pb2.Command(mutate_rows=wire.mutate_request_to_pb(rows, False))


def stamps_command(count: int) -> node_pb2.Command:
    return node_pb2.Command(get_timestamps=oracle_pb2.GetTimestampsRequest(count=count))


def step_read_command(table: bytes, start_ts: int, keys: Sequence[tuple[bytes, bytes]]
                      ) -> node_pb2.Command:
    return node_pb2.Command(read=node_pb2.ReadRequest(
        table=table, start_ts=start_ts,
        rows=[node_pb2.RowColumns(row=row, columns=[column]) for row, column in keys]))


def must_fail(result: node_pb2.Result, code: grpc.StatusCode, error: str = "") -> None:
    assert result.WhichOneof("kind") == "error", result
    assert result.error.code == code.value[0], (result.error, code)
    assert result.error.error == error, result.error


def scan_all(store: Any, table: bytes) -> list[tuple[bytes, tuple[Cell, ...]]]:
    return [(r.row, r.cells) for r in store.scan(ScanRequest(table, None, None, (), (),
                                                              ALL_TIME, 0))]


def seed(store: Any, table: bytes) -> None:
    store.mutate_rows([RowMutation(table, b"r1", (Put(b"a", 5, b"v1"), Put(b"b", 6, b"v2"))),
                       RowMutation(table, b"r2", (Put(b"a", 7, b"v3"),)),
                       RowMutation(table, b"r4", (Put(b"c", 9, b"taken"),))])


def commit_values(backend: Any, table: bytes, values: dict[tuple[bytes, bytes], bytes]) -> int:
    """One transaction writing ``values``, committed in one phase; its commit_ts."""
    start_ts = backend.timestamps(1)
    parts = [(row, [put(column, value)]) for (row, column), value in sorted(values.items())]
    outcome = backend.commit_one_phase(OnePhaseRequest(table, start_ts, parts))
    assert isinstance(outcome, CommitOutcome) and outcome.committed, outcome
    return outcome.commit_ts


# --- a batch of mixed commands ------------------------------------------------------------


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_mixed_batch_gives_what_separate_calls_give(node: Node, channel: grpc.Channel,
                                                    transport: str) -> None:
    batched, separate = new_table(), new_table()
    with NodeClient(node.address, timeout=WAIT) as client:
        remote = client.store
        for table in (batched, separate):
            seed(remote, table)
            commit_values(client, table, {(b"t1", b"c"): b"one", (b"t2", b"c"): b"x" * 300})
        at = client.timestamps(1)

        def commands(table: bytes) -> list[tuple[str, Any]]:
            return [
                ("read", [RowRead(table, b"r1")]),
                ("mutate", [RowMutation(table, b"r3", (Put(b"c", 10, b"new"),),
                                        (NoVersionIn(b"c"),))]),
                ("stamps", 3),
                ("step_read", [(b"t1", b"c"), (b"t2", b"c"), (b"t3", b"c")]),
                ("read", [RowRead(table, b"r2", (b"a",)), RowRead(table, b"r6")]),
                ("mutate", [RowMutation(table, b"r4", (Put(b"c", 10, b"lost"),),
                                        (NoVersionIn(b"c"),)),
                            RowMutation(table, b"r5", (Put(b"x", 1, b"y"),))]),
                ("stamps", 1),
            ]

        before = client.timestamps(1)
        request = node_pb2.BatchRequest()
        for kind, arg in commands(batched):
            command = request.commands.add()
            if kind == "read":
                command.read_rows.CopyFrom(wire.read_request_to_pb(arg))
            elif kind == "mutate":
                command.mutate_rows.CopyFrom(wire.mutate_request_to_pb(arg, False))
            elif kind == "step_read":
                command.CopyFrom(step_read_command(batched, at, arg))
            else:
                command.get_timestamps.count = arg
        reply = send(channel, transport, request)
        assert len(reply.results) == len(request.commands)

        ranges = []
        for (kind, arg), result in zip(commands(separate), reply.results):
            if kind == "read":
                assert wire.read_response_from_pb(result.read_rows) == remote.read_rows(arg)
            elif kind == "mutate":
                assert wire.mutate_response_from_pb(result.mutate_rows) == \
                    remote.mutate_rows(arg)
            elif kind == "step_read":
                alone = client.read(separate, at, arg)
                assert result.read.start_ts == at and not result.read.locked
                assert [v.value if v.HasField("value") else None
                        for v in result.read.values] == [alone.values[k] for k in arg]
                assert [alone.values[k] for k in arg] == [b"one", b"x" * 300, None]
            else:
                assert result.get_timestamps.count == arg
                ranges.append(range(result.get_timestamps.first,
                                    result.get_timestamps.first + arg))
        assert all(r.start > before for r in ranges), "taken after the batch arrived"
        assert not set(ranges[0]) & set(ranges[1]), "ranges of two commands overlap"
        raw_rows = [r for r in scan_all(remote, batched) if r[0].startswith(b"r")]
        assert raw_rows == [r for r in scan_all(remote, separate) if r[0].startswith(b"r")]
        assert [row for row, _ in raw_rows] == [b"r1", b"r2", b"r3", b"r4", b"r5"]


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
    bad_prewrite = node_pb2.Command(prewrite=node_pb2.PrewriteRequest(
        table=table, start_ts=0, primary=node_pb2.Key(row=b"p", column=b"c"), ttl_ms=1000,
        rows=[node_pb2.RowWrites(row=b"p", cells=[node_pb2.CellWrite(column=b"c")])]))
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
        bad_prewrite,                                                  # start_ts 0
        step_read_command(table, 0, [(b"r", b"c")]),                  # a fresh read: fine
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
    must_fail(results[10], Code.INVALID_ARGUMENT, "InvalidArgument")
    assert results[11].WhichOneof("kind") == "read" and results[11].read.start_ts > 0
    # The client raises what the call of its own would have raised.
    oversize = results[2].error
    assert type(command_error(oversize.code, oversize.message, oversize.error)) is LimitExceeded
    empty = results[1].error
    assert type(command_error(empty.code, empty.message, empty.error)) is InvalidArgument
    # Only the good mutation wrote anything.
    assert scan_all(node.store, table) == [(b"r", (Cell(b"c", 1, b"ok"),))]


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_a_batch_that_does_not_parse_fails_the_call(channel: grpc.Channel,
                                                    transport: str) -> None:
    unknown = node_pb2.BatchRequest(commands=[stamps_command(1)]).SerializeToString() + \
        b"\x10\x01"  # field 2 of BatchRequest: not in this node's contract
    for raw in (b"\xff\xff\xff", unknown):
        with pytest.raises(grpc.RpcError) as info:
            if transport == "unary":
                channel.unary_unary(f"/{SERVICE_NAME}/Batch")(raw, timeout=WAIT)
            else:
                list(channel.stream_stream(f"/{SERVICE_NAME}/BatchStream")(iter([raw]),
                                                                           timeout=WAIT))
        assert info.value.code() is Code.INVALID_ARGUMENT


def test_command_errors_map_through_the_store_and_oracle_tables() -> None:
    assert type(command_error(Code.OUT_OF_RANGE.value[0], "m")) is OracleExhausted
    assert type(command_error(Code.FAILED_PRECONDITION.value[0], "m")) is OracleConflict
    # A store error sharing the oracle's code is told apart by its name.
    assert type(command_error(Code.FAILED_PRECONDITION.value[0], "m", "WrongTablet")) \
        is WrongTablet
    assert type(command_error(Code.UNAVAILABLE.value[0], "m")) is Unavailable
    assert type(command_error(Code.DATA_LOSS.value[0], "m")) is DataCorruption
    assert type(command_error(Code.INVALID_ARGUMENT.value[0], "m", "LimitExceeded")) \
        is LimitExceeded
    assert type(command_error(Code.INVALID_ARGUMENT.value[0], "m", "InvalidArgument")) \
        is InvalidArgument
    assert type(command_error(999, "m")) is StorageError


def test_oracle_failures_fail_only_the_timestamp_commands(tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as client:
        client.store.mutate_rows([RowMutation(b"t", b"r", (Put(b"c", 1, b"v"),))])
        commit_values(client, b"t", {(b"s", b"c"): b"step"})
        at = client.timestamps(1)  # above the commit, handed out
        for error, raised in ((OracleExhausted("no timestamps left"), OracleExhausted),
                              (OracleConflict("two oracles"), OracleConflict),
                              (StoreClosed("the oracle is closed"), Unavailable)):
            oracle.error = error
            results = hold_first_then(served, client, lambda: client.store.read_rows(
                [RowRead(b"t", b"r")]), {
                "stamp": client.timestamps,
                "fresh": lambda: client.read(b"t", None, [(b"s", b"c")]),
                "read": lambda: client.store.read_rows([RowRead(b"t", b"r")]),
                "step_read": lambda: client.read(b"t", at, [(b"s", b"c")])})
            assert Counter(served.service.batches[-1]) == Counter(
                ["get_timestamps", "read", "read_rows", "read"])
            assert type(results["stamp"]) is raised, results
            assert type(results["fresh"]) is raised, results
            assert results["read"] == [[Cell(b"c", 1, b"v")]]
            assert results["step_read"].values == {(b"s", b"c"): b"step"}
            oracle.error = None


# --- NodeClient: batches ---------------------------------------------------------------------


def test_pending_commands_of_every_kind_share_the_next_call(tmp_path: Path) -> None:
    """Fourteen threads, one of each command kind, wait while a batch is at the node: the
    next message carries all of them, on the stream the first batch opened."""
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as client:
        table, other = new_table(), new_table()
        ts = client.timestamps(1)
        key = (b"k", b"c")
        commit_values(client, table, {key: b"v"})
        p, c, r = (client.timestamps(1) for _ in range(3))
        for start_ts, row in ((p, b"p"), (c, b"q"), (r, b"s")):
            assert client.prewrite(PrewriteRequest(table, start_ts, (row, b"c"), 5_000,
                                                   [(row, [put(b"c", b"v")])])) is None
        at = client.timestamps(1)
        one = client.timestamps(1)
        before = len(served.service.batches)
        results = hold_first_then(served, client, client.timestamps, {
            "read": lambda: client.read(table, at, [key]),
            "scan": lambda: client.scan(TxnScan(table, at, None, None, None, False, 10)),
            "prewrite": lambda: client.prewrite(PrewriteRequest(
                table, ts, (b"n", b"c"), 5_000, [(b"n", [put(b"c", b"new")])])),
            "commit": lambda: client.commit(CommitRequest(table, c, (b"q", b"c"), [])),
            "one_phase": lambda: client.commit_one_phase(OnePhaseRequest(
                table, one, [(b"o", [put(b"c", b"one")])])),
            "resolve": lambda: client.resolve(table, p, [(b"p", b"c")]),
            "rollback": lambda: client.rollback(table, r, (b"s", b"c"), []),
            "heartbeat": lambda: client.heartbeat(table, p, (b"p", b"c"), 5_000),
            "status": lambda: client.check_txn_status(table, (b"p", b"c"), p),
            "register": lambda: client.register_observed(other, [b"obs"]),
            "observed": lambda: client.observed_columns(table),
            "read_rows": lambda: client.store.read_rows([RowRead(table, b"none")]),
            "mutate_rows": lambda: client.store.mutate_rows(
                [RowMutation(new_table(), b"r", (Put(b"c", 1, b"v"),))]),
            "stamps": lambda: client.timestamps(3),
        })
        batches = served.service.batches[before:]
        assert batches[0] == ["get_timestamps"]
        assert Counter(batches[1]) == Counter([
            "read", "scan", "prewrite", "commit", "one_phase", "resolve", "rollback",
            "heartbeat", "check_txn_status", "register_observed", "observed_columns",
            "read_rows", "mutate_rows", "get_timestamps"])
        assert len(batches) == 2
        errors = {k: v for k, v in results.items() if isinstance(v, Exception)}
        assert not errors, errors
        assert results["read"].values == {key: b"v"}
        assert results["scan"].cells == [(b"k", b"c", b"v")]
        assert results["prewrite"] is None
        assert results["commit"].committed and results["one_phase"].committed
        assert results["resolve"] == 1, "the lock's owner is alive"
        assert results["heartbeat"] is True
        assert results["status"].state == LOCKED
        assert results["observed"] == frozenset()
        assert results["read_rows"] == [[]] and results["mutate_rows"][0].applied
        stamps = results["stamps"]
        assert isinstance(stamps, int) and stamps > one
        stats = client.batch_stats()
        assert stats["streams_opened"] == 1, "the batches travel on one stream"
        assert served.service.methods == ["BatchStream"]
        wait_until(lambda: served.service.open_streams == 0,
                   "an idle client's stream is closed")


def test_timestamp_commands_of_one_batch_share_one_oracle_call(tmp_path: Path) -> None:
    """Each caller gets a contiguous range of its own, from one oracle call per MAX_COUNT
    timestamps, taken after the batch arrived."""
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as client:
        counts = {"one": 1, "five": 5, "two": 2, "most": MAX_COUNT - 8, "more": 3}
        first = client.timestamps(1)
        calls = oracle.calls
        results = hold_first_then(served, client, client.timestamps, {
            name: (lambda n=n: client.timestamps(n)) for name, n in counts.items()})
        assert served.service.batches[-1] == ["get_timestamps"] * len(counts)
        assert oracle.calls == calls + 1 + 2, "the held one, then one per MAX_COUNT"
        ranges = sorted((results[name], n) for name, n in counts.items())
        assert ranges[0][0] > results["first"] > first
        for (a, n), (b, _) in itertools.pairwise(ranges):
            assert a + n <= b, "ranges overlap"
        assert sum(n for _, n in ranges) == ranges[-1][0] + ranges[-1][1] - ranges[0][0], \
            "contiguous: nothing lost between the callers"


def test_many_threads_commands_share_messages(node: Node) -> None:
    """Eight threads running transactions: each message carries several commands."""
    table = new_table()
    with Client(NodeClient(node.address, timeout=WAIT), table=table) as client:
        def work(i: int) -> None:
            for n in range(40):
                with client.transaction() as txn:
                    txn.get(b"r%d" % i, b"c")
                    txn.set(b"r%d" % i, b"c", b"%d" % n)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        join(threads)
        assert isinstance(client.backend, NodeClient)
        stats = client.backend.batch_stats()
        reports = client.backend._reporter.reports
        # 8 threads x 40 transactions x 3 commands (start_ts, read, one-phase commit), and
        # the client's reports of its running transactions to GC (one may be in flight).
        extra = round(stats["batches"] * stats["batch_mean_commands"]) - 8 * 40 * 3
        assert extra in (reports, reports + 1), (extra, reports)
        assert stats["batch_mean_commands"] > 1.5, stats
        reader = client.begin()
        assert reader.get_many([(b"r%d" % i, b"c") for i in range(8)]) == {
            (b"r%d" % i, b"c"): b"39" for i in range(8)}


def test_a_reply_too_large_to_share_a_batch_is_read_alone(tmp_path: Path) -> None:
    limits = Limits(max_message_bytes=1 << 20, max_value_bytes=700_000)
    big = b"x" * 600_000
    with serve(tmp_path / "data", limits=limits) as served, \
            NodeClient(served.address, timeout=WAIT, limits=limits) as client:
        client.store.mutate_rows([RowMutation(b"t", b"big1", (Put(b"c", 1, big),))])
        client.store.mutate_rows([RowMutation(b"t", b"big2", (Put(b"c", 1, big),))])
        at = commit_values(client, b"t", {(b"s1", b"c"): big}) + 1
        commit_values(client, b"t", {(b"s2", b"c"): big})
        at2 = client.timestamps(1)
        # Two replies that fit alone but not together: one is refused, the other answered.
        with grpc.insecure_channel(served.address) as ch:
            for pair in ([read_command(b"t", b"big1"), read_command(b"t", b"big2")],
                         [step_read_command(b"t", at2, [(b"s1", b"c")]),
                          step_read_command(b"t", at2, [(b"s2", b"c")])]):
                reply = send(ch, "unary", node_pb2.BatchRequest(commands=pair))
                refused = [r for r in reply.results if r.WhichOneof("kind") == "error"]
                assert len(refused) == 1 and len(reply.results) == 2
                must_fail(refused[0], Code.RESOURCE_EXHAUSTED)
        # Through the client, a refused read is read again alone: every caller gets its value.
        before = len(served.service.batches)
        results = hold_first_then(served, client, lambda: client.store.read_rows(
            [RowRead(b"t", b"none")]), {
            "big1": lambda: client.store.read_rows([RowRead(b"t", b"big1")]),
            "big2": lambda: client.store.read_rows([RowRead(b"t", b"big2")]),
            "s1": lambda: client.read(b"t", at2, [(b"s1", b"c")]),
            "s2": lambda: client.read(b"t", at2, [(b"s2", b"c")]),
            "old": lambda: client.read(b"t", at, [(b"s2", b"c")]),
        })
        held, shared, *again = served.service.batches[before:]
        assert held == ["read_rows"]
        assert Counter(shared) == Counter(["read_rows", "read_rows", "read", "read", "read"])
        assert again and all(len(b) == 1 for b in again), "the refused reads went alone"
        assert results["big1"] == [[Cell(b"c", 1, big)]]
        assert results["big2"] == [[Cell(b"c", 1, big)]]
        assert results["s1"].values == {(b"s1", b"c"): big}
        assert results["s2"].values == {(b"s2", b"c"): big}
        assert results["old"].values == {(b"s2", b"c"): None}


def test_a_batch_gathers_reads_only_up_to_its_reply_budget(tmp_path: Path) -> None:
    """The budget holds while the reply is gathered: one read command of many large
    values fetches them only up to its budget (the rest is read again by the client), and
    the reads after a full reply are not run at all (their clients read them alone)."""
    limits = Limits(max_message_bytes=1 << 20, max_value_bytes=100_000)
    budget = limits.max_message_bytes // 4
    keys = [(b"r%02d" % i, b"c") for i in range(40)]
    values = {key: bytes([i]) * 90_000 for i, key in enumerate(keys)}  # 3.6 MB in all
    with serve(tmp_path / "data", limits=limits) as served, \
            NodeClient(served.address, timeout=WAIT, limits=limits) as client:
        commit_values(client, b"t", dict(list(values.items())[:10]))
        commit_values(client, b"t", dict(list(values.items())[10:20]))
        commit_values(client, b"t", dict(list(values.items())[20:30]))
        commit_values(client, b"t", dict(list(values.items())[30:]))
        at = client.timestamps(1)
        fetched: list[int] = []
        store = served.service._backend.ctx.store
        read_rows = store.read_rows

        def counting(reads: Sequence[RowRead]) -> list[list[Cell]]:
            rows = read_rows(reads)
            fetched.append(sum([len(c.value) for row in rows for c in row
                                if c.column.startswith(b"d")]))
            return rows

        store.read_rows = counting  # type: ignore[method-assign]
        result = served.service._backend.read(b"t", at, keys, budget=budget)
        assert list(result.values) == keys[:len(result.values)]  # a prefix, in request order
        assert 0 < len(result.values) < len(keys)
        assert sum(fetched) <= budget + limits.max_value_bytes, fetched
        # A batch: its reads stop once the reply holds about the message limit.
        fetched.clear()
        with grpc.insecure_channel(served.address, options=[
                ("grpc.max_receive_message_length", 4 << 20)]) as ch:
            reply = send(ch, "unary", node_pb2.BatchRequest(commands=[
                step_read_command(b"t", at, [key]) for key in keys]))
        answered = [r for r in reply.results if r.WhichOneof("kind") == "read"]
        assert 0 < len(answered) < len(keys)
        for r in reply.results:
            if r.WhichOneof("kind") != "read":
                must_fail(r, Code.RESOURCE_EXHAUSTED)
        assert sum([r.ByteSize() for r in reply.results]) <= limits.max_message_bytes
        assert sum(fetched) <= limits.max_message_bytes + limits.max_value_bytes, fetched
        store.read_rows = read_rows  # type: ignore[method-assign]
        # The client reads everything: the rest again at the same start_ts, or alone.
        assert client.read(b"t", at, keys).values == values

        def reader(key: tuple[bytes, bytes]) -> Callable[[], bytes | None]:
            return lambda: client.read(b"t", at, [key]).values[key]

        before = len(served.service.batches)
        results = hold_first_then(served, client, lambda: client.timestamps(1),
                                  {str(i): reader(key) for i, key in enumerate(keys)})
        assert [results[str(i)] for i in range(len(keys))] == list(values.values())
        _, shared, *alone = served.service.batches[before:]
        assert len(shared) == len(keys) and alone and all(len(b) == 1 for b in alone)


MIB = 1 << 20


def test_values_of_several_mib_through_remote_reads_and_scans(tmp_path: Path) -> None:
    """Eight values of 3 MiB (24 MiB, the default limits): a read's reply stops at its
    byte budget and the client reads the rest at the same start_ts; a scan's chunks are
    bounded by bytes, not only by rows."""
    big = {(b"r%d" % i, b"c"): bytes([65 + i]) * (3 * MIB) for i in range(8)}
    big[(b"r3", b"d")] = b"D" * (2 * MIB)  # a row with two large values
    with serve(tmp_path / "data") as served, \
            Client(NodeClient(served.address, timeout=WAIT), table=b"big") as client:
        with client.transaction() as txn:
            for (row, column), value in big.items():
                txn.set(row, column, value)
        reads_before = served.service.kinds().count("read")
        reader = client.begin()
        assert reader.get_many(list(big)) == big
        reads = served.service.kinds().count("read") - reads_before
        assert reads >= 2, "a reply of 26 MiB is cut at the budget and read on"
        scans_before = served.service.kinds().count("scan")
        assert {(row, column): value for row, column, value in reader.scan()} == big
        scans = served.service.kinds().count("scan") - scans_before
        assert scans >= 2, "the chunks are bounded by bytes (here all rows fit one by count)"
        assert list(reader.scan(b"r3", b"r4")) == [(b"r3", b"c", big[(b"r3", b"c")]),
                                                   (b"r3", b"d", big[(b"r3", b"d")])]


@pytest.mark.parametrize("one_phase", [True, False], ids=["one-phase", "two-phase"])
def test_a_transaction_larger_than_a_message_commits(tmp_path: Path, one_phase: bool) -> None:
    """Its writes travel in steps within the message limit (here 4 MiB): six values of
    1 MiB in six rows, and six more in one row, committed and read back."""
    limits = Limits(max_message_bytes=4 * MIB, max_value_bytes=MIB)
    values = {(b"r%d" % i, b"c"): bytes([65 + i]) * MIB for i in range(6)}
    values.update({(b"wide", b"c%d" % i): bytes([97 + i]) * MIB for i in range(6)})
    with serve(tmp_path / "data", limits=limits) as served, \
            Client(NodeClient(served.address, timeout=WAIT, limits=limits), table=b"t",
                   one_phase=one_phase) as client:
        with client.transaction() as txn:
            for (row, column), value in values.items():
                txn.set(row, column, value)
        assert served.service.kinds().count("prewrite") >= 3
        reader = client.begin()
        assert reader.get_many(list(values)) == values
        assert {(row, column): value for row, column, value in reader.scan()} == values


def test_a_row_larger_than_a_message_is_scanned(tmp_path: Path) -> None:
    """A row whose live values outgrow the message limit (here 4 MiB: six values of
    1 MiB, each committed alone): its scan chunk carries the values within the reply's
    byte budget and lists the rest, which the client reads (replies bounded) and merges."""
    limits = Limits(max_message_bytes=4 * MIB, max_value_bytes=MIB)
    values = {(b"row", b"c%d" % i): bytes([65 + i]) * MIB for i in range(6)}
    values[(b"row", b"small")] = b"s"
    values[(b"next", b"c")] = b"n" * MIB
    with serve(tmp_path / "data", limits=limits) as served, \
            Client(NodeClient(served.address, timeout=WAIT, limits=limits),
                   table=b"t") as client:
        for (row, column), value in values.items():
            with client.transaction() as txn:
                txn.set(row, column, value)
        with client.transaction() as txn:  # a deleted cell counts for nothing
            txn.delete(b"row", b"c5")
        del values[(b"row", b"c5")]
        reader = client.begin()
        kinds = len(served.service.kinds())
        assert {(row, column): value for row, column, value in reader.scan()} == values
        assert "read" in served.service.kinds()[kinds:], "the unsent cells were read"
        assert [(r, c) for r, c, _ in reader.scan(b"row")] == sorted(
            k for k in values if k[0] >= b"row")
        assert list(reader.scan(columns=[b"small"])) == [(b"row", b"small", b"s")]
    # Embedded, the same step and the same chunks.
    store = LocalStore(tmp_path / "embedded", limits=limits)
    with Client(LocalBackend(store, Oracle(store)), table=b"t") as embedded:
        with embedded.transaction() as txn:
            for (row, column), value in values.items():
                txn.set(row, column, value)
        chunk = embedded.backend.scan(TxnScan(b"t", embedded.timestamp(), None, None, None,
                                              False, 10))
        assert chunk.cells == [(b"next", b"c", b"n" * MIB)] and chunk.unread == []
        assert chunk.resume == b"next\x00", "the budget is reached: the next row waits"
        chunk = embedded.backend.scan(TxnScan(b"t", embedded.timestamp(), chunk.resume, None,
                                              None, False, 10))
        assert [(r, c) for r, c, _ in chunk.cells] == [(b"row", b"c0")]
        assert list(chunk.unread) == [(b"row", b"c%d" % i) for i in range(1, 5)] + [
            (b"row", b"small")]
        assert chunk.resume is None
        assert {(row, column): value for row, column, value in embedded.begin().scan()} == \
            values


def test_a_scan_reads_the_cells_it_settles_within_its_budget(tmp_path: Path) -> None:
    """Locks weigh nothing while a scan walks its rows, so one chunk may meet many of a
    decided transaction's locks: the cells it settles are read within what is left of
    its byte budget, the rest listed unread (six locked values of 1 MiB, a 1 MiB budget:
    once every one of them was gathered into a chunk twice the reply's budget)."""
    limits = Limits(max_message_bytes=4 * MIB, max_value_bytes=MIB)
    big = {(b"r%d" % i, b"c"): bytes([65 + i]) * MIB for i in range(6)}
    store = LocalStore(tmp_path / "embedded", limits=limits)
    with Client(LocalBackend(store, Oracle(store)), table=b"t") as embedded:
        backend = embedded.backend
        txn = new_txn(backend, b"t", {(b"a", b"c"): b"p", **big})
        must_prewrite(backend, txn)
        must_commit(backend, txn, keys=[])  # the primary only: the secondaries stay locked
        chunk = backend.scan(TxnScan(b"t", embedded.timestamp(), None, None, None, False, 10))
        assert chunk.resume is None and chunk.locked == []
        assert [(r, c) for r, c, _ in chunk.cells] == [(b"a", b"c"), (b"r0", b"c")]
        assert list(chunk.unread) == sorted(big)[1:]
        assert sum([len(v) for _, _, v in chunk.cells]) <= limits.max_message_bytes // 4 + 1
        assert {(r, c): v for r, c, v in embedded.begin().scan()} == {(b"a", b"c"): b"p",
                                                                      **big}


# --- NodeClient: streams and calls -----------------------------------------------------------


def test_a_refused_stream_says_so_before_executing_anything(tmp_path: Path) -> None:
    with serve(tmp_path / "data", max_streams=0) as served, \
            grpc.insecure_channel(served.address) as channel:
        stream = channel.stream_stream(
            f"/{SERVICE_NAME}/BatchStream",
            request_serializer=node_pb2.BatchRequest.SerializeToString,
            response_deserializer=node_pb2.BatchResponse.FromString)
        with pytest.raises(grpc.RpcError) as info:
            list(stream(iter([node_pb2.BatchRequest(commands=[stamps_command(1)])]),
                        timeout=WAIT))
        assert info.value.code() is Code.RESOURCE_EXHAUSTED
        assert (STREAM_KEY, REFUSED) in tuple(info.value.trailing_metadata() or ())
        assert streams.refused(info.value, STREAM_KEY, REFUSED)
        assert served.service.batches == [], "nothing was executed"


class ShiftedTime:
    """``time`` for the streams module: monotonic time moved on by ``offset`` (a back-off
    passes without waiting for it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


def test_streams_refused_by_a_busy_node_go_by_batch_for_a_while(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ShiftedTime()
    monkeypatch.setattr(streams, "time", clock)
    with serve(tmp_path / "data", max_streams=0) as served, \
            NodeClient(served.address, timeout=WAIT) as client:
        results = hold_first_then(served, client, client.timestamps,
                                  {"stamp": client.timestamps})
        assert isinstance(results["stamp"], int) and isinstance(results["first"], int)
        assert client.timestamps(2) > results["stamp"]
        assert client.batch_stats()["streams_opened"] == 1  # tried, refused, sent by Batch
        assert served.service.methods == ["BatchStream", "Batch", "Batch", "Batch"]
        assert served.service.batches == [["get_timestamps"]] * 3
        # Once the back-off is over, the client tries a stream again (refused again).
        clock.offset += streams.BACKOFF
        client.timestamps(1)
        assert client.batch_stats()["streams_opened"] == 2
        assert served.service.methods[4:] == ["BatchStream", "Batch"]


def test_a_client_beyond_the_nodes_streams_sends_calls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "IDLE", 4 * WAIT)  # a's stream stays open
    with serve(tmp_path / "data", max_streams=1) as served, \
            NodeClient(served.address, timeout=WAIT) as a, \
            NodeClient(served.address, timeout=WAIT) as b:
        assert a.timestamps(1) < a.timestamps(1)  # a holds the node's one stream
        assert served.service.open_streams == 1
        assert b.timestamps(1) < b.timestamps(1)  # b is refused one: calls
        assert a.timestamps(1) < a.timestamps(1)  # a's stream is unharmed
        assert a.batch_stats()["streams_opened"] == 1
        assert b.batch_stats()["streams_opened"] == 1
        assert served.service.methods == ["BatchStream", "BatchStream", "Batch", "Batch"]
        assert len(served.service.batches) == 6


# --- NodeClient: arguments, lifecycle ----------------------------------------------------------


def test_client_checks_arguments_before_any_io(node: Node) -> None:
    with NodeClient(node.address, timeout=WAIT) as client:
        with pytest.raises(InvalidArgument):
            client.store.read_rows([RowRead(b"t", b"")])
        with pytest.raises(LimitExceeded):
            client.store.mutate_rows([RowMutation(b"t", b"r", (Put(b"c", 1,
                                                                   b"v" * (5 << 20)),))])
        with pytest.raises(TypeError):
            client.store.mutate_rows([RowMutation(b"t", "r", (Put(b"c", 1, b"v"),))])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            client.timestamps(0)
        with pytest.raises(InvalidArgument):
            client.timestamps(MAX_COUNT + 1)
        with pytest.raises(TypeError):
            client.timestamps("1")  # type: ignore[arg-type]
        assert client.batch_stats()["batches"] == 0
    with pytest.raises(ValueError):
        NodeClient(node.address, timeout=0)


def test_closed_and_unreachable_clients_raise_storage_errors(node: Node) -> None:
    client = NodeClient(node.address, timeout=WAIT)
    client.close()
    client.close()  # idempotent
    with pytest.raises(StoreClosed):
        client.store.read_rows([RowRead(b"t", b"r")])
    with pytest.raises(StoreClosed):
        client.timestamps(1)
    with pytest.raises(StoreClosed):
        client.read(b"t", None, [(b"r", b"c")])
    with NodeClient("127.0.0.1:1", timeout=2.0) as nowhere:
        with pytest.raises(Unavailable):
            nowhere.store.read_rows([RowRead(b"t", b"r")])
        with pytest.raises(Unavailable):
            nowhere.store.mutate_rows([RowMutation(b"t", b"r", (Put(b"c", 1, b"v"),))])
        with pytest.raises(Unavailable):
            nowhere.timestamps(1)
        with pytest.raises(Unavailable):
            nowhere.prewrite(PrewriteRequest(b"t", 5, (b"r", b"c"), 1000,
                                             [(b"r", [put(b"c", b"v")])]))


def test_scans_tablets_and_synced_writes_go_around_the_batches(node: Node) -> None:
    table = new_table()
    with NodeClient(node.address, timeout=WAIT) as client:
        client.store.mutate_rows([RowMutation(table, b"r", (Put(b"c", 1, b"v"),))], sync=True)
        assert [row.row for row in client.store.scan(ScanRequest(table, None, None, (), (),
                                                                 ALL_TIME, 0))] == [b"r"]
        assert [t.table for t in client.store.list_tablets(table)] == [table]
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
                mine = client.timestamps(1)
                if mine <= last:
                    failures.append(f"thread {i}: {mine} after {last}")
                inboxes[(i + 1) % threads].put(mine)
                token = inboxes[i].get(timeout=WAIT)
                if n % 3 == 0:  # other kinds in the same batches
                    client.store.mutate_rows([RowMutation(table, b"r%d" % i,
                                                          (Put(b"c", n, b"v"),))])
                if n % 3 == 1:  # a fresh read takes its timestamp at the node
                    fresh = client.read(table, None, [(b"r", b"c")]).start_ts
                    if fresh <= token:
                        failures.append(f"thread {i}: fresh read at {fresh} not above"
                                        f" {token} handed over")
                after = client.timestamps(2) + 1
                if after - 1 <= token:
                    failures.append(f"thread {i}: {after - 1} not above {token} handed over")
                seen[i] += [mine, after - 1, after]
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
        store = client.store
        assert isinstance(store, StoreOps)

        def run(i: int) -> None:
            for r in range(rounds):
                barrier.wait()
                result = store.check_and_mutate(table, b"hot", [NoVersionIn(b"c", r, r)],
                                                [Put(b"c", r, b"thread%d" % i)])
                outcomes[r].append((i, result))

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        join(workers)
        stored = {cell.ts: cell.value for cell in store.read_row(table, b"hot")}
        for r, outcome in enumerate(outcomes):
            winners = [i for i, result in outcome if result.applied]
            assert len(winners) == 1, (r, outcome)
            assert stored[r] == b"thread%d" % winners[0]
            for _, result in outcome:
                assert result.applied or result.found == Cell(b"c", r, stored[r])


# --- the node: wiring, health, shutdown ---------------------------------------------------


def test_client_connect_sends_steps_to_the_node(node: Node) -> None:
    with Client.connect(node.address, table=new_table()) as client:
        assert isinstance(client.backend, NodeClient)
        with client.transaction() as txn:
            txn.set(b"r", b"c", b"v")
        assert client.begin().get(b"r", b"c") == b"v"
        assert client.backend.batch_stats()["batches"] >= 3


def test_node_serves_health_and_reflection_for_the_service(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=WAIT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(SERVICE_NAME)
    assert {m.name for m in service.methods} == {"Batch", "BatchStream", "Describe"}


@pytest.mark.parametrize("transport", ["grpc", "native"])
def test_node_stop_ends_busy_streams_between_batches(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     transport: str) -> None:
    """Clients commit while the node stops: stop does not wait out the grace period, and no
    batch is half-executed -- every commit acknowledged is stored, and every commit that
    failed left nothing (its batch was not executed: the stream or connection ended
    before it)."""
    node = Node(tmp_path / "data", "127.0.0.1:0", max_workers=10).start()
    executed: list[list[tuple[bytes, bytes]]] = []  # the rows of every batch run
    execute = node.batches.execute

    def recording(request: node_pb2.BatchRequest, *, known: bool = False,
                  role: Role = Role.ADMIN, caller: bytes = b"") -> bytes:
        reply = execute(request, known=known, role=role, caller=caller)
        executed.append([(c.one_phase.rows[0].row, c.one_phase.rows[0].cells[0].value)
                         for c in request.commands if c.WhichOneof("kind") == "one_phase"])
        return reply

    monkeypatch.setattr(node.batches, "execute", recording)
    table = b"stop"
    committed: dict[bytes, int] = {}
    failed: list[bytes] = []
    errors: list[Exception] = []
    # Two batches on the wire: one may wait on the stream behind the one executing.
    with NodeClient(node.address, timeout=WAIT, max_in_flight=2,
                    transport=transport) as client:  # type: ignore[arg-type]
        def run(i: int) -> None:
            for n in itertools.count():
                row = b"w%d-%d" % (i, n)
                try:
                    start_ts = client.timestamps(1)
                except (Unavailable, StoreClosed) as exc:
                    errors.append(exc)
                    return
                try:
                    outcome = client.commit_one_phase(OnePhaseRequest(
                        table, start_ts, [(row, [put(b"c", row)])]))
                except (Unavailable, StoreClosed) as exc:
                    failed.append(row)
                    errors.append(exc)
                    return
                assert isinstance(outcome, CommitOutcome) and outcome.committed
                committed[row] = outcome.commit_ts

        workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for w in workers:
            w.start()
        opened = "streams_opened" if transport == "grpc" else "native_connections"
        wait_until(lambda: client.batch_stats()[opened] >= 1 and len(committed) > 50,
                   f"the client's batches travel on a {transport} stream")
        began = time.monotonic()
        node.stop(grace=WAIT)
        assert time.monotonic() - began < WAIT / 2, "stop waited out the grace period"
        join(workers)
    assert len(errors) == 4
    ran = {row for batch in executed for row, _ in batch}
    assert set(committed) <= ran
    assert not ran & set(failed), "a commit reported failed was executed"
    backend = LocalBackend.open(str(tmp_path / "data"))
    try:
        keys = [(row, b"c") for row in [*committed, *failed]]
        stored = backend.read(table, None, keys).values
    finally:
        backend.close()
    assert {row for (row, _), value in stored.items() if value is not None} == set(committed)
    assert all(stored[(row, b"c")] == row for row in committed)

