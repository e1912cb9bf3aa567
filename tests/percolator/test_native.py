"""The native transport (percolator/_transport/native_*.py): frames, bounds, order, restarts.

Servers are real (127.0.0.1 port 0): a node (``Node``), or a ``NativeServer`` around a
node's batch service with short deadlines, where a test needs them.  Raw sockets play the
misbehaving peers; ``Client``/``NodeClient`` the well-behaved ones.  Every wait is bounded.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from bigtable_lite import (
    LocalStore,
    Put,
    RowMutation,
    RowRead,
    StorageError,
    Unavailable,
    wire,
)
from bigtable_lite.auth import Role, TokenTable
from bigtable_lite.credentials import is_loopback, split_host
from bigtable_lite.server import InsecureListen, ServerPolicy
from percolator import Client, CommitUndetermined, TransactionError
from percolator._local import LocalBackend
from percolator._node_client import NodeClient
from percolator._node_service import NodeService
from percolator._transport import native_client, native_wire
from percolator._transport.native_client import NativeCalls
from percolator._transport.native_server import NativeServer
from percolator.node import AFTER_GRPC, Node, native_address
from percolator.oracle import Oracle
from percolator.v1 import node_pb2, oracle_pb2
from tests.procs import ServerProcess

WAIT = 30.0
HANDSHAKE_WINDOW = 3.0  # long enough to watch connections in it on a loaded machine
Code = grpc.StatusCode


def run_in_threads(n: int, work: Callable[[int], None]) -> None:
    """``work(i)`` for i in range(n), each in a thread of its own; all of them finished."""
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)


def wait_until(predicate: Callable[[], bool], what: str, bound: float = WAIT) -> None:
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        threading.Event().wait(0.005)


# --- raw frames ---------------------------------------------------------------------------


def hello(version: int = native_wire.VERSION) -> bytes:
    return native_wire.encode(native_wire.HELLO,
                              node_pb2.NativeHello(version=version).SerializeToString())


def stamps_batch(*counts: int) -> bytes:
    request = node_pb2.BatchRequest(commands=[node_pb2.Command(
        get_timestamps=oracle_pb2.GetTimestampsRequest(count=c)) for c in counts])
    return native_wire.encode(native_wire.BATCH, request.SerializeToString())


def read_frame(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next frame, or None at EOF (bounded by the socket's timeout)."""
    head = recv_exact(sock, 5)
    if head is None:
        return None
    length, kind = native_wire.HEADER.unpack(head)
    body = recv_exact(sock, length)
    assert body is not None, "frame cut short"
    return kind, body


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None if not data else data
        data += chunk
    return data


def must_close(sock: socket.socket, code: grpc.StatusCode) -> str:
    """The peer answers CLOSE with ``code`` (its message returned), then EOF."""
    frame = read_frame(sock)
    assert frame is not None, "closed without a CLOSE frame"
    kind, body = frame
    assert kind == native_wire.CLOSE, native_wire.KINDS.get(kind, kind)
    err = node_pb2.CommandError.FromString(body)
    assert err.code == code.value[0], (err, code)
    assert read_frame(sock) is None, "more after CLOSE"
    return err.message


def connect(port: int, *, greet: bool = True) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    if greet:
        sock.sendall(hello())
        frame = read_frame(sock)
        assert frame is not None and frame[0] == native_wire.WELCOME, frame
    return sock


def replies(sock: socket.socket, n: int) -> list[node_pb2.BatchResponse]:
    out = []
    for _ in range(n):
        frame = read_frame(sock)
        assert frame is not None and frame[0] == native_wire.REPLY, frame
        out.append(node_pb2.BatchResponse.FromString(frame[1]))
    return out


# --- servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("node") / "data", "127.0.0.1:0") as n:
        yield n


@dataclass
class Native:
    server: NativeServer
    service: NodeService
    store: LocalStore

    @property
    def port(self) -> int:
        return self.server.port


@contextmanager
def native(path: Path, **bounds: float) -> Iterator[Native]:
    """A NativeServer around a node's batch service, with the given bounds."""
    store = LocalStore(path)
    try:
        service = NodeService(LocalBackend(store, Oracle(store), owned=False))
        server = NativeServer("127.0.0.1", 0, service.open_native,
                              budgets={native_wire.BATCH: store.limits.max_message_bytes},
                              **bounds)  # type: ignore[arg-type]
        server.start()
        try:
            yield Native(server, service, store)
        finally:
            server.stop()
            assert server.join(WAIT), "connections outlived stop"
    finally:
        store.close()


# --- the client's transport ------------------------------------------------------------------


def test_connect_uses_the_native_transport_the_node_offers(node: Node) -> None:
    assert node.native_address is not None
    with Client.connect(node.address, table=b"native-default") as client:
        with client.transaction() as txn:
            txn.set(b"r", b"c", b"v")
        assert client.begin().get(b"r", b"c") == b"v"
        stats = client.backend.batch_stats()  # type: ignore[attr-defined]
        assert stats["native_connections"] == 1 and stats["streams_opened"] == 0


@pytest.mark.parametrize("transport", ["auto", "native", "grpc"])
def test_each_transport_gives_the_same_results(node: Node, transport: str) -> None:
    table = b"same-" + transport.encode()
    with Client.connect(node.address, table=table, transport=transport) as client:  # type: ignore[arg-type]
        for i in range(20):
            with client.transaction() as txn:
                txn.set(b"r%02d" % i, b"c", b"%d" % i)
        txn = client.begin()
        assert [(r, v) for r, _, v in txn.scan()] == [(b"r%02d" % i, b"%d" % i)
                                                       for i in range(20)]
        stats = client.backend.batch_stats()  # type: ignore[attr-defined]
        assert (stats["native_connections"] == 1) == (transport != "grpc")
        assert (stats["streams_opened"] >= 1) == (transport == "grpc")


def test_a_node_without_a_native_port_is_reached_over_grpc(tmp_path: Path) -> None:
    with Node(tmp_path / "data", "127.0.0.1:0", native_listen="off") as node:
        assert node.native_address is None
        with Client.connect(node.address) as client:
            client.run(lambda txn: txn.set(b"r", b"c", b"v"))
            assert client.begin().get(b"r", b"c") == b"v"
            stats = client.backend.batch_stats()  # type: ignore[attr-defined]
            assert stats["native_connections"] == 0 and stats["streams_opened"] >= 1
        with Client.connect(node.address, transport="native") as client, \
                pytest.raises(Unavailable, match="no native transport"):
            client.timestamp()


# --- exposed as the gRPC port is: beyond loopback only with TLS and tokens -----------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]"])
def test_loopback_hosts_are_loopback(host: str) -> None:
    assert is_loopback(split_host(f"{host}:7070"))
    assert native_address(f"{host}:7070", "auto", ServerPolicy()) == (host, AFTER_GRPC)
    assert native_address("0.0.0.0:7070", f"{host}:0", ServerPolicy()) == (host, 0)


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "10.1.2.3", "192.168.0.1",
                                  "example.com", "[2001:db8::1]"])
def test_the_native_transport_beyond_loopback_needs_tls_and_tokens(tmp_path: Path,
                                                                  host: str) -> None:
    """Another host could reach it: as for gRPC's port, TLS and tokens (or insecure), refused
    before anything is touched."""
    assert not is_loopback(split_host(f"{host}:7070"))
    with pytest.raises(InsecureListen, match=re.escape(f"refusing to serve {host}:7071 without"
                                                       " TLS and tokens")):
        native_address("127.0.0.1:7070", f"{host}:7071", ServerPolicy())
    with pytest.raises(InsecureListen, match="without TLS"):
        native_address("127.0.0.1:7070", f"{host}:7071", ServerPolicy(tokens=TokenTable(
            {READ_TOKEN: Role.READ})))
    assert native_address(f"{host}:7070", "auto", ServerPolicy(insecure=True)) == (
        host, AFTER_GRPC)
    assert native_address("127.0.0.1:7070", f"{host}:7071", ServerPolicy(insecure=True)) == (
        host, 7071)
    with pytest.raises(InsecureListen, match=re.escape(f"{host}:0")):
        Node(tmp_path / "data", "127.0.0.1:0", native_listen=f"{host}:0")
    assert not (tmp_path / "data").exists()  # refused before the store was opened


def test_a_node_listening_on_every_address_serves_native_there_too(tmp_path: Path) -> None:
    with Node(tmp_path / "data", "0.0.0.0:0", policy=ServerPolicy(insecure=True)) as node:
        assert node.native is not None and node.native_address is not None
        with Client.connect(f"127.0.0.1:{node.port}") as client:
            client.run(lambda txn: txn.set(b"r", b"c", b"v"))
            assert client.begin().get(b"r", b"c") == b"v"
            stats = client.backend.batch_stats()  # type: ignore[attr-defined]
            assert stats["native_connections"] == 1 and stats["streams_opened"] == 0


def _ipv6_loopback() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this host")
def test_a_node_on_an_ipv6_loopback_serves_native_there_too(tmp_path: Path) -> None:
    """The native port on the gRPC host's family (it was bound IPv4 only: the node
    refused to start on [::1])."""
    with Node(tmp_path / "data", "[::1]:0") as node:
        assert node.native is not None
        with Client.connect(f"[::1]:{node.port}", transport="native") as client:
            client.run(lambda txn: txn.set(b"r", b"c", b"v"))
            assert client.begin().get(b"r", b"c") == b"v"
            stats = client.backend.batch_stats()  # type: ignore[attr-defined]
            assert stats["native_connections"] == 1 and stats["streams_opened"] == 0


READ_TOKEN = "read-" + "r" * 24


def test_a_client_beyond_the_nodes_connections_uses_grpc(tmp_path: Path) -> None:
    with Node(tmp_path / "data", "127.0.0.1:0", max_native_connections=1) as node, \
            NodeClient(node.address, timeout=WAIT) as a, \
            NodeClient(node.address, timeout=WAIT) as b:
        assert a.timestamps(1) < a.timestamps(1)  # a holds the one connection
        assert b.timestamps(1) < b.timestamps(1)  # b is refused: gRPC
        assert a.batch_stats()["native_connections"] == 1
        assert b.batch_stats()["native_connections"] == 0
        assert b.batch_stats()["streams_opened"] == 1
        assert node.native is not None and node.native.refused == 1


def calls_to(port: int, **kwargs: object) -> NativeCalls:
    """The client side alone, told the port (no gRPC server to ask)."""
    return NativeCalls("127.0.0.1", lambda: port, timeout=WAIT, max_frame=1 << 26,
                       required=True, **kwargs)  # type: ignore[arg-type]


def stamps_of(reply: bytes) -> list[int]:
    return [r.get_timestamps.first for r in node_pb2.BatchResponse.FromString(reply).results]


def test_an_idle_connection_closed_by_the_node_is_replaced_unnoticed(tmp_path: Path) -> None:
    with native(tmp_path / "data", idle=0.2) as n:
        calls = calls_to(n.port)
        try:
            first = stamps_of(calls.call(stamps_batch(1)[5:]) or b"")
            assert n.server.open_connections == 1
            wait_until(lambda: n.server.open_connections == 0, "the node closed the idle one")
            again = stamps_of(calls.call(stamps_batch(1)[5:]) or b"")  # resent, no error
            assert again > first and calls.connections_opened == 2
        finally:
            calls.close()


def test_a_reply_of_the_wrong_kind_is_a_protocol_error() -> None:
    """The node's side of the contract broken (a fake node): the batch fails, clearly,
    with its outcome unknown to the client."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def fake_node() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(WAIT)
            assert read_frame(conn) is not None
            conn.sendall(native_wire.encode(native_wire.WELCOME, b""))
            assert read_frame(conn) is not None
            conn.sendall(native_wire.encode(native_wire.WELCOME, b""))
            read_frame(conn)

    thread = threading.Thread(target=fake_node)
    thread.start()
    calls = calls_to(port)
    try:
        with pytest.raises(StorageError, match="protocol error"):
            calls.call(stamps_batch(1)[5:])
    finally:
        calls.close()
        thread.join(WAIT)
        listener.close()


def test_pipelined_batches_from_many_threads_are_answered_to_their_senders(node: Node) -> None:
    """16 threads, up to 4 batches of one client on the wire at once: every caller gets a
    range of its own size; the ranges never overlap; each thread's are increasing."""
    got: list[list[tuple[int, int]]] = [[] for _ in range(16)]
    with NodeClient(node.address, timeout=WAIT, max_in_flight=4) as client:
        def run(i: int) -> None:
            for n in range(60):
                count = 1 + (i + n) % 5
                got[i].append((client.timestamps(count), count))

        run_in_threads(16, run)
        assert client.batch_stats()["native_connections"] == 1
    for mine in got:
        assert len(mine) == 60 and all(a[0] < b[0] for a, b in zip(mine, mine[1:]))
    every = sorted(ts for mine in got for first, count in mine
                   for ts in range(first, first + count))
    assert len(every) == len(set(every)), "a timestamp was handed out twice"


# --- the wire -----------------------------------------------------------------------------


def test_pipelined_batches_are_answered_in_order(node: Node) -> None:
    assert node.native is not None
    with connect(node.native.port) as sock:
        sock.sendall(b"".join(stamps_batch(n, 1) for n in range(1, 21)))  # all on the wire
        answers = replies(sock, 20)
    firsts = []
    for n, reply in enumerate(answers, start=1):
        stamps = [r.get_timestamps for r in reply.results]
        assert [s.count for s in stamps] == [n, 1], "answered out of order"
        firsts += [stamps[0].first, stamps[1].first]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts)


def test_an_oversize_frame_is_refused_before_it_is_read(node: Node) -> None:
    assert node.native is not None
    limit = node.store.limits.max_message_bytes
    with connect(node.native.port) as sock:
        sock.sendall(native_wire.HEADER.pack(limit + 1, native_wire.BATCH))
        assert "exceeds the limit" in must_close(sock, Code.RESOURCE_EXHAUSTED)
    with connect(node.native.port) as sock:  # the node is unharmed
        sock.sendall(stamps_batch(1))
        assert replies(sock, 1)[0].results[0].get_timestamps.count == 1


GARBAGE = {
    "http": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Code.INVALID_ARGUMENT),
    "http2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Code.INVALID_ARGUMENT),
    "tls-client-hello": (bytes.fromhex("160301020001") + b"\x00" * 40, Code.INVALID_ARGUMENT),
    "random": (random.Random(15).randbytes(200), Code.INVALID_ARGUMENT),
    "hello-not-protobuf": (native_wire.encode(native_wire.HELLO, b"\xff\xff\xff"),
                           Code.INVALID_ARGUMENT),
    "wrong-version": (hello(version=99), Code.FAILED_PRECONDITION),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_before_the_hello_is_refused_without_a_traceback(
        node: Node, name: str, caplog: pytest.LogCaptureFixture) -> None:
    data, code = GARBAGE[name]
    assert node.native is not None
    caplog.set_level(logging.DEBUG)
    with connect(node.native.port, greet=False) as sock:
        sock.sendall(data)
        must_close(sock, code)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


AFTER_HELLO = {
    "unknown-kind": (native_wire.HEADER.pack(3, 9) + b"abc", Code.INVALID_ARGUMENT),
    "second-hello": (hello(), Code.INVALID_ARGUMENT),
    "batch-not-protobuf": (native_wire.encode(native_wire.BATCH, b"\x0a\xff\xff\xff\x0f"),
                           Code.INVALID_ARGUMENT),
    "batch-unknown-field": (native_wire.encode(native_wire.BATCH, b"\x7a\x01x"),  # field 15
                            Code.INVALID_ARGUMENT),
}


@pytest.mark.parametrize("name", sorted(AFTER_HELLO))
def test_garbage_after_the_hello_closes_the_connection_unexecuted(
        node: Node, name: str, caplog: pytest.LogCaptureFixture) -> None:
    data, code = AFTER_HELLO[name]
    assert node.native is not None
    caplog.set_level(logging.DEBUG)
    with connect(node.native.port) as sock:
        sock.sendall(stamps_batch(1) + data + stamps_batch(1))
        first = replies(sock, 1)[0].results[0].get_timestamps.first
        must_close(sock, code)  # the batch after the garbage is not executed
    with connect(node.native.port) as sock:
        sock.sendall(stamps_batch(1))
        assert replies(sock, 1)[0].results[0].get_timestamps.first > first
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# --- bounds: slow, silent and greedy peers ---------------------------------------------------


def closed_within(sock: socket.socket, code: grpc.StatusCode, bound: float) -> float:
    began = time.monotonic()
    must_close(sock, code)
    took = time.monotonic() - began
    assert took < bound, f"held the connection {took:.2f}s"
    return took


def test_a_silent_peer_is_dropped_after_the_hello_deadline(tmp_path: Path) -> None:
    """The deadline is seconds long: the test must see both in and the third refused before
    it, on a loaded machine too."""
    with native(tmp_path / "data", hello_deadline=HANDSHAKE_WINDOW, max_connections=2,
                max_handshakes=2) as n:
        silent = [connect(n.port, greet=False) for _ in range(2)]
        wait_until(lambda: n.server.open_connections == 2, "both are admitted")
        with connect(n.port, greet=False) as third:  # beyond the cap: refused at once
            third.sendall(hello())
            must_close(third, Code.RESOURCE_EXHAUSTED)
        for sock in silent:
            with sock:
                assert read_frame(sock) is None  # no HELLO in time: closed, no thread held
        wait_until(lambda: n.server.open_connections == 0, "their threads are free")
        with connect(n.port) as sock:  # and a real client gets in
            sock.sendall(stamps_batch(1))
            assert replies(sock, 1)[0].results[0].get_timestamps.count == 1


def test_an_idle_peer_is_closed_between_batches(tmp_path: Path) -> None:
    with native(tmp_path / "data", idle=0.3) as n, connect(n.port) as sock:
        sock.sendall(stamps_batch(1))
        replies(sock, 1)
        assert "idle" in must_close(sock, Code.UNAVAILABLE)
        wait_until(lambda: n.server.open_connections == 0, "its thread is free")


def test_a_trickling_peer_is_closed_at_the_frame_deadline(tmp_path: Path) -> None:
    """One byte at a time, each well within the idle bound: the frame's deadline ends it."""
    with native(tmp_path / "data", idle=5.0, frame_deadline=0.5) as n, \
            connect(n.port) as sock:
        frame = stamps_batch(1)
        began = time.monotonic()
        try:
            for byte in frame[:-1]:  # never the last byte: ~1 s of trickle
                sock.sendall(bytes((byte,)))
                threading.Event().wait(0.1)
        except OSError:
            pass  # closed by the node already
        must_close(sock, Code.UNAVAILABLE)
        assert time.monotonic() - began < 3.0, "the trickle held the connection"
        wait_until(lambda: n.server.open_connections == 0, "its thread is free")


def test_a_peer_that_reads_no_replies_cannot_hold_a_thread(tmp_path: Path) -> None:
    """Large replies pipelined to a peer that never reads: the node's send times out."""
    with native(tmp_path / "data", frame_deadline=0.5) as n, connect(n.port) as sock:
        n.store.mutate_rows([RowMutation(b"t", b"big", (Put(b"c", 1, b"x" * (1 << 20)),))])
        read = node_pb2.BatchRequest(commands=[node_pb2.Command(
            read_rows=wire.read_request_to_pb([RowRead(b"t", b"big")]))])
        sock.sendall(native_wire.encode(native_wire.BATCH, read.SerializeToString()) * 64)
        wait_until(lambda: n.server.open_connections == 0, "the node gave up on the peer")


# --- stopping, crashing, restarting ----------------------------------------------------------


def test_a_stopping_node_answers_close_and_executes_nothing_more(tmp_path: Path) -> None:
    node = Node(tmp_path / "data", "127.0.0.1:0").start()
    try:
        assert node.native is not None
        sock = connect(node.native.port)
        sock.sendall(stamps_batch(1))
        replies(sock, 1)
        stopper = threading.Thread(target=node.stop)
        stopper.start()
        assert "stopping" in must_close(sock, Code.UNAVAILABLE)
        sock.close()
        stopper.join(WAIT)
        assert not stopper.is_alive()
    finally:
        node.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_node_killed_mid_batch_and_restarted(tmp_path: Path) -> None:
    """kill -9 while commits execute at the node (each pauses after its write, before its
    reply); then a restart on the same gRPC port, its native port elsewhere.  The client
    reconnects by itself (asking the node again where the native port is); every commit
    acknowledged is stored; the ones in flight were reported undetermined, never failed."""
    port = free_port()
    args = ("--listen", f"127.0.0.1:{port}", "--native-listen", "127.0.0.1:0")
    server = ServerProcess(tmp_path / "data", *args,
                           env={"PERCOLATOR_FAILPOINTS": "commit.after_commit_primary=sleep(300)"})
    server.start()
    acked: list[list[bytes]] = [[] for _ in range(3)]
    unknown: list[BaseException] = []
    stop = threading.Event()
    with Client.connect(f"127.0.0.1:{port}", timeout=5.0, table=b"kill") as client:
        def run(i: int) -> None:
            n = 0
            while not stop.is_set():
                row = b"%d-%05d" % (i, n)
                n += 1
                try:
                    with client.transaction() as txn:
                        txn.set(row, b"c", row)
                    acked[i].append(row)
                except (CommitUndetermined, StorageError, TransactionError) as exc:
                    unknown.append(exc)
                    stop.wait(0.02)  # paced while the node is down

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: all(len(a) >= 2 for a in acked), "commits acknowledged")
            server.kill()
            wait_until(lambda: any(isinstance(e, CommitUndetermined) for e in unknown),
                       "a commit in flight is reported undetermined")
            restarted = ServerProcess(tmp_path / "data", *args).start()
            try:
                stats = client.backend.batch_stats  # type: ignore[attr-defined]
                wait_until(lambda: stats()["native_connections"] >= 2,
                           "the client reconnected natively", bound=60.0)
                after = [len(a) for a in acked]
                wait_until(lambda: all(len(a) >= b + 3 for a, b in zip(acked, after)),
                           "commits acknowledged on the new connection")
                stop.set()
                for t in threads:
                    t.join(WAIT)
                assert not any(t.is_alive() for t in threads)
                rows = [row for a in acked for row in a]
                with Client.connect(f"127.0.0.1:{port}", table=b"kill") as fresh:
                    got = fresh.begin().get_many([(row, b"c") for row in rows])
                assert got == {(row, b"c"): row for row in rows}, "an acknowledged commit lost"
            finally:
                restarted.terminate()
        finally:
            stop.set()
            for t in threads:
                t.join(WAIT)


def test_the_same_garbage_repeated_is_logged_once(node: Node,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A stranger sending the same refused HELLO again and again cannot grow the log:
    each cause is logged once (as gRPC's undecodable requests are); every connection is
    still refused."""
    assert node.native is not None
    caplog.set_level(logging.DEBUG)
    length = (1 << 16) + random.Random().randrange(1, 1 << 20)  # a cause of this test's own
    for _ in range(5):
        with connect(node.native.port, greet=False) as sock:
            sock.sendall(native_wire.HEADER.pack(length, native_wire.HELLO))
            must_close(sock, Code.RESOURCE_EXHAUSTED)
    warned = [r for r in caplog.records
              if r.levelno >= logging.WARNING and str(length) in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]


class SlowFakeNode:
    """A fake node answering each connection's batches in order, ``delay`` seconds each
    (echoing the payload), or with ``close``'s payload as a CLOSE frame instead."""

    def __init__(self, delay: float, close: bytes | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.delay, self.close_payload = delay, close
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(WAIT)
            try:
                if read_frame(conn) is None:
                    return
                conn.sendall(native_wire.encode(native_wire.WELCOME, b""))
                while (frame := read_frame(conn)) is not None:
                    if self._stop.wait(self.delay):
                        return
                    conn.sendall(native_wire.encode(native_wire.REPLY, frame[1])
                                 if self.close_payload is None else
                                 native_wire.encode(native_wire.CLOSE, self.close_payload))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()


def test_batches_that_wait_too_long_for_the_replies_ahead_fail_without_a_hang(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches pipelined on one connection to a slow node: those whose turn does not come
    within the turn wait fail Unavailable (outcome unknown), as does the one being read
    when the connection ends; none hangs, none is told a protocol error, and a later
    batch goes on a new connection."""
    monkeypatch.setattr(native_client, "_TURN_MARGIN", 0.05)
    node = SlowFakeNode(delay=0.25)
    calls = NativeCalls("127.0.0.1", lambda: node.port, timeout=0.3, max_frame=1 << 20,
                        required=True)
    outcomes: dict[int, object] = {}

    def send(i: int) -> None:
        try:
            outcomes[i] = calls.call(b"batch-%d" % i)
        except Exception as exc:  # noqa: BLE001 - what each sender is told is the point
            outcomes[i] = exc

    try:
        run_in_threads(8, send)
        assert len(outcomes) == 8, "a sender never returned"
        failed = [o for o in outcomes.values() if isinstance(o, Exception)]
        assert failed and all(isinstance(o, Unavailable) for o in failed), outcomes
        replies = {o for o in outcomes.values() if isinstance(o, bytes)}
        assert replies <= {b"batch-%d" % i for i in range(8)}
        node.delay = 0.0
        opened = node.connections
        assert calls.call(b"later") == b"later"
        assert opened >= 1 and node.connections >= 2  # the failed connection was replaced
    finally:
        calls.close()
        node.stop()


def test_a_close_frame_that_does_not_decode_fails_the_batch_clearly() -> None:
    """A node (or something posing as one) breaking the protocol: the batch fails with a
    protocol error, its outcome unknown, and the next batch does not wait behind it."""
    node = SlowFakeNode(delay=0.0, close=b"\xff\xff\xff")
    calls = calls_to(node.port)
    try:
        with pytest.raises(StorageError, match="protocol error.*CLOSE frame does not decode"):
            calls.call(b"batch")
    finally:
        calls.close()
        node.stop()


def test_a_node_that_failed_its_fsync_leaves_the_outcome_unknown_not_unexecuted() -> None:
    """A CLOSE UNAVAILABLE without an error name is a stopping (or idle-closing) node's:
    nothing unanswered was executed, the batch goes again.  The CLOSE of a node whose
    fsync failed is named: what it had not answered may or may not have taken effect,
    and the caller is told so, never "not executed"."""
    failed = node_pb2.CommandError(
        code=Code.UNAVAILABLE.value[0], error="Unavailable",
        message="the node could not fsync its log (EIO): requests not answered may or may"
                " not have taken effect").SerializeToString()
    stopping = node_pb2.CommandError(code=Code.UNAVAILABLE.value[0],
                                     message="the node is stopping").SerializeToString()
    for payload, told in ((failed, "may or may not have taken effect"),
                          (stopping, "it was not executed")):
        node = SlowFakeNode(delay=0.0, close=payload)
        calls = calls_to(node.port)
        try:
            with pytest.raises(Unavailable, match=told):
                calls.call(b"batch")
        finally:
            calls.close()
            node.stop()


def test_out_of_descriptors_the_accept_thread_pauses_instead_of_spinning(
        tmp_path: Path) -> None:
    """accept() failing with EMFILE leaves the connection pending, and select reports it
    at once: the thread pauses between attempts (and says so once), never spins."""
    service = NodeService(LocalBackend.open(str(tmp_path / "data")))
    server = NativeServer("127.0.0.1", 0, service.open_native,
                          budgets={native_wire.BATCH: 1 << 20})
    real = server._listener  # noqa: SLF001 - the accept under test
    attempts = 0

    class Starved:
        def fileno(self) -> int:
            return real.fileno()

        def accept(self) -> tuple[socket.socket, object]:
            nonlocal attempts
            attempts += 1
            raise OSError(errno.EMFILE, "Too many open files")

        def close(self) -> None:
            real.close()

    server._listener = Starved()  # type: ignore[assignment]  # noqa: SLF001
    server.start()
    pending = socket.create_connection(("127.0.0.1", server.port))
    try:
        wait_until(lambda: attempts >= 1, "an accept was tried")
        threading.Event().wait(0.5)  # the measure: attempts in half a second
        assert attempts <= 10, f"{attempts} accepts in 0.5 s: the thread spins"
    finally:
        pending.close()
        server.stop()
        service._backend.close()  # noqa: SLF001
