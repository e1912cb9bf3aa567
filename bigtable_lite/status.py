"""Status mapping: the one table between bigtable_lite errors and gRPC status codes, per direction.

Server side, an exception becomes (code, message) and its class name travels in the
trailing metadata key ``bigtable-lite-error``, so the client can restore the exact
class where a code is shared (``LimitExceeded`` and ``InvalidArgument`` are both
INVALID_ARGUMENT).  Client side, the code decides the class; the metadata only
refines it within that code.  No error message is ever parsed.

=========================  ======================  ====================================
server raises              status code             client raises
=========================  ======================  ====================================
InvalidArgument            INVALID_ARGUMENT        InvalidArgument
LimitExceeded              INVALID_ARGUMENT        LimitExceeded
ValueError, TypeError      INVALID_ARGUMENT        InvalidArgument
DecodeError (bad bytes)    INVALID_ARGUMENT        InvalidArgument
ReplyTooLarge              RESOURCE_EXHAUSTED      ReplyTooLarge
(message over size limit)  RESOURCE_EXHAUSTED      LimitExceeded
(no stream slot free)      RESOURCE_EXHAUSTED      LimitExceeded
Unauthenticated            UNAUTHENTICATED         Unauthenticated
PermissionDenied           PERMISSION_DENIED       PermissionDenied
WrongTablet                FAILED_PRECONDITION     WrongTablet
StoreClosed, Unavailable   UNAVAILABLE             Unavailable
(deadline passed)          DEADLINE_EXCEEDED       Unavailable
(call cancelled)           CANCELLED               Unavailable
DataCorruption             DATA_LOSS               DataCorruption
anything else              INTERNAL                StorageError
(any other code)           ...                     StorageError
=========================  ======================  ====================================

For a mutation, ``Unavailable`` means the outcome is unknown: the request may or may
not have been applied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from google.protobuf.message import DecodeError

from .errors import (
    DataCorruption,
    InvalidArgument,
    LimitExceeded,
    PermissionDenied,
    ReplyTooLarge,
    StorageError,
    StoreClosed,
    Unauthenticated,
    Unavailable,
    WrongTablet,
)

ERROR_KEY = "bigtable-lite-error"
"""Trailing metadata key naming the server-side error class."""
STREAM_KEY = "bigtable-lite-stream"
"""Trailing metadata key of a streaming call refused for want of a stream slot (its value is
:data:`STREAM_REFUSED`): nothing was read or sent, so the client may try again later."""
STREAM_REFUSED = "refused"

Code = grpc.StatusCode

# Server -> wire.  First match wins, so subclasses come before their bases.
TO_STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (ReplyTooLarge, Code.RESOURCE_EXHAUSTED),
    (Unauthenticated, Code.UNAUTHENTICATED),
    (PermissionDenied, Code.PERMISSION_DENIED),
    (LimitExceeded, Code.INVALID_ARGUMENT),
    (InvalidArgument, Code.INVALID_ARGUMENT),
    (WrongTablet, Code.FAILED_PRECONDITION),
    (StoreClosed, Code.UNAVAILABLE),
    (Unavailable, Code.UNAVAILABLE),
    (DataCorruption, Code.DATA_LOSS),
    (DecodeError, Code.INVALID_ARGUMENT),
    (ValueError, Code.INVALID_ARGUMENT),
    (TypeError, Code.INVALID_ARGUMENT),
)

# Wire -> client.
FROM_STATUS: dict[grpc.StatusCode, type[StorageError]] = {
    Code.INVALID_ARGUMENT: InvalidArgument,
    Code.RESOURCE_EXHAUSTED: LimitExceeded,
    Code.FAILED_PRECONDITION: WrongTablet,
    Code.UNAVAILABLE: Unavailable,
    Code.DEADLINE_EXCEEDED: Unavailable,
    Code.CANCELLED: Unavailable,
    Code.DATA_LOSS: DataCorruption,
    Code.UNAUTHENTICATED: Unauthenticated,
    Code.PERMISSION_DENIED: PermissionDenied,
}

# Where a code is shared, the class named in the metadata picks among these.
REFINE: dict[tuple[grpc.StatusCode, str], type[StorageError]] = {
    (Code.INVALID_ARGUMENT, "LimitExceeded"): LimitExceeded,
    (Code.RESOURCE_EXHAUSTED, "ReplyTooLarge"): ReplyTooLarge,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a server answers with for ``exc``."""
    for cls, code in TO_STATUS:
        if isinstance(exc, cls):
            return code, str(exc) or type(exc).__name__
    return Code.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def log_failure(log: logging.Logger, what: str, code: grpc.StatusCode, message: str,
                exc: BaseException) -> None:
    """Log a request the server failed: one line, and a traceback only for INTERNAL.

    Every other code is the caller's mistake or an expected refusal (a closed store),
    which the code and message say in full; INTERNAL is a bug here; DATA_LOSS (damaged
    data) is logged as an error.
    """
    if code is Code.INTERNAL:
        log.error("%s failed: %s", what, message, exc_info=exc)
    elif code is Code.DATA_LOSS:  # the operator must hear of damaged data, not only clients
        log.error("%s failed: stored data is damaged: %s", what, message)
    else:
        log.warning("%s failed: %s: %s", what, code.name, message)


def error_name(exc: BaseException) -> str:
    """Value of the ``bigtable-lite-error`` trailer for ``exc``."""
    return type(exc).__name__ if isinstance(exc, StorageError) else ""


def error_for(code: grpc.StatusCode | None, details: str | None,
              trailers: Sequence[tuple[str, str | bytes]] | None = None) -> StorageError:
    """The exception a client raises for a failed call."""
    cls = FROM_STATUS.get(code, StorageError) if code is not None else StorageError
    for key, value in trailers or ():
        if key == ERROR_KEY and isinstance(value, str) and code is not None:
            cls = REFINE.get((code, value), cls)
    name = code.name if code is not None else "UNKNOWN"
    return cls(f"{name}: {details or 'no details'}")


def stream_refused(exc: grpc.RpcError) -> bool:
    """Whether a streaming call failed because every stream slot was taken (try again)."""
    if not isinstance(exc, grpc.Call) or exc.code() is not Code.RESOURCE_EXHAUSTED:
        return False
    return (STREAM_KEY, STREAM_REFUSED) in tuple(exc.trailing_metadata() or ())


def error_from_rpc(exc: grpc.RpcError) -> StorageError:
    """Translate a grpc.RpcError (a grpc.Call) into our hierarchy."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    trailers = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    return error_for(code, details, trailers)
