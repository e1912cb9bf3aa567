"""Transaction: a snapshot at start_ts plus buffered writes, committed by the commit driver.

Reads go to the backend's read step; a cell held by a live transaction's lock is waited
for here (with backoff, bounded by ``lock_wait_timeout``) and read again, since only
the client knows how long it is willing to wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from bigtable_lite import Limits
from bigtable_lite.validation import as_bytes

from . import _driver, records
from ._backend import Key, LockedCell, ScanRequest
from ._context import TxnContext
from ._waits import check_may_wait
from .errors import LockWaitTimeout, TransactionError
from .layout import SYSTEM_PREFIX

__all__ = ["Transaction", "checked_key", "checked_value"]

_SCAN_CHUNK_ROWS = 128

_ACTIVE = "active"
_COMMITTED = "committed"
_ROLLED_BACK = "rolled back"
_FAILED = "failed"


def checked_key(row: bytes | str, column: bytes | str, limits: Limits,
                system: bool = False) -> Key:
    """A cell's key as a transaction takes it (str as UTF-8), or ValueError/TypeError
    naming what is wrong: an empty or over-long row or column, or a reserved column
    (``system``: the caller's own, reserved, columns are allowed)."""
    r = row if type(row) is bytes else as_bytes(row, "row")
    c = column if type(column) is bytes else as_bytes(column, "column")
    if not r:
        raise ValueError("row must not be empty")
    if not c:
        raise ValueError("column must not be empty")
    if len(r) > limits.max_row_bytes:
        raise ValueError(f"row is {len(r)} bytes; the limit is {limits.max_row_bytes}")
    if len(c) >= limits.max_column_bytes:
        raise ValueError(f"column is {len(c)} bytes; the limit is"
                         f" {limits.max_column_bytes - 1}")
    if not system and c.startswith(SYSTEM_PREFIX):
        raise ValueError("columns starting with 0x00 are reserved for the system")
    return r, c


def checked_value(value: bytes | str, limits: Limits) -> bytes:
    """A value as a transaction takes it (str as UTF-8), or ValueError/TypeError."""
    if type(value) is bytes:
        v = value
    elif type(value) is str:
        v = value.encode("utf-8")
    else:
        raise TypeError(f"value must be bytes or str, not {type(value).__name__}")
    if len(v) > limits.max_value_bytes:
        raise ValueError(f"value is {len(v)} bytes; the limit is {limits.max_value_bytes}")
    return v


class Transaction:
    """Snapshot-isolated reads at ``start_ts``; writes buffered until :meth:`commit`.

    Reads see this transaction's own buffered writes.  A Transaction belongs to one
    thread; its Client may be shared.  Rows, columns and values are bytes (str is
    accepted and UTF-8 encoded); bad arguments raise before any I/O.

    ``start_ts`` None (``Client.begin(lazy=True)``): the snapshot is taken by the first
    read, which takes its timestamp with it (one hop less at a node), or when
    :attr:`start_ts` is first asked for.
    """

    __slots__ = ("_start_ts", "_ctx", "_writes", "_weak", "_state", "_token", "commit_ts",
                 "__weakref__")

    def __init__(self, ctx: TxnContext, start_ts: int | None) -> None:
        self._start_ts = start_ts
        self.commit_ts: int | None = None
        self._ctx = ctx
        self._writes: dict[Key, tuple[bytes, bytes | None]] = {}
        self._weak: set[Key] = set()
        self._state = _ACTIVE
        self._token = 0  # registered in ctx.backend.snapshots while running (GC spares it)
        if start_ts is not None:
            self._token = ctx.backend.snapshots.enter(self)
            ctx.backend.snapshots.started(self._token, start_ts)

    @property
    def start_ts(self) -> int:
        """The snapshot's timestamp (a lazy transaction takes it now if no read did yet)."""
        ts = self._start_ts
        if ts is None:
            snapshots = self._ctx.backend.snapshots
            self._token = snapshots.enter(self)  # before the timestamp exists: see _snapshots
            try:
                ts = self._ctx.backend.timestamps(1)
            except BaseException:
                self._end()
                raise
            snapshots.started(self._token, ts)
            self._start_ts = ts
        return ts

    def _end(self) -> None:
        """No longer running: the GC safe point may pass start_ts."""
        if self._token:
            self._ctx.backend.snapshots.leave(self._token)
            self._token = 0

    # --- argument checks ------------------------------------------------------------------

    def _check_active(self) -> None:
        if self._state is not _ACTIVE:
            raise TransactionError(f"transaction {self._start_ts} is already {self._state}")

    def _key(self, row: bytes | str, column: bytes | str, system: bool = False) -> Key:
        limits = self._ctx.limits
        if (type(row) is bytes and type(column) is bytes and not system
                and 0 < len(row) <= limits.max_row_bytes
                and 0 < len(column) < limits.max_column_bytes
                and column[:1] != SYSTEM_PREFIX):
            return row, column  # the common case in one test; else the precise error below
        return checked_key(row, column, limits, system)

    def _value(self, value: bytes | str) -> bytes:
        return checked_value(value, self._ctx.limits)

    # --- reads ----------------------------------------------------------------------------

    def get(self, row: bytes | str, column: bytes | str) -> bytes | None:
        """The cell's value in this snapshot (or as this transaction wrote it); None if absent."""
        self._check_active()
        key = self._key(row, column)
        return self._get(key)

    def _get(self, key: Key) -> bytes | None:
        own = self._writes.get(key)
        if own is not None:
            return own[1]
        return self._read([key])[key]

    def _read(self, keys: list[Key]) -> dict[Key, bytes | None]:
        """Snapshot values of cells; the first read of a lazy transaction takes start_ts."""
        ctx = self._ctx
        per_call = max(1, ctx.limits.max_batch_rows // 2)
        values: dict[Key, bytes | None] = {}
        locked: list[LockedCell] = []
        for i in range(0, len(keys), per_call):
            if self._start_ts is None:  # a lazy transaction's snapshot, taken by this read
                snapshots = ctx.backend.snapshots
                self._token = snapshots.enter(self)
                try:
                    result = ctx.backend.read(ctx.table, None, keys[i:i + per_call])
                except BaseException:
                    self._end()
                    raise
                snapshots.started(self._token, result.start_ts)
                self._start_ts = result.start_ts
            else:
                result = ctx.backend.read(ctx.table, self._start_ts, keys[i:i + per_call])
            values.update(result.values)
            locked += result.locked
        if locked:
            values.update(self._wait_for_locks(locked))
        return values

    def _wait_for_locks(self, locked: Sequence[LockedCell]) -> dict[Key, bytes | None]:
        """Read cells held by live transactions again, backing off, until their owners
        decide (or their locks expire by the backend's clock) or lock_wait_timeout passes."""
        ctx = self._ctx
        assert self._start_ts is not None
        deadline = ctx.clock.monotonic_ms() + int(ctx.lock_wait_timeout * 1000)
        delay = 0.001
        values: dict[Key, bytes | None] = {}
        while locked:
            if ctx.clock.monotonic_ms() >= deadline:
                f = locked[0]
                raise LockWaitTimeout(
                    f"cell ({f.row!r}, {f.column!r}) stayed locked by transaction {f.start_ts}"
                    f" for {ctx.lock_wait_timeout}s", row=f.row, column=f.column,
                    lock_start_ts=f.start_ts)
            check_may_wait()  # nothing read is kept: the reads run again where they may
            ctx.clock.sleep(delay)
            delay = min(delay * 2, 0.05)
            result = ctx.backend.read(ctx.table, self._start_ts,
                                      [(f.row, f.column) for f in locked])
            values.update(result.values)
            locked = result.locked
        return values

    def get_many(self, cells: Iterable[tuple[bytes | str, bytes | str]]
                 ) -> dict[Key, bytes | None]:
        """Several cells in one batched read (in calls within the store's batch limit); keys of
        the result are (row, column) as bytes."""
        self._check_active()
        keys = [self._key(r, c) for r, c in cells]
        missing = [k for k in keys if k not in self._writes]
        found = self._read(missing) if missing else {}
        return {k: self._writes[k][1] if k in self._writes else found[k] for k in keys}

    def scan(self, start_row: bytes | str | None = None, end_row: bytes | str | None = None,
             columns: Iterable[bytes | str] | None = None) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(row, column, value) of live cells with start_row <= row < end_row, ascending."""
        self._check_active()
        start = None if start_row is None else self._bound(start_row, "start_row")
        end = None if end_row is None else self._bound(end_row, "end_row")
        if start is not None and end is not None and start > end:
            raise ValueError(f"scan range is inverted: start_row {start!r} > end_row {end!r}")
        cols = None if columns is None else sorted({self._key(b"r", c)[1] for c in columns})
        if cols == []:
            return iter(())  # an empty column filter selects nothing
        return self._scan(start, end, cols, include_system=False)

    def _bound(self, row: bytes | str, what: str) -> bytes:
        r = as_bytes(row, what)
        if not r:
            raise ValueError(f"{what} must not be empty (use None for unbounded)")
        if len(r) > self._ctx.limits.max_row_bytes:
            raise ValueError(f"{what} is {len(r)} bytes; the limit is"
                             f" {self._ctx.limits.max_row_bytes}")
        return r

    def _scan(self, start: bytes | None, end: bytes | None, cols: list[bytes] | None,
              include_system: bool) -> Iterator[tuple[bytes, bytes, bytes]]:
        wanted = set(cols) if cols is not None else None
        own = sorted(
            (key, value) for key, (_, value) in self._writes.items()
            if (start is None or key[0] >= start) and (end is None or key[0] < end)
            and (wanted is None or key[1] in wanted)
            and (include_system or not key[1].startswith(SYSTEM_PREFIX)))
        i = 0
        for row, col, stored in self._stored(start, end, cols, include_system):
            key = (row, col)
            while i < len(own) and own[i][0] < key:  # own writes before this stored cell
                (own_row, own_col), own_value = own[i]
                if own_value is not None:
                    yield own_row, own_col, own_value
                i += 1
            if i < len(own) and own[i][0] == key:  # own write replaces the stored cell
                own_value = own[i][1]
                if own_value is not None:
                    yield row, col, own_value
                i += 1
                continue
            yield row, col, stored
        for (own_row, own_col), own_value in own[i:]:
            if own_value is not None:
                yield own_row, own_col, own_value

    def _stored(self, start: bytes | None, end: bytes | None, cols: list[bytes] | None,
                include_system: bool) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Committed cells of the snapshot in [start, end), ascending, chunk by chunk."""
        ctx = self._ctx
        request = ScanRequest(ctx.table, self.start_ts, start, end,
                              None if cols is None else tuple(cols), include_system,
                              _SCAN_CHUNK_ROWS)
        while True:
            chunk = ctx.backend.scan(request)
            cells = chunk.cells
            later: dict[Key, bytes | None] = {}
            if chunk.unread:  # past the chunk's byte budget: read (in bounded replies)
                later.update(self._read(list(chunk.unread)))
            if chunk.locked:  # held by live transactions: wait, then merge them in order
                later.update(self._wait_for_locks(chunk.locked))
            if later:
                cells = sorted(cells + [(row, column, value)
                                        for (row, column), value in later.items()
                                        if value is not None])
            yield from cells
            if chunk.resume is None:
                return
            request = request._replace(start_row=chunk.resume)

    # --- writes ---------------------------------------------------------------------------

    def set(self, row: bytes | str, column: bytes | str, value: bytes | str) -> None:
        self._check_active()
        key = self._key(row, column)
        if type(value) is not bytes or len(value) > self._ctx.limits.max_value_bytes:
            value = self._value(value)
        self._writes[key] = (records.PUT, value)

    def delete(self, row: bytes | str, column: bytes | str) -> None:
        self._check_active()
        self._writes[self._key(row, column)] = (records.DELETE, None)

    def notify(self, row: bytes | str, column: bytes | str) -> None:
        """Weak notification: run the column's observer for this cell after commit, no write."""
        self._check_active()
        self._weak.add(self._key(row, column))

    # System cells (column starting 0x00): transactional state of layers above, e.g.
    # the observers' acknowledgements.  Not for application data.
    def get_system(self, row: bytes, column: bytes) -> bytes | None:
        self._check_active()
        return self._get(self._key(row, SYSTEM_PREFIX + column, system=True))

    def get_many_system(self, cells: Iterable[tuple[bytes, bytes]]
                        ) -> dict[Key, bytes | None]:
        """System cells in one batched read (:meth:`get_many` for :meth:`get_system`'s cells).

        Columns are given and returned without the 0x00 prefix: keys of the result are
        (row, column) exactly as :meth:`get_system` names them.
        """
        self._check_active()
        keys = [(r, c, self._key(r, SYSTEM_PREFIX + c, system=True)) for r, c in cells]
        stored = [k for _, _, k in keys]
        missing = [k for k in stored if k not in self._writes]
        found = self._read(missing) if missing else {}
        return {(r, c): self._writes[k][1] if k in self._writes else found[k]
                for r, c, k in keys}

    def set_system(self, row: bytes, column: bytes, value: bytes) -> None:
        self._check_active()
        self._writes[self._key(row, SYSTEM_PREFIX + column, system=True)] = (
            records.PUT, self._value(value))

    @property
    def writes(self) -> int:
        """Number of buffered cell writes."""
        return len(self._writes)

    # --- outcome --------------------------------------------------------------------------

    def commit(self) -> int:
        """Commit; return commit_ts (start_ts for a read-only transaction, which is free).

        Raises CommitConflict (nothing visible; retry in a new transaction) or
        CommitUndetermined (outcome unknown).
        """
        self._check_active()
        try:
            if not self._writes and not self._weak:
                self._state = _COMMITTED
                self.commit_ts = self.start_ts
                return self.start_ts
            self._state = _FAILED
            self.commit_ts = _driver.commit(self._ctx, self.start_ts, self._writes, self._weak)
            self._state = _COMMITTED
            return self.commit_ts
        finally:
            self._end()

    def rollback(self) -> None:
        """Discard buffered writes (nothing was written to the store before commit)."""
        if self._state is _ACTIVE:
            self._state = _ROLLED_BACK
            self._end()

    @property
    def active(self) -> bool:
        return self._state is _ACTIVE

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._state is not _ACTIVE:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
