from percolator.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TxnStreamRequest(_message.Message):
    __slots__ = ("begin", "get", "batch_get", "scan", "commit", "rollback")
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    BATCH_GET_FIELD_NUMBER: _ClassVar[int]
    SCAN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    begin: TxnBeginRequest
    get: TxnGetRequest
    batch_get: TxnBatchGetRequest
    scan: TxnScanRequest
    commit: TxnCommitRequest
    rollback: TxnRollbackRequest
    def __init__(self, begin: _Optional[_Union[TxnBeginRequest, _Mapping]] = ..., get: _Optional[_Union[TxnGetRequest, _Mapping]] = ..., batch_get: _Optional[_Union[TxnBatchGetRequest, _Mapping]] = ..., scan: _Optional[_Union[TxnScanRequest, _Mapping]] = ..., commit: _Optional[_Union[TxnCommitRequest, _Mapping]] = ..., rollback: _Optional[_Union[TxnRollbackRequest, _Mapping]] = ...) -> None: ...

class TxnStreamResponse(_message.Message):
    __slots__ = ("begin", "get", "batch_get", "scan", "commit", "rollback", "error")
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    BATCH_GET_FIELD_NUMBER: _ClassVar[int]
    SCAN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    begin: TxnBeginResponse
    get: TxnGetResponse
    batch_get: TxnBatchGetResponse
    scan: TxnScanResponse
    commit: TxnCommitResponse
    rollback: TxnRollbackResponse
    error: TxnError
    def __init__(self, begin: _Optional[_Union[TxnBeginResponse, _Mapping]] = ..., get: _Optional[_Union[TxnGetResponse, _Mapping]] = ..., batch_get: _Optional[_Union[TxnBatchGetResponse, _Mapping]] = ..., scan: _Optional[_Union[TxnScanResponse, _Mapping]] = ..., commit: _Optional[_Union[TxnCommitResponse, _Mapping]] = ..., rollback: _Optional[_Union[TxnRollbackResponse, _Mapping]] = ..., error: _Optional[_Union[TxnError, _Mapping]] = ...) -> None: ...

class TxnError(_message.Message):
    __slots__ = ("code", "message", "conflict", "error")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    conflict: _node_pb2.Conflict
    error: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., conflict: _Optional[_Union[_node_pb2.Conflict, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class TxnBeginRequest(_message.Message):
    __slots__ = ("ttl_ms", "reads", "table", "read_only")
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    READS_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    ttl_ms: int
    reads: _containers.RepeatedCompositeFieldContainer[_node_pb2.Key]
    table: bytes
    read_only: bool
    def __init__(self, ttl_ms: _Optional[int] = ..., reads: _Optional[_Iterable[_Union[_node_pb2.Key, _Mapping]]] = ..., table: _Optional[bytes] = ..., read_only: bool = ...) -> None: ...

class TxnBeginResponse(_message.Message):
    __slots__ = ("txn_id", "ttl_ms", "values")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    txn_id: int
    ttl_ms: int
    values: _containers.RepeatedCompositeFieldContainer[TxnValue]
    def __init__(self, txn_id: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., values: _Optional[_Iterable[_Union[TxnValue, _Mapping]]] = ...) -> None: ...

class TxnGetRequest(_message.Message):
    __slots__ = ("txn_id", "row", "column")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    txn_id: int
    row: bytes
    column: bytes
    def __init__(self, txn_id: _Optional[int] = ..., row: _Optional[bytes] = ..., column: _Optional[bytes] = ...) -> None: ...

class TxnGetResponse(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: TxnValue
    def __init__(self, value: _Optional[_Union[TxnValue, _Mapping]] = ...) -> None: ...

class TxnValue(_message.Message):
    __slots__ = ("row", "column", "found", "value")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    column: bytes
    found: bool
    value: bytes
    def __init__(self, row: _Optional[bytes] = ..., column: _Optional[bytes] = ..., found: bool = ..., value: _Optional[bytes] = ...) -> None: ...

class TxnBatchGetRequest(_message.Message):
    __slots__ = ("txn_id", "cells")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    txn_id: int
    cells: _containers.RepeatedCompositeFieldContainer[_node_pb2.Key]
    def __init__(self, txn_id: _Optional[int] = ..., cells: _Optional[_Iterable[_Union[_node_pb2.Key, _Mapping]]] = ...) -> None: ...

class TxnBatchGetResponse(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[TxnValue]
    def __init__(self, values: _Optional[_Iterable[_Union[TxnValue, _Mapping]]] = ...) -> None: ...

class TxnScanRequest(_message.Message):
    __slots__ = ("txn_id", "start_row", "end_row", "columns", "limit", "after")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    START_ROW_FIELD_NUMBER: _ClassVar[int]
    END_ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    txn_id: int
    start_row: bytes
    end_row: bytes
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    limit: int
    after: _node_pb2.Key
    def __init__(self, txn_id: _Optional[int] = ..., start_row: _Optional[bytes] = ..., end_row: _Optional[bytes] = ..., columns: _Optional[_Iterable[bytes]] = ..., limit: _Optional[int] = ..., after: _Optional[_Union[_node_pb2.Key, _Mapping]] = ...) -> None: ...

class TxnScanResponse(_message.Message):
    __slots__ = ("cells", "next")
    CELLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[_node_pb2.ScanCell]
    next: _node_pb2.Key
    def __init__(self, cells: _Optional[_Iterable[_Union[_node_pb2.ScanCell, _Mapping]]] = ..., next: _Optional[_Union[_node_pb2.Key, _Mapping]] = ...) -> None: ...

class TxnWrite(_message.Message):
    __slots__ = ("row", "column", "value", "delete")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    column: bytes
    value: bytes
    delete: bool
    def __init__(self, row: _Optional[bytes] = ..., column: _Optional[bytes] = ..., value: _Optional[bytes] = ..., delete: bool = ...) -> None: ...

class TxnCommitRequest(_message.Message):
    __slots__ = ("txn_id", "writes", "notify", "table")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    txn_id: int
    writes: _containers.RepeatedCompositeFieldContainer[TxnWrite]
    notify: _containers.RepeatedCompositeFieldContainer[_node_pb2.Key]
    table: bytes
    def __init__(self, txn_id: _Optional[int] = ..., writes: _Optional[_Iterable[_Union[TxnWrite, _Mapping]]] = ..., notify: _Optional[_Iterable[_Union[_node_pb2.Key, _Mapping]]] = ..., table: _Optional[bytes] = ...) -> None: ...

class TxnCommitResponse(_message.Message):
    __slots__ = ("commit_ts",)
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    commit_ts: int
    def __init__(self, commit_ts: _Optional[int] = ...) -> None: ...

class TxnRollbackRequest(_message.Message):
    __slots__ = ("txn_id",)
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: int
    def __init__(self, txn_id: _Optional[int] = ...) -> None: ...

class TxnRollbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
