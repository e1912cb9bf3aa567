from bigtable_lite.v1 import tablet_pb2 as _tablet_pb2
from percolator.v1 import oracle_pb2 as _oracle_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeDescription(_message.Message):
    __slots__ = ("native_port", "native_version")
    NATIVE_PORT_FIELD_NUMBER: _ClassVar[int]
    NATIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    native_port: int
    native_version: int
    def __init__(self, native_port: _Optional[int] = ..., native_version: _Optional[int] = ...) -> None: ...

class NativeHello(_message.Message):
    __slots__ = ("version", "token")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    version: int
    token: str
    def __init__(self, version: _Optional[int] = ..., token: _Optional[str] = ...) -> None: ...

class NativeWelcome(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("commands", "client_id")
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[Command]
    client_id: bytes
    def __init__(self, commands: _Optional[_Iterable[_Union[Command, _Mapping]]] = ..., client_id: _Optional[bytes] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("get_timestamps", "read", "scan", "prewrite", "commit", "one_phase", "resolve", "rollback", "heartbeat", "check_txn_status", "register_observed", "observed_columns", "read_rows", "mutate_rows", "report_snapshots", "collect_garbage", "clock")
    GET_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    SCAN_FIELD_NUMBER: _ClassVar[int]
    PREWRITE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ONE_PHASE_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CHECK_TXN_STATUS_FIELD_NUMBER: _ClassVar[int]
    REGISTER_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    READ_ROWS_FIELD_NUMBER: _ClassVar[int]
    MUTATE_ROWS_FIELD_NUMBER: _ClassVar[int]
    REPORT_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    COLLECT_GARBAGE_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    get_timestamps: _oracle_pb2.GetTimestampsRequest
    read: ReadRequest
    scan: ScanRequest
    prewrite: PrewriteRequest
    commit: CommitRequest
    one_phase: OnePhaseRequest
    resolve: ResolveRequest
    rollback: RollbackRequest
    heartbeat: HeartbeatRequest
    check_txn_status: CheckTxnStatusRequest
    register_observed: RegisterObservedRequest
    observed_columns: ObservedColumnsRequest
    read_rows: _tablet_pb2.ReadRowsRequest
    mutate_rows: _tablet_pb2.MutateRowsRequest
    report_snapshots: ReportSnapshotsRequest
    collect_garbage: CollectGarbageRequest
    clock: ClockRequest
    def __init__(self, get_timestamps: _Optional[_Union[_oracle_pb2.GetTimestampsRequest, _Mapping]] = ..., read: _Optional[_Union[ReadRequest, _Mapping]] = ..., scan: _Optional[_Union[ScanRequest, _Mapping]] = ..., prewrite: _Optional[_Union[PrewriteRequest, _Mapping]] = ..., commit: _Optional[_Union[CommitRequest, _Mapping]] = ..., one_phase: _Optional[_Union[OnePhaseRequest, _Mapping]] = ..., resolve: _Optional[_Union[ResolveRequest, _Mapping]] = ..., rollback: _Optional[_Union[RollbackRequest, _Mapping]] = ..., heartbeat: _Optional[_Union[HeartbeatRequest, _Mapping]] = ..., check_txn_status: _Optional[_Union[CheckTxnStatusRequest, _Mapping]] = ..., register_observed: _Optional[_Union[RegisterObservedRequest, _Mapping]] = ..., observed_columns: _Optional[_Union[ObservedColumnsRequest, _Mapping]] = ..., read_rows: _Optional[_Union[_tablet_pb2.ReadRowsRequest, _Mapping]] = ..., mutate_rows: _Optional[_Union[_tablet_pb2.MutateRowsRequest, _Mapping]] = ..., report_snapshots: _Optional[_Union[ReportSnapshotsRequest, _Mapping]] = ..., collect_garbage: _Optional[_Union[CollectGarbageRequest, _Mapping]] = ..., clock: _Optional[_Union[ClockRequest, _Mapping]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("error", "get_timestamps", "read", "scan", "prewrite", "commit", "one_phase", "resolve", "rollback", "heartbeat", "check_txn_status", "register_observed", "observed_columns", "read_rows", "mutate_rows", "report_snapshots", "collect_garbage", "clock")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GET_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    SCAN_FIELD_NUMBER: _ClassVar[int]
    PREWRITE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ONE_PHASE_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CHECK_TXN_STATUS_FIELD_NUMBER: _ClassVar[int]
    REGISTER_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    READ_ROWS_FIELD_NUMBER: _ClassVar[int]
    MUTATE_ROWS_FIELD_NUMBER: _ClassVar[int]
    REPORT_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    COLLECT_GARBAGE_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    error: CommandError
    get_timestamps: _oracle_pb2.GetTimestampsResponse
    read: ReadResponse
    scan: ScanResponse
    prewrite: PrewriteResponse
    commit: CommitResponse
    one_phase: OnePhaseResponse
    resolve: ResolveResponse
    rollback: RollbackResponse
    heartbeat: HeartbeatResponse
    check_txn_status: TxnStatus
    register_observed: RegisterObservedResponse
    observed_columns: ObservedColumnsResponse
    read_rows: _tablet_pb2.ReadRowsResponse
    mutate_rows: _tablet_pb2.MutateRowsResponse
    report_snapshots: ReportSnapshotsResponse
    collect_garbage: GcPass
    clock: ClockResponse
    def __init__(self, error: _Optional[_Union[CommandError, _Mapping]] = ..., get_timestamps: _Optional[_Union[_oracle_pb2.GetTimestampsResponse, _Mapping]] = ..., read: _Optional[_Union[ReadResponse, _Mapping]] = ..., scan: _Optional[_Union[ScanResponse, _Mapping]] = ..., prewrite: _Optional[_Union[PrewriteResponse, _Mapping]] = ..., commit: _Optional[_Union[CommitResponse, _Mapping]] = ..., one_phase: _Optional[_Union[OnePhaseResponse, _Mapping]] = ..., resolve: _Optional[_Union[ResolveResponse, _Mapping]] = ..., rollback: _Optional[_Union[RollbackResponse, _Mapping]] = ..., heartbeat: _Optional[_Union[HeartbeatResponse, _Mapping]] = ..., check_txn_status: _Optional[_Union[TxnStatus, _Mapping]] = ..., register_observed: _Optional[_Union[RegisterObservedResponse, _Mapping]] = ..., observed_columns: _Optional[_Union[ObservedColumnsResponse, _Mapping]] = ..., read_rows: _Optional[_Union[_tablet_pb2.ReadRowsResponse, _Mapping]] = ..., mutate_rows: _Optional[_Union[_tablet_pb2.MutateRowsResponse, _Mapping]] = ..., report_snapshots: _Optional[_Union[ReportSnapshotsResponse, _Mapping]] = ..., collect_garbage: _Optional[_Union[GcPass, _Mapping]] = ..., clock: _Optional[_Union[ClockResponse, _Mapping]] = ...) -> None: ...

class CommandError(_message.Message):
    __slots__ = ("code", "message", "error")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    error: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class RowColumns(_message.Message):
    __slots__ = ("row", "columns")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, row: _Optional[bytes] = ..., columns: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("row", "column")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    column: bytes
    def __init__(self, row: _Optional[bytes] = ..., column: _Optional[bytes] = ...) -> None: ...

class LockedCell(_message.Message):
    __slots__ = ("row", "column", "start_ts", "primary_row", "primary_column")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ROW_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_COLUMN_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    column: bytes
    start_ts: int
    primary_row: bytes
    primary_column: bytes
    def __init__(self, row: _Optional[bytes] = ..., column: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., primary_row: _Optional[bytes] = ..., primary_column: _Optional[bytes] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("table", "start_ts", "rows")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    rows: _containers.RepeatedCompositeFieldContainer[RowColumns]
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[RowColumns, _Mapping]]] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("start_ts", "values", "locked", "truncated", "safe_point")
    START_TS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    start_ts: int
    values: _containers.RepeatedCompositeFieldContainer[ReadValue]
    locked: _containers.RepeatedCompositeFieldContainer[LockedCell]
    truncated: bool
    safe_point: int
    def __init__(self, start_ts: _Optional[int] = ..., values: _Optional[_Iterable[_Union[ReadValue, _Mapping]]] = ..., locked: _Optional[_Iterable[_Union[LockedCell, _Mapping]]] = ..., truncated: bool = ..., safe_point: _Optional[int] = ...) -> None: ...

class ReadValue(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("table", "start_ts", "start_row", "end_row", "columns", "include_system", "limit")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    START_ROW_FIELD_NUMBER: _ClassVar[int]
    END_ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    start_row: bytes
    end_row: bytes
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    include_system: bool
    limit: int
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., start_row: _Optional[bytes] = ..., end_row: _Optional[bytes] = ..., columns: _Optional[_Iterable[bytes]] = ..., include_system: bool = ..., limit: _Optional[int] = ...) -> None: ...

class ScanResponse(_message.Message):
    __slots__ = ("cells", "locked", "resume_row", "unread")
    CELLS_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    RESUME_ROW_FIELD_NUMBER: _ClassVar[int]
    UNREAD_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[ScanCell]
    locked: _containers.RepeatedCompositeFieldContainer[LockedCell]
    resume_row: bytes
    unread: _containers.RepeatedCompositeFieldContainer[RowColumns]
    def __init__(self, cells: _Optional[_Iterable[_Union[ScanCell, _Mapping]]] = ..., locked: _Optional[_Iterable[_Union[LockedCell, _Mapping]]] = ..., resume_row: _Optional[bytes] = ..., unread: _Optional[_Iterable[_Union[RowColumns, _Mapping]]] = ...) -> None: ...

class ScanCell(_message.Message):
    __slots__ = ("row", "column", "value")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    column: bytes
    value: bytes
    def __init__(self, row: _Optional[bytes] = ..., column: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class CellWrite(_message.Message):
    __slots__ = ("column", "delete", "value")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    column: bytes
    delete: bool
    value: bytes
    def __init__(self, column: _Optional[bytes] = ..., delete: bool = ..., value: _Optional[bytes] = ...) -> None: ...

class RowWrites(_message.Message):
    __slots__ = ("row", "cells")
    ROW_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    row: bytes
    cells: _containers.RepeatedCompositeFieldContainer[CellWrite]
    def __init__(self, row: _Optional[bytes] = ..., cells: _Optional[_Iterable[_Union[CellWrite, _Mapping]]] = ...) -> None: ...

class Conflict(_message.Message):
    __slots__ = ("reason", "row", "column", "commit_ts", "lock_start_ts")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[Conflict.Reason]
        WRITE_CONFLICT: _ClassVar[Conflict.Reason]
        LOCKED: _ClassVar[Conflict.Reason]
        ROLLED_BACK: _ClassVar[Conflict.Reason]
    REASON_UNSPECIFIED: Conflict.Reason
    WRITE_CONFLICT: Conflict.Reason
    LOCKED: Conflict.Reason
    ROLLED_BACK: Conflict.Reason
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    LOCK_START_TS_FIELD_NUMBER: _ClassVar[int]
    reason: Conflict.Reason
    row: bytes
    column: bytes
    commit_ts: int
    lock_start_ts: int
    def __init__(self, reason: _Optional[_Union[Conflict.Reason, str]] = ..., row: _Optional[bytes] = ..., column: _Optional[bytes] = ..., commit_ts: _Optional[int] = ..., lock_start_ts: _Optional[int] = ...) -> None: ...

class PrewriteRequest(_message.Message):
    __slots__ = ("table", "start_ts", "primary", "ttl_ms", "rows")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    primary: Key
    ttl_ms: int
    rows: _containers.RepeatedCompositeFieldContainer[RowWrites]
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., primary: _Optional[_Union[Key, _Mapping]] = ..., ttl_ms: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[RowWrites, _Mapping]]] = ...) -> None: ...

class PrewriteResponse(_message.Message):
    __slots__ = ("conflict",)
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    conflict: Conflict
    def __init__(self, conflict: _Optional[_Union[Conflict, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("table", "start_ts", "primary", "secondaries", "weak")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SECONDARIES_FIELD_NUMBER: _ClassVar[int]
    WEAK_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    primary: Key
    secondaries: _containers.RepeatedCompositeFieldContainer[RowColumns]
    weak: _containers.RepeatedCompositeFieldContainer[RowColumns]
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., primary: _Optional[_Union[Key, _Mapping]] = ..., secondaries: _Optional[_Iterable[_Union[RowColumns, _Mapping]]] = ..., weak: _Optional[_Iterable[_Union[RowColumns, _Mapping]]] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("committed", "commit_ts")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    commit_ts: int
    def __init__(self, committed: bool = ..., commit_ts: _Optional[int] = ...) -> None: ...

class OnePhaseRequest(_message.Message):
    __slots__ = ("table", "start_ts", "rows", "weak")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    WEAK_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    rows: _containers.RepeatedCompositeFieldContainer[RowWrites]
    weak: _containers.RepeatedCompositeFieldContainer[RowColumns]
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[RowWrites, _Mapping]]] = ..., weak: _Optional[_Iterable[_Union[RowColumns, _Mapping]]] = ...) -> None: ...

class OnePhaseResponse(_message.Message):
    __slots__ = ("conflict", "commit")
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    conflict: Conflict
    commit: CommitResponse
    def __init__(self, conflict: _Optional[_Union[Conflict, _Mapping]] = ..., commit: _Optional[_Union[CommitResponse, _Mapping]] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("table", "start_ts", "cells")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    cells: _containers.RepeatedCompositeFieldContainer[RowColumns]
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., cells: _Optional[_Iterable[_Union[RowColumns, _Mapping]]] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("still_locked",)
    STILL_LOCKED_FIELD_NUMBER: _ClassVar[int]
    still_locked: int
    def __init__(self, still_locked: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("table", "start_ts", "primary", "cells")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    primary: Key
    cells: _containers.RepeatedCompositeFieldContainer[RowColumns]
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., primary: _Optional[_Union[Key, _Mapping]] = ..., cells: _Optional[_Iterable[_Union[RowColumns, _Mapping]]] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("table", "start_ts", "primary", "ttl_ms")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    start_ts: int
    primary: Key
    ttl_ms: int
    def __init__(self, table: _Optional[bytes] = ..., start_ts: _Optional[int] = ..., primary: _Optional[_Union[Key, _Mapping]] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: bool
    def __init__(self, held: bool = ...) -> None: ...

class CheckTxnStatusRequest(_message.Message):
    __slots__ = ("table", "primary", "start_ts")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    primary: Key
    start_ts: int
    def __init__(self, table: _Optional[bytes] = ..., primary: _Optional[_Union[Key, _Mapping]] = ..., start_ts: _Optional[int] = ...) -> None: ...

class TxnStatus(_message.Message):
    __slots__ = ("state", "commit_ts")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[TxnStatus.State]
        COMMITTED: _ClassVar[TxnStatus.State]
        ROLLED_BACK: _ClassVar[TxnStatus.State]
        LOCKED: _ClassVar[TxnStatus.State]
    STATE_UNSPECIFIED: TxnStatus.State
    COMMITTED: TxnStatus.State
    ROLLED_BACK: TxnStatus.State
    LOCKED: TxnStatus.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    state: TxnStatus.State
    commit_ts: int
    def __init__(self, state: _Optional[_Union[TxnStatus.State, str]] = ..., commit_ts: _Optional[int] = ...) -> None: ...

class RegisterObservedRequest(_message.Message):
    __slots__ = ("table", "columns")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, table: _Optional[bytes] = ..., columns: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RegisterObservedResponse(_message.Message):
    __slots__ = ("ts",)
    TS_FIELD_NUMBER: _ClassVar[int]
    ts: int
    def __init__(self, ts: _Optional[int] = ...) -> None: ...

class ObservedColumnsRequest(_message.Message):
    __slots__ = ("table",)
    TABLE_FIELD_NUMBER: _ClassVar[int]
    table: bytes
    def __init__(self, table: _Optional[bytes] = ...) -> None: ...

class ObservedColumnsResponse(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, columns: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ReportSnapshotsRequest(_message.Message):
    __slots__ = ("oldest_start_ts", "seen_ts", "seq")
    OLDEST_START_TS_FIELD_NUMBER: _ClassVar[int]
    SEEN_TS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    oldest_start_ts: int
    seen_ts: int
    seq: int
    def __init__(self, oldest_start_ts: _Optional[int] = ..., seen_ts: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class ReportSnapshotsResponse(_message.Message):
    __slots__ = ("safe_point", "lease_ms")
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    safe_point: int
    lease_ms: int
    def __init__(self, safe_point: _Optional[int] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class CollectGarbageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GcPass(_message.Message):
    __slots__ = ("safe_point", "started_ms", "seconds", "work_seconds", "tables", "rows", "versions_scanned", "locks_resolved", "write_records", "data", "rollback_markers", "compactions", "skipped", "held_by")
    SAFE_POINT_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    LOCKS_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    WRITE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_MARKERS_FIELD_NUMBER: _ClassVar[int]
    COMPACTIONS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    HELD_BY_FIELD_NUMBER: _ClassVar[int]
    safe_point: int
    started_ms: int
    seconds: float
    work_seconds: float
    tables: int
    rows: int
    versions_scanned: int
    locks_resolved: int
    write_records: int
    data: int
    rollback_markers: int
    compactions: int
    skipped: str
    held_by: str
    def __init__(self, safe_point: _Optional[int] = ..., started_ms: _Optional[int] = ..., seconds: _Optional[float] = ..., work_seconds: _Optional[float] = ..., tables: _Optional[int] = ..., rows: _Optional[int] = ..., versions_scanned: _Optional[int] = ..., locks_resolved: _Optional[int] = ..., write_records: _Optional[int] = ..., data: _Optional[int] = ..., rollback_markers: _Optional[int] = ..., compactions: _Optional[int] = ..., skipped: _Optional[str] = ..., held_by: _Optional[str] = ...) -> None: ...

class ClockRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClockResponse(_message.Message):
    __slots__ = ("now_ms",)
    NOW_MS_FIELD_NUMBER: _ClassVar[int]
    now_ms: int
    def __init__(self, now_ms: _Optional[int] = ...) -> None: ...
