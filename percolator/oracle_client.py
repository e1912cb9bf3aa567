"""RemoteOracle: the batching gRPC client of the timestamp oracle.

Batching as in the Percolator paper (section 2.3): a client keeps at most one request
in flight.  Callers who arrive while it is in flight join the *next* request, whose
count is the sum of what they asked for (at most ``MAX_COUNT``; more wait for the one
after).  Under load one request serves many callers, so throughput grows with load
while an idle client still answers in one round trip.

Linearizability: a caller only ever receives numbers from a request sent *after* it
arrived (it joins a batch that has not been sent yet, never the one in flight).  The
server hands out numbers greater than any it handed out before that request arrived,
so the caller's timestamp is greater than any timestamp any client had received
before the caller asked.

The batching is the clients' one batcher (``percolator._transport.batcher``): no thread
of its own, the first caller of a request sends it, its callers are woken one after
another and the last gives the turn to the next request's sender, which takes its
batch when it runs -- so callers woken from one request who ask again at once join the
next: with 64 requesting threads in one process each request carries all 64 (figures
in bench/HISTORY.md).  Each woken thread yields the CPU once
(``percolator._transport.wake_yield``): the hand-offs then cost one context switch
instead of ~3.

Transport.  Requests travel as messages of one ``StreamTimestamps`` call rather than as
``GetTimestamps`` calls: a message costs the server ~60% less CPU than a call and takes
~40% less time there and back.  The stream policy (idle half-close, a life of half a
``timeout``, unary calls for a while after a refusal) is ``percolator._transport.streams``,
shared with the node's client.  ``streams=False`` sends calls only.

Every wait is bounded (the batcher's bounds, from a request's own: the deadline of the
stream it went on).  Errors are translated from gRPC status codes by
``percolator._status``.
"""

from __future__ import annotations

import threading
from typing import Self

import grpc

from bigtable_lite import MAX_TS, StorageError, StoreClosed

from ._status import error_from_rpc
from ._transport.batcher import Batcher, Command
from ._transport.stream_slots import REFUSED
from ._transport.streams import StreamedCalls
from ._transport.wake_yield import WakeYield
from .errors import OracleError
from .oracle import MAX_COUNT, OracleStats, check_count
from .oracle_service import STREAM_KEY, method_path
from .v1 import oracle_pb2

__all__ = ["DEFAULT_TIMEOUT", "RemoteOracle"]

DEFAULT_TIMEOUT = 10.0
"""Deadline of one GetTimestamps call, in seconds (a request on a stream has as long)."""

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
        self._after_wake = WakeYield()
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
        self._batcher: Batcher[None, int] = Batcher(
            self._send, max_in_flight=1, max_commands=MAX_COUNT, max_weight=MAX_COUNT,
            batch_bound=self._calls.bound, after_wake=self._after_wake)
        self._get_stats = self._channel.unary_unary(
            method_path("GetOracleStats"),
            request_serializer=oracle_pb2.GetOracleStatsRequest.SerializeToString,
            response_deserializer=oracle_pb2.OracleStats.FromString,
            _registered_method=True)
        self._lock = threading.Lock()
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
        if self._closed:
            raise StoreClosed("the oracle client is closed")
        command: Command[None, int] = Command(None, count)
        self._batcher.run(command)
        if command.error is not None:
            raise command.error
        assert command.result is not None
        return command.result

    def stats(self) -> OracleStats:
        """Client-side figures: timestamps returned to callers, RPCs sent."""
        with self._lock:
            return OracleStats(self._served, self._requests)

    @property
    def queued(self) -> int:
        """Timestamps asked for by callers waiting for the next request (not yet sent)."""
        return self._batcher.queued

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

    # --- one request -----------------------------------------------------------------------

    def _send(self, batch: list[Command[None, int]]) -> None:
        """One request for every timestamp of ``batch``; each command a contiguous range
        (raises nothing but BaseException: a failure is every command's error)."""
        count = sum([c.weight for c in batch])
        try:
            if self._closed:
                raise StoreClosed("the oracle client is closed")
            reply = self._calls.call(oracle_pb2.GetTimestampsRequest(count=count))
            first = reply.first
            if reply.count != count or first < 1 or first + count - 1 > MAX_TS:
                raise OracleError(f"oracle answered {reply.count} timestamps from"
                                  f" {first} to a request for {count}")
        except grpc.RpcError as exc:
            self._fail(batch, StoreClosed("the oracle client is closed") if self._closed
                       else error_from_rpc(exc), exc)
            return
        except (StorageError, OracleError) as exc:  # e.g. StoreClosed, Unavailable
            self._fail(batch, exc, exc.__cause__)
            return
        except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
            self._fail(batch, StoreClosed(f"the oracle client is closed: {exc}"), None)
            return
        finally:
            with self._lock:
                self._requests += 1
        with self._lock:
            self._served += count
        for c in batch:
            c.result = first
            first += c.weight

    @staticmethod
    def _fail(batch: list[Command[None, int]], error: Exception,
              cause: BaseException | None) -> None:
        for c in batch:  # each caller raises its own exception object
            c.error = type(error)(*error.args)
            c.error.__cause__ = cause
