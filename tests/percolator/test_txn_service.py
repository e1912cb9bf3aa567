"""The Transactions service from Python, through its contract only: over gRPC, and in TXN
frames of the node's native transport (a test taking the ``svc`` fixture runs by unary
calls, on one Stream, and in TXN frames).

Callers use ``txn_service_client`` (generated stubs and grpcio-status, none of the native
client's protocol code); the native client (``Client.connect``) writes beside them and
checks what they did.  Nodes are real, on 127.0.0.1 port 0, in-process (with a fake clock
where TTLs must pass); crash tests are in test_txn_service_crash.py.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bigtable_lite import ScanRequest
from percolator import Client, failpoints
from percolator._backend import CellWrite, PrewriteRequest
from percolator._sessions import MAX_TABLES
from percolator.clock import FakeClock
from percolator.node import Node
from percolator.records import PUT
from percolator.v1 import node_pb2
from percolator.v1 import transactions_pb2 as pb
from tests.bigtable_lite.test_log_sync import HeldPass

from .txn_service_client import REPLY, TXN, NativeFrames, ServiceClient, ServiceError

OK_CELL = (b"a", b"c")


@pytest.fixture(autouse=True)
def _no_failpoints() -> Iterator[None]:
    failpoints.reset()
    yield
    failpoints.reset()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with Node(tmp_path / "node", "127.0.0.1:0", txn_lock_wait=0.3) as n:
        yield n


@pytest.fixture(params=["unary", "stream", "native"])
def svc(node: Node, request: pytest.FixtureRequest) -> Iterator[ServiceClient]:
    """A caller of the unary methods, of the same calls on one Stream, or in TXN frames of
    the native transport."""
    with ServiceClient(node.address, timeout=30, stream=request.param == "stream",
                       native=request.param == "native") as client:
        yield client


@pytest.fixture
def native(node: Node) -> Iterator[Client]:
    with Client.connect(node.address) as client:
        yield client


def must_fail(code: grpc.StatusCode, fn: object, *args: object) -> ServiceError:
    assert callable(fn)
    with pytest.raises(ServiceError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    return info.value


# --- reads at a snapshot ----------------------------------------------------------------------


def test_begin_reads_at_a_snapshot_that_later_commits_do_not_change(
        svc: ServiceClient, native: Client) -> None:
    with native.transaction() as t:
        t.set(b"r1", b"c", b"old")
    txn = svc.begin([(b"r1", b"c"), (b"r2", b"c")])
    assert txn.values == {(b"r1", b"c"): b"old", (b"r2", b"c"): None}
    with native.transaction() as t:
        t.set(b"r1", b"c", b"new")
        t.set(b"r2", b"c", b"new")
    assert txn.get(b"r1", b"c") == b"old"
    assert txn.batch_get([(b"r2", b"c"), (b"r1", b"c")]) == {(b"r2", b"c"): None,
                                                             (b"r1", b"c"): b"old"}
    assert list(txn.scan()) == [(b"r1", b"c", b"old")]
    assert svc.begin([(b"r1", b"c")]).values == {(b"r1", b"c"): b"new"}


def test_a_read_only_begin_reads_at_a_snapshot_and_ends_in_one_call(
        svc: ServiceClient, node: Node, native: Client) -> None:
    with native.transaction() as t:
        t.set(b"r1", b"c", b"v1")
    before = native.backend.timestamps(1)
    once = svc.begin([(b"r1", b"c"), (b"r2", b"c")], read_only=True)
    assert once.values == {(b"r1", b"c"): b"v1", (b"r2", b"c"): None}
    assert once.txn_id > before  # a fresh snapshot
    assert node.transactions.sessions.open == 0 and len(node.backend.snapshots) == 0
    must_fail(grpc.StatusCode.NOT_FOUND, once.get, b"r1", b"c")  # nothing held
    once.set(b"r1", b"c", b"late")
    must_fail(grpc.StatusCode.NOT_FOUND, once.commit)  # and it can never write
    assert native.begin().get(b"r1", b"c") == b"v1"
    err = must_fail(grpc.StatusCode.INVALID_ARGUMENT, svc.call, "Begin", pb.TxnBeginRequest(
        read_only=True, reads=[node_pb2.Key(row=b"", column=b"c")]))
    assert err.details
    assert node.transactions.sessions.open == 0


def test_scan_pages_resume_after_the_last_cell_in_and_across_rows(
        svc: ServiceClient, native: Client) -> None:
    cells = {(b"row%02d" % r, b"col%02d" % c): b"%d.%d" % (r, c)
             for r in range(7) for c in range(5)}
    with native.transaction() as t:
        for (row, column), value in cells.items():
            t.set(row, column, value)
        t.set(b"zzz", b"col00", b"outside")
    txn = svc.begin()
    for page in (1, 3, 5, 7, 1000):
        got = list(txn.scan(b"row00", b"row99", page=page))
        assert got == [(r, c, v) for (r, c), v in sorted(cells.items())], page
    assert list(txn.scan(b"row03", b"row05", [b"col01"], page=1)) == [
        (b"row03", b"col01", b"3.1"), (b"row04", b"col01", b"4.1")]


def test_a_reader_settles_an_orphaned_lock_once_its_ttl_passed(tmp_path: Path) -> None:
    """A crashed writer's lock does not block the service's readers past its TTL: the node
    rolls it back (issue 17: a foreign client got stuck on the first orphaned lock)."""
    clock = FakeClock()
    with Node(tmp_path / "n", "127.0.0.1:0", clock=clock) as node, \
            Client.connect(node.address) as native, ServiceClient(node.address) as svc:
        with native.transaction() as t:
            t.set(b"acct", b"bal", b"10")
        start_ts = native.timestamp()
        assert native.backend.prewrite(PrewriteRequest(
            native.table, start_ts, (b"acct", b"bal"), 2_000,
            [(b"acct", [CellWrite(b"bal", PUT, b"99")])])) is None  # then the writer "crashes"
        clock.advance(2.5)
        txn = svc.begin([(b"acct", b"bal")])
        assert txn.values == {(b"acct", b"bal"): b"10"}
        txn.set(b"acct", b"bal", b"11")
        assert txn.commit() > start_ts
        assert native.begin().get(b"acct", b"bal") == b"11"


def test_a_read_waits_for_a_live_lock_a_bounded_time_then_answers_unavailable(
        svc: ServiceClient, native: Client, node: Node) -> None:
    start_ts = native.timestamp()
    assert native.backend.prewrite(PrewriteRequest(
        native.table, start_ts, (b"k", b"c"), 60_000,
        [(b"k", [CellWrite(b"c", PUT, b"v")])])) is None
    txn = svc.begin()
    err = must_fail(grpc.StatusCode.UNAVAILABLE, txn.get, b"k", b"c")
    assert err.conflict is not None
    assert (err.conflict.reason, err.conflict.row, err.conflict.column,
            err.conflict.lock_start_ts) == (node_pb2.Conflict.LOCKED, b"k", b"c", start_ts)
    must_fail(grpc.StatusCode.UNAVAILABLE, svc.begin, [(b"k", b"c")])
    native.backend.rollback(native.table, start_ts, (b"k", b"c"), [])
    assert txn.get(b"k", b"c") is None  # the same transaction reads on after the retry


# --- commit -------------------------------------------------------------------------------------


def test_a_write_conflict_is_aborted_with_the_cell_in_the_status_details(
        svc: ServiceClient, native: Client) -> None:
    txn = svc.begin([(b"x", b"c")])
    with native.transaction() as t:
        t.set(b"x", b"c", b"theirs")
    txn.set(b"a", b"c", b"mine")
    txn.set(b"x", b"c", b"mine")
    err = must_fail(grpc.StatusCode.ABORTED, txn.commit)
    assert err.conflict is not None
    assert (err.conflict.reason, err.conflict.row, err.conflict.column) == (
        node_pb2.Conflict.WRITE_CONFLICT, b"x", b"c")
    assert err.conflict.commit_ts > txn.txn_id
    check = native.begin()
    assert (check.get(b"x", b"c"), check.get(b"a", b"c")) == (b"theirs", None)
    # the same Commit again is answered with the same conflict, not tried again
    err2 = must_fail(grpc.StatusCode.ABORTED, txn.commit)
    assert err2.conflict == err.conflict


def test_a_commit_retried_is_answered_by_the_first_and_never_commits_twice(
        svc: ServiceClient, native: Client) -> None:
    txn = svc.begin()
    txn.set(b"a", b"c", b"1")
    txn.delete(b"b", b"c")
    first = txn.commit()
    assert txn.commit() == first
    # a retry with its cells in another order is the same write set
    request = txn.commit_request()
    request.writes.reverse()
    reply = svc.call("Commit", request)
    assert isinstance(reply, pb.TxnCommitResponse) and reply.commit_ts == first
    txn.set(b"a", b"c", b"2")
    must_fail(grpc.StatusCode.FAILED_PRECONDITION, txn.commit)
    must_fail(grpc.StatusCode.FAILED_PRECONDITION, txn.rollback)
    must_fail(grpc.StatusCode.FAILED_PRECONDITION, txn.get, b"a", b"c")
    assert native.begin().get(b"a", b"c") == b"1"
    # exactly one write record: nothing between the snapshot below the commit and it
    assert native.backend.read(native.table, first - 1, [(b"a", b"c")]).values == {
        (b"a", b"c"): None}


def test_concurrent_duplicate_commits_commit_once(svc: ServiceClient, native: Client,
                                                  node: Node) -> None:
    with native.transaction() as t:
        t.set(b"ctr", b"n", b"0")
    txn = svc.begin([(b"ctr", b"n")])
    txn.set(b"ctr", b"n", b"1")
    results: list[int] = []
    errors: list[BaseException] = []

    def commit() -> None:  # each thread its own caller (a stream belongs to one thread)
        try:
            with ServiceClient(node.address, stream=svc.stream) as caller:
                reply = caller.call("Commit", txn.commit_request())
                assert isinstance(reply, pb.TxnCommitResponse)
                results.append(reply.commit_ts)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=commit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 6 and len(set(results)) == 1, (results, errors)


def test_rollback_ends_a_transaction_and_is_idempotent(svc: ServiceClient, node: Node) -> None:
    txn = svc.begin()
    assert len(node.backend.snapshots) == 1
    txn.rollback()
    txn.rollback()
    assert len(node.backend.snapshots) == 0
    txn.set(b"a", b"c", b"1")
    must_fail(grpc.StatusCode.FAILED_PRECONDITION, txn.commit)
    assert node.transactions.sessions.open == 0


def test_read_only_and_notify_only_commits(svc: ServiceClient) -> None:
    txn = svc.begin([OK_CELL])
    assert txn.commit() == txn.txn_id
    txn = svc.begin()
    txn.notify(b"a", b"c")
    assert txn.commit() > txn.txn_id


# --- expiry ------------------------------------------------------------------------------------


def test_an_abandoned_transaction_expires_frees_its_pin_and_can_never_commit(
        tmp_path: Path) -> None:
    clock = FakeClock()
    with Node(tmp_path / "n", "127.0.0.1:0", clock=clock) as node, \
            ServiceClient(node.address) as svc, Client.connect(node.address) as native:
        sessions = node.transactions.sessions
        idle = svc.begin(ttl_ms=1_000)
        busy = svc.begin(ttl_ms=1_000)
        assert sessions.open == 2 and len(node.backend.snapshots) == 2
        clock.advance(0.6)
        busy.get(b"a", b"c")  # a call starts its TTL again
        clock.advance(0.6)
        assert sessions.sweep() == 1
        assert sessions.open == 1 and node.backend.snapshots.oldest() == busy.txn_id
        must_fail(grpc.StatusCode.NOT_FOUND, idle.get, b"a", b"c")
        idle.set(b"late", b"c", b"1")
        must_fail(grpc.StatusCode.NOT_FOUND, idle.commit)
        assert native.begin().get(b"late", b"c") is None
        clock.advance(1.1)  # found expired by the call itself, before any sweep
        must_fail(grpc.StatusCode.NOT_FOUND, busy.get, b"a", b"c")
        assert sessions.open == 0 and len(node.backend.snapshots) == 0


def test_a_finished_transactions_outcome_is_forgotten_after_it_is_kept(tmp_path: Path) -> None:
    """Past the retention a retry is answered from the data: the commit it made."""
    clock = FakeClock()
    with Node(tmp_path / "n", "127.0.0.1:0", clock=clock) as node, \
            ServiceClient(node.address) as svc:
        txn = svc.begin()
        txn.set(b"a", b"c", b"1")
        txn.set(b"b", b"c", b"1")
        commit_ts = txn.commit()
        clock.advance(node.transactions.sessions.retain_ms / 1000 + 1)
        assert node.transactions.sessions.sweep() == 1
        assert txn.commit() == commit_ts
        must_fail(grpc.StatusCode.NOT_FOUND, txn.rollback)


# --- limits and bad input ----------------------------------------------------------------------


def test_bad_input_is_invalid_argument_and_leaves_the_transaction_open(
        svc: ServiceClient, native: Client) -> None:
    txn = svc.begin()
    for writes in ([pb.TxnWrite(row=b"", column=b"c", value=b"v")],
                   [pb.TxnWrite(row=b"r", column=b"", value=b"v")],
                   [pb.TxnWrite(row=b"r", column=b"\x00sys", value=b"v")],
                   [pb.TxnWrite(row=b"r", column=b"c", value=b"v"),
                    pb.TxnWrite(row=b"r", column=b"c", delete=True)],
                   [pb.TxnWrite(row=b"r", column=b"c", value=b"v", delete=True)],
                   [pb.TxnWrite(row=b"r" * 5000, column=b"c", value=b"v")]):
        err = must_fail(grpc.StatusCode.INVALID_ARGUMENT, svc.call, "Commit",
                        pb.TxnCommitRequest(txn_id=txn.txn_id, writes=[
                            pb.TxnWrite(row=b"ok", column=b"c", value=b"v"), *writes]))
        assert err.details
    must_fail(grpc.StatusCode.INVALID_ARGUMENT, txn.get, b"", b"c")
    must_fail(grpc.StatusCode.INVALID_ARGUMENT, txn.get, b"r", b"\x00sys")
    must_fail(grpc.StatusCode.INVALID_ARGUMENT, svc.call, "Get", pb.TxnGetRequest(row=b"r",
                                                                                  column=b"c"))
    err = must_fail(grpc.StatusCode.INVALID_ARGUMENT, txn.batch_get,
                    [(b"r%d" % i, b"c") for i in range(1001)])
    assert err.trailers.get("bigtable-lite-error") == "LimitExceeded"
    must_fail(grpc.StatusCode.INVALID_ARGUMENT, svc.call, "Begin",
              pb.TxnBeginRequest(ttl_ms=3_600_001))
    must_fail(grpc.StatusCode.INVALID_ARGUMENT, svc.call, "Scan",
              pb.TxnScanRequest(txn_id=txn.txn_id, limit=1001))
    must_fail(grpc.StatusCode.INVALID_ARGUMENT, svc.call, "Scan",
              pb.TxnScanRequest(txn_id=txn.txn_id, start_row=b"b", end_row=b"a"))
    # a field this node does not know (a newer contract?) is refused, not half-understood
    unknown = pb.TxnGetRequest(txn_id=txn.txn_id, row=b"r", column=b"c").SerializeToString()
    raw = svc.channel.unary_unary("/percolator.v1.Transactions/Get")
    with pytest.raises(grpc.RpcError) as info:
        raw(unknown + b"\xf8\x01\x01", timeout=30)  # field 31, varint 1
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff", timeout=30)  # not a message at all
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    # after all that the transaction is still open and commits what it is given
    txn.set(b"ok", b"c", b"v")
    assert txn.commit() > txn.txn_id
    assert native.begin().get(b"ok", b"c") == b"v"
    assert native.begin().get(b"r", b"c") is None


def test_too_many_open_transactions_is_resource_exhausted(tmp_path: Path) -> None:
    with Node(tmp_path / "n", "127.0.0.1:0", max_transactions=2) as node, \
            ServiceClient(node.address) as svc:
        first = svc.begin()
        svc.begin()
        must_fail(grpc.StatusCode.RESOURCE_EXHAUSTED, svc.begin)
        first.rollback()
        svc.begin()


def test_unknown_transaction_ids_are_not_found(svc: ServiceClient) -> None:
    for method, request in (("Get", pb.TxnGetRequest(txn_id=999, row=b"r", column=b"c")),
                            ("Rollback", pb.TxnRollbackRequest(txn_id=999)),
                            ("Commit", pb.TxnCommitRequest(txn_id=999)),
                            ("Commit", pb.TxnCommitRequest(txn_id=2**63, writes=[
                                pb.TxnWrite(row=b"r", column=b"c", value=b"v")]))):
        must_fail(grpc.StatusCode.NOT_FOUND, svc.call, method, request)


# --- discovery ---------------------------------------------------------------------------------


def test_reflection_serves_the_service_with_its_comments_and_health_says_serving(
        node: Node) -> None:
    """A reflection client (grpcurl, Postman, ...) finds the service and its contract's
    comments: they come from the descriptors with source info, not the Python modules."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(node.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"percolator.v1.Transactions", "percolator.v1.Node",
                "percolator.v1.TimestampOracle", "bigtable_lite.v1.TabletService"} <= services
        proto = database.FindFileContainingSymbol("percolator.v1.Transactions")
        assert proto.name == "percolator/v1/transactions.proto"
        comments = {location.leading_comments.strip()
                    for location in proto.source_code_info.location}
        assert any(c.startswith("Begins a transaction: a snapshot") for c in comments)
        assert any("Idempotent: a Commit retried with the same txn_id" in c for c in comments)
        # its imports come with comments too, and every message resolves
        node_proto = database.FindFileByName("percolator/v1/node.proto")
        assert any("Why a prewrite or a one-phase commit wrote nothing" in
                   location.leading_comments for location in node_proto.source_code_info.location)
        for method in ("Begin", "Get", "BatchGet", "Scan", "Commit", "Rollback"):
            assert database.FindFileContainingSymbol(f"percolator.v1.Transactions.{method}")
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="percolator.v1.Transactions"),
                             timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- the stream -------------------------------------------------------------------------------


def test_a_stream_answers_in_order_survives_bad_requests_and_is_admitted_up_to_its_limit(
        tmp_path: Path) -> None:
    with Node(tmp_path / "n", "127.0.0.1:0", max_workers=10) as node, \
            grpc.insecure_channel(node.address) as channel:  # one stream slot (stream_shares)
        raw = channel.stream_stream("/percolator.v1.Transactions/Stream")
        sent: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        replies = raw(iter(sent.get, None), timeout=60)

        def ask(request: bytes) -> pb.TxnStreamResponse:
            sent.put(request)
            return pb.TxnStreamResponse.FromString(next(replies))

        invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert ask(b"\xff\xff").error.code == invalid  # no request at all: fails alone
        assert ask(b"").error.code == invalid  # no call set
        begun = ask(pb.TxnStreamRequest(begin=pb.TxnBeginRequest()).SerializeToString()).begin
        put = pb.TxnWrite(row=b"s", column=b"c", value=b"1")
        committed = ask(pb.TxnStreamRequest(commit=pb.TxnCommitRequest(
            txn_id=begun.txn_id, writes=[put])).SerializeToString()).commit
        assert committed.commit_ts > begun.txn_id
        bad = ask(pb.TxnStreamRequest(get=pb.TxnGetRequest(
            txn_id=begun.txn_id, row=b"s", column=b"c")).SerializeToString()).error
        assert bad.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and bad.message
        # the only slot is taken: another caller is refused, and falls back to calls
        with ServiceClient(node.address, stream=True) as second:
            assert second.begin([(b"s", b"c")]).values == {(b"s", b"c"): b"1"}
            assert second.stream is False
        sent.put(None)
        assert list(replies) == []


def test_a_stopping_node_ends_native_connections_between_requests(tmp_path: Path) -> None:
    """Native TXN frames end as batches do: a node stopping answers its idle connections
    CLOSE UNAVAILABLE, so a request sent after it was not executed (send it again)."""
    node = Node(tmp_path / "n", "127.0.0.1:0").start()
    try:
        svc = ServiceClient(node.address, timeout=30, native=True)
        txn = svc.begin([OK_CELL])
        assert node.native is not None and node.native.open_connections == 1
    finally:
        node.stop()
    txn.set(*OK_CELL, b"after the stop")
    with pytest.raises((ServiceError, OSError)) as info:
        txn.commit()
    if isinstance(info.value, ServiceError):  # else the socket was already gone
        assert info.value.code == grpc.StatusCode.UNAVAILABLE, info.value
    svc.close()
    with Node(tmp_path / "n", "127.0.0.1:0") as again, Client.connect(again.address) as check:
        assert check.begin().get(*OK_CELL) is None


def test_native_frames_that_are_no_request_fail_alone(node: Node) -> None:
    """A TXN frame whose payload is no request, or names a field this node does not know,
    is answered INVALID_ARGUMENT like a Stream message, and the connection goes on."""
    assert node.native is not None
    frames = NativeFrames("127.0.0.1", node.native.port, 30)
    try:
        invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        begin = pb.TxnStreamRequest(begin=pb.TxnBeginRequest()).SerializeToString()
        for payload in (b"\xff\xff", b"", begin + b"\xf8\x01\x01"):
            kind, reply = frames.exchange(TXN, payload)
            assert kind == REPLY
            assert pb.TxnStreamResponse.FromString(reply).error.code == invalid, payload
        kind, reply = frames.exchange(TXN, begin)
        assert kind == REPLY and pb.TxnStreamResponse.FromString(reply).begin.txn_id > 0
    finally:
        frames.close()


@pytest.mark.parametrize("fsync_fails", [False, True])
def test_an_error_that_reveals_a_deferred_commit_waits_for_its_fsync(
        tmp_path: Path, fsync_fails: bool) -> None:
    """Under ``--sync always`` a commit on the native loop is answered once fsynced; an
    error of another call that reveals it ("transaction N is committed") waits for the
    same fsync, and is UNAVAILABLE if the fsync failed, as a reply would be."""
    with Node(tmp_path / "node", "127.0.0.1:0", sync="always", native_listen=None,
              gc_interval=None) as node, ServiceClient(node.address, timeout=30) as svc:
        log_sync = node.store.engine.log_sync
        assert log_sync is not None
        txn = svc.begin()
        held = HeldPass(fail=fsync_fails)
        log_sync.before_fsync = held
        log_sync.defer_here()  # this thread plays the native loop: its commit is deferred
        try:
            node.transactions.sessions.commit(txn.txn_id, b"", [((b"a", b"c"), b"1")], [])
        finally:
            log_sync.stop_deferring()
        answered: queue.Queue[ServiceError | None] = queue.Queue()

        def rollback() -> None:
            try:
                txn.rollback()
                answered.put(None)
            except ServiceError as exc:
                answered.put(exc)

        thread = threading.Thread(target=rollback)
        thread.start()
        assert held.entered.wait(30), "the error was answered without a pass"
        assert answered.empty(), "the commit was revealed before it was durable"
        held.go.set()
        thread.join(30)
        error = answered.get(timeout=30)
        assert error is not None
        if fsync_fails:
            assert error.code == grpc.StatusCode.UNAVAILABLE, error
        else:
            assert error.code == grpc.StatusCode.FAILED_PRECONDITION, error
            assert "committed" in str(error) and log_sync.pending() == 0


def test_a_commit_of_an_id_no_longer_held_checks_its_cells_first(
        svc: ServiceClient, node: Node) -> None:
    """An id the node does not hold is answered from the data, which may write a
    rollback record at the primary's cell: bad cells are refused INVALID_ARGUMENT first,
    as a held transaction's are, and nothing is written."""
    gone = svc.begin(read_only=True).txn_id  # ended in its call: not held
    too_long = b"r" * (node.backend.limits.max_row_bytes + 1)
    for row, column in ((b"", b"c"), (b"r", b"\x00ack"), (too_long, b"c")):
        must_fail(grpc.StatusCode.INVALID_ARGUMENT, svc.call, "Commit", pb.TxnCommitRequest(
            txn_id=gone, writes=[pb.TxnWrite(row=row, column=column, value=b"v")]))
    must_fail(grpc.StatusCode.INVALID_ARGUMENT, svc.call, "Commit", pb.TxnCommitRequest(
        txn_id=gone, writes=[pb.TxnWrite(row=b"r", column=b"c", value=b"v")],
        notify=[node_pb2.Key(row=b"", column=b"c")]))
    assert list(node.store.scan(ScanRequest(b"percolator"))) == []


def test_tables_of_ended_transactions_leave_room_for_others(svc: ServiceClient) -> None:
    """Any caller may name tables; the node keeps transactions' state for MAX_TABLES at
    once, and one nobody uses gives way to a new one (else junk names used once would
    refuse every later table until a restart)."""
    for i in range(MAX_TABLES + 3):
        svc.begin([(b"r", b"c")], table=b"junk%d" % i, read_only=True)
    txn = svc.begin([(b"r", b"c")])  # the default table, never used before
    txn.set(b"r", b"c", b"1")
    assert txn.commit() > txn.txn_id
    held = [svc.begin(table=b"held%d" % i) for i in range(MAX_TABLES)]
    err = must_fail(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: svc.begin(table=b"one-more"))
    assert f"{MAX_TABLES} tables" in str(err)
    held[0].rollback()  # its table is in use by nobody now
    svc.begin(table=b"one-more").rollback()
    for txn in held[1:]:
        txn.rollback()
