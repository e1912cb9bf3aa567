from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Cell(_message.Message):
    __slots__ = ("column", "ts", "value")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    ts: int
    value: bytes
    def __init__(self, column: _Optional[bytes] = ..., ts: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("min_ts", "max_ts")
    MIN_TS_FIELD_NUMBER: _ClassVar[int]
    MAX_TS_FIELD_NUMBER: _ClassVar[int]
    min_ts: int
    max_ts: int
    def __init__(self, min_ts: _Optional[int] = ..., max_ts: _Optional[int] = ...) -> None: ...

class ColumnFilter(_message.Message):
    __slots__ = ("columns", "prefixes")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    prefixes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, columns: _Optional[_Iterable[bytes]] = ..., prefixes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RowRead(_message.Message):
    __slots__ = ("table", "row", "filter", "time_range", "max_versions")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    row: bytes
    filter: ColumnFilter
    time_range: TimeRange
    max_versions: int
    def __init__(self, table: _Optional[bytes] = ..., row: _Optional[bytes] = ..., filter: _Optional[_Union[ColumnFilter, _Mapping]] = ..., time_range: _Optional[_Union[TimeRange, _Mapping]] = ..., max_versions: _Optional[int] = ...) -> None: ...

class ReadRowsRequest(_message.Message):
    __slots__ = ("reads",)
    READS_FIELD_NUMBER: _ClassVar[int]
    reads: _containers.RepeatedCompositeFieldContainer[RowRead]
    def __init__(self, reads: _Optional[_Iterable[_Union[RowRead, _Mapping]]] = ...) -> None: ...

class RowCells(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    def __init__(self, cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ...) -> None: ...

class ReadRowsResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[RowCells]
    def __init__(self, rows: _Optional[_Iterable[_Union[RowCells, _Mapping]]] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("table", "start_row", "end_row", "filter", "time_range", "max_versions", "limit", "keys_only_prefixes")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_ROW_FIELD_NUMBER: _ClassVar[int]
    END_ROW_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KEYS_ONLY_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_row: bytes
    end_row: bytes
    filter: ColumnFilter
    time_range: TimeRange
    max_versions: int
    limit: int
    keys_only_prefixes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, table: _Optional[bytes] = ..., start_row: _Optional[bytes] = ..., end_row: _Optional[bytes] = ..., filter: _Optional[_Union[ColumnFilter, _Mapping]] = ..., time_range: _Optional[_Union[TimeRange, _Mapping]] = ..., max_versions: _Optional[int] = ..., limit: _Optional[int] = ..., keys_only_prefixes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("row", "cells")
    ROW_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    def __init__(self, row: _Optional[bytes] = ..., cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ...) -> None: ...

class ScanResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    def __init__(self, rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ...) -> None: ...

class NoVersionIn(_message.Message):
    __slots__ = ("column", "min_ts", "max_ts")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    MIN_TS_FIELD_NUMBER: _ClassVar[int]
    MAX_TS_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    min_ts: int
    max_ts: int
    def __init__(self, column: _Optional[bytes] = ..., min_ts: _Optional[int] = ..., max_ts: _Optional[int] = ...) -> None: ...

class VersionAt(_message.Message):
    __slots__ = ("column", "ts", "value")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    ts: int
    value: bytes
    def __init__(self, column: _Optional[bytes] = ..., ts: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class ValuePrefixAt(_message.Message):
    __slots__ = ("column", "ts", "value_prefix")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    VALUE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    ts: int
    value_prefix: bytes
    def __init__(self, column: _Optional[bytes] = ..., ts: _Optional[int] = ..., value_prefix: _Optional[bytes] = ...) -> None: ...

class NoValuePrefixAt(_message.Message):
    __slots__ = ("column", "ts", "value_prefix")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    VALUE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    ts: int
    value_prefix: bytes
    def __init__(self, column: _Optional[bytes] = ..., ts: _Optional[int] = ..., value_prefix: _Optional[bytes] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("no_version_in", "version_at", "value_prefix_at", "no_value_prefix_at")
    NO_VERSION_IN_FIELD_NUMBER: _ClassVar[int]
    VERSION_AT_FIELD_NUMBER: _ClassVar[int]
    VALUE_PREFIX_AT_FIELD_NUMBER: _ClassVar[int]
    NO_VALUE_PREFIX_AT_FIELD_NUMBER: _ClassVar[int]
    no_version_in: NoVersionIn
    version_at: VersionAt
    value_prefix_at: ValuePrefixAt
    no_value_prefix_at: NoValuePrefixAt
    def __init__(self, no_version_in: _Optional[_Union[NoVersionIn, _Mapping]] = ..., version_at: _Optional[_Union[VersionAt, _Mapping]] = ..., value_prefix_at: _Optional[_Union[ValuePrefixAt, _Mapping]] = ..., no_value_prefix_at: _Optional[_Union[NoValuePrefixAt, _Mapping]] = ...) -> None: ...

class Put(_message.Message):
    __slots__ = ("column", "ts", "value")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    ts: int
    value: bytes
    def __init__(self, column: _Optional[bytes] = ..., ts: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class DeleteVersion(_message.Message):
    __slots__ = ("column", "ts")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    ts: int
    def __init__(self, column: _Optional[bytes] = ..., ts: _Optional[int] = ...) -> None: ...

class DeleteRange(_message.Message):
    __slots__ = ("column", "min_ts", "max_ts")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    MIN_TS_FIELD_NUMBER: _ClassVar[int]
    MAX_TS_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    min_ts: int
    max_ts: int
    def __init__(self, column: _Optional[bytes] = ..., min_ts: _Optional[int] = ..., max_ts: _Optional[int] = ...) -> None: ...

class Mutation(_message.Message):
    __slots__ = ("put", "delete_version", "delete_range")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    put: Put
    delete_version: DeleteVersion
    delete_range: DeleteRange
    def __init__(self, put: _Optional[_Union[Put, _Mapping]] = ..., delete_version: _Optional[_Union[DeleteVersion, _Mapping]] = ..., delete_range: _Optional[_Union[DeleteRange, _Mapping]] = ...) -> None: ...

class RowMutation(_message.Message):
    __slots__ = ("table", "row", "conditions", "mutations")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    MUTATIONS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    row: bytes
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    mutations: _containers.RepeatedCompositeFieldContainer[Mutation]
    def __init__(self, table: _Optional[bytes] = ..., row: _Optional[bytes] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., mutations: _Optional[_Iterable[_Union[Mutation, _Mapping]]] = ...) -> None: ...

class MutateRowsRequest(_message.Message):
    __slots__ = ("rows", "sync")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[RowMutation]
    sync: bool
    def __init__(self, rows: _Optional[_Iterable[_Union[RowMutation, _Mapping]]] = ..., sync: bool = ...) -> None: ...

class MutationResult(_message.Message):
    __slots__ = ("applied", "failed_condition", "found")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    FAILED_CONDITION_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    failed_condition: int
    found: Cell
    def __init__(self, applied: bool = ..., failed_condition: _Optional[int] = ..., found: _Optional[_Union[Cell, _Mapping]] = ...) -> None: ...

class MutateRowsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[MutationResult]
    def __init__(self, results: _Optional[_Iterable[_Union[MutationResult, _Mapping]]] = ...) -> None: ...

class Tablet(_message.Message):
    __slots__ = ("table", "start_row", "end_row", "approximate_bytes")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_ROW_FIELD_NUMBER: _ClassVar[int]
    END_ROW_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_row: bytes
    end_row: bytes
    approximate_bytes: int
    def __init__(self, table: _Optional[bytes] = ..., start_row: _Optional[bytes] = ..., end_row: _Optional[bytes] = ..., approximate_bytes: _Optional[int] = ...) -> None: ...

class ListTabletsRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    def __init__(self, table: _Optional[bytes] = ...) -> None: ...

class ListTabletsResponse(_message.Message):
    __slots__ = ("tablets",)
    TABLETS_FIELD_NUMBER: _ClassVar[int]
    tablets: _containers.RepeatedCompositeFieldContainer[Tablet]
    def __init__(self, tablets: _Optional[_Iterable[_Union[Tablet, _Mapping]]] = ...) -> None: ...

class SplitTabletRequest(_message.Message):
    __slots__ = ("table", "row")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    row: bytes
    def __init__(self, table: _Optional[bytes] = ..., row: _Optional[bytes] = ...) -> None: ...

class SplitTabletResponse(_message.Message):
    __slots__ = ("tablets",)
    TABLETS_FIELD_NUMBER: _ClassVar[int]
    tablets: _containers.RepeatedCompositeFieldContainer[Tablet]
    def __init__(self, tablets: _Optional[_Iterable[_Union[Tablet, _Mapping]]] = ...) -> None: ...

class CompactTableRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    def __init__(self, table: _Optional[bytes] = ...) -> None: ...

class CompactTableResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
