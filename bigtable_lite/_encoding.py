"""Key encoding: the one place that turns (table, row, column, timestamp) into LevelDB keys.

Grammar (see docs/storage.md for the byte-by-byte table)::

    key        := cell_key | meta_key
    cell_key   := 0x01 escaped(table) escaped(row) escaped(column) inverted_ts
    meta_key   := 0x00 meta_name
    escaped(b) := b with every 0x00 replaced by 0x00 0xFF, then the terminator 0x00 0x01
    inverted_ts:= big-endian uint64 of (2**64 - 1 - ts)

Why it preserves order: the escape keeps byte order of the payload; the terminator
0x00 0x01 sorts below any escaped 0x00 (0x00 0xFF) and below every other byte, so a
string sorts before every longer string it prefixes.  The sequence 0x00 0x01 cannot
occur inside an escaped payload, so the first one ends the component.  Inverting the
timestamp puts versions of a cell newest first.

Persisted format: the prefix bytes and the escape bytes must never be renumbered.

The engine builds every key from these functions and from a :class:`KeyCache` (its
escaped table and column names, remembered); nothing else knows the layout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .errors import DataCorruption

MAX_TS = (1 << 64) - 1

CELL_PREFIX = b"\x01"  # do not renumber
META_PREFIX = b"\x00"  # do not renumber

_ESC_ZERO = b"\x00\xff"
_TERM = b"\x00\x01"
_AFTER_TERM = b"\x00\x02"
_TS = struct.Struct(">Q")
_pack_ts = _TS.pack
_unpack_ts_from = _TS.unpack_from
TS_WIDTH = 8
_LAST_VERSION = b"\xff" * TS_WIDTH  # inverted ts of timestamp 0


def escape(component: bytes) -> bytes:
    """Escape one component and append its terminator."""
    return component.replace(b"\x00", _ESC_ZERO) + _TERM


def escape_prefix(component: bytes) -> bytes:
    """Escape without the terminator: a prefix of every component starting with ``component``."""
    return component.replace(b"\x00", _ESC_ZERO)


def unescape_at(key: bytes, pos: int) -> tuple[bytes, int]:
    """Decode the component starting at ``pos``; return it and the position after its terminator."""
    end = key.find(_TERM, pos)
    if end < 0:
        raise ValueError(f"unterminated key component at offset {pos}")
    return key[pos:end].replace(_ESC_ZERO, b"\x00"), end + 2


def encode_ts(ts: int) -> bytes:
    """The last field of a cell key: ``ts`` inverted, so versions sort newest first."""
    return _pack_ts(MAX_TS - ts)


def decode_ts(raw: bytes) -> int:
    inverted: int = _TS.unpack(raw)[0]
    return MAX_TS - inverted


def decode_ts_at(key: bytes, pos: int) -> int:
    """The timestamp encoded at ``pos`` of ``key`` (just after its column prefix, which
    the caller found the key under); DataCorruption if the key does not end with exactly
    one (written behind the store's back, or damaged): never served as a version."""
    if len(key) - pos != TS_WIDTH:
        raise DataCorruption(f"undecodable key {key!r}: its timestamp field is"
                             f" {len(key) - pos} bytes, not {TS_WIDTH}")
    inverted: int = _unpack_ts_from(key, pos)[0]
    return MAX_TS - inverted


def table_prefix(table: bytes) -> bytes:
    """Prefix shared by every key of ``table``."""
    return CELL_PREFIX + escape(table)


def row_prefix(table_pfx: bytes, row: bytes) -> bytes:
    """Prefix shared by every key of ``row`` (given the table's prefix)."""
    return table_pfx + escape(row)


def column_prefix(row_pfx: bytes, column: bytes) -> bytes:
    """Prefix shared by every version of one cell."""
    return row_pfx + escape(column)


def cell_key(table: bytes, row: bytes, column: bytes, ts: int) -> bytes:
    """The key of one version, built as the engine builds it (prefix by prefix)."""
    return version_key(column_prefix(row_prefix(table_prefix(table), row), column), ts)


def version_key(column_pfx: bytes, ts: int) -> bytes:
    """The key of the version at ``ts`` of the cell ``column_pfx``."""
    return column_pfx + _pack_ts(MAX_TS - ts)


def after_versions(column_pfx: bytes) -> bytes:
    """Smallest key above every version of the cell ``column_pfx``."""
    return column_pfx + _LAST_VERSION + b"\x00"


def after_row(row_pfx: bytes) -> bytes:
    """Smallest key above every key of the row ``row_pfx`` (which ends in the terminator)."""
    return row_pfx[:-2] + _AFTER_TERM


def after_table(table_pfx: bytes) -> bytes:
    """Smallest key above every key of the table ``table_pfx``."""
    return table_pfx[:-2] + _AFTER_TERM


def before_table(table_pfx: bytes) -> bytes:
    """A key just below every key of the table ``table_pfx`` (its prefix without the last
    terminator byte), and no cell key of any table: a compaction's sentinel."""
    return table_pfx[:-1]


def decode_cell_key(key: bytes) -> tuple[bytes, bytes, bytes, int]:
    """Inverse of :func:`cell_key`."""
    if not key.startswith(CELL_PREFIX):
        raise ValueError("not a cell key")
    table, pos = unescape_at(key, 1)
    row, pos = unescape_at(key, pos)
    column, pos = unescape_at(key, pos)
    if len(key) - pos != TS_WIDTH:
        raise ValueError("cell key has a malformed timestamp")
    return table, row, column, decode_ts(key[pos:])


class Escaped(dict[bytes, bytes]):
    """Component -> its encoding (``escape`` or ``table_prefix``), computed on first use and
    remembered for at most ``bound`` components.

    Why: every key a mutation, condition or read touches needs its column escaped and
    its table's prefix, and a store sees few distinct ones; ``cache[name]`` on a hit is a
    dict lookup (~3x cheaper than escape()).  The bound keeps clients that invent names
    from growing it without end: past it, names are encoded each time.
    """

    __slots__ = ("_encode", "_bound")

    def __init__(self, encode: Callable[[bytes], bytes], bound: int) -> None:
        super().__init__()
        self._encode = encode
        self._bound = bound

    def __missing__(self, component: bytes) -> bytes:
        encoded = self._encode(component)
        if len(self) < self._bound:
            self[component] = encoded
        return encoded


class KeyCache:
    """The key prefixes of the tables and columns a store sees (see :class:`Escaped`).

    ``row_prefix(table, row) + columns[column]`` is the column prefix of a cell, the
    argument of :func:`version_key` and :func:`after_versions`.
    """

    __slots__ = ("tables", "columns")

    MAX_TABLES = 1024
    MAX_COLUMNS = 1 << 16

    def __init__(self) -> None:
        self.tables = Escaped(table_prefix, self.MAX_TABLES)
        self.columns = Escaped(escape, self.MAX_COLUMNS)

    def row_prefix(self, table: bytes, row: bytes) -> bytes:
        # escape(row), inline: one Python call fewer per row a read or write touches.
        return self.tables[table] + row.replace(b"\x00", _ESC_ZERO) + _TERM


def meta_key(name: bytes) -> bytes:
    return META_PREFIX + name


def encode_bytes_list(items: list[bytes]) -> bytes:
    """Length-prefixed list: uint32 count, then (uint32 length, bytes) per item."""
    out = [struct.pack(">I", len(items))]
    for item in items:
        out.append(struct.pack(">I", len(item)))
        out.append(item)
    return b"".join(out)


def decode_bytes_list(raw: bytes) -> list[bytes]:
    """Inverse of :func:`encode_bytes_list`; ValueError if ``raw`` is not one (short or
    with trailing bytes)."""
    try:
        (count,) = struct.unpack_from(">I", raw, 0)
        pos = 4
        items = []
        for _ in range(count):
            (length,) = struct.unpack_from(">I", raw, pos)
            pos += 4
            items.append(raw[pos : pos + length])
            pos += length
    except struct.error as exc:
        raise ValueError(f"encoded list cut short: {exc}") from None
    if pos != len(raw):  # (beyond it: an item cut short)
        raise ValueError("encoded list cut short or with trailing bytes")
    return items
