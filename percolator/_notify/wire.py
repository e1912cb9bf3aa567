"""Wire: the notification verbs' values <-> ``percolator.v1.Notifications`` messages.

The one place for their encoding.  Decoding (``parse_*``) is the node's check of a
client it does not trust: sizes, counts, and every log key a request names must be a
log key; anything else is ``InvalidArgument`` (INVALID_ARGUMENT), and nothing of the
request was applied.  Meaning is checked by ``_notify.local``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bigtable_lite import InvalidArgument, Limits
from bigtable_lite.validation import check_key

from ..v1 import notifications_pb2 as pb
from . import log
from .api import (
    ColumnInfo,
    Cursors,
    DoneRef,
    LogRow,
    MemberInfo,
    ParkedCell,
    PullReply,
    PullRequest,
)

__all__ = [
    "MAX_DONE", "MAX_ROOM", "MAX_WAIT_MS", "parse_done", "parse_pull", "pull_reply_from_pb",
    "pull_reply_to_pb", "pull_request_to_pb",
]

MAX_ROOM = 1_000_000
MAX_WAIT_MS = 30_000
MAX_DONE = 1_000_000
MIN_LEASE_MS = 500
MAX_LEASE_MS = 600_000
MAX_WORKER = 256
MAX_COLUMNS = 256

Buckets = dict[bytes, frozenset[int]]


def check_table(table: bytes, limits: Limits) -> bytes:
    check_key(table, "table", limits.max_table_bytes - 16)
    return table


def check_worker(worker: str) -> str:
    if not worker or len(worker) > MAX_WORKER or not worker.isprintable():
        raise InvalidArgument(f"a worker id is 1 to {MAX_WORKER} printable characters")
    return worker


def check_column(column: bytes) -> bytes:
    if not column or len(column) > log.MAX_COLUMN:
        raise InvalidArgument(f"an observed column is 1 to {log.MAX_COLUMN} bytes, not"
                              f" {len(column)}")
    return column


# --- buckets ------------------------------------------------------------------------------

def bitmap(buckets: Iterable[int]) -> bytes:
    out = bytearray(log.BUCKETS // 8)
    for b in buckets:
        out[b >> 3] |= 1 << (b & 7)
    return bytes(out)


def from_bitmap(raw: bytes) -> frozenset[int]:
    if len(raw) > log.BUCKETS // 8:
        raise InvalidArgument(f"a bucket bitmap is at most {log.BUCKETS // 8} bytes")
    return frozenset(i * 8 + bit for i, byte in enumerate(raw) for bit in range(8)
                     if byte >> bit & 1)


def sets_to_pb(buckets: Buckets) -> list[pb.BucketSet]:
    return [pb.BucketSet(column=c, bitmap=bitmap(b)) for c, b in sorted(buckets.items())]


def sets_from_pb(sets: Iterable[pb.BucketSet]) -> Buckets:
    out: dict[bytes, frozenset[int]] = {}
    for s in sets:
        out[check_column(s.column)] = out.get(s.column, frozenset()) | from_bitmap(s.bitmap)
    return out


# --- log rows -----------------------------------------------------------------------------

def done_to_pb(done: Sequence[DoneRef]) -> list[pb.LogRow]:
    return [pb.LogRow(key=ref.log_row, rows=ref.rows) for ref in done]


def parse_done(rows: Iterable[pb.LogRow], limits: Limits) -> tuple[DoneRef, ...]:
    out = []
    total = 0
    for row in rows:
        try:
            log.decode_key(row.key)
        except ValueError as exc:
            raise InvalidArgument(f"not a notification-log key: {exc}") from None
        for data_row in row.rows:
            check_key(data_row, "row", limits.max_row_bytes)
        total += len(row.rows)
        if total > MAX_DONE:
            raise InvalidArgument(f"more than {MAX_DONE} entries in one request")
        out.append(DoneRef(row.key, tuple(row.rows)))
    return tuple(out)


def _cursors_to_pb(cursors: Cursors) -> pb.Cursors:
    return pb.Cursors(base=cursors.base, overrides=[
        pb.Cursor(column=c, bucket=b, position=p) for (c, b), p in cursors.overrides.items()])


def _cursors_from_pb(msg: pb.Cursors) -> Cursors:
    overrides = {}
    for o in msg.overrides:
        if o.bucket >= log.BUCKETS:
            raise InvalidArgument(f"bucket {o.bucket} beyond {log.BUCKETS}")
        overrides[(check_column(o.column), o.bucket)] = o.position
    return Cursors(msg.base, overrides)


# --- pull ---------------------------------------------------------------------------------

def pull_request_to_pb(table: bytes, r: PullRequest) -> pb.PullRequest:
    return pb.PullRequest(
        table=table, worker=r.worker, columns=r.columns, lease_ms=r.lease_ms,
        held=sets_to_pb(r.held), released=sets_to_pb(r.released), done=done_to_pb(r.done),
        cursors=_cursors_to_pb(r.cursors), room=r.room, wait_ms=r.wait_ms,
        member_index=r.member_index, stats=r.stats)


def parse_pull(msg: pb.PullRequest, limits: Limits) -> tuple[bytes, PullRequest]:
    table = check_table(msg.table, limits)
    if len(msg.columns) > MAX_COLUMNS:
        raise InvalidArgument(f"a worker observes at most {MAX_COLUMNS} columns")
    if not MIN_LEASE_MS <= msg.lease_ms <= MAX_LEASE_MS:
        raise InvalidArgument(f"lease_ms must be in [{MIN_LEASE_MS}, {MAX_LEASE_MS}]")
    if msg.room > MAX_ROOM or msg.wait_ms > MAX_WAIT_MS:
        raise InvalidArgument(f"room at most {MAX_ROOM}, wait_ms at most {MAX_WAIT_MS}")
    return table, PullRequest(
        check_worker(msg.worker), tuple(check_column(c) for c in msg.columns), msg.lease_ms,
        sets_from_pb(msg.held), sets_from_pb(msg.released), parse_done(msg.done, limits),
        _cursors_from_pb(msg.cursors), msg.room, msg.wait_ms, msg.member_index, msg.stats)


def pull_reply_to_pb(r: PullReply) -> pb.PullResponse:
    return pb.PullResponse(
        owned=sets_to_pb(r.owned), revoking=sets_to_pb(r.revoking),
        member_index=r.member_index,
        rows=[pb.LogRow(key=row.key, rows=[c for c, _ in row.cells],
                        values=[v for _, v in row.cells]) for row in r.rows],
        cursors=_cursors_to_pb(r.cursors), more=r.more)


def pull_reply_from_pb(msg: pb.PullResponse) -> PullReply:
    return PullReply(
        sets_from_pb(msg.owned), sets_from_pb(msg.revoking), msg.member_index,
        tuple(LogRow(row.key, tuple(zip(row.rows, row.values))) for row in msg.rows),
        _cursors_from_pb(msg.cursors), msg.more)


# --- status -------------------------------------------------------------------------------

def column_info_to_pb(c: ColumnInfo) -> pb.ColumnInfo:
    return pb.ColumnInfo(column=c.column, registered_at=c.registered_at,
                         partition_prefix=c.partition_prefix,
                         backfill_pending=c.backfill_pending, backfill_done=c.backfill_done,
                         backfill_estimated=c.backfill_estimated, pending=c.pending,
                         workers=c.workers, damaged=c.damaged)


def column_info_from_pb(m: pb.ColumnInfo) -> ColumnInfo:
    return ColumnInfo(m.column, m.registered_at, m.partition_prefix, m.backfill_pending,
                      m.backfill_done, m.backfill_estimated, m.pending, tuple(m.workers),
                      m.damaged)


def member_to_pb(m: MemberInfo) -> pb.MemberInfo:
    return pb.MemberInfo(worker=m.worker, alive=m.alive, member_index=m.member_index,
                         columns=m.columns, owned=m.owned, stats=m.stats)


def member_from_pb(m: pb.MemberInfo) -> MemberInfo:
    return MemberInfo(m.worker, m.alive, m.member_index, tuple(m.columns), m.owned, m.stats)


def parked_to_pb(p: ParkedCell) -> pb.ParkedCell:
    return pb.ParkedCell(row=p.row, column=p.column, note=p.note, entries=[
        pb.ParkedEntry(position=ts, record=v) for ts, v in p.entries])


def parked_from_pb(m: pb.ParkedCell) -> ParkedCell:
    return ParkedCell(m.row, m.column, tuple((e.position, e.record) for e in m.entries),
                      m.note)
