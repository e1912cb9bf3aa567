from bigtable_lite.v1 import tablet_pb2 as _tablet_pb2
from percolator.v1 import oracle_pb2 as _oracle_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Command(_message.Message):
    __slots__ = ("read_rows", "mutate_rows", "get_timestamps", "commit", "fresh_read")
    READ_ROWS_FIELD_NUMBER: _ClassVar[int]
    MUTATE_ROWS_FIELD_NUMBER: _ClassVar[int]
    GET_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    FRESH_READ_FIELD_NUMBER: _ClassVar[int]
    read_rows: _tablet_pb2.ReadRowsRequest
    mutate_rows: _tablet_pb2.MutateRowsRequest
    get_timestamps: _oracle_pb2.GetTimestampsRequest
    commit: CommitRequest
    fresh_read: FreshReadRequest
    def __init__(self, read_rows: _Optional[_Union[_tablet_pb2.ReadRowsRequest, _Mapping]] = ..., mutate_rows: _Optional[_Union[_tablet_pb2.MutateRowsRequest, _Mapping]] = ..., get_timestamps: _Optional[_Union[_oracle_pb2.GetTimestampsRequest, _Mapping]] = ..., commit: _Optional[_Union[CommitRequest, _Mapping]] = ..., fresh_read: _Optional[_Union[FreshReadRequest, _Mapping]] = ...) -> None: ...

class FreshReadRequest(_message.Message):
    __slots__ = ("read",)
    READ_FIELD_NUMBER: _ClassVar[int]
    read: _tablet_pb2.ReadRowsRequest
    def __init__(self, read: _Optional[_Union[_tablet_pb2.ReadRowsRequest, _Mapping]] = ...) -> None: ...

class FreshReadResponse(_message.Message):
    __slots__ = ("ts", "read")
    TS_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    ts: int
    read: _tablet_pb2.ReadRowsResponse
    def __init__(self, ts: _Optional[int] = ..., read: _Optional[_Union[_tablet_pb2.ReadRowsResponse, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("table", "start_ts", "primary_column", "rows")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_COLUMN_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    primary_column: bytes
    rows: _containers.RepeatedCompositeFieldContainer[CommitRow]
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., primary_column: _Optional[bytes] = ..., rows: _Optional[_Iterable[_Union[CommitRow, _Mapping]]] = ...) -> None: ...

class CommitRow(_message.Message):
    __slots__ = ("row", "cells")
    ROW_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    cells: _containers.RepeatedCompositeFieldContainer[CommitCell]
    def __init__(self, row: _Optional[bytes] = ..., cells: _Optional[_Iterable[_Union[CommitCell, _Mapping]]] = ...) -> None: ...

class CommitCell(_message.Message):
    __slots__ = ("column", "delete", "inline_value")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    INLINE_VALUE_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    delete: bool
    inline_value: bytes
    def __init__(self, column: _Optional[bytes] = ..., delete: bool = ..., inline_value: _Optional[bytes] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("committed", "commit_ts")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    commit_ts: int
    def __init__(self, committed: bool = ..., commit_ts: _Optional[int] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("commands",)
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[Command]
    def __init__(self, commands: _Optional[_Iterable[_Union[Command, _Mapping]]] = ...) -> None: ...

class CommandError(_message.Message):
    __slots__ = ("code", "message", "error")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    error: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("read_rows", "mutate_rows", "get_timestamps", "error", "commit", "fresh_read")
    READ_ROWS_FIELD_NUMBER: _ClassVar[int]
    MUTATE_ROWS_FIELD_NUMBER: _ClassVar[int]
    GET_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    FRESH_READ_FIELD_NUMBER: _ClassVar[int]
    read_rows: _tablet_pb2.ReadRowsResponse
    mutate_rows: _tablet_pb2.MutateRowsResponse
    get_timestamps: _oracle_pb2.GetTimestampsResponse
    error: CommandError
    commit: CommitResponse
    fresh_read: FreshReadResponse
    def __init__(self, read_rows: _Optional[_Union[_tablet_pb2.ReadRowsResponse, _Mapping]] = ..., mutate_rows: _Optional[_Union[_tablet_pb2.MutateRowsResponse, _Mapping]] = ..., get_timestamps: _Optional[_Union[_oracle_pb2.GetTimestampsResponse, _Mapping]] = ..., error: _Optional[_Union[CommandError, _Mapping]] = ..., commit: _Optional[_Union[CommitResponse, _Mapping]] = ..., fresh_read: _Optional[_Union[FreshReadResponse, _Mapping]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...
