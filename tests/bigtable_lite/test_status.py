"""status: the error <-> gRPC code table, both directions."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import DecodeError

from bigtable_lite import (
    DataCorruption,
    InvalidArgument,
    LimitExceeded,
    StorageError,
    StoreClosed,
    StoreLocked,
    Unavailable,
    WrongTablet,
)
from bigtable_lite.status import ERROR_KEY, error_for, error_name, status_for

Code = grpc.StatusCode


@pytest.mark.parametrize("exc, code", [
    (InvalidArgument("x"), Code.INVALID_ARGUMENT),
    (LimitExceeded("x"), Code.INVALID_ARGUMENT),
    (ValueError("x"), Code.INVALID_ARGUMENT),
    (TypeError("x"), Code.INVALID_ARGUMENT),
    (DecodeError("x"), Code.INVALID_ARGUMENT),
    (WrongTablet("x"), Code.FAILED_PRECONDITION),
    (StoreClosed("x"), Code.UNAVAILABLE),
    (Unavailable("x"), Code.UNAVAILABLE),
    (DataCorruption("x"), Code.DATA_LOSS),
    (StoreLocked("x"), Code.INTERNAL),
    (RuntimeError("boom"), Code.INTERNAL),
    (KeyError("k"), Code.INTERNAL),
])
def test_server_side_codes(exc: BaseException, code: grpc.StatusCode) -> None:
    got, message = status_for(exc)
    assert got is code
    assert message  # never an empty status message
    if code is Code.INTERNAL:
        assert type(exc).__name__ in message


@pytest.mark.parametrize("code, cls", [
    (Code.INVALID_ARGUMENT, InvalidArgument),
    (Code.RESOURCE_EXHAUSTED, LimitExceeded),
    (Code.FAILED_PRECONDITION, WrongTablet),
    (Code.UNAVAILABLE, Unavailable),
    (Code.DEADLINE_EXCEEDED, Unavailable),
    (Code.CANCELLED, Unavailable),
    (Code.DATA_LOSS, DataCorruption),
    (Code.INTERNAL, StorageError),
    (Code.UNKNOWN, StorageError),
    (Code.UNIMPLEMENTED, StorageError),
    (None, StorageError),
])
def test_client_side_classes(code: grpc.StatusCode | None, cls: type[StorageError]) -> None:
    err = error_for(code, "details")
    assert type(err) is cls
    assert "details" in str(err)


@pytest.mark.parametrize("exc", [InvalidArgument("x"), LimitExceeded("x"), WrongTablet("x"),
                                 DataCorruption("x")])
def test_round_trip_keeps_the_class(exc: StorageError) -> None:
    code, message = status_for(exc)
    err = error_for(code, message, [(ERROR_KEY, error_name(exc))])
    assert type(err) is type(exc)


def test_metadata_only_refines_within_the_same_code() -> None:
    assert type(error_for(Code.DATA_LOSS, "x", [(ERROR_KEY, "LimitExceeded")])) is DataCorruption
    assert type(error_for(Code.INVALID_ARGUMENT, "x", [(ERROR_KEY, "Nonsense")])) is \
        InvalidArgument


def test_storage_errors_stay_in_the_hierarchy() -> None:
    assert issubclass(InvalidArgument, ValueError) and issubclass(LimitExceeded, ValueError)
    for cls in (InvalidArgument, LimitExceeded, WrongTablet, StoreLocked, StoreClosed,
                Unavailable, DataCorruption):
        assert issubclass(cls, StorageError)
