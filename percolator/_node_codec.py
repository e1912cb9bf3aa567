"""The node's commands on the wire: the one place a step's request and result are encoded.

For every step of ``percolator._backend.Backend`` there are four functions: the client
encodes the request (``*_request``), the node decodes and checks it
(``parse_*``: a foreign client's mistake is ``InvalidArgument``/``LimitExceeded``
before any I/O, with the limits the embedded path checks in ``Transaction``), the node
encodes the result (``*_result``) and the client decodes it (``read_*``).  Messages
are in ``proto/percolator/v1/node.proto``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from bigtable_lite import MAX_TS, InvalidArgument, LimitExceeded, Limits
from bigtable_lite.validation import check_key

from . import records
from ._backend import (
    COMMITTED,
    LOCKED,
    ROLLED_BACK,
    CellWrite,
    CommitOutcome,
    CommitRequest,
    Conflict,
    Key,
    LockedCell,
    OnePhaseRequest,
    Part,
    PrewriteRequest,
    ReadResult,
    ScanChunk,
    ScanRequest,
    TxnStatus,
)
from ._gc_table import GcPass
from ._snapshots import SnapshotReport
from ._transport.framing import tags
from .layout import reserved_table
from .v1 import node_pb2 as pb

__all__ = [
    "CELLS_PER_PART", "CLIENT_ID_TAG", "COMMAND_TAGS", "ENTRY_TAG", "MAX_CLIENT_ID_BYTES",
    "MAX_TTL_MS", "RESULT_TAGS", "SERVICE_NAME", "STREAM_KEY", "commit_request", "commit_result",
    "conflict_to_pb", "gc_pass_result", "key_list", "one_phase_request", "one_phase_result",
    "parse_client_id", "parse_commit", "parse_heartbeat", "parse_one_phase", "parse_prewrite",
    "parse_read", "parse_register", "parse_report", "parse_resolve", "parse_rollback",
    "parse_scan", "parse_status", "parse_table", "prewrite_request", "prewrite_result",
    "read_commit", "read_gc_pass", "read_one_phase", "read_prewrite", "read_read", "read_report",
    "read_request", "read_result", "read_scan", "read_status", "report_request", "rows_of",
    "scan_request", "scan_result", "status_result",
]

T = TypeVar("T")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Node"].full_name
STREAM_KEY = "percolator-batch-stream"
"""Trailer of a refused BatchStream call (value ``_transport.stream_slots.REFUSED``)."""
ENTRY_TAG = tags(pb.BatchRequest.DESCRIPTOR)["commands"]
assert ENTRY_TAG == tags(pb.BatchResponse.DESCRIPTOR)["results"]
CLIENT_ID_TAG = tags(pb.BatchRequest.DESCRIPTOR)["client_id"]
MAX_CLIENT_ID_BYTES = 64
COMMAND_TAGS = tags(pb.Command.DESCRIPTOR)
RESULT_TAGS = tags(pb.Result.DESCRIPTOR)

CELLS_PER_PART = 200
"""Cells of one row locked by one row mutation (2-3 conditions and 1-2 mutations per
cell, well inside the store's items per row): the node cuts longer rows."""
MAX_TTL_MS = 3_600_000
"""The longest lock TTL a client may ask for (a crashed client blocks its cells this long)."""
_CONFLICT_REASONS = {Conflict.WRITE_CONFLICT: pb.Conflict.WRITE_CONFLICT,
                     Conflict.LOCKED: pb.Conflict.LOCKED,
                     Conflict.ROLLED_BACK: pb.Conflict.ROLLED_BACK}
_REASONS_BACK = {v: k for k, v in _CONFLICT_REASONS.items()}
_STATES = {COMMITTED: pb.TxnStatus.COMMITTED, ROLLED_BACK: pb.TxnStatus.ROLLED_BACK,
           LOCKED: pb.TxnStatus.LOCKED}
_STATES_BACK = {v: k for k, v in _STATES.items()}


# --- shared pieces ------------------------------------------------------------------------


def rows_of(keys: Iterable[Key]) -> list[pb.RowColumns]:
    """Keys as RowColumns, consecutive keys of one row together (order kept)."""
    out: list[pb.RowColumns] = []
    last: pb.RowColumns | None = None
    for row, column in keys:
        if last is None or last.row != row:
            last = pb.RowColumns(row=row)
            out.append(last)
        last.columns.append(column)
    return out


def key_list(rows: Iterable[pb.RowColumns]) -> list[Key]:
    return [(r.row, c) for r in rows for c in r.columns]


def _check_table(table: bytes, limits: Limits) -> None:
    """A Percolator table: a system or side table is not one (its rows would be
    overwritten by the columns a step derives: see ``layout.reserved_table``)."""
    check_key(table, "table", limits.max_table_bytes)
    reserved = reserved_table(table)
    if reserved is not None:
        raise InvalidArgument(f"table {table!r} cannot hold transactions: {reserved}")


def parse_table(table: bytes, limits: Limits) -> bytes:
    _check_table(table, limits)
    return table


def parse_register(msg: pb.RegisterObservedRequest, limits: Limits
                   ) -> tuple[bytes, list[bytes]]:
    _check_table(msg.table, limits)
    _check_count(len(msg.columns), "columns to register", limits)
    columns = list(msg.columns)
    if not columns:
        raise InvalidArgument("register at least one column")
    for column in columns:
        check_key(column, "column", limits.max_column_bytes - 1)
        if column.startswith(b"\x00"):
            raise InvalidArgument("columns starting with 0x00 are reserved for the system")
    return msg.table, columns


def _check_ts(ts: int, what: str) -> int:
    if not 0 < ts <= MAX_TS:
        raise InvalidArgument(f"{what} {ts} is not a timestamp")
    return ts


def _check_cell(row: bytes, column: bytes, limits: Limits) -> None:
    check_key(row, "row", limits.max_row_bytes)
    # One byte less than the store's limit: the kind prefix (layout) is added to it.
    check_key(column, "column", limits.max_column_bytes - 1)


def _check_count(count: int, what: str, limits: Limits) -> None:
    """At most ``limits.max_batch_rows`` of ``what``, checked before any is looked at:
    a message of 64 MiB holds millions of tiny entries, and reading them all to refuse
    them held a server thread for tens of seconds."""
    if count > limits.max_batch_rows:
        raise LimitExceeded(f"{what}: {count}; the limit is {limits.max_batch_rows}")


def _checked_keys(rows: Sequence[pb.RowColumns], limits: Limits, what: str) -> list[Key]:
    _check_count(len(rows), f"rows of {what}", limits)
    _check_count(sum([len(r.columns) for r in rows]), f"cells of {what}", limits)
    keys = key_list(rows)
    for row, column in keys:
        _check_cell(row, column, limits)
    return keys


def _key(msg: pb.Key, limits: Limits) -> Key:
    _check_cell(msg.row, msg.column, limits)
    return msg.row, msg.column


def _writes_to_pb(parts: Sequence[Part]) -> list[pb.RowWrites]:
    out = []
    for row, cells in parts:
        out.append(pb.RowWrites(row=row, cells=[
            pb.CellWrite(column=c.column, delete=c.op == records.DELETE, value=c.value or b"")
            for c in cells]))
    return out


def _parts(rows: Sequence[pb.RowWrites], limits: Limits) -> list[Part]:
    """Checked writes as parts of at most CELLS_PER_PART cells (order kept)."""
    _check_count(len(rows), "rows of writes", limits)
    _check_count(sum([len(r.cells) for r in rows]), "cells of writes", limits)
    parts: list[Part] = []
    seen: set[Key] = set()
    for r in rows:
        if not r.cells:
            raise InvalidArgument(f"row {r.row!r} has no cells")
        cells = []
        for c in r.cells:
            _check_cell(r.row, c.column, limits)
            if c.delete:
                if c.value:
                    raise InvalidArgument(f"the delete of ({r.row!r}, {c.column!r}) carries"
                                          " a value")
                cells.append(CellWrite(c.column, records.DELETE, None))
            else:
                if len(c.value) > limits.max_value_bytes:
                    raise LimitExceeded(f"value of ({r.row!r}, {c.column!r}) is"
                                        f" {len(c.value)} bytes; the limit is"
                                        f" {limits.max_value_bytes}")
                cells.append(CellWrite(c.column, records.PUT, c.value))
            key = (r.row, c.column)
            if key in seen:
                raise InvalidArgument(f"cell {key!r} is written twice")
            seen.add(key)
        for i in range(0, len(cells), CELLS_PER_PART):
            parts.append((r.row, cells[i:i + CELLS_PER_PART]))
    if len(seen) > limits.max_batch_rows:
        raise LimitExceeded(f"{len(seen)} cells in one step; the limit is"
                            f" {limits.max_batch_rows}")
    return parts


def conflict_to_pb(c: Conflict) -> pb.Conflict:
    return pb.Conflict(reason=_CONFLICT_REASONS[c.reason], row=c.row, column=c.column,
                       commit_ts=c.commit_ts, lock_start_ts=c.lock_start_ts)


def _conflict(msg: pb.Conflict) -> Conflict:
    reason = _REASONS_BACK.get(msg.reason)
    if reason is None:
        raise InvalidArgument(f"conflict of unknown reason {msg.reason}")
    return Conflict(reason, msg.row, msg.column, msg.commit_ts, msg.lock_start_ts)


def _locked_to_pb(cells: Sequence[LockedCell]) -> list[pb.LockedCell]:
    return [pb.LockedCell(row=c.row, column=c.column, start_ts=c.start_ts,
                          primary_row=c.primary_row, primary_column=c.primary_column)
            for c in cells]


def _locked(cells: Iterable[pb.LockedCell]) -> list[LockedCell]:
    return [LockedCell(c.row, c.column, c.start_ts, c.primary_row, c.primary_column)
            for c in cells]


# --- read ----------------------------------------------------------------------------------


def read_request(table: bytes, start_ts: int | None, keys: Sequence[Key]) -> pb.ReadRequest:
    return pb.ReadRequest(table=table, start_ts=start_ts or 0, rows=rows_of(keys))


def parse_read(msg: pb.ReadRequest, limits: Limits
               ) -> tuple[bytes, int | None, list[Key]]:
    _check_table(msg.table, limits)
    start_ts = _check_ts(msg.start_ts, "start_ts") if msg.start_ts else None
    return msg.table, start_ts, _checked_keys(msg.rows, limits, "a read")


def read_result(keys: Sequence[Key], result: ReadResult, budget: int, safe_point: int = 0
                ) -> pb.ReadResponse:
    """Values in request order, the locked cells left out (listed in ``locked``); values
    past ``budget`` bytes left out too, and from the first one the read did not gather
    (a budgeted read: ``LocalBackend.read``) on (``truncated``: the client reads them
    again)."""
    values = result.values
    reply = pb.ReadResponse(start_ts=result.start_ts, locked=_locked_to_pb(result.locked),
                            safe_point=safe_point)
    add = reply.values.add
    held = {(c.row, c.column) for c in result.locked} if result.locked else ()
    size = 0
    for key in keys:
        if key in held:
            continue
        if key not in values:
            reply.truncated = True
            break
        value = values[key]
        if value is None:
            add()
            continue
        size += len(value)
        if size > budget and len(reply.values):
            reply.truncated = True
            break
        add(value=value)
    return reply


def read_read(keys: Sequence[Key], msg: pb.ReadResponse) -> tuple[ReadResult, list[Key]]:
    """The result, and the keys left unread (a truncated reply)."""
    locked = _locked(msg.locked)
    held = {(c.row, c.column) for c in locked} if locked else ()
    wanted = [key for key in keys if key not in held]
    n = len(msg.values)
    if n > len(wanted) or (n < len(wanted) and not msg.truncated) or (msg.truncated and not n):
        raise InvalidArgument(f"protocol error: {n} values for {len(wanted)} cells")
    values = {key: v.value if v.HasField("value") else None
              for key, v in zip(wanted, msg.values)}
    return ReadResult(msg.start_ts, values, locked), wanted[n:]


# --- scan ----------------------------------------------------------------------------------


def scan_request(r: ScanRequest) -> pb.ScanRequest:
    msg = pb.ScanRequest(table=r.table, start_ts=r.start_ts, columns=r.columns or (),
                         include_system=r.include_system, limit=r.limit)
    if r.start_row is not None:
        msg.start_row = r.start_row
    if r.end_row is not None:
        msg.end_row = r.end_row
    return msg


def parse_scan(msg: pb.ScanRequest, limits: Limits) -> ScanRequest:
    _check_table(msg.table, limits)
    start = msg.start_row if msg.HasField("start_row") else None
    end = msg.end_row if msg.HasField("end_row") else None
    for bound in (start, end):
        if bound is not None:  # a resume row may be one byte past the longest row
            check_key(bound, "row bound", limits.max_row_bytes + 1)
    _check_count(len(msg.columns), "columns of a scan", limits)
    for column in msg.columns:
        check_key(column, "column", limits.max_column_bytes - 1)
    if not 0 < msg.limit <= limits.max_batch_rows:
        raise InvalidArgument(f"scan limit must be 1 to {limits.max_batch_rows} rows")
    return ScanRequest(msg.table, _check_ts(msg.start_ts, "start_ts"), start, end,
                       tuple(msg.columns) or None, msg.include_system, msg.limit)


def scan_result(chunk: ScanChunk) -> pb.ScanResponse:
    msg = pb.ScanResponse(cells=[pb.ScanCell(row=r, column=c, value=v)
                                 for r, c, v in chunk.cells],
                          locked=_locked_to_pb(chunk.locked), unread=rows_of(chunk.unread))
    if chunk.resume is not None:
        msg.resume_row = chunk.resume
    return msg


def read_scan(msg: pb.ScanResponse) -> ScanChunk:
    return ScanChunk([(c.row, c.column, c.value) for c in msg.cells], _locked(msg.locked),
                     msg.resume_row if msg.HasField("resume_row") else None,
                     key_list(msg.unread))


# --- prewrite ------------------------------------------------------------------------------


def prewrite_request(r: PrewriteRequest) -> pb.PrewriteRequest:
    return pb.PrewriteRequest(table=r.table, start_ts=r.start_ts,
                              primary=pb.Key(row=r.primary[0], column=r.primary[1]),
                              ttl_ms=r.ttl_ms, rows=_writes_to_pb(r.parts))


def _check_ttl(ttl_ms: int) -> int:
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise InvalidArgument(f"lock ttl_ms must be 1 to {MAX_TTL_MS}, not {ttl_ms}")
    return ttl_ms


def parse_prewrite(msg: pb.PrewriteRequest, limits: Limits) -> PrewriteRequest:
    _check_table(msg.table, limits)
    parts = _parts(msg.rows, limits)
    if not parts:
        raise InvalidArgument("a prewrite needs at least one cell")
    primary = _key(msg.primary, limits)
    if any((row, c.column) == primary for row, cells in parts for c in cells[1:]) or any(
            (row, cells[0].column) == primary for row, cells in parts[1:]):
        raise InvalidArgument("the primary, when prewritten, is the first row's first cell")
    return PrewriteRequest(msg.table, _check_ts(msg.start_ts, "start_ts"), primary,
                           _check_ttl(msg.ttl_ms), parts)


def prewrite_result(conflict: Conflict | None) -> pb.PrewriteResponse:
    return pb.PrewriteResponse(conflict=conflict_to_pb(conflict)) if conflict is not None \
        else pb.PrewriteResponse()


def read_prewrite(msg: pb.PrewriteResponse) -> Conflict | None:
    return _conflict(msg.conflict) if msg.HasField("conflict") else None


# --- commit, one phase ---------------------------------------------------------------------


def commit_request(r: CommitRequest) -> pb.CommitRequest:
    return pb.CommitRequest(table=r.table, start_ts=r.start_ts,
                            primary=pb.Key(row=r.primary[0], column=r.primary[1]),
                            secondaries=rows_of(r.keys), weak=rows_of(r.weak))


def parse_commit(msg: pb.CommitRequest, limits: Limits) -> CommitRequest:
    _check_table(msg.table, limits)
    return CommitRequest(msg.table, _check_ts(msg.start_ts, "start_ts"),
                         _key(msg.primary, limits),
                         _checked_keys(msg.secondaries, limits, "a commit"),
                         _checked_keys(msg.weak, limits, "a commit's notifications"))


def commit_result(outcome: CommitOutcome) -> pb.CommitResponse:
    return pb.CommitResponse(committed=outcome.committed, commit_ts=outcome.commit_ts)


def read_commit(msg: pb.CommitResponse) -> CommitOutcome:
    if msg.committed and not 0 < msg.commit_ts <= MAX_TS:
        raise InvalidArgument(f"protocol error: committed at {msg.commit_ts}")
    return CommitOutcome(msg.committed, msg.commit_ts)


def one_phase_request(r: OnePhaseRequest) -> pb.OnePhaseRequest:
    return pb.OnePhaseRequest(table=r.table, start_ts=r.start_ts, rows=_writes_to_pb(r.parts),
                              weak=rows_of(r.weak))


def parse_one_phase(msg: pb.OnePhaseRequest, limits: Limits) -> OnePhaseRequest:
    _check_table(msg.table, limits)
    parts = _parts(msg.rows, limits)
    weak = _checked_keys(msg.weak, limits, "a commit's notifications")
    if not parts and not weak:
        raise InvalidArgument("a one-phase commit needs a cell to write or to notify")
    return OnePhaseRequest(msg.table, _check_ts(msg.start_ts, "start_ts"), parts, weak)


def one_phase_result(outcome: CommitOutcome | Conflict) -> pb.OnePhaseResponse:
    if isinstance(outcome, Conflict):
        return pb.OnePhaseResponse(conflict=conflict_to_pb(outcome))
    return pb.OnePhaseResponse(commit=commit_result(outcome))


def read_one_phase(msg: pb.OnePhaseResponse) -> CommitOutcome | Conflict:
    if msg.HasField("conflict"):
        return _conflict(msg.conflict)
    return read_commit(msg.commit)


# --- resolve, rollback, heartbeat, status ----------------------------------------------------


def parse_resolve(msg: pb.ResolveRequest, limits: Limits) -> tuple[bytes, int, list[Key]]:
    _check_table(msg.table, limits)
    return msg.table, _check_ts(msg.start_ts, "start_ts"), _checked_keys(msg.cells, limits,
                                                                         "a resolve")


def parse_rollback(msg: pb.RollbackRequest, limits: Limits
                   ) -> tuple[bytes, int, Key, list[Key]]:
    _check_table(msg.table, limits)
    return (msg.table, _check_ts(msg.start_ts, "start_ts"), _key(msg.primary, limits),
            _checked_keys(msg.cells, limits, "a rollback"))


def parse_heartbeat(msg: pb.HeartbeatRequest, limits: Limits
                    ) -> tuple[bytes, int, Key, int]:
    _check_table(msg.table, limits)
    return (msg.table, _check_ts(msg.start_ts, "start_ts"), _key(msg.primary, limits),
            _check_ttl(msg.ttl_ms))


def parse_status(msg: pb.CheckTxnStatusRequest, limits: Limits) -> tuple[bytes, Key, int]:
    _check_table(msg.table, limits)
    return msg.table, _key(msg.primary, limits), _check_ts(msg.start_ts, "start_ts")


def status_result(status: TxnStatus) -> pb.TxnStatus:
    return pb.TxnStatus(state=_STATES[status.state], commit_ts=status.commit_ts)


def read_status(msg: pb.TxnStatus) -> TxnStatus:
    state = _STATES_BACK.get(msg.state)
    if state is None:
        raise InvalidArgument(f"protocol error: transaction state {msg.state}")
    return TxnStatus(state, msg.commit_ts)


# --- GC: clients' reports, passes --------------------------------------------------------------


def parse_client_id(client_id: bytes) -> bytes:
    if len(client_id) > MAX_CLIENT_ID_BYTES:
        raise InvalidArgument(f"client_id is {len(client_id)} bytes; the limit is"
                              f" {MAX_CLIENT_ID_BYTES}")
    return client_id


def report_request(report: SnapshotReport) -> pb.ReportSnapshotsRequest:
    msg = pb.ReportSnapshotsRequest(seen_ts=report.seen, seq=report.seq)
    if report.oldest is not None:
        msg.oldest_start_ts = report.oldest
    return msg


def parse_report(msg: pb.ReportSnapshotsRequest, client_id: bytes
                 ) -> tuple[bytes, SnapshotReport]:
    if not client_id:
        raise InvalidArgument("report_snapshots needs the batch's client_id")
    oldest = _check_ts(msg.oldest_start_ts, "oldest_start_ts") \
        if msg.HasField("oldest_start_ts") else None
    if not 0 <= msg.seen_ts <= MAX_TS:
        raise InvalidArgument(f"seen_ts {msg.seen_ts} is not a timestamp")
    if not msg.seq:
        raise InvalidArgument("report_snapshots needs its seq (from 1)")
    return client_id, SnapshotReport(oldest, msg.seen_ts, msg.seq)


def read_report(msg: pb.ReportSnapshotsResponse) -> tuple[int, int]:
    """(safe point, lease ms)."""
    if not 0 < msg.lease_ms:
        raise InvalidArgument(f"protocol error: a client lease of {msg.lease_ms} ms")
    return msg.safe_point, msg.lease_ms


def gc_pass_result(done: GcPass) -> pb.GcPass:
    return pb.GcPass(
        safe_point=done.safe_point, started_ms=done.started_ms, seconds=done.seconds,
        work_seconds=done.work_seconds, tables=done.tables, rows=done.rows,
        versions_scanned=done.versions_scanned, locks_resolved=done.locks_resolved,
        write_records=done.write_records, data=done.data,
        rollback_markers=done.rollback_markers, compactions=done.compactions,
        skipped=done.skipped, held_by=done.held_by)


def read_gc_pass(msg: pb.GcPass) -> GcPass:
    return GcPass(msg.safe_point, msg.started_ms, msg.seconds, msg.work_seconds, msg.tables,
                  msg.rows, msg.versions_scanned, msg.locks_resolved, msg.write_records,
                  msg.data, msg.rollback_markers, msg.compactions, msg.skipped, msg.held_by)
