"""NativeServer: the node's batches (and Transactions requests) over plain TCP (or TLS)
connections.

Frames and why: ``percolator._transport.native_wire``.  A connection is accepted and
its handshake (TLS, then the HELLO) run by a thread of its own; once admitted it is
served by the event loop (``native_loop``: one thread reads every connection's request
frames, executes each with the executor of its kind and writes its reply; requests that
may wait run on a pool thread).  Requests of one connection are answered in order, and
a client may keep several on the wire (pipelining).  Which kinds a connection may send,
and as whom they run, is decided once, when its HELLO is admitted (:data:`Opener`): the
executors it returns are bound to the connection's caller.

Who may connect is the opener's to say (``Opener``: the node's batch service checks
the HELLO's token and hands the caller's role to the executor of the connection's
frames); this server runs the TLS handshake with a context from ``tls`` (the node's
``ServerTLS``: a client certificate is required for mutual TLS) before it reads a
byte of the HELLO, so a client that does not speak TLS to a TLS node gets nothing.

Everything is bounded: at most ``max_connections`` connections (one more is refused
with CLOSE RESOURCE_EXHAUSTED and its client uses gRPC meanwhile), of which at most
``max_handshakes`` not yet admitted (TLS handshake and HELLO: strangers without a
token cannot hold the slots of admitted clients); a HELLO must arrive within
``hello_deadline`` of the connect; a connection with no request for ``idle`` seconds is
closed; a frame, once begun, must arrive within ``frame_deadline``; a frame of a kind
not in ``budgets``, or longer than its kind's budget (checked on its 5-byte header,
before its body is read: the HELLO 64 KiB, a batch the message limit, as gRPC's
request budgets), or not a message of its kind is refused (CLOSE, logged without a
traceback) and the connection closed.

Stopping ends connections only between requests: :meth:`stop` has the loop answer
CLOSE UNAVAILABLE (nothing unanswered was executed) and close each connection, a
request running on a pool thread getting its reply first.  :meth:`join` waits
(bounded) for them, so the store is closed after the last request.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping

import grpc
from google.protobuf.message import DecodeError

from bigtable_lite import status as store_status
from bigtable_lite.guard import note_refused

from .._status import status_for
from ..v1 import node_pb2 as pb
from . import native_wire as wire
from .native_loop import Closing, Durability, Executor, Handlers, Loop, MayWait

__all__ = ["DEFAULT_MAX_CONNECTIONS", "FRAME_DEADLINE", "HELLO_DEADLINE", "HELLO_MAX", "IDLE",
           "Executor", "Handlers", "MayWait", "NativeServer", "Opener"]

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 64
"""Most native connections open at once."""
IDLE = 120.0
"""Seconds a connection may go without a batch before the node closes it."""
FRAME_DEADLINE = 30.0
"""Seconds a frame may take to arrive once its first byte has."""
HELLO_DEADLINE = 10.0
"""Seconds from connect (and TLS handshake) to the whole HELLO."""
HELLO_MAX = 1 << 16
"""Bytes of a HELLO at most (a version and a token of at most 256 characters)."""

Opener = Callable[[pb.NativeHello, "ssl.SSLSocket | None"], Handlers]
"""Admits a connection by its HELLO (and its TLS socket, for the peer's certificate):
the executors of its requests, bound to its caller (the role of its token), or raises
(Unauthenticated, ...) to refuse it: the client gets CLOSE with the error's code."""

_HELLO = frozenset((wire.HELLO,))
_NOT_AFTER_HELLO = frozenset((wire.HELLO, wire.WELCOME, wire.REPLY, wire.CLOSE))
_QUIET = frozenset((grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED))


_ACCEPT_PAUSE = 0.1  # seconds between attempts to accept while out of descriptors


def _refusal(exc: BaseException) -> Closing:
    code, message = status_for(exc)
    if code in _QUIET:  # as gRPC's guard: a stranger's attempts do not fill the log
        log.debug("native connection refused: %s: %s", code.name, message)
    else:
        store_status.log_failure(log, "native connection", code, message, exc)
    return Closing(code, message, store_status.error_name(exc))


class NativeServer:
    """Binds ``host:port`` now (``OSError`` if it cannot); :meth:`start` serves."""

    def __init__(self, host: str, port: int, open_connection: Opener, *,
                 budgets: Mapping[int, int],
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_handshakes: int | None = None, idle: float = IDLE,
                 frame_deadline: float = FRAME_DEADLINE, hello_deadline: float = HELLO_DEADLINE,
                 tls: Callable[[], ssl.SSLContext] | None = None,
                 durability: Durability | None = None) -> None:
        if max_connections < 0:
            raise ValueError("max_connections must not be negative")
        if not budgets or any(k not in wire.KINDS or k in _NOT_AFTER_HELLO for k in budgets):
            raise ValueError("budgets: the client's frame kinds after the HELLO, each with"
                             " its most bytes")
        self._open_connection = open_connection
        self._budgets = dict(budgets)
        self._kinds = frozenset(budgets)
        self._max_frame = max(budgets.values())
        self._max_connections = max_connections
        self._max_handshakes = (max(1, max_connections // 4) if max_handshakes is None
                                else max_handshakes)
        self._idle = idle
        self._frame_deadline = frame_deadline
        self._hello_deadline = hello_deadline
        self._tls = tls
        bind = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        six = ":" in bind  # an IPv6 address (every one of them, "::", on both families)
        try:
            self._listener = socket.create_server(
                (bind, port), family=socket.AF_INET6 if six else socket.AF_INET, backlog=128,
                dualstack_ipv6=bind == "::" and socket.has_dualstack_ipv6())
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve the native transport on {host}:{port}:"
                          f" {exc.strerror}") from exc
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()  # handshaking and served
        self._handshaking: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()  # of handshakes
        self._stopping = False
        self._loop = Loop(idle=idle, frame_deadline=frame_deadline, max_pool=max_connections,
                          refusal=_refusal, closed=self._closed, durability=durability)
        self._acceptor = threading.Thread(target=self._accept, name="native-accept",
                                          daemon=True)
        self.refused = 0  # connections refused at the cap

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def start(self) -> NativeServer:
        self._loop.start()
        self._acceptor.start()
        return self

    # --- accepting ---------------------------------------------------------------------

    def _accept(self) -> None:
        starved = False  # the last accept failed for want of descriptors
        try:
            while True:
                ready, _, _ = select.select([self._listener.fileno(), self._wake_r], [], [])
                if self._stopping:
                    return
                if self._wake_r in ready:
                    continue
                try:
                    conn, _ = self._listener.accept()
                except OSError as exc:  # e.g. the peer reset it already
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        # Out of descriptors: the connection stays pending and select says
                        # so at once; without a pause this thread would spin.
                        if not starved:  # once until an accept succeeds again
                            log.warning("native transport cannot accept: %s", exc.strerror)
                        starved = True
                        select.select([self._wake_r], [], [], _ACCEPT_PAUSE)
                    continue
                starved = False
                self._admit(conn)
        finally:
            self._listener.close()

    def _admit(self, conn: socket.socket) -> None:
        with self._lock:
            admitted = (not self._stopping and len(self._connections) < self._max_connections
                        and len(self._handshaking) < self._max_handshakes)
            if admitted:
                self._handshaking.add(conn)
                self._connections.add(conn)
                thread = threading.Thread(target=self._serve, args=(conn,),
                                          name="native-conn", daemon=True)
                self._threads.add(thread)
        if admitted:
            thread.start()
            return
        self.refused += 1
        try:  # a plain peer learns why (a TLS one would need a handshake: it just sees EOF)
            if self._tls is None:
                wire.set_send_timeout(conn, 1.0)
                conn.sendall(Closing(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                     "no native connection free (or the node is"
                                     " stopping): use gRPC").frame())
        except OSError:
            pass  # it left already; nothing was read
        finally:
            conn.close()

    # --- one connection ----------------------------------------------------------------

    def _serve(self, raw: socket.socket) -> None:
        """The connection's handshake; then the loop serves it."""
        conn: socket.socket = raw
        served = False
        # Over TLS a read of the HELLO is one SSL_read, which waits for a whole record, each
        # raw recv bounded alone: a peer trickling its record a byte at a time would hold
        # the handshake slot for as long as it likes.  So the connection is shut down if
        # the handshake and the HELLO are not done within their deadlines.
        current = [raw]  # the socket to shut: the TLS one once wrapped (raw is detached)
        overdue = (threading.Timer(2 * self._hello_deadline, _shut, args=(current,))
                   if self._tls is not None else None)
        if overdue is not None:
            overdue.daemon = True
            overdue.start()
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            wire.set_send_timeout(raw, self._frame_deadline)
            tls_sock = None
            if self._tls is not None:  # a socket timeout bounds the whole TLS handshake
                raw.settimeout(self._hello_deadline)
                conn = tls_sock = self._tls().wrap_socket(raw, server_side=True)
                current[0] = conn
                conn.settimeout(None)
            reader = wire.FrameReader(conn, max_frame=HELLO_MAX, wait=self._hello_deadline,
                                      deadline=self._hello_deadline)
            handlers = self._hello(conn, reader, tls_sock)
            if overdue is not None:
                overdue.cancel()
            with self._lock:
                self._handshaking.discard(raw)
                if not self._stopping:
                    self._loop.adopt(conn, raw, handlers, self._budgets, reader.take_buffered())
                    served = True
            if not served:
                raise Closing(grpc.StatusCode.UNAVAILABLE, "the node is stopping: requests"
                              " not answered were not executed")
        except Closing as close:
            self._send_close(conn, close)
        except (OSError, ssl.SSLError, wire.PeerClosed, wire.ReadTimeout) as exc:
            log.debug("native connection ended: %r", exc)
        finally:
            if overdue is not None:
                overdue.cancel()
            with self._lock:
                self._handshaking.discard(raw)
                if not served:
                    self._connections.discard(raw)
                self._threads.discard(threading.current_thread())
            if not served:
                conn.close()

    def _closed(self, raw: socket.socket) -> None:
        """The loop closed a connection it served: its slot is free again."""
        with self._lock:
            self._connections.discard(raw)

    def _hello(self, conn: socket.socket, reader: wire.FrameReader,
               tls_sock: ssl.SSLSocket | None) -> Handlers:
        try:
            _, payload = reader.read(_HELLO)
            hello = pb.NativeHello.FromString(payload)
        except wire.FrameTooLarge as exc:
            note_refused("native transport", f"connection refused: {exc}")
            raise Closing(grpc.StatusCode.RESOURCE_EXHAUSTED, f"refused: {exc}") from None
        except (wire.FrameError, DecodeError) as exc:
            note_refused("native transport", f"connection refused: not a HELLO ({exc})")
            raise Closing(grpc.StatusCode.INVALID_ARGUMENT,
                         "not a percolator native HELLO") from None
        if hello.version != wire.VERSION:
            raise Closing(grpc.StatusCode.FAILED_PRECONDITION,
                         f"native version {hello.version} not served (this node speaks"
                         f" {wire.VERSION})")
        try:
            handlers = self._open_connection(hello, tls_sock)
        except Exception as exc:  # noqa: BLE001 - refused: the client is told why
            raise _refusal(exc) from None
        conn.sendall(wire.encode(wire.WELCOME, pb.NativeWelcome(
            version=wire.VERSION).SerializeToString()))
        return handlers

    def _send_close(self, conn: socket.socket, close: Closing) -> None:
        try:
            conn.sendall(close.frame())
        except (OSError, ssl.SSLError):
            pass  # the peer is gone: it learns nothing more either way

    # --- stopping ----------------------------------------------------------------------

    def stop(self) -> None:
        """Accept no more connections; end open ones between requests.  Idempotent."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            handshaking = list(self._handshaking)
        os.write(self._wake_w, b"x")  # the acceptor
        self._loop.stop()
        if self._tls is None:  # a HELLO awaited: its thread wakes (a TLS one times out)
            for conn in handshaking:
                try:
                    conn.shutdown(socket.SHUT_RD)
                except OSError:
                    pass  # closed meanwhile

    def join(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds in all) for every connection to end."""
        deadline = time.monotonic() + timeout
        if self._acceptor.ident is not None:  # started (a node that failed to start: not)
            self._acceptor.join(timeout)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            done = not self._threads
        done = self._loop.join(max(0.0, deadline - time.monotonic())) and done
        if done:
            os.close(self._wake_r)
            os.close(self._wake_w)
        return done


def _shut(current: list[socket.socket]) -> None:
    """End a connection whose handshake is overdue: its reader gets an error (the plain
    socket's shutdown, also under TLS: no close_notify)."""
    try:
        socket.socket.shutdown(current[0], socket.SHUT_RDWR)
    except OSError:
        pass  # closed meanwhile
