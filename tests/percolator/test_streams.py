"""StreamedCalls (percolator._transport.streams) against a real gRPC server with a stream
admitted by StreamSlots, as the node's and the oracle's services admit theirs: requests
on one stream while the server takes one; after a refusal (its trailer), unary calls for
the back-off, then a stream again; a stream the server ended before answering is
``Unavailable`` and the request was not served; idle and old streams are replaced.

Time-based policy (back-off, a stream's life) is moved on by shifting the modules'
monotonic clock, not by waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from bigtable_lite import Unavailable
from percolator._transport import request_stream, streams
from percolator._transport.stream_slots import REFUSED, StreamSlots
from percolator._transport.streams import StreamedCalls

WAIT = 10.0
KEY = "test-stream"
SERVICE = "test.Echo"


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        threading.Event().wait(0.001)


class ShiftedTime:
    """A module's ``time``: monotonic time moved on by ``offset``."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ShiftedTime:
    shifted = ShiftedTime()
    monkeypatch.setattr(streams, "time", shifted)
    monkeypatch.setattr(request_stream, "time", shifted)
    return shifted


@dataclass
class Echo:
    """The server: answers b"re:" + request, on a call or on an admitted stream; records
    what it served how.  ``hold``: a streamed request equal to it waits for ``release``."""

    slots: StreamSlots
    served: list[tuple[str, bytes]] = field(default_factory=list)
    streams_called: int = 0
    exhausted_without_trailer: bool = False
    hold: bytes | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def call(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        self.served.append(("call", raw))
        return b"re:" + raw

    def stream(self, requests: Iterator[bytes], context: grpc.ServicerContext
               ) -> Iterator[bytes]:
        self.streams_called += 1
        if self.exhausted_without_trailer:  # busy for some other reason: not a refusal
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory")
        self.slots.admit(context, "no stream free")
        try:
            for raw in requests:
                self.served.append(("stream", raw))
                if raw == self.hold:
                    self.entered.set()
                    assert self.release.wait(WAIT)
                yield b"re:" + raw
                if self.slots.stopping:
                    return
        finally:
            self.slots.release()


@dataclass
class Served:
    echo: Echo
    calls: StreamedCalls[bytes, bytes]


@contextmanager
def serve(*, max_streams: int = 4, streamed: bool = True, timeout: float = WAIT
          ) -> Iterator[Served]:
    echo = Echo(StreamSlots(max_streams, KEY))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Call": grpc.unary_unary_rpc_method_handler(echo.call),
        "Stream": grpc.stream_stream_rpc_method_handler(echo.stream)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    calls: StreamedCalls[bytes, bytes] = StreamedCalls(
        channel.stream_stream(f"/{SERVICE}/Stream"), channel.unary_unary(f"/{SERVICE}/Call"),
        timeout=timeout, trailer_key=KEY, refusal=REFUSED, streams=streamed)
    try:
        yield Served(echo, calls)
    finally:
        echo.release.set()
        calls.close()
        channel.close()
        server.stop(None).wait(WAIT)


@pytest.fixture
def stay_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams are not half-closed for idleness, however slowly the test runs."""
    monkeypatch.setattr(streams, "IDLE", 4 * WAIT)


def ask(served: Served, *requests: bytes) -> None:
    for r in requests:
        assert served.calls.call(r) == b"re:" + r


def test_requests_travel_on_one_stream_while_the_server_takes_one(stay_open: None) -> None:
    with serve() as s:
        ask(s, b"a", b"b", b"c")
        assert s.echo.served == [("stream", b"a"), ("stream", b"b"), ("stream", b"c")]
        assert s.calls.streams_opened == 1 and s.echo.slots.open == 1
        s.calls.close()
        wait_until(lambda: s.echo.slots.open == 0, "a closed client's stream ends")
        ask(s, b"d")  # closed: calls only
        assert s.echo.served[-1] == ("call", b"d") and s.calls.streams_opened == 1


def test_a_refused_stream_sends_calls_for_the_back_off_then_tries_again(
        clock: ShiftedTime) -> None:
    with serve(max_streams=0) as s:
        ask(s, b"a", b"b")
        assert s.echo.served == [("call", b"a"), ("call", b"b")], "nothing on a stream"
        assert s.echo.streams_called == 1, "no stream tried during the back-off"
        assert s.calls.streams_opened == 1
        clock.offset += streams.BACKOFF
        ask(s, b"c")
        assert s.echo.streams_called == 2 and s.echo.served[-1] == ("call", b"c")
        s.echo.slots.limit = 1  # the server takes a stream again
        clock.offset += streams.BACKOFF
        ask(s, b"d", b"e")
        assert s.echo.served[-2:] == [("stream", b"d"), ("stream", b"e")]
        assert s.echo.streams_called == 3


def test_exhausted_without_the_refusal_trailer_is_an_error_not_a_refusal() -> None:
    with serve() as s:
        s.echo.exhausted_without_trailer = True
        with pytest.raises(grpc.RpcError) as info:
            s.calls.call(b"a")
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not streams.refused(info.value, KEY, REFUSED)
        assert s.echo.served == [], "not sent as a call either"
        s.echo.exhausted_without_trailer = False
        ask(s, b"b")  # the failed stream is replaced
        assert s.echo.served == [("stream", b"b")] and s.calls.streams_opened == 2


def test_a_stream_ended_before_an_answer_is_unavailable_and_the_request_not_served(
        stay_open: None) -> None:
    """The server stops between requests (as a stopping node): the request behind the one
    it answered last was never read."""
    with serve() as s:
        s.echo.hold = b"a"
        got: dict[bytes, object] = {}

        def call(r: bytes) -> None:
            try:
                got[r] = s.calls.call(r)
            except Exception as exc:  # noqa: BLE001 -- recorded, asserted below
                got[r] = exc

        first = threading.Thread(target=call, args=(b"a",))
        first.start()
        assert s.echo.entered.wait(WAIT)
        second = threading.Thread(target=call, args=(b"b",))
        second.start()  # sent on the same stream, behind a
        wait_until(lambda: s.calls._stream is not None and s.calls._stream._sent == 2,
                   "b is on the stream")
        s.echo.slots.stop()
        s.echo.release.set()
        for t in (first, second):
            t.join(timeout=WAIT)
            assert not t.is_alive()
        assert got[b"a"] == b"re:a"
        assert isinstance(got[b"b"], Unavailable)
        assert s.echo.served == [("stream", b"a")], "b was not served"
        ask(s, b"c")  # a new stream is refused (stopping): a call
        assert s.echo.served[-1] == ("call", b"c")


def test_an_idle_stream_is_half_closed_and_the_next_request_opens_another(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "IDLE", 0.05)
    with serve() as s:
        ask(s, b"a")
        wait_until(lambda: s.echo.slots.open == 0, "the idle stream ended at the server")
        ask(s, b"b")
        assert s.calls.streams_opened == 2
        assert s.echo.served == [("stream", b"a"), ("stream", b"b")]


def test_an_old_stream_takes_no_more_requests_and_is_replaced(
        stay_open: None, clock: ShiftedTime) -> None:
    with serve(timeout=WAIT) as s:
        ask(s, b"a")
        clock.offset += streams.LIFE * WAIT + 1.0  # past the stream's life
        ask(s, b"b")
        assert s.calls.streams_opened == 2
        assert s.echo.served == [("stream", b"a"), ("stream", b"b")]
        wait_until(lambda: s.echo.slots.open == 1, "the old stream ended")


def test_streams_false_sends_calls_only() -> None:
    with serve(streamed=False) as s:
        ask(s, b"a", b"b")
        assert s.echo.served == [("call", b"a"), ("call", b"b")]
        assert s.echo.streams_called == 0 and s.calls.streams_opened == 0


def test_the_bound_of_a_request_is_a_streams_deadline() -> None:
    with serve(timeout=2.0) as s:
        assert s.calls.bound == pytest.approx((1 + streams.LIFE) * 2.0)


def test_refused_reads_only_the_services_trailer() -> None:
    class Failed(grpc.RpcError, grpc.Call):  # type: ignore[misc]
        def __init__(self, code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...]
                     ) -> None:
            self._code, self._trailers = code, trailers

        def code(self) -> grpc.StatusCode:
            return self._code

        def trailing_metadata(self) -> Any:
            return self._trailers

    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert streams.refused(Failed(exhausted, ((KEY, REFUSED),)), KEY, REFUSED)
    assert not streams.refused(Failed(exhausted, (("other-key", REFUSED),)), KEY, REFUSED)
    assert not streams.refused(Failed(exhausted, ((KEY, "busy"),)), KEY, REFUSED)
    assert not streams.refused(Failed(grpc.StatusCode.UNAVAILABLE, ((KEY, REFUSED),)), KEY,
                               REFUSED)
