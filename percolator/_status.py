"""Status mapping of the transaction layer: its errors <-> gRPC status codes, per direction.

The transaction layer's own errors have codes of their own (unambiguous within its
services); every other error follows the table in ``bigtable_lite.status``:

=========================  ======================  ====================================
server raises              status code             client raises
=========================  ======================  ====================================
OracleExhausted            OUT_OF_RANGE            OracleExhausted
OracleConflict             FAILED_PRECONDITION     OracleConflict
(anything else)            bigtable_lite.status    bigtable_lite.status
=========================  ======================  ====================================

A batched command carries its status in a ``CommandError`` (code, message, the error's
class name where the code alone is ambiguous), translated by the same tables.

The Transactions service (``percolator._txn_service``) answers for callers in any
language, whose retry decisions follow the code alone; its own errors map so, before
the tables above (server direction only: its clients are foreign):

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
=========================  ======================  ====================================
"""

from __future__ import annotations

import grpc

from bigtable_lite import status

from .errors import (
    CommitConflict,
    CommitUndetermined,
    LockWaitTimeout,
    TooManyTransactions,
    TransactionBusy,
    TransactionNotFound,
    WrongTransactionState,
)
from .oracle import OracleConflict, OracleExhausted

__all__ = ["command_error", "error_for", "error_from_rpc", "service_status_for", "status_for"]

_OWN: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (OracleExhausted, grpc.StatusCode.OUT_OF_RANGE),          # past 2**64 - 1
    (OracleConflict, grpc.StatusCode.FAILED_PRECONDITION),    # two oracles on one store
)
_OWN_BACK: dict[grpc.StatusCode, type[Exception]] = {code: cls for cls, code in _OWN}
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
            return code, str(exc)
    return status.status_for(exc)


def service_status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details the Transactions service sends for ``exc``."""
    for cls, code in _SERVICE:
        if isinstance(exc, cls):
            return code, str(exc)
    return status_for(exc)


def error_for(code: grpc.StatusCode | None, details: str | None, name: str = "") -> Exception:
    """The exception a client raises for a failed call or command.

    ``name`` is the store error's class a server names (``status.error_name``; our own
    errors are named by their code alone): a store error whose code is also one of ours
    (FAILED_PRECONDITION: WrongTablet) stays a store error.
    """
    own = _OWN_BACK.get(code) if code is not None and not name else None
    if own is not None and code is not None:
        return own(f"{code.name}: {details or 'no details'}")
    return status.error_for(code, details, ((status.ERROR_KEY, name),) if name else None)


def error_from_rpc(exc: grpc.RpcError) -> Exception:
    """The exception a client raises for a failed RPC of the transaction layer."""
    if isinstance(exc, grpc.Call) and exc.code() in _OWN_BACK:
        names = [value for key, value in exc.trailing_metadata() or ()
                 if key == status.ERROR_KEY and isinstance(value, str)]
        return error_for(exc.code(), exc.details(), names[0] if names else "")
    return status.error_from_rpc(exc)


def command_error(code: int, message: str, name: str = "") -> Exception:
    """The exception for a failed batched command (``CommandError``)."""
    return error_for(_CODES.get(code), message, name)
