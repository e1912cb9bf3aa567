"""Notifications: the notification verbs in the process that holds the data.

The embedded backend's and the node's (``LocalBackend.notifications``): registration and
its backfill, the feed of each table to its workers, parking, the workers' reported
counters, and compaction of the log.  Every verb checks what it is given, so the node
can serve it to any client (``percolator._notify.wire`` decodes, this checks meaning);
system rows it reads back are checked too, and a bad one is logged and skipped.

Background work: one thread per pending backfill (resumed, after a restart, when the
table's notifications are first used: a worker's pull, a status), and a compaction of a
table's log after :data:`COMPACT_EVERY` deletes (every processed entry leaves a LevelDB
tombstone; docs/observers.md).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence

from bigtable_lite import (
    DeleteVersion,
    InvalidArgument,
    LocalStore,
    Put,
    RowMutation,
    ScanRequest,
    StoreClosed,
)

from .. import layout
from .._steps.context import StepContext
from . import log, parking
from .api import (
    ColumnInfo,
    DoneRef,
    MemberInfo,
    ParkedCell,
    PullReply,
    PullRequest,
    Registered,
)
from .backfill import Backfill
from .feed import TableFeed

__all__ = ["COMPACT_EVERY", "Notifications", "check_json"]

COMPACT_EVERY = 100_000
"""Deletes of a table's log entries between two compactions of the log."""
IDLE_COMPACT_MIN = 5_000
"""Deletes since the last compaction that make an idle table's log compacted (a burst of
tombstones slows down the next checks for pending entries)."""
FORGET_AFTER = 3600.0
"""Seconds after its last report that a gone worker's counters are dropped."""
STATS_COLUMN = b"stats"
MAX_JSON = 64 * 1024

_log = logging.getLogger(__name__)


def check_json(raw: bytes, what: str) -> None:
    """A worker's counters or a park note: a JSON object of at most 64 KiB."""
    if len(raw) > MAX_JSON:
        raise InvalidArgument(f"{what} of {len(raw)} bytes, more than {MAX_JSON}")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} is not a JSON object")


def _updated_ms(stats: bytes) -> int:
    """When a worker's reported counters were taken (its ``updated_ms``; 0 if absent)."""
    check_json(stats, "worker stats")
    updated = json.loads(stats).get("updated_ms", 0)
    return updated if isinstance(updated, int) else 0


def _check_column(column: bytes) -> None:
    if not column or len(column) > log.MAX_COLUMN:
        raise InvalidArgument(f"an observed column must be 1 to {log.MAX_COLUMN} bytes, not"
                              f" {len(column)}")
    if column.startswith(layout.SYSTEM_PREFIX):
        raise InvalidArgument("columns starting with 0x00 are reserved for the system")


class Notifications:
    """The verbs of :class:`~percolator._notify.api.NotificationsBackend`, in-process."""

    def __init__(self, ctx: StepContext, store: LocalStore) -> None:
        self.ctx = ctx
        self._store = store  # the checked store: listing tables, compaction
        self._feeds: dict[bytes, TableFeed] = {}
        self._backfills: dict[tuple[bytes, bytes], Backfill] = {}
        self._lock = threading.Lock()
        self._deleted: dict[bytes, int] = {}
        self._compacting: set[bytes] = set()
        self.compact_every = COMPACT_EVERY
        self.compactions = 0  # done in the background, since this process started
        self._first_hold = (0.0, 0.0)
        self._closed = False
        ctx.log.listen(self._written)

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            backfills = list(self._backfills.values())
        for backfill in backfills:
            backfill.stop()

    def _start_backfill(self, table: bytes, reg: log.Registration) -> None:
        key = (table, reg.column)
        feed = self.feed(table)
        with self._lock:
            if self._closed or key in self._backfills:
                return
            backfill = self._backfills[key] = Backfill(
                self.ctx, table, reg, pending=lambda: feed.counts.of(reg.column),
                on_done=lambda: self._backfill_done(key))
        backfill.start()

    def _backfill_done(self, key: tuple[bytes, bytes]) -> None:
        with self._lock:
            self._backfills.pop(key, None)

    # --- feeds ----------------------------------------------------------------------------

    def hold_first_assignments(self, quiet: float, most: float) -> None:
        """Hold each column's first assignment of buckets until no worker joined for
        ``quiet`` seconds, ``most`` at the latest (``Assignment``): a node's workers are
        processes that join over a second or so."""
        with self._lock:
            self._first_hold = (quiet, most)
            feeds = list(self._feeds.values())
        for feed in feeds:
            feed.hold_first_assignments(quiet, most)

    def feed(self, table: bytes) -> TableFeed:
        """The table's feed; made (and the table's pending backfills resumed) on first use."""
        found = self._feeds.get(table)
        if found is not None:
            return found
        with self._lock:
            found = self._feeds.get(table)
            if found is not None:
                return found
            found = self._feed_locked(table)
        for reg in self.ctx.observed.registrations(table).values():
            if reg.backfill == log.PENDING:
                self._start_backfill(table, reg)
        return found

    def _feed_locked(self, table: bytes) -> TableFeed:
        found = self._feeds.get(table)
        if found is None:
            found = TableFeed(table, self.ctx.store, self.ctx.log.tracker,
                              on_deleted=lambda n: self._note_deleted(table, n),
                              on_idle=lambda: self._note_deleted(table, 0, idle=True))
            found.hold_first_assignments(*self._first_hold)
            self._feeds[table] = found  # writes from now on reach it, then the scan
            found.build_index()
        return found

    def _written(self, table: bytes, tried: Sequence[RowMutation],
                 landed: Sequence[RowMutation]) -> None:
        feed = self._feeds.get(table)
        if feed is not None:
            feed.written(tried, landed)

    def _note_deleted(self, table: bytes, n: int, *, idle: bool = False) -> None:
        """``n`` entries of ``table`` were deleted (``idle``: a pull found nothing to do):
        compact in the background after many, or after a burst once idle."""
        with self._lock:
            total = self._deleted[table] = self._deleted.get(table, 0) + n
            enough = IDLE_COMPACT_MIN if idle else self.compact_every
            if total < enough or table in self._compacting or self._closed:
                return
            self._deleted[table] = 0
            self._compacting.add(table)
        threading.Thread(target=self._compact_in_background, args=(table,), daemon=True,
                         name="notify-compaction").start()

    def _compact_in_background(self, table: bytes) -> None:
        try:
            self.compact(table)
            self.compactions += 1
        except StoreClosed:
            pass  # closed meanwhile: the next start compacts when it is due
        except Exception:  # noqa: BLE001 -- a failed compaction only costs read speed
            _log.exception("compaction of the notification log of %r failed", table)
        finally:
            with self._lock:
                self._compacting.discard(table)

    # --- the verbs ------------------------------------------------------------------------

    def register(self, table: bytes, column: bytes, partition_prefix: bytes = b"",
                 backfill: bool = True) -> Registered:
        _check_column(column)
        if len(partition_prefix) > 255:
            raise InvalidArgument("a partition prefix is at most 255 bytes")
        reg, new = self.ctx.observed.register(table, column, self.ctx.oracle,
                                              partition_prefix=partition_prefix,
                                              backfill=backfill)
        if reg.backfill == log.PENDING:
            self._start_backfill(table, reg)
        return Registered(reg.registered_at, new)

    def unregister(self, table: bytes, column: bytes) -> tuple[int, int]:
        _check_column(column)
        self.ctx.observed.unregister(table, column)
        at = self.ctx.oracle.get_timestamp()  # every commit above it reads the set without it
        with self._lock:
            backfill = self._backfills.pop((table, column), None)
        if backfill is not None:
            backfill.stop()
        return at, self.pending(table, [column], 1_000_000)

    def columns(self, table: bytes) -> list[ColumnInfo]:
        regs = self.ctx.observed.registrations(table)
        feed = self.feed(table)
        live = [m for m, _ in feed.live()]
        names = set(regs) | feed.counts.columns()
        out = []
        for column in sorted(names):
            reg = regs.get(column) or log.Registration(column, 0)
            out.append(ColumnInfo(
                column, reg.registered_at, reg.partition_prefix, reg.backfill == log.PENDING,
                reg.done, reg.estimated, self.pending(table, [column], 1_000_000),
                tuple(sorted(m.worker for m in live if column in m.columns)), reg.damaged))
        return out

    def pull(self, table: bytes, request: PullRequest) -> PullReply:
        for column in request.columns:
            _check_column(column)
        if request.stats:
            check_json(request.stats, "worker stats")
        feed = self.feed(table)
        if request.stats and request.stats != feed.stats_of(request.worker):
            self._persist_stats(table, request.worker, request.stats)
        return feed.pull(request)

    def leave(self, table: bytes, worker: str, done: Sequence[DoneRef], stats: bytes) -> None:
        feed = self.feed(table)
        if done:
            feed.delete(done)
        if stats:
            check_json(stats, "worker stats")
            self._persist_stats(table, worker, stats)
        feed.leave(worker)

    def done(self, table: bytes, refs: Sequence[DoneRef]) -> None:
        for ref in refs:
            try:
                log.decode_key(ref.log_row)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        self.feed(table).delete(refs)

    def pending(self, table: bytes, columns: Sequence[bytes], cap: int = 1) -> int:
        """Entries of ``columns`` in the log, counted up to ``cap`` from the store (not
        reading again what is known to be empty: ``TableFeed.pending``); a backfill
        still running counts as one more (its entries are still to come)."""
        feed = self.feed(table)  # resumes its backfills
        regs = self.ctx.observed.registrations(table)
        n = sum(1 for c in set(columns) if c in regs and regs[c].backfill == log.PENDING)
        if n >= cap:
            return n
        return n + feed.pending(columns, cap - n)

    def park(self, table: bytes, worker: str, refs: Sequence[DoneRef], note: bytes) -> int:
        check_json(note, "park note")
        for ref in refs:
            try:
                log.decode_key(ref.log_row)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        with self.feed(table).counts.deleting() as gone:
            return parking.park(self.ctx.store, table, refs, note, gone)

    def parked(self, table: bytes, limit: int = 0) -> list[ParkedCell]:
        return parking.parked(self.ctx.store, table, limit)

    def replay(self, table: bytes, cells: Sequence[tuple[bytes, bytes]] | None = None) -> int:
        only = None if cells is None else set(cells)
        found = parking.parked(self.ctx.store, table, 0, only)
        if not found:
            return 0
        with self.ctx.log.allocate() as position:
            batch = parking.replay_rows(table, found, self.ctx.observed.of(table), position)
            notes = [m for m in batch if m.table == layout.notify_table(table)]
            landed: list[RowMutation] = []
            try:
                self.ctx.store.mutate_rows(batch, sync=True)
                landed = notes
            finally:
                self.ctx.log.written(table, notes, landed)
        return len(found)

    def members(self, table: bytes) -> list[MemberInfo]:
        """Live workers and every worker's last counters; a worker not heard of for
        :data:`FORGET_AFTER` seconds is forgotten."""
        out: dict[str, MemberInfo] = {}
        live = self.feed(table).live()
        alive = {m.worker for m, _ in live}
        now_ms = self.ctx.clock.now_ms()
        for row in self.ctx.store.scan(ScanRequest(table + layout.WORKERS_SUFFIX,
                                                   columns=(STATS_COLUMN,), max_versions=1)):
            worker = row.row.decode("utf-8", "replace")
            stats = row.cells[0].value if row.cells else b""
            try:
                updated = _updated_ms(stats)
            except InvalidArgument as exc:
                _log.warning("table %r: stats row of worker %r skipped: %s", table, worker, exc)
                continue
            if worker not in alive and now_ms - updated > FORGET_AFTER * 1000:
                self.forget_worker(table, worker)
                continue
            out[worker] = MemberInfo(worker, False, -1, (), 0, stats)
        for m, owned in live:
            old = out.get(m.worker)
            out[m.worker] = MemberInfo(m.worker, True, m.index, tuple(sorted(m.columns)), owned,
                                       m.stats or (old.stats if old is not None else b""))
        return [out[w] for w in sorted(out)]

    def wait_ready(self, timeout: float) -> bool:
        return True  # in this process: nothing to reach

    def compact(self, table: bytes) -> None:
        self._store.compact_table(layout.notify_table(table))

    def forget_worker(self, table: bytes, worker: str) -> None:
        """Drop a worker's reported counters (an operator's clean-up)."""
        self.ctx.store.mutate_rows([RowMutation(table + layout.WORKERS_SUFFIX, worker.encode(
            "utf-8", "surrogatepass"), (DeleteVersion(STATS_COLUMN, 0),))])

    def _persist_stats(self, table: bytes, worker: str, stats: bytes) -> None:
        self.ctx.store.mutate_rows([RowMutation(table + layout.WORKERS_SUFFIX, worker.encode(),
                                                (Put(STATS_COLUMN, 0, stats),))])
