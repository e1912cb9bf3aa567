"""The timestamp oracle: strictly increasing, durable unsigned 64-bit timestamps.

Snapshot isolation rests on one clock (Percolator paper, section 2.3): every
transaction takes a ``start_ts`` and a ``commit_ts`` from the oracle, and the protocol
is only correct if every timestamp is greater than every one handed out before, to any
client, across crashes.

Durability without an fsync per timestamp: the oracle persists a *high-water mark*
ahead of what it hands out (a block of ``block_size`` timestamps at a time) and serves
from memory below it.  Every timestamp handed out is <= the persisted mark, so after a
restart, clean or ``kill -9``, the oracle starts strictly above the mark and nothing
is ever handed out twice or goes backwards.  A crash wastes at most one block of the
64-bit space.

Persisted record (through the public store API, one cell, rewritten in place)::

    table   b"_oracle"          reserved; nothing else writes it
    row     b"high_water"
    column  b"mark"
    ts      0                   always 0: one version, overwritten by each block
    value   uint64 big-endian   highest timestamp that may have been handed out

Each block is written with ``mutate_rows(..., sync=True)`` (fsync) as a
check-and-set on the previous value, so two oracles on one store (a bug) fail with
:class:`OracleConflict` instead of handing out the same numbers.

A mark that is not 8 bytes (a raw write, a damaged store) stops the oracle at start
with ``DataCorruption`` naming the cell and the repair, and is never skipped or guessed
from: starting low would hand out timestamps again.  ``percolator repair --oracle``
(with every node and client stopped) writes :func:`recovered_mark`: the highest
timestamp stored in any cell of the store plus :data:`RECOVERY_MARGIN`, which covers
the timestamps handed out to transactions that had stored nothing yet.

:class:`TimestampSource` is the seam: :class:`Oracle` (in-process, this module) and
``percolator.oracle_client.RemoteOracle`` (gRPC, batching) both implement it, so the
transaction layer uses either unchanged.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

from bigtable_lite import (
    MAX_TS,
    DataCorruption,
    InvalidArgument,
    NoVersionIn,
    Put,
    RowMutation,
    RowRead,
    ScanRequest,
    StoreClosed,
    TabletStore,
    VersionAt,
)

from . import failpoints
from .errors import OracleError

__all__ = [
    "DEFAULT_BLOCK_SIZE", "FIRST_TIMESTAMP", "MAX_BLOCK_SIZE", "MAX_COUNT", "ORACLE_TABLE",
    "RECOVERY_MARGIN",
    "Oracle", "OracleConflict", "OracleExhausted", "OracleStats", "TimestampSource",
    "check_count", "decode_mark", "recovered_mark", "rewrite_mark", "stored_mark",
]

MAX_COUNT = 1 << 16
"""Most timestamps one request may ask for (in-process or over gRPC).

Bounds what a single caller can take in one step, so one request can never consume a
large part of a block; batching clients send one request per group of waiting callers,
far below this.  Larger counts are refused with ``InvalidArgument`` (gRPC
``INVALID_ARGUMENT``)."""

DEFAULT_BLOCK_SIZE = 1 << 20
"""Timestamps reserved per fsync: at 1,000,000 timestamps/s about one fsync a second."""
MAX_BLOCK_SIZE = 1 << 30
"""The largest block: a crash skips at most this many timestamps (2**34 crashes use up the
space).  A block near 2**64 put the mark at its end, and the next start had none left."""

FIRST_TIMESTAMP = 1
"""Timestamps start at 1; 0 is never handed out, so it can mean "no timestamp"."""

ORACLE_TABLE = b"_oracle"
_ROW = b"high_water"
_COLUMN = b"mark"
_U64 = struct.Struct(">Q")

RECOVERY_MARGIN = 1 << 40
"""Timestamps a recovered mark leaves above the highest one stored: those handed out to
transactions that wrote nothing before the mark was lost (12 days of a node's busiest
rate, about a million a second, without one write reaching the store), for 2**-24 of
the 64-bit space."""
DAMAGED_HINT = ("stop every node and client of this data directory and run `percolator"
                " repair --oracle --data-dir DIR`: it sets the mark above every timestamp"
                " stored in the data")


class OracleExhausted(OracleError):
    """The request would pass the largest unsigned 64-bit timestamp."""


class OracleConflict(OracleError):
    """The persisted high-water mark moved under this oracle: another oracle uses the store."""


@dataclass(frozen=True, slots=True)
class OracleStats:
    """Figures of one timestamp source since it was opened.

    ``requests`` counts requests *to the oracle*: calls of the in-process oracle, or
    RPCs sent by a remote client, so ``mean_batch_size`` shows how well batching works.
    ``persisted_high_water`` is 0 where the source does not know it (a remote client).
    """

    timestamps_served: int
    requests: int
    persisted_high_water: int = 0

    @property
    def mean_batch_size(self) -> float:
        """Timestamps per request (0.0 before the first request)."""
        return self.timestamps_served / self.requests if self.requests else 0.0

    @property
    def requests_per_timestamp(self) -> float:
        return self.requests / self.timestamps_served if self.timestamps_served else 0.0


@runtime_checkable
class TimestampSource(Protocol):
    """Where transactions get ``start_ts`` and ``commit_ts``; thread-safe.

    Contract (linearizable): a returned timestamp is greater than every timestamp any
    caller of the same oracle received before this call began.
    """

    def get_timestamp(self) -> int:
        """One fresh timestamp."""
        ...

    def get_timestamps(self, count: int) -> int:
        """The first of ``count`` fresh contiguous timestamps [first, first + count)."""
        ...

    def stats(self) -> OracleStats:
        ...

    def close(self) -> None:
        ...


def check_count(count: object) -> int:
    """Validate a requested count before any I/O (shared by oracle, service and client)."""
    if type(count) is not int:
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if count < 1 or count > MAX_COUNT:
        raise InvalidArgument(f"count must be between 1 and {MAX_COUNT}, not {count}")
    return count


class Oracle:
    """The in-process durable oracle: a lock and integer arithmetic, one fsync per block.

    Does not own ``store``: closing the oracle leaves the store open.
    """

    def __init__(self, store: TabletStore, *, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if type(block_size) is not int or not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be an int from 1 to {MAX_BLOCK_SIZE}, not"
                             f" {block_size!r}")
        self._store = store
        self._block = block_size
        self._lock = threading.Lock()
        self._closed = False
        self._raw = self._read_mark()
        self._persisted = decode_mark(self._raw) or 0
        # Start strictly above the persisted mark: everything at or below it may have
        # been handed out before a crash.
        self._next = max(self._persisted + 1, FIRST_TIMESTAMP)
        self._first = self._next
        # Highest timestamp servable without persisting; nothing until the first block.
        self._limit = self._persisted
        self._requests = 0

    # --- the TimestampSource contract ---------------------------------------------------

    def get_timestamp(self) -> int:
        with self._lock:
            ts = self._next
            if ts > self._limit:
                self._reserve(ts)
            self._next = ts + 1
            self._requests += 1
            return ts

    def timestamp_if_ready(self, wait: float) -> int | None:
        """A timestamp, or None if one needs a new mark persisted or the oracle's lock is
        not free within ``wait`` seconds.

        Why: a caller holding store row locks (a one-phase commit) must not wait for the
        oracle: persisting a mark writes the oracle's row, whose store lock may be one the
        caller holds.  None tells it to release them and take a timestamp first.
        """
        if not self._lock.acquire(timeout=wait):
            return None
        try:
            ts = self._next
            if ts > self._limit:
                return None
            self._next = ts + 1
            self._requests += 1
            return ts
        finally:
            self._lock.release()

    def get_timestamps(self, count: int) -> int:
        check_count(count)
        with self._lock:
            first = self._next
            last = first + count - 1
            if last > self._limit:
                self._reserve(last)
            self._next = last + 1
            self._requests += 1
            return first

    def stats(self) -> OracleStats:
        with self._lock:
            return OracleStats(self._next - self._first, self._requests, self._persisted)

    def peek(self) -> int:
        """The first timestamp the next request will get (nothing is handed out): every
        timestamp handed out before this call is below it, every one after at or above.
        The GC safe point's clock (``percolator._safe_point``).  Without the lock (an int
        read is atomic): a value read while a request is served is the older one, which
        is still at or below every timestamp handed out after this call."""
        return self._next

    def close(self) -> None:
        """Refuse further requests; the store stays open.  Idempotent."""
        with self._lock:
            self._closed = True
            self._limit = -1  # every request now takes the slow path, which refuses it

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- persistence ----------------------------------------------------------------------

    def _reserve(self, last: int) -> None:
        """Persist a mark covering ``last`` plus a block, before anything above the old mark
        is handed out (called with the lock held; state is unchanged if it raises)."""
        if self._closed:
            raise StoreClosed("the timestamp oracle is closed")
        if last > MAX_TS:
            raise OracleExhausted("no timestamps left below 2**64")
        mark = min(MAX_TS, last + self._block)
        raw = _U64.pack(mark)
        if self._raw is None:
            guard: NoVersionIn | VersionAt = NoVersionIn(_COLUMN)
        else:
            guard = VersionAt(_COLUMN, 0, self._raw)
        failpoints.hit("oracle.before_persist_mark")
        # sync=True: the mark must be on disk before any timestamp below it is returned,
        # or a power loss could roll the mark back under timestamps already in use.
        result = self._store.mutate_rows(
            [RowMutation(ORACLE_TABLE, _ROW, (Put(_COLUMN, 0, raw),), (guard,))], sync=True)[0]
        failpoints.hit("oracle.after_persist_mark")  # a crash here wastes the whole block
        if not result.applied:
            raise OracleConflict(
                "the persisted timestamp high-water mark changed under this oracle;"
                " is a second oracle using the same store?")
        self._raw = raw
        self._persisted = mark
        self._limit = mark

    def _read_mark(self) -> bytes | None:
        raw = stored_mark(self._store)
        if raw is None:
            return None
        if len(raw) != _U64.size:
            raise DataCorruption(
                f"the oracle's high-water mark (table {ORACLE_TABLE.decode()}, row"
                f" {_ROW.decode()}, column {_COLUMN.decode()}) is damaged: {len(raw)} bytes,"
                " expected 8; refusing to start, since a guess could hand out timestamps"
                f" already in use; {DAMAGED_HINT}")
        return raw


def stored_mark(store: TabletStore) -> bytes | None:
    """The persisted mark's bytes as stored (None: there is none), undecoded."""
    cells = store.read_rows([RowRead(ORACLE_TABLE, _ROW, (_COLUMN,), max_versions=1)])[0]
    return cells[0].value if cells else None


def decode_mark(raw: bytes | None) -> int | None:
    """The timestamp a stored mark's bytes hold (None: there are none, or not 8)."""
    return None if raw is None or len(raw) != _U64.size else int(_U64.unpack(raw)[0])


def recovered_mark(store: TabletStore) -> tuple[int, int]:
    """(the highest timestamp of any cell version of any table, a safe mark above it):
    read with every node and client stopped; see the module docstring."""
    highest = 0
    for table in sorted({t.table for t in store.list_tablets()} - {ORACLE_TABLE}):
        for row in store.scan(ScanRequest(table)):
            for cell in row.cells:
                highest = max(highest, cell.ts)
    return highest, min(MAX_TS, highest + RECOVERY_MARGIN)


def rewrite_mark(store: TabletStore, mark: int, expected: bytes | None) -> bool:
    """Persist ``mark`` (fsync) if the stored mark still holds ``expected``; whether it did."""
    guard = NoVersionIn(_COLUMN) if expected is None else VersionAt(_COLUMN, 0, expected)
    return store.mutate_rows([RowMutation(ORACLE_TABLE, _ROW, (
        Put(_COLUMN, 0, _U64.pack(mark)),), (guard,))], sync=True)[0].applied
