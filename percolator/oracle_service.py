"""The timestamp oracle over gRPC: the servicer, its registration, its status mapping.

``percolator.v1.TimestampOracle`` serves an in-process :class:`~percolator.oracle.Oracle`
(any :class:`~percolator.oracle.TimestampSource`) from the ``percolator serve`` node,
beside the tablet service, as ``GetTimestamps`` calls and as ``StreamTimestamps``
streams of the same requests.  A stream message costs the server far less than a call
(measured ~60-65 us vs ~150-190 us of CPU per request, grpcio 1.75.1, 2 cores), but an
open stream holds a server thread, so at most ``max_streams`` are open at once; more
are refused before any request is read (``RESOURCE_EXHAUSTED`` and the trailer
:data:`STREAM_KEY`: :data:`STREAM_REFUSED`) and their clients send calls instead.

Callers need the ``read`` role (:data:`ROLES`); requests over :data:`MAX_REQUEST_BYTES` or
that do not decode are refused by the server's guard (``bigtable_lite.guard``:
RESOURCE_EXHAUSTED, INVALID_ARGUMENT) before they reach the servicer.

Errors are translated here, once per direction: the servicer turns exceptions into
status codes (a stream's error ends it), :func:`error_from_rpc` turns a client's
``grpc.RpcError`` back into the same exceptions.  The oracle's own errors have codes
of their own (unambiguous within this service); every other error follows the table
in ``bigtable_lite.status``:

=========================  ======================  ====================================
server raises              status code             client raises
=========================  ======================  ====================================
InvalidArgument (count)    INVALID_ARGUMENT        InvalidArgument
OracleExhausted            OUT_OF_RANGE            OracleExhausted
OracleConflict             FAILED_PRECONDITION     OracleConflict
StoreClosed (shutdown)     UNAVAILABLE             Unavailable
(server unreachable)       UNAVAILABLE             Unavailable
(deadline passed)          DEADLINE_EXCEEDED       Unavailable
anything else              INTERNAL                StorageError
=========================  ======================  ====================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import NoReturn

import grpc

from bigtable_lite import status
from bigtable_lite.auth import Role
from bigtable_lite.reflection import source_descriptors
from bigtable_lite.server import ServiceRegistration

from ._status import error_for, error_from_rpc, error_name, status_for
from ._transport.stream_slots import REFUSED, StreamSlots
from .errors import OracleError
from .metrics import ORACLE_BATCH
from .oracle import TimestampSource
from .v1 import oracle_pb2

log = logging.getLogger(__name__)
_BATCH = ORACLE_BATCH.labels()

__all__ = ["DEFAULT_MAX_STREAMS", "MAX_REQUEST_BYTES", "ROLES", "SERVICE_NAME", "STREAM_KEY",
           "STREAM_REFUSED", "OracleServicer", "add_to_server", "error_from_rpc",
           "method_path", "oracle_error_for", "registration", "status_for", "stream_refused"]

SERVICE_NAME: str = oracle_pb2.DESCRIPTOR.services_by_name["TimestampOracle"].full_name

DEFAULT_MAX_STREAMS = 8
"""Most ``StreamTimestamps`` calls open at once (each holds a server thread)."""
STREAM_KEY = "percolator-oracle-stream"
"""Trailer of a refused ``StreamTimestamps`` call; the value is :data:`STREAM_REFUSED`."""
STREAM_REFUSED = REFUSED
ROLES: dict[str, Role | None] = {
    "GetTimestamps": Role.READ, "StreamTimestamps": Role.READ, "GetOracleStats": Role.READ}
"""The least role of each method (``bigtable_lite.auth``)."""
MAX_REQUEST_BYTES = 1024
"""Budget of one request message: a count is a few bytes."""

def _unknown() -> int:
    return 0  # a standalone oracle knows no GC safe point


def oracle_error_for(code: grpc.StatusCode | None, details: str | None) -> Exception | None:
    """The oracle's own exception for a failed call's status, or None if it is not one."""
    error = error_for(code, details)
    return error if isinstance(error, OracleError) else None


def stream_refused(exc: grpc.RpcError) -> bool:
    """Whether a failed ``StreamTimestamps`` call was refused before any request was read."""
    if not isinstance(exc, grpc.Call) or exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    return (STREAM_KEY, STREAM_REFUSED) in tuple(exc.trailing_metadata() or ())


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = status_for(exc)
    status.log_failure(log, SERVICE_NAME, code, message, exc)
    name = error_name(exc)
    if name:  # lets the client tell errors that share a code apart
        context.set_trailing_metadata(((status.ERROR_KEY, name),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


class OracleServicer:
    """Hands out ranges from one in-process oracle; the count is validated by the oracle.

    ``max_streams`` bounds the open ``StreamTimestamps`` calls (0 refuses them all).
    """

    def __init__(self, oracle: TimestampSource, *,
                 max_streams: int = DEFAULT_MAX_STREAMS,
                 safe_point: Callable[[], int] | None = None) -> None:
        self._oracle = oracle
        self._streams = StreamSlots(max_streams, STREAM_KEY)
        self._safe_point = safe_point or _unknown  # the node's GC safe point, handed out

    def GetTimestamps(self, request: oracle_pb2.GetTimestampsRequest,
                      context: grpc.ServicerContext) -> oracle_pb2.GetTimestampsResponse:
        count = request.count
        try:
            first = self._oracle.get_timestamps(count)
        except Exception as exc:  # noqa: BLE001 -- every error becomes a status, once, here
            _abort(context, exc)
        _BATCH.observe(count)
        return oracle_pb2.GetTimestampsResponse(first=first, count=count,
                                                safe_point=self._safe_point())

    def StreamTimestamps(self, requests: Iterator[oracle_pb2.GetTimestampsRequest],
                         context: grpc.ServicerContext
                         ) -> Iterator[oracle_pb2.GetTimestampsResponse]:
        """Each request answered as by GetTimestamps, in order; refused when too many are open."""
        slots = self._streams
        slots.admit(context, "no timestamp stream free (or the node is stopping): use"
                    " GetTimestamps")
        try:
            get = self._oracle.get_timestamps
            response = oracle_pb2.GetTimestampsResponse
            for request in requests:
                count = request.count
                try:
                    first = get(count)
                except Exception as exc:  # noqa: BLE001 -- as above; it ends the stream
                    _abort(context, exc)
                _BATCH.observe(count)
                yield response(first=first, count=count, safe_point=self._safe_point())
                if slots.stopping:  # end between requests: every request read was answered
                    return
        finally:
            slots.release()

    def GetOracleStats(self, request: oracle_pb2.GetOracleStatsRequest,
                       context: grpc.ServicerContext) -> oracle_pb2.OracleStats:
        try:
            s = self._oracle.stats()
        except Exception as exc:  # noqa: BLE001 -- as above
            _abort(context, exc)
        return oracle_pb2.OracleStats(timestamps_served=s.timestamps_served,
                                      requests=s.requests,
                                      persisted_high_water=s.persisted_high_water)

    def stop_streams(self) -> None:
        """End open streams after their current request and refuse new ones (node shutdown)."""
        self._streams.stop()

    @property
    def open_streams(self) -> int:
        return self._streams.open

    def add_to_server(self, server: grpc.Server) -> None:
        """Add the service (handlers built here: the generated grpc module is untyped)."""
        request = oracle_pb2.GetTimestampsRequest.FromString
        response = oracle_pb2.GetTimestampsResponse.SerializeToString
        handlers = {
            "GetTimestamps": grpc.unary_unary_rpc_method_handler(
                self.GetTimestamps, request_deserializer=request, response_serializer=response),
            "StreamTimestamps": grpc.stream_stream_rpc_method_handler(
                self.StreamTimestamps, request_deserializer=request,
                response_serializer=response),
            "GetOracleStats": grpc.unary_unary_rpc_method_handler(
                self.GetOracleStats,
                request_deserializer=oracle_pb2.GetOracleStatsRequest.FromString,
                response_serializer=oracle_pb2.OracleStats.SerializeToString),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    def registration(self) -> ServiceRegistration:
        """This service, for ``bigtable_lite.server.build_server(..., extra=[...])``.

        Every method needs the ``read`` role (a reader takes timestamps for its
        snapshots); requests are a count, so one over :data:`MAX_REQUEST_BYTES` is
        refused before it is decoded; streams are admitted here (``max_streams``).
        """
        add: Callable[[grpc.Server], None] = self.add_to_server
        return ServiceRegistration(SERVICE_NAME, add, ROLES, MAX_REQUEST_BYTES,
                                   sources=source_descriptors("percolator.v1"))


def add_to_server(oracle: TimestampSource, server: grpc.Server, *,
                  max_streams: int = DEFAULT_MAX_STREAMS) -> OracleServicer:
    """Serve ``oracle`` on ``server``; the servicer, for :meth:`OracleServicer.stop_streams`."""
    servicer = OracleServicer(oracle, max_streams=max_streams)
    servicer.add_to_server(server)
    return servicer


def method_path(name: str) -> str:
    """The full path of a method of the oracle service, for ``channel.unary_unary``."""
    return f"/{SERVICE_NAME}/{name}"


def registration(oracle: TimestampSource, *,
                 max_streams: int = DEFAULT_MAX_STREAMS) -> ServiceRegistration:
    """The oracle service, for ``bigtable_lite.server.build_server(..., extra=[...])``."""
    return OracleServicer(oracle, max_streams=max_streams).registration()
