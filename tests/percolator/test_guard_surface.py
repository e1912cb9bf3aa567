"""Everything a client can call on a node is behind the guard (issue 16).

The node itself says what it serves: the test asks its reflection service for every
service and method on the port, and calls each one as a stranger (no token, a wrong
token) and with each role's token.  Every method must be in the table below, with the
least role its service declared; a method added later fails this test until someone
decides who may call it.  The guard checks the token before it decodes the request, so
the bytes sent are an empty message: what is measured is only whether the call got
past authentication and the role check.
"""

from __future__ import annotations

import os
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
from percolator.node import Node

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
    f"/{NODE}/Describe": Role.READ,  # where the native transport is (none with tokens)
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
    """Every method of every service the node's reflection lists, by full path."""
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
