"""Layout: where a transaction's cells live in the tablet store (the one owner of column names).

Every user cell (row, column) of a Percolator table is stored in the same store row,
under columns named by a one-byte kind prefix followed by the user column::

    b"d" + column   data    at start_ts   values too long to inline in the write record
    b"l" + column   lock    at LOCK_SLOT_TS (0): the cell's one lock slot, holding a
                    records.Lock (which names its owner's start_ts) while a
                    transaction commits
    b"w" + column   write   at commit_ts  a records.Write: the commit of a put or a delete
    b"r" + column   rollback marker at start_ts, on primaries only: a rolled-back primary
                    can never be prewritten or committed again

The kind bytes and the slot's timestamp are persisted: do not renumber.

Why one lock slot per cell (TiKV's lock column family), not a lock at each writer's
start_ts: a cell has at most one lock anyway, and a lock is written and erased once
per transaction on the cell.  At distinct timestamps every erased lock stayed a LevelDB
tombstone that the next "newest lock at or below start_ts" seek walked until a
compaction dropped it (5-21 us per seek in a transfer loop, docs/storage.md); at one
timestamp a lock is found with a point lookup, which sees only the newest entry.

Notifications for observers live in a second table, ``<table>.notify``: the
notification log, keyed (column, bucket, position), whose bytes ``percolator._notify.log``
owns; workers read only pending work of their buckets, never the data (Percolator
keeps notifications in a separate locality group for the same reason).

User columns starting with ``SYSTEM_PREFIX`` are reserved for the system (e.g. the
observers' acknowledgement cells); they are transactional like any other column but
hidden from scans that do not ask for them.

Table names: a table beside a Percolator table is named ``<table>`` + a suffix, and
system tables (the oracle's ``_oracle``) start with ``SYSTEM_TABLE_PREFIX``; none of
these is a Percolator table (:func:`reserved_table`).  Why it matters: transactions
write columns derived from the user's (``l`` + column, ...), so a transaction "on" the
config table could overwrite the observed-column registry.  ``SIDE_SUFFIXES`` are the
tables the node's notification service keeps beside a table (``percolator._notify``:
the workers' reported counters, parked notifications); only ``admin`` clients write
any table raw (``percolator._node_roles``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bigtable_lite import NoVersionIn

DATA = b"d"  # do not renumber
LOCK = b"l"  # do not renumber
WRITE = b"w"  # do not renumber
ROLLBACK = b"r"  # do not renumber
LOCK_SLOT_TS = 0  # the version of every lock column: do not change

DEFAULT_TABLE = b"percolator"
NOTIFY_SUFFIX = b".notify"
CONFIG_SUFFIX = b".config"
WORKERS_SUFFIX = b".workers"  # observer workers' reported counters
PARKED_SUFFIX = b".parked"    # observers: notifications that failed too often
SIDE_SUFFIXES = (WORKERS_SUFFIX, PARKED_SUFFIX)
SYSTEM_TABLE_PREFIX = b"_"
OBSERVED_ROW = b"observed_columns"  # in the config table: one store column per observed column
SYSTEM_PREFIX = b"\x00"


def notify_table(table: bytes) -> bytes:
    return table + NOTIFY_SUFFIX


def config_table(table: bytes) -> bytes:
    """Small, rarely written settings every client reads, e.g. the observed columns."""
    return table + CONFIG_SUFFIX


def reserved_table(table: bytes) -> str | None:
    """Why ``table`` cannot be a Percolator table (None: it can)."""
    if table.startswith(SYSTEM_TABLE_PREFIX):
        return f"tables starting with {SYSTEM_TABLE_PREFIX!r} are the system's"
    for suffix in (NOTIFY_SUFFIX, CONFIG_SUFFIX, *SIDE_SUFFIXES):
        if table.endswith(suffix):
            return f"tables ending in {suffix!r} are kept beside a Percolator table"
    return None


def data_column(column: bytes) -> bytes:
    return DATA + column


def lock_column(column: bytes) -> bytes:
    return LOCK + column


def write_column(column: bytes) -> bytes:
    return WRITE + column


def rollback_column(column: bytes) -> bytes:
    return ROLLBACK + column


def is_system(column: bytes) -> bool:
    return column.startswith(SYSTEM_PREFIX)


@dataclass(frozen=True, slots=True)
class Columns:
    """The store columns of one user column, and the prewrite's "lock slot empty" condition
    (the same for every transaction: a point lookup)."""

    data: bytes
    lock: bytes
    write: bytes
    rollback: bytes
    slot_empty: NoVersionIn


_MAX_CACHED_COLUMNS = 1 << 16
_columns: dict[bytes, Columns] = {}


def columns_of(column: bytes) -> Columns:
    """:class:`Columns` of ``column``, built once per column (a bounded cache: every step
    derives them for every cell it touches)."""
    found = _columns.get(column)
    if found is not None:
        return found
    lock = LOCK + column
    derived = Columns(DATA + column, lock, WRITE + column, ROLLBACK + column,
                      NoVersionIn(lock, LOCK_SLOT_TS, LOCK_SLOT_TS))
    if len(_columns) < _MAX_CACHED_COLUMNS:
        _columns[column] = derived
    return derived
