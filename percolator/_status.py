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
"""

from __future__ import annotations

import grpc

from bigtable_lite import status

from .oracle import OracleConflict, OracleExhausted

__all__ = ["command_error", "error_for", "error_from_rpc", "status_for"]

_OWN: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (OracleExhausted, grpc.StatusCode.OUT_OF_RANGE),          # past 2**64 - 1
    (OracleConflict, grpc.StatusCode.FAILED_PRECONDITION),    # two oracles on one store
)
_OWN_BACK: dict[grpc.StatusCode, type[Exception]] = {code: cls for cls, code in _OWN}
_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details a servicer sends for ``exc``."""
    for cls, code in _OWN:
        if isinstance(exc, cls):
            return code, str(exc)
    return status.status_for(exc)


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
