"""Notify: which committed writes leave notifications, the log entries they leave, and
registering observed columns.

A notification is an entry of the notification log ``<table>.notify``
(``percolator._notify.log``), written in the same atomic write as the write record it
announces: by the commit step, a one-phase commit, or the roll-forward of a secondary.
Each of them decides from :class:`ObservedColumns` *after* its commit_ts was taken;
registration updates the set *before* it takes its own timestamp R.  The oracle orders
the two: a write committed at commit_ts > R took its timestamp after R was taken, so
after the set held the column, and it leaves an entry.  Writes committed below R are the
backfill's (``percolator._notify.backfill``).  The proof in full is in
docs/observers.md.

Every write of entries takes its log position from :class:`NotifyLog` (the
resolved-timestamp tracker) and holds it in flight until the write returned, then
tells the log's listener (the feed that hands entries to workers) which buckets it
wrote, also when the write failed (an over-estimate only costs a read), and which
entries it knows landed (the feed's pending counts: a commit that found its primary
settled, or a backfill chunk whose registration changed, wrote none).

Registrations persist in ``<table>.config``, row ``layout.OBSERVED_ROW``: one store
column per observed column, at ts 0, value = a registration record (``_notify.log``).
A record that does not decode is logged (once, when the table's registrations are
read) and read as a column observed with no partition prefix and no backfill, marked
``damaged`` (status shows it): a damaged system row must neither stop anything nor
silently stop notifications -- skipping it would leave commits to the column without
entries, changes its observer would never see.  Registering the column again rewrites
the record (at a new registered_at, with no backfill: its commits were notified all
along).  A record under a column that cannot be observed (empty, over
``log.MAX_COLUMN`` bytes, or a system column: only a raw write leaves one) is logged
and skipped, listed as damaged but never notified: its log entries could not even be
keyed, so every commit writing the column would fail.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from bigtable_lite import DeleteVersion, Put, RowMutation, RowRead, TabletStore

from .. import layout
from .._notify import log
from .._notify.log import Registration
from .._notify.resolved import Tracker
from ..oracle import TimestampSource

__all__ = ["NotifyLog", "ObservedColumns", "entries"]

Key = tuple[bytes, bytes]
Listener = Callable[[bytes, Sequence[RowMutation], Sequence[RowMutation]], None]
ITEMS_PER_LOG_ROW = 500
"""Entries per row mutation of one log row (within the store's items per row)."""

_log = logging.getLogger(__name__)


def _observable(column: bytes) -> bool:
    """Whether ``column`` can be an observed column (registering checks the same)."""
    return 0 < len(column) <= log.MAX_COLUMN and not column.startswith(layout.SYSTEM_PREFIX)


class ObservedColumns:
    """The observed columns of each table and their registrations, as the steps read
    them (thread-safe).  :meth:`of` is the commit path's: column -> partition prefix."""

    def __init__(self, store: TabletStore) -> None:
        self._store = store
        self._prefixes: dict[bytes, Mapping[bytes, bytes]] = {}
        self._registrations: dict[bytes, dict[bytes, Registration]] = {}
        self._lock = threading.Lock()  # registrations, one at a time

    def of(self, table: bytes) -> Mapping[bytes, bytes]:
        """Observed column -> its partition prefix (read-only; replaced, never changed)."""
        found = self._prefixes.get(table)
        return found if found is not None else self._load(table)

    def registrations(self, table: bytes) -> dict[bytes, Registration]:
        self.of(table)
        return dict(self._registrations[table])

    def _read(self, table: bytes) -> dict[bytes, Registration]:
        cells = self._store.read_rows([RowRead(layout.config_table(table),
                                               layout.OBSERVED_ROW, max_versions=1)])[0]
        out: dict[bytes, Registration] = {}
        for cell in cells:
            if not _observable(cell.column):
                why = (f"a registration of {cell.column[:64]!r} ({len(cell.column)} bytes),"
                       f" which is no column to observe (1 to {log.MAX_COLUMN} bytes, not"
                       " starting with 0x00)")
                _log.error("table %r: %s; skipped", table, why)
                out[cell.column] = Registration(cell.column, 0, damaged=why)
                continue
            try:
                reg = log.decode_registration(cell.column, cell.value)
            except ValueError as exc:
                _log.error("table %r: %s; the column stays observed (no partition prefix,"
                           " no backfill) until it is registered again", table, exc)
                reg = Registration(cell.column, 0, damaged=str(exc))
            out[cell.column] = reg
        return out

    def _load(self, table: bytes) -> Mapping[bytes, bytes]:
        with self._lock:
            found = self._prefixes.get(table)
            if found is None:
                self._install(table, self._read(table))
                found = self._prefixes[table]
            return found

    def _install(self, table: bytes, regs: dict[bytes, Registration]) -> None:
        self._registrations[table] = regs
        self._prefixes[table] = {c: r.partition_prefix for c, r in regs.items()
                                 if _observable(c)}

    def register(self, table: bytes, column: bytes, oracle: TimestampSource, *,
                 partition_prefix: bytes = b"", backfill: bool = True
                 ) -> tuple[Registration, bool]:
        """Observe ``column`` from now on: (its registration, whether it is new).

        A new registration's R is taken after the set holds the column (see the module);
        registering an observed column again changes at most its partition prefix.
        """
        self.of(table)
        with self._lock:
            regs = dict(self._registrations[table])
            old = regs.get(column)
            if old is not None and old.damaged:  # observed all along: rewrite, no backfill
                reg = Registration(column, oracle.get_timestamp(), partition_prefix)
                self._persist(table, reg)
                regs[column] = reg
                self._install(table, regs)
                _log.warning("table %r: the registration of %r is written again", table,
                             column)
                return reg, False
            if old is not None and old.partition_prefix == partition_prefix:
                return old, False
            if old is not None:  # a new bucket function for new entries; nothing else
                reg = Registration(column, old.registered_at, partition_prefix, old.backfill,
                                   old.done, old.estimated, old.cursor)
            else:
                reg = Registration(column, 0, partition_prefix)
            regs[column] = reg
            self._install(table, regs)  # before R is taken: see the module
            if old is None:
                reg = Registration(column, oracle.get_timestamp(), partition_prefix,
                                   log.PENDING if backfill else log.DONE)
                regs = dict(regs)
                regs[column] = reg
                self._install(table, regs)
            self._persist(table, reg)
            return reg, old is None

    def _persist(self, table: bytes, reg: Registration) -> None:
        self._store.mutate_rows([RowMutation(
            layout.config_table(table), layout.OBSERVED_ROW,
            (Put(reg.column, 0, log.encode_registration(reg)),))], sync=True)

    def unregister(self, table: bytes, column: bytes) -> Registration | None:
        """Stop notifying ``column`` (entries already written stay); its old registration."""
        self.of(table)
        with self._lock:
            regs = dict(self._registrations[table])
            old = regs.pop(column, None)
            if old is not None:
                self._store.mutate_rows([RowMutation(
                    layout.config_table(table), layout.OBSERVED_ROW,
                    (DeleteVersion(column, 0),))], sync=True)
                self._install(table, regs)
            return old

    def advance(self, table: bytes, column: bytes, registered_at: int,
                write: Callable[[Registration], Registration | None]) -> Registration | None:
        """A backfill's progress: ``write(current)`` persists the next progress of the
        registration as it stands now and returns it (None: not written), under the lock
        every other write of the record takes.  None if the registration is gone or was
        made again (the backfill is over).

        Why under the lock: the record holds the partition prefix beside the progress.
        A progress write built from the backfill's own copy put back the prefix it
        started with over one registered since, and a new prefix written from a
        progress not yet mirrored here put back an older cursor (a chunk queued again
        after a restart)."""
        self.of(table)
        with self._lock:
            regs = self._registrations.get(table, {})
            current = regs.get(column)
            if current is None or current.registered_at != registered_at or current.damaged:
                return None
            done = write(current)
            if done is not None:
                regs = dict(regs)
                regs[column] = done
                self._install(table, regs)
            return done


class NotifyLog:
    """Positions for log writes (the resolved-timestamp tracker) and who hears of them."""

    def __init__(self, oracle: TimestampSource) -> None:
        self.tracker = Tracker(oracle)
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @contextmanager
    def allocate(self, count: int = 1) -> Iterator[int]:
        """Fresh positions (the first), in flight until the block ends: write inside it."""
        with self.tracker.allocate(count) as first:
            yield first

    def written(self, table: bytes, tried: Sequence[RowMutation],
                landed: Sequence[RowMutation]) -> None:
        """Entries ``tried`` of ``table`` were written, or tried (their buckets are read
        again: an over-estimate only costs a read); ``landed``: those of them known to
        be in the log now (counted as pending).  Call inside the block of their
        position, before it ends."""
        if tried:
            for listener in self._listeners:
                listener(table, tried, landed)


def entries(table: bytes, observed: Mapping[bytes, bytes], keys: Iterable[Key],
            position: int, change_ts: int, weak: Sequence[Key] = (),
            kind: int = log.WRITE) -> list[RowMutation]:
    """The log rows announcing a change committed at ``change_ts``: one entry per written
    cell of an observed column, one (weak) per ``weak`` cell not written, all at
    ``position``."""
    rows: dict[bytes, dict[bytes, bytes]] = {}
    written: set[Key] = set()
    if observed:
        value = log.encode_entry(kind, change_ts)
        for key in keys:
            column = key[1]
            prefix = observed.get(column)
            if prefix is None:
                continue
            written.add(key)
            lrow = log.log_key(column, log.bucket_of(key[0], prefix), position)
            rows.setdefault(lrow, {})[key[0]] = value
    if weak:
        value = log.encode_entry(log.WEAK, change_ts)
        for key in weak:
            row, column = key
            if key in written or len(column) > log.MAX_COLUMN:
                continue  # a column that long can never be observed
            lrow = log.log_key(column, log.bucket_of(row, observed.get(column, b"")), position)
            rows.setdefault(lrow, {}).setdefault(row, value)
    ntable = layout.notify_table(table)
    out = []
    for lrow, cells in rows.items():
        puts = [Put(row, 0, value) for row, value in cells.items()]
        for i in range(0, len(puts), ITEMS_PER_LOG_ROW):
            out.append(RowMutation(ntable, lrow, tuple(puts[i:i + ITEMS_PER_LOG_ROW])))
    return out
