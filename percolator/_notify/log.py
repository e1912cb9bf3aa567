"""Log: the bytes of the notification log and of observed-column registrations (their one owner).

The notification log of table ``T`` is the store table ``T.notify``.  Every entry says
"cell (row, column) changed at ``change_ts``; its observer must run after that"::

    log row    u8 len(column) | column | u16 bucket | u64 position      (big-endian)
    column     the data row
    ts         0
    value      u8 kind | u64 change_ts

* ``position`` is where the entry sits in its bucket's order: a timestamp handed out by
  the resolved-timestamp tracker (``resolved.Tracker``) to the write that put it there,
  which was in flight until that write finished.  A reader of a bucket up to the
  resolved timestamp therefore never passes a position that is still to be written.
  A commit's entries sit at its commit_ts; entries written later for an old change (a
  secondary rolled forward, a backfill chunk, a replay) at a fresh position.
* ``bucket`` = crc32 of the row's partition key mod :data:`BUCKETS`; the partition key
  is the row without the registration's ``partition_prefix`` when it starts with it,
  so rows that differ only by that prefix land in the same bucket (the citations' fold
  row of paper *t* beside *t*).
* Kinds: :data:`WRITE` (a committed write of the cell), :data:`WEAK`
  (``Transaction.notify``), :data:`BACKFILL` (committed before the column was
  observed), :data:`REPLAY` (moved back from the parking table).

Column first, so that a column's entries are one key range (its pending count, its
removal); bucket next, so a worker reads only the buckets it owns; position last, so a
bucket is read in order from a cursor.  The entries of one write in one bucket share a
log row.

Registrations, in ``T.config`` row ``layout.OBSERVED_ROW``, one store column per
observed column, ts 0::

    u8 format = 2 | u64 registered_at | u8 len(prefix) | prefix | u8 backfill state
    | u64 rows done | u64 rows estimated | backfill cursor (the rest: next data row)

Persisted: never renumber kinds or states.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "BACKFILL", "BUCKETS", "DONE", "KINDS", "MAX_COLUMN", "PENDING", "REPLAY", "WEAK",
    "WRITE", "Registration", "bucket_of", "bucket_prefix", "column_end", "column_prefix",
    "decode_entry", "decode_key", "decode_registration", "encode_entry",
    "encode_registration", "log_key", "registration_owner",
]

BUCKETS = 256
"""Buckets per observed column: the most workers that can share one column."""
MAX_COLUMN = 255
"""Longest observed column (the log key holds its length in one byte)."""

WRITE = 1
WEAK = 2
BACKFILL = 3
REPLAY = 4
KINDS = frozenset((WRITE, WEAK, BACKFILL, REPLAY))

PENDING = 1  # backfill states; 0 = none or done
DONE = 0

_ENTRY = struct.Struct(">BQ")
_BUCKET_POS = struct.Struct(">HQ")
_BUCKET = struct.Struct(">H")
_POS = struct.Struct(">Q")
_REG_HEAD = struct.Struct(">BQ")
_REG_TAIL = struct.Struct(">BQQ")
_REG_FORMAT = 2


def bucket_of(row: bytes, partition_prefix: bytes = b"") -> int:
    """The bucket of ``row`` in a column registered with ``partition_prefix``."""
    if partition_prefix and row.startswith(partition_prefix):
        row = row[len(partition_prefix):]
    return zlib.crc32(row) % BUCKETS


def column_prefix(column: bytes) -> bytes:
    """First bytes of every log row of ``column``."""
    return bytes((len(column),)) + column


def column_end(column: bytes) -> bytes:
    """The smallest log row after every row of ``column``."""
    return bytes((len(column),)) + column + b"\xff\xff\xff"


def bucket_prefix(column: bytes, bucket: int) -> bytes:
    return bytes((len(column),)) + column + _BUCKET.pack(bucket)


def log_key(column: bytes, bucket: int, position: int) -> bytes:
    return bytes((len(column),)) + column + _BUCKET_POS.pack(bucket, position)


def decode_key(key: bytes) -> tuple[bytes, int, int]:
    """(column, bucket, position) of a log row; ValueError if it is not one."""
    if not key:
        raise ValueError("empty log row")
    n = key[0]
    if len(key) != 1 + n + _BUCKET_POS.size or n == 0:
        raise ValueError(f"log row of {len(key)} bytes does not match column length {n}")
    bucket, position = _BUCKET_POS.unpack_from(key, 1 + n)
    if bucket >= BUCKETS:
        raise ValueError(f"log row names bucket {bucket}, beyond {BUCKETS}")
    return key[1:1 + n], bucket, position


def encode_entry(kind: int, change_ts: int) -> bytes:
    return _ENTRY.pack(kind, change_ts)


def decode_entry(raw: bytes) -> tuple[int, int]:
    """(kind, change_ts); ValueError for anything but a whole entry of a known kind."""
    if len(raw) != _ENTRY.size:
        raise ValueError(f"log entry of {len(raw)} bytes, expected {_ENTRY.size}")
    kind, change_ts = _ENTRY.unpack(raw)
    if kind not in KINDS:
        raise ValueError(f"log entry of unknown kind {kind}")
    return kind, change_ts


@dataclass(frozen=True, slots=True)
class Registration:
    """An observed column: since when, how its rows map to buckets, and its backfill.

    ``backfill`` PENDING: the cells committed before ``registered_at`` are still being
    queued, from data row ``cursor`` on; ``done`` rows so far of about ``estimated``.
    """

    column: bytes
    registered_at: int
    partition_prefix: bytes = b""
    backfill: int = DONE
    done: int = 0
    estimated: int = 0
    cursor: bytes = b""
    damaged: str = ""
    """Not stored: why the stored record did not decode (this one stands in for it)."""


def encode_registration(reg: Registration) -> bytes:
    prefix = reg.partition_prefix
    return (_REG_HEAD.pack(_REG_FORMAT, reg.registered_at) + bytes((len(prefix),)) + prefix
            + _REG_TAIL.pack(reg.backfill, reg.done, reg.estimated) + reg.cursor)


def registration_owner(registered_at: int) -> bytes:
    """The first bytes of a registration's record: they change only with a new registration
    (a backfill's progress is written conditional on them)."""
    return _REG_HEAD.pack(_REG_FORMAT, registered_at)


def decode_registration(column: bytes, raw: bytes) -> Registration:
    """ValueError for anything but a whole record of format 2."""
    if len(raw) < _REG_HEAD.size + 1 or raw[0] != _REG_FORMAT:
        raise ValueError(f"registration of {column!r} is not of format {_REG_FORMAT}")
    _, registered_at = _REG_HEAD.unpack_from(raw, 0)
    i = _REG_HEAD.size
    n = raw[i]
    i += 1
    if len(raw) < i + n + _REG_TAIL.size:
        raise ValueError(f"registration of {column!r} is truncated")
    prefix = raw[i:i + n]
    i += n
    state, done, estimated = _REG_TAIL.unpack_from(raw, i)
    if state not in (DONE, PENDING):
        raise ValueError(f"registration of {column!r} has unknown backfill state {state}")
    return Registration(column, registered_at, prefix, state, done, estimated,
                        raw[i + _REG_TAIL.size:])


def position_bytes(position: int) -> bytes:
    return _POS.pack(position)
