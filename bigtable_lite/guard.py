"""Guard: the one gate in front of every method a server hosts.

``build_server`` wraps each method handler of each service (the tablet service, the
services registered beside it, health and reflection) in a guard that, in this order:

1. **authenticates** the call and checks its role (``bigtable_lite.auth``): no valid token
   is UNAUTHENTICATED, a role below the method's PERMISSION_DENIED; the role and the
   caller are then recorded for :func:`bigtable_lite.auth.role_of` and ``caller_of``.
   Methods declared open (health) skip this; a server without tokens skips it for
   every method;
2. bounds each **request message**: over the method's byte budget is RESOURCE_EXHAUSTED;
3. **decodes** it: bytes that do not decode are INVALID_ARGUMENT, logged once per method
   and cause as one line (grpc's own deserialisation answers INTERNAL and logs a
   traceback per call, which lets any client fill the log);
4. admits a **streaming call** into its service's stream pool, if the service has one
   (full: RESOURCE_EXHAUSTED at once, with the trailer ``bigtable-lite-stream: refused``:
   nothing happened, the client may try again, as ``RemoteStore`` does), and has the
   :class:`IdleWatch` cancel it when its client leaves a message unread for too long.

Why streams need both: the server runs each call on one thread of a fixed pool, and a
stream keeps its thread while open.  A stream whose client does not read blocks its
thread inside grpc's send (flow control) for good, and 32 such streams once took every
thread of a node, so no health check or transaction got through.  Pools bound how many
threads streams can hold, which leaves the rest to unary calls; the idle watch frees a
thread a stalled client holds.  Waiting for a client's *next request* is not idleness:
request streams (batches, timestamps) are bounded by their pools.

The guard adds one Python call per message and, with tokens, a SHA-256 and one
``compare_digest`` per token (bench/bench_security.py measures it).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from .auth import Role, TokenTable, grant
from .errors import StorageError
from .status import STREAM_KEY, STREAM_REFUSED

__all__ = ["Gate", "Guard", "IdleWatch", "StreamPool", "note_refused", "note_undecodable"]

log = logging.getLogger(__name__)

Code = grpc.StatusCode
Behavior = Callable[..., Any]
Deserializer = Callable[[bytes], Any]


class StreamPool:
    """At most ``limit`` streaming calls of one service open at once."""

    def __init__(self, limit: int, what: str) -> None:
        if limit < 1:
            raise ValueError(f"{what}: a stream pool needs at least one slot")
        self.limit = limit
        self.what = what
        self._lock = threading.Lock()
        self._open = 0

    def take(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._open -= 1

    @property
    def open(self) -> int:
        return self._open


@dataclass(frozen=True)
class Gate:
    """What the guard enforces for one method."""

    method: str                  # full path, "/package.Service/Method"
    role: Role | None            # least role that may call it; None: open to every caller
    max_request_bytes: int       # budget of one request message
    streams: StreamPool | None   # pool of its streaming calls; None: the service admits them


class _Watched:
    """One open stream: since when (monotonic) its current message waits for the client."""

    __slots__ = ("context", "method", "since")

    def __init__(self, context: grpc.ServicerContext, method: str) -> None:
        self.context = context
        self.method = method
        self.since = 0.0  # 0: not waiting for the client


class IdleWatch:
    """Cancels a stream whose client has left a sent message unread for ``idle`` seconds.

    One daemon thread per process checks the open streams of every server's watch
    ``idle / 4`` apart, so a stalled stream is cancelled between ``idle`` and
    ``1.25 * idle`` seconds after its send blocked.
    """

    def __init__(self, idle: float) -> None:
        if not idle > 0:
            raise ValueError("the stream idle timeout must be positive")
        self.idle = idle
        self._lock = threading.Lock()
        self._streams: set[_Watched] = set()
        self.cancelled = 0  # streams cancelled so far
        _TICKER.add(self)

    def add(self, context: grpc.ServicerContext, method: str) -> _Watched:
        watched = _Watched(context, method)
        with self._lock:
            self._streams.add(watched)
        return watched

    def remove(self, watched: _Watched) -> None:
        with self._lock:
            self._streams.discard(watched)

    def check(self, now: float) -> None:
        """Cancel every stream whose client left a message unread since before now - idle."""
        with self._lock:
            stalled = [w for w in self._streams if w.since and now - w.since > self.idle]
        for watched in stalled:
            watched.since = 0.0
            self.cancelled += 1
            _CAUSES.note(watched.method, "stream cancelled: its client read nothing for"
                         f" {self.idle:g} s")
            watched.context.cancel()


class _Ticker:
    """The thread that runs every live IdleWatch's check (started with the first watch)."""

    def __init__(self) -> None:
        self._watches: weakref.WeakSet[IdleWatch] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, watch: IdleWatch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stream-idle-watch",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                watches = list(self._watches)
            for watch in watches:
                watch.check(time.monotonic())
            period = min([w.idle / 4 for w in watches], default=1.0)
            del watches  # a server's watch lives only as long as its server
            time.sleep(min(period, 1.0))


_TICKER = _Ticker()


class _Causes:
    """Logs a warning once per (method, cause), for a bounded number of causes."""

    LIMIT = 256

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def note(self, method: str, cause: str) -> None:
        key = (method, cause[:200])
        with self._lock:
            if key in self._seen or len(self._seen) >= self.LIMIT:
                return
            self._seen.add(key)
            last = len(self._seen) == self.LIMIT
        log.warning("%s: %s (logged once%s)", method, key[1],
                    "; further causes are not logged" if last else "")


_CAUSES = _Causes()


def note_undecodable(method: str, exc: BaseException) -> None:
    """Log a request that did not decode, once per method and cause, without a traceback."""
    _CAUSES.note(method, f"undecodable request: {type(exc).__name__}: {exc}")


def note_refused(where: str, cause: str) -> None:
    """Log a refused request or connection once per place and cause, without a
    traceback: a stranger repeating it cannot grow the log."""
    _CAUSES.note(where, cause)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


class Guard:
    """Wraps method handlers; one per server (``tokens`` None: no authentication)."""

    def __init__(self, tokens: TokenTable | None, watch: IdleWatch,
                 settle: Callable[[], None] | None = None) -> None:
        self.tokens = tokens
        self.watch = watch
        # Before each reply: wait until what the call may have read is durable (the
        # store's deferred writes, ``bigtable_lite._log_sync``); None: nothing to wait for.
        self._settle = settle

    def settled(self, context: grpc.ServicerContext) -> None:
        """Return once the reply about to be sent reveals nothing a power loss could take
        back (UNAVAILABLE if the store's log cannot be synced)."""
        if self._settle is None:
            return
        try:
            self._settle()
        except StorageError as exc:
            # Replaces an error the handler gave (its details, in trailing metadata, too:
            # a client checks that they name the status they come with).
            context.set_trailing_metadata(())
            _abort(context, Code.UNAVAILABLE, str(exc))

    @contextmanager
    def _settling(self, context: grpc.ServicerContext) -> Iterator[None]:
        """:meth:`settled` once the handler returns, and once it fails: an error reveals as
        much as a reply ("transaction 7 is committed at 9")."""
        try:
            yield
        except Exception:
            self.settled(context)  # UNAVAILABLE instead, if the log cannot be synced
            raise
        self.settled(context)

    def wrap(self, handler: grpc.RpcMethodHandler, gate: Gate) -> grpc.RpcMethodHandler:
        """The handler behind the gate: same kind, same response serializer, raw requests."""
        inner = _behavior(handler)
        if getattr(inner, "experimental_non_blocking", False):
            raise ValueError(f"{gate.method}: non-blocking handlers are not supported")
        admit = self._admitter(gate)
        decode = _decoder(gate, handler.request_deserializer)
        serializer = handler.response_serializer
        if handler.request_streaming:
            def requests(raw: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
                for message in raw:
                    yield decode(message, context)

            if handler.response_streaming:
                def stream_stream(raw: Iterator[bytes], context: grpc.ServicerContext
                                  ) -> Iterator[Any]:
                    admit(context)
                    yield from self._stream(gate, context, lambda: inner(
                        requests(raw, context), context))

                return grpc.stream_stream_rpc_method_handler(
                    stream_stream, response_serializer=serializer)

            def stream_unary(raw: Iterator[bytes], context: grpc.ServicerContext) -> Any:
                admit(context)
                with self._settling(context):
                    return inner(requests(raw, context), context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, response_serializer=serializer)
        if handler.response_streaming:
            def unary_stream(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
                admit(context)
                request = decode(raw, context)
                yield from self._stream(gate, context, lambda: inner(request, context))

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, response_serializer=serializer)

        def unary_unary(raw: bytes, context: grpc.ServicerContext) -> Any:
            admit(context)
            request = decode(raw, context)
            with self._settling(context):
                return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=serializer)

    def _admitter(self, gate: Gate) -> Callable[[grpc.ServicerContext], None]:
        tokens = self.tokens
        needed = gate.role
        if tokens is None or needed is None:
            def admit_all(context: grpc.ServicerContext) -> None:
                return None

            return admit_all
        method = gate.method
        authenticate = tokens.authenticate

        def admit(context: grpc.ServicerContext) -> None:
            found = authenticate(context.invocation_metadata())
            if found is None:
                _abort(context, Code.UNAUTHENTICATED, "this server takes calls only with a"
                       " valid token (authorization: Bearer TOKEN)")
            role, caller = found
            if role < needed:
                _abort(context, Code.PERMISSION_DENIED, f"{method} needs the {needed.label}"
                       f" role; the call's token has {role.label}")
            grant(context, role, caller)

        return admit

    def _stream(self, gate: Gate, context: grpc.ServicerContext,
                start: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        """The responses of a streaming call, admitted to its pool and watched while sent."""
        pool = gate.streams
        if pool is not None and not pool.take():
            context.set_trailing_metadata(((STREAM_KEY, STREAM_REFUSED),))
            _abort(context, Code.RESOURCE_EXHAUSTED,
                   f"{pool.what}: all {pool.limit} stream slots are taken; try again later")
        watched = self.watch.add(context, gate.method)
        try:
            with self._settling(context):  # the stream's end: its status or its error
                for response in start():
                    self.settled(context)
                    watched.since = time.monotonic()
                    yield response  # returns once grpc has handed it to the transport
                    watched.since = 0.0
        finally:
            self.watch.remove(watched)
            if pool is not None:
                pool.release()


def _behavior(handler: grpc.RpcMethodHandler) -> Behavior:
    behavior: Behavior | None = (handler.unary_unary or handler.unary_stream
                                 or handler.stream_unary or handler.stream_stream)
    if behavior is None:
        raise ValueError("a method handler without a behavior")
    return behavior


def _decoder(gate: Gate, deserializer: Deserializer | None
             ) -> Callable[[bytes, grpc.ServicerContext], Any]:
    limit = gate.max_request_bytes
    method = gate.method

    def decode(raw: bytes, context: grpc.ServicerContext) -> Any:
        if len(raw) > limit:
            _abort(context, Code.RESOURCE_EXHAUSTED, f"a request of {len(raw)} bytes is over"
                   f" the {limit}-byte budget of {method}")
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except Exception as exc:  # noqa: BLE001 - a deserializer only fails on its input
            note_undecodable(method, exc)
            _abort(context, Code.INVALID_ARGUMENT, f"the request does not decode: {exc}")

    return decode
