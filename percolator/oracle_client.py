"""RemoteOracle: the batching gRPC client of the timestamp oracle.

Batching as in the Percolator paper (section 2.3): a client keeps at most one request
in flight.  Callers who arrive while it is in flight join the *next* request, whose
count is the sum of what they asked for.  Under load one request serves many callers,
so throughput grows with load while an idle client still answers in one round trip.

Linearizability: a caller only ever receives numbers from a request sent *after* it
arrived (it joins the batch that has not been sent yet, never the one in flight).  The
server hands out numbers greater than any it handed out before that request arrived,
so the caller's timestamp is greater than any timestamp any client had received
before the caller asked.

No extra thread: the first caller of a batch sends it.  If a request is in flight when
that caller arrives, it waits for its turn.  When the request returns, its callers are
woken one after another, each waking the next before it returns (waking them all at
once makes dozens of threads fight for the GIL: measured 2.5x slower at 64 callers),
and the last one gives the turn to the next batch's sender, which takes its batch when
it runs.  So callers woken from one request, who ask again at once, still join the
next request: with 64 requesting threads in one process, each request carries all 64
(the next request sent as soon as one returned carried ~20-27) for about half the
client's and the server's CPU per timestamp, and with 4 processes of 16 threads the
timestamps per second grew ~1.6x (figures in ``docs/architecture.md``).  Each wake-up
of a blocked thread costs ~7 us on the reference machine (2 cores, with the yield
below), so waking 64 callers takes longer than their request; an idle client (one caller)
sends at once, as before.

Yielding after a wake-up.  A woken thread normally preempts the thread that woke it,
which still holds the GIL (and, inside CPython's GIL, the mutex guarding it): the woken
thread finds both taken and sleeps again, and each hand-off costs ~3 context switches
instead of 1 (traced with ``perf sched``).  A thread that calls ``sched_yield()`` once
after it is woken is, on Linux's EEVDF scheduler, not eligible to preempt at its next
wake-up, so the hand-off becomes one switch: with 64 requesting threads ~1.6x the
timestamps per second.  Where the CPU is shared with other runnable work a yield
switches away while holding the GIL instead; :class:`_WakeYield` notices (yields take
long) and stops yielding while that lasts (figures in ``docs/architecture.md``).

Transport.  Requests travel as messages of one ``StreamTimestamps`` call rather than as
``GetTimestamps`` calls: a message costs the server ~60% less CPU than a call and takes
~40% less time there and back.  The stream policy (idle half-close, a life of half a
``timeout``, unary calls for a while after a refusal) is ``percolator._transport.streams``,
shared with the node's client.  ``streams=False`` sends calls only.

Every wait is bounded: a request by its deadline, a turn by one request's bound plus a
margin (after which the waiting sender takes the wire itself if the request ahead has
returned, or fails), a caller's wait by two requests' bounds plus margins.  Errors are
translated from gRPC status codes by ``percolator._status``.
"""

from __future__ import annotations

import _thread
import os
import threading
import time
from collections.abc import Callable
from typing import Self

import grpc

from bigtable_lite import MAX_TS, StorageError, StoreClosed, Unavailable

from . import failpoints
from ._status import error_from_rpc
from ._transport.stream_slots import REFUSED
from ._transport.streams import StreamedCalls
from .errors import OracleError
from .oracle import MAX_COUNT, OracleStats, check_count
from .oracle_service import STREAM_KEY, method_path
from .v1 import oracle_pb2

__all__ = ["DEFAULT_TIMEOUT", "RemoteOracle"]

DEFAULT_TIMEOUT = 10.0
"""Deadline of one GetTimestamps call, in seconds (a request on a stream has as long)."""

_HANDOFF_MARGIN = 5.0  # seconds of slack, beyond requests' bounds, of a wait for a turn
_SEND, _SEND_ON_TURN, _WAIT = range(3)  # a caller's role in its batch
_YIELD_COST_LIMIT_NS = 5_000  # yields costing more than this on average: stop yielding
_YIELD_COST_CAP_NS = 20_000   # one slow yield counts at most this much in the average
_YIELD_MEASURE_EVERY = 16     # while yielding, time one yield in this many
_YIELD_PROBE_EVERY = 256      # while not yielding, still yield (timed) once in this many


class _WakeYield:
    """Called by a thread just woken by another: yield the CPU once, while that is cheap.

    The yield keeps this thread's next wake-up from preempting its waker (see the module
    docstring).  It is cheap (~1 us) when nothing else is runnable on this CPU; when other
    work is, the yield hands the CPU to it while this thread holds the GIL, which stalls
    the whole process.  So one yield in ``_YIELD_MEASURE_EVERY`` is timed, and while the
    running average of those (1/8 weight, one sample capped at ``_YIELD_COST_CAP_NS``)
    exceeds ``_YIELD_COST_LIMIT_NS`` only one call in ``_YIELD_PROBE_EVERY`` yields, timed,
    to notice when yields are cheap again.  Unlocked: a lost update under a race only
    shifts the average or the count.
    """

    __slots__ = ("_available", "_clock", "_cost_ns", "_countdown", "_yield", "yielding")

    def __init__(self, sched_yield: Callable[[], object] | None = getattr(os, "sched_yield", None),
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self._available = sched_yield is not None  # else (not POSIX) it never yields
        self._yield: Callable[[], object] = sched_yield or (lambda: None)
        self._clock = clock
        self._cost_ns = 0
        self._countdown = 0
        self.yielding = self._available
        """Whether calls yield now (else only one in ``_YIELD_PROBE_EVERY`` does)."""

    def __call__(self) -> None:
        countdown = self._countdown
        if countdown:
            self._countdown = countdown - 1
            if self.yielding:
                self._yield()
            return
        self._timed()

    def _timed(self) -> None:
        if not self._available:
            self._countdown = _YIELD_PROBE_EVERY
            return
        clock = self._clock
        start = clock()
        self._yield()
        took = min(clock() - start, _YIELD_COST_CAP_NS)
        self._cost_ns += (took - self._cost_ns) >> 3
        self.yielding = self._cost_ns <= _YIELD_COST_LIMIT_NS
        self._countdown = (_YIELD_MEASURE_EVERY if self.yielding else _YIELD_PROBE_EVERY) - 1


class _Batch:
    """Callers that will share one request.

    ``turn`` is held until the batch may go on the wire: until the request ahead of it
    has returned and that request's callers have been woken (``turn_given`` is set,
    under the client's lock, just before it is released).  ``sent`` once the batch is
    detached from ``_pending`` to be sent; ``settled`` once ``first`` or ``error`` is
    final.  ``turn_passed`` once this batch, sent and settled, gave the wire to the next
    one (exactly once); ``chain_passed`` if its last waiter passed before it settled.
    All set under the client's lock.
    """

    __slots__ = ("chain_passed", "count", "error", "first", "sent", "settled", "turn",
                 "turn_given", "turn_passed", "waiters")

    def __init__(self) -> None:
        self.count = 0
        self.first = 0
        self.error: BaseException | None = None
        self.sent = False
        self.settled = False
        self.turn_given = False
        self.turn_passed = False
        self.chain_passed = False
        self.waiters: list[_thread.LockType] = []  # callers other than the sender, in order
        self.turn = _thread.allocate_lock()
        self.turn.acquire()


class RemoteOracle:
    """A :class:`~percolator.oracle.TimestampSource` served by a remote oracle over gRPC.

    ``target`` is ``host:port`` (the client owns the channel it opens) or an existing
    channel (left open on :meth:`close`).  ``timeout`` bounds each request: it fails
    (``Unavailable``) at most ``(1 + streams.LIFE) * timeout`` after it was sent (the
    deadline of the stream it went on; a call sent after a refused stream gets what
    is left of that, at most ``timeout``).  ``streams=False`` sends every request as a
    ``GetTimestamps`` call.
    """

    def __init__(self, target: str | grpc.Channel, *, timeout: float = DEFAULT_TIMEOUT,
                 streams: bool = True) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if isinstance(target, str):
            self._channel: grpc.Channel = grpc.insecure_channel(target)
            self._owns_channel = True
        else:
            self._channel = target
            self._owns_channel = False
        self.timeout = timeout
        # Longest a request can take (a stream's deadline); a caller waits at most for
        # the turn of its batch (the request ahead of it), then for its own request.
        self._after_wake = _WakeYield()
        self._calls: StreamedCalls[oracle_pb2.GetTimestampsRequest,
                                   oracle_pb2.GetTimestampsResponse] = StreamedCalls(
            self._channel.stream_stream(
                method_path("StreamTimestamps"),
                request_serializer=oracle_pb2.GetTimestampsRequest.SerializeToString,
                response_deserializer=oracle_pb2.GetTimestampsResponse.FromString,
                _registered_method=True),
            self._channel.unary_unary(
                method_path("GetTimestamps"),
                request_serializer=oracle_pb2.GetTimestampsRequest.SerializeToString,
                response_deserializer=oracle_pb2.GetTimestampsResponse.FromString,
                _registered_method=True),
            timeout=timeout, trailer_key=STREAM_KEY, refusal=REFUSED, streams=streams,
            after_wake=self._after_wake)
        # Longest a request can take (a stream's deadline); a caller waits at most for
        # the turn of its batch (the request ahead of it), then for its own request.
        self._request_bound = self._calls.bound
        self._turn_bound = self._request_bound + _HANDOFF_MARGIN
        self._wait_bound = self._turn_bound + self._request_bound + 3 * _HANDOFF_MARGIN
        self._get_stats = self._channel.unary_unary(
            method_path("GetOracleStats"),
            request_serializer=oracle_pb2.GetOracleStatsRequest.SerializeToString,
            response_deserializer=oracle_pb2.OracleStats.FromString,
            _registered_method=True)
        self._lock = threading.Lock()
        # Callers outside the wake-up chain wait here for ``batch.settled``.
        self._settled = threading.Condition(self._lock)
        self._outside_chain = 0
        self._pending = _Batch()   # callers not yet sent
        self._ahead: _Batch | None = None  # the batch sent last
        # The wire is taken: a request is in flight, or its callers are being woken, or
        # the next sender has its turn.  Cleared (under the lock) only with no one pending.
        self._in_flight = False
        self._closed = False
        self._served = 0
        self._requests = 0

    # --- the TimestampSource contract ---------------------------------------------------

    def get_timestamp(self) -> int:
        return self._take(1)

    def get_timestamps(self, count: int) -> int:
        return self._take(check_count(count))

    def _take(self, count: int) -> int:
        """Join the next request for ``count`` timestamps; return the first of ours."""
        lock = self._lock
        while True:
            with lock:
                if self._closed:
                    raise StoreClosed("the oracle client is closed")
                batch = self._pending
                offset = batch.count
                if offset + count <= MAX_COUNT:
                    batch.count = offset + count
                    if not self._in_flight:
                        # Nothing on the wire, so the pending batch was empty: we are alone.
                        self._in_flight = True
                        self._dispatch(batch)
                        role = _SEND
                    elif offset == 0:
                        role = _SEND_ON_TURN
                    else:
                        waiter = _thread.allocate_lock()
                        waiter.acquire()
                        batch.waiters.append(waiter)
                        index = len(batch.waiters) - 1
                        role = _WAIT
                    break
            # The next request is full: join the one after it, once this one is settled.
            self._wait_settled(batch, self._wait_bound)
        if role == _WAIT:
            self._await_batch(batch, waiter, index)
        else:
            if role == _SEND_ON_TURN:
                self._await_turn(batch)
            self._send(batch)
        if batch.error is not None:
            raise batch.error
        return batch.first + offset

    def stats(self) -> OracleStats:
        """Client-side figures: timestamps returned to callers, RPCs sent."""
        with self._lock:
            return OracleStats(self._served, self._requests)

    @property
    def queued(self) -> int:
        """Timestamps asked for by callers waiting for the next request (not yet sent)."""
        return self._pending.count

    def server_stats(self) -> OracleStats:
        """The server oracle's own figures (one RPC)."""
        try:
            reply = self._get_stats(oracle_pb2.GetOracleStatsRequest(), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return OracleStats(reply.timestamps_served, reply.requests, reply.persisted_high_water)

    @property
    def streams_opened(self) -> int:
        """``StreamTimestamps`` calls opened so far."""
        return self._calls.streams_opened

    def close(self) -> None:
        """Refuse new callers; close the channel if this client opened it.  Idempotent.

        Callers already waiting get their timestamps or, if the channel closed under
        their request, ``StoreClosed``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._calls.close()
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the request chain ----------------------------------------------------------------

    def _send(self, batch: _Batch) -> None:
        """Send ``batch`` (dispatched), settle it, wake its callers (the last of them gives
        the turn to the next batch; with no other caller, we do)."""
        ok = False
        try:
            if self._closed:
                raise StoreClosed("the oracle client is closed")
            reply = self._calls.call(oracle_pb2.GetTimestampsRequest(count=batch.count))
            if reply.count != batch.count or reply.first < 1 or \
                    reply.first + reply.count - 1 > MAX_TS:
                raise OracleError(f"oracle answered {reply.count} timestamps from"
                                  f" {reply.first} to a request for {batch.count}")
            batch.first = reply.first
            ok = True
        except grpc.RpcError as exc:
            batch.error = StoreClosed("the oracle client is closed") if self._closed \
                else error_from_rpc(exc)
            batch.error.__cause__ = exc
        except (StorageError, OracleError) as exc:  # e.g. StoreClosed, Unavailable
            batch.error = exc
        except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
            batch.error = StoreClosed(f"the oracle client is closed: {exc}")
        except BaseException as exc:  # e.g. KeyboardInterrupt: fail the batch, keep the chain
            batch.error = Unavailable(f"timestamp request interrupted: {exc!r}")
            raise
        finally:
            with self._lock:
                self._requests += 1
                if ok:
                    self._served += batch.count
                batch.settled = True
                if self._outside_chain:
                    self._settled.notify_all()
                pass_turn = not batch.waiters or batch.chain_passed
            if batch.waiters:
                batch.waiters[0].release()
            if pass_turn:
                self._pass_turn(batch)

    def _dispatch(self, batch: _Batch) -> None:
        """Detach ``batch`` from ``_pending``: it is sent now (the lock is held)."""
        if self._pending is batch:
            self._pending = _Batch()
        batch.sent = True
        self._ahead = batch

    def _pass_turn(self, batch: _Batch) -> None:
        """``batch`` is settled and its callers woken: give the wire to the pending batch,
        whose first caller sends it (once per batch)."""
        with self._lock:
            if batch.turn_passed:
                return
            batch.turn_passed = True
            nxt = self._pending
            nxt.turn_given = give = nxt.count > 0
            if not give:
                self._in_flight = False
        if give:
            nxt.turn.release()

    def _await_turn(self, batch: _Batch) -> None:
        """Wait (bounded) for the turn of ``batch``, then dispatch it.

        If the turn is late although the request ahead has returned (its callers are
        still being woken: a thread not scheduled), take the wire.  If that request has
        not returned, fail this batch only (its callers get ``Unavailable``).
        """
        given = batch.turn.acquire(True, self._turn_bound)
        self._after_wake()
        if not given:
            with self._lock:
                ahead = self._ahead
                if not batch.turn_given:  # given just now, or never: then take it or give up
                    if ahead is not None and ahead.settled and not ahead.turn_passed:
                        ahead.turn_passed = True  # its last caller will not pass it
                        batch.turn_given = True
                    elif self._pending is batch:  # the wire stays with the request ahead
                        self._pending = _Batch()
                if not batch.turn_given:
                    batch.error = Unavailable(
                        "timed out waiting for the timestamp request in flight")
                    batch.settled = True
                    self._settled.notify_all()
            if batch.error is not None:
                if batch.waiters:
                    batch.waiters[0].release()  # a batch never sent: none passes the turn
                raise batch.error
        with self._lock:
            self._dispatch(batch)

    def _await_batch(self, batch: _Batch, waiter: _thread.LockType, index: int) -> None:
        """Wait (bounded) for ``batch`` to settle; wake the next caller of the batch first,
        or, the last, give the turn to the next batch."""
        woken = waiter.acquire(True, self._wait_bound)
        self._after_wake()
        # Released exactly once, by its predecessor: the sender, or the waiter before it,
        # which passes the wake-up on even if it timed out, so the chain never breaks.
        waiters = batch.waiters
        if index + 1 < len(waiters):
            waiters[index + 1].release()
        else:
            failpoints.hit("oracle_client.before_pass_turn")
            with self._lock:  # a batch still pending may grow: only a sent one has a last
                last = batch.sent
                pass_turn = last and batch.settled
                if last and not pass_turn:  # timed out before the request returned
                    batch.chain_passed = True
            if pass_turn:
                self._pass_turn(batch)
        if not batch.settled:  # woken early by a predecessor that timed out, or timed out
            self._wait_settled(batch, self._wait_bound if woken else _HANDOFF_MARGIN)

    def _wait_settled(self, batch: _Batch, timeout: float) -> None:
        with self._lock:
            self._outside_chain += 1
            try:
                if not self._settled.wait_for(lambda: batch.settled, timeout):
                    raise Unavailable("timed out waiting for a shared timestamp request")
            finally:
                self._outside_chain -= 1
