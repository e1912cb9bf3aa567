"""The gRPC server: health, reflection, status codes, and hostile input on the port.

Hostile input is sent below RemoteStore (raw bytes through a grpc channel, raw bytes on
a TCP socket); after each attack the server must still answer and the stored data must
be exactly what it was.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from bigtable_lite import (
    Cell,
    DataCorruption,
    LimitExceeded,
    Limits,
    Put,
    RemoteStore,
    ReplyTooLarge,
    Row,
    RowMutation,
    RowRead,
    StorageError,
    StoreClosed,
    Unavailable,
)
from bigtable_lite._service import SERVICE_NAME
from bigtable_lite.server import (
    ServerPolicy,
    ServiceRegistration,
    build_server,
    set_not_serving,
    stop_server,
)
from bigtable_lite.status import ERROR_KEY
from bigtable_lite.v1 import tablet_pb2 as pb

from .conftest import CALL_TIMEOUT, Served, serve, shutdown

T = b"t"
Code = grpc.StatusCode
SEED = 20261127
METHODS = ["ReadRows", "MutateRows", "ListTablets", "SplitTablet"]
STREAMING = ["Scan", "ReadRowsStream"]


@pytest.fixture
def channel(served: Served) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.address) as ch:
        yield ch


@pytest.fixture
def seeded(served: Served) -> list[Row]:
    """Some stored rows; tests compare against them after an attack."""
    served.store.mutate_rows([RowMutation(T, b"r%03d" % i, (Put(b"c", 7, b"v%d" % i),))
                              for i in range(50)])
    return snapshot(served)


def snapshot(served: Served) -> list[Row]:
    return [row for t in served.store.list_tablets() for row in served.store.scan_rows(t.table)]


def raw_unary(channel: grpc.Channel, method: str, data: bytes) -> tuple[grpc.StatusCode, bytes]:
    """Call a TabletService method with raw request bytes; return (code, raw reply or b"")."""
    call = channel.unary_unary(f"/{SERVICE_NAME}/{method}", request_serializer=None,
                               response_deserializer=None)
    try:
        return Code.OK, call(data, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code(), b""


def assert_still_serving(served: Served, rows: list[Row]) -> None:
    with served.remote() as remote:
        assert remote.get(T, b"r000", b"c") == Cell(b"c", 7, b"v0")
    assert snapshot(served) == rows


# --- health and reflection --------------------------------------------------------------


def health_of(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    status: int = stub.Check(health_pb2.HealthCheckRequest(service=service),
                             timeout=CALL_TIMEOUT).status
    return status


def test_health_reports_serving_then_not_serving(served: Served, channel: grpc.Channel) -> None:
    for service in ("", SERVICE_NAME):
        assert health_of(channel, service) == health_pb2.HealthCheckResponse.SERVING
    set_not_serving(served.server)
    for service in ("", SERVICE_NAME):
        assert health_of(channel, service) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        health_of(channel, "no.such.Service")
    assert info.value.code() is Code.NOT_FOUND


def test_reflection_describes_the_service(channel: grpc.Channel) -> None:
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {SERVICE_NAME, "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services
    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName(SERVICE_NAME)
    assert {m.name for m in service.methods} == {"ReadRows", "ReadRowsStream", "Scan",
                                                 "MutateRows", "ListTablets", "SplitTablet",
                                                 "CompactTable"}
    assert pool.FindMessageTypeByName("bigtable_lite.v1.RowMutation").fields_by_name["row"]


def test_extra_services_are_hosted_health_checked_and_listed(tmp_path: Path) -> None:
    name = "test.v1.Echo"

    def add(server: grpc.Server) -> None:
        handlers = {"Call": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req[::-1])}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)

    from bigtable_lite import LocalStore

    with LocalStore(tmp_path) as store:
        server, port = build_server(store, "127.0.0.1:0", extra=[ServiceRegistration(name, add)])
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                assert ch.unary_unary(f"/{name}/Call")(b"abc", timeout=CALL_TIMEOUT) == b"cba"
                assert health_of(ch, name) == health_pb2.HealthCheckResponse.SERVING
                assert name in set(ProtoReflectionDescriptorDatabase(ch).get_services())
        finally:
            stop_server(server, grace=1.0)


# --- binding ----------------------------------------------------------------------------


def test_busy_port_is_a_clear_error(served: Served) -> None:
    with pytest.raises(OSError, match=f"cannot listen on {served.address}: Address already in"
                       " use"):
        build_server(served.store, served.address)


@pytest.mark.parametrize(("listen", "reason"), [
    ("999.1.1.1:70", "cannot resolve host '999.1.1.1'"),
    ("192.0.2.1:7070", "not an address of this machine"),  # TEST-NET-1: never local
])
def test_an_address_that_cannot_be_bound_says_why(served: Served, listen: str,
                                                  reason: str) -> None:
    with pytest.raises(OSError, match=f"cannot listen on {listen}: .*{reason}"):
        build_server(served.store, listen, policy=ServerPolicy(insecure=True))


@pytest.mark.parametrize("listen", ["", "localhost", "127.0.0.1:http", "127.0.0.1:70000", ":80"])
def test_malformed_listen_address(served: Served, listen: str) -> None:
    with pytest.raises(ValueError):
        build_server(served.store, listen)


# --- status codes -----------------------------------------------------------------------


def test_bad_input_gets_invalid_argument(served: Served, channel: grpc.Channel,
                                         seeded: list[Row]) -> None:
    empty_row = pb.MutateRowsRequest(rows=[pb.RowMutation(
        table=T, row=b"", mutations=[pb.Mutation(put=pb.Put(column=b"c", ts=1, value=b"v"))])])
    inverted = pb.ReadRowsRequest(reads=[pb.RowRead(table=T, row=b"r",
                                                    time_range=pb.TimeRange(min_ts=5, max_ts=4))])
    no_kind = pb.MutateRowsRequest(rows=[pb.RowMutation(table=T, row=b"r",
                                                        mutations=[pb.Mutation()])])
    good_then_bad = pb.MutateRowsRequest(rows=[  # validation precedes every write
        pb.RowMutation(table=T, row=b"new", mutations=[pb.Mutation(put=pb.Put(column=b"c"))]),
        pb.RowMutation(table=T, row=b"new2", mutations=[pb.Mutation(
            put=pb.Put(column=b"c" * 5000))])])
    cases: list[tuple[str, Message]] = [("MutateRows", empty_row), ("ReadRows", inverted),
                                        ("MutateRows", no_kind), ("MutateRows", good_then_bad),
                                        ("SplitTablet", pb.SplitTabletRequest())]
    for method, msg in cases:
        assert raw_unary(channel, method, msg.SerializeToString())[0] is Code.INVALID_ARGUMENT
    assert_still_serving(served, seeded)


def test_server_limits_apply_when_the_client_is_laxer(tmp_path: Path) -> None:
    served = serve(tmp_path, Limits(max_value_bytes=1000, max_message_bytes=64 * 1024))
    try:
        lax = Limits(max_value_bytes=1 << 20, max_message_bytes=1 << 22)
        with served.remote(limits=lax) as remote:
            with pytest.raises(LimitExceeded) as info:  # refused by the server's validation
                remote.put(T, b"r", b"c", 1, b"v" * 1001)
            assert isinstance(info.value.__cause__, grpc.RpcError)
            assert info.value.__cause__.code() is Code.INVALID_ARGUMENT
            assert (ERROR_KEY, "LimitExceeded") in info.value.__cause__.trailing_metadata()
            with pytest.raises(LimitExceeded) as info:  # refused by grpc: message too large
                remote.mutate_rows([RowMutation(T, b"r%d" % i, (Put(b"c", 1, b"v" * 900),))
                                    for i in range(100)])
            assert info.value.__cause__.code() is Code.RESOURCE_EXHAUSTED  # type: ignore[union-attr]
            remote.put(T, b"r", b"c", 1, b"v" * 1000)
        assert [r.row for r in served.store.scan_rows(T)] == [b"r"]
    finally:
        shutdown(served)


def test_unexpected_errors_are_internal_with_a_message(served: Served, remote_store: RemoteStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(served.store, "read_rows", broken)
    with pytest.raises(StorageError, match="INTERNAL.*disk on fire") as info:
        remote_store.get(T, b"r", b"c")
    assert type(info.value) is StorageError


def test_corruption_is_data_loss_and_logged(served: Served, remote_store: RemoteStore,
                                            monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    def damaged(*args: object, **kwargs: object) -> None:
        raise DataCorruption("checksum mismatch in 000005.ldb")

    monkeypatch.setattr(served.store, "read_rows", damaged)
    with caplog.at_level(logging.ERROR, logger="bigtable_lite._service"):
        with pytest.raises(DataCorruption, match="DATA_LOSS.*checksum mismatch"):
            remote_store.get(T, b"r", b"c")
    assert any("checksum mismatch" in r.getMessage() for r in caplog.records)


def test_closed_store_behind_the_server_is_unavailable(served: Served,
                                                       remote_store: RemoteStore) -> None:
    served.store.close()
    with pytest.raises(Unavailable):
        remote_store.put(T, b"r", b"c", 1, b"v")
    with pytest.raises(Unavailable):
        list(remote_store.scan_rows(T))


def test_no_server_is_unavailable_never_rpc_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with RemoteStore(f"127.0.0.1:{port}", timeout=2.0) as remote:
        for call in (lambda: remote.get(T, b"r", b"c"), lambda: remote.put(T, b"r", b"c", 1, b""),
                     lambda: list(remote.scan_rows(T)), remote.list_tablets,
                     lambda: remote.split_tablet(T, b"m")):
            with pytest.raises(Unavailable):
                call()


def test_closed_remote_store(remote_store: RemoteStore) -> None:
    remote_store.close()
    with pytest.raises(StoreClosed):
        remote_store.get(T, b"r", b"c")
    with pytest.raises(StoreClosed):
        remote_store.scan_rows(T)


def test_remote_store_on_a_callers_channel(served: Served, channel: grpc.Channel) -> None:
    with RemoteStore(channel, timeout=CALL_TIMEOUT) as remote:
        remote.put(T, b"r", b"c", 1, b"v")
    assert RemoteStore(channel).get(T, b"r", b"c") == Cell(b"c", 1, b"v")  # channel still open
    with pytest.raises(TypeError):
        RemoteStore(12345)
    with pytest.raises(ValueError):
        RemoteStore(channel, timeout=0)


def test_scan_streams_several_rows_per_message(served: Served, channel: grpc.Channel) -> None:
    served.store.mutate_rows([RowMutation(T, b"r%04d" % i, (Put(b"c", 1, b"v"),))
                              for i in range(600)])
    call = channel.unary_stream(f"/{SERVICE_NAME}/Scan", request_serializer=None,
                                response_deserializer=pb.ScanResponse.FromString)
    sizes = [len(r.rows) for r in call(pb.ScanRequest(table=T).SerializeToString(),
                                       timeout=CALL_TIMEOUT)]
    assert sum(sizes) == 600
    assert 1 < len(sizes) < 600 and min(sizes[:-1]) > 1


# --- hostile bytes through grpc -----------------------------------------------------------


def test_garbage_and_truncated_requests(served: Served, channel: grpc.Channel,
                                        seeded: list[Row]) -> None:
    rng = random.Random(SEED)
    good = pb.MutateRowsRequest(rows=[pb.RowMutation(
        table=T, row=b"r000", mutations=[pb.Mutation(put=pb.Put(column=b"c", ts=9, value=b"x"))])]
    ).SerializeToString()
    attacks = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(40)]
    attacks += [good[:n] for n in range(1, len(good))]
    attacks += [b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x80" * 20]
    for method in METHODS + STREAMING:
        for data in attacks:
            if method in STREAMING:
                call = channel.unary_stream(f"/{SERVICE_NAME}/{method}", request_serializer=None,
                                            response_deserializer=None)
                try:
                    list(call(data, timeout=CALL_TIMEOUT))
                    code = Code.OK
                except grpc.RpcError as exc:
                    code = exc.code()
            else:
                code = raw_unary(channel, method, data)[0]
            assert code in (Code.OK, Code.INVALID_ARGUMENT), (method, data, code)
    assert_still_serving(served, seeded)


def test_messages_of_the_wrong_type(served: Served, channel: grpc.Channel,
                                    seeded: list[Row]) -> None:
    """Bytes of another message: refused where they do not parse or carry unknown fields;
    where they happen to parse as a valid request of this method, they change nothing."""
    others: list[Message] = [
        pb.ScanRequest(table=T, start_row=b"a", limit=5),
        pb.ReadRowsRequest(reads=[pb.RowRead(table=T, row=b"r000", max_versions=1)]),
        pb.ListTabletsResponse(tablets=[pb.Tablet(table=T, start_row=b"a",
                                                  approximate_bytes=99)]),
        pb.Cell(column=b"c", ts=5, value=b"v"),
        pb.MutationResult(applied=True, failed_condition=3),
        pb.SplitTabletRequest(table=T, row=b"r025"),
        pb.TimeRange(min_ts=1, max_ts=2),
    ]
    refused = 0
    for method in METHODS:
        for msg in others:
            if type(msg).__name__ == f"{method}Request":
                continue
            code = raw_unary(channel, method, msg.SerializeToString())[0]
            assert code in (Code.OK, Code.INVALID_ARGUMENT), (method, msg, code)
            refused += code is Code.INVALID_ARGUMENT
    assert refused >= 15
    assert raw_unary(channel, "MutateRows", pb.ScanRequest(table=T, limit=5)
                     .SerializeToString())[0] is Code.INVALID_ARGUMENT
    assert_still_serving(served, seeded)


def test_unknown_fields_are_refused(served: Served, channel: grpc.Channel,
                                    seeded: list[Row]) -> None:
    msg = pb.MutateRowsRequest(rows=[pb.RowMutation(
        table=T, row=b"new", mutations=[pb.Mutation(put=pb.Put(column=b"c", ts=1, value=b"v"))])])
    data = msg.SerializeToString() + b"\xa0\x06\x01"  # field 100, varint 1
    assert raw_unary(channel, "MutateRows", data)[0] is Code.INVALID_ARGUMENT
    assert_still_serving(served, seeded)


def test_unknown_method(channel: grpc.Channel) -> None:
    call = channel.unary_unary(f"/{SERVICE_NAME}/DropEverything")
    with pytest.raises(grpc.RpcError) as info:
        call(b"", timeout=CALL_TIMEOUT)
    assert info.value.code() is Code.UNIMPLEMENTED


# --- hostile bytes on the TCP port ------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    """An HTTP/2 frame; ``length`` lies about the payload size when given."""
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def literal(name: bytes, value: bytes) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (both < 127 bytes)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def grpc_headers(method: str) -> bytes:
    block = b"".join(literal(n, v) for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"test"),
        (b":path", f"/{SERVICE_NAME}/{method}".encode()), (b"content-type", b"application/grpc"),
        (b"te", b"trailers")])
    return frame(0x1, 0x4, 1, block)  # HEADERS, END_HEADERS, stream 1


def read_frames(sock: socket.socket) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each frame the server sends, until it closes."""
    buffer = b""
    while True:
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            size = int.from_bytes(buffer[:3], "big")
            yield buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF, \
                buffer[9:9 + size]
            buffer = buffer[9 + size:]
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk


def send_raw(port: int, data: bytes, half_close: bool = False) -> tuple[bytes, str]:
    """Send bytes on a fresh connection; return what the server sent and how it ended:
    "stream" (trailers or RST_STREAM on stream 1), "goaway", "closed", "reset" or "timeout"
    (quiet for CALL_TIMEOUT)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            for kind, flags, stream, payload in read_frames(s):
                received += payload
                if kind == 0x7:
                    return received, "goaway"
                if stream == 1 and (kind == 0x3 or (kind == 0x1 and flags & 1)):
                    return received, "stream"
        except (ConnectionResetError, BrokenPipeError):
            return received, "reset"
        except TimeoutError:
            return received, "timeout"
    return received, "closed"


def grpc_request(method: str, body: bytes) -> bytes:
    return PREFACE + frame(0x4, 0, 0, b"") + grpc_headers(method) + frame(0x0, 0x1, 1, body)


def test_hand_made_http2_request_is_understood(served: Served) -> None:
    """Proves the framing below is right, so the attacks that follow reach gRPC."""
    msg = pb.MutateRowsRequest(rows=[pb.RowMutation(table=T, row=b"raw", mutations=[
        pb.Mutation(put=pb.Put(column=b"c", ts=1, value=b"v"))])]).SerializeToString()
    reply, how = send_raw(served.port, grpc_request("MutateRows",
                                                    b"\x00" + len(msg).to_bytes(4, "big") + msg))
    assert how == "stream" and b"grpc-status\x010" in reply
    assert served.store.get(T, b"raw", b"c") == Cell(b"c", 1, b"v")


def test_garbage_on_the_port(served: Served, seeded: list[Row]) -> None:
    rng = random.Random(SEED)
    settings = frame(0x4, 0, 0, b"")
    invalid = [  # the server must refuse by itself (reset the stream, go away or hang up)
        bytes(rng.randrange(256) for _ in range(4096)),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        PREFACE + frame(0x4, 0, 0, b"\x00" * 5),  # SETTINGS of a bad size
        PREFACE + settings + frame(0x1, 0x4, 1, b"\x00", length=0xFFFFFF),  # absurd frame size
    ]
    for data in invalid:
        assert send_raw(served.port, data)[1] != "timeout", data[:40]
    incomplete = [  # the server may wait for more; we hang up
        PREFACE[:10],
        PREFACE,
        PREFACE + settings + grpc_headers("MutateRows")[:7],  # truncated frame
        PREFACE + settings + bytes(rng.randrange(256) for _ in range(2048)),
        PREFACE + settings + frame(0x0, 0x1, 1, b"data on a stream never opened"),  # ignored
    ]
    for data in incomplete:
        assert send_raw(served.port, data, half_close=True)[1] != "timeout"
    assert_still_serving(served, seeded)


@pytest.mark.parametrize("body, refused", [
    (b"\x00\xff\xff\xff\xff" + b"\x0a\x03abc", True),  # a 4 GiB message announced, 5 bytes sent
    (b"\x00\x00\x00\x10\x00" + b"\x0a", True),         # 4 KiB announced, stream ends early
    (b"\x01\x00\x00\x00\x03abc", True),                # "compressed", no compression agreed
    (b"\x00\x00\x00", True),                           # a truncated length prefix
    (b"\x07\x00\x00\x00\x00", False),  # reserved flag bits: grpc reads an empty request
])
def test_bad_grpc_framing_on_a_stream(served: Served, seeded: list[Row], body: bytes,
                                      refused: bool) -> None:
    reply, how = send_raw(served.port, grpc_request("MutateRows", body))
    assert how == "stream" and b"grpc-status" in reply
    assert (b"grpc-status\x010" not in reply) == refused
    assert_still_serving(served, seeded)


def test_graceful_stop_under_load(tmp_path: Path) -> None:
    """Stopping the server mid-stream: calls end with Unavailable, acknowledged writes stay."""
    import threading

    served = serve(tmp_path)
    acked: list[bytes] = []
    outcome: list[BaseException] = []
    started = threading.Event()

    def writer() -> None:
        with served.remote(timeout=5.0) as remote:
            try:
                for i in range(1_000_000):
                    row = b"w%07d" % i
                    remote.put(T, row, b"c", 1, b"v")
                    acked.append(row)
                    started.set()
            except StorageError as exc:
                outcome.append(exc)
                started.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert started.wait(CALL_TIMEOUT)
    stop_server(served.server, grace=1.0)
    thread.join(CALL_TIMEOUT)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
    stored = {r.row for r in served.store.scan_rows(T)}
    served.store.close()
    assert set(acked) <= stored


def test_set_not_serving_needs_our_server() -> None:
    from concurrent import futures

    foreign = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    with pytest.raises(ValueError):
        set_not_serving(foreign)


def test_reads_larger_than_one_message(tmp_path: Path) -> None:
    """A read_rows reply over the message limit is streamed, still from one snapshot."""
    limits = Limits(max_value_bytes=100_000, max_message_bytes=256 * 1024)
    served = serve(tmp_path, limits)
    try:
        rows = [b"big%d" % i for i in range(6)]
        served.store.mutate_rows([RowMutation(T, row, (Put(b"c", 1, row * 20_000),))
                                  for row in rows])
        served.store.put(T, b"huge", b"a", 1, b"a" * 100_000)
        served.store.put(T, b"huge", b"b", 1, b"b" * 100_000)
        served.store.put(T, b"huge", b"c", 1, b"c" * 100_000)
        reads = [RowRead(T, row) for row in rows + [b"absent"]]
        with served.remote(limits=limits) as remote:
            assert remote.read_rows(reads) == served.store.read_rows(reads)
            assert remote.read_row(T, b"huge", columns=[b"a", b"b"]) == \
                served.store.read_row(T, b"huge", columns=[b"a", b"b"])
            with pytest.raises(LimitExceeded):  # one row must still fit in one message
                remote.read_row(T, b"huge")
    finally:
        shutdown(served)


def test_a_row_no_message_can_carry_is_refused_while_it_is_gathered(tmp_path: Path) -> None:
    """A row goes in one reply whole: one over the message limit is refused by name
    (ReplyTooLarge) as soon as the gathered part passes 7/8 of the limit -- an 80 MB row
    was built whole, ~660 MB of the server's memory, before gRPC refused to send it.
    The rows around it are read as before."""
    limits = Limits(max_value_bytes=100_000, max_message_bytes=256 * 1024)
    served = serve(tmp_path, limits)
    try:
        served.store.mutate_rows([RowMutation(T, row, (Put(b"c", 1, b"v"),))
                                  for row in (b"a", b"z")])
        served.store.mutate_rows([RowMutation(T, b"wide", tuple(
            Put(b"c%02d" % i, 1, b"x" * 50_000) for i in range(8)))])  # 400 KB
        with served.remote(limits=limits) as remote:
            for call in (lambda: list(remote.scan_rows(T)),
                         lambda: remote.read_rows([RowRead(T, b"wide")])):
                with pytest.raises(ReplyTooLarge, match="row b'wide' of table b't' holds"):
                    call()
            assert [r.row for r in remote.scan_rows(T, end_row=b"w")] == [b"a"]
            assert [r.row for r in remote.scan_rows(T, start_row=b"x")] == [b"z"]
            assert len(remote.read_row(T, b"wide", columns=[b"c00", b"c01"])) == 2
    finally:
        shutdown(served)


def test_scans_of_big_rows_stay_under_the_message_limit(tmp_path: Path) -> None:
    limits = Limits(max_value_bytes=100_000, max_message_bytes=256 * 1024)
    served = serve(tmp_path, limits)
    try:
        small = (Put(b"c", 1, b"x" * 64_000),)  # under a chunk (limit/4) by itself
        big = (Put(b"a", 1, b"y" * 100_000), Put(b"b", 1, b"z" * 100_000))  # 3/4 of the limit
        served.store.mutate_rows([RowMutation(T, b"r%02d" % i, big if i % 2 else small)
                                  for i in range(20)])
        with served.remote(limits=limits) as remote:
            assert [r.row for r in remote.scan_rows(T)] == [b"r%02d" % i for i in range(20)]
    finally:
        shutdown(served)
