from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("table", "column", "partition_prefix", "backfill")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    PARTITION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    column: bytes
    partition_prefix: bytes
    backfill: bool
    def __init__(self, table: _Optional[bytes] = ..., column: _Optional[bytes] = ..., partition_prefix: _Optional[bytes] = ..., backfill: bool = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("registered_at", "new")
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    registered_at: int
    new: bool
    def __init__(self, registered_at: _Optional[int] = ..., new: bool = ...) -> None: ...

class UnregisterRequest(_message.Message):
    __slots__ = ("table", "column")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    column: bytes
    def __init__(self, table: _Optional[bytes] = ..., column: _Optional[bytes] = ...) -> None: ...

class UnregisterResponse(_message.Message):
    __slots__ = ("at", "pending")
    AT_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    at: int
    pending: int
    def __init__(self, at: _Optional[int] = ..., pending: _Optional[int] = ...) -> None: ...

class ColumnsRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    def __init__(self, table: _Optional[bytes] = ...) -> None: ...

class ColumnInfo(_message.Message):
    __slots__ = ("column", "registered_at", "partition_prefix", "backfill_pending", "backfill_done", "backfill_estimated", "pending", "workers", "damaged")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    PARTITION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_PENDING_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_DONE_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    registered_at: int
    partition_prefix: bytes
    backfill_pending: bool
    backfill_done: int
    backfill_estimated: int
    pending: int
    workers: _containers.RepeatedScalarFieldContainer[str]
    damaged: str
    def __init__(self, column: _Optional[bytes] = ..., registered_at: _Optional[int] = ..., partition_prefix: _Optional[bytes] = ..., backfill_pending: bool = ..., backfill_done: _Optional[int] = ..., backfill_estimated: _Optional[int] = ..., pending: _Optional[int] = ..., workers: _Optional[_Iterable[str]] = ..., damaged: _Optional[str] = ...) -> None: ...

class ColumnsResponse(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[ColumnInfo]
    def __init__(self, columns: _Optional[_Iterable[_Union[ColumnInfo, _Mapping]]] = ...) -> None: ...

class BucketSet(_message.Message):
    __slots__ = ("column", "bitmap")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    bitmap: bytes
    def __init__(self, column: _Optional[bytes] = ..., bitmap: _Optional[bytes] = ...) -> None: ...

class Cursor(_message.Message):
    __slots__ = ("column", "bucket", "position")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    bucket: int
    position: int
    def __init__(self, column: _Optional[bytes] = ..., bucket: _Optional[int] = ..., position: _Optional[int] = ...) -> None: ...

class Cursors(_message.Message):
    __slots__ = ("base", "overrides")
    BASE_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    base: int
    overrides: _containers.RepeatedCompositeFieldContainer[Cursor]
    def __init__(self, base: _Optional[int] = ..., overrides: _Optional[_Iterable[_Union[Cursor, _Mapping]]] = ...) -> None: ...

class LogRow(_message.Message):
    __slots__ = ("key", "rows", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    rows: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, key: _Optional[bytes] = ..., rows: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("table", "worker", "columns", "lease_ms", "held", "released", "done", "cursors", "room", "wait_ms", "member_index", "stats")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    CURSORS_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    worker: str
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    lease_ms: int
    held: _containers.RepeatedCompositeFieldContainer[BucketSet]
    released: _containers.RepeatedCompositeFieldContainer[BucketSet]
    done: _containers.RepeatedCompositeFieldContainer[LogRow]
    cursors: Cursors
    room: int
    wait_ms: int
    member_index: int
    stats: bytes
    def __init__(self, table: _Optional[bytes] = ..., worker: _Optional[str] = ..., columns: _Optional[_Iterable[bytes]] = ..., lease_ms: _Optional[int] = ..., held: _Optional[_Iterable[_Union[BucketSet, _Mapping]]] = ..., released: _Optional[_Iterable[_Union[BucketSet, _Mapping]]] = ..., done: _Optional[_Iterable[_Union[LogRow, _Mapping]]] = ..., cursors: _Optional[_Union[Cursors, _Mapping]] = ..., room: _Optional[int] = ..., wait_ms: _Optional[int] = ..., member_index: _Optional[int] = ..., stats: _Optional[bytes] = ...) -> None: ...

class PullResponse(_message.Message):
    __slots__ = ("owned", "revoking", "member_index", "rows", "cursors", "more")
    OWNED_FIELD_NUMBER: _ClassVar[int]
    REVOKING_FIELD_NUMBER: _ClassVar[int]
    MEMBER_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CURSORS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    owned: _containers.RepeatedCompositeFieldContainer[BucketSet]
    revoking: _containers.RepeatedCompositeFieldContainer[BucketSet]
    member_index: int
    rows: _containers.RepeatedCompositeFieldContainer[LogRow]
    cursors: Cursors
    more: bool
    def __init__(self, owned: _Optional[_Iterable[_Union[BucketSet, _Mapping]]] = ..., revoking: _Optional[_Iterable[_Union[BucketSet, _Mapping]]] = ..., member_index: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[LogRow, _Mapping]]] = ..., cursors: _Optional[_Union[Cursors, _Mapping]] = ..., more: bool = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("table", "worker", "done", "stats")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    worker: str
    done: _containers.RepeatedCompositeFieldContainer[LogRow]
    stats: bytes
    def __init__(self, table: _Optional[bytes] = ..., worker: _Optional[str] = ..., done: _Optional[_Iterable[_Union[LogRow, _Mapping]]] = ..., stats: _Optional[bytes] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DoneRequest(_message.Message):
    __slots__ = ("table", "done")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    done: _containers.RepeatedCompositeFieldContainer[LogRow]
    def __init__(self, table: _Optional[bytes] = ..., done: _Optional[_Iterable[_Union[LogRow, _Mapping]]] = ...) -> None: ...

class DoneResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PendingRequest(_message.Message):
    __slots__ = ("table", "columns", "cap")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    cap: int
    def __init__(self, table: _Optional[bytes] = ..., columns: _Optional[_Iterable[bytes]] = ..., cap: _Optional[int] = ...) -> None: ...

class PendingResponse(_message.Message):
    __slots__ = ("pending",)
    PENDING_FIELD_NUMBER: _ClassVar[int]
    pending: int
    def __init__(self, pending: _Optional[int] = ...) -> None: ...

class ParkRequest(_message.Message):
    __slots__ = ("table", "worker", "entries", "note")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    worker: str
    entries: _containers.RepeatedCompositeFieldContainer[LogRow]
    note: bytes
    def __init__(self, table: _Optional[bytes] = ..., worker: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[LogRow, _Mapping]]] = ..., note: _Optional[bytes] = ...) -> None: ...

class ParkResponse(_message.Message):
    __slots__ = ("moved",)
    MOVED_FIELD_NUMBER: _ClassVar[int]
    moved: int
    def __init__(self, moved: _Optional[int] = ...) -> None: ...

class ParkedRequest(_message.Message):
    __slots__ = ("table", "limit")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    limit: int
    def __init__(self, table: _Optional[bytes] = ..., limit: _Optional[int] = ...) -> None: ...

class ParkedEntry(_message.Message):
    __slots__ = ("position", "record")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    position: int
    record: bytes
    def __init__(self, position: _Optional[int] = ..., record: _Optional[bytes] = ...) -> None: ...

class ParkedCell(_message.Message):
    __slots__ = ("row", "column", "entries", "note")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    column: bytes
    entries: _containers.RepeatedCompositeFieldContainer[ParkedEntry]
    note: bytes
    def __init__(self, row: _Optional[bytes] = ..., column: _Optional[bytes] = ..., entries: _Optional[_Iterable[_Union[ParkedEntry, _Mapping]]] = ..., note: _Optional[bytes] = ...) -> None: ...

class ParkedResponse(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[ParkedCell]
    def __init__(self, cells: _Optional[_Iterable[_Union[ParkedCell, _Mapping]]] = ...) -> None: ...

class CellRef(_message.Message):
    __slots__ = ("row", "column")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    column: bytes
    def __init__(self, row: _Optional[bytes] = ..., column: _Optional[bytes] = ...) -> None: ...

class ReplayRequest(_message.Message):
    __slots__ = ("table", "all", "cells")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    all: bool
    cells: _containers.RepeatedCompositeFieldContainer[CellRef]
    def __init__(self, table: _Optional[bytes] = ..., all: bool = ..., cells: _Optional[_Iterable[_Union[CellRef, _Mapping]]] = ...) -> None: ...

class ReplayResponse(_message.Message):
    __slots__ = ("moved",)
    MOVED_FIELD_NUMBER: _ClassVar[int]
    moved: int
    def __init__(self, moved: _Optional[int] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    def __init__(self, table: _Optional[bytes] = ...) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("worker", "alive", "member_index", "columns", "owned", "stats")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_INDEX_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    worker: str
    alive: bool
    member_index: int
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    owned: int
    stats: bytes
    def __init__(self, worker: _Optional[str] = ..., alive: bool = ..., member_index: _Optional[int] = ..., columns: _Optional[_Iterable[bytes]] = ..., owned: _Optional[int] = ..., stats: _Optional[bytes] = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    def __init__(self, members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    def __init__(self, table: _Optional[bytes] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
