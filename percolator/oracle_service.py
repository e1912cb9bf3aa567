"""The timestamp oracle over gRPC: the servicer, its registration, its status mapping.

``percolator.v1.TimestampOracle`` serves an in-process :class:`~percolator.oracle.Oracle`
(any :class:`~percolator.oracle.TimestampSource`) from the ``percolator serve`` node,
beside the tablet service.  Errors are translated here, once per direction: the
servicer turns exceptions into status codes, :func:`error_from_rpc` turns a client's
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
from typing import NoReturn

import grpc

from bigtable_lite import status
from bigtable_lite.server import ServiceRegistration

from .oracle import OracleConflict, OracleExhausted, TimestampSource
from .v1 import oracle_pb2

log = logging.getLogger(__name__)

__all__ = ["SERVICE_NAME", "OracleServicer", "add_to_server", "error_from_rpc", "method_path",
           "oracle_error_for", "registration", "status_for"]

SERVICE_NAME: str = oracle_pb2.DESCRIPTOR.services_by_name["TimestampOracle"].full_name

# Oracle errors <-> status codes (unambiguous within this service).
_ORACLE_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (OracleExhausted, grpc.StatusCode.OUT_OF_RANGE),          # past 2**64 - 1
    (OracleConflict, grpc.StatusCode.FAILED_PRECONDITION),    # two oracles on one store
)
_ORACLE_ERRORS: dict[grpc.StatusCode, type[Exception]] = {
    code: cls for cls, code in _ORACLE_CODES}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details a servicer sends for ``exc``."""
    for cls, code in _ORACLE_CODES:
        if isinstance(exc, cls):
            return code, str(exc)
    return status.status_for(exc)


def oracle_error_for(code: grpc.StatusCode | None, details: str | None) -> Exception | None:
    """The oracle's own exception for a failed call's status, or None if it is not one."""
    cls = _ORACLE_ERRORS.get(code) if code is not None else None
    return cls(f"{code.name}: {details or 'no details'}") if cls is not None and code else None


def error_from_rpc(exc: grpc.RpcError) -> Exception:
    """The exception a client raises for a failed oracle RPC (``raise ... from exc``)."""
    if isinstance(exc, grpc.Call):
        own = oracle_error_for(exc.code(), exc.details())
        if own is not None:
            return own
    return status.error_from_rpc(exc)


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error serving the timestamp oracle", exc_info=exc)
    name = status.error_name(exc)
    if name:  # lets the client tell errors that share a code apart
        context.set_trailing_metadata(((status.ERROR_KEY, name),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


class OracleServicer:
    """Hands out ranges from one in-process oracle; the count is validated by the oracle."""

    def __init__(self, oracle: TimestampSource) -> None:
        self._oracle = oracle

    def GetTimestamps(self, request: oracle_pb2.GetTimestampsRequest,
                      context: grpc.ServicerContext) -> oracle_pb2.GetTimestampsResponse:
        count = request.count
        try:
            first = self._oracle.get_timestamps(count)
        except Exception as exc:  # noqa: BLE001 -- every error becomes a status, once, here
            _abort(context, exc)
        return oracle_pb2.GetTimestampsResponse(first=first, count=count)

    def GetOracleStats(self, request: oracle_pb2.GetOracleStatsRequest,
                       context: grpc.ServicerContext) -> oracle_pb2.OracleStats:
        try:
            s = self._oracle.stats()
        except Exception as exc:  # noqa: BLE001 -- as above
            _abort(context, exc)
        return oracle_pb2.OracleStats(timestamps_served=s.timestamps_served,
                                      requests=s.requests,
                                      persisted_high_water=s.persisted_high_water)


def add_to_server(oracle: TimestampSource, server: grpc.Server) -> None:
    """Add the oracle service (handlers built here: the generated grpc module is untyped)."""
    servicer = OracleServicer(oracle)
    handlers = {
        "GetTimestamps": grpc.unary_unary_rpc_method_handler(
            servicer.GetTimestamps,
            request_deserializer=oracle_pb2.GetTimestampsRequest.FromString,
            response_serializer=oracle_pb2.GetTimestampsResponse.SerializeToString),
        "GetOracleStats": grpc.unary_unary_rpc_method_handler(
            servicer.GetOracleStats,
            request_deserializer=oracle_pb2.GetOracleStatsRequest.FromString,
            response_serializer=oracle_pb2.OracleStats.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def method_path(name: str) -> str:
    """The full path of a method of the oracle service, for ``channel.unary_unary``."""
    return f"/{SERVICE_NAME}/{name}"


def registration(oracle: TimestampSource) -> ServiceRegistration:
    """The oracle service, for ``bigtable_lite.server.build_server(..., extra=[...])``."""
    return ServiceRegistration(SERVICE_NAME, lambda server: add_to_server(oracle, server))
