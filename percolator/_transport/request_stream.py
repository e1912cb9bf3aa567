"""RequestStream: one bidirectional gRPC call whose requests are answered in order.

Both batching clients (the oracle's ``RemoteOracle`` and the node's ``NodeClient``) send
their requests as messages of one long-lived call instead of one unary call each: a
message costs the server far less CPU than a call (figures in ``docs/architecture.md``).
The caller that puts a request reads its response itself, so there is no reader
thread: :meth:`RequestStream.put` hands out a ticket, and :meth:`RequestStream.reply`
waits for the earlier tickets' responses to be read, then reads its own.

An open stream holds a server thread, so gRPC's request thread for the call half-closes
it once ``idle`` seconds pass without a request (the server answers what was sent, then
ends the call).  A stream also takes requests for ``life`` seconds only, and its
deadline is ``life + timeout``: every request put has a whole ``timeout`` to be
answered, and every wait is bounded.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bigtable_lite import Unavailable

__all__ = ["RequestStream", "StreamEnded"]

Request = TypeVar("Request")
Response = TypeVar("Response")

_TURN_MARGIN = 5.0  # seconds, beyond the stream's deadline, a reader waits for its turn


class StreamEnded(Exception):
    """The server ended the stream before answering: the unanswered requests were not
    served (a stopping server ends streams between requests)."""


def _no_op() -> None:
    pass


class RequestStream(Generic[Request, Response]):
    """One stream-stream call, ``method(requests, timeout=...)``, answering in order.

    ``after_wake`` is called by a thread just woken by another one on this stream (the
    reader handed its response, gRPC's request thread handed a request): the oracle
    client yields the CPU there (see ``percolator/_oracle_client.py``).
    """

    def __init__(self, method: Callable[..., Any], *, life: float, timeout: float,
                 idle: float, after_wake: Callable[[], None] = _no_op) -> None:
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._expires = time.monotonic() + life
        self._deadline = self._expires + timeout
        self._idle = idle
        self._after_wake = after_wake
        self._sent = 0     # tickets handed out
        self._read = 0     # responses read
        self._ended = False
        self._call: Any = method(self._requests(), timeout=life + timeout)

    def put(self, request: Request) -> int | None:
        """Send ``request``; its ticket, or None if this stream takes no more requests
        (ended, or older than ``life``): then ``request`` was not sent."""
        with self._lock:
            if self._ended or time.monotonic() > self._expires:
                self._end()
                return None
            ticket = self._sent
            self._sent += 1
            self._queue.put(request)
            return ticket

    def reply(self, ticket: int) -> Response:
        """The response to request ``ticket``, once the earlier ones have been read.
        Raises grpc.RpcError, :class:`StreamEnded`, or Unavailable if the earlier readers
        outlast the stream's deadline."""
        with self._lock:
            if self._read != ticket and not self._turn.wait_for(
                    lambda: self._read == ticket,
                    self._deadline - time.monotonic() + _TURN_MARGIN):
                raise Unavailable("timed out waiting for the stream's earlier responses")
        try:
            response: Response = next(self._call)
            self._after_wake()
            return response
        except StopIteration:
            raise StreamEnded() from None
        finally:
            with self._lock:
                self._read += 1
                if self._sent > self._read:  # a reader may be waiting for its turn
                    self._turn.notify_all()

    def end(self) -> None:
        """Half-close: the server answers what was sent, then ends the call.  Idempotent."""
        with self._lock:
            self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put(None)  # frees gRPC's thread waiting for a request

    def _requests(self) -> Iterator[Request]:
        """What gRPC's request thread sends; ends after ``idle`` without a request (the
        check under the lock, so :meth:`put` either gets its request in or sees the end)."""
        take = self._queue.get
        after_wake = self._after_wake
        while True:
            try:
                request = take(timeout=self._idle)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._ended = True
                        return
                continue
            after_wake()
            if request is None:
                return
            yield request
