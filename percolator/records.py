"""Lock and write records: the values of the lock and write columns (the one owner of their bytes).

Lock (value of ``l<column>`` at ``layout.LOCK_SLOT_TS``, the cell's one lock slot)::

    offset size  field
    0      1     format version = 2
    1      8     start_ts of the owning transaction, uint64 big-endian
    9      1     op: b"P" put, b"D" delete
    10     1     flags: bit0 value inlined, bit1 this cell is the primary
    11     8     expires_at_ms, uint64 big-endian (the backend's SteadyClock; heartbeats move it)
    19     4     primary row length n, uint32 big-endian
    23     n     primary row
    23+n   4     primary column length m
    27+n   m     primary column
    ...    rest  the value, if inlined

The first 9 bytes (version and start_ts, :func:`lock_owner`) never change while the
lock lives, so every step acting on its own lock makes its mutation conditional on the
slot's value starting with them (``ValuePrefixAt``): the slot may hold a later
transaction's lock by then.  Format 1 (no start_ts; the lock stored at the writer's
start_ts version) is refused with ``DataCorruption``, never read as format 2.

Write (value of ``w<column>`` at commit_ts; at start_ts for a rollback)::

    0      1     kind: b"P" put, b"D" delete
    1      1     flags: bit0 value inlined
    2      8     start_ts of the writing transaction, uint64 big-endian
    10     rest  the value, if inlined (kind P only); otherwise it is in ``d<column>`` at start_ts

Values up to ``INLINE_VALUE_MAX`` bytes are inlined (as TiKV's short values), so a
snapshot read costs one store read instead of two.  Persisted: never renumber.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bigtable_lite import DataCorruption, fast_init

INLINE_VALUE_MAX = 255

PUT = b"P"
DELETE = b"D"

_LOCK_VERSION = 2  # persisted: a new layout takes a new number
_LOCK_VERSION_1 = 1  # before the lock slot: refused
_LOCK_OWNER = struct.Struct(">BQ")  # version, start_ts: the prefix naming the owner
_LOCK_HEAD = struct.Struct(">BQcBQI")
_U32 = struct.Struct(">I")
_WRITE_HEAD = struct.Struct(">cBQ")
_U64_AT = struct.Struct(">Q")
_INLINED = 1
_PRIMARY = 2


@fast_init
@dataclass(frozen=True, slots=True)
class Lock:
    start_ts: int  # the owning transaction
    op: bytes
    primary_row: bytes
    primary_column: bytes
    expires_at_ms: int
    is_primary: bool = False
    value: bytes | None = None  # inlined value, if any


@fast_init
@dataclass(frozen=True, slots=True)
class Write:
    kind: bytes
    start_ts: int
    value: bytes | None = None  # inlined value, if any


def encode_lock(lock: Lock) -> bytes:
    return lock_bytes(lock.start_ts, lock.op, lock.primary_row, lock.primary_column,
                      lock.expires_at_ms, lock.is_primary, lock.value)


def lock_bytes(start_ts: int, op: bytes, primary_row: bytes, primary_column: bytes,
               expires_at_ms: int, is_primary: bool, value: bytes | None) -> bytes:
    """encode_lock without building a Lock (a prewrite encodes one per cell)."""
    flags = (_INLINED if value is not None else 0) | (_PRIMARY if is_primary else 0)
    return b"".join((
        _LOCK_HEAD.pack(_LOCK_VERSION, start_ts, op, flags, expires_at_ms, len(primary_row)),
        primary_row,
        _U32.pack(len(primary_column)),
        primary_column,
        value if value is not None else b"",
    ))


def lock_owner(start_ts: int) -> bytes:
    """The first bytes of every lock record of transaction ``start_ts`` (version, start_ts):
    what a step acting on its own lock requires the slot's value to start with."""
    return _LOCK_OWNER.pack(_LOCK_VERSION, start_ts)


def decode_lock(raw: bytes) -> Lock:
    """The lock record ``raw``; DataCorruption if it is not a whole format-2 record."""
    version = raw[0] if raw else None
    if version != _LOCK_VERSION:
        if version == _LOCK_VERSION_1:
            raise DataCorruption(
                "lock record of format 1 (written before the one lock slot per cell): this"
                " version reads only format 2; finish the old version's transactions before"
                " upgrading, or start from an empty data directory")
        raise DataCorruption(f"unknown lock record format {version}")
    try:
        _, start_ts, op, flags, expires, n = _LOCK_HEAD.unpack_from(raw, 0)
        pos = _LOCK_HEAD.size
        row = raw[pos:pos + n]
        pos += n
        (m,) = _U32.unpack_from(raw, pos)
        pos += 4
        column = raw[pos:pos + m]
        pos += m
    except struct.error:
        raise DataCorruption(f"truncated lock record ({len(raw)} bytes)") from None
    if len(row) != n or len(column) != m:
        raise DataCorruption(f"truncated lock record ({len(raw)} bytes)")
    value = raw[pos:] if flags & _INLINED else None
    return Lock(start_ts, op, row, column, expires, bool(flags & _PRIMARY), value)


def inline_value(op: bytes, value: bytes | None) -> bytes | None:
    """The value a write record of ``op`` inlines (a short put's), else None."""
    return value if op == PUT and value is not None and len(value) <= INLINE_VALUE_MAX else None


def encode_write(write: Write) -> bytes:
    return write_bytes(write.kind, write.start_ts, write.value)


def write_bytes(kind: bytes, start_ts: int, value: bytes | None) -> bytes:
    """encode_write without building a Write (a commit encodes one per cell)."""
    if value is None:
        return _WRITE_HEAD.pack(kind, 0, start_ts)
    return _WRITE_HEAD.pack(kind, _INLINED, start_ts) + value


def decode_write(raw: bytes) -> Write:
    """The write record ``raw``; DataCorruption if it is not one (stored damage, never a
    caller's mistake: a node must not answer it as a bad request)."""
    if len(raw) < _WRITE_HEAD.size:
        raise DataCorruption(f"truncated write record ({len(raw)} bytes)")
    kind, flags, start_ts = _WRITE_HEAD.unpack_from(raw, 0)
    if kind not in (PUT, DELETE):
        raise DataCorruption(f"unknown write record kind {kind!r}")
    return Write(kind, start_ts, raw[_WRITE_HEAD.size:] if flags & _INLINED else None)


def long_value_ts(raw: bytes) -> int | None:
    """The start_ts of the long value (``d`` column) the write record ``raw`` points to;
    None for an inlined put or a delete.  Read in place, without building a Write: garbage
    collection asks it of every record it removes."""
    if len(raw) < _WRITE_HEAD.size:
        raise DataCorruption(f"truncated write record ({len(raw)} bytes)")
    if raw[:1] != PUT or raw[1] & _INLINED:
        return None
    start_ts: int = _U64_AT.unpack_from(raw, 2)[0]
    return start_ts
