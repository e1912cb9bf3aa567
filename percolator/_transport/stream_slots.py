"""StreamSlots: admission of a service's long-lived streaming calls.

A streaming call that stays open while its client has work holds one server thread
(the sync gRPC server), so a service admits at most ``limit`` at once and leaves the
rest of the pool to unary calls.  A refused call is aborted RESOURCE_EXHAUSTED with the
trailer ``(key, REFUSED)`` before anything is read: its client knows nothing happened
and falls back to unary calls.  A stopping node refuses new streams, and its open
ones end between requests (every request read is answered).  Used by the oracle's
``StreamTimestamps`` and the node's ``BatchStream``.
"""

from __future__ import annotations

import threading
from typing import NoReturn

import grpc

__all__ = ["REFUSED", "StreamSlots"]

REFUSED = "refused"
"""The value of a refused stream's trailer."""


class StreamSlots:
    def __init__(self, limit: int, trailer_key: str) -> None:
        self.limit = limit
        self.trailer_key = trailer_key
        self._lock = threading.Lock()
        self._open = 0
        self._stopping = False

    def admit(self, context: grpc.ServicerContext, refusal: str) -> None:
        """Take a slot for this call, or abort it (RESOURCE_EXHAUSTED, ``refusal``).

        An admitted call must :meth:`release` its slot when it ends.
        """
        with self._lock:
            admitted = self._open < self.limit and not self._stopping
            if admitted:
                self._open += 1
        if not admitted:
            self._refuse(context, refusal)

    def _refuse(self, context: grpc.ServicerContext, refusal: str) -> NoReturn:
        context.set_trailing_metadata(((self.trailer_key, REFUSED),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        raise AssertionError("context.abort returned")  # pragma: no cover

    def release(self) -> None:
        with self._lock:
            self._open -= 1

    def stop(self) -> None:
        """Refuse new streams; open ones end after their current request."""
        with self._lock:
            self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def open(self) -> int:
        return self._open
