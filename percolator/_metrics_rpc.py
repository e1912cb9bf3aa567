"""RPC metrics: every call a node serves, counted and timed by service, method and status code.

A ``grpc.ServerInterceptor`` (``bigtable_lite.server.build_server(interceptors=...)``)
wraps each method's handler once -- the wrapped handler is kept per method, so a call
costs two clock reads, a counter and a histogram observation, and no allocation of
handlers.  What it measures (``percolator.metrics``):

* ``percolator_grpc_requests_total`` when a call ends, with its status code (the code
  the handler aborted with; UNKNOWN for an exception; CANCELLED when the client left a
  stream);
* ``percolator_grpc_msg_duration_seconds`` per answer: a unary call's whole duration;
  for a stream, each message since the request it answers or the message before (a
  ``BatchStream`` batch, a ``Scan`` chunk) -- a stream's life is not a latency; its
  failure is one more answer, with its code;
* ``percolator_grpc_streams_open`` while a streaming call runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from .metric_types import CounterChild, GaugeChild, HistogramChild
from .metrics import GRPC_MSG_SECONDS, GRPC_REQUESTS, GRPC_STREAMS

__all__ = ["RpcMetrics"]

_OK = "OK"
_UNKNOWN = "UNKNOWN"
_CANCELLED = "CANCELLED"

Behavior = Callable[..., Any]


def _split(method: str) -> tuple[str, str]:
    """``/package.Service/Method`` -> (``package.Service``, ``Method``)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service or "unknown", name


def _failure_code(context: grpc.ServicerContext) -> str:
    code = context.code()  # set by abort(); None: the handler raised on its own
    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
        return str(code.name)
    # A client that cancels makes reading its next request raise.
    return _UNKNOWN if context.is_active() else _CANCELLED


def _end_code(context: grpc.ServicerContext) -> str:
    code = context.code()
    return str(code.name) if isinstance(code, grpc.StatusCode) else _OK


class _Method:
    """Bound metric children of one method."""

    __slots__ = ("service", "method", "ok_requests", "ok_seconds", "streams")

    def __init__(self, full: str) -> None:
        self.service, self.method = _split(full)
        self.ok_requests: CounterChild = GRPC_REQUESTS.labels(self.service, self.method, _OK)
        self.ok_seconds: HistogramChild = GRPC_MSG_SECONDS.labels(self.service, self.method,
                                                                  _OK)
        self.streams: GaugeChild = GRPC_STREAMS.labels(self.service, self.method)

    def ended(self, code: str) -> None:
        if code == _OK:
            self.ok_requests.inc()
        else:
            GRPC_REQUESTS.labels(self.service, self.method, code).inc()

    def answered(self, code: str, seconds: float) -> None:
        if code == _OK:
            self.ok_seconds.observe(seconds)
        else:
            GRPC_MSG_SECONDS.labels(self.service, self.method, code).observe(seconds)


class RpcMetrics(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Counts and times every call of the server it is given to.  Thread-safe."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation: Callable[[Any], grpc.RpcMethodHandler | None],
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED itself
            return None
        method: str = details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler, _Method(method))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, m: _Method) -> grpc.RpcMethodHandler:
        decode = handler.request_deserializer
        encode = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, m), decode, encode)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, m), decode, encode)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, m, requests_streamed=False), decode, encode)
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, m, requests_streamed=True), decode, encode)


def _unary(behavior: Behavior, m: _Method) -> Behavior:
    clock = time.perf_counter

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        began = clock()
        try:
            reply = behavior(request, context)
        except BaseException:
            code = _failure_code(context)
            m.answered(code, clock() - began)
            m.ended(code)
            raise
        code = _end_code(context)
        m.answered(code, clock() - began)
        m.ended(code)
        return reply

    return call


def _streaming(behavior: Behavior, m: _Method, *, requests_streamed: bool) -> Behavior:
    clock = time.perf_counter

    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        since = [clock()]  # when the current answer began: a request read, a message sent
        if requests_streamed:
            request = _noting_arrivals(request, since, clock)
        m.streams.inc()
        code = _OK
        replies: Any = None
        try:
            replies = behavior(request, context)
            for reply in replies:
                now = clock()
                m.ok_seconds.observe(now - since[0])
                yield reply
                since[0] = clock()
            code = _end_code(context)
        except GeneratorExit:  # the client went away: grpc closes the stream
            code = _CANCELLED
            raise
        except BaseException:
            code = _failure_code(context)
            m.answered(code, clock() - since[0])
            raise
        finally:
            close = getattr(replies, "close", None)
            if close is not None:
                close()  # now, not when collected: its own cleanup (stream slots) runs
            m.streams.dec()
            m.ended(code)

    return call


def _noting_arrivals(requests: Iterator[Any], since: list[float],
                     clock: Callable[[], float]) -> Iterator[Any]:
    for request in requests:
        since[0] = clock()
        yield request
