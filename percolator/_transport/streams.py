"""Streamed calls: a client's requests on one long-lived stream while the server takes one.

Measured on the reference machine (2 cores, grpcio 1.75.1): a stream message costs the
server ~30-60% less CPU than a unary call, and the client no more (the sender of a
request reads its response: no reader thread).  An open stream holds a server thread,
so the stream (:class:`~percolator._transport.request_stream.RequestStream`) is
half-closed once ``IDLE`` passes without a request, and takes requests for
``LIFE`` timeouts only, so each request still has a whole ``timeout`` before the
stream's deadline.  A server whose share of streams is taken refuses one before reading
anything (``RESOURCE_EXHAUSTED`` and a trailer the service names): nothing happened,
so the request goes as a unary call, and no stream is tried for ``BACKOFF`` seconds.

Used by the node's client (``Node.BatchStream``/``Batch``) and the oracle's
(``StreamTimestamps``/``GetTimestamps``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from bigtable_lite import Unavailable

from .request_stream import RequestStream, StreamEnded

__all__ = ["BACKOFF", "IDLE", "LIFE", "StreamedCalls", "refused"]

LIFE = 0.5     # a stream takes requests for this many timeouts, then is replaced
IDLE = 0.2     # seconds without a request after which a stream is half-closed
BACKOFF = 1.0  # seconds without streams after the server refused one

Request = TypeVar("Request")
Response = TypeVar("Response")


def refused(exc: grpc.RpcError, trailer_key: str, refusal: str) -> bool:
    """The server refused a stream before reading anything (its share of streams taken,
    or stopping)."""
    return isinstance(exc, grpc.Call) and \
        exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and any(
            key == trailer_key and value == refusal for key, value in
            exc.trailing_metadata() or ())


def _no_op() -> None:
    pass


class StreamedCalls(Generic[Request, Response]):
    """``call(request)``: on the open stream (opening one), else as a unary call.

    Raises ``grpc.RpcError`` (the caller translates it with its service's table), or
    ``Unavailable`` when the server ended the stream before answering (the request was
    not served).  ``after_wake`` is called by a thread just woken by another one on the
    stream (see ``percolator/_oracle_client.py``).  Thread-safe.
    """

    def __init__(self, stream_method: Callable[..., Any], unary_method: Callable[..., Any], *,
                 timeout: float, trailer_key: str, refusal: str, streams: bool = True,
                 after_wake: Callable[[], None] = _no_op) -> None:
        self._stream_method = stream_method
        self._unary = unary_method
        self.timeout = timeout
        self.bound = (1 + LIFE) * timeout  # longest a request can take (a stream's deadline)
        self._trailer_key = trailer_key
        self._refusal = refusal
        self._streams = streams
        self._after_wake = after_wake
        self._lock = threading.Lock()
        self._stream: RequestStream[Request, Response] | None = None
        self._streams_from = 0.0  # monotonic time before which no stream is opened
        self._closed = False
        self.streams_opened = 0

    def call(self, request: Request) -> Response:
        deadline = time.monotonic() + self.bound
        response = self._over_stream(request)
        if response is None:
            left = min(self.timeout, deadline - time.monotonic())
            response = self._unary(request, timeout=max(0.0, left))
        return response

    def _over_stream(self, request: Request) -> Response | None:
        """The response to ``request`` sent on the stream; None if no stream took it,
        which leaves it unsent."""
        for _ in range(2):  # an expired stream is replaced once
            stream = self._open()
            if stream is None:
                return None
            ticket = stream.put(request)
            if ticket is None:
                self._drop(stream)
                continue
            try:
                return stream.reply(ticket)
            except BaseException as exc:  # a stream that failed once takes no more requests
                self._drop(stream)
                if isinstance(exc, StreamEnded):
                    raise Unavailable("the server ended the stream before this request"
                                      " (stopping?); it was not served") from None
                if isinstance(exc, grpc.RpcError) and refused(exc, self._trailer_key,
                                                              self._refusal):
                    with self._lock:
                        self._streams_from = time.monotonic() + BACKOFF
                    return None
                raise
        return None

    def _open(self) -> RequestStream[Request, Response] | None:
        with self._lock:
            if self._stream is None:
                if self._closed or not self._streams or time.monotonic() < self._streams_from:
                    return None
                self._stream = RequestStream(self._stream_method, life=LIFE * self.timeout,
                                             timeout=self.timeout, idle=IDLE,
                                             after_wake=self._after_wake)
                self.streams_opened += 1
            return self._stream

    def _drop(self, stream: RequestStream[Request, Response]) -> None:
        with self._lock:
            if self._stream is stream:
                self._stream = None
        stream.end()

    def close(self) -> None:
        """End the open stream (the server answers what was sent); no new ones."""
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.end()
