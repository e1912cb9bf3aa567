"""The native server's event loop: one thread reads, executes and answers the requests
of every admitted connection.

Why one thread: with a thread per connection every request cost the node two context
switches (its connection's thread woken by the request's bytes, then put to sleep in
``recv`` again) and GIL hand-overs between connections' threads; on the virtual
machines this runs on a switch costs tens of microseconds of the node's CPU, a third of
its time per transfer at 4 clients.  The GIL runs one request's Python at a time
anyway, so one thread waiting in ``epoll`` serves every connection, and while requests
keep coming it never sleeps: one request's reply is sent and the next connection's
request is already waiting.

A request that may wait (for a lock's owner, a whole garbage-collection pass, an fsync
it asks for itself; ``Executor``), or a large one (over 1 MiB: many MiBs take tens
of milliseconds to write), must not hold the others: it runs on a pool thread.  Only
those: a pool thread's Python fights the loop for the GIL (4 observer workers whose
scans ran there cost the node 1.7x one worker's CPU per paper).  An
executor called on the loop (``on_loop=True``) raises :class:`MayWait` before it has any
effect (``percolator._waits``: the loop's thread refuses waits), and the request runs
again there.  Its connection is left alone meanwhile (its next requests wait, so a
connection's requests are still answered in order); the reply comes back to the loop,
which sends it.

On a node that fsyncs its writes (``--sync always``) the loop writes without waiting
for the fsync (``durability``, ``bigtable_lite._log_sync``): a reply computed after any
write that is not durable yet -- its own request's, or one it may have read -- is held
in its connection's queue.  Once the loop has served every request that was ready, it
fsyncs the log itself, once, and sends them: one fsync answers all the requests of one
turn of the loop, and the more clients wait, the more requests share it.  (A syncer
thread beside the loop made it one fsync per commit at 4 clients, and each hand-over
cost the node context switches and a GIL hand-over: 9 switches a transfer.)

Sockets are non-blocking: a reply the peer does not read waits in its connection's
buffer (and that connection's next requests with it) while the others are served; a
frame once begun must arrive within ``frame_deadline``, a connection with no request
for ``idle`` seconds is closed, as is one whose replies stay unread for
``frame_deadline``.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import grpc

from bigtable_lite import StorageError
from bigtable_lite.guard import note_refused

from .._waits import MayWait, refuse_waits
from ..v1 import node_pb2 as pb
from . import native_wire as wire

__all__ = ["Closing", "Durability", "Executor", "Handlers", "Loop", "MayWait"]

log = logging.getLogger(__name__)

Executor = Callable[[bytes, bool], bytes]
"""Executes one request frame's payload (e.g. a serialized BatchRequest): the payload
of its REPLY.  Its second argument says whether it is called on the loop: then it
raises :class:`MayWait` for a request that may wait, before doing anything.  Raises
for a request that cannot be executed at all (the connection is then closed with its
status)."""
Handlers = Mapping[int, Executor]
"""A connection's executor for each request kind it may send (``native_wire.BATCH``,
``native_wire.TXN``); a frame of another kind closes the connection."""


class Durability(Protocol):
    """The store's deferred fsyncs (``bigtable_lite._log_sync.LogSync``): the loop's writes
    skip their fsync, and what it answers waits until ``durable`` covers them."""

    durable: int
    failed: Exception | None

    def defer_here(self) -> None: ...

    def stop_deferring(self) -> None: ...

    def pending(self) -> int: ...

    def sync_now(self) -> None: ...


_CHUNK = 1 << 16  # bytes asked of one recv
_UNSENT = 1 << 20  # replies waiting to be sent: no more requests executed till they go
_TURN = 16  # requests of one connection run in a row before the others get a turn
_LARGE = 1 << 20  # a request frame of more bytes runs on a pool thread (writing many MiBs
# takes tens of milliseconds: the loop would hold every other connection that long)
_READABLE = select.EPOLLIN | select.EPOLLRDHUP
_WRITABLE = select.EPOLLOUT
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_STOPPING = "the node is stopping: requests not answered were not executed"
_IDLE = ("connection idle (or a frame too slow): closed; requests not answered were not"
         " executed")


class Closing(Exception):
    """End a connection with a CLOSE frame of this code and message (``name``: the
    error's name, for the client to raise the same error)."""

    def __init__(self, code: grpc.StatusCode, message: str, name: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.name = code, message, name

    def frame(self) -> bytes:
        return wire.encode(wire.CLOSE, pb.CommandError(
            code=self.code.value[0], message=self.message, error=self.name
        ).SerializeToString())


class _Connection:
    """One admitted connection's state, the loop's alone (a pool thread only executes)."""

    __slots__ = ("began", "budgets", "busy", "closing", "events", "fd", "handlers", "held",
                 "held_bytes", "inbox", "last", "outbox", "queued", "raw", "sent", "sock",
                 "stuck")

    def __init__(self, sock: socket.socket, raw: socket.socket, handlers: Handlers,
                 budgets: Mapping[int, int], buffered: bytes, now: float) -> None:
        self.sock, self.raw, self.fd = sock, raw, sock.fileno()
        self.handlers = handlers
        self.budgets = {kind: budgets[kind] for kind in handlers if kind in budgets}
        # Buffers that grow at their end and shrink at their start without copying the
        # rest (a frame of many MiB arrives in many reads; a reply leaves in many sends).
        self.inbox = bytearray(buffered)  # bytes of frames not executed yet
        self.outbox = bytearray()  # replies; outbox[sent:] not sent yet
        self.sent = 0
        # Replies (and a CLOSE) waiting for an fsync: (deferred writes it must cover, frame).
        self.held: deque[tuple[int, bytes]] = deque()
        self.held_bytes = 0
        self.began: float | None = now if buffered else None  # a frame's first bytes came
        self.stuck: float | None = None  # replies wait unsent (and unread) since
        self.last = now  # the last request (or the HELLO)
        self.busy = False  # a request of it runs on a pool thread
        self.closing = False  # a CLOSE is queued: nothing more is read
        self.events = 0  # what it is registered for in epoll (0: not registered)
        # In the loop's ready list (whole requests wait for its next turn): once, and not
        # read meanwhile.  Else a connection that kept sending was added once more per
        # read, got that many turns a pass while the others waited, and its inbox grew.
        self.queued = False


class Loop:
    """Serves admitted connections (:meth:`adopt`) on one thread, until :meth:`stop`."""

    def __init__(self, *, idle: float, frame_deadline: float, max_pool: int,
                 refusal: Callable[[BaseException], Closing],
                 closed: Callable[[socket.socket], None],
                 durability: Durability | None = None) -> None:
        self._durability = durability
        self._holding: dict[int, _Connection] = {}  # connections with held replies
        self._idle = idle
        self._frame_deadline = frame_deadline
        self._refusal = refusal
        self._closed = closed  # told of each connection the loop has closed
        self._tick = max(0.01, min(idle, frame_deadline, 1.0) / 4)
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._lock = threading.Lock()  # the hand-over queues below
        self._adopted: deque[_Connection] = deque()
        self._done: deque[tuple[_Connection, bytes | None, Closing | None]] = deque()
        self._connections: dict[int, _Connection] = {}
        self._ready: list[_Connection] = []  # whole requests wait in their inbox
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_pool),
                                        thread_name_prefix="native-exec")
        self._running = 0  # requests on pool threads
        self._stopping = False
        self._failed: Closing | None = None  # an fsync failed: every connection gets this
        self._next_check = 0.0
        self._thread = threading.Thread(target=self._run, name="native-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def adopt(self, sock: socket.socket, raw: socket.socket, handlers: Handlers,
              budgets: Mapping[int, int], buffered: bytes) -> None:
        """Serve this connection from now on (its HELLO answered; ``buffered``: bytes of
        its next frames read with the HELLO)."""
        sock.setblocking(False)
        conn = _Connection(sock, raw, handlers, budgets, buffered, time.monotonic())
        with self._lock:
            self._adopted.append(conn)
        self._wakeup()

    def stop(self) -> None:
        """Answer no more requests: each connection gets its running request's reply (if
        any), then CLOSE UNAVAILABLE, and is closed."""
        self._stopping = True
        self._wakeup()

    def _wakeup(self) -> None:
        """Wake the loop (never once it has ended: its eventfd is closed, or by now another
        file's descriptor)."""
        with self._lock:
            if not self._epoll.closed:
                os.eventfd_write(self._wake, 1)

    def join(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) for every connection and request to end."""
        if self._thread.ident is None:
            self._close_loop()
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        refuse_waits()
        durability = self._durability
        if durability is not None:
            durability.defer_here()
        try:
            while True:
                ready, self._ready = self._ready, []
                timeout = (0 if ready or self._holding else self._tick if self._connections
                           else -1)
                events = self._epoll.poll(timeout)
                now = time.monotonic()
                for waiting in ready:  # whole requests left over from their last turn
                    waiting.queued = False
                    if self._connections.get(waiting.fd) is waiting:
                        self._serve(waiting, now)
                for fd, mask in events:
                    if fd == self._wake:
                        self._woken(now)
                        continue
                    conn = self._connections.get(fd)
                    if conn is None:
                        continue
                    if mask & _WRITABLE:
                        self._serve(conn, now)  # sends, then runs what waited for that
                    if mask & ~_WRITABLE and not conn.closing and conn.fd in self._connections:
                        self._receive(conn, now)
                if self._holding or (durability is not None and durability.failed is not None
                                     and self._failed is None):
                    self._release(now)  # every ready request served: one fsync for them
                if now >= self._next_check:
                    self._next_check = now + self._tick
                    self._check_deadlines(now)
                if self._stopping and not self._connections and not self._running:
                    return
        except Exception:  # a bug here must not leave clients hanging on a dead loop
            log.exception("native transport loop failed: closing its connections")
            for conn in list(self._connections.values()):
                self._drop(conn)
            raise
        finally:
            if durability is not None:
                durability.stop_deferring()
            self._close_loop()

    def _close_loop(self) -> None:
        with self._lock:  # once (the loop's end, or a join of a loop never started)
            if self._epoll.closed:
                return
            self._epoll.close()
        self._pool.shutdown(wait=True)  # none runs (unless the loop failed): none will
        os.close(self._wake)  # write to this descriptor once it is another file's

    def _woken(self, now: float) -> None:
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass  # another wake took it: the queues below are read either way
        with self._lock:
            adopted, self._adopted = self._adopted, deque()
            done, self._done = self._done, deque()
        for conn in adopted:
            self._connections[conn.fd] = conn
            if self._failed is not None:
                self._close(conn, self._failed, now)
            else:
                self._serve(conn, now)
        for conn, reply, closing in done:
            self._running -= 1
            conn.busy = False
            if self._connections.get(conn.fd) is not conn:
                continue  # dropped meanwhile (its descriptor may be another's by now)
            if closing is not None:
                self._close(conn, closing, now)
            else:
                assert reply is not None
                self._queue(conn, wire.encode(wire.REPLY, reply))
                self._serve(conn, now)  # its next requests, read meanwhile
        if self._stopping:
            for conn in list(self._connections.values()):
                if not conn.busy and not conn.closing:
                    self._close(conn, Closing(grpc.StatusCode.UNAVAILABLE, _STOPPING), now)

    # --- one connection ----------------------------------------------------------------

    def _receive(self, conn: _Connection, now: float) -> None:
        sock = conn.sock
        try:
            data = sock.recv(_CHUNK)
            while isinstance(sock, ssl.SSLSocket) and sock.pending():  # epoll cannot see
                data += sock.recv(_CHUNK)  # what is decrypted already
        except _WOULD_BLOCK:
            return
        except (OSError, ssl.SSLError) as exc:  # reset, or a broken TLS record
            log.debug("native connection ended: %r", exc)
            self._drop(conn)
            return
        if not data:
            log.debug("native connection closed by the peer")
            self._drop(conn)
            return
        if not conn.inbox:
            conn.began = now
        conn.inbox += data
        self._serve(conn, now)

    def _serve(self, conn: _Connection, now: float) -> None:
        """Execute the whole frames received (in order, until one goes to the pool, too
        many replies wait to be sent, or its turn of ``_TURN`` is over: the rest after the
        other connections' next turn), then send the replies."""
        turn = _TURN
        while not conn.busy and not conn.closing and len(conn.inbox) >= 5:
            if not turn:
                if not conn.queued:
                    conn.queued = True
                    self._ready.append(conn)  # the others first
                break
            turn -= 1
            if conn.held_bytes >= _UNSENT:
                break  # the rest once the fsync has let its replies go (``_release``)
            if len(conn.outbox) - conn.sent >= _UNSENT:
                self._flush(conn, now)
                if conn.outbox:  # the peer is slow to read: the rest once it has
                    return
                continue
            if self._stopping or self._failed is not None:
                self._close(conn, self._failed or Closing(grpc.StatusCode.UNAVAILABLE,
                                                          _STOPPING), now)
                return
            inbox = conn.inbox
            length, kind = wire.HEADER.unpack_from(inbox)
            budget = conn.budgets.get(kind)
            if budget is None or length > budget:
                self._refuse_frame(conn, kind, length, budget, now)
                return
            if len(inbox) < 5 + length:
                break
            with memoryview(inbox) as view:
                payload = bytes(view[5:5 + length])
            del inbox[:5 + length]
            conn.began = now if inbox else None
            conn.last = now
            try:
                if length > _LARGE:
                    raise MayWait()
                reply = conn.handlers[kind](payload, True)
            except MayWait:
                self._to_pool(conn, kind, payload)
                break
            except Exception as exc:  # noqa: BLE001 - the request's failure closes the connection
                self._close(conn, self._refusal(exc), now)
                return
            self._queue(conn, wire.encode(wire.REPLY, reply))
        self._flush(conn, now)

    def _queue(self, conn: _Connection, frame: bytes, *, reply: bool = True) -> None:
        """Send ``frame`` after the connection's earlier ones, once every write made so far
        is durable (held until then: ``_release``).  Once an fsync has failed no reply is
        sent at all (it might reveal what was never made durable): only CLOSE frames."""
        durability = self._durability
        if durability is None:
            conn.outbox += frame
            return
        if durability.failed is not None:
            if not reply:
                conn.outbox += frame
            return
        upto = durability.pending()
        if not upto and not conn.held:
            conn.outbox += frame
            return
        conn.held.append((upto, frame))
        conn.held_bytes += len(frame)
        self._holding[conn.fd] = conn

    def _release(self, now: float) -> None:
        """fsync the log, and send the held frames it covered.  If the fsync failed, every
        connection is closed UNAVAILABLE, its held replies unsent, and so is every later
        one (a reply might reveal what was never made durable)."""
        durability = self._durability
        assert durability is not None
        try:
            if durability.pending():  # (else another thread's pass has covered them)
                durability.sync_now()
        except StorageError:
            pass  # failed: below
        if durability.failed is not None:
            if self._failed is None:
                self._failed = Closing(
                    grpc.StatusCode.UNAVAILABLE, f"the node could not fsync its log"
                    f" ({durability.failed}): requests not answered may or may not have taken"
                    " effect; the node answers no more (restart it)",
                    "Unavailable")  # named: not the "not executed" of a stopping node's CLOSE
            self._holding.clear()
            for conn in list(self._connections.values()):
                if conn.closing and not conn.held:
                    continue  # its CLOSE is on its way
                conn.held.clear()
                conn.held_bytes = 0
                conn.closing = False  # a CLOSE held behind the replies is replaced
                self._close(conn, self._failed, now)
            return
        durable = durability.durable
        for conn in list(self._holding.values()):
            held = conn.held
            while held and held[0][0] <= durable:
                frame = held.popleft()[1]
                conn.held_bytes -= len(frame)
                conn.outbox += frame
            if not held:
                del self._holding[conn.fd]
            if self._connections.get(conn.fd) is conn:
                self._serve(conn, now)  # sends, then runs what waited for the fsync

    def _refuse_frame(self, conn: _Connection, kind: int, length: int, budget: int | None,
                      now: float) -> None:
        if budget is None:
            reason = f"unexpected frame kind {kind}"
            code = grpc.StatusCode.INVALID_ARGUMENT
        else:
            reason = (f"{wire.KINDS[kind]} frame of {length} bytes exceeds the limit of"
                      f" {budget}")
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
        note_refused("native transport", f"connection closed: {reason}")
        self._close(conn, Closing(code, f"refused: {reason}"), now)

    def _to_pool(self, conn: _Connection, kind: int, payload: bytes) -> None:
        conn.busy = True
        self._running += 1
        self._register(conn, 0)  # its next requests wait in the socket meanwhile
        self._pool.submit(self._off_loop, conn, kind, payload)

    def _off_loop(self, conn: _Connection, kind: int, payload: bytes) -> None:
        reply: bytes | None = None
        closing: Closing | None = None
        try:
            reply = conn.handlers[kind](payload, False)
        except Exception as exc:  # noqa: BLE001 - the request's failure closes the connection
            closing = self._refusal(exc)
        with self._lock:
            self._done.append((conn, reply, closing))
        self._wakeup()

    def _close(self, conn: _Connection, closing: Closing, now: float) -> None:
        """Queue CLOSE; the connection is closed once it is sent (or cannot be)."""
        conn.closing = True
        conn.inbox.clear()
        self._queue(conn, closing.frame(), reply=False)
        self._flush(conn, now)

    def _flush(self, conn: _Connection, now: float) -> None:
        outbox = conn.outbox
        began = conn.sent
        while conn.sent < len(outbox):
            try:
                with memoryview(outbox) as view, view[conn.sent:] as unsent:
                    conn.sent += conn.sock.send(unsent)
            except _WOULD_BLOCK:
                break
            except (OSError, ssl.SSLError) as exc:
                log.debug("native connection ended: %r", exc)
                self._drop(conn)
                return
        if conn.sent == len(outbox):
            outbox.clear()
            conn.sent = 0
        elif conn.sent > began:  # the peer reads: the deadline counts from now
            conn.stuck = now
        elif conn.sent > _UNSENT:
            del outbox[:conn.sent]
            conn.sent = 0
        if outbox:
            if conn.stuck is None:
                conn.stuck = now
            self._register(conn, _WRITABLE)
        elif conn.closing and not conn.held:
            self._drop(conn)
        else:
            conn.stuck = None
            self._register(conn, 0 if conn.busy or conn.closing or conn.held_bytes >= _UNSENT
                           or conn.queued else _READABLE)

    def _register(self, conn: _Connection, events: int) -> None:
        if events == conn.events:
            return
        if not events:
            self._epoll.unregister(conn.fd)
        elif not conn.events:
            self._epoll.register(conn.fd, events)
        else:
            self._epoll.modify(conn.fd, events)
        conn.events = events

    def _drop(self, conn: _Connection) -> None:
        """Close the connection now (a request of it on a pool thread still finishes; its
        reply is dropped)."""
        if self._connections.pop(conn.fd, None) is None:
            return
        self._register(conn, 0)
        self._holding.pop(conn.fd, None)
        conn.held.clear()
        conn.closing = True
        try:
            conn.sock.close()
        except OSError:
            pass  # closed already: nothing more to release
        self._closed(conn.raw)

    def _check_deadlines(self, now: float) -> None:
        for conn in list(self._connections.values()):
            if conn.stuck is not None and now - conn.stuck > self._frame_deadline:
                log.debug("native connection dropped: its replies went unread")
                self._drop(conn)
            elif conn.busy or conn.closing:
                continue
            elif (conn.began is not None and now - conn.began > self._frame_deadline) or (
                    not conn.inbox and now - conn.last > self._idle):
                self._close(conn, Closing(grpc.StatusCode.UNAVAILABLE, _IDLE), now)
