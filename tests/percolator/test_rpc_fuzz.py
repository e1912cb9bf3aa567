"""A bounded property-based fuzz of every RPC a node serves (issue 16).

For every method of every service on a node's port (as its reflection lists them),
hypothesis sends requests built from the method's own message descriptor (any field,
nested messages, repeated fields, odd values: empty and 0x00 bytes, the largest
integers) and the same bytes damaged (cut, a byte changed, garbage appended).  Whatever
arrives, the node answers with a status a client can act on -- never INTERNAL or
UNKNOWN, which would mean a bug that the request reached -- logs no traceback, and keeps
serving: health says SERVING and a transaction commits and reads back afterwards.
An admin token reaches every handler.  Each method gets a bounded number of examples.
The native port is fuzzed the same way: HELLOs (a fuzzed token among them) and, after a
valid one, batches, each answered with frames whose codes a client can act on.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bigtable_lite.auth import Role, TokenTable
from bigtable_lite.credentials import connect_channel
from bigtable_lite.server import ServerPolicy
from percolator import Client
from percolator._transport import native_wire
from percolator.node import Node
from percolator.v1 import node_pb2

from .test_guard_surface import SURFACE, served_methods

WAIT = 30.0
Code = grpc.StatusCode
ADMIN = f"admin-token-{os.urandom(8).hex()}"
BAD = {Code.INTERNAL, Code.UNKNOWN}
EXAMPLES = 30

_INTS = {FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
         FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
         FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
         FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
         FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
         FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
         FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
         FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1)}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[object]:
    kind = field.type
    if kind in _INTS:
        low, high = _INTS[kind]
        return st.one_of(st.sampled_from([0, 1, low, high]), st.integers(low, high))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([v.number for v in field.enum_type.values])
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(allow_nan=True, width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=12)
    return st.one_of(st.sampled_from([b"", b"\x00", b"t", b"r", b"c", b"\xff" * 8]),
                     st.binary(max_size=24))


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    msg = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        nested = field.message_type is not None
        if nested and depth >= 3:
            continue
        one = _message(field.message_type, depth + 1) if field.message_type else _scalar(field)
        if field.is_repeated:
            values = draw(st.lists(one, max_size=3))
            container = getattr(msg, field.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                continue  # no maps in these contracts
            for value in values:
                if nested:
                    container.add().CopyFrom(value)
                else:
                    container.append(value)
        elif nested:
            getattr(msg, field.name).CopyFrom(draw(one))
        else:
            setattr(msg, field.name, draw(one))
    return msg


@st.composite
def requests(draw: st.DrawFn, descriptor: Descriptor) -> bytes:
    """A request for ``descriptor``'s message: built from its fields, then maybe damaged."""
    raw = draw(_message(descriptor)).SerializeToString()
    damage = draw(st.sampled_from(["none", "none", "cut", "flip", "append", "garbage"]))
    if damage == "cut" and raw:
        return raw[:draw(st.integers(0, len(raw) - 1))]
    if damage == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    if damage == "append":
        return raw + draw(st.binary(min_size=1, max_size=16))
    if damage == "garbage":
        return draw(st.binary(max_size=64))
    return raw


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    policy = ServerPolicy(tokens=TokenTable({ADMIN: Role.ADMIN}))
    with Node(tmp_path_factory.mktemp("fuzz") / "data", "127.0.0.1:0", policy=policy,
              txn_lock_wait=0.05) as n:
        yield n


def call(channel: grpc.Channel, path: str, method: MethodDescriptor, raw: bytes) -> grpc.StatusCode:
    """The status of one call (OK if it succeeded); a stream is read for one reply."""
    try:
        if method.client_streaming and method.server_streaming:
            replies = channel.stream_stream(path)(iter([raw, raw]), timeout=WAIT)
            next(iter(replies), None)
            replies.cancel()
        elif method.server_streaming:
            replies = channel.unary_stream(path)(raw, timeout=WAIT)
            next(iter(replies), None)
            replies.cancel()
        else:
            channel.unary_unary(path)(raw, timeout=WAIT)
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        code: grpc.StatusCode = exc.code()
        return code
    return Code.OK


def method_ids() -> list[str]:
    return sorted(SURFACE)


@pytest.mark.parametrize("path", method_ids())
def test_fuzzed_requests_get_a_status_a_client_can_act_on(node: Node, path: str,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    method = served_methods(node.address, ADMIN)[path]
    pool = descriptor_pool.Default()
    descriptor = pool.FindMessageTypeByName(method.input_type.full_name)
    seen: set[grpc.StatusCode] = set()
    with connect_channel(node.address, token=ADMIN) as channel:

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(requests(descriptor))
        def fuzz(raw: bytes) -> None:
            code = call(channel, path, method, raw)
            seen.add(code)
            assert code not in BAD, (path, raw, code)

        with caplog.at_level(logging.WARNING):
            fuzz()
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=WAIT).status == \
            health_pb2.HealthCheckResponse.SERVING
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert seen, path
    with Client.connect(node.address, token=ADMIN, table=b"fuzz-check", timeout=WAIT) as client:
        with client.transaction() as txn:
            txn.set(b"r", b"c", path.encode())
        assert client.begin().get(b"r", b"c") == path.encode()


def native_exchange(node: Node, frames: bytes) -> list[tuple[int, bytes]]:
    """Send ``frames`` on a new connection to the native port; the node's frames until it
    closes or answers all it was sent (bounded by WAIT)."""
    assert node.native is not None
    with socket.create_connection(("127.0.0.1", node.native.port), timeout=WAIT) as sock:
        sock.sendall(frames)
        sock.shutdown(socket.SHUT_WR)  # the node answers what it read, then sees EOF
        reader = native_wire.FrameReader(sock, max_frame=1 << 27, wait=WAIT, deadline=WAIT)
        answers = []
        while True:
            try:
                kind, payload = reader.read()
            except native_wire.PeerClosed:
                return answers
            answers.append((kind, payload))
            if kind == native_wire.CLOSE:
                return answers


def must_be_actionable(answers: list[tuple[int, bytes]]) -> set[grpc.StatusCode]:
    """The codes of the node's CLOSE and of every command's error: none INTERNAL/UNKNOWN."""
    codes = {code for code in Code}
    seen: set[grpc.StatusCode] = set()
    for kind, payload in answers:
        if kind == native_wire.CLOSE:
            errors = [node_pb2.CommandError.FromString(payload)]
        elif kind == native_wire.REPLY:
            errors = [r.error for r in node_pb2.BatchResponse.FromString(payload).results
                      if r.WhichOneof("kind") == "error"]
        else:
            assert kind == native_wire.WELCOME, kind
            continue
        for error in errors:
            code = next(c for c in codes if c.value[0] == error.code)
            assert code not in BAD, (code, error.message)
            seen.add(code)
    return seen


def hello_frame(payload: bytes) -> bytes:
    return native_wire.encode(native_wire.HELLO, payload)


def admin_hello() -> bytes:
    return hello_frame(node_pb2.NativeHello(version=native_wire.VERSION,
                                            token=ADMIN).SerializeToString())


@pytest.mark.parametrize("what", ["hello", "batch"])
def test_fuzzed_native_frames_get_codes_a_client_can_act_on(
        node: Node, what: str, caplog: pytest.LogCaptureFixture) -> None:
    descriptor = (node_pb2.NativeHello if what == "hello" else node_pb2.BatchRequest).DESCRIPTOR
    seen: set[grpc.StatusCode] = set()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests(descriptor), st.sampled_from([None, ADMIN, "x" * 20]))
    def fuzz(raw: bytes, token: str | None) -> None:
        if what == "hello":
            if token is not None:  # a real or a wrong token in a fuzzed HELLO
                raw += node_pb2.NativeHello(token=token).SerializeToString()
            frames = hello_frame(raw)
        else:
            frames = admin_hello() + native_wire.encode(native_wire.BATCH, raw)
        answers = native_exchange(node, frames)
        assert answers, "closed without a frame"
        seen.update(must_be_actionable(answers))

    with caplog.at_level(logging.WARNING):
        fuzz()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert seen, what
    with Client.connect(node.address, token=ADMIN, table=b"fuzz-native", timeout=WAIT
                        ) as client:
        with client.transaction() as txn:
            txn.set(b"r", b"c", what.encode())
        assert client.begin().get(b"r", b"c") == what.encode()
        assert client.backend.batch_stats()["native_connections"] == 1  # type: ignore[attr-defined]
