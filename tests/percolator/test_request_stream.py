"""RequestStream against an in-process stand-in for a gRPC stream-stream call: responses
reach the caller of the matching ticket, idle and old streams take no more requests,
and a stream the server ended reports it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bigtable_lite import Unavailable
from percolator._transport import request_stream
from percolator._transport.request_stream import RequestStream, StreamEnded

WAIT = 10.0  # bound of every wait in these tests


class EchoCall:
    """What ``channel.stream_stream(...)(requests, timeout=...)`` returns, served by a
    thread that answers each request with ``("re", request)`` in order; after
    ``answer_only`` requests it ends the call (a stopping server)."""

    def __init__(self, requests: Iterator[Any], timeout: float,
                 answer_only: int | None = None) -> None:
        self.timeout = timeout
        self.requests_ended = threading.Event()
        self._responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._answer_only = answer_only
        self._thread = threading.Thread(target=self._serve, args=(requests,), daemon=True)
        self._thread.start()

    def _serve(self, requests: Iterator[Any]) -> None:
        answered = 0
        for request in requests:  # gRPC's request thread consumes the iterator like this
            if self._answer_only is not None and answered == self._answer_only:
                break
            self._responses.put(("re", request))
            answered += 1
        else:
            self.requests_ended.set()
        self._responses.put(StopIteration)

    def __next__(self) -> Any:
        item = self._responses.get(timeout=WAIT)
        if item is StopIteration:
            self._responses.put(item)  # every later reader sees the end too
            raise StopIteration
        return item


class Method:
    """Opens EchoCalls and remembers them."""

    def __init__(self, answer_only: int | None = None) -> None:
        self.calls: list[EchoCall] = []
        self._answer_only = answer_only

    def __call__(self, requests: Iterator[Any], timeout: float) -> EchoCall:
        call = EchoCall(requests, timeout, self._answer_only)
        self.calls.append(call)
        return call


def test_each_caller_reads_the_response_to_its_own_request() -> None:
    method = Method()
    stream: RequestStream[int, Any] = RequestStream(method, life=WAIT, timeout=WAIT, idle=WAIT)
    got: dict[int, Any] = {}
    errors: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            for i in range(50):
                request = n * 1000 + i
                ticket = stream.put(request)
                assert ticket is not None
                got[request] = stream.reply(ticket)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    assert len(got) == 8 * 50
    assert all(response == ("re", request) for request, response in got.items())
    assert len(method.calls) == 1 and method.calls[0].timeout == 2 * WAIT  # life + timeout
    stream.end()


def test_an_idle_stream_is_half_closed_and_takes_no_more_requests() -> None:
    method = Method()
    stream: RequestStream[int, Any] = RequestStream(method, life=WAIT, timeout=WAIT, idle=0.05)
    ticket = stream.put(1)
    assert ticket is not None and stream.reply(ticket) == ("re", 1)
    assert method.calls[0].requests_ended.wait(WAIT), "half-closed after idle"
    assert stream.put(2) is None


def test_an_old_stream_takes_no_more_requests() -> None:
    method = Method()
    stream: RequestStream[int, Any] = RequestStream(method, life=-1.0, timeout=WAIT, idle=WAIT)
    assert stream.put(1) is None  # already past its life
    assert method.calls[0].requests_ended.wait(WAIT), "and half-closed"


def test_end_lets_the_server_answer_what_was_sent() -> None:
    method = Method()
    stream: RequestStream[int, Any] = RequestStream(method, life=WAIT, timeout=WAIT, idle=WAIT)
    tickets = [stream.put(i) for i in range(3)]
    stream.end()
    stream.end()  # idempotent
    assert stream.put(9) is None
    assert [stream.reply(t) for t in tickets if t is not None] == [("re", i) for i in range(3)]
    assert method.calls[0].requests_ended.wait(WAIT)


def test_a_stream_the_server_ended_reports_the_unanswered_requests() -> None:
    stream: RequestStream[int, Any] = RequestStream(Method(answer_only=1), life=WAIT,
                                                    timeout=WAIT, idle=WAIT)
    first, second = stream.put(1), stream.put(2)
    assert first is not None and second is not None
    assert stream.reply(first) == ("re", 1)
    with pytest.raises(StreamEnded):
        stream.reply(second)


def test_a_reader_whose_turn_never_comes_gives_up_at_the_streams_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ticket 1's reader waits for ticket 0's to read first; nobody does: it gets
    Unavailable once the stream's deadline (and a margin) passed, not a wait for ever."""
    monkeypatch.setattr(request_stream, "_TURN_MARGIN", 0.05)
    stream: RequestStream[int, Any] = RequestStream(Method(), life=0.05, timeout=0.05,
                                                    idle=WAIT)
    first, second = stream.put(1), stream.put(2)
    assert first == 0 and second == 1
    with pytest.raises(Unavailable):
        stream.reply(second)
    stream.end()


def test_the_woken_reader_calls_after_wake() -> None:
    """Each reader handed its response, and gRPC's thread handed each request, calls
    ``after_wake`` (where the oracle client yields the CPU)."""
    woken: list[str] = []
    stream: RequestStream[int, Any] = RequestStream(
        Method(), life=WAIT, timeout=WAIT, idle=WAIT,
        after_wake=lambda: woken.append(threading.current_thread().name))
    tickets = [stream.put(i) for i in range(3)]
    assert [stream.reply(t) for t in tickets if t is not None] == [("re", i) for i in range(3)]
    stream.end()
    me = threading.current_thread().name
    assert woken.count(me) == 3
    assert len(woken) >= 6, "and the request thread, once per request"
