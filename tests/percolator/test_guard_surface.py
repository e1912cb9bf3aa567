"""Everything a client can call on a node is behind the guard (issue 16), on both ports.

The node itself says what it serves: the test asks its reflection service for every
service and method on the port, and calls each one as a stranger (no token, a wrong
token) and with each role's token.  Every method must be in the table below, with the
least role its service declared; a method added later fails this test until someone
decides who may call it.  The guard checks the token before it decodes the request, so
the bytes sent are an empty message: what is measured is only whether the call got
past authentication and the role check.  The native port (the same batches) is called
the same way: a HELLO without a valid token is closed UNAUTHENTICATED, and a batch of
every command kind is PERMISSION_DENIED exactly in the commands above the token's role.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from bigtable_lite.auth import Role, TokenTable
from bigtable_lite.credentials import connect_channel
from bigtable_lite.server import ServerPolicy
from percolator._node_roles import COMMAND_ROLES
from percolator._transport import native_wire
from percolator.node import Node
from percolator.v1 import node_pb2

WAIT = 30.0
Code = grpc.StatusCode
TOKENS = {role: f"{role.label}-token-{os.urandom(8).hex()}" for role in Role}

TABLET = "bigtable_lite.v1.TabletService"
ORACLE = "percolator.v1.TimestampOracle"
NODE = "percolator.v1.Node"
TRANSACTIONS = "percolator.v1.Transactions"
NOTIFICATIONS = "percolator.v1.Notifications"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"

SURFACE: dict[str, Role | None] = {
    f"/{TABLET}/ReadRows": Role.READ, f"/{TABLET}/ReadRowsStream": Role.READ,
    f"/{TABLET}/Scan": Role.READ, f"/{TABLET}/ListTablets": Role.READ,
    f"/{TABLET}/MutateRows": Role.ADMIN, f"/{TABLET}/SplitTablet": Role.ADMIN,
    f"/{TABLET}/CompactTable": Role.ADMIN,
    f"/{ORACLE}/GetTimestamps": Role.READ, f"/{ORACLE}/StreamTimestamps": Role.READ,
    f"/{ORACLE}/GetOracleStats": Role.READ,
    # Admitted with read: each command is checked against the role (test_node_roles.py).
    f"/{NODE}/Batch": Role.READ, f"/{NODE}/BatchStream": Role.READ,
    f"/{NODE}/Describe": Role.READ,  # where the native transport is (guarded alike: below)
    f"/{TRANSACTIONS}/Begin": Role.READ, f"/{TRANSACTIONS}/Get": Role.READ,
    f"/{TRANSACTIONS}/BatchGet": Role.READ, f"/{TRANSACTIONS}/Scan": Role.READ,
    f"/{TRANSACTIONS}/Rollback": Role.READ, f"/{TRANSACTIONS}/Commit": Role.WRITE,
    # Admitted with read: each request is checked (test_txn_service_security.py).
    f"/{TRANSACTIONS}/Stream": Role.READ,
    # An observer worker's verbs write; status reads; the rest is the operator's.
    **{f"/{NOTIFICATIONS}/{m}": Role.WRITE
       for m in ("Register", "Pull", "Leave", "Done", "Park", "Replay")},
    **{f"/{NOTIFICATIONS}/{m}": Role.READ for m in ("Columns", "Pending", "Members", "Parked")},
    f"/{NOTIFICATIONS}/Unregister": Role.ADMIN, f"/{NOTIFICATIONS}/Compact": Role.ADMIN,
    f"/{HEALTH}/Check": None, f"/{HEALTH}/Watch": None,  # probes have no token
    f"/{REFLECTION}/ServerReflectionInfo": Role.READ,
}
"""Every method a node serves, and the least role that may call it (None: anyone)."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    policy = ServerPolicy(tokens=TokenTable({t: role for role, t in TOKENS.items()}))
    with Node(tmp_path_factory.mktemp("surface") / "data", "127.0.0.1:0",
              policy=policy) as n:
        yield n


def served_methods(address: str, token: str = TOKENS[Role.READ]
                   ) -> dict[str, MethodDescriptor]:
    """Every method of every service the node's reflection lists, by full path.

    The reflection stream of an earlier call holds its slot until the node has seen
    its cancel: RESOURCE_EXHAUSTED ("try again later") is tried again, as it asks."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return _reflected_methods(address, token)
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED or (
                    time.monotonic() > deadline):
                raise
            time.sleep(0.05)


def _reflected_methods(address: str, token: str) -> dict[str, MethodDescriptor]:
    with connect_channel(address, token=token) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        methods: dict[str, MethodDescriptor] = {}
        for name in database.get_services():
            for method in pool.FindServiceByName(name).methods:
                methods[f"/{name}/{method.name}"] = method
        return methods


def call(channel: grpc.Channel, path: str, method: MethodDescriptor) -> grpc.StatusCode:
    """The status of one call of ``path`` with an empty request (OK if it got through)."""
    empty = b""
    try:
        if method.client_streaming and method.server_streaming:
            replies = channel.stream_stream(path)(iter([empty]), timeout=WAIT)
            next(iter(replies), None)
            replies.cancel()
        elif method.client_streaming:
            channel.stream_unary(path)(iter([empty]), timeout=WAIT)
        elif method.server_streaming:
            replies = channel.unary_stream(path)(empty, timeout=WAIT)
            next(iter(replies), None)
            replies.cancel()
        else:
            channel.unary_unary(path)(empty, timeout=WAIT)
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        code: grpc.StatusCode = exc.code()
        return code
    return Code.OK


def test_reflection_lists_exactly_the_methods_whose_roles_are_decided(node: Node) -> None:
    assert set(served_methods(node.address)) == set(SURFACE)


@pytest.mark.parametrize("token", [None, "a-token-this-node-never-issued"],
                         ids=["no-token", "unknown-token"])
def test_a_stranger_reaches_only_health(node: Node, token: str | None) -> None:
    methods = served_methods(node.address)
    with connect_channel(node.address, token=token) as channel:
        for path, method in methods.items():
            code = call(channel, path, method)
            if SURFACE[path] is None:
                assert code not in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED), path
            else:
                assert code is Code.UNAUTHENTICATED, (path, code)


@pytest.mark.parametrize("role", list(Role), ids=[r.label for r in Role])
def test_each_role_passes_the_guard_exactly_where_it_may(node: Node, role: Role) -> None:
    """A role below a method's is PERMISSION_DENIED; at or above it, the call gets past
    the guard (it may then fail on the empty request, never for its token)."""
    methods = served_methods(node.address)
    with connect_channel(node.address, token=TOKENS[role]) as channel:
        for path, method in methods.items():
            needed = SURFACE[path]
            code = call(channel, path, method)
            if needed is not None and role < needed:
                assert code is Code.PERMISSION_DENIED, (path, code)
            else:
                assert code not in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED), (path, code)


# --- the native port ----------------------------------------------------------------------


COMMANDS = sorted(f.name for f in node_pb2.Command.DESCRIPTOR.oneofs_by_name["kind"].fields)


def native_hello(node: Node, token: str | None) -> tuple[socket.socket, int, bytes]:
    """A connection to the node's native port that said HELLO: (socket, kind, payload)
    of the node's answer."""
    assert node.native is not None
    sock = socket.create_connection(("127.0.0.1", node.native.port), timeout=WAIT)
    sock.sendall(native_wire.encode(native_wire.HELLO, node_pb2.NativeHello(
        version=native_wire.VERSION, token=token or "").SerializeToString()))
    reader = native_wire.FrameReader(sock, max_frame=1 << 26, wait=WAIT, deadline=WAIT)
    kind, payload = reader.read()
    return sock, kind, payload


def test_every_command_has_a_decided_role() -> None:
    assert set(COMMANDS) == set(COMMAND_ROLES)


@pytest.mark.parametrize("token", [None, "a-token-this-node-never-issued"],
                         ids=["no-token", "unknown-token"])
def test_a_stranger_gets_no_native_connection(node: Node, token: str | None) -> None:
    sock, kind, payload = native_hello(node, token)
    with sock:
        assert kind == native_wire.CLOSE, native_wire.KINDS[kind]
        assert node_pb2.CommandError.FromString(payload).code == \
            Code.UNAUTHENTICATED.value[0]


@pytest.mark.parametrize("role", list(Role), ids=[r.label for r in Role])
def test_each_role_on_the_native_port_is_denied_exactly_the_commands_above_it(
        node: Node, role: Role) -> None:
    sock, kind, _ = native_hello(node, TOKENS[role])
    with sock:
        assert kind == native_wire.WELCOME, native_wire.KINDS[kind]
        batch = node_pb2.BatchRequest(commands=[
            node_pb2.Command(**{name: getattr(node_pb2.Command(), name).__class__()})
            for name in COMMANDS])
        sock.sendall(native_wire.encode(native_wire.BATCH, batch.SerializeToString()))
        reader = native_wire.FrameReader(sock, max_frame=1 << 26, wait=WAIT, deadline=WAIT)
        kind, payload = reader.read()
        assert kind == native_wire.REPLY, native_wire.KINDS[kind]
    results = node_pb2.BatchResponse.FromString(payload).results
    denied = {name for name, r in zip(COMMANDS, results)
              if r.WhichOneof("kind") == "error"
              and r.error.code == Code.PERMISSION_DENIED.value[0]}
    assert denied == {name for name in COMMANDS if role < COMMAND_ROLES[name]}
    assert len(results) == len(COMMANDS)
