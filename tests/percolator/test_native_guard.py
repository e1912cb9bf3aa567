"""The native transport guarded as the gRPC port is (issue 16): TLS, tokens, roles, budgets.

A secured node (TLS with a certificate of a CA made here, tests/certs.py, and tokens of
every role) serves the native transport beside gRPC; raw sockets (plain and TLS) play
strangers and misbehaving peers, ``Client``/``NodeClient``/``NativeCalls`` the
well-behaved ones.  What must hold: no HELLO without a valid token is admitted
(CLOSE UNAUTHENTICATED, nothing executed); each command is checked against the token's
role exactly as over ``Node.Batch``; a client that does not speak TLS gets nothing; mutual
TLS wants a certificate of the client CA; a frame over its budget is refused on its
header; strangers cannot hold the connections of admitted clients; a client with a
token and the CA uses the native transport and keeps the bank's totals.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bigtable_lite import LocalStore, Unauthenticated, Unavailable
from bigtable_lite.auth import Role, TokenTable
from bigtable_lite.credentials import ServerTLS, client_context, connect_channel
from bigtable_lite.server import ServerPolicy
from percolator import Client
from percolator._local import LocalBackend
from percolator._node_client import NodeClient
from percolator._node_codec import SERVICE_NAME
from percolator._node_roles import COMMAND_ROLES
from percolator._node_service import NodeService
from percolator._transport import native_wire
from percolator._transport.native_client import NativeCalls
from percolator._transport.native_server import NativeServer
from percolator.node import Node
from percolator.oracle import Oracle
from percolator.v1 import node_pb2
from tests.certs import CA

from . import test_bank as bank
from .test_native import (
    HANDSHAKE_WINDOW,
    must_close,
    read_frame,
    replies,
    run_in_threads,
    stamps_batch,
    wait_until,
)

WAIT = 30.0
Code = grpc.StatusCode
TOKENS = {role: f"{role.label}-native-{os.urandom(8).hex()}" for role in Role}


class Secured:
    """A node with TLS and tokens, and what its clients need."""

    def __init__(self, root: Path, *, mutual: bool = False) -> None:
        self.ca = CA("node CA")
        self.ca_file = self.ca.write(root / "ca.pem")
        cert, key = self.ca.issue("node", server=True).write(root, "node")
        self.client_ca = CA("client CA")
        client_ca_file = self.client_ca.write(root / "client-ca.pem") if mutual else None
        self.client_cert, self.client_key = self.client_ca.issue(
            "client", server=False).write(root, "client")
        policy = ServerPolicy(tokens=TokenTable({t: r for r, t in TOKENS.items()}),
                              tls=ServerTLS(cert, key, client_ca_file))
        self.node = Node(root / "data", "127.0.0.1:0", policy=policy).start()
        assert self.node.native is not None
        self.port = self.node.native.port

    def credentials(self) -> dict[str, Path]:
        return {"tls_ca": self.ca_file, "tls_cert": self.client_cert,
                "tls_key": self.client_key}

    def tls_socket(self, *, cert: bool = True) -> ssl.SSLSocket:
        context = client_context(tls_ca=self.ca_file,
                                 tls_cert=self.client_cert if cert else None,
                                 tls_key=self.client_key if cert else None)
        assert context is not None
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    def served(self) -> int:
        return self.node.oracle.stats().timestamps_served


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = Secured(tmp_path_factory.mktemp("secured"))
    try:
        yield s
    finally:
        s.node.stop()


@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = Secured(tmp_path_factory.mktemp("mutual"), mutual=True)
    try:
        yield s
    finally:
        s.node.stop()


def hello(token: str | None) -> bytes:
    return native_wire.encode(native_wire.HELLO, node_pb2.NativeHello(
        version=native_wire.VERSION, token=token or "").SerializeToString())


def welcomed(sock: socket.socket, token: str) -> socket.socket:
    sock.sendall(hello(token))
    frame = read_frame(sock)
    assert frame is not None and frame[0] == native_wire.WELCOME, frame
    return sock


# --- who gets in ----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "a-token-this-node-never-issued"],
                         ids=["no-token", "unknown-token"])
def test_a_hello_without_a_valid_token_is_unauthenticated_and_nothing_runs(
        secured: Secured, token: str | None) -> None:
    before = secured.served()
    with secured.tls_socket() as sock:
        sock.sendall(hello(token) + stamps_batch(5))  # the batch rides behind the HELLO
        assert "valid token" in must_close(sock, Code.UNAUTHENTICATED)
    assert secured.served() == before, "a stranger's batch was executed"


@pytest.mark.parametrize("role", list(Role), ids=[r.label for r in Role])
def test_each_command_is_checked_against_the_role_as_over_grpc(secured: Secured,
                                                               role: Role) -> None:
    """One batch of every command kind, empty: over the native port and over ``Node.Batch``
    with the same token, the same commands are PERMISSION_DENIED -- exactly those above
    the role."""
    batch = node_pb2.BatchRequest(commands=[
        node_pb2.Command(**{kind: getattr(node_pb2.Command(), kind).__class__()})
        for kind in sorted(COMMAND_ROLES)]).SerializeToString()
    with welcomed(secured.tls_socket(), TOKENS[role]) as sock:
        sock.sendall(native_wire.encode(native_wire.BATCH, batch))
        native = replies(sock, 1)[0]
    with connect_channel(secured.node.address, token=TOKENS[role],
                         tls_ca=secured.ca_file) as channel:
        grpc_reply = node_pb2.BatchResponse.FromString(channel.unary_unary(
            f"/{SERVICE_NAME}/Batch")(batch, timeout=WAIT))

    def denied(reply: node_pb2.BatchResponse) -> set[str]:
        return {kind for kind, result in zip(sorted(COMMAND_ROLES), reply.results)
                if result.WhichOneof("kind") == "error"
                and result.error.code == Code.PERMISSION_DENIED.value[0]}

    expected = {kind for kind, needed in COMMAND_ROLES.items() if role < needed}
    assert denied(native) == expected
    assert denied(grpc_reply) == expected


def test_a_client_that_does_not_speak_tls_gets_nothing(secured: Secured) -> None:
    before = secured.served()
    with socket.create_connection(("127.0.0.1", secured.port), timeout=WAIT) as sock:
        sock.sendall(hello(TOKENS[Role.ADMIN]) + stamps_batch(5))
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread: nothing more to see
    assert not answer or answer[0] == 0x15, answer  # nothing, or a TLS alert record
    assert secured.served() == before


def test_a_client_that_does_not_trust_the_nodes_ca_is_refused_not_downgraded(
        secured: Secured, tmp_path: Path) -> None:
    """The native port's certificate fails verification: raised to the caller, never
    answered by sending over gRPC or over a plain connection."""
    stranger_ca = CA("another CA").write(tmp_path / "other.pem")
    context = client_context(tls_ca=stranger_ca)
    calls = NativeCalls("127.0.0.1", lambda: secured.port, timeout=WAIT, max_frame=1 << 26,
                        tls=context, token=TOKENS[Role.WRITE])
    with pytest.raises(Unavailable, match="failed TLS verification"):
        calls.call(stamps_batch(1)[5:])
    wrong_name = NativeCalls("127.0.0.1", lambda: secured.port, timeout=WAIT,
                             max_frame=1 << 26, tls=client_context(tls_ca=secured.ca_file),
                             server_hostname="example.com", token=TOKENS[Role.WRITE])
    with pytest.raises(Unavailable, match="failed TLS verification"):
        wrong_name.call(stamps_batch(1)[5:])


def test_a_refused_token_is_raised_not_hidden_behind_grpc(secured: Secured) -> None:
    calls = NativeCalls("127.0.0.1", lambda: secured.port, timeout=WAIT, max_frame=1 << 26,
                        tls=client_context(tls_ca=secured.ca_file),
                        token="a-token-this-node-never-issued")
    with pytest.raises(Unauthenticated):
        calls.call(stamps_batch(1)[5:])
    calls.close()


def test_mutual_tls_wants_a_certificate_of_the_client_ca(mutual: Secured,
                                                         tmp_path: Path) -> None:
    with welcomed(mutual.tls_socket(), TOKENS[Role.READ]) as sock:  # with its certificate
        sock.sendall(stamps_batch(1))
        assert replies(sock, 1)[0].results[0].get_timestamps.count == 1
    before = mutual.served()
    with pytest.raises((ssl.SSLError, ConnectionError)):  # in, or right after, the handshake
        with mutual.tls_socket(cert=False) as sock:
            sock.sendall(hello(TOKENS[Role.ADMIN]) + stamps_batch(1))
            assert read_frame(sock) is None
            raise ConnectionError("closed without an answer")
    other = CA("not the client CA").issue("client", server=False)
    cert, key = other.write(tmp_path, "other-client")
    context = client_context(tls_ca=mutual.ca_file, tls_cert=cert, tls_key=key)
    assert context is not None
    with pytest.raises((ssl.SSLError, ConnectionError)):
        raw = socket.create_connection(("127.0.0.1", mutual.port), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(hello(TOKENS[Role.ADMIN]) + stamps_batch(1))
            assert read_frame(sock) is None
            raise ConnectionError("closed without an answer")
    assert mutual.served() == before
    with Client.connect(mutual.node.address, token=TOKENS[Role.WRITE], timeout=WAIT,
                        table=b"mtls", **mutual.credentials()) as client:  # type: ignore[arg-type]
        client.run(lambda txn: txn.set(b"r", b"c", b"v"))
        assert client.begin().get(b"r", b"c") == b"v"
        assert client.backend.batch_stats()["native_connections"] == 1  # type: ignore[attr-defined]


def test_a_certificate_replaced_on_disk_is_served_to_new_native_connections(
        tmp_path: Path) -> None:
    """As on the gRPC port (tests/bigtable_lite/test_tls.py): the node's certificate files
    rotated, new native connections get the new one without a restart, a half-written
    pair is never served, an open connection keeps its own."""
    old = CA("old CA")
    cert, key = old.issue("node", server=True).write(tmp_path, "node")
    policy = ServerPolicy(tokens=TokenTable({TOKENS[Role.READ]: Role.READ}),
                          tls=ServerTLS(cert, key))
    old_ca, new = old.write(tmp_path / "old.pem"), CA("next CA")
    new_ca = new.write(tmp_path / "new.pem")

    def connect(ca: Path) -> ssl.SSLSocket:
        context = client_context(tls_ca=ca)
        assert context is not None
        raw = socket.create_connection(("127.0.0.1", node.native.port), timeout=WAIT)
        return welcomed(context.wrap_socket(raw, server_hostname="127.0.0.1"),
                        TOKENS[Role.READ])

    with Node(tmp_path / "data", "127.0.0.1:0", policy=policy) as node:
        assert node.native is not None
        with connect(old_ca) as kept:
            with pytest.raises(ssl.SSLCertVerificationError):
                connect(new_ca)
            issued = new.issue("node", server=True)
            cert.write_bytes(issued.cert)  # half-way: the new certificate, the old key
            connect(old_ca).close()  # a mismatched pair is never served
            key.write_bytes(issued.key)
            with connect(new_ca) as sock:  # no restart
                sock.sendall(stamps_batch(1))
                assert replies(sock, 1)[0].results[0].get_timestamps.count == 1
            with pytest.raises(ssl.SSLCertVerificationError):
                connect(old_ca)
            kept.sendall(stamps_batch(1))  # open connections keep theirs
            assert replies(kept, 1)[0].results[0].get_timestamps.count == 1


# --- bounds ---------------------------------------------------------------------------------


def test_a_frame_over_its_budget_is_refused_on_its_header(secured: Secured) -> None:
    """Nothing of the body is awaited: the CLOSE comes while the body has not been sent.
    Before a token is checked a HELLO may take 64 KiB; after it, a batch the budget of
    ``Node.Batch`` (the message limit)."""
    with secured.tls_socket() as sock:
        sock.sendall(native_wire.HEADER.pack(1 << 30, native_wire.HELLO))
        assert "exceeds the limit" in must_close(sock, Code.RESOURCE_EXHAUSTED)
    limit = secured.node.store.limits.max_message_bytes
    with welcomed(secured.tls_socket(), TOKENS[Role.ADMIN]) as sock:
        sock.sendall(native_wire.HEADER.pack(limit + 1, native_wire.BATCH))
        assert "exceeds the limit" in must_close(sock, Code.RESOURCE_EXHAUSTED)


def test_strangers_in_the_handshake_cannot_take_admitted_clients_connections(
        tmp_path: Path) -> None:
    """Connections not yet admitted (handshake and HELLO) have slots of their own: silent
    strangers fill those and are dropped at the HELLO deadline, while admitted clients'
    connections keep working, and a newcomer meanwhile is refused (RESOURCE_EXHAUSTED:
    its client uses gRPC) rather than left waiting. The deadline is seconds long: the test
    must see the strangers in and the newcomer refused before it, on a loaded machine too."""
    store = LocalStore(tmp_path / "data")
    service = NodeService(LocalBackend(store, Oracle(store), owned=False),
                          tokens=TokenTable({TOKENS[Role.READ]: Role.READ}))
    server = NativeServer("127.0.0.1", 0, service.open_native,
                          budgets={native_wire.BATCH: 1 << 20}, max_connections=4,
                          max_handshakes=2, hello_deadline=HANDSHAKE_WINDOW).start()
    try:
        admitted = [welcomed(socket.create_connection(("127.0.0.1", server.port),
                                                      timeout=WAIT), TOKENS[Role.READ])
                    for _ in range(2)]
        strangers = [socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
                     for _ in range(2)]
        wait_until(lambda: server.open_connections == 4, "the strangers are in the handshake")
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as late:
            late.sendall(hello(TOKENS[Role.READ]))
            must_close(late, Code.RESOURCE_EXHAUSTED)
        for sock in admitted:
            sock.sendall(stamps_batch(1))
            assert replies(sock, 1)[0].results[0].get_timestamps.count == 1
        for sock in strangers:
            with sock:
                assert read_frame(sock) is None  # dropped at the HELLO deadline
        wait_until(lambda: server.open_connections == 2, "the strangers' slots are free")
        with welcomed(socket.create_connection(("127.0.0.1", server.port), timeout=WAIT),
                      TOKENS[Role.READ]) as sock:
            sock.sendall(stamps_batch(1))
            assert replies(sock, 1)[0].results[0].get_timestamps.count == 1
        for sock in admitted:
            sock.close()
    finally:
        server.stop()
        assert server.join(WAIT)
        store.close()


# --- the well-behaved client ----------------------------------------------------------------


def test_a_client_with_a_token_and_the_ca_uses_the_native_transport(secured: Secured) -> None:
    with Client.connect(secured.node.address, token=TOKENS[Role.WRITE], timeout=WAIT,
                        tls_ca=secured.ca_file, table=b"native-tls") as writer:
        writer.run(lambda txn: txn.set(b"r", b"c", b"v"))
        stats = writer.backend.batch_stats()  # type: ignore[attr-defined]
        assert stats["native_connections"] == 1 and stats["streams_opened"] == 0
    with Client.connect(secured.node.address, token=TOKENS[Role.READ], timeout=WAIT,
                        tls_ca=secured.ca_file, table=b"native-tls",
                        transport="native") as reader:
        assert reader.begin().get(b"r", b"c") == b"v"
        with pytest.raises(Exception, match="needs the write role"):
            reader.run(lambda txn: txn.set(b"r", b"c", b"w"))
    with NodeClient(secured.node.address, timeout=WAIT, token=TOKENS[Role.READ],
                    tls_ca=secured.ca_file) as client:
        assert client._native_port() == secured.port  # Describe says where


def test_a_secured_nodes_bank_over_the_native_transport_keeps_its_totals(
        secured: Secured) -> None:
    seed = bank.draw_seed("test_a_secured_nodes_bank_over_the_native_transport")
    with Client.connect(secured.node.address, token=TOKENS[Role.WRITE], timeout=WAIT,
                        tls_ca=secured.ca_file, table=b"bank-native-tls") as client:
        bank.open_accounts(client)
        tally, _ = bank.run_threads(client, seed, min(bank.DURATION, 3.0))
        bank.check_final(client, tally)
        stats = client.backend.batch_stats()  # type: ignore[attr-defined]
        assert stats["native_connections"] >= 1 and stats["streams_opened"] == 0


def test_pipelined_batches_over_tls_from_many_threads(secured: Secured) -> None:
    """Several batches on the wire at once over one TLS connection (reads and sends of
    one SSL object never overlap): every thread gets its own timestamps, all distinct."""
    got: list[list[int]] = [[] for _ in range(8)]
    with NodeClient(secured.node.address, timeout=WAIT, token=TOKENS[Role.READ],
                    tls_ca=secured.ca_file, max_in_flight=4) as client:

        def work(i: int) -> None:
            for _ in range(50):
                got[i].append(client.timestamps(1))

        run_in_threads(8, work)
        assert client.batch_stats()["native_connections"] == 1
    stamps = [s for per in got for s in per]
    assert len(stamps) == 400 and len(set(stamps)) == 400
    assert all(per == sorted(per) for per in got)


def test_a_stopping_node_ends_idle_tls_connections_with_close(tmp_path: Path) -> None:
    """A TLS connection waiting for its next batch is woken by stop (its read side cannot
    be shut without breaking the session) and told CLOSE UNAVAILABLE: nothing unanswered
    was executed."""
    s = Secured(tmp_path)
    try:
        with welcomed(s.tls_socket(), TOKENS[Role.READ]) as sock:
            sock.sendall(stamps_batch(1))
            assert replies(sock, 1)[0].results[0].get_timestamps.count == 1
            began = time.monotonic()
            stopper = threading.Thread(target=s.node.stop, daemon=True)
            stopper.start()
            assert "stopping" in must_close(sock, Code.UNAVAILABLE)
            stopper.join(WAIT)
            assert not stopper.is_alive() and time.monotonic() - began < WAIT / 2
    finally:
        s.node.stop()


def test_a_tls_peer_trickling_its_hello_loses_its_handshake_slot_at_the_deadline(
        tmp_path: Path) -> None:
    """Over TLS a read of the HELLO waits for a whole TLS record: a peer sending it a
    byte at a time must still be cut off at the handshake's deadline, so a few of them
    cannot hold every handshake slot (and the native port) for as long as they like."""
    ca = CA("trickle CA")
    cert, key = ca.issue("localhost", server=True).write(tmp_path, "node")
    deadline = 0.5
    server = NativeServer("127.0.0.1", 0, lambda hello, tls: {},
                          budgets={native_wire.BATCH: 1 << 20}, max_connections=4,
                          max_handshakes=1, hello_deadline=deadline,
                          tls=ServerTLS(cert, key).contexts()).start()
    raw = socket.create_connection(("127.0.0.1", server.port))
    try:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        context = client_context(tls_ca=ca.write(tmp_path / "ca.pem"))
        assert context is not None
        tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        raw.settimeout(WAIT)
        while True:  # the handshake, done in time
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        raw.sendall(outgoing.read())
        tls.write(native_wire.encode(native_wire.HELLO, node_pb2.NativeHello(
            version=native_wire.VERSION).SerializeToString()))
        record = outgoing.read()
        began = time.monotonic()
        cut_off = False
        for byte in record[:-1]:  # one byte at a time, each within the read's own timeout
            try:
                raw.sendall(bytes([byte]))
            except OSError:
                cut_off = True
                break
            if server.open_connections == 0:
                cut_off = True
                break
            assert time.monotonic() - began < WAIT
            threading.Event().wait(deadline / 4)
        assert cut_off, "the whole HELLO trickled in: the slot was held all along"
        assert time.monotonic() - began < 4 * deadline + 2
        eventually_true(lambda: server.open_connections == 0)
    finally:
        raw.close()
        server.stop()


def eventually_true(condition: Callable[[], bool]) -> None:
    until = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < until, "timed out"
        threading.Event().wait(0.01)
