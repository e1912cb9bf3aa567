"""Tokens and roles: the token file, and every kind of call against a server that needs them.

The server is a real gRPC server on 127.0.0.1:0 built with a TokenTable; calls carry
``authorization: Bearer TOKEN`` as gRPC's access-token credentials send it (over gRPC's
local credentials: loopback, no TLS needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from bigtable_lite import (
    Cell,
    LocalStore,
    PermissionDenied,
    Put,
    RemoteStore,
    RowMutation,
    RowRead,
    ScanRequest,
    Unauthenticated,
)
from bigtable_lite._service import SERVICE_NAME
from bigtable_lite.auth import Role, TokenTable, bearer, parse_tokens, role_of
from bigtable_lite.credentials import connect_channel
from bigtable_lite.server import ServerPolicy, ServiceRegistration, build_server, stop_server

from .conftest import CALL_TIMEOUT

T = b"t"
TOKENS = {Role.READ: "reader-token-0123456789", Role.WRITE: "writer-token-0123456789",
          Role.ADMIN: "admin-token-01234567890"}
WHOAMI = "test.v1.WhoAmI"


# --- the token file -----------------------------------------------------------------------


def test_token_file_lines_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# who may call\n\nreader-token-0123456789 read   # a dashboard\n"
                    "  admin-token-01234567890\tadmin\n")
    table = TokenTable.load(path)
    assert len(table) == 2
    assert table.role("reader-token-0123456789") is Role.READ
    assert table.role("admin-token-01234567890") is Role.ADMIN
    assert table.role("admin-token-0123456789") is None  # a prefix is not the token
    assert table.role("admin-token-01234567890x") is None
    assert table.role(None) is None


@pytest.mark.parametrize(("text", "mistake"), [
    ("reader-token-0123456789 reader\n", "line 1: unknown role 'reader'"),
    ("# x\nreader-token-0123456789\n", "line 2: expected TOKEN ROLE"),
    ("short read\n", "line 1: a token must have 16"),
    ("reader-token-0123456789 read\nreader-token-0123456789 admin\n", "line 2: this token"),
    ("reader-token-01234567é9 read\n", "printable ASCII"),
])
def test_a_malformed_token_file_is_refused_naming_the_line(text: str, mistake: str) -> None:
    with pytest.raises(ValueError, match=mistake):
        parse_tokens(text.splitlines(keepends=True))


def test_a_token_file_without_tokens_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# nobody\n")
    with pytest.raises(ValueError, match="no tokens"):
        TokenTable.load(path)


def test_the_bearer_token_is_taken_from_the_authorization_metadata() -> None:
    assert bearer([("user-agent", "x"), ("authorization", "Bearer abc")]) == "abc"
    assert bearer([("authorization", "Basic abc")]) is None
    assert bearer(None) is None


# --- a server that needs tokens -------------------------------------------------------------


@dataclass
class Guarded:
    address: str
    store: LocalStore


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Guarded]:
    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        return role_of(context).label.encode()

    def add(server: grpc.Server) -> None:
        handlers = {"Role": grpc.unary_unary_rpc_method_handler(whoami),
                    "Undeclared": grpc.unary_unary_rpc_method_handler(whoami)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(WHOAMI, handlers),))
        server.add_registered_method_handlers(WHOAMI, handlers)

    with LocalStore(tmp_path / "data") as store:
        store.mutate_rows([RowMutation(T, b"r", (Put(b"c", 1, b"v"),))])
        server, port = build_server(
            store, "127.0.0.1:0", max_workers=8,
            extra=[ServiceRegistration(WHOAMI, add, {"Role": Role.READ})],
            policy=ServerPolicy(tokens=TokenTable({t: r for r, t in TOKENS.items()})))
        server.start()
        try:
            yield Guarded(f"127.0.0.1:{port}", store)
        finally:
            stop_server(server, grace=1.0)


@contextmanager
def channel_as(address: str, token: str | None) -> Iterator[grpc.Channel]:
    channel = connect_channel(address, token=token)
    try:
        yield channel
    finally:
        channel.close()


def store_calls(store: RemoteStore) -> dict[str, tuple[Role, Callable[[], object]]]:
    """One call of each TabletService method, with the role it needs."""
    return {
        "ReadRows": (Role.READ, lambda: store.read_rows([RowRead(T, b"r")])),
        "Scan": (Role.READ, lambda: list(store.scan(ScanRequest(T)))),
        "ListTablets": (Role.READ, lambda: store.list_tablets()),
        "MutateRows": (Role.ADMIN, lambda: store.put(T, b"r", b"c", 2, b"w")),
        "SplitTablet": (Role.ADMIN, lambda: store.split_tablet(T, b"m")),
        "CompactTable": (Role.ADMIN, lambda: store.compact_table(T)),
    }


def test_calls_without_a_valid_token_are_unauthenticated(guarded: Guarded) -> None:
    for token in (None, "not-a-known-token-000000", TOKENS[Role.ADMIN][:-1]):
        with channel_as(guarded.address, token) as channel:
            store = RemoteStore(channel, timeout=CALL_TIMEOUT)
            for _, call in store_calls(store).values():
                with pytest.raises(Unauthenticated):
                    call()
    assert guarded.store.get(T, b"r", b"c") == Cell(b"c", 1, b"v")  # nothing was written


@pytest.mark.parametrize("role", list(Role), ids=lambda role: role.label)
def test_each_role_calls_what_it_may_and_is_denied_the_rest(guarded: Guarded, role: Role
                                                            ) -> None:
    with channel_as(guarded.address, TOKENS[role]) as channel:
        store = RemoteStore(channel, timeout=CALL_TIMEOUT)
        for name, (needed, call) in store_calls(store).items():
            if role >= needed:
                call()
            else:
                with pytest.raises(PermissionDenied, match=f"{name} needs the"):
                    call()
        whoami = channel.unary_unary(f"/{WHOAMI}/Role")
        assert whoami(b"", timeout=CALL_TIMEOUT) == role.label.encode()  # role_of(context)
        undeclared = channel.unary_unary(f"/{WHOAMI}/Undeclared")
        if role is Role.ADMIN:
            assert undeclared(b"", timeout=CALL_TIMEOUT) == b"admin"
        else:  # a method its service did not declare is admin-only
            with pytest.raises(grpc.RpcError) as info:
                undeclared(b"", timeout=CALL_TIMEOUT)
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_health_needs_no_token_and_reflection_needs_one(guarded: Guarded) -> None:
    with channel_as(guarded.address, None) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=CALL_TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with channel_as(guarded.address, TOKENS[Role.READ]) as channel:
        assert SERVICE_NAME in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_without_tokens_every_caller_is_admin(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "data") as store:
        server, port = build_server(store, "127.0.0.1:0", max_workers=8)
        server.start()
        try:
            with channel_as(f"127.0.0.1:{port}", None) as channel:
                remote = RemoteStore(channel, timeout=CALL_TIMEOUT)
                remote.put(T, b"r", b"c", 1, b"v")
                remote.compact_table(T)
        finally:
            stop_server(server, grace=1.0)
