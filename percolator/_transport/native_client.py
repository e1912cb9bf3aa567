"""NativeCalls: a client's batches over the node's native transport, reconnecting.

Frames and why: ``percolator._transport.native_wire``.  One connection per client
process (per :class:`NativeCalls`); the batcher's senders put their batches on it in
turn, and the sender of a batch reads its reply itself, after the replies of the
batches ahead of it (no reader thread; several batches may be on the wire).

Outcomes, as with ``Node.BatchStream``: a batch answered by a REPLY was executed; a
batch the node ended the connection before (a CLOSE frame: it closes between
batches), or whose frame could not be sent whole, was not, and goes once more on a new
connection (the node closes idle connections); a batch whose connection broke
otherwise (the node killed, a timeout) has an unknown outcome (``Unavailable``).

Connecting asks the node for its native port (``describe``, over gRPC), connects,
runs the TLS handshake when the client has TLS (the server verified against the same CA
and host name as the gRPC channel's: never plain instead), says HELLO with the token
and waits for WELCOME.  A failed attempt is retried after a back-off (``BACKOFF_MIN``
doubling to ``BACKOFF_MAX``); meanwhile :meth:`NativeCalls.call` answers None and the
caller sends by gRPC (``required``: raises ``Unavailable``) -- unless the native port was
refused for a security reason (its certificate does not verify, the token was refused):
that is raised to the caller, never hidden behind gRPC.
"""

from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError

from bigtable_lite import PermissionDenied, StorageError, StoreClosed, Unauthenticated, Unavailable

from .._status import command_error
from ..v1 import node_pb2 as pb
from . import native_wire as wire

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "CONNECT_TIMEOUT", "NO_NATIVE_RECHECK",
           "NativeCalls", "NativeConnection", "NotExecuted"]

BACKOFF_MIN = 0.05   # seconds before the first reconnect attempt after a failed one
BACKOFF_MAX = 2.0    # the longest back-off between attempts
NO_NATIVE_RECHECK = 60.0  # seconds before asking again a node that offered no native port
CONNECT_TIMEOUT = 10.0    # connect, TLS handshake and WELCOME, at most (and the timeout)
_TURN_MARGIN = 5.0

_ANSWERS = frozenset((wire.REPLY, wire.CLOSE))
_WELCOME = frozenset((wire.WELCOME, wire.CLOSE))
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_SECURITY = (Unauthenticated, PermissionDenied, ssl.SSLCertVerificationError)
"""Refusals of the native port raised to the caller, not answered by sending by gRPC."""


class NotExecuted(Exception):
    """The node did not execute the batch (it ended the connection before it, or the
    batch's frame was not sent whole): it may be sent again."""


def _closed_error(payload: bytes) -> StorageError | NotExecuted:
    """What a CLOSE frame means for the first batch it left unanswered.  FrameError if it
    does not decode (a node, or something posing as one, that breaks the protocol)."""
    try:
        err = pb.CommandError.FromString(payload)
    except DecodeError:
        raise wire.FrameError("the node's CLOSE frame does not decode") from None
    if err.code == _UNAVAILABLE and not err.error:  # stopping, idle: nothing more executed
        return NotExecuted(err.message)
    exc = command_error(err.code, err.message, err.error)
    return exc if isinstance(exc, StorageError) else StorageError(str(exc))


class NativeConnection:
    """One open connection: :meth:`send` puts a batch on the wire and hands out its
    ticket, :meth:`receive` returns its reply once the earlier ones have been read."""

    def __init__(self, sock: socket.socket, reader: wire.FrameReader, timeout: float) -> None:
        self._sock = sock
        self._reader = reader
        # An SSL object is not for two threads at once: over TLS a reply is read under the
        # send lock (one batch in flight, the default, never waits for it).
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._turn_wait = 2 * timeout + _TURN_MARGIN
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._sent = 0
        self._read = 0
        self._send_failed = False
        # Set once the connection failed at ticket ``_failed_at``: that ticket's error,
        # and whether the later ones were executed (False: not executed, None: unknown).
        self._failed_at = -1
        self._failure: BaseException | None = None
        self._later_unknown = False

    @property
    def usable(self) -> bool:
        return self._failure is None and not self._send_failed

    def send(self, data: bytes) -> int:
        """Put the batch ``data`` on the wire; its ticket.  Raises NotExecuted."""
        frame = wire.encode(wire.BATCH, data)
        with self._send_lock:
            if not self.usable:
                raise NotExecuted("the connection failed before this batch was sent")
            try:
                self._sock.sendall(frame)
            except OSError as exc:  # not all of the frame left: the node cannot execute it
                self._send_failed = True  # the batches ahead are still read
                if self._read == self._sent:
                    self._shut()
                    self._sock.close()
                raise NotExecuted(f"could not send the batch: {exc}") from None
            ticket = self._sent
            self._sent += 1
            return ticket

    def receive(self, ticket: int) -> bytes:
        """The reply to batch ``ticket``.  Raises NotExecuted, Unavailable (outcome
        unknown), or the error the node closed the connection with for it."""
        if self._read != ticket or self._failure is not None:  # else it is our turn
            with self._lock:
                turn = self._turn.wait_for(lambda: self._read == ticket or
                                           self._failure is not None, self._turn_wait)
            if not turn:  # (``_fail`` takes the lock: not while it is held)
                raise self._fail(ticket, Unavailable("timed out waiting for the replies ahead;"
                                                     " outcome unknown"), unknown=True)
            if self._failure is not None:
                raise self._failure_for(ticket)
        try:
            kind, payload = self._next_answer()
        except wire.ReadTimeout:
            raise self._fail(ticket, Unavailable("timed out waiting for the node's reply;"
                                                 " outcome unknown"), unknown=True) from None
        except wire.PeerClosed as exc:
            raise self._fail(ticket, Unavailable(f"connection to the node lost ({exc});"
                                                 " outcome unknown"), unknown=True) from None
        except wire.FrameError as exc:
            raise self._fail(ticket, StorageError(f"protocol error: {exc}"),
                             unknown=True) from None
        if kind == wire.CLOSE:
            try:
                closed = _closed_error(payload)
            except wire.FrameError as exc:
                raise self._fail(ticket, StorageError(f"protocol error: {exc}"),
                                 unknown=True) from None
            # Unavailable (named): the node failed with requests in flight, outcomes unknown.
            raise self._fail(ticket, closed, unknown=isinstance(closed, Unavailable))
        with self._lock:
            self._read += 1
            last = self._send_failed and self._sent == self._read
            if self._sent > self._read:
                self._turn.notify_all()
        if last:  # the last batch this connection will answer
            self.close()
        return payload

    def _next_answer(self) -> tuple[int, bytes]:
        if self._tls:
            with self._send_lock:
                return self._reader.read(_ANSWERS)
        return self._reader.read(_ANSWERS)

    def _fail(self, ticket: int, error: BaseException, *, unknown: bool) -> BaseException:
        with self._lock:
            if self._failure is None:
                self._failed_at, self._failure, self._later_unknown = ticket, error, unknown
                self._turn.notify_all()
        self.close()
        return self._failure_for(ticket)

    def _failure_for(self, ticket: int) -> BaseException:
        assert self._failure is not None
        if ticket == self._failed_at:
            return self._failure
        if ticket < self._read:  # answered before: cannot be asked again
            return StorageError("protocol error: reply asked for twice")
        # Sent before the failing batch (its reply not read yet when that one ended the
        # connection), or after it when the node failed with requests in flight.
        if ticket < self._failed_at or self._later_unknown:
            return Unavailable("connection to the node lost; outcome unknown")
        return NotExecuted("the node ended the connection before this batch")

    def _shut(self) -> None:
        """End the connection both ways; its descriptor stays open until :meth:`close`
        (a thread about to read or send it gets an error, never another socket)."""
        try:
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # TLS: no close_notify
        except OSError:
            pass  # not connected any more

    def close(self) -> None:
        self._shut()
        with self._send_lock:
            self._sock.close()


class NativeCalls:
    """``call(batch)`` over a native connection to ``host`` (opened and reopened as
    needed); None when there is none now (send by gRPC).  Thread-safe.

    ``describe()`` returns the node's native port (0: none), asked over gRPC; ``tls``:
    the client's TLS context (None: plain TCP), the server to name ``server_hostname``
    (default ``host``); ``token`` goes in the HELLO; ``timeout`` bounds a batch.
    """

    def __init__(self, host: str, describe: Callable[[], int], *, timeout: float,
                 max_frame: int, required: bool = False, tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, token: str | None = None) -> None:
        self._host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self._describe = describe
        self.timeout = timeout
        self.bound = timeout + CONNECT_TIMEOUT  # longest a call can take
        self._max_frame = max_frame
        self._required = required
        self._tls = tls
        self._server_hostname = server_hostname or self._host
        self._hello = wire.encode(wire.HELLO, pb.NativeHello(
            version=wire.VERSION, token=token or "").SerializeToString())
        self._lock = threading.Lock()
        self._conn: NativeConnection | None = None
        self._port = 0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_error: BaseException | None = None
        self._closed = False
        self.connections_opened = 0

    def call(self, data: bytes) -> bytes | None:
        """The reply to batch ``data``; None if it was not sent (no connection now)."""
        for _ in range(2):  # a batch the node closed the connection before goes once more
            conn = self._connection()
            if conn is None:
                return None
            try:
                return conn.receive(conn.send(data))
            except NotExecuted:
                self._drop(conn, close=False)  # its batches ahead may still be answered
            except BaseException:
                self._drop(conn)
                raise
        if self._required:
            raise Unavailable("the node ended two connections before executing this batch"
                              " (stopping?); it was not executed")
        return None

    def _connection(self) -> NativeConnection | None:
        with self._lock:
            if self._closed:
                raise StoreClosed("the node client is closed")
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            self._conn = None
            if time.monotonic() < self._retry_at:
                return self._unavailable()
            try:
                conn = self._connect()
            except (StorageError, OSError, ssl.SSLError, wire.PeerClosed, wire.ReadTimeout,
                    wire.FrameError) as exc:
                self._port = 0  # ask again: the node may have restarted elsewhere
                self._backoff = min(max(2 * self._backoff, BACKOFF_MIN), BACKOFF_MAX)
                self._retry_at = time.monotonic() + self._backoff * random.uniform(0.5, 1.0)
                self._last_error = exc
                return self._unavailable()
            if conn is None:  # the node offers no native transport
                self._retry_at = time.monotonic() + NO_NATIVE_RECHECK
                self._last_error = None
                return self._unavailable()
            self._backoff = 0.0
            self._conn = conn
            self.connections_opened += 1
            return conn

    def _unavailable(self) -> NativeConnection | None:
        """None (send by gRPC), or, when native is required or it was refused for a
        security reason, the reason raised."""
        error = self._last_error
        if not self._required and not isinstance(error, _SECURITY):
            return None
        if isinstance(error, ssl.SSLCertVerificationError):
            raise Unavailable(f"the node's native port failed TLS verification: {error}")
        if isinstance(error, StorageError):
            raise type(error)(*error.args)
        raise Unavailable("no native connection to the node" +
                          (f": {error}" if error is not None else
                           " (it serves no native transport)"))

    def _connect(self) -> NativeConnection | None:
        if not self._port:
            self._port = self._describe()
            if not self._port:
                return None
        wait = min(self.timeout, CONNECT_TIMEOUT)
        sock = socket.create_connection((self._host, self._port), timeout=wait)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            wire.set_send_timeout(sock, self.timeout)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._server_hostname)
            sock.settimeout(None)  # blocking; SO_RCVTIMEO/SO_SNDTIMEO bound each wait
            reader = wire.FrameReader(sock, max_frame=self._max_frame, wait=wait,
                                      deadline=wait)
            sock.sendall(self._hello)
            kind, payload = reader.read(_WELCOME)
            if kind == wire.CLOSE:
                refusal = _closed_error(payload)
                raise refusal if isinstance(refusal, StorageError) else \
                    Unavailable(f"native connection refused: {refusal}")
            try:
                pb.NativeWelcome.FromString(payload)
            except DecodeError:
                raise wire.FrameError("the node's WELCOME frame does not decode") from None
            reader.configure(max_frame=self._max_frame, wait=self.timeout,
                             deadline=self.timeout)
        except BaseException:
            sock.close()
            raise
        return NativeConnection(sock, reader, self.timeout)

    def _drop(self, conn: NativeConnection, *, close: bool = True) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        if close:
            conn.close()

    def close(self) -> None:
        """Close the connection (the node ends its side); no new ones.  Idempotent."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
