"""Status mapping of the transaction layer: its errors <-> gRPC status codes, per direction.

The transaction layer's own errors have codes of their own; every other error follows
the table in ``bigtable_lite.status``:

=========================  ======================  ====================================
server raises              status code             client raises
=========================  ======================  ====================================
OracleExhausted            OUT_OF_RANGE            OracleExhausted
OracleConflict             FAILED_PRECONDITION     OracleConflict
SnapshotTooOld             FAILED_PRECONDITION     SnapshotTooOld (named, see below)
TooManyClients             RESOURCE_EXHAUSTED      TooManyClients (named)
(anything else)            bigtable_lite.status    bigtable_lite.status
=========================  ======================  ====================================

Where a code is shared, the error's class name travels with it (a command's
``CommandError.error``, a call's ``bigtable-lite-error`` trailer: :func:`error_name`)
and picks the class; a FAILED_PRECONDITION without a name is the oracle's
``OracleConflict``, as before names travelled, and a store error's name (``WrongTablet``)
keeps it a store error.  No message is ever parsed.

A batched command carries its status in a ``CommandError`` (code, message, the error's
class name), translated by the same tables.

The Transactions service (``percolator._txn_service``) answers for callers in any
language, whose retry decisions follow the code (and, where a code is shared, the
``bigtable-lite-error`` trailer naming the error's class, :func:`error_name`); its own
errors map so, before the tables above (server direction only: its clients are foreign):

=========================  ======================  ====================================
server raises              status code             what the caller does
=========================  ======================  ====================================
CommitConflict             ABORTED                 run the transaction again
LockWaitTimeout            UNAVAILABLE             retry the read
TransactionBusy            UNAVAILABLE             retry the call
CommitUndetermined         UNAVAILABLE             retry the Commit (answered from data)
TransactionNotFound        NOT_FOUND               begin a new transaction
TooManyTransactions        RESOURCE_EXHAUSTED      retry later
WrongTransactionState      FAILED_PRECONDITION     (a bug of the caller)
SnapshotTooOld             FAILED_PRECONDITION     run the transaction again (a new
                           (named SnapshotTooOld)  snapshot): its snapshot is below the
                                                   GC safe point
=========================  ======================  ====================================
"""

from __future__ import annotations

import grpc

from bigtable_lite import status

from .errors import (
    CommitConflict,
    CommitUndetermined,
    LockWaitTimeout,
    SnapshotTooOld,
    TooManyClients,
    TooManyTransactions,
    TransactionBusy,
    TransactionNotFound,
    WrongTransactionState,
)
from .oracle import OracleConflict, OracleExhausted

__all__ = ["command_error", "error_for", "error_from_rpc", "error_name", "service_status_for",
           "status_for"]

_OWN: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (OracleExhausted, grpc.StatusCode.OUT_OF_RANGE),          # past 2**64 - 1
    (OracleConflict, grpc.StatusCode.FAILED_PRECONDITION),    # two oracles on one store
    (SnapshotTooOld, grpc.StatusCode.FAILED_PRECONDITION),    # start_ts below the safe point
    (TooManyClients, grpc.StatusCode.RESOURCE_EXHAUSTED),     # a principal's leases
)
# A code alone (no class name sent): the error it meant before names travelled.
_OWN_BY_CODE: dict[grpc.StatusCode, type[Exception]] = {
    grpc.StatusCode.OUT_OF_RANGE: OracleExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: OracleConflict,
}
_OWN_BY_NAME: dict[tuple[grpc.StatusCode, str], type[Exception]] = {
    (code, cls.__name__): cls for cls, code in _OWN}
_SERVICE: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (CommitConflict, grpc.StatusCode.ABORTED),
    (LockWaitTimeout, grpc.StatusCode.UNAVAILABLE),
    (TransactionBusy, grpc.StatusCode.UNAVAILABLE),
    (CommitUndetermined, grpc.StatusCode.UNAVAILABLE),
    (TransactionNotFound, grpc.StatusCode.NOT_FOUND),
    (TooManyTransactions, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (WrongTransactionState, grpc.StatusCode.FAILED_PRECONDITION),
)
_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details a servicer sends for ``exc``."""
    for cls, code in _OWN:
        if isinstance(exc, cls):
            return code, str(exc)  # SnapshotTooOld's says to restart with a new snapshot
    return status.status_for(exc)


def service_status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details the Transactions service sends for ``exc``."""
    for cls, code in _SERVICE:
        if isinstance(exc, cls):
            return code, str(exc)
    return status_for(exc)


def error_name(exc: BaseException) -> str:
    """The class name sent beside ``exc``'s code ("" where the code alone says it)."""
    for cls, _ in _OWN:
        if isinstance(exc, cls):
            return cls.__name__
    return status.error_name(exc)


def error_for(code: grpc.StatusCode | None, details: str | None, name: str = "") -> Exception:
    """The exception a client raises for a failed call or command."""
    if code is not None:
        own = _OWN_BY_NAME.get((code, name)) if name else _OWN_BY_CODE.get(code)
        if own is not None:
            return own(f"{code.name}: {details or 'no details'}")
    return status.error_for(code, details, ((status.ERROR_KEY, name),) if name else None)


def error_from_rpc(exc: grpc.RpcError) -> Exception:
    """The exception a client raises for a failed RPC of the transaction layer."""
    if isinstance(exc, grpc.Call):
        code = exc.code()
        names = [value for key, value in exc.trailing_metadata() or ()
                 if key == status.ERROR_KEY and isinstance(value, str)]
        name = names[0] if names else ""
        if (code, name) in _OWN_BY_NAME or (not name and code in _OWN_BY_CODE):
            return error_for(code, exc.details(), name)
    return status.error_from_rpc(exc)


def command_error(code: int, message: str, name: str = "") -> Exception:
    """The exception for a failed batched command (``CommandError``)."""
    return error_for(_CODES.get(code), message, name)
