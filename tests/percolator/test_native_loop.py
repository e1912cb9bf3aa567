"""The native server's event loop (``percolator._transport.native_loop``): requests that
may wait run on a pool thread without holding other connections or their own
connection's order; a peer that reads no replies holds nobody; stopping answers what
runs, then closes.  Real sockets against a NativeServer whose executors the tests
define (what runs where is seen by the executing thread's name)."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from bigtable_lite import InvalidArgument, StorageError
from bigtable_lite._log_sync import LogSync
from percolator import Client
from percolator._backend import CellWrite, PrewriteRequest
from percolator._transport import native_wire
from percolator._transport.native_server import Handlers, MayWait, NativeServer
from percolator.node import Node
from percolator.records import PUT
from percolator.v1 import node_pb2
from tests.bigtable_lite.test_log_sync import HeldPass

from .test_native import WAIT, connect, must_close, read_frame, wait_until
from .txn_service_client import ServiceClient

Code = grpc.StatusCode


class Executors:
    """``quick:X`` is answered on the loop; ``write:X`` too, after a write that skips its
    fsync (counted in ``durability``, its count in the reply); ``wait:X`` waits for
    ``gate`` on a pool thread; ``fail:X`` fails (InvalidArgument) on a pool thread;
    ``big:X`` is answered with a MiB.  Each reply says which thread ran it."""

    def __init__(self, durability: LogSync | None = None) -> None:
        self.gate = threading.Event()
        self.waiting = threading.Event()  # a wait: request is on a pool thread
        self.durability = durability
        self.ran: list[bytes] = []  # the X of each quick:X, in the order they ran

    def open(self, hello: node_pb2.NativeHello, tls: object) -> Handlers:
        return {native_wire.BATCH: self.execute}

    def execute(self, payload: bytes, on_loop: bool) -> bytes:
        verb, _, what = payload.partition(b":")
        if verb not in (b"quick", b"write") and on_loop:
            raise MayWait()
        if verb == b"write":
            assert self.durability is not None and self.durability.defers()
            self.durability.issued += 1  # as the store's Mutator counts a deferred write
            self.durability.done += 1
            return b"write:%s:%d" % (what, self.durability.done)
        if verb == b"wait":
            self.waiting.set()
            assert self.gate.wait(WAIT)
        elif verb == b"fail":
            raise InvalidArgument("failed as asked")
        elif verb == b"big":
            return b"x" * (1 << 20)
        elif verb == b"quick":
            self.ran.append(what)
        return b"%s:%s:%s" % (verb, what, threading.current_thread().name.encode())


@contextmanager
def server(executors: Executors, **bounds: float) -> Iterator[NativeServer]:
    native = NativeServer("127.0.0.1", 0, executors.open,  # type: ignore[arg-type]
                          budgets={native_wire.BATCH: 4 << 20}, **bounds)  # type: ignore[arg-type]
    native.start()
    try:
        yield native
    finally:
        executors.gate.set()
        native.stop()
        assert native.join(WAIT), "connections outlived stop"


def send(sock: socket.socket, *payloads: bytes) -> None:
    sock.sendall(b"".join(native_wire.encode(native_wire.BATCH, p) for p in payloads))


def reply(sock: socket.socket) -> list[bytes]:
    frame = read_frame(sock)
    assert frame is not None and frame[0] == native_wire.REPLY, frame
    return frame[1].split(b":")


def test_a_request_that_may_wait_holds_neither_others_nor_its_connections_order() -> None:
    executors = Executors()
    with server(executors) as native, connect(native.port) as a, connect(native.port) as b:
        send(a, b"wait:1", b"quick:2")  # pipelined: 2 must wait behind 1
        assert executors.waiting.wait(WAIT)
        send(b, b"quick:3")
        verb, what, thread = reply(b)
        assert (verb, what, thread) == (b"quick", b"3", b"native-loop")
        assert select.select([a], [], [], 0)[0] == [], "answered out of order"
        executors.gate.set()
        verb, what, thread = reply(a)
        assert (verb, what) == (b"wait", b"1") and thread.startswith(b"native-exec")
        assert reply(a)[:2] == [b"quick", b"2"]


def test_a_failure_on_a_pool_thread_closes_its_connection_with_its_status() -> None:
    executors = Executors()
    with server(executors) as native, connect(native.port) as a, connect(native.port) as b:
        send(a, b"fail:1", b"quick:2")
        assert "failed as asked" in must_close(a, Code.INVALID_ARGUMENT)
        send(b, b"quick:3")
        assert reply(b)[:2] == [b"quick", b"3"]
        wait_until(lambda: native.open_connections == 1, "the failed connection is gone")


def test_a_peer_that_reads_no_replies_holds_no_other_connection() -> None:
    executors = Executors()
    with server(executors, frame_deadline=0.5) as native, connect(native.port) as a, \
            connect(native.port) as b:
        send(a, *[b"big:%d" % i for i in range(64)])  # 64 MiB of replies nobody reads
        for i in range(20):
            send(b, b"quick:%d" % i)
            assert reply(b)[:2] == [b"quick", b"%d" % i]
        wait_until(lambda: native.open_connections == 1, "the node gave up on the peer")
        send(b, b"quick:last")
        assert reply(b)[:2] == [b"quick", b"last"]


def test_stopping_answers_the_request_on_a_pool_thread_then_closes() -> None:
    executors = Executors()
    native = NativeServer("127.0.0.1", 0, executors.open,  # type: ignore[arg-type]
                          budgets={native_wire.BATCH: 1 << 20}).start()
    with connect(native.port) as a:
        send(a, b"wait:1", b"quick:2")
        assert executors.waiting.wait(WAIT)
        native.stop()
        executors.gate.set()
        assert reply(a)[:2] == [b"wait", b"1"]  # run already: answered
        assert "stopping" in must_close(a, Code.UNAVAILABLE)  # 2 was not run
    assert native.join(WAIT)


@pytest.mark.parametrize("payload", [b"quick:1", b"wait:1"])
def test_a_frame_of_a_kind_without_an_executor_is_refused(payload: bytes) -> None:
    executors = Executors()
    executors.gate.set()
    with server(executors) as native, connect(native.port) as a:
        send(a, payload)
        assert reply(a)[:2] == payload.split(b":")
        a.sendall(native_wire.encode(native_wire.TXN, b"anything"))
        assert "unexpected frame kind" in must_close(a, Code.INVALID_ARGUMENT)


def test_pipelined_replies_beyond_the_unsent_bound_all_arrive_in_order() -> None:
    """Replies are held back at a bound while the peer reads; none is lost or reordered."""
    executors = Executors()
    with server(executors) as native, connect(native.port) as a:
        send(a, *[p for i in range(8) for p in (b"big:%d" % i, b"quick:%d" % i)])
        for i in range(8):
            frame = read_frame(a)
            assert frame is not None and frame[1] == b"x" * (1 << 20)
            assert reply(a)[:2] == [b"quick", b"%d" % i]


# --- a node's executors ---------------------------------------------------------------------


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("native-exec")}


def test_a_transactions_read_waiting_for_a_lock_holds_no_other_connection(
        tmp_path: Path) -> None:
    """A TXN Begin meets a live lock: on the loop it would sleep, so it runs again on a pool
    thread (and answers once the lock is gone) while other connections are served."""
    with Node(tmp_path / "n", "127.0.0.1:0", txn_lock_wait=WAIT) as node, \
            Client.connect(node.address) as owner, Client.connect(node.address) as other, \
            ServiceClient(node.address, native=True) as svc:
        earlier = pool_threads()  # other servers' (of earlier tests), leaving
        start_ts = owner.timestamp()
        assert owner.backend.prewrite(PrewriteRequest(
            owner.table, start_ts, (b"k", b"c"), 60_000,
            [(b"k", [CellWrite(b"c", PUT, b"v")])])) is None
        began: list[dict[tuple[bytes, bytes], bytes | None]] = []
        reader = threading.Thread(target=lambda: began.append(svc.begin([(b"k", b"c")]).values))
        reader.start()
        wait_until(lambda: bool(pool_threads() - earlier), "the Begin runs on a pool thread")
        with other.transaction() as txn:  # another connection: served meanwhile
            txn.set(b"other", b"c", b"1")
        assert other.begin().get(b"other", b"c") == b"1"
        assert reader.is_alive() and not began
        owner.backend.rollback(owner.table, start_ts, (b"k", b"c"), [])
        reader.join(WAIT)
        assert began == [{(b"k", b"c"): None}]


def test_transactions_that_meet_no_lock_run_on_the_loop(tmp_path: Path) -> None:
    with Node(tmp_path / "n", "127.0.0.1:0") as node, \
            ServiceClient(node.address, native=True) as svc:
        earlier = pool_threads()
        for n in range(3):
            txn = svc.begin([(b"acct", b"bal")])
            txn.set(b"acct", b"bal", b"%d" % n)
            assert txn.commit() > 0
        assert svc.begin([(b"acct", b"bal")], read_only=True).values == {(b"acct", b"bal"): b"2"}
        assert not pool_threads() - earlier


def test_a_frame_in_many_reads_and_a_reply_in_many_sends_arrive_whole() -> None:
    executors = Executors()
    body = bytes(range(256)) * ((3 << 19) // 256)  # 1.5 MiB: over the loop's 1 MiB
    with server(executors) as native, connect(native.port) as a:
        send(a, b"quick:" + body, b"big:1", b"quick:2")
        verb, *rest = reply(a)
        assert verb == b"quick" and b":".join(rest).startswith(body)
        assert rest[-1].startswith(b"native-exec"), "a large request runs off the loop"
        frame = read_frame(a)
        assert frame is not None and frame[1] == b"x" * (1 << 20)
        assert reply(a)[:2] == [b"quick", b"2"]


def test_requests_beyond_a_turn_are_answered_in_order_after_the_others_turns() -> None:
    executors = Executors()
    with server(executors) as native, connect(native.port) as a, connect(native.port) as b:
        send(a, *[b"quick:%d" % i for i in range(100)])
        send(b, b"quick:b")
        assert reply(b)[:2] == [b"quick", b"b"]
        assert [reply(a)[1] for _ in range(100)] == [b"%d" % i for i in range(100)]


def test_a_reply_waits_for_the_fsync_that_covers_the_writes_before_it(
        tmp_path: Path) -> None:
    """Under ``--sync always`` the loop's writes skip their fsync: their replies, and any
    reply computed after them, are sent only once the loop's pass over the log is over."""
    durability = LogSync(tmp_path)
    held = HeldPass()
    durability.before_fsync = held
    executors = Executors(durability)
    with server(executors, durability=durability) as native, connect(native.port) as a, \
            connect(native.port) as b:
        send(a, b"write:1")
        assert held.entered.wait(WAIT), "no pass over the log after a deferred write"
        send(b, b"quick:2")  # read after the write: waits for the same fsync, or the next
        assert select.select([a, b], [], [], 0.2)[0] == [], "answered before the fsync"
        held.go.set()
        verb, what, count = reply(a)
        assert (verb, what, count) == (b"write", b"1", b"1")
        assert durability.durable >= 1
        assert reply(b)[:2] == [b"quick", b"2"]
        passes = durability.passes
        send(b, b"quick:3")  # nothing waits for an fsync now: none is made
        assert reply(b)[:2] == [b"quick", b"3"]
        assert durability.passes == passes


def test_writes_of_one_turn_share_one_fsync(tmp_path: Path) -> None:
    durability = LogSync(tmp_path)
    held = HeldPass()
    durability.before_fsync = held
    executors = Executors(durability)
    with server(executors, durability=durability) as native, connect(native.port) as a:
        send(a, b"write:0")
        assert held.entered.wait(WAIT)  # the loop is in its first pass: the next queue up
        send(a, *[b"write:%d" % i for i in range(1, 11)])
        with connect(native.port) as b:
            send(b, b"write:b")
            held.go.set()
            assert reply(a)[:2] == [b"write", b"0"]
            for i in range(1, 11):
                assert reply(a)[:2] == [b"write", b"%d" % i]
            assert reply(b)[:2] == [b"write", b"b"]
    assert durability.done == 12
    assert durability.passes <= 3, "one fsync per write: no group commit"


def test_a_failed_fsync_closes_every_connection_with_its_replies_unsent(
        tmp_path: Path) -> None:
    durability = LogSync(tmp_path)
    held = HeldPass(fail=True)
    durability.before_fsync = held
    executors = Executors(durability)
    with server(executors, durability=durability) as native, connect(native.port) as a, \
            connect(native.port) as b:
        send(b, b"quick:1")
        assert reply(b)[:2] == [b"quick", b"1"]
        send(a, b"write:1")
        assert held.entered.wait(WAIT)
        held.go.set()
        assert "could not fsync" in must_close(a, Code.UNAVAILABLE)
        assert "could not fsync" in must_close(b, Code.UNAVAILABLE)
        with connect(native.port) as c:  # and every later connection
            assert "could not fsync" in must_close(c, Code.UNAVAILABLE)
    assert durability.failed is not None
    with pytest.raises(StorageError, match="could not be synced"):
        durability.settle()


def test_a_fsync_failed_by_another_thread_closes_the_loops_connections(
        tmp_path: Path) -> None:
    """A gRPC thread's pass (``settle``) fails: the loop answers nothing more either."""
    durability = LogSync(tmp_path)
    held = HeldPass(fail=True)
    held.go.set()
    durability.before_fsync = held
    executors = Executors(durability)
    with server(executors, durability=durability) as native, connect(native.port) as a:
        send(a, b"quick:1")
        assert reply(a)[:2] == [b"quick", b"1"]
        durability.issued += 1  # as if the loop had written without its fsync
        durability.done += 1
        with pytest.raises(StorageError, match="could not be synced"):
            durability.settle()  # another thread about to answer what it read
        send(a, b"quick:2")
        assert "could not fsync" in must_close(a, Code.UNAVAILABLE)


def test_a_connection_that_keeps_sending_gets_a_turn_a_pass_as_the_others() -> None:
    """A peer sending requests without pause (its replies read): another connection's
    request runs after at most a few turns of it.  It was queued for another turn once
    more per read, so the longer it sent the more turns it took each pass (and its
    inbox grew without bound): a probe's wait grew from 0.2 to 400 ms."""
    executors = Executors()
    with server(executors) as native, connect(native.port) as a, connect(native.port) as b:
        stop = threading.Event()

        def flood() -> None:
            try:
                while not stop.is_set():
                    send(a, *[b"quick:a"] * 64)
            except OSError:
                pass  # closed at the end

        def drain() -> None:
            try:
                while not stop.is_set() and a.recv(1 << 16):
                    pass
            except OSError:
                pass

        threads = [threading.Thread(target=flood, daemon=True),
                   threading.Thread(target=drain, daemon=True)]
        for thread in threads:
            thread.start()
        betweens = []
        try:
            wait_until(lambda: len(executors.ran) >= 30_000, "the flood ran a while")
            for _ in range(5):
                before = len(executors.ran)
                send(b, b"quick:b")
                assert reply(b)[:2] == [b"quick", b"b"]
                betweens.append(executors.ran.index(b"b", before) - before)
        finally:
            stop.set()
            a.shutdown(socket.SHUT_RDWR)
            for thread in threads:
                thread.join(WAIT)
        # Counted from before the probe was sent: a test thread held off the CPU while
        # sending (the flood runs meanwhile) inflates one probe, never all five; the
        # unfair loop made every probe wait thousands.
        assert min(betweens) <= 10 * 16, f"requests of the flooding peer ran first: {betweens}"
