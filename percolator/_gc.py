"""Collector: garbage-collection passes over one store, in the background every interval.

A pass (docs/protocol.md, "Garbage collection"):

1. raise the safe point S as far as nothing holds it, and persist it (fsync) before
   anything below it is touched (``percolator._safe_point``);
2. settle every lock below S in every transactional table (``_steps.gc``, phase 1);
3. then remove the versions no snapshot at or above S reads (phase 2);
4. compact what was collected: LevelDB has no compaction filter, so removal is delete
   batches written by this scan (as TiKV's GC worker did before 5.0), and their
   tombstones are dropped by compacting the table (``LocalStore.compact_table``); the
   notify table is compacted too (workers delete handled notifications; GC only
   compacts them away).

Rate limit: the background passes work in chunks and pause after each for ``1/duty - 1``
times its work (its CPU time), so they take at most ``duty`` of a core -- under the
GIL, at most that share of the time the foreground could run Python -- and compact a
table at most every COMPACT_EVERY seconds.  Passes run one at a time.

Which tables: those a prewrite or one-phase commit of this backend ever wrote,
remembered in the ``_gc`` table (``note_table``) -- never a table of another layout.
Which rows: those written since the passes last read them (``percolator._gc_rows``),
whole tables only while what they hold is not known (after the process started).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from bigtable_lite import LocalStore, StoreClosed

from . import _gc_table as gc_table
from . import failpoints, layout
from ._gc_rows import ChangedRows, NotingStore, Taken
from ._gc_table import GcPass
from ._safe_point import SafePoint
from ._steps import StepContext
from ._steps import gc as gc_step
from .clock import Clock

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_GC_DUTY", "DEFAULT_GC_INTERVAL", "DEFAULT_GC_LIFE_TIME", "Collector"]

DEFAULT_GC_LIFE_TIME = 600.0
"""Seconds a snapshot stays readable at least (TiDB's tikv_gc_life_time is 10 minutes)."""
DEFAULT_GC_INTERVAL = 60.0
"""Seconds between background passes."""
DEFAULT_GC_DUTY = 0.2
"""Share of the process's time background passes may use."""
LOCK_CHUNK_ROWS = 1024
COLLECT_CHUNK_ROWS = 256
COMPACT_RATIO = 10
COMPACT_MIN = 1000
COMPACT_EVERY = 10.0
NOTIFY_COMPACT_EVERY = 60.0
"""Background passes compact a table once the versions they removed since its last
compaction reach COMPACT_MIN and 1/COMPACT_RATIO of the versions they read (or, once it
is quiet, whatever they removed), at most every COMPACT_EVERY seconds; a notify table
every NOTIFY_COMPACT_EVERY seconds (its workers compact it too).  Each compaction also
flushes LevelDB's memtable: not more often than that."""


class _Stopped(Exception):
    """The collector was closed during a pass."""


class Collector:
    """GC passes over the store of one LocalBackend; thread-safe."""

    def __init__(self, ctx: StepContext, store: LocalStore, safe_point: SafePoint,
                 clock: Clock, changed: ChangedRows, *, interval: float | None,
                 duty: float = DEFAULT_GC_DUTY) -> None:
        if interval is not None and not interval > 0:
            raise ValueError("gc_interval must be a positive number of seconds")
        if not 0 < duty <= 1:
            raise ValueError("the GC duty must be in (0, 1]")
        self._ctx = ctx
        self._store = store
        self.safe_point = safe_point
        self._clock = clock
        self.interval = interval
        self.duty = duty
        self.lock_chunk_rows = LOCK_CHUNK_ROWS
        self.chunk_rows = COLLECT_CHUNK_ROWS
        # The rows written since the passes took them; its tables (``tracked``, read from
        # the _gc table at open) are the tables collected.
        self._changed = changed
        # Phase 2 removes through the store under the noting one: no row to read again.
        self._removing = replace(ctx, store=ctx.store.inner) \
            if isinstance(ctx.store, NotingStore) else ctx
        self._versions: dict[bytes, int] = {}  # table -> versions it holds, estimated
        self._tables_lock = threading.Lock()
        self._pass_lock = threading.Lock()
        self._stop = threading.Event()
        self._collected_below = 0  # the safe point of the last finished pass (this process)
        self._uncompacted: dict[bytes, int] = {}  # versions removed since the last compaction
        self._compacted: dict[bytes, float] = {}  # table -> monotonic time of its last
        self.last: GcPass | None = None
        self.passes = 0
        self.removed = 0  # versions removed by this process's passes, in all
        self.locks_resolved = 0
        self.seconds = 0.0  # that the passes took, pauses included
        self._thread: threading.Thread | None = None
        if interval is not None:
            self._thread = threading.Thread(target=self._run, name="percolator-gc", daemon=True)
            self._thread.start()

    # --- tables -------------------------------------------------------------------------

    def note_table(self, table: bytes) -> None:
        """``table`` holds transactional cells (called before a step first writes it)."""
        if table in self._changed.tracked:
            return
        with self._tables_lock:
            if table not in self._changed.tracked:
                self._store.mutate_rows([gc_table.table_mutation(table)], sync=True)
                self._changed.track(table)

    @property
    def tables(self) -> frozenset[bytes]:
        return self._changed.tracked

    @property
    def uncompacted(self) -> int:
        """Versions removed by passes since their table's last compaction (tombstones
        scans still step over)."""
        return sum(self._uncompacted.values())

    # --- one pass -------------------------------------------------------------------------

    def run_pass(self, *, paced: bool = False) -> GcPass:
        """One pass now; what it did.  ``paced``: as the background runs it (at the duty
        cycle, compacting when worth it); else at once, compacting whatever it removed."""
        with self._pass_lock:
            try:
                done = self._pass(paced)
            except _Stopped:
                raise StoreClosed("the collector was closed during a pass") from None
            self.last = done
            self.passes += 1
            self.removed += done.removed
            self.locks_resolved += done.locks_resolved
            self.seconds += done.seconds
            self._store.mutate_rows([gc_table.last_pass_mutation(done)])
            return done

    def _pass(self, paced: bool) -> GcPass:
        started_ms = self._clock.now_ms()
        began = time.monotonic()
        pacer = _Pacer(self.duty if paced else 1.0, self._stop)
        safe_point, held_by = self.safe_point.advance()
        tables = sorted(self._changed.tracked)
        if safe_point <= self._collected_below:  # nothing new to collect; still compact
            compactions = sum(self._compact(t, 0, 0, pacer, paced) for t in tables)
            return GcPass(safe_point, started_ms, time.monotonic() - began, pacer.worked,
                          len(tables), compactions=compactions, held_by=held_by,
                          skipped="the safe point has not moved since the last pass"
                          if safe_point else "no safe point yet")
        taken = self._changed.take()
        try:
            resolved = sum(self._resolve_locks(t, safe_point, taken.get(t), pacer)  # first,
                           for t in tables)  # in all tables: see _steps.gc
            failpoints.hit("gc.after_resolve_locks")
            total = gc_step.Collected()
            compactions = 0
            for table in tables:
                collected = self._collect(table, safe_point, taken.get(table), pacer)
                removed = collected.write_records + collected.data + collected.rollback_markers
                compactions += self._compact(table, self._estimate(table, taken.get(table),
                                                                   collected, removed),
                                             removed, pacer, paced)
                total.add(collected)
        except BaseException:
            self._changed.give_back(taken)
            raise
        self._changed.keep(taken, safe_point)
        self._collected_below = safe_point
        return GcPass(safe_point, started_ms, time.monotonic() - began, pacer.worked,
                      len(tables), total.rows, total.versions_scanned, resolved,
                      total.write_records, total.data, total.rollback_markers, compactions,
                      held_by=held_by)

    def _estimate(self, table: bytes, taken: Taken | None, collected: gc_step.Collected,
                  removed: int) -> int:
        """Versions ``table`` holds, about: what its last whole read saw, plus the items
        written since, less what passes removed (a compaction is worth it once removals
        are a share of the table, not of the few rows a pass read)."""
        if taken is not None and taken.full_until:
            estimate = collected.versions_scanned
        else:
            estimate = self._versions.get(table, 0) + (taken.written if taken else 0) - removed
        self._versions[table] = max(estimate, 0)
        return max(estimate, collected.versions_scanned)

    def _chunk(self, rows: int) -> int:
        return min(rows, self._ctx.limits.max_batch_rows)

    def _resolve_locks(self, table: bytes, safe_point: int, taken: Taken | None,
                       pacer: _Pacer) -> int:
        """Phase 1 over ``table`` (whole, or the rows ``taken``): the locks below the safe
        point settled; how many."""
        resolved = 0
        if taken is None:
            return 0
        if not taken.full_until:
            rows, n = sorted(taken.rows), self._chunk(self.lock_chunk_rows)
            for i in range(0, len(rows), n):
                with pacer.chunk():
                    locks = gc_step.locks_in_rows(self._ctx, table, safe_point, rows[i:i + n])
                    resolved += gc_step.resolve_below(self._ctx, table, locks)
            return resolved
        start: bytes | None = None
        while True:
            with pacer.chunk():
                locks, start = gc_step.locks_below(self._ctx, table, safe_point, start,
                                                   self.lock_chunk_rows)
                resolved += gc_step.resolve_below(self._ctx, table, locks)
            if start is None:
                return resolved

    def _collect(self, table: bytes, safe_point: int, taken: Taken | None, pacer: _Pacer
                 ) -> gc_step.Collected:
        """Phase 2 over ``table`` (whole, or the rows ``taken``), chunk by chunk."""
        collected = gc_step.Collected()
        if taken is None:
            return collected
        if not taken.full_until:
            rows, n = sorted(taken.rows), self._chunk(self.chunk_rows)
            for i in range(0, len(rows), n):
                with pacer.chunk():
                    collected.add(gc_step.collect_rows(self._removing, table, safe_point,
                                                       rows[i:i + n]))
                failpoints.hit("gc.after_collect_chunk")
            return collected
        start: bytes | None = None
        while True:
            with pacer.chunk():
                chunk, start = gc_step.collect(self._removing, table, safe_point, start,
                                               self._chunk(self.chunk_rows))
            collected.add(chunk)
            failpoints.hit("gc.after_collect_chunk")
            if start is None:
                return collected

    def _compact(self, table: bytes, scanned: int, removed: int, pacer: _Pacer,
                 paced: bool) -> int:
        """Compact ``table`` if due (its removals' tombstones), and its notify table
        (handled notifications, deleted by the workers); how many were compacted."""
        compactions = 0
        self._uncompacted[table] = self._uncompacted.get(table, 0) + removed
        if self._compaction_due(table, scanned, removed, paced):
            with pacer.chunk(compaction=True):
                self._store.compact_table(table)
            self._uncompacted[table] = 0
            self._compacted[table] = time.monotonic()
            compactions += 1
        notify = layout.notify_table(table)
        if not paced or self._since_compacted(notify) >= NOTIFY_COMPACT_EVERY:
            with pacer.chunk(compaction=True):
                self._store.compact_table(notify)
            self._compacted[notify] = time.monotonic()
            compactions += 1
        return compactions

    def _compaction_due(self, table: bytes, scanned: int, removed_now: int, paced: bool
                        ) -> bool:
        """Whether the table's tombstones are worth a compaction now: any on request; in
        the background at most every COMPACT_EVERY seconds (a compaction flushes the
        memtable and rewrites the table: measured, it was most of a pass's time when done
        every pass), once they are COMPACT_MIN and 1/COMPACT_RATIO of what was read, or
        whatever is left once the table is quiet (a pass that removed nothing)."""
        removed = self._uncompacted.get(table, 0)
        if not paced:
            return removed > 0
        if not removed or self._since_compacted(table) < COMPACT_EVERY:
            return False
        return not removed_now or (removed >= COMPACT_MIN
                                   and removed * COMPACT_RATIO >= scanned)

    def _since_compacted(self, table: bytes) -> float:
        last = self._compacted.get(table)
        return float("inf") if last is None else time.monotonic() - last

    # --- background ---------------------------------------------------------------------

    def _run(self) -> None:
        assert self.interval is not None
        due = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, min(1.0, due - time.monotonic()))):
            try:
                self.safe_point.sample()
                if time.monotonic() >= due:
                    self.run_pass(paced=True)
                    due = time.monotonic() + self.interval
            except StoreClosed:
                return
            except Exception:  # noqa: BLE001 -- logged; the next pass tries again
                log.exception("garbage collection pass failed; retrying in %ss",
                              self.interval)
                due = time.monotonic() + self.interval

    def close(self) -> None:
        """Stop the background passes (a pass in progress stops after its chunk)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class _Pacer:
    """Times work chunks (``with pacer.chunk():``) and pauses after each to keep the duty.

    A chunk's work is the CPU time of this thread: under the GIL, what it took from the
    foreground (time spent waiting for the GIL behind the foreground is not work).  A
    compaction is not paced (``compaction=True``: only checked for a stop): LevelDB does
    it in its own thread, most of it flushing the memtable, which it would do anyway
    once full; compactions are rate-limited by their own interval (COMPACT_EVERY).
    Measured: pausing 4x the wall time of the compactions made them two thirds of the
    passes' time, and GC fell behind the transfer loop.
    """

    def __init__(self, duty: float, stop: threading.Event) -> None:
        self._factor = 1.0 / duty - 1.0
        self._stop = stop
        self.worked = 0.0

    @contextmanager
    def chunk(self, *, compaction: bool = False) -> Iterator[None]:
        if self._stop.is_set():
            raise _Stopped()
        began, began_cpu = time.monotonic(), time.thread_time()
        yield
        if compaction:
            self.worked += time.monotonic() - began
            return
        took = time.thread_time() - began_cpu
        self.worked += took
        if self._factor and self._stop.wait(took * self._factor):
            raise _Stopped()
